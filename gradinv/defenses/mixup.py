"""MixUp as a defense (Zhang, Cisse, Dauphin & Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018),
in the k-image form Huang et al. (NeurIPS 2021, Sec. 5) evaluate against gradient inversion."""

from __future__ import annotations

import torch

from gradinv.defenses.base import Defense
from gradinv.validation import check_arguments


def mixing(
    n: int, k: int, upper_bound: float, lower_bound: float, generator: torch.Generator, *, max_draws: int = 10_000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partners and coefficients for ``n`` encodings of ``k`` images each, drawn from a pool of ``n`` images.

    The ``k`` partner columns are independent random permutations of the pool, each row redrawn until its ``k`` images
    differ; coefficients follow Dirichlet(3, 1, ..., 1) and are redrawn until every one lies in ``[lower_bound,
    upper_bound]`` (Huang et al.'s coefficients). The pool here is the client's batch; Huang et al.'s code
    (GradAttack) draws the partners from the client's whole training set.

    Returns:
        ``(partners (n, k) int64, coefficients (n, k))``, each row of coefficients summing to 1.
    """
    partners = torch.stack([torch.randperm(n, generator=generator) for _ in range(k)], dim=1)
    for row in range(n):
        for _ in range(max_draws):
            if len(set(partners[row].tolist())) == k:
                break
            partners[row] = torch.randint(0, n, (k,), generator=generator)
    return partners, coefficients(n, k, upper_bound, lower_bound, generator, max_draws=max_draws)


def pool_mixing(
    n: int, pool: int, k: int, upper_bound: float, lower_bound: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partners from the client's training set: encoding ``i`` mixes batch image ``i`` (the first coefficient, drawn
    with the Dirichlet's concentration 3) with ``k - 1`` distinct images of a pool of ``pool`` (InstaHide's
    inside-dataset encoding, Huang et al. ICML 2020 Sec. 3; GradAttack draws all ``k`` from the training set).

    Returns:
        ``(partners (n, k - 1) indices into the pool, coefficients (n, k))``.
    """
    if pool < k - 1:
        raise ValueError(f"the client's training set has {pool} images, fewer than the k - 1 = {k - 1} partners")
    partners = torch.stack([torch.randperm(pool, generator=generator)[: k - 1] for _ in range(n)])
    return partners, coefficients(n, k, upper_bound, lower_bound, generator)


def coefficients(
    n: int, k: int, upper_bound: float, lower_bound: float, generator: torch.Generator, *, max_draws: int = 10_000
) -> torch.Tensor:
    """``(n, k)`` Dirichlet(3, 1, ..., 1) coefficients, each row redrawn until it lies in the bounds."""
    concentration = torch.ones(k, dtype=torch.float64)
    concentration[0] = 3.0
    drawn = torch.empty(n, k, dtype=torch.float64)
    for row in range(n):
        for _ in range(max_draws):
            gamma = torch._standard_gamma(concentration, generator=generator)  # Dirichlet by normalised gammas
            lam = gamma / gamma.sum()
            if k == 1 or (float(lam.max()) <= upper_bound and float(lam.min()) >= lower_bound):
                break
        else:
            raise ValueError(f"no Dirichlet draw met the bounds [{lower_bound}, {upper_bound}] in {max_draws} tries")
        drawn[row] = lam
    return drawn.float()


def mixtures(values: torch.Tensor, partners: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """``sum_j lambda_ij v_{partner_ij}`` for every row ``i``, for images ``(N, C, H, W)`` or targets ``(N, K)``."""
    weights = coefficients.to(values).reshape(*coefficients.shape, *[1] * (values.dim() - 1))
    return (weights * values[partners]).sum(1)


def mix(
    images: torch.Tensor, targets: torch.Tensor, partners: torch.Tensor, coefficients: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_j lambda_ij x_{partner_ij}`` and the same mixture of the soft labels."""
    return mixtures(images, partners, coefficients), mixtures(targets, partners, coefficients)


def check_mixing(k: int, upper_bound: float, lower_bound: float) -> None:
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (images per encoding), got {k!r}")
    if not 0 <= lower_bound <= 1 / k <= upper_bound <= 1:
        raise ValueError(
            f"coefficient bounds must satisfy 0 <= lower_bound <= 1/k <= upper_bound <= 1, "
            f"got lower_bound={lower_bound}, upper_bound={upper_bound}, k={k}"
        )


class MixUp(Defense):
    """The client trains on mixtures of ``k`` of its images (and of their labels) instead of the images.

    ``pool="batch"``: the partners come from the client's batch (each image appears in ``k`` encodings; the ``N x N``
    mixing is then invertible from the batch alone, :func:`unmix`). ``pool="dataset"``: encoding ``i`` mixes batch
    image ``i`` with ``k - 1`` images of the client's whole training set (``client_data``, passed to
    ``gi.observe``), as InstaHide's inside-dataset encoding and, close to it, Huang et al.'s code (GradAttack, which
    draws all ``k`` from the training set); the batch's encodings then involve up to ``N k`` images and the in-batch
    unmixing no longer applies ("MixUp decoded exactly" is an in-batch-pool result). The attacker who inverts the
    update gets encodings, not images.

    Args:
        k: images per encoding (Huang et al.: 4).
        upper_bound: the largest coefficient allowed (Huang et al.: 0.65).
        lower_bound: the smallest coefficient allowed.
        pool: where the partners come from, ``"dataset"`` (the client's training set, the default, as InstaHide and
            Huang et al.'s code mix) or ``"batch"`` (see above).
    """

    name = "mixup"

    def __init__(
        self, *, k: int = 4, upper_bound: float = 0.65, lower_bound: float = 0.0, pool: str = "dataset"
    ) -> None:
        check_arguments(self, locals())
        check_mixing(k, upper_bound, lower_bound)
        if pool not in ("batch", "dataset"):
            raise ValueError(f"pool must be 'batch' or 'dataset', got {pool!r}")
        self.k, self.upper_bound, self.lower_bound, self.pool = k, upper_bound, lower_bound, pool

    def encode(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        *,
        generator: torch.Generator,
        client_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool == "dataset":
            if client_data is None:
                raise ValueError(
                    f"{self.name} with pool='dataset' draws partners from the client's training set: pass it as "
                    "gi.observe(..., client_data=(images, labels)), or mix within the batch with pool='batch'"
                )
            pool_images, pool_targets = client_data
            partners, weights = pool_mixing(
                images.shape[0], pool_images.shape[0], self.k, self.upper_bound, self.lower_bound, generator
            )
            first = weights[:, :1].to(images)
            mixed = first.view(-1, 1, 1, 1) * images + mixtures(pool_images, partners, weights[:, 1:])
            return mixed, first * targets + mixtures(pool_targets.to(targets), partners, weights[:, 1:])
        if images.shape[0] < self.k:
            raise ValueError(f"{self.name} with k={self.k} needs at least {self.k} images in the client's batch")
        return mix(images, targets, *self.plan(images.shape[0], generator=generator))

    def plan(self, n: int, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The partners and coefficients :meth:`encode` draws for a batch of ``n`` (the generator's first draws):
        with the client's seed, what Huang et al.'s decoding upper bound grants the attacker. In-batch pool only."""
        if self.pool != "batch":
            raise ValueError(f"plan() gives the in-batch mixing; this {self.name} draws partners from the training set")
        return mixing(n, self.k, self.upper_bound, self.lower_bound, generator)


def unmix(encodings: torch.Tensor, soft_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo MixUp within a batch from its mixed labels (the labels leak the coefficients).

    With the batch's ``N`` originals in ``N`` distinct classes, the mixed label of encoding ``i`` holds
    ``lambda_ij`` at the class of original ``j``: the mixing matrix is read off the labels and inverted,
    ``X = Lambda^{-1} E``.

    Args:
        encodings: ``(N, C, H, W)`` recovered encodings.
        soft_labels: ``(N, K)`` their mixed labels (given, or recovered with them).

    Returns:
        ``(originals (N, C, H, W), their classes (N,))``.

    Raises:
        ValueError: the labels do not single out ``N`` classes (repeated classes cannot be told apart this way).
            Labels read off a gradient carry a little noise: the ``N`` heaviest classes must outweigh the next tenfold.
    """
    n = encodings.shape[0]
    mass = soft_labels.sum(0)
    order = mass.argsort(descending=True)
    lightest = mass[order[n - 1]] if n <= mass.numel() else mass.new_zeros(())
    if lightest <= 1e-3 * mass.sum() or (n < mass.numel() and mass[order[n]] > 0.1 * lightest):
        shown = int((mass > 0.1 * mass.max()).sum())
        raise ValueError(f"label-guided unmixing needs {n} distinct classes in the batch; the labels show {shown}")
    classes = order[:n].sort().values
    matrix = soft_labels[:, classes].double()
    originals = torch.linalg.solve(matrix, encodings.flatten(1).double())
    return originals.float().reshape(encodings.shape), classes

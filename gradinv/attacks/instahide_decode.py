"""Decoding MixUp / InstaHide encodings back to the private images, given many encodings of the same images.

The recovery step of Carlini, Deng, Garg, Jha, Mahloujifar, Mahmoody, Song, Thakurta & Tramer ("Is Private Learning
Possible with Instance Encoding?", IEEE S&P 2021, Sec. V-D, "recovering the original images"), in the form Huang et
al. (NeurIPS 2021, Sec. 5 and App. D) use to decode the encodings a gradient inversion attack recovered: over ``T``
epochs a client's ``n`` private images appear in ``M = T n`` encodings ``e_j = sigma_j * sum_i lambda_ji x_{s_ji}``
(in ``[-1, 1]`` units, ``sigma_j`` the InstaHide sign mask; none for MixUp). The decoder solves for the private images

    min_X  mean_j,p ( |e_jp| - |sum_i lambda_ji x_{s_ji, p}| )^2  +  w * mean(1 - |X|)

by Adam from ``X = 0`` (the magnitude residual is written, as in the authors' code, as whichever of
``|e| - m`` and ``-(|e| + m)`` is smaller in magnitude; the second term, weight 0.05, pulls pixels away from zero);
MixUp has no sign mask, so the residual is ``e - m``. Each decoded image is then stretched to the full range.

Like Huang et al. (who call it an upper bound on leakage), this step is given which images make up each encoding and
with which coefficients (``partners``, ``coefficients``). Carlini et al. first estimate those from the encodings
alone (a learned similarity between encodings, graph clustering, then the coefficients); that stage is not
implemented here. InstaHide's sign mask also hides one global sign: ``X`` and ``-X`` explain the encodings equally
well, so an evaluation scores the decoded set under both signs (:func:`best_global_sign`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

from gradinv.defenses.mixup import mixtures


def check_decoding(encodings: torch.Tensor, partners: torch.Tensor, coefficients: torch.Tensor, n_images: int) -> None:
    if encodings.dim() != 4:
        raise ValueError(f"encodings must be (M, C, H, W), got shape {tuple(encodings.shape)}")
    m = encodings.shape[0]
    if partners.shape != coefficients.shape or partners.dim() != 2 or partners.shape[0] != m:
        raise ValueError(
            f"partners {tuple(partners.shape)} and coefficients {tuple(coefficients.shape)} must both be (M, k) "
            f"with M = {m} encodings"
        )
    if partners.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"partners must hold integer image indices, got {partners.dtype}")
    if not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    if int(partners.min()) < 0 or int(partners.max()) >= n_images:
        low, high = int(partners.min()), int(partners.max())
        raise ValueError(f"partners must index the {n_images} private images, got indices {low}..{high}")


def dense_weights(partners: torch.Tensor, coefficients: torch.Tensor, n_images: int) -> torch.Tensor:
    """The ``(M, n)`` mixing matrix: row ``j`` holds ``lambda_ji`` at the images of encoding ``j``, zero elsewhere."""
    dense = torch.zeros(partners.shape[0], n_images, dtype=torch.float64)
    return dense.scatter_add_(1, partners.long(), coefficients.double())


def residual(target: torch.Tensor, mixed: torch.Tensor, *, signed: bool) -> torch.Tensor:
    """The unexplained part of each encoding: ``e - m`` (MixUp) or, with the sign mask, the smaller in magnitude of
    ``|e| - m`` and ``-(|e| + m)`` (so that ``|residual| = ||e| - |m||`` with a useful gradient at ``m = 0``)."""
    if not signed:
        return target - mixed
    plus, minus = target.abs() - mixed, -(target.abs() + mixed)
    return torch.where(plus.abs() < minus.abs(), plus, minus)


def decode(
    encodings: torch.Tensor,
    partners: torch.Tensor,
    coefficients: torch.Tensor,
    n_images: int,
    *,
    signed: bool = True,
    method: str = "lift",
    steps: int = 1000,
    lr: float = 0.01,
    prior_weight: float = 0.05,
) -> torch.Tensor:
    """The ``n_images`` private images behind ``encodings``, in pixel space ``[0, 1]``.

    Args:
        encodings: ``(M, C, H, W)`` encodings in pixel space ``[0, 1]``, as the client trains on them (InstaHide's
            ``(sigma * mixture + 1) / 2``; MixUp's mixture) and as an attack recovers them.
        partners: ``(M, k)`` which private images make up each encoding.
        coefficients: ``(M, k)`` their mixing coefficients.
        n_images: how many private images there are.
        signed: the encodings carry InstaHide's random sign mask (``False`` for MixUp).
        method: ``"lift"``: exact linear algebra (MixUp: least squares; InstaHide: :func:`lift_magnitudes`, then
            :func:`synchronise_signs`); ``"adam"``: Carlini et al.'s / Huang et al.'s gradient descent on the
            objective above, each image stretched to the full range at the end.
        steps, lr: Adam iterations and step size for ``"adam"`` (the authors' code: 1000 and 0.01).
        prior_weight: weight of ``mean(1 - |X|)`` for ``"adam"`` (the authors' code: 0.05).
    """
    check_decoding(encodings, partners, coefficients, n_images)
    if method not in ("lift", "adam"):
        raise ValueError(f"method must be 'lift' or 'adam', got {method!r}")
    target = (2 * encodings.double() - 1).detach()
    weights = coefficients.double()
    if method == "lift":
        flat = target.flatten(1)
        if signed:
            columns = synchronise_signs(lift_magnitudes(flat, partners, weights, n_images), tuple(target.shape[1:]))
            values = columns.T
        else:
            values = torch.linalg.lstsq(dense_weights(partners, weights, n_images), flat).solution
        return ((values.reshape(n_images, *target.shape[1:]) + 1) / 2).clamp(0, 1).float()
    images = torch.zeros(n_images, *encodings.shape[1:], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([images], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        unexplained = residual(target, mixtures(images, partners, weights), signed=signed)
        loss = unexplained.pow(2).mean() + prior_weight * (1 - images.abs()).mean()
        loss.backward()
        optimizer.step()
    decoded = images.detach()
    low = decoded.flatten(1).min(1).values[:, None, None, None]
    high = decoded.flatten(1).max(1).values[:, None, None, None]
    return ((decoded - low) / (high - low).clamp_min(1e-12)).float()


def lifted_system(partners: torch.Tensor, coefficients: torch.Tensor, n_images: int) -> torch.Tensor:
    """``(M, n(n+1)/2)`` rows of ``lambda_j lambda_j^T`` over the upper triangle (off-diagonal entries doubled), so
    that ``|e_jp|^2 = row_j . vec(x_p x_p^T)`` for every pixel ``p``."""
    dense = dense_weights(partners, coefficients, n_images)
    rows, cols = torch.triu_indices(n_images, n_images)
    return dense[:, rows] * dense[:, cols] * torch.where(rows == cols, 1.0, 2.0).double()


def lift_magnitudes(
    target: torch.Tensor, partners: torch.Tensor, coefficients: torch.Tensor, n_images: int
) -> torch.Tensor:
    """Per pixel ``p``, the vector ``x_p`` of the private images' values, up to its sign, from ``|e_jp|``.

    ``|e_jp|^2 = lambda_j^T (x_p x_p^T) lambda_j`` is linear in ``x_p x_p^T`` (lifting, as in PhaseLift, Candes,
    Strohmer & Voroninski 2013): one least-squares solve serves every pixel, and the top eigenpair of each solved
    matrix gives ``x_p`` up to sign. Needs every pair of images to share some encoding (a full-rank system).

    Args:
        target: ``(M, P)`` encodings in ``[-1, 1]`` units, flattened.

    Returns:
        ``(P, n)``, one row per pixel.
    """
    system = lifted_system(partners, coefficients, n_images)
    rank = int(torch.linalg.matrix_rank(system))
    if rank < system.shape[1]:
        raise ValueError(
            f"lifted decoding needs every pair of the {n_images} images to share an encoding (rank {system.shape[1]}); "
            f"the {system.shape[0]} encodings give rank {rank}: collect more epochs, or use method='adam'"
        )
    solution = torch.linalg.lstsq(system, target.pow(2)).solution  # (n(n+1)/2, P)
    rows, cols = torch.triu_indices(n_images, n_images)
    gram = torch.zeros(target.shape[1], n_images, n_images, dtype=torch.float64)
    gram[:, rows, cols] = solution.T
    gram[:, cols, rows] = solution.T
    values, vectors = torch.linalg.eigh(gram)
    return vectors[:, :, -1] * values[:, -1:].clamp_min(0).sqrt()


def neighbours(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs of pixels adjacent across width, height and channel in a ``(C, H, W)`` image."""
    index = np.arange(int(np.prod(shape))).reshape(shape)
    pairs = [(index[:, :, :-1], index[:, :, 1:]), (index[:, :-1, :], index[:, 1:, :]), (index[:-1], index[1:])]
    return np.concatenate([a.ravel() for a, _ in pairs]), np.concatenate([b.ravel() for _, b in pairs])


def synchronise_signs(columns: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Give every pixel's column the sign that agrees with its neighbours.

    Neighbouring pixels of natural images move together across images (``x_p . x_q > 0``), so signs are propagated
    from one pixel along a maximum spanning tree of the pixel grid weighted by ``|x_p . x_q|`` (the most reliable
    agreements first). What remains is one global sign. This step is ours, not the papers'; with few images a few
    neighbouring pairs at stroke edges truly disagree, and a tree edge through one flips the pixels beyond it.
    """
    first, second = neighbours(shape)
    dots = (columns[first] * columns[second]).sum(1).numpy()
    size = columns.shape[0]
    graph = coo_matrix((-np.abs(dots) - 1e-300, (first, second)), shape=(size, size)).tocsr()
    tree = minimum_spanning_tree(graph)
    tree = (tree + tree.T).tocsr()
    agree = coo_matrix((np.sign(dots) + (dots == 0), (first, second)), shape=(size, size)).tocsr()
    agree = agree + agree.T
    signs = np.ones(size)
    order, parent = breadth_first_order(tree, 0, directed=False)  # the pixel grid is connected
    for node in order[1:]:
        signs[node] = signs[parent[node]] * agree[parent[node], node]
    return columns * torch.from_numpy(signs)[:, None]


def best_global_sign(decoded: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """``decoded`` or its negative ``1 - decoded`` (the sign InstaHide hides), whichever is closer to ``originals``
    in summed squared error. Evaluation only: it reads the ground truth."""
    flipped = 1 - decoded
    if (flipped - originals).pow(2).sum() < (decoded - originals).pow(2).sum():
        return flipped
    return decoded

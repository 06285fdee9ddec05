"""Vertical federated learning, as CAFE (Jin et al., NeurIPS 2021) sets it up, and what its server sees.

``M`` parties hold different features of the same ``N`` samples: here each holds a vertical strip of every image
(columns ``[m W / M, (m + 1) W / M)``). Each party's bottom model maps its strip through a convolution and a first
fully connected layer (CAFE's ``W_1, b_1``, the layer its Steps I-II exploit) to an embedding; the server holds the
labels and the top model on the concatenated embeddings. Every iteration the server draws a batch of sample indices
(known to all: the parties must align their rows), the parties compute their embeddings, and the gradient of the
batch's mean loss w.r.t. all parameters is sent to the server, which updates the model by SGD. The server, honest
but curious, so observes the initial model, every batch's indices and every aggregated gradient: the
:class:`VerticalObservation` CAFE attacks.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from gradinv.defenses.base import Defense
from gradinv.validation import check_images, check_labels, check_positive_int, check_seed


def strips(images: torch.Tensor, parties: int) -> list[torch.Tensor]:
    """The parties' features: ``(N, C, H, W)`` cut into ``parties`` vertical strips of equal width."""
    width = images.shape[-1]
    if parties < 1 or width % parties:
        raise ValueError(f"{parties} parties cannot split images {width} pixels wide into equal strips")
    step = width // parties
    return [images[..., m * step : (m + 1) * step] for m in range(parties)]


class BottomModel(nn.Module):
    """One party's model: 3x3 convolution, ReLU, then the first fully connected layer ``fc`` (``W_1``, ``b_1``)."""

    def __init__(self, *, strip_shape: tuple[int, int, int], channels: int = 4, embedding: int = 32) -> None:
        super().__init__()
        c, h, w = strip_shape
        self.features = nn.Sequential(nn.Conv2d(c, channels, kernel_size=3, padding=1), nn.ReLU(), nn.Flatten())
        self.fc = nn.Linear(channels * h * w, embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class VerticalModel(nn.Module):
    """The parties' bottom models and the server's top model (ReLU, linear, ReLU, linear) as one module whose forward
    takes whole images and splits them into the parties' strips."""

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        parties: int = 4,
        num_classes: int = 10,
        channels: int = 4,
        embedding: int = 32,
        hidden: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        strips(torch.zeros(1, *image_shape), parties)  # checks the split
        torch.manual_seed(seed)
        strip = (c, h, w // parties)
        self.parties, self.num_classes = parties, num_classes
        self.bottoms = nn.ModuleList(
            [BottomModel(strip_shape=strip, channels=channels, embedding=embedding) for _ in range(parties)]
        )
        self.top = nn.Sequential(
            nn.ReLU(), nn.Linear(parties * embedding, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def layer_input(self, party: int, strip: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """``H``: what party ``party``'s first fully connected layer receives for its ``strip``, at ``weights`` (all
        the model's parameters by name), differentiable w.r.t. both."""
        prefix = f"bottoms.{party}.features."
        own = {k[len(prefix) :]: w for k, w in weights.items() if k.startswith(prefix)}
        bottom = self.bottoms[party]
        assert isinstance(bottom, BottomModel)
        return functional_call(bottom.features, own, (strip,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = strips(x, self.parties)
        return self.top(torch.cat([b(p) for b, p in zip(self.bottoms, parts, strict=True)], dim=1))


@dataclass
class VerticalObservation:
    """What CAFE's server observes over a vertical FL training run.

    Attributes:
        model: the model at the start of training (the server holds it; later weights follow from the gradients).
        lr: the SGD step size the server applied (``theta_{t+1} = theta_t - lr g_t``).
        batches: the sample indices of each iteration, ``(B,)`` int64 each.
        gradients: each iteration's gradient of the batch's mean loss, by parameter name.
        labels: ``(N,)`` the labels of all samples (the server holds them in vertical FL).
        image_shape: ``(C, H, W)`` of one sample (all parties together).
        defenses: the configurations of the gradient defenses the parties applied (the server knows the protocol).
    """

    model: VerticalModel
    lr: float
    batches: list[torch.Tensor]
    gradients: list[dict[str, torch.Tensor]]
    labels: torch.Tensor
    image_shape: tuple[int, int, int]
    defenses: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.model, VerticalModel):
            raise TypeError(f"model must be a gi.fl.vertical.VerticalModel, got {type(self.model).__name__}")
        if len(self.batches) != len(self.gradients) or not self.batches:
            raise ValueError(f"{len(self.batches)} batches for {len(self.gradients)} gradients (need as many, >= 1)")
        n = self.labels.shape[0]
        for t, batch in enumerate(self.batches):
            if batch.dim() != 1 or batch.numel() == 0 or int(batch.min()) < 0 or int(batch.max()) >= n:
                raise ValueError(f"batch {t} must be a non-empty 1-D tensor of sample indices in [0, {n})")

    @property
    def num_samples(self) -> int:
        """``N``, the samples the parties hold."""
        return int(self.labels.shape[0])

    def weights(self) -> list[dict[str, torch.Tensor]]:
        """The model's weights at each iteration, replayed from the initial model and the observed gradients."""
        current = {k: v.detach().clone() for k, v in self.model.named_parameters()}
        out = []
        for gradient in self.gradients:
            out.append(current)
            current = {k: v - self.lr * gradient[k] for k, v in current.items()}
        return out


def check_vertical_defenses(defenses: Sequence[Any]) -> list[Defense]:
    """The defenses that can guard vertical FL here: those acting on the shared gradient alone (noise, pruning,
    quantisation, ...: only :meth:`~gradinv.defenses.base.Defense.apply`).

    Raises:
        TypeError: an entry that is not a defense.
        ValueError: a defense that changes the data, the model or the training step (MixUp, dropout, PRECODE,
            Soteria, DP-SGD: not modelled for vertical parties).
    """
    out = []
    for defense in defenses:
        if not isinstance(defense, Defense):
            raise TypeError(f"defenses must be gi.defenses objects, got {type(defense).__name__}")
        hooks = [
            h
            for h in ("encode", "prepare_model", "client_update")
            if getattr(type(defense), h) is not getattr(Defense, h)
        ]
        if hooks:
            raise ValueError(
                f"defense {defense.name!r} changes the client's {', '.join(hooks)}: not modelled in vertical FL, "
                "where only defenses of the shared gradient (noise, prune, topk, quantize, sign) apply"
            )
        out.append(defense)
    return out


def train_vertical(
    model: VerticalModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    iterations: int,
    lr: float = 0.0,
    noise_std: float = 0.0,
    seed: int = 0,
    defenses: Sequence[Defense] = (),
) -> VerticalObservation:
    """Run vertical FL training on ``(images, labels)`` and return what the server observed.

    Each epoch visits the samples in a fresh random order (``seed``) in batches of ``batch_size``; each iteration's
    gradient of the batch's mean cross-entropy is sent, with Gaussian noise of std ``noise_std`` added to every entry
    by the parties (a defense; 0: none), then every gradient defense of ``defenses`` in turn
    (:func:`check_vertical_defenses`), recorded, and applied by SGD at ``lr`` (0: the model stays at its initial
    weights). ``model`` itself is not changed.
    """
    images = check_images(images)
    labels = check_labels(labels, images.shape[0], model.num_classes)
    check_positive_int("batch_size", batch_size, allow_none=False)
    check_positive_int("iterations", iterations, allow_none=False)
    check_seed("seed", seed)
    if batch_size > images.shape[0] or lr < 0 or noise_std < 0:
        raise ValueError(
            f"batch_size must be <= {images.shape[0]}, lr and noise_std >= 0; got {batch_size}, {lr}, {noise_std}"
        )
    chain = check_vertical_defenses(defenses)
    defended = torch.Generator().manual_seed(seed + 2)
    initial = copy.deepcopy(model)
    working = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)  # its own stream: the batch order does not depend on the noise
    order: list[int] = []
    batches, gradients = [], []
    for _ in range(iterations):
        if len(order) < batch_size:
            order = torch.randperm(images.shape[0], generator=generator).tolist()
        batch, order = torch.tensor(order[:batch_size]), order[batch_size:]
        loss = nn.functional.cross_entropy(working(images[batch]), labels[batch])
        grads = [
            g + noise_std * torch.randn(g.shape, generator=noise) if noise_std else g
            for g in torch.autograd.grad(loss, list(working.parameters()))
        ]
        shared = {n: g.detach().clone() for (n, _), g in zip(working.named_parameters(), grads, strict=True)}
        for defense in chain:
            shared = defense.apply(shared, generator=defended)
        grads = [shared[n] for n, _ in working.named_parameters()]
        gradients.append(shared)
        batches.append(batch)
        with torch.no_grad():
            for p, g in zip(working.parameters(), grads, strict=True):
                p.sub_(lr * g)
    return VerticalObservation(
        model=initial,
        lr=lr,
        batches=batches,
        gradients=gradients,
        labels=labels,
        image_shape=(int(images.shape[1]), int(images.shape[2]), int(images.shape[3])),
        defenses=[d.config() for d in chain],
    )


def simulate(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    parties: int,
    num_classes: int,
    batch_size: int,
    iterations: int | None = None,
    lr: float = 0.0,
    seed: int = 0,
    defenses: Sequence[Defense] = (),
) -> VerticalObservation:
    """A vertical FL run on ``(images, labels)``: the parties' :class:`VerticalModel` seeded by ``seed``, trained by
    :func:`train_vertical` for ``iterations`` batches (default twice the samples: enough for CAFE's Steps I-II to have
    full rank)."""
    images = check_images(images)
    c, h, w = (int(d) for d in images.shape[1:])
    model = VerticalModel(image_shape=(c, h, w), parties=parties, num_classes=num_classes, seed=seed)
    return train_vertical(
        model,
        images,
        labels,
        batch_size=batch_size,
        iterations=iterations or 2 * images.shape[0],
        lr=lr,
        seed=seed,
        defenses=defenses,
    )


def record_residual(observation: VerticalObservation, images: torch.Tensor) -> dict[str, float]:
    """How well ``images`` (all ``N`` samples, in index order) reproduce the whole observed record: every iteration's
    gradient recomputed at its replayed weights on its batch, all concatenated, against the observed ones:
    ``{"cosine": ..., "rel_l2": ||u' - u|| / ||u||}``. Needs no ground truth."""
    model = observation.model
    names = [n for n, _ in model.named_parameters()]
    device = images.device
    dot = sq_trial = sq_true = sq_diff = 0.0
    for weights, batch, observed in zip(observation.weights(), observation.batches, observation.gradients, strict=True):
        params = {k: w.to(device).requires_grad_(True) for k, w in weights.items()}
        loss = nn.functional.cross_entropy(
            functional_call(model, params, (images[batch.to(device)],)), observation.labels[batch].to(device)
        )
        grads = torch.autograd.grad(loss, [params[k] for k in names])
        for k, g in zip(names, grads, strict=True):
            u = observed[k].to(device)
            dot += float((g * u).sum())
            sq_trial, sq_true, sq_diff = (
                sq_trial + float(g.pow(2).sum()),
                sq_true + float(u.pow(2).sum()),
                sq_diff + float((g - u).pow(2).sum()),
            )
    return {"cosine": dot / max((sq_trial * sq_true) ** 0.5, 1e-30), "rel_l2": (sq_diff / max(sq_true, 1e-30)) ** 0.5}

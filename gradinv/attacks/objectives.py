"""Gradient-matching distances and image priors shared by the optimisation attacks."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch

from gradinv.observation import Observation


def euclidean_distance(trial: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """DLG's objective (Zhu et al. 2019, Eq. 4): ``sum_l ||g'_l - g_l||^2``."""
    return torch.stack([(a - b).pow(2).sum() for a, b in zip(trial, target, strict=True)]).sum()


def l1_distance(trial: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_l ||g'_l - g_l||_1``: the negative log-likelihood of Laplacian noise on the update, up to its scale
    (Balunovic et al., ICLR 2022)."""
    return torch.stack([(a - b).abs().sum() for a, b in zip(trial, target, strict=True)]).sum()


def cosine_distance(trial: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """Inverting Gradients' objective (Geiping et al. 2020, Eq. 4): ``1 - <g', g> / (||g'|| ||g||)``.

    Dot products and norms are taken over all layers together, as in the paper's code, each layer's as one fused
    ``torch.dot`` (no elementwise product held for the backward pass: 2-3x faster than ``(a * b).sum()`` on a
    ConvNet-64's 2.9M entries, ``benchmarks/versus_breaching.py``).
    """
    dot = torch.stack([_dot(a, b) for a, b in zip(trial, target, strict=True)]).sum()
    norm_a = torch.stack([_dot(a, a) for a in trial]).sum().sqrt()
    norm_b = torch.stack([_dot(b, b) for b in target]).sum().sqrt()
    return 1.0 - dot / (norm_a * norm_b).clamp_min(1e-30)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a.reshape(-1), b.reshape(-1))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of ``(N, C, H, W)``: mean |horizontal diff| + mean |vertical diff|."""
    if x.dim() != 4:
        raise ValueError(f"total_variation expects (N, C, H, W), got shape {tuple(x.shape)}")
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean()
    return dx + dy


class BatchNormInputs:
    """Records, while active, the batch mean and (biased) variance of every BatchNorm module's first input.

    Used as ``with BatchNormInputs(model) as recorder: model(x)``; ``recorder.stats`` then maps each BatchNorm
    module name to ``(mean, var)`` of its input over the batch (and spatial) dimensions, with the graph kept so
    a loss on them can be differentiated w.r.t. ``x``. Only the first call of each module is kept, i.e. the first
    forward pass (the batch at the broadcast weights, as the client's ``bn_stats`` are taken).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> BatchNormInputs:
        self.stats = {}
        for name, module in self.model.named_modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                self._hooks.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str) -> Callable[..., None]:
        def record(_module: torch.nn.Module, args: tuple[torch.Tensor, ...], _output: object) -> None:
            if name not in self.stats:
                x = args[0].float()  # under mixed precision the statistics are still compared in float32
                dims = [0, *range(2, x.dim())]
                self.stats[name] = (x.mean(dim=dims), x.var(dim=dims, unbiased=False))

        return record

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def batchnorm_matching(
    trial: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    target: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    first_multiplier: float = 1.0,
) -> torch.Tensor:
    """GradInversion's BatchNorm prior (Yin et al., CVPR 2021, Eq. 7; Huang et al. 2021's ``bn_reg`` term).

    ``R_BN = sum_l ||mu_l(x) - mu_l||_2 + ||sigma^2_l(x) - sigma^2_l||_2`` over the BatchNorm layers ``l`` of
    ``trial``. ``target`` holds the statistics the attacker matches: the client batch's own (when the threat model
    grants them) or the model's running ones. ``first_multiplier`` weights the first layer's term (DeepInversion's
    and breaching's 10, which GradInversion inherits; 1: Huang et al.'s plain sum).
    """
    missing = sorted(set(trial) - set(target))
    if missing:
        raise ValueError(f"no target BatchNorm statistics for layers {missing}")
    terms = [
        (first_multiplier if i == 0 else 1.0)
        * (torch.linalg.vector_norm(mean - target[name][0]) + torch.linalg.vector_norm(var - target[name][1]))
        for i, (name, (mean, var)) in enumerate(trial.items())
    ]
    if not terms:
        raise ValueError("the model has no BatchNorm layers to match")
    return torch.stack(terms).sum()


def running_statistics(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each BatchNorm module's running ``(mean, var)``: the population statistics a trained model carries."""
    stats = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            if module.running_mean is None or module.running_var is None:
                raise ValueError(f"BatchNorm layer {name!r} tracks no running statistics")
            stats[name] = (module.running_mean.detach().clone(), module.running_var.detach().clone())
    return stats


def statistics_from_buffers(
    model: torch.nn.Module, buffers: Mapping[str, torch.Tensor], image_shape: Sequence[int], batch_size: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The batch statistics that a train-mode client's shared BatchNorm buffers carry, after one forward pass.

    PyTorch's BatchNorm updates ``running = (1 - m) running + m batch`` (momentum ``m``; ``1 / num_batches_tracked``
    when its momentum is ``None``; the variance with Bessel's correction). With the broadcast buffers in ``model`` and
    the client's in ``buffers``: ``mean = (new - (1 - m) old) / m`` and the biased variance ``(new - (1 - m) old) / m
    (n - 1) / n``, where ``n`` is the values per channel (``batch_size`` x the layer's spatial size). Exact, to float
    rounding, when the client made one forward pass in train mode (one shared gradient).

    Returns:
        per BatchNorm module name, ``(mean, var)`` as :func:`gradinv.fl.client.bn_statistics` gives them.
    """
    counts = _values_per_channel(model, image_shape, batch_size)
    stats = {}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.modules.batchnorm._BatchNorm) or name not in counts:
            continue
        if module.running_mean is None or module.running_var is None:
            raise ValueError(f"BatchNorm layer {name!r} tracks no running statistics: its buffers carry nothing")
        prefix = f"{name}." if name else ""
        if module.momentum is None:
            momentum = 1.0 / float(buffers[f"{prefix}num_batches_tracked"])
        else:
            momentum = float(module.momentum)
        mean = (buffers[f"{prefix}running_mean"] - (1 - momentum) * module.running_mean) / momentum
        unbiased = (buffers[f"{prefix}running_var"] - (1 - momentum) * module.running_var) / momentum
        n = counts[name]
        stats[name] = (mean, unbiased * (n - 1) / n)
    return stats


def _values_per_channel(model: torch.nn.Module, image_shape: Sequence[int], batch_size: int) -> dict[str, int]:
    """Per BatchNorm module name, how many values of each channel its input holds for a batch of ``batch_size``."""
    probe = copy.deepcopy(model).eval()
    counts: dict[str, int] = {}

    def count(name: str) -> Callable[..., None]:
        def record(_module: torch.nn.Module, args: tuple[torch.Tensor, ...], _output: object) -> None:
            counts.setdefault(name, args[0].numel() // args[0].shape[1])

        return record

    hooks = [
        module.register_forward_hook(count(name))
        for name, module in probe.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
    ]
    first = next(probe.parameters(), None)
    try:
        with torch.no_grad():
            probe(torch.zeros((batch_size, *image_shape), device=None if first is None else first.device))
    finally:
        for hook in hooks:
            hook.remove()
    return counts


def shared_statistics(
    observation: Observation, model: torch.nn.Module, batch_size: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """The client batch's BatchNorm statistics read off its shared buffers (:func:`statistics_from_buffers`) when the
    observation allows it: buffers shared, BatchNorm in train mode, one gradient (one forward pass); else ``None``."""
    threat = observation.threat
    if observation.buffers is None or threat.bn_mode != "train" or threat.update != "gradient":
        return None
    stats = statistics_from_buffers(model, observation.buffers, observation.image_shape, batch_size)
    return stats or None


def bn_prior_target(
    observation: Observation, model: torch.nn.Module, batch_size: int, fallback: str = "running"
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]] | None, str]:
    """What a BatchNorm prior matches, and where it came from: the batch's statistics when granted (``"client
    batch"``), else read off the client's shared buffers (``"client buffers"``, :func:`shared_statistics`), else the
    broadcast model's running statistics (``fallback="running"``) or nothing (``"none"``)."""
    if observation.bn_stats is not None:
        return observation.bn_stats, "client batch"
    shared = shared_statistics(observation, model, batch_size)
    if shared is not None:
        return shared, "client buffers"
    if fallback == "none":
        return None, "none"
    return running_statistics(model), "running statistics"  # empty for a model without BatchNorm layers

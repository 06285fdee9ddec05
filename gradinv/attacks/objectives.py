"""Gradient-matching distances and image priors shared by the optimisation attacks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch


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

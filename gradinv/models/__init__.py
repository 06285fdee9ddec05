"""The model zoo of the papers: ``make(name, num_classes=..., image_shape=...)`` and ``names()``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradinv.models.cnn6 import CNN6
from gradinv.models.convnet import ConvNet
from gradinv.models.lenet import LeNet
from gradinv.models.mlp import MLP
from gradinv.models.resnet import resnet18, resnet20, resnet32

REGISTRY: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "lenet": (LeNet, "LeNet of DLG (Zhu et al. 2019): 3 sigmoid convs + linear, uniform(-0.5, 0.5) init"),
    "convnet": (ConvNet, "ConvNet of Inverting Gradients (Geiping et al. 2020): 8 conv-BN-ReLU, width=64"),
    "resnet18": (resnet18, "ResNet-18 with a 3x3 stem for 32x32 inputs (BatchNorm)"),
    "resnet20": (resnet20, "CIFAR ResNet-20 of He et al. 2016 (BatchNorm)"),
    "resnet32": (resnet32, "CIFAR ResNet-32 of He et al. 2016 (BatchNorm)"),
    "cnn6": (CNN6, "CNN6 of R-GAP (Zhu & Blaschko 2021): 6 bias-free convs + LeakyReLU(0.2); channels= for CNN6-d"),
    "mlp": (MLP, "fully connected ReLU network, hidden=(1000,)"),
}


def names() -> list[str]:
    """The registered model names."""
    return sorted(REGISTRY)


def describe() -> dict[str, str]:
    """One line per model."""
    return {name: REGISTRY[name][1] for name in names()}


def make(
    name: str,
    *,
    num_classes: int = 10,
    image_shape: tuple[int, int, int] = (3, 32, 32),
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a zoo model by name.

    Args:
        name: one of :func:`names`.
        num_classes: outputs of the classifier.
        image_shape: ``(C, H, W)`` of one input.
        seed: seeds the weight initialisation (``None``: torch's global generator).
        **kwargs: model options (``width`` for convnet/resnets, ``hidden`` for mlp).
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(names())}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    shape = tuple(image_shape)
    if len(shape) != 3 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"image_shape must be (C, H, W) positive integers, got {image_shape!r}")
    factory = REGISTRY[name][0]
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = factory(num_classes=num_classes, image_shape=shape, **kwargs)
        except TypeError as err:
            raise TypeError(f"model {name!r}: {err}") from err
    # lets a saved Observation rebuild the architecture
    model.gradinv_spec = {"name": name, "num_classes": num_classes, "image_shape": list(shape), **kwargs}  # type: ignore[assignment]
    return model


def layer_input(model: nn.Module, layer: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on ``inputs``; return its output and the input that ``layer`` received (graph kept)."""
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, args, _o: captured.append(args[0]))
    try:
        output = model(inputs)
    finally:
        hook.remove()
    return output, captured[0]


def num_outputs(model: nn.Module, image_shape: tuple[int, ...]) -> int:
    """The number of classes the model predicts, from one forward pass in eval mode."""
    probe = copy.deepcopy(model).eval()
    dtype = next(probe.parameters()).dtype if any(True for _ in probe.parameters()) else torch.float32
    try:
        with torch.no_grad():
            out = probe(torch.zeros(1, *image_shape, dtype=dtype))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"the model does not accept inputs of shape (N, *{tuple(image_shape)}): {err}") from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must output (N, num_classes) logits, got {found}")
    return int(out.shape[1])


def classifier(model: nn.Module) -> tuple[str, str | None]:
    """Parameter names ``(weight, bias or None)`` of the model's last ``nn.Linear`` layer."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        raise ValueError("label recovery needs a final nn.Linear classifier layer; the model has no nn.Linear")
    prefix = f"{last[0]}." if last[0] else ""
    return f"{prefix}weight", (f"{prefix}bias" if last[1].bias is not None else None)


__all__ = [
    "ConvNet",
    "LeNet",
    "MLP",
    "classifier",
    "describe",
    "layer_input",
    "make",
    "names",
    "num_outputs",
    "resnet18",
    "resnet20",
    "resnet32",
]

"""Input checks that turn bad input into a clear ``ValueError``/``TypeError`` before any torch code runs."""

from __future__ import annotations

import inspect
import math
import types
import typing

import torch
from torch import nn


def check_update(model: nn.Module, update: object) -> None:
    """Check that ``update`` names every parameter of ``model`` with its shape and dtype, all finite."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(update, dict):
        raise TypeError(f"update must be a dict of parameter name -> tensor, got {type(update).__name__}")
    params = dict(model.named_parameters())
    missing, extra = sorted(set(params) - set(update)), sorted(set(update) - set(params))
    if missing or extra:
        raise ValueError(
            f"update does not match the model's {len(params)} parameters: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
        )
    for name, param in params.items():
        value = update[name]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"update[{name!r}] must be a tensor, got {type(value).__name__}")
        if value.shape != param.shape:
            raise ValueError(f"update[{name!r}] has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
        if value.dtype != param.dtype:
            raise ValueError(f"update[{name!r}] has dtype {value.dtype}, expected {param.dtype}")
        if not torch.isfinite(value).all():
            raise ValueError(f"update[{name!r}] contains NaN or Inf")


def check_images(images: object, *, name: str = "images") -> torch.Tensor:
    """Check an ``(N, C, H, W)`` floating tensor of pixels in [0, 1] with N >= 1; return it."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be floating point pixels in [0, 1], got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or Inf")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (pixel space), got values in [{lo:.4g}, {hi:.4g}]")
    return images


def check_labels(labels: object, n: int, num_classes: int) -> torch.Tensor:
    """Check ``(N,)`` integer labels in ``[0, num_classes)``; return them as int64."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of shape (N,), got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match the images, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for a model with {num_classes} outputs, "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.long()


def check_class_labels(labels: object, n: int, name: str, *, unknown_ok: bool = False) -> torch.Tensor:
    """Check ``(n,)`` integer class labels (``-1`` allowed for an unknown label when ``unknown_ok``); return int64."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({n},), got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be integer class indices, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), one per image, got {tuple(labels.shape)}")
    low = -1 if unknown_ok else 0
    if n and int(labels.min()) < low:
        raise ValueError(f"{name} must be >= {low}, got {int(labels.min())}")
    return labels.long()


def check_value(name: str, value: object, hint: object) -> None:
    """Check ``value`` against a type annotation: ``int`` (not ``bool``), ``float`` (a finite number), ``bool``,
    ``str``, ``Literal[...]``, ``X | None``, ``tuple[X, ...]``; other annotations are not checked here.

    Raises:
        TypeError: the wrong type, naming ``name``.
        ValueError: a float that is NaN or infinite, or a value outside a ``Literal``'s choices.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                check_value(name, value, option)
                return
            except (TypeError, ValueError) as err:
                errors.append(err)
        raise errors[0] if len(errors) == 1 else TypeError(f"{name} must be {_describe(hint)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{name} must be one of {list(args)}, got {value!r}")
        return
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, tuple | list):
            raise TypeError(f"{name} must be a tuple, got {type(value).__name__} {value!r}")
        item = args[0] if args and (len(args) == 1 or args[1:] == (Ellipsis,)) else None
        for i, element in enumerate(value):
            check_value(f"{name}[{i}]", element, item)
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    elif hint is str and not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} {value!r}")


def _describe(hint: object) -> str:
    names = [getattr(a, "__name__", repr(a)) for a in typing.get_args(hint)]
    return " or ".join("None" if n == "NoneType" else n for n in names)


def check_arguments(owner: object, values: dict[str, object]) -> None:
    """Check the keyword arguments of ``type(owner).__init__`` found in ``values`` (a constructor's ``locals()``)
    against their annotations (:func:`check_value`), naming the owner and the option in any error."""
    cls = type(owner)
    label = f"{getattr(cls, 'kind', cls.__name__)} {getattr(cls, 'name', cls.__name__)!r}"
    check_call(label, cls.__init__, values)  # type: ignore[misc]


def check_call(label: str, function: typing.Callable[..., object], values: dict[str, object]) -> None:
    """Check the arguments of ``function`` found in ``values`` (its ``locals()``) against their annotations, naming
    ``label`` and the argument in any error."""
    hints = typing.get_type_hints(function)
    for name in inspect.signature(function).parameters:
        if name != "self" and name in values and name in hints:
            check_value(f"{label}: option {name}", values[name], hints[name])


def check_positive_int(name: str, value: int | None, *, allow_none: bool = True) -> None:
    """``value`` (already an int or None) is None (when allowed) or >= 1."""
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise ValueError(f"{name} must be an integer >= 1{' or None' if allow_none else ''}, got {value!r}")


def check_seed(name: str, value: int) -> None:
    """A seed torch accepts: an integer in ``[0, 2**63)``."""
    if not 0 <= value < 2**63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {value!r}")


def check_device(device: object) -> torch.device:
    """The device to compute on: ``None`` (the CPU), a string such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``,
    or a ``torch.device``; one this machine does not have raises ``ValueError`` saying so."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, bool) or not isinstance(device, str | torch.device):
        raise TypeError(f"device must be a string such as 'cpu', 'cuda', 'cuda:1', 'mps', got {type(device).__name__}")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not a device name: use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(chosen)!r}: CUDA is not available here (torch {torch.__version__}, built with CUDA "
                f"{torch.version.cuda or 'none'}; torch.cuda.is_available() is False); use device='cpu'"
            )
        count = torch.cuda.device_count()
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(f"device {str(chosen)!r}: this machine has {count} CUDA device(s), numbered from 0")
        return torch.device("cuda", torch.cuda.current_device() if chosen.index is None else chosen.index)
    if chosen.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(chosen)!r}: Apple's MPS backend is not available here; use device='cpu'")
        return chosen
    if chosen.type != "cpu":
        raise ValueError(f"device {str(chosen)!r}: gradinv runs on 'cpu', 'cuda[:N]' or 'mps'")
    return torch.device("cpu")


MAX_SPEC_INTEGER = 1 << 20
"""The largest integer a saved ``model_spec`` may hold (a width, a depth, a shape) before anything is built."""


def check_model_spec(spec: object, source: str) -> dict[str, object] | None:
    """A saved ``model_spec``: ``None`` or ``{"name": str, ...}`` whose integers are all below
    :data:`MAX_SPEC_INTEGER` (``hidden=[10**11]`` would allocate terabytes), checked before the model is built."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"{source}: model_spec must be null or an object with a 'name', got {spec!r}")

    def walk(value: object, where: str) -> None:
        if isinstance(value, bool) or value is None or isinstance(value, str | float):
            return
        if isinstance(value, int):
            if not -MAX_SPEC_INTEGER <= value <= MAX_SPEC_INTEGER:
                raise ValueError(f"{source}: model_spec {where} = {value} is out of range (|v| <= {MAX_SPEC_INTEGER})")
            return
        if isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")
            return
        raise ValueError(f"{source}: model_spec {where} has an unexpected {type(value).__name__}")

    for key, value in spec.items():
        walk(value, key)
    return spec


def check_observation_fields(
    image_shape: object, num_classes: object, batch_size: object, labels: object, bn_stats: object
) -> None:
    """The side information an :class:`~gradinv.observation.Observation` carries: ``image_shape`` three positive
    integers, ``num_classes`` >= 1, ``batch_size`` None or >= 1, ``labels`` ``(N,)`` integers in
    ``[0, num_classes)`` or ``(N, K)`` soft targets with ``N = batch_size`` when known and ``K = num_classes``,
    ``bn_stats`` None or name -> (mean, var) tensors."""
    if (
        not isinstance(image_shape, tuple)
        or len(image_shape) != 3
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in image_shape)
    ):
        raise ValueError(f"image_shape must be three positive integers (C, H, W), got {image_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.dim() not in (1, 2):
            raise ValueError(f"labels must be an (N,) or (N, K) tensor, got {type(labels).__name__}")
        if batch_size is not None and labels.shape[0] != batch_size:
            raise ValueError(f"labels has {labels.shape[0]} entries for a batch of {batch_size}")
        if labels.dim() == 1:
            check_labels(labels, labels.shape[0], num_classes)
        elif labels.shape[1] != num_classes or not labels.is_floating_point() or not torch.isfinite(labels).all():
            raise ValueError(f"soft labels must be finite (N, {num_classes}) floats, got {tuple(labels.shape)}")
    if bn_stats is not None:
        if not isinstance(bn_stats, dict):
            raise ValueError(f"bn_stats must be a dict of name -> (mean, var), got {type(bn_stats).__name__}")
        for name, pair in bn_stats.items():
            if not (
                isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair)
            ):
                raise ValueError(f"bn_stats[{name!r}] must be a (mean, var) pair of tensors")


def constructor_options(cls: type) -> list[str]:
    """The keyword options ``cls``'s constructor takes, in order."""
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]  # type: ignore[misc]


def check_known_options(cls: type, options: dict[str, object]) -> None:
    """Options that ``cls``'s constructor does not take raise ``TypeError`` naming them and the valid ones."""
    params = constructor_options(cls)
    unknown = sorted(set(options) - set(params))
    if unknown:
        label = f"{getattr(cls, 'kind', cls.__name__)} {getattr(cls, 'name', cls.__name__)!r}"
        raise TypeError(f"{label}: unknown option {', '.join(unknown)}; valid options: {', '.join(params) or 'none'}")

"""Your own modules, from your own files: ``path/to/file.py:ClassName`` plus a state dict (the audit's model, a
GIAS generator)."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn


def load_model(
    spec: str, options: dict[str, Any] | None = None, weights: str | Path | None = None, *, what: str = "--model"
) -> nn.Module:
    """Build ``Class(**options)`` from ``"path/to/file.py:Class"`` and load ``weights`` into it if given.

    The file is imported as a module, with its folder on ``sys.path`` meanwhile so that it may import its siblings
    (it runs, as your training script would run it). ``weights`` is a state dict as ``.safetensors`` or as a PyTorch
    ``.pt``/``.pth`` file (read with ``weights_only=True``: tensors only).

    Raises:
        ValueError: the spec is not ``file.py:Name``, the file does not exist or fails to import, the name does not
            exist or is not an ``nn.Module`` class, or the weights do not fit the model.
    """
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text.endswith(".py") or not name.isidentifier():
        raise ValueError(f"{what} must be 'path/to/file.py:ClassName', got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"{what}: file {path} does not exist")
    module_name = f"gradinv_user_model_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        loader_spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - whatever the user's file raises (sys.exit and argparse
        # at import included; Ctrl-C passes), say where it came from
        del sys.modules[module_name]
        raise ValueError(f"importing {path} failed: {type(err).__name__}: {err}") from err
    finally:
        sys.path.remove(folder)
    factory = getattr(module, name, None)
    if factory is None:
        found = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, nn.Module)]
        raise ValueError(f"{path} defines no {name!r}; nn.Module classes there: {', '.join(found) or 'none'}")
    if not (inspect.isclass(factory) and issubclass(factory, nn.Module)):
        raise ValueError(f"{spec} is not an nn.Module class")
    try:
        model = factory(**(options or {}))
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's constructor: name it and what it raised
        raise ValueError(
            f"{spec}({', '.join(f'{k}={v!r}' for k, v in (options or {}).items())}): {type(err).__name__}: {err}"
        ) from err
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, weights: str | Path) -> None:
    """Load a state dict (``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only=True``) into ``model``."""
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"weights {path} do not fit the model: {err}") from err

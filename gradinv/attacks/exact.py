"""Shared pieces of the exact (analytic) attacks: finding the leaking linear layer and reading inputs off its rows.

For a linear layer ``z = W x + b`` fed by the (flattened, normalised) input, the gradient rows are
``dL/dW_i = sum_n delta_{n,i} x_n`` and ``dL/db_i = sum_n delta_{n,i}``; a row driven by one sample alone gives that
sample exactly as ``dL/dW_i / dL/db_i`` (Phong et al. 2018; Geiping et al. 2020, Prop. 3.1).
"""

from __future__ import annotations

import copy
import math

import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn

from gradinv.models import layer_input
from gradinv.observation import Observation, ThreatModel


def first_linear(model: nn.Module, image_shape: tuple[int, ...]) -> tuple[str, nn.Linear]:
    """The model's first parametrised module, which must be an ``nn.Linear`` with bias on the flattened input.

    Raises:
        ValueError: naming the condition that fails (first layer not linear, no bias, wrong input size).
    """
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"first layer {name!r} is a {type(module).__name__}, not nn.Linear: the bias trick needs a fully "
                "connected first layer (use R-GAP for convolutions)"
            )
        if module.bias is None:
            raise ValueError(f"first layer {name!r} has no bias: dL/dW / dL/db is undefined")
        if module.in_features != math.prod(image_shape):
            raise ValueError(
                f"first layer {name!r} takes {module.in_features} inputs, not the flattened image "
                f"({math.prod(image_shape)} = prod{tuple(image_shape)})"
            )
        return name, module
    raise ValueError("the model has no parameters")


def row_candidates(
    weight_grad: torch.Tensor, bias_grad: torch.Tensor, *, rel_tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs read off every row with a usable bias gradient: ``x_i = dW_i / db_i``.

    Args:
        weight_grad: ``(K, D)``.
        bias_grad: ``(K,)``.
        rel_tol: rows with ``|db_i| <= rel_tol * max |db|`` are skipped (no sample, or cancellation).

    Returns:
        ``(candidates (M, D), row indices (M,))``, rows sorted by decreasing ``|db_i|``.
    """
    magnitude = bias_grad.abs()
    if magnitude.max() <= 0:
        return weight_grad.new_zeros((0, weight_grad.shape[1])), torch.zeros(0, dtype=torch.long)
    rows = (magnitude > rel_tol * magnitude.max()).nonzero().flatten()
    rows = rows[magnitude[rows].argsort(descending=True)]
    wg, bg = weight_grad.double(), bias_grad.double()
    return (wg[rows] / bg[rows, None]).to(weight_grad.dtype), rows


def group_identical(candidates: torch.Tensor, *, tol: float = 1e-4) -> list[list[int]]:
    """Group candidate inputs that agree to ``tol`` (relative L2): rows driven by the same single sample agree.

    Groups are the connected components of the graph linking candidates within ``tol`` of each other, in order of
    their first member.
    """
    if candidates.shape[0] == 0:
        return []
    c = candidates.double()
    norms = c.norm(dim=1).clamp_min(1e-12)
    close = torch.cdist(c, c) <= tol * torch.minimum(norms[:, None], norms[None, :])
    _, component = connected_components(csr_matrix(close.numpy()), directed=False)
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(component.tolist()):
        groups.setdefault(label, []).append(index)
    return list(groups.values())


def malicious_input_shape(
    model: nn.Module, threat: ThreatModel, attack: str, image_shape: tuple[int, int, int] | None = None
) -> tuple[int, int, int]:
    """For a malicious attack's ``prepare_model``: check the threat model allows it; return the input shape."""
    if threat.server != "malicious":
        raise ValueError(f'{attack} modifies the model the server sends: it needs ThreatModel(server="malicious")')
    shape = image_shape or getattr(model, "gradinv_spec", {}).get("image_shape")
    if shape is None:
        raise ValueError("the model's input shape is unknown: pass image_shape=(C, H, W) to prepare_model")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def check_single_step(observation: Observation, attack: str) -> None:
    """Exact row arithmetic needs the gradient itself, or one local step (a scaled gradient)."""
    threat = observation.threat
    if threat.update == "fedavg" and threat.local_steps > 1:
        raise ValueError(
            f"{attack} is exact for a gradient or a single local step; the client took {threat.local_steps} "
            "local steps (its rows then mix several weight states)"
        )


def classifier_targets(observation: Observation, inputs: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """The ``(M, K)`` training targets of known (normalised) inputs, read off the classifier's gradient.

    With softmax cross-entropy over a batch of ``N``, ``dL/dW = (1/N) sum_n (p_n - t_n) h_n^T`` for the features
    ``h_n`` feeding the last linear layer and targets ``t_n`` (one-hot, or mixed by MixUp/InstaHide). Knowing every
    ``x_n`` gives ``p_n`` and ``h_n``, so ``T^T H = sum_n p_n h_n^T - N dL/dW`` is linear in ``T``: least squares.
    The classifier's bias gradient ``(1/N) sum_n (p_n - t_n)`` joins the system as a column of ones beside ``H``:
    without it, features whose batch mean is fixed (a train-mode BatchNorm before the classifier makes it 0) leave
    ``T`` free up to a constant added to every row. With only ``M < N`` of the inputs (``batch_size`` = ``N``), the
    missing samples' terms stay in the right-hand side: the least-squares targets are then an approximation.
    """
    from gradinv.attacks.labels import classifier

    weight_name, bias_name = classifier(observation.model)
    model = copy.deepcopy(observation.model)  # the forward pass may move BN buffers
    layer = model.get_submodule(weight_name.rpartition(".")[0])
    with torch.no_grad():
        logits, features = layer_input(model, layer, inputs)
    n = inputs.shape[0] if batch_size is None else batch_size
    scale = observation.threat.local_lr if observation.threat.update == "fedavg" else 1.0
    grad = observation.update[weight_name].double() / scale
    h, p = features.double(), torch.softmax(logits.double(), dim=-1)
    if bias_name is not None:
        h = torch.cat([h, torch.ones(h.shape[0], 1, dtype=torch.float64)], dim=1)
        grad = torch.cat([grad, observation.update[bias_name].double()[:, None] / scale], dim=1)
    target = p.T @ h - n * grad  # (K, D_h) = T^T H
    return torch.linalg.lstsq(h.T, target.T).solution  # (M, K): min ||H^T T - target^T||


def assign_labels(observation: Observation, inputs: torch.Tensor) -> torch.Tensor | None:
    """Labels of recovered inputs from the classifier's gradient (:func:`classifier_targets`, rounded), when the
    whole batch was recovered. Returns ``None`` if the targets are not (close to) one-hot."""
    targets = classifier_targets(observation, inputs)
    labels = targets.argmax(dim=1)
    if (targets - torch.nn.functional.one_hot(labels, targets.shape[1]).double()).abs().max() > 0.1:
        return None
    return labels

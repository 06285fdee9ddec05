"""Labels of the imprint attack's images when the samples' gradients are coupled (train-mode BatchNorm behind the
imprint module), where no one-sample check is possible: each bin's own input gradient, read off the module's second
layer, against the gradient the model gives that image for each label inside an approximate batch."""

from __future__ import annotations

import copy
import math

import torch

from gradinv.attacks.base import attacker_model
from gradinv.attacks.certify import SHARE_BUDGET, label_candidates
from gradinv.fl.client import bn_statistics, cross_entropy
from gradinv.observation import Observation


def observed_input_gradients(
    observation: Observation, name: str, thresholds: torch.Tensor, bins: torch.Tensor, brightness: torch.Tensor
) -> dict[int, torch.Tensor]:
    """Per candidate (index into ``bins``), ``dL/d out`` of its sample at the module's output, read off the second
    layer without any model of the gradient: from the top bin down, ``T`` (the summed gradients above a threshold) is
    known at empty bins and across each candidate's bin, and there ``(A_j - A_{j+1} - (b_{j+1} - b_j) T_{j+1}) /
    (h - b_j)`` is the bin's one sample's gradient (see :func:`gradinv.attacks.imprint.certify_bins`). Candidates
    below a bin of unknown content are left out."""
    from gradinv.attacks.imprint import _empty  # the attack imports this module

    second = observation.update[f"{name}.linear1.weight"].double().T
    difference = second - torch.cat([second[1:], torch.zeros_like(second[:1])])
    gaps = torch.cat([thresholds[1:] - thresholds[:-1], torch.zeros(1, dtype=torch.float64)])
    where = {int(b): i for i, b in enumerate(bins.tolist())}
    above: torch.Tensor | None = torch.zeros(second.shape[1], dtype=torch.float64)
    found: dict[int, torch.Tensor] = {}
    for j in range(second.shape[0] - 1, -1, -1):
        if j < second.shape[0] - 1 and _empty(observation, name, j):
            above = difference[j] / gaps[j]
        elif j in where and above is not None:
            i = where[j]
            found[i] = (difference[j] - gaps[j] * above) / (float(brightness[i]) - float(thresholds[j]))
            above = above + found[i]
        elif not (j == second.shape[0] - 1 and _empty_top(difference)):
            above = None
    return found


def _empty_top(difference: torch.Tensor) -> bool:
    return not bool(difference[-1].abs().max() > 0)


def coupled_labels(
    observation: Observation,
    name: str,
    batch: torch.Tensor,
    labels: torch.Tensor,
    observed: dict[int, torch.Tensor],
    rounds: int = 3,
) -> torch.Tensor:
    """Labels of the candidates in ``observed`` (their positions in ``batch``), chosen so that the model's gradient
    at the module's output best matches the observed one.

    The gradient under the current labels is computed exactly on the whole approximate ``batch`` in the client's
    (train) mode. Changing candidate ``a``'s label from ``y`` to ``y'`` changes it by ``scale (J_aa^T e_y - J_aa^T
    e_y') / B``, ``J_aa`` the Jacobian of its logits by its module output; ``J_aa`` is taken with the batch's
    BatchNorm statistics held fixed (they move by ``O(1/B)`` with one sample), so it costs one batched backward pass
    per chunk of candidates. The other places keep ``labels`` (a least-squares guess), refined over ``rounds``.

    Args:
        batch: ``(B, C, H, W)`` normalised: the recovered images, then stand-ins for the samples not recovered.
        labels: ``(B,)`` the current labels of every place.
    """
    threat = observation.threat
    factor = 1.0 if threat.update == "gradient" else threat.local_lr
    places = list(observed)
    options = torch.unique(torch.cat([label_candidates(observation), labels[places]]))
    own = _own_rows(observation, name, batch, places, options)  # (M, L, D): J_aa^T e_k, statistics fixed
    model = attacker_model(observation)
    labels = labels.clone()
    n = batch.shape[0]
    for _ in range(rounds):
        out, logits = _run(model, name, batch)
        (current,) = torch.autograd.grad(cross_entropy(logits, labels), out)
        changed = False
        for row, a in enumerate(places):
            now = own[row, (options == labels[a]).nonzero()[0, 0]]
            predicted = factor * (current[a].flatten().double() + (now - own[row]) / n)
            best = int(options[int((predicted - observed[a].flatten()).norm(dim=1).argmin())])
            changed |= best != int(labels[a])
            labels[a] = best
        if not changed:
            break
    return labels


def _run(model: torch.nn.Module, name: str, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The output of module ``name`` and the logits, graph kept."""
    captured: list[torch.Tensor] = []
    hook = model.get_submodule(name).register_forward_hook(lambda _m, _a, out: captured.append(out))
    try:
        logits = model(inputs)
    finally:
        hook.remove()
    return captured[0], logits


def _own_rows(
    observation: Observation, name: str, batch: torch.Tensor, places: list[int], options: torch.Tensor
) -> torch.Tensor:
    """``(M, L, D)``: ``J_aa^T e_k`` of each place ``a`` for each label ``k`` of ``options``, through the model in
    eval mode with every BatchNorm set to the approximate batch's statistics (per-sample, so batched freely)."""
    model = attacker_model(observation)
    stats = bn_statistics(copy.deepcopy(model).train(), batch)
    for module_name, (mean, var) in stats.items():
        module = model.get_submodule(module_name)
        module.running_mean.copy_(mean)  # type: ignore[union-attr, operator]
        module.running_var.copy_(var)  # type: ignore[union-attr, operator]
    model.eval()
    width = math.prod(batch.shape[1:])
    chunk = max(1, SHARE_BUDGET // max(len(options) * width, 1))
    parts = []
    for start in range(0, len(places), chunk):
        part = places[start : start + chunk]
        out, logits = _run(model, name, batch[part])
        units = torch.zeros(len(options), len(part), logits.shape[1], dtype=logits.dtype)
        units[torch.arange(len(options)), :, options] = 1.0
        (rows,) = torch.autograd.grad(logits, out, grad_outputs=units, is_grads_batched=True)
        parts.append(rows.flatten(2).transpose(0, 1).double())
    return torch.cat(parts)

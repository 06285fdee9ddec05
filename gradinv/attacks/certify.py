"""Certificates for exact attacks: evidence, without ground truth, that a returned image *is* one client sample.

A small gradient residual says an answer is consistent with the observed update, not that it is the data: where
the update does not determine the input, other inputs reproduce it as well (R-GAP on a rank-deficient layer; a
bias-trick row that mixes two samples of one class). Exact attacks therefore certify each image by a condition that
a wrong answer fails:

- **one-sample consistency** (bias trick, trap weights, imprint, SPEAR): the observed gradient of the rows, bins or
  units an image was read from equals the gradient that this image alone, with one label, would give them, at the
  scale the threat model fixes (``1 / B``, or ``local_lr / B`` for one local step). A row driven by one sample
  passes; a row mixing two samples ``sum_n delta_n x_n / sum_n delta_n`` gives the gradient of the mixture, which
  is not the sum of the two samples' gradients (for two samples of one class it is about half of it). The label
  that fits is the image's own label. This needs per-sample gradients that do not depend on the rest of the batch
  (no train-mode BatchNorm, no active dropout), the batch size granted by the threat model (a guessed size lets a
  two-sample mixture pass at half the size), and an update no defense has transformed.
- **the whole batch** (any exact attack that returns every sample): the batch's own update reproduces the observed
  one (:data:`CERTIFIED_RESIDUAL`), checked by :meth:`gradinv.attacks.base.Attack.reconstruct`, together with the
  attack's own uniqueness condition (R-GAP: every layer's system has full rank at the answer; SPEAR: every sample
  passes the ReLU consistency check and the factorisation found all ``B`` directions).
"""

from __future__ import annotations

import torch
from torch import nn

from gradinv.observation import Observation

CERTIFIED_RESIDUAL = 1e-4
"""A whole batch is certified only if its own update reproduces the observed one to this relative L2 distance."""

CONSISTENCY_TOL = 1e-4
"""One-sample consistency holds when the predicted and observed gradients agree to this relative L2 distance."""


def coupling(model: nn.Module, training: bool | None = None) -> str | None:
    """Why a sample's gradient through ``model`` depends on the rest of the batch or on randomness, or ``None`` when
    it does not. ``training``: the mode the client runs every module in (``None``: each module's own mode)."""
    for name, module in model.named_modules():
        active = module.training if training is None else training
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (active or module.running_mean is None):
            return f"BatchNorm {name!r} normalises with the batch's statistics (train mode)"
        if isinstance(module, nn.modules.dropout._DropoutNd) and active and module.p > 0:
            return f"dropout {name!r} is active (train mode): the client's masks are private"
    return None


def update_scale(observation: Observation) -> float | None:
    """The factor between one sample's loss gradient and its share of the observed update, or ``None`` when the
    threat model withholds the batch size. Gradient: ``1 / B`` (the mean loss); one local step of size ``lr`` on
    the first mini-batch of ``b`` samples: ``lr / b``."""
    size = observation.batch_size
    if size is None:
        return None
    threat = observation.threat
    if threat.update == "gradient":
        return 1.0 / size
    used = size if threat.local_batch_size is None else min(threat.local_batch_size, size)
    return threat.local_lr / used


def obstacle(observation: Observation) -> str | None:
    """Why one-sample consistency cannot certify anything in this observation, or ``None``."""
    if observation.defenses:
        names = ", ".join(str(d.get("name")) for d in observation.defenses)
        return f"the client's defenses ({names}) changed the update or the data: no image is certified"
    if observation.batch_size is None:
        return "the threat model withholds the batch size, which fixes each sample's share of the update"
    threat = observation.threat
    if threat.update == "fedavg" and threat.local_steps > 1:
        return f"{threat.local_steps} local steps mix several weight states"
    return coupling(observation.model, observation.threat.bn_mode == "train")


def output_gradients(observation: Observation, module_name: str, inputs: torch.Tensor) -> torch.Tensor:
    """``(N, K, *out)``: for each input and each label ``k``, the gradient of that one sample's cross-entropy with
    label ``k`` with respect to the output of ``module_name``, times :func:`update_scale` (its share of the update).

    Cross-entropy's gradient at the logits is ``p - e_k``, so with ``J`` the Jacobian of the logits by the module's
    output the answer is ``J^T p - J^T e_k``: one batched backward pass over the ``K`` unit vectors.

    Raises:
        ValueError: :func:`obstacle` names a reason (the caller checks it first), or the module runs more than once.
    """
    reason = obstacle(observation)
    if reason is not None:
        raise ValueError(reason)
    from gradinv.attacks.base import attacker_model  # base imports this module

    model = attacker_model(observation)
    module = model.get_submodule(module_name)
    captured: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, _a, out: captured.append(out))
    try:
        logits = model(inputs)
    finally:
        hook.remove()
    if len(captured) != 1:
        raise ValueError(f"module {module_name!r} ran {len(captured)} times in one forward pass")
    out = captured[0]
    n, k = logits.shape
    units = torch.eye(k, dtype=logits.dtype).unsqueeze(1).expand(k, n, k)
    try:
        (jt,) = torch.autograd.grad(logits, out, grad_outputs=units, is_grads_batched=True)
    except RuntimeError:  # an operation without a batching rule: one backward pass per class
        jt = torch.stack([torch.autograd.grad(logits, out, units[c], retain_graph=True)[0] for c in range(k)])
    jt = jt.transpose(0, 1).double()  # (N, K, *out): J^T e_k per sample
    p = torch.softmax(logits.detach().double(), dim=1)
    base = torch.einsum("nk,nk...->n...", p, jt)
    scale = update_scale(observation)
    assert scale is not None  # obstacle() checked the batch size
    return scale * (base.unsqueeze(1) - jt)


def best_label(predicted: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sample, the label whose predicted gradient is closest to the observed one.

    Args:
        predicted: ``(N, K, r)`` one sample's share of the update on ``r`` observed entries, per label.
        observed: ``(N, r)`` the observed entries.

    Returns:
        ``(labels (N,), relative L2 error (N,))``.
    """
    error = (predicted - observed.unsqueeze(1)).norm(dim=2) / observed.norm(dim=1, keepdim=True).clamp_min(1e-300)
    best, labels = error.min(dim=1)
    return labels, best


def certify_samples(
    observation: Observation,
    module_name: str,
    inputs: torch.Tensor,
    observed: list[torch.Tensor],
    entries: list[torch.Tensor],
    *,
    min_entries: int = 2,
) -> tuple[list[bool], list[int], list[float], str]:
    """One-sample consistency of each input with the entries of the module's output gradient it was read from.

    Args:
        inputs: ``(M, C, H, W)`` candidate inputs, as the model takes them (normalised).
        observed: per candidate, the observed gradient of the module's output on its entries (e.g. the bias gradient
            of the rows it came from), on the update's scale.
        entries: per candidate, the flat indices of those entries.
        min_entries: fewer entries than this never certify, even when consistent (their label is still given).
            One scalar entry is too weak: among hundreds of mixed rows, some mixture matches one row's gradient for
            one of ``K`` labels by chance (measured on the bias trick: 3 of 177 single-row images certified this way
            were mixtures; 0 of 227 with two rows or more).

    Returns:
        ``(certified, labels, errors, evidence)``: per candidate whether some label explains every entry to
        :data:`CONSISTENCY_TOL` (on at least ``min_entries`` entries), that label (``-1`` if none explains them),
        the relative error, and the evidence in words.
    """
    count = inputs.shape[0]
    reason = obstacle(observation)
    if reason is not None or count == 0:
        return [False] * count, [-1] * count, [float("nan")] * count, reason or "nothing to certify"
    predicted = output_gradients(observation, module_name, inputs).flatten(2)
    certified, labels, errors = [], [], []
    for i, (values, index) in enumerate(zip(observed, entries, strict=True)):
        label, error = best_label(predicted[i : i + 1, :, index], values.double()[None])
        ok = bool(error[0] < CONSISTENCY_TOL)
        certified.append(ok and len(index) >= min_entries)
        labels.append(int(label[0]) if ok else -1)
        errors.append(float(error[0]))
    evidence = (
        f"one-sample consistency: the gradient of the {min_entries} or more entries each image was read from equals "
        f"that image's own gradient, with its label, at the update's scale (to {CONSISTENCY_TOL:g} relative)"
    )
    return certified, labels, errors, evidence

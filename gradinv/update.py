"""What a client shares, as the threat model defines it: one gradient of the mean batch loss, or the weight change
after local SGD steps on its mini-batches; and the input normalisation the client applies first.

The same functions serve the simulated client (``create_graph=False``) and the attacker, who differentiates the
update it recomputes for dummy data (``create_graph=True``): what is attacked is exactly what is shared. Defenses
that replace the client's training step (DP-SGD, Soteria) build on them too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gradinv.observation import Normalization, ThreatModel


def normalize(images: torch.Tensor, normalization: Normalization | None) -> torch.Tensor:
    """Map pixel images ``(N, C, H, W)`` in [0, 1] to the model's input space ``(x - mean) / std``."""
    if normalization is None:
        return images
    mean, std = _stats(normalization, images)
    return (images - mean) / std


def denormalize(inputs: torch.Tensor, normalization: Normalization | None) -> torch.Tensor:
    """Inverse of :func:`normalize`."""
    if normalization is None:
        return inputs
    mean, std = _stats(normalization, inputs)
    return inputs * std + mean


def _stats(normalization: Normalization, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = (torch.tensor(v, dtype=like.dtype, device=like.device).view(1, -1, 1, 1) for v in normalization)
    if mean.shape[1] != like.shape[1]:
        raise ValueError(f"normalization has {mean.shape[1]} channels, the images have {like.shape[1]}")
    return mean, std


def auxiliary_losses(model: nn.Module) -> torch.Tensor | None:
    """The sum of the losses the model's modules recorded in their last forward pass (``auxiliary_loss``: PRECODE's
    KL term), cleared as they are read (a tensor with a graph must not stay on the module); ``None`` if none."""
    terms = []
    for module in model.modules():
        term = getattr(module, "auxiliary_loss", None)
        if term is not None:
            terms.append(term)
            module.auxiliary_loss = None  # type: ignore[assignment]
    return torch.stack(terms).sum() if terms else None


def model_loss(logits: torch.Tensor, labels: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """The client's training loss: :func:`cross_entropy` plus the model's :func:`auxiliary_losses`, for the forward
    pass that produced ``logits``."""
    loss = cross_entropy(logits, labels)
    extra = auxiliary_losses(model)
    return loss if extra is None else loss + extra


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy for ``(N,)`` class indices or ``(N, K)`` soft labels (probabilities)."""
    if labels.dim() == 2:
        return torch.sum(-labels * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, labels)


StepGradient = Callable[[nn.Module, dict[str, torch.Tensor], torch.Tensor, torch.Tensor, list[torch.Tensor]],
                        list[torch.Tensor]]  # fmt: skip
"""``(model, state, inputs, labels, weights) -> gradient``: one step's gradient w.r.t. ``weights`` (the parameters in
``state``, which also holds the buffers) for a mini-batch."""


def loss_gradient(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    weights: list[torch.Tensor],
    *,
    create_graph: bool = False,
) -> list[torch.Tensor]:
    """The plain SGD step's gradient: of the mean training loss (:func:`model_loss`) at ``state``."""
    loss = model_loss(functional_call(model, state, (inputs,)), labels, model)
    return list(torch.autograd.grad(loss, weights, create_graph=create_graph))


def compute_update(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    create_graph: bool = False,
    step_gradient: StepGradient | None = None,
    orders: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """The update a client shares, in ``model.named_parameters()`` order.

    Args:
        model: the model at the broadcast weights, in the client's mode (train/eval).
        inputs: ``(N, C, H, W)`` normalised inputs.
        labels: ``(N,)`` class indices or ``(N, K)`` soft labels.
        threat: says whether a gradient or a FedAvg update is shared, and the local steps, lr and mini-batches.
        create_graph: keep the graph so the update can be differentiated w.r.t. ``inputs`` (attacker side).
        step_gradient: each step's gradient in place of the loss's (:func:`loss_gradient`), e.g. DP-SGD's clipped one
            on the attacker's side.
        orders: per local epoch, the rows of ``inputs`` that epoch visits in order (its mini-batches are cut from
            them); ``None``: every epoch visits the data in order. A shuffling client passes :func:`epoch_orders`
            (``threat.local_shuffle``); an attacker who does not know the shuffle simulates the data order; one that
            keeps a copy of the data per epoch passes each epoch its copy's rows (``fedavg_leakage``).

    Returns:
        The gradient of the mean loss, or ``w_before - w_after`` after ``threat.local_steps`` SGD steps.
    """
    if step_gradient is None and threat.update == "gradient":
        loss = model_loss(model(inputs), labels, model)
        return list(torch.autograd.grad(loss, list(model.parameters()), create_graph=create_graph))
    gradient = step_gradient or (lambda m, s, x, y, w: loss_gradient(m, s, x, y, w, create_graph=create_graph))
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    buffers = dict(model.named_buffers())
    weights: list[torch.Tensor] = list(params)
    if threat.update == "gradient":
        return gradient(model, {**buffers, **dict(zip(names, weights, strict=True))}, inputs, labels, weights)
    # FedAvg: unrolled local SGD (Geiping et al. 2020, Sec. 4 "multiple local steps").
    batches = minibatches(inputs.shape[0] if orders is None else len(orders[0]), threat.local_batch_size)
    for step in range(threat.local_steps):
        epoch, batch = divmod(step, len(batches))
        idx = batches[batch] if orders is None else orders[epoch].to(inputs.device)[batches[batch]]
        state = {**buffers, **dict(zip(names, weights, strict=True))}
        grads = gradient(model, state, inputs[idx], labels[idx], weights)
        weights = [w - threat.local_lr * g for w, g in zip(weights, grads, strict=True)]
    return [p0 - w for p0, w in zip(params, weights, strict=True)]


def local_epochs(n: int, threat: ThreatModel) -> int:
    """How many passes over its ``n`` samples the client's update makes: 1 for a gradient, else as many epochs as
    ``threat.local_steps`` steps over its mini-batches touch."""
    if threat.update == "gradient":
        return 1
    return math.ceil(threat.local_steps / len(minibatches(n, threat.local_batch_size)))


def epoch_orders(n: int, threat: ThreatModel, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffling client's data order: a fresh permutation of its ``n`` samples, drawn from its private
    ``generator``, for each local epoch its ``threat.local_steps`` steps touch (:func:`local_epochs`)."""
    return [torch.randperm(n, generator=generator) for _ in range(local_epochs(n, threat))]


def minibatches(n: int, batch_size: int | None) -> list[slice]:
    """The client's local mini-batches over ``n`` samples in data order (``None``: one batch of all)."""
    size = n if batch_size is None else min(batch_size, n)
    return [slice(i * size, (i + 1) * size) for i in range(math.ceil(n / size))]

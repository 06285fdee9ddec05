"""The client side of one FL round: one gradient (FedSGD) or a FedAvg update after local SGD steps.

The same functions serve the simulated client (``create_graph=False``) and the attacker, who differentiates the
update it recomputes for dummy data (``create_graph=True``): what is attacked is exactly what is shared.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gradinv.defenses.base import Defense
from gradinv.observation import Normalization, Observation, ThreatModel
from gradinv.validation import check_images, check_labels


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


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy for ``(N,)`` class indices or ``(N, K)`` soft labels (probabilities)."""
    if labels.dim() == 2:
        return torch.sum(-labels * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, labels)


def compute_update(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    create_graph: bool = False,
) -> list[torch.Tensor]:
    """The update a client shares, in ``model.named_parameters()`` order.

    Args:
        model: the model at the broadcast weights, in the client's mode (train/eval).
        inputs: ``(N, C, H, W)`` normalised inputs.
        labels: ``(N,)`` class indices or ``(N, K)`` soft labels.
        threat: says whether a gradient or a FedAvg update is shared, and the local steps, lr and mini-batches.
        create_graph: keep the graph so the update can be differentiated w.r.t. ``inputs`` (attacker side).

    Returns:
        The gradient of the mean loss, or ``w_before - w_after`` after ``threat.local_steps`` SGD steps.
    """
    if threat.update == "gradient":
        loss = cross_entropy(model(inputs), labels)
        return list(torch.autograd.grad(loss, list(model.parameters()), create_graph=create_graph))
    # FedAvg: unrolled local SGD (Geiping et al. 2020, Sec. 4 "multiple local steps").
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    buffers = dict(model.named_buffers())
    weights: list[torch.Tensor] = list(params)
    batches = minibatches(inputs.shape[0], threat.local_batch_size)
    for step in range(threat.local_steps):
        idx = batches[step % len(batches)]
        state = {**buffers, **dict(zip(names, weights, strict=True))}
        loss = cross_entropy(functional_call(model, state, (inputs[idx],)), labels[idx])
        grads = torch.autograd.grad(loss, weights, create_graph=create_graph)
        weights = [w - threat.local_lr * g for w, g in zip(weights, grads, strict=True)]
    return [p0 - w for p0, w in zip(params, weights, strict=True)]


def minibatches(n: int, batch_size: int | None) -> list[slice]:
    """The client's local mini-batches over ``n`` samples in data order (``None``: one batch of all)."""
    size = n if batch_size is None else min(batch_size, n)
    return [slice(i * size, (i + 1) * size) for i in range(math.ceil(n / size))]


def bn_statistics(model: nn.Module, inputs: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm module, the batch mean and (biased) variance of its input on ``inputs``."""
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):

            def hook(mod: nn.Module, args: Sequence[torch.Tensor], _out: object, name: str = name) -> None:
                x = args[0].detach()
                dims = [0, *range(2, x.dim())]
                stats[name] = (x.mean(dim=dims), x.var(dim=dims, unbiased=False))

            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return stats


def check_model(model: object, images: torch.Tensor) -> None:
    """A model a client can train and share: an ``nn.Module`` whose parameters all train, in the images' dtype.

    Raises:
        TypeError: not an ``nn.Module``, or parameters of another dtype than the images.
        ValueError: no parameters, or frozen ones (the update would not cover them).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = list(model.named_parameters())
    if not params:
        raise ValueError("the model has no parameters: a client would have no update to share")
    frozen = [n for n, p in params if not p.requires_grad]
    if frozen:
        raise ValueError(
            f"the model has frozen parameters ({', '.join(frozen[:3])}{'...' if len(frozen) > 3 else ''}): gradinv's "
            "clients share an update of every parameter; unfreeze them (requires_grad_(True))"
        )
    dtypes = {p.dtype for _, p in params}
    if dtypes != {images.dtype}:
        raise TypeError(
            f"images are {images.dtype} but the model's parameters are {', '.join(sorted(map(str, dtypes)))}: "
            "convert one to the other (images.float() or model.double())"
        )


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


def client_trainer(defenses: Sequence[Defense]) -> Defense | None:
    """Check ``defenses`` and return the one that replaces the client's training step (DP-SGD, Soteria), if any.

    Raises:
        TypeError: an entry is not a gradinv defense.
        ValueError: more than one defense replaces the training step.
    """
    for defense in defenses:
        if not isinstance(defense, Defense):
            raise TypeError(f"defenses must be gi.defenses objects, got {type(defense).__name__}")
    trainers = [d for d in defenses if type(d).client_update is not Defense.client_update]
    if len(trainers) > 1:
        raise ValueError(f"only one defense may replace the client's training step, got {[d.name for d in trainers]}")
    for defense in defenses:
        defense.check_chain(list(defenses))
    return trainers[0] if trainers else None


def defended_update(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    threat: ThreatModel,
    trainer: Defense | None,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """The client's update, computed by ``trainer`` when one replaces the training step, else by
    :func:`compute_update` (before any defense's ``apply``)."""
    trained = trainer.client_update(model, inputs, targets, threat, generator) if trainer is not None else None
    return trained if trained is not None else compute_update(model, inputs, targets, threat)


def encode_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    defenses: Sequence[Defense],
    seed: int = 0,
    client_data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The data a client with ``defenses`` trains on: its images and labels, or, if a defense obscures data (MixUp,
    InstaHide), the encodings and ``(N, K)`` soft labels. :func:`observe` calls this with its ``seed``, so evaluation
    code gets the very encodings the client used. ``client_data``: the client's training set ``(images, labels)``,
    for defenses that draw from it (MixUp with ``pool="dataset"``)."""
    encoders = [d for d in defenses if type(d).encode is not Defense.encode]
    if not encoders:
        return images, labels
    generator = torch.Generator().manual_seed(seed)
    targets = F.one_hot(labels, num_classes).float()
    pool = None
    if client_data is not None:
        pool_images, pool_labels = client_data
        pool_images = check_images(pool_images, name="client_data images")
        pool_labels = check_labels(pool_labels, pool_images.shape[0], num_classes)
        if pool_images.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"client_data images have shape {tuple(pool_images.shape[1:])}, the batch's {tuple(images.shape[1:])}"
            )
        pool = (pool_images, F.one_hot(pool_labels, num_classes).float())
    for defense in encoders:
        images, targets = defense.encode(images, targets, generator=generator, client_data=pool)
    return images, targets


def observe(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    threat: ThreatModel | None = None,
    seed: int = 0,
    defenses: Sequence[Defense] = (),
    client_data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Observation:
    """Simulate one client sharing its update and return all the attacker sees.

    Args:
        model: the broadcast model (any ``nn.Module`` mapping ``(N, C, H, W)`` to ``(N, K)`` logits); not modified.
        images: ``(N, C, H, W)`` private pixel images in [0, 1].
        labels: ``(N,)`` int64 private labels.
        threat: the threat model (default: ``ThreatModel()``).
        seed: seeds the client's randomness (dropout, defense noise).
        defenses: applied in order to the update before it is shared; their configurations go into the observation
            (the server knows which defense the protocol runs).
        client_data: the client's whole training set ``(images, labels)`` (the batch's images may be part of it),
            for defenses that draw from it: MixUp/InstaHide with ``pool="dataset"``.
    """
    threat = threat or ThreatModel()
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"threat must be a gi.ThreatModel, got {type(threat).__name__}")
    images = check_images(images)
    check_model(model, images)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    if not isinstance(defenses, list | tuple):
        raise TypeError(f"defenses must be a list of gi.defenses objects, got {type(defenses).__name__}")
    trainer = client_trainer(defenses)
    for defense in defenses:
        model = defense.prepare_model(model)
    image_shape = tuple(images.shape[1:])
    num_classes = num_outputs(model, image_shape)
    labels = check_labels(labels, images.shape[0], num_classes)
    images, targets = encode_batch(images, labels, num_classes, defenses, seed, client_data)
    inputs = normalize(images, threat.normalization)
    broadcast = copy.deepcopy(model).train(threat.bn_mode == "train")
    client = copy.deepcopy(broadcast)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bn = bn_statistics(copy.deepcopy(client), inputs) if threat.knows_bn_stats else None
        generator = torch.Generator().manual_seed(seed)
        update = defended_update(client, inputs, targets, threat, trainer, generator)
    names = [n for n, _ in broadcast.named_parameters()]
    shared = {n: u.detach().clone() for n, u in zip(names, update, strict=True)}
    for defense in defenses:
        shared = defense.apply(shared, generator=generator)
    return Observation(
        model=broadcast,
        update=shared,
        threat=threat,
        image_shape=image_shape,  # type: ignore[arg-type]
        num_classes=num_classes,
        labels=targets.clone() if threat.knows_labels else None,
        batch_size=int(images.shape[0]) if threat.knows_batch_size else None,
        bn_stats=bn,
        model_spec=getattr(model, "gradinv_spec", None),
        defenses=[d.config() for d in defenses],
    )

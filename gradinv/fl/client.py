"""The client side of one FL round: one gradient (FedSGD) or a FedAvg update after local SGD steps.

The same functions serve the simulated client (``create_graph=False``) and the attacker, who differentiates the
update it recomputes for dummy data (``create_graph=True``): what is attacked is exactly what is shared.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradinv.defenses.base import Defense
from gradinv.fl.augmentation import augmented_epochs
from gradinv.models import num_outputs
from gradinv.observation import Observation, ThreatModel
from gradinv.update import compute_update, cross_entropy, denormalize, epoch_orders, minibatches, normalize
from gradinv.validation import check_device, check_images, check_labels

__all__ = [
    "bn_statistics",
    "check_model",
    "client_trainer",
    "compute_update",
    "cross_entropy",
    "defended_update",
    "denormalize",
    "encode_batch",
    "minibatches",
    "normalize",
    "num_outputs",
    "observe",
]


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
    copies: int = 1,
) -> list[torch.Tensor]:
    """The client's update, computed by ``trainer`` when one replaces the training step, else by
    :func:`compute_update` (before any defense's ``apply``). ``copies``: ``inputs`` holds this many augmented copies
    of the batch, one per local epoch (:func:`gradinv.fl.augmentation.augmented_epochs`)."""
    if trainer is not None and copies > 1:
        raise ValueError(
            f"defense {trainer.name!r} trains the client itself and does not augment each local epoch afresh; "
            'use augmentation="none" or one local epoch'
        )
    trained = trainer.client_update(model, inputs, targets, threat, generator) if trainer is not None else None
    if trained is not None and trainer is not None:
        if threat.local_shuffle:
            raise ValueError(f"defense {trainer.name!r} trains the client itself and does not reshuffle its data")
        return trained
    n = inputs.shape[0] // copies
    orders = epoch_orders(n, threat, generator) if threat.local_shuffle else None
    if copies > 1:  # epoch e visits its own augmented copy, rows e * n ... (e + 1) * n - 1
        orders = [e * n + (torch.arange(n) if orders is None else orders[e]) for e in range(copies)]
    return compute_update(model, inputs, targets, threat, orders=orders)


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
    device: str | torch.device | None = None,
) -> Observation:
    """Simulate one client sharing its update and return all the attacker sees.

    Args:
        model: the broadcast model (any ``nn.Module`` mapping ``(N, C, H, W)`` to ``(N, K)`` logits); not modified.
        images: ``(N, C, H, W)`` private pixel images in [0, 1].
        labels: ``(N,)`` int64 private labels.
        threat: the threat model (default: ``ThreatModel()``).
        seed: seeds the client's randomness (dropout, PRECODE's latent, defense noise, augmentation draws).
        defenses: applied in order to the update before it is shared; their configurations go into the observation
            (the server knows which defense the protocol runs).
        client_data: the client's whole training set ``(images, labels)`` (the batch's images may be part of it),
            for defenses that draw from it: MixUp/InstaHide with ``pool="dataset"``.
        device: where the client computes its update (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; default the
            CPU). The observation comes back on the CPU whatever the device (attacks take their own ``device``);
            the defenses' ``apply`` runs on the CPU, so their noise is the same draw on every device.
    """
    chosen = check_device(device)
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
    trained_on, copies = augmented_epochs(images, threat, seed)
    inputs = normalize(trained_on, threat.normalization)
    broadcast = copy.deepcopy(model).train(threat.bn_mode == "train")
    client = copy.deepcopy(broadcast).to(chosen)
    inputs = inputs.to(chosen)
    on_device = targets.repeat(copies, *[1] * (targets.dim() - 1)).to(chosen)
    with torch.random.fork_rng(devices=[chosen.index or 0] if chosen.type == "cuda" else []):
        torch.manual_seed(seed)
        first = inputs[: images.shape[0]]
        bn = bn_statistics(copy.deepcopy(client), first) if threat.knows_bn_stats else None
        generator = torch.Generator().manual_seed(seed)
        update = defended_update(client, inputs, on_device, threat, trainer, generator, copies)
    # the client's buffers after its training (BatchNorm's running statistics, updated by its forward passes)
    buffers = {n: b.detach().cpu().clone() for n, b in client.named_buffers()} if threat.shares_buffers else None
    if bn is not None:
        bn = {name: (mean.cpu(), var.cpu()) for name, (mean, var) in bn.items()}
    names = [n for n, _ in broadcast.named_parameters()]
    shared = {n: u.detach().cpu().clone() for n, u in zip(names, update, strict=True)}
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
        buffers=buffers,
        model_spec=getattr(model, "gradinv_spec", None),
        defenses=[d.config() for d in defenses],
        model_training=[dict(r) for r in getattr(model, "gradinv_training", [])],
    )

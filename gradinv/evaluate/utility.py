"""Utility: what a defense costs in accuracy, measured by training with it, never assumed."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from gradinv import data
from gradinv.defenses.base import Defense
from gradinv.defenses.dpsgd import DPSGD, gaussian_epsilon
from gradinv.fl.client import client_trainer, cross_entropy, defended_update, encode_batch, normalize, num_outputs
from gradinv.observation import Normalization, ThreatModel
from gradinv.validation import check_call, check_device, check_images, check_labels


@dataclass(frozen=True)
class Utility:
    """Test accuracy of a model trained with a set of defenses, and how it was measured."""

    accuracy: float
    train_loss: float
    """Cross-entropy of the trained model on (up to 1024 of) its clean training images."""
    epochs: int
    steps: int
    n_train: int
    n_test: int
    seconds: float
    defenses: list[dict[str, Any]] = field(default_factory=list)
    epsilon: float | None = None
    """With DP-SGD among the defenses: the (epsilon, ``delta``) of the run simulated here, ``steps`` noisy steps at
    sampling rate ``batch_size / n_train`` (RDP accountant; the batches are shuffled, not Poisson-sampled, which the
    accountant assumes)."""
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    """The trained model (in eval mode)."""


def _split(
    images: torch.Tensor, labels: torch.Tensor, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    cut = images.shape[0] - max(1, int(round(test_fraction * images.shape[0])))
    return images[order[:cut]], labels[order[:cut]], images[order[cut:]], labels[order[cut:]]


def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` in eval mode on normalised ``inputs``."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            logits = model(inputs[start : start + batch_size])
            correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(inputs.shape[0], 1)


def utility(
    model_factory: Callable[[], nn.Module],
    dataset: str | tuple[torch.Tensor, torch.Tensor],
    defenses: Sequence[Defense] = (),
    epochs: int = 1,
    *,
    n: int = 1000,
    size: int = 16,
    channels: int = 1,
    root: str | None = None,
    test_fraction: float = 0.2,
    batch_size: int = 32,
    lr: float = 0.05,
    momentum: float = 0.9,
    normalization: Normalization | None = None,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
    server_optimizer: Literal["sgd", "adam"] = "sgd",
    device: str | torch.device | None = None,
) -> Utility:
    """Train a fresh model as defended clients would, then measure its test accuracy.

    Every step is one FedSGD round of a client holding the mini-batch: its data pass through the defenses'
    ``encode`` (MixUp, InstaHide), its update is computed the defended way (DP-SGD's clipped, noised gradient;
    Soteria's masked one) and transformed by every ``apply`` (pruning, noise, quantisation, ...), and the server
    applies exactly that shared update with SGD (momentum on the server). So the accuracy belongs to the same
    defended updates the attacks see.

    Args:
        model_factory: builds the untrained model (called once).
        dataset: a name for :func:`gradinv.data.load` (``digits``, ``mnist_subset``, ``cifar10`` with ``root``, ...)
            or ``(images, labels)`` pixel images in [0, 1].
        defenses: the client's defenses, in order (fresh ones: DP-SGD keeps its accounting per object).
        epochs: passes over the training split.
        n: images drawn from a named dataset; split ``1 - test_fraction`` / ``test_fraction`` by ``seed``.
        size, channels, root: as for :func:`gradinv.data.load`.
        batch_size: the client's mini-batch (incomplete last batches are dropped).
        lr, momentum: the server's SGD on the shared updates.
        server_optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"`` (Adam at ``lr``, PyTorch's betas; FedAdam's
            server step with one client, Reddi et al., ICLR 2021; the optimiser PRECODE's code trains with).
        normalization: the client's input normalisation (as in :class:`gradinv.ThreatModel`).
        seed: seeds the split, the batch order, the defenses' draws and the model's own (dropout masks, PRECODE's
            latent, which it draws at test time too): the same seed gives the same accuracy.
        progress: optional ``progress(step, total_steps, nan)`` after each step.
        device: where the model trains (``"cpu"``, ``"cuda"``, ...; default the CPU). The defenses' ``apply`` runs on
            the CPU (the same noise draws on every device); the returned model stays on ``device``.

    Raises:
        ValueError: ``epochs`` < 1, ``test_fraction`` outside (0, 1), ``batch_size`` < 1, or a defense that needs a
            larger batch than ``batch_size``.
    """
    check_call(
        "utility", utility, {k: v for k, v in locals().items() if k not in ("model_factory", "dataset", "device")}
    )
    chosen = check_device(device)
    if epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not 0 <= momentum < 1 or not lr > 0:
        raise ValueError(f"lr must be > 0 and momentum in [0, 1), got lr={lr!r}, momentum={momentum!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    trainer = client_trainer(defenses)
    if isinstance(dataset, str):
        images, labels = data.load(dataset, n=n, size=size, channels=channels, seed=seed, root=root)
    else:
        images, labels = dataset
    images = check_images(images)
    model = model_factory()
    for defense in defenses:
        model = defense.prepare_model(model)
    num_classes = num_outputs(model, tuple(images.shape[1:]))
    labels = check_labels(labels, images.shape[0], num_classes)
    model = model.to(chosen)
    train_x, train_y, test_x, test_y = _split(images, labels, test_fraction, seed)
    threat = ThreatModel(normalization=normalization, bn_mode="train")
    names = [name for name, _ in model.named_parameters()]
    optimizer = (
        torch.optim.Adam(model.parameters(), lr=lr)
        if server_optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    )
    generator = torch.Generator().manual_seed(seed)
    per_epoch = train_x.shape[0] // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {train_x.shape[0]} training images")
    total, step = epochs * per_epoch, 0
    start = time.perf_counter()
    # the model's own draws (dropout masks, PRECODE's latent, in training and, for PRECODE, at test time) are seeded
    with torch.random.fork_rng(devices=[chosen.index or 0] if chosen.type == "cuda" else []):
        torch.manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(train_x.shape[0], generator=generator)
            for b in range(per_epoch):
                idx = order[b * batch_size : (b + 1) * batch_size]
                x, y = encode_batch(
                    train_x[idx], train_y[idx], num_classes, defenses, seed * 1_000_003 + step, (train_x, train_y)
                )
                inputs = normalize(x, normalization).to(chosen)
                model.train()
                update = defended_update(model, inputs, y.to(chosen), threat, trainer, generator)
                shared = {name: u.detach().cpu() for name, u in zip(names, update, strict=True)}
                for defense in defenses:
                    shared = defense.apply(shared, generator=generator)
                optimizer.zero_grad(set_to_none=True)
                for name, param in model.named_parameters():
                    param.grad = shared[name].to(param).clone()
                optimizer.step()
                step += 1
                if progress is not None:
                    progress(step, total, float("nan"))
        model.eval()
        with torch.no_grad():
            train_loss = float(
                cross_entropy(model(normalize(train_x[:1024], normalization).to(chosen)), train_y[:1024].to(chosen))
            )
        test_inputs = normalize(test_x, normalization).to(chosen)
        test_accuracy = accuracy(model, test_inputs, test_y.to(chosen))
    dp = next((d for d in defenses if isinstance(d, DPSGD)), None)
    epsilon = (
        None if dp is None else gaussian_epsilon(dp.noise_multiplier, batch_size / train_x.shape[0], step, dp.delta)
    )
    return Utility(
        accuracy=test_accuracy,
        train_loss=train_loss,
        epochs=epochs,
        steps=step,
        n_train=int(train_x.shape[0]),
        n_test=int(test_x.shape[0]),
        seconds=time.perf_counter() - start,
        defenses=[d.config() for d in defenses],
        epsilon=epsilon,
        model=model,
    )


TRAINING_ATTRIBUTE = "gradinv_training"
"""The attribute :func:`pretrain` sets on the model it returns: a list of training records, oldest first, which
:func:`gradinv.observe` copies into ``Observation.model_training``."""


def pretrain(
    model: nn.Module,
    dataset: str | tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    *,
    n: int = 1000,
    size: int = 16,
    channels: int = 1,
    root: str | None = None,
    test_fraction: float = 0.2,
    batch_size: int = 32,
    lr: float = 0.05,
    momentum: float = 0.9,
    normalization: Normalization | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    server_optimizer: Literal["sgd", "adam"] = "sgd",
) -> nn.Module:
    """A trained copy of ``model``: the broadcast model of a later FL round rather than a fresh initialisation
    (realistic clients, Carletti et al.'s SoK and Du et al.: trained models leak less). Clean training, no defense,
    exactly :func:`utility`'s (SGD with momentum on mini-batch gradients; its arguments mean the same), on a copy.

    The returned model carries what was done to it (``model.gradinv_training``, a list of records oldest first: the
    dataset, epochs, steps, batch size, learning rate, seed, and the held-out accuracy reached), which
    :func:`gradinv.observe` records in the observation, so every result made on it says the model was trained and how.
    ``model`` itself is not changed; its train/eval mode is kept.

    Raises:
        ValueError: as :func:`utility` (``epochs`` < 1, ...).
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    check_call("pretrain", pretrain, {k: v for k, v in locals().items() if k not in ("model", "dataset", "device")})
    result = utility(
        lambda: copy.deepcopy(model),
        dataset,
        (),
        epochs,
        n=n,
        size=size,
        channels=channels,
        root=root,
        test_fraction=test_fraction,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        normalization=normalization,
        seed=seed,
        device=device,
        server_optimizer=server_optimizer,
    )
    trained = result.model
    assert trained is not None
    home = next((p.device for p in model.parameters()), torch.device("cpu"))
    trained = trained.to(home).train(model.training)
    record = {
        "dataset": dataset if isinstance(dataset, str) else "user data",
        "epochs": epochs,
        "steps": result.steps,
        "n_train": result.n_train,
        "batch_size": batch_size,
        "lr": lr,
        "momentum": momentum,
        "optimizer": server_optimizer,
        "seed": seed,
        "test_accuracy": result.accuracy,
        "n_test": result.n_test,
        "train_loss": result.train_loss,
    }
    setattr(trained, TRAINING_ATTRIBUTE, [*getattr(model, TRAINING_ATTRIBUTE, []), record])
    return trained

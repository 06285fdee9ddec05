"""PRECODE (Scheliga, Mäder & Seeland, "PRECODE - A Generic Model Extension to Prevent Deep Gradient Leakage", WACV
2022): a variational bottleneck inserted before the classifier."""

from __future__ import annotations

import copy

import torch
from torch import nn

from gradinv.defenses.base import Defense
from gradinv.validation import check_arguments, check_seed


class VariationalBottleneck(nn.Module):
    """PRECODE's variational bottleneck (Sec. 3): an encoder ``h -> (mu, log sigma^2)`` of size ``2k``, a latent
    sample ``z = mu + sigma * eps`` with ``eps ~ N(0, I)`` drawn by the client in training mode (``z = mu`` in eval
    mode), and a decoder ``z -> h'`` back to the feature size. The KL divergence of ``N(mu, sigma^2)`` from ``N(0, I)``,
    times ``beta``, joins the client's loss (:attr:`auxiliary_loss`, read by :func:`gradinv.update.model_loss`).

    ``noise``: set by an attacker who optimises the client's draw (:mod:`gradinv.attacks.adaptive`); used instead of a
    fresh ``eps`` in training mode.
    """

    private_randomness = True
    """The client's draw is private: a sample's gradient depends on it (:func:`gradinv.attacks.certify.coupling`)."""

    def __init__(self, features: int, latent: int, beta: float) -> None:
        super().__init__()
        self.encoder = nn.Linear(features, 2 * latent)
        self.decoder = nn.Linear(latent, features)
        self.latent, self.beta = latent, beta
        self.noise: torch.Tensor | None = None
        self.auxiliary_loss: torch.Tensor | None = None

    def __getstate__(self) -> dict[str, object]:
        # the last forward's loss (with its graph) and an attacker's draw are not part of the model
        return {**self.__dict__, "auxiliary_loss": None, "noise": None}

    def __deepcopy__(self, memo: dict[int, object]) -> VariationalBottleneck:
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__getstate__(), memo))
        return clone

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encoder(h).chunk(2, dim=-1)
        if self.training:
            noise = getattr(self, "noise", None)
            eps = torch.randn_like(mu) if noise is None else noise
            z = mu + torch.exp(0.5 * logvar) * eps
        else:
            z = mu
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=-1).mean()
        self.auxiliary_loss = self.beta * kl
        return self.decoder(z)


def add_bottleneck(model: nn.Module, latent: int, beta: float, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with a :class:`VariationalBottleneck` on the input of its last ``nn.Linear`` layer, its
    weights initialised as PyTorch's ``nn.Linear`` does, from ``seed`` (the server's initialisation: the same model
    every time, whatever the global random state).

    Raises:
        ValueError: the model has no ``nn.Linear`` layer, or already has a bottleneck.
    """
    model = copy.deepcopy(model)
    if any(isinstance(m, VariationalBottleneck) for m in model.modules()):
        raise ValueError("the model already has a PRECODE bottleneck")
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("PRECODE needs a model whose classifier is an nn.Linear layer")
    parent_name, _, child = linears[-1].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    head = getattr(parent, child)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bottleneck = VariationalBottleneck(head.in_features, latent, beta)
    bottleneck.to(device=head.weight.device, dtype=head.weight.dtype)
    setattr(parent, child, nn.Sequential(bottleneck, head))
    return model


class Precode(Defense):
    """PRECODE (Scheliga et al., WACV 2022): the client trains a model with a variational bottleneck before the
    classifier, so the gradients depend on its private latent draw. The paper reports that Inverting Gradients and
    DLG no longer reconstruct its inputs at little accuracy cost; an attacker that optimises the latent draw with the
    input (the adaptive attack, like Scheliga et al.'s own for dropout) is not stopped (docs/adaptive.md).

    Args:
        latent: the bottleneck's latent size ``k`` (gradinv's default; the paper's choice is not checked here).
        beta: the weight of the KL term in the client's loss (gradinv's default, likewise).
        seed: seeds the bottleneck's initial weights (the server's).
    """

    name = "precode"

    def __init__(self, *, latent: int = 256, beta: float = 1e-3, seed: int = 0) -> None:
        check_arguments(self, locals())
        check_seed("seed", seed)
        if not isinstance(latent, int) or latent < 1:
            raise ValueError(f"latent must be a positive integer, got {latent!r}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.latent, self.beta, self.seed = latent, beta, seed

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return add_bottleneck(model, self.latent, self.beta, self.seed)

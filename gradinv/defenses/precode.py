"""PRECODE (Scheliga, Mäder & Seeland, "PRECODE - A Generic Model Extension to Prevent Deep Gradient Leakage", WACV
2022): a variational bottleneck inserted before the classifier."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from gradinv.defenses.base import Defense
from gradinv.validation import check_arguments, check_seed


def kl_bits(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The KL divergence of ``N(mu, std^2)`` from ``N(0, I)`` in bits, summed over the latent units and averaged over
    the batch: ``-1/2 sum(1 + log std^2 - mu^2 - std^2) / ln 2`` (PRECODE's loss term, as its official code computes
    it; the paper's Eq. 3 up to the unit)."""
    log_var = 2 * std.clamp_min(torch.finfo(std.dtype).tiny).log()
    return -0.5 * (1 + log_var - mu.pow(2) - std.pow(2)).sum(dim=-1).mean() / math.log(2)


class VariationalBottleneck(nn.Module):
    """PRECODE's variational bottleneck (Sec. 3), parametrised as the authors' code does: an encoder
    ``h -> (mu, s)`` of size ``2k`` with ``std = softplus(s)``, a latent sample ``z = mu + std * eps``, ``eps ~ N(0,
    I)`` drawn by the client **in every mode** (the official code samples at inference too, so its test accuracies are
    of sampled models), and a decoder ``z -> h'`` back to the feature size. ``beta`` times :func:`kl_bits` joins the
    client's loss (:attr:`auxiliary_loss`, read by :func:`gradinv.update.model_loss`).

    ``noise``: set by an attacker who optimises the client's draw (:mod:`gradinv.attacks.adaptive`); used instead of a
    fresh ``eps``.
    """

    private_randomness = True
    """The client's draw is private: a sample's gradient depends on it (:func:`gradinv.attacks.certify.coupling`)."""
    draws_in_eval = True
    """The draw happens in eval mode too (dropout draws only in train mode)."""

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

    def statistics(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent mean and standard deviation ``(mu, softplus(s))`` of the bottleneck's input ``h``."""
        mu, raw = self.encoder(h).chunk(2, dim=-1)
        return mu, F.softplus(raw)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mu, std = self.statistics(h)
        noise = getattr(self, "noise", None)
        eps = torch.randn_like(mu) if noise is None else noise
        self.auxiliary_loss = self.beta * kl_bits(mu, std)
        return self.decoder(mu + std * eps)


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
        latent: the bottleneck's latent size ``k`` (256, the official code's ``K``).
        beta: the weight of the KL term (in bits) in the client's loss (1e-3, the official code's).
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

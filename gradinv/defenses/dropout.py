"""Dropout as a defense (Zheng, "Dropout against Deep Leakage from Gradients", arXiv:2108.11106, 2021): the client
trains with a dropout layer before the classifier, so its gradient depends on a random mask the server never sees."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from gradinv.defenses.base import Defense
from gradinv.validation import check_arguments


class DroppedLinear(nn.Linear):
    """An ``nn.Linear`` that applies inverted dropout with rate ``p`` to its input in training mode. It keeps the
    parameter names of the layer it replaces, so the shared update is laid out as before."""

    private_randomness = True
    """The client's masks are private: a sample's gradient depends on them (``gradinv.attacks.certify.coupling``)."""

    def __init__(self, layer: nn.Linear, p: float) -> None:
        super().__init__(layer.in_features, layer.out_features, bias=layer.bias is not None)
        self.load_state_dict(layer.state_dict())
        self.p = p
        self.mask: torch.Tensor | None = None
        """Set by an attacker that optimises the masks (:mod:`gradinv.attacks.adaptive`): in training mode the input
        is multiplied by it instead of a random dropout mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = getattr(self, "mask", None)  # absent from models pickled before the attribute existed
        if mask is not None and self.training:
            return super().forward(x * mask)
        return super().forward(F.dropout(x, self.p, training=self.training))


def add_dropout(model: nn.Module, p: float, where: str) -> nn.Module:
    """A copy of ``model`` with dropout before its last ``nn.Linear`` (``where="classifier"``) or before every
    ``nn.Linear`` (``where="linear"``).

    Raises:
        ValueError: the model has no ``nn.Linear`` layer.
    """
    model = copy.deepcopy(model)
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the dropout defense needs a model with at least one nn.Linear layer")
    for name in linears[-1:] if where == "classifier" else linears:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = getattr(parent, child)
        if not isinstance(layer, DroppedLinear):
            setattr(parent, child, DroppedLinear(layer, p))
    return model


class Dropout(Defense):
    """Train the client's model with dropout (rate ``p``) before the classifier, as Zheng (2021) proposes.

    The broadcast model carries the dropout layer (the server knows the architecture), but each client draws its own
    mask, so an attacker that re-runs the model draws different masks; Zheng reports DLG's reconstruction error
    staying high after 5,800 iterations at ``p = 0.5``. Dropout is active while the client's model is in training mode
    (``bn_mode="train"``, the default), as in PyTorch. Scheliga et al. (2022, "Dropout is NOT all you need") show an
    attacker that also optimises the masks gets through.

    Args:
        p: dropout rate in [0, 1).
        where: ``"classifier"`` (before the last linear layer, Zheng's placement) or ``"linear"`` (before every one).
    """

    name = "dropout"

    def __init__(self, *, p: float = 0.5, where: str = "classifier") -> None:
        check_arguments(self, locals())
        if not 0 <= p < 1:
            raise ValueError(f"dropout rate p must lie in [0, 1), got {p}")
        if where not in ("classifier", "linear"):
            raise ValueError(f"dropout where must be 'classifier' or 'linear', got {where!r}")
        self.p, self.where = p, where

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return add_dropout(model, self.p, self.where)

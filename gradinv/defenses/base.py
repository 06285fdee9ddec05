"""The defense contract: a defense transforms what the client shares, as a real defended client would."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from gradinv.observation import ThreatModel


class Defense:
    """Base class: subclasses set ``name`` and override :meth:`apply` (most), or :meth:`client_update` and
    :meth:`prepare_model` when the defense changes the client's training itself (DP-SGD).

    Defenses compose in list order: ``prepare_model`` hooks run before the round, ``encode`` hooks transform the
    client's data, at most one defense replaces the client's training step, and every ``apply`` then transforms the
    update in turn.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "defense"

    def apply(self, update: dict[str, torch.Tensor], *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The update the defended client shares instead of ``update`` (not modified in place)."""
        return dict(update)

    def encode(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        *,
        generator: torch.Generator,
        client_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Data obscuration: the pixel images in [0, 1] and ``(N, K)`` soft targets the defended client trains on
        instead of ``images`` and ``targets`` (one-hot). Unchanged unless the defense obscures data (MixUp,
        InstaHide). ``client_data``: the client's whole training set (images, one-hot targets), when known."""
        return images, targets

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model as the defended protocol broadcasts it (unchanged unless the defense needs otherwise)."""
        return model

    def client_update(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        threat: ThreatModel,
        generator: torch.Generator,
    ) -> list[torch.Tensor] | None:
        """The client's own update computed the defended way, or ``None`` to compute it as usual."""
        return None

    def check_chain(self, defenses: list[Defense]) -> None:
        """Raise ``ValueError`` if this defense cannot run beside ``defenses`` (the client's whole chain)."""

    def config(self) -> dict[str, Any]:
        """The defense's name and parameters, recorded with every result."""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

"""InstaHide (Huang, Song, Li & Arora, "InstaHide: Instance-hiding Schemes for Private Distributed Learning", ICML
2020), the intra-dataset variant Huang et al. (NeurIPS 2021, Sec. 5) evaluate: a MixUp of ``k`` private images, then
a random sign flip of every entry."""

from __future__ import annotations

import torch

from gradinv.defenses.mixup import MixUp


class InstaHide(MixUp):
    """The client trains on ``sigma * sum_j lambda_j x_j`` with a fresh random ``sigma in {-1, +1}`` per entry.

    As in the InstaHide paper, images live in ``[-1, 1]`` for the mixing and the flip; the encoding is handed to the
    model (and to the attacker's reconstruction) in pixel space as ``(encoding + 1) / 2``, still in ``[0, 1]``. The
    flip leaves ``|2 e - 1| = |sum_j lambda_j (2 x_j - 1)|`` unchanged, which is what decoding attacks (Carlini et al.
    2021) start from: :func:`magnitude`. This is InstaHide's inside-dataset variant, partners from the client's batch
    or training set (``pool``, see :class:`~gradinv.defenses.mixup.MixUp`); the cross-dataset variant, which mixes in
    images from a large public set, is not modelled.

    Args:
        k: images per encoding (Huang et al.: 4).
        upper_bound: the largest mixing coefficient (Huang et al.: 0.65).
        lower_bound: the smallest mixing coefficient.
    """

    name = "instahide"

    def encode(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        *,
        generator: torch.Generator,
        client_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mixed, soft = super().encode(images, targets, generator=generator, client_data=client_data)
        # coefficients sum to 1, so the mixture in [-1, 1] units is 2 * (pixel mixture) - 1
        sign = torch.randint(0, 2, mixed.shape, generator=generator).to(mixed) * 2 - 1
        return (sign * (2 * mixed - 1) + 1) / 2, soft


def magnitude(encodings: torch.Tensor) -> torch.Tensor:
    """``|2 e - 1|``: what survives the sign flip, in ``[0, 1]`` (the mixture's magnitude in [-1, 1] units)."""
    return (2 * encodings - 1).abs()

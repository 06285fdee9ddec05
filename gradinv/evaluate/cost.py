"""What a full end-to-end recovery of a client's data costs the attacker, estimated as Huang et al. (NeurIPS 2021,
Sec. 6) do: inversions per training step times the steps the attack needs, times the time of one inversion."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gradinv.defenses.base import Defense
from gradinv.defenses.instahide import InstaHide
from gradinv.defenses.mixup import MixUp


def decoder_epochs(batch_size: int, chain: Sequence[Defense]) -> int:
    """Epochs of encodings the decoder needs before originals come back (1 without data obscuration).

    The mixing pool is the client's batch of ``B`` images and each epoch gives ``B`` encodings of it. MixUp's
    mixtures are linear: ``B`` equations for ``B`` unknowns, one epoch. InstaHide's magnitudes are linear in
    ``x x^T`` (``gi.attacks.instahide_decode.lift_magnitudes``): ``B (B + 1) / 2`` unknowns per pixel, so at least
    ``ceil((B + 1) / 2)`` epochs.
    """
    if any(isinstance(d, InstaHide) for d in chain):
        return math.ceil((batch_size + 1) / 2)
    return 1


def full_recovery(
    seconds_per_batch: float, batch_size: int, client_images: int, chain: Sequence[Defense]
) -> dict[str, Any]:
    """The cost of recovering all ``client_images`` of a client with batches of ``batch_size``.

    Returns:
        ``inversions`` (gradient inversions the attacker runs), ``decoder_epochs``, ``seconds`` (inversions times
        ``seconds_per_batch``) and ``encodings`` (whether a decoding step is needed on top).
    """
    epochs = decoder_epochs(batch_size, chain)
    inversions = math.ceil(client_images / batch_size) * epochs
    return {
        "inversions": inversions,
        "decoder_epochs": epochs,
        "seconds": inversions * seconds_per_batch,
        "encodings": any(isinstance(d, MixUp) for d in chain),
    }

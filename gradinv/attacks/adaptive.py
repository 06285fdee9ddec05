"""Adaptive attacks: an attacker who knows which defense the client ran (the server runs the protocol, so it does).

A defense must be judged against an attacker who accounts for it (Balunovic, Dimitrov, Staab & Vechev, "Bayesian
Framework for Gradient Leakage", ICLR 2022; Wu, Chen, Guo & Weinberger, "Learning to Invert: Simple Adaptive
Attacks for Gradient Inversion in Federated Learning", UAI 2023). For the sparsifying defenses (pruning the smallest
entries, Zhu et al. 2019 Sec. 5; top-k) the shared update is the client's gradient on the entries the defense let
through and zero elsewhere: the adaptive attacker matches its trial gradient *on those entries only* (a zero in the
shared update says nothing about the gradient there), instead of asking the trial gradient to be zero where the
defense cut it, which is what an attacker ignoring the defense does.

Soteria (Sun et al., CVPR 2021) is a sparsifier of one layer: it zeroes the classifier's weight-gradient columns of
the features it judges sensitive and leaves every other entry exact. Balunovic et al. break it by leaving
the defended layer out of the match; the same support view does that for the zeroed columns and keeps the columns
Soteria let through, which are exact and say more.

The other defenses' adaptive counterparts (the noise-aware objective for noise and DP-SGD, dropout masks optimised
too) are not built yet: asking for them raises ``ValueError`` rather than silently running the plain attack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from gradinv.observation import Observation

SPARSIFIERS = frozenset({"prune", "topk", "soteria"})
"""Defenses that zero entries of the update and leave the rest exact: the adaptive view keeps only what survived."""

View = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]
"""Maps a trial update to what the attacker compares with the observed one."""


def support_masks(target: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, 1 where the shared update is nonzero (the defense let the entry through), else 0."""
    return [(t != 0).to(t.dtype) for t in target]


def defense_view(observation: Observation, target: Sequence[torch.Tensor]) -> View:
    """The adaptive attacker's view of a trial update under the client's recorded defenses.

    Raises:
        ValueError: no defense is recorded (nothing to adapt to), or one has no adaptive counterpart yet.
    """
    names = [str(d.get("name")) for d in observation.defenses]
    if not names:
        raise ValueError("adaptive=True, but the observation records no client defense to adapt to")
    unsupported = sorted(set(names) - SPARSIFIERS)
    if unsupported:
        raise ValueError(
            f"no adaptive counterpart yet for the defense(s) {unsupported}; adaptive attacks exist for "
            f"{sorted(SPARSIFIERS)} (run with adaptive=False for the attack that ignores the defense)"
        )
    masks = support_masks(target)

    def view(trial: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [g * m for g, m in zip(trial, masks, strict=True)]

    return view

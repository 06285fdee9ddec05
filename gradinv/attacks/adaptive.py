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

Gaussian noise of std ``sigma`` on the update: the Bayes-optimal attack (Balunovic et al., Sec. 4) maximises the
posterior ``log p(g | x) + log p(x)``: with ``log p(g | x) = -||g(x) - g||^2 / (2 sigma^2)`` and the image prior
``log p(x) = -lambda TV(x)``, it minimises ``||g(x) - g||^2 + 2 sigma^2 lambda TV(x)``: the squared L2 distance
(DLG's own) with a TV prior whose weight grows with the noise variance (:func:`noise_prior`). The attack that ignores
the noise is the same with ``lambda = 0``; Inverting Gradients' cosine distance is replaced by the likelihood's L2.

The other defenses' adaptive counterparts (Laplacian noise's L1 likelihood, DP-SGD's clipping applied to the trial,
dropout masks optimised too) are not built yet: asking for them raises ``ValueError`` rather than silently running
the plain attack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from gradinv.observation import Observation

SPARSIFIERS = frozenset({"prune", "topk", "soteria"})
"""Defenses that zero entries of the update and leave the rest exact: the adaptive view keeps only what survived."""

NOISE = frozenset({"noise"})
"""Defenses that add noise to the update: the adaptive objective is the noise-aware posterior (Gaussian noise only)."""

ADAPTABLE = SPARSIFIERS | NOISE
"""Every defense with an adaptive counterpart."""

TV_PRIOR = 16.0
"""``lambda`` of the image prior ``p(x) ~ exp(-lambda sum |grad x|)`` in the noise-aware objective: a total variation
*summed* over the entries (of the normalised input), so that ``lambda`` does not depend on the image size; as
:func:`~gradinv.attacks.objectives.total_variation` is a mean, its weight is ``2 sigma^2 lambda`` times the number of
entries. gradinv's own calibration, with iDLG on DLG's LeNet at 32x32 (docs/adaptive.md): the best weight of the mean
TV was 0.1 (``lambda`` 16) at std 1e-3 and 10 at std 1e-2 on the cat (the same ``lambda``: the Bayesian scaling
holds), and 0.03-0.1 on two other photographs at std 1e-3."""

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
    unsupported = sorted(set(names) - ADAPTABLE)
    if unsupported:
        raise ValueError(
            f"no adaptive counterpart yet for the defense(s) {unsupported}; adaptive attacks exist for "
            f"{sorted(ADAPTABLE)} (run with adaptive=False for the attack that ignores the defense)"
        )
    noise_prior(observation, 1)  # refuses a noise it has no likelihood for
    masks = support_masks(target)

    def view(trial: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [g * m for g, m in zip(trial, masks, strict=True)]

    return view


def noise_prior(observation: Observation, entries: int) -> float:
    """The weight of the mean total variation in the noise-aware objective (module docstring), ``2 sigma^2 lambda``
    times ``entries`` (the trial batch's number of input entries), in the update's units; 0 when no noise is
    recorded. Noise added twice adds its variances.

    Raises:
        ValueError: noise other than Gaussian (its likelihood is not built yet).
    """
    variance = 0.0
    for defense in observation.defenses:
        if defense.get("name") not in NOISE:
            continue
        if defense.get("distribution", "gaussian") != "gaussian":
            raise ValueError(
                f"no adaptive counterpart yet for {defense.get('distribution')} noise (the noise-aware objective "
                "is built for Gaussian noise; run with adaptive=False)"
            )
        variance += float(defense["std"]) ** 2
    return 2 * variance * TV_PRIOR * entries

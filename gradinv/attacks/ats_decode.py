"""Undoing an ATS policy (Gao et al., CVPR 2021; :mod:`gradinv.defenses.ats`) on the images a gradient inversion
recovered: the adaptive step against ATS.

ATS hides nothing from an attack that inverts the update: the update is that of the transformed images, which any
attack recovers as it would the originals. Balunovic et al. (ICLR 2022, Sec. 6) and Wu et al. (UAI 2023) break ATS
by this route, knowing the policy (the protocol says it). What the policy does to an image is then undone where it
can be: every signed operation has an inverse (a translation shifts back, losing the band it pushed out; a shear or
rotation turns back; a blend with PIL's degenerate image divides by its factor: ``x = d + (y - d) / f`` with the
degenerate ``d`` estimated from ``y``), the unsigned ones are kept as they are (``invert`` is its own inverse;
``autocontrast``, ``equalize``, ``posterize`` and ``solarize`` have none).

The attacker does not know each image's signs (one per signed operation, drawn per image) nor, for a hybrid policy,
which alternative was drawn. Each candidate (an alternative and a sign per operation) is scored without ground truth
by its round trip: the candidate's decoded image transformed forward again must reproduce the recovered image; the
wrong sign of a translation puts the black band on the wrong side, and a blend undone with the larger factor clips
where the client's smaller one did not. Among the candidates of smallest round-trip error (up to 8-bit rounding),
the decoded image of widest spread is kept: undoing a blend with too large a factor compresses the image, with too
small a factor it clips (gradinv's own criterion).
"""

from __future__ import annotations

import itertools

import torch

from gradinv.defenses import ats

ROUNDING = 3.0 / 255**2
"""Round-trip errors (mean squared, [0, 1] units) within this of the best count as ties: 8-bit rounding."""
MAX_CANDIDATES = 4096
"""The most (alternative, signs) candidates tried per image."""


def _inverse(name: str, levels: torch.Tensor, magnitude: float) -> torch.Tensor:
    """The inverse of one operation at a signed ``magnitude`` (8-bit levels), or the input where there is none."""
    if name == "translateX":
        return ats.translate_x(levels, -magnitude)
    if name == "translateY":
        return ats.translate_y(levels, -magnitude)
    if name == "shearX":
        return ats.shear_x(levels, -magnitude)
    if name == "shearY":
        return ats.shear_y(levels, -magnitude)
    if name == "rotate":
        return ats.rotate(levels, -magnitude)
    if name == "invert":
        return ats.invert(levels)
    factor = 1 + magnitude
    if name == "brightness":
        return (levels / factor).clamp(0, 255).round()
    if name == "contrast":
        degenerate = torch.full_like(levels, float(int(float(ats.grey(levels).mean()) + 0.5)))
    elif name == "color":
        degenerate = ats.grey(levels).expand_as(levels)
    elif name == "sharpness":
        degenerate = ats.smooth(levels)
    else:  # autocontrast, equalize, posterize, solarize: not invertible
        return levels
    return (degenerate + (levels - degenerate) / factor).clamp(0, 255).round()


def candidates(policy: str) -> list[tuple[list[int], list[int]]]:
    """Every (sub-policy indices, signs) the client may have drawn for ``policy``."""
    out = []
    for indices in ats.parse_policy(policy):
        for signs in itertools.product((1, -1), repeat=len(indices)):
            out.append((indices, list(signs)))
    if len(out) > MAX_CANDIDATES:
        raise ValueError(f"policy {policy!r} has {len(out)} sign combinations, more than {MAX_CANDIDATES}")
    return out


def undo(image: torch.Tensor, indices: list[int], signs: list[int]) -> torch.Tensor:
    """The candidate original of one recovered image ``(C, H, W)`` in [0, 1]: the operations inverted in reverse."""
    levels = (image.detach().float().cpu().clamp(0, 1) * 255).round()
    for index, sign in reversed(list(zip(indices, signs, strict=True))):
        name, level = ats.POLICIES[index]
        magnitude = ats.RANGES[name][level]
        levels = _inverse(name, levels, sign * magnitude if name in ats.SIGNED else magnitude)
    return (levels / 255).to(image)


def decode(images: torch.Tensor, policy: str) -> tuple[torch.Tensor, list[tuple[list[int], list[int]]]]:
    """Undo ``policy`` on recovered images ``(N, C, H, W)`` in [0, 1], choosing each image's alternative and signs by
    the round trip. Returns ``(decoded images, the chosen (indices, signs) per image)``.

    Raises:
        ValueError: images not ``(N, C, H, W)``, or a policy that is not ATS's.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    options = candidates(policy)
    decoded, chosen = [], []
    for image in images:
        scored = []
        for indices, signs in options:
            guess = undo(image, indices, signs)
            error = float((ats.transform(guess, indices, signs) - image.clamp(0, 1)).pow(2).mean())
            scored.append((error, float(guess.std()), guess, (indices, signs)))
        best = min(score[0] for score in scored)
        # candidates whose round trip is as good up to 8-bit rounding (a blend's factor leaves no trace when nothing
        # clipped): the one of widest spread, since a too-small factor's inverse would have clipped
        ties = [score for score in scored if score[0] <= best + ROUNDING]
        _, _, guess, draw = max(ties, key=lambda score: score[1])
        decoded.append(guess)
        chosen.append(draw)
    return torch.stack(decoded), chosen

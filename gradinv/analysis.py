"""Before running anything: which exact attacks apply to a model, an input shape and a batch size."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from gradinv.attacks.exact import first_linear
from gradinv.attacks.labels import classifier
from gradinv.attacks.rgap import LayerRank, rank_report
from gradinv.attacks.spear import relu_after


@dataclass(frozen=True)
class Applicability:
    """Whether an attack's conditions hold, and why (or why not)."""

    attack: str
    applies: bool
    exact: bool
    reason: str


def applicable_attacks(model: nn.Module, image_shape: tuple[int, int, int], batch_size: int) -> list[Applicability]:
    """Check each exact attack's conditions on ``model`` for inputs ``image_shape`` and ``batch_size``.

    - ``bias_trick``: the first parametrised layer is ``nn.Linear`` with bias on the flattened input; exact for one
      sample, and for the samples of a batch that drive some row alone.
    - ``idlg`` labels: batch size 1 and a final ``nn.Linear`` classifier.
    - ``trap_weights``: as the bias trick, for a malicious server that sets the first layer's weights.
    - ``spear``: as the bias trick, with a ReLU after that layer and more units than ``batch_size``; exact for the
      whole batch (the sampling cost grows as ``B 2^(B-1)``).
    - ``rgap``: batch size 1 and a chain of conv/linear layers with invertible activations; exact when every layer
      is rank-sufficient (:func:`rank_report`, computed here only for batch size 1).
    - ``imprint``: always, for a malicious server that may prepend its module.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    results = []
    try:
        name, layer = first_linear(model, image_shape)
        scope = "every input" if batch_size == 1 else "inputs that drive a row alone (about one row in 2^(N-1))"
        results.append(
            Applicability(
                "bias_trick",
                True,
                True,
                f"first layer {name!r} is linear with bias ({layer.out_features} rows): {scope}",
            )
        )
    except ValueError as err:
        results.append(Applicability("bias_trick", False, False, str(err)))
    try:
        weight, _ = classifier(model)
        ok = batch_size == 1
        reason = f"classifier {weight!r}" + ("" if ok else f"; batch size {batch_size} > 1 (use yin/llg labels)")
        results.append(Applicability("idlg", ok, ok, reason))
    except ValueError as err:
        results.append(Applicability("idlg", False, False, str(err)))
    bias = next(a for a in results if a.attack == "bias_trick")
    results.append(
        Applicability(
            "trap_weights",
            bias.applies,
            bias.applies,
            "a malicious server can plant trap weights in the fully connected first layer"
            if bias.applies
            else bias.reason,
        )
    )
    results.append(_spear(model, image_shape, batch_size, bias))
    results.append(_rgap(model, image_shape, batch_size))
    results.append(
        Applicability(
            "imprint",
            True,
            True,
            "needs a malicious server that prepends an imprint module; exact per single-sample bin",
        )
    )
    return results


def _spear(model: nn.Module, image_shape: tuple[int, int, int], batch_size: int, bias: Applicability) -> Applicability:
    if not bias.applies:
        return Applicability("spear", False, False, bias.reason)
    name, layer = first_linear(model, image_shape)
    try:
        relu_after(model, name)
    except ValueError as err:
        return Applicability("spear", False, False, str(err))
    if batch_size >= min(layer.out_features, layer.in_features):
        return Applicability("spear", False, False, f"{layer.out_features} units do not exceed the batch {batch_size}")
    samples = batch_size * 2 ** (batch_size - 1)
    cost = "" if batch_size <= 16 else f"; batch {batch_size} needs about {samples:.1e} samples"
    return Applicability("spear", True, True, f"first layer {name!r} is linear with bias and ReLU: whole batch{cost}")


def _rgap(model: nn.Module, image_shape: tuple[int, int, int], batch_size: int) -> Applicability:
    if batch_size != 1:
        return Applicability("rgap", False, False, f"R-GAP inverts one sample; batch size {batch_size}")
    try:
        ranks = rank_report(model, image_shape)
    except ValueError as err:
        return Applicability("rgap", False, False, str(err))
    short = [r for r in ranks if not r.sufficient]
    if short:
        where = ", ".join(f"{r.layer!r} rank {r.rank} < {r.unknowns}" for r in short)
        return Applicability("rgap", True, False, f"rank-deficient ({where}): approximate only")
    return Applicability("rgap", True, True, f"every one of {len(ranks)} layers is rank-sufficient")


__all__ = ["Applicability", "LayerRank", "applicable_attacks", "rank_report"]

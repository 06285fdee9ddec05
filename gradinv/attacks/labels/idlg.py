"""iDLG label recovery (Zhao et al., "iDLG: Improved Deep Leakage from Gradients", arXiv 2001.02610, 2020, Sec. 3)."""

from __future__ import annotations

import torch


def idlg_scores(weight_grad: torch.Tensor, bias_grad: torch.Tensor | None = None) -> torch.Tensor:
    """``(K,)`` the per-class scores iDLG reads the label from.

    With softmax cross-entropy, ``dL/dW_i = (p_i - y_i) a`` for features ``a``: only the true class ``c`` has
    ``p_c - 1 < 0``. iDLG reads the sign of the row sums of ``dL/dW`` (exact when ``sum(a) > 0``, e.g. after a ReLU
    or sigmoid); the bias gradient ``dL/db_i = p_i - y_i`` gives the same sign without any assumption on ``a``, so it
    is read when the layer has a bias and a defense has not zeroed all of it.
    """
    if bias_grad is not None and bool(bias_grad.ne(0).any()):
        return bias_grad
    return weight_grad.sum(dim=-1)


def idlg_label(weight_grad: torch.Tensor, bias_grad: torch.Tensor | None = None) -> torch.Tensor:
    """The label of a single sample from the last layer's gradient: the class of the most negative score of
    :func:`idlg_scores`.

    Args:
        weight_grad: ``(K, D)`` gradient of the last linear layer's weight.
        bias_grad: ``(K,)`` gradient of its bias, or ``None``.

    Returns:
        ``(1,)`` int64 label.
    """
    return idlg_scores(weight_grad, bias_grad).argmin().reshape(1)


def idlg_source(weight_grad: torch.Tensor, bias_grad: torch.Tensor | None = None) -> str:
    """Whether iDLG's rule decided the label, in words for a result's ``label_source``.

    The rule holds when exactly one score of :func:`idlg_scores` is negative (one sample, plain cross-entropy, an
    update no defense perturbed). A pruning, quantisation or noise defense can zero the true class's entry or make
    others negative; the most negative is then a guess, and the source says so instead of ``idlg``.
    """
    scores = idlg_scores(weight_grad, bias_grad)
    negative = int(scores.lt(0).sum())
    if negative == 1:
        return "idlg"
    return (
        f"idlg, guessed: {negative} of {scores.numel()} classes have a negative gradient where the rule needs "
        "exactly one (a defense perturbed the classifier's update); the most negative was taken"
    )

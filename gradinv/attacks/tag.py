"""TAG (Deng, Wang, Li, Wang, Ding & Yang, Findings of EMNLP 2021, "TAG: Gradient Attack on Transformer-based
Language Models"): DLG for transformers. Dummy word embeddings (and, for a batch whose labels are unknown, soft
labels, as DLG does) are optimised until their gradient matches the shared one under TAG's distance, the squared L2
norm plus an L1 term (paper, eq. 3), then each embedding is read as its nearest vocabulary token. A single sentence's
unknown label is read off the classifier's bias gradient first (iDLG's rule; ours, for both text attacks).

Settings as the LAMP authors ran TAG as their baseline (github.com/eth-sri/lamp, ``tag.sh``; the TAG paper states no
code): Adam at learning rate 0.1 without decay, L1 weight 0.01, 2,500 steps, a standard normal start, no embedding
regulariser. Shared with LAMP (:mod:`gradinv.attacks.embedding_inversion`): the first and last positions held at
the input format's special tokens, the length read off the position-embedding gradient, the word-embedding gradient
left unmatched, the embeddings of the lowest loss kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from gradinv.attacks.embedding_inversion import build_problem, check_length, optimise, text_result
from gradinv.text.observation import TextObservation, TextReconstruction
from gradinv.validation import check_arguments


def tag_distance(dummy: list[torch.Tensor], shared: list[torch.Tensor], l1: float) -> torch.Tensor:
    """TAG's gradient distance: ``sum_layers ||g' - g||_2^2 + l1 * ||g' - g||_1``."""
    total = torch.zeros((), device=shared[0].device)
    for a, b in zip(dummy, shared, strict=True):
        difference = a - b
        total = total + difference.square().sum() + l1 * difference.abs().sum()
    return total


class TAG:
    """TAG (Deng et al., 2021): gradient matching on word embeddings with an L2 + L1 distance.

    Args:
        steps: Adam steps (2,500).
        lr: learning rate (0.1).
        lr_decay: factor every 50 steps (1: none).
        l1: weight of the L1 term (``tag_factor``, 0.01).
        length: the padded sentence length in tokens, when the attacker is told it; ``None`` (default) reads it off
            the position-embedding gradient (absent from a LoRA client's update).
    """

    name = "tag"
    setting = "text"
    exact = False

    def __init__(
        self, *, steps: int = 2500, lr: float = 0.1, lr_decay: float = 1.0, l1: float = 0.01, length: int | None = None
    ) -> None:
        check_arguments(self, locals())
        check_length(length)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        if not 0 < lr_decay <= 1:
            raise ValueError(f"lr_decay must lie in (0, 1], got {lr_decay!r}")
        if not l1 >= 0:
            raise ValueError(f"l1 must be non-negative, got {l1!r}")
        self.steps, self.lr, self.lr_decay, self.l1, self.length = steps, lr, lr_decay, l1, length

    def config(self) -> dict[str, Any]:
        return dict(vars(self))

    def reconstruct(
        self,
        observation: TextObservation,
        *,
        callback: Callable[[int, int, float], None] | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
    ) -> TextReconstruction:
        """Recover the sentences of a sequence classifier's shared gradient.

        Raises:
            TypeError: not a text observation.
            ValueError: a next-token observation, no batch size, or no position-embedding gradient.
        """
        start = time.perf_counter()
        problem = build_problem(observation, device, self.length)
        generator = torch.Generator().manual_seed(seed)
        shape = (problem.batch, problem.length, problem.embeddings.shape[1])
        x0 = torch.randn(shape, generator=generator).to(problem.device)
        best, labels, trace = optimise(
            problem,
            x0,
            lambda dummy, shared: tag_distance(dummy, shared, self.l1),
            steps=self.steps,
            lr=self.lr,
            lr_decay=self.lr_decay,
            coeff_reg=0.0,
            init_size=0.0,
            callback=callback,
            seed=seed,
        )
        problem.fix_special(best)
        info = {
            "length": problem.length,
            "trace": trace,
            "labels": labels.cpu().tolist(),
            "label_source": problem.label_source,
            "device": str(problem.device),
        }
        return text_result(observation, problem.project(best), time.perf_counter() - start, self, info)

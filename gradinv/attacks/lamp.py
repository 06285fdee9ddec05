"""LAMP (Balunovic, Dimitrov, Jovanovic & Vechev, NeurIPS 2022, "LAMP: Extracting Text from Gradients with Language
Model Priors"): continuous optimisation of word embeddings alternating with discrete reordering of the tokens they
project to, the order chosen by the gradient distance plus a language model's perplexity.

The algorithm (paper, Alg. 1; settings of the official code, github.com/eth-sri/lamp, ``lamp_cos.sh`` and
``lamp_l1l2.sh``):

1. initialisation: ``init_candidates`` standard-normal batches, the one of lowest gradient distance kept, then as
   many random orders of its inner positions, the best kept; each embedding rescaled to norm ``init_size``;
2. Adam on the embeddings for ``steps`` steps (learning rate ``lr``, times ``lr_decay`` every 50 steps) on
   ``L_rec + coeff_reg * (mean embedding norm - init_size)^2`` (the regulariser of Sec. 4.2), with ``L_rec`` the
   cosine distance of the gradients averaged over layers (LAMP_cos, eq. 4) or TAG's L2 + L1 (LAMP_L1+L2);
3. every ``swap_every`` steps after the first ``swap_burnin`` of them, for each sentence, ``swap_candidates``
   reorderings of its projected tokens (swap two tokens, move a token, move a span, move a prefix to the end; the
   identity among them), the one of lowest ``L_rec + coeff_perplexity * perplexity`` kept (Sec. 4.3);
4. the embeddings of the lowest loss seen, projected to their nearest tokens by cosine.

Deviations: the perplexity comes from :mod:`gradinv.text.prior` — by default a Kneser-Ney bigram model counted on
the English prose gensim ships, since no trained language model over BERT's vocabulary ships offline (the paper's is
a GPT-2 trained on WikiText-103; pass any :class:`~gradinv.text.prior.Prior` or Hugging Face causal LM as ``prior``);
``init_size`` defaults to the attacked model's mean token-embedding norm (the paper's 1.4 is BERT-base's); the
length is read off the position-embedding gradient rather than given; where the threat withholds the labels, a single
sentence's is read off the classifier's bias gradient (iDLG's rule) and a batch's are optimised as soft labels
beside the embeddings (the paper assumes them known). Every sentence of a batch gets the batch's padded length (the
attacker does not see where each one ends).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradinv.attacks.embedding_inversion import Problem, build_problem, check_length, optimise, text_result
from gradinv.attacks.tag import tag_distance
from gradinv.text.observation import TextObservation, TextReconstruction
from gradinv.text.prior import CausalLMPrior, Prior, shipped_prior
from gradinv.validation import check_arguments

LOSSES = {"cos": (0.2, 1.0), "tag": (60.0, 25.0)}
"""Per reconstruction loss, the official (coeff_perplexity, coeff_reg)."""


def cosine_distance(dummy: list[torch.Tensor], shared: list[torch.Tensor]) -> torch.Tensor:
    """LAMP_cos's gradient distance: ``1 - cos(g', g)`` per layer, averaged over layers (eq. 4)."""
    total = torch.zeros((), device=shared[0].device)
    for a, b in zip(dummy, shared, strict=True):
        total = total + 1 - (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30)
    return total / len(shared)


def reorder(length: int, kind: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``length`` positions that keeps the first and last (the special tokens) in place, of one of
    LAMP's four kinds: 0 swaps two tokens, 1 moves one token, 2 moves a span, 3 moves a prefix to the end."""
    n, ids = length, np.arange(length)
    if kind == 0:
        i, j = 1 + rng.integers(n - 2), 1 + rng.integers(n - 2)
        ids[i], ids[j] = ids[j], ids[i]
        return ids
    if kind == 1:
        i, j = 1 + rng.integers(n - 2), 1 + rng.integers(n - 1)
        if i < j:
            return np.concatenate([ids[:i], ids[i + 1 : j], ids[i : i + 1], ids[j:]])
        return np.concatenate([ids[:j], ids[i : i + 1], ids[j:i], ids[i + 1 :]])
    if kind == 2:
        b, e = sorted((1 + int(rng.integers(n - 1)), 1 + int(rng.integers(n - 1))))
        p = 1 + int(rng.integers(n - 1 - (e - b)))
        if p >= b:
            p += e - b
        if p < b:
            return np.concatenate([ids[:p], ids[b:e], ids[p:b], ids[e:]])
        return np.concatenate([ids[:b], ids[e:p], ids[b:e], ids[p:]])
    if kind == 3:
        i = 1 + rng.integers(n - 2)
        return np.concatenate([ids[:1], ids[i:-1], ids[1:i], ids[-1:]])
    raise ValueError(f"kind must be 0-3, got {kind!r}")


class LAMP:
    """LAMP (Balunovic et al., NeurIPS 2022): embedding optimisation with language-model-guided token reordering.

    Args:
        loss: ``"cos"`` (LAMP_cos) or ``"tag"`` (LAMP_L1+L2).
        coeff_perplexity: weight of the perplexity in the discrete step (official: 0.2 for cos, 60 for tag).
        coeff_reg: weight of the embedding-norm regulariser (official: 1 for cos, 25 for tag).
        steps: Adam steps (2,000).
        lr: learning rate (0.01).
        lr_decay: factor every 50 steps (0.89).
        l1: TAG's L1 weight, for ``loss="tag"`` (0.01).
        init_candidates: random starts and random orders tried first (500).
        init_size: the embeddings' norm after initialisation and the regulariser's target (``None``: the attacked
            model's mean token-embedding norm; the paper's 1.4 is BERT-base's).
        swap_every: steps between discrete steps (75).
        swap_burnin: the fraction of steps before the first (0.1).
        swap_candidates: orders tried per sentence in each (200, the identity among them).
        prior: the language model scoring orders: ``None`` (the shipped bigram prior), a
            :class:`~gradinv.text.prior.Prior`, or a Hugging Face causal LM over the same tokenizer.
        length: the padded sentence length in tokens, when the attacker is told it (the paper's runs were); ``None``
            (default) reads it off the position-embedding gradient (absent from a LoRA client's update).
    """

    name = "lamp"
    setting = "text"
    exact = False

    def __init__(
        self,
        *,
        loss: str = "cos",
        coeff_perplexity: float | None = None,
        coeff_reg: float | None = None,
        steps: int = 2000,
        lr: float = 0.01,
        lr_decay: float = 0.89,
        l1: float = 0.01,
        init_candidates: int = 500,
        init_size: float | None = None,
        swap_every: int = 75,
        swap_burnin: float = 0.1,
        swap_candidates: int = 200,
        prior: Prior | nn.Module | None = None,
        length: int | None = None,
    ) -> None:
        check_arguments(self, locals())
        check_length(length)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        for key, value in (
            ("steps", steps),
            ("init_candidates", init_candidates),
            ("swap_every", swap_every),
            ("swap_candidates", swap_candidates),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        for key, weight in (("coeff_perplexity", coeff_perplexity), ("coeff_reg", coeff_reg), ("l1", l1)):
            if weight is not None and not weight >= 0:
                raise ValueError(f"{key} must be non-negative, got {weight!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        if not 0 < lr_decay <= 1:
            raise ValueError(f"lr_decay must lie in (0, 1], got {lr_decay!r}")
        if not 0 <= swap_burnin < 1:
            raise ValueError(f"swap_burnin must lie in [0, 1), got {swap_burnin!r}")
        if init_size is not None and not init_size > 0:
            raise ValueError(f"init_size must be positive, got {init_size!r}")
        if isinstance(prior, nn.Module):
            prior = CausalLMPrior(prior)
        elif prior is not None and not callable(getattr(prior, "nll", None)):
            raise TypeError(f"prior must have an nll(ids) method or be a causal LM, got {type(prior).__name__}")
        default_perplexity, default_reg = LOSSES[loss]
        self.loss = loss
        self.coeff_perplexity = default_perplexity if coeff_perplexity is None else coeff_perplexity
        self.coeff_reg = default_reg if coeff_reg is None else coeff_reg
        self.steps, self.lr, self.lr_decay, self.l1 = steps, lr, lr_decay, l1
        self.init_candidates, self.init_size = init_candidates, init_size
        self.swap_every, self.swap_burnin, self.swap_candidates = swap_every, swap_burnin, swap_candidates
        self.prior, self.length = prior, length

    def config(self) -> dict[str, Any]:
        settings = {k: v for k, v in vars(self).items() if k != "prior"}
        return settings | {"prior": "shipped bigram" if self.prior is None else type(self.prior).__name__}

    def distance(self, dummy: list[torch.Tensor], shared: list[torch.Tensor]) -> torch.Tensor:
        """The reconstruction loss ``L_rec``."""
        return cosine_distance(dummy, shared) if self.loss == "cos" else tag_distance(dummy, shared, self.l1)

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
        prior = self.prior if self.prior is not None else shipped_prior(observation.tokenizer)
        usable = ~problem.banned
        size = self.init_size or float(problem.embeddings[usable].norm(dim=1).mean())
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(seed)
        x0 = self._initialise(problem, size, generator)
        info: dict[str, Any] = {"length": problem.length, "init_size": size, "swaps": 0, "swaps_taken": 0}
        first = int(self.swap_burnin * self.steps)

        def discrete(x: torch.Tensor, labels: torch.Tensor, step: int) -> None:
            if step >= first and step % self.swap_every == 1 and problem.length >= 4:
                info["swaps"] += 1
                info["swaps_taken"] += self._swap(problem, prior, x, labels, rng)

        best, labels, trace = optimise(
            problem,
            x0,
            self.distance,
            steps=self.steps,
            lr=self.lr,
            lr_decay=self.lr_decay,
            coeff_reg=self.coeff_reg,
            init_size=size,
            discrete=discrete,
            callback=callback,
            seed=seed,
        )
        problem.fix_special(best)
        info |= {
            "trace": trace,
            "labels": labels.cpu().tolist(),
            "label_source": problem.label_source,
            "device": str(problem.device),
        }
        return text_result(observation, problem.project(best), time.perf_counter() - start, self, info)

    def _rec(self, problem: Problem, x: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.enable_grad():
            return float(self.distance(problem.gradients(x, labels, create_graph=False), problem.target))

    def _initialise(self, problem: Problem, size: float, generator: torch.Generator) -> torch.Tensor:
        """Step 1: the best of ``init_candidates`` random starts, then of as many random inner orders of it."""
        labels = problem.labels
        if labels is None:  # unknown labels: the starts are compared under uniform soft labels
            labels = torch.full((problem.batch, problem.num_labels), 1 / problem.num_labels, device=problem.device)
        shape = (problem.batch, problem.length, problem.embeddings.shape[1])
        best, best_loss = None, float("inf")
        for _ in range(self.init_candidates):
            x = torch.randn(shape, generator=generator).to(problem.device)
            problem.fix_special(x)
            loss = self._rec(problem, x, labels)
            if loss < best_loss:
                best, best_loss = x, loss
        assert best is not None
        if problem.length > 3:
            for _ in range(self.init_candidates):
                inner = torch.randperm(problem.length - 2, generator=generator) + 1
                order = torch.cat([torch.tensor([0]), inner, torch.tensor([problem.length - 1])])
                x = best[:, order.to(problem.device)]
                loss = self._rec(problem, x, labels)
                if loss < best_loss:
                    best, best_loss = x, loss
        return F.normalize(best, dim=-1) * size

    def _swap(
        self, problem: Problem, prior: Prior, x: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> int:
        """Step 3 on every sentence in turn; returns how many sentences took a new order."""
        taken = 0
        for sentence in range(problem.batch):
            ids = problem.project(x)
            best_order, best_score = None, float("inf")
            for sample in range(self.swap_candidates):
                order = np.arange(problem.length) if sample == 0 else reorder(problem.length, sample % 4, rng)
                index = torch.as_tensor(order, device=problem.device)
                trial_ids, trial = ids.clone(), x.detach().clone()
                trial_ids[sentence], trial[sentence] = ids[sentence, index], x.detach()[sentence, index]
                score = self._rec(problem, trial, labels)
                score += self.coeff_perplexity * float(prior.nll(trial_ids).mean())
                if score < best_score:
                    best_order, best_score = (None if sample == 0 else index), score
            if best_order is not None:
                with torch.no_grad():
                    x[sentence] = x[sentence, best_order].clone()
                taken += 1
        return taken

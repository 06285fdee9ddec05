"""DAGER (Petrov, Dimitrov, Baader, Müller & Vechev, NeurIPS 2024, "DAGER: Exact Gradient Inversion for Large
Language Models"): exact recovery of a batch of sentences from the gradient of a transformer's attention layers.

The gradient of a linear map ``y = W x`` applied to every token is ``dL/dW = sum_i g_i x_i^T``: when the batch holds
fewer tokens than the layer is wide, its columns span exactly the layer's token inputs ``x_i`` (the errors ``g_i``
being generic). DAGER reads that span off the first two attention layers' input projections by SVD, then

1. keeps, at each position ``p``, the vocabulary tokens whose first-layer input (token + position embedding, then the
   layer's LayerNorm) lies in the first span (distance ``< tau1``). Such an input lies in the span of the token's and
   the position's embeddings (and the constant direction), so once the batch has more tokens than distinct tokens
   and positions together, every batch token passes at every batch position and the second layer does the rest;
2. assembles sentences with the second span: a causal decoder's second-layer input at ``p`` depends only on the
   prefix, so prefixes are extended one position at a time and kept where that input lies in the second span
   (``< tau2``); an encoder's depends on the whole sentence, so whole sentences are tested.

The distance of a vector ``v`` to a span with orthonormal basis ``U`` is ``|| v/|v| - U U^T v/|v| ||``. A sentence
is certified when every one of its tokens passes both tests and the span is narrower than the layer by the paper's
rank cut-off (20): its inputs then lie in the span of the client's own, which a wrong sentence meets only by a
numerical coincidence. The certificate is only as good as the span's rank: a rank cut at a fixed noise bound (three
directions short) made true sentences fail and near-misses pass (11 of 16 certified sentences wrong on a 3-layer
GPT-2).

Deviations, ours: the first threshold is 1e-4, not the paper's 1e-5 (in-span distances of float32 GPT-2 gradients
reached 7e-6 for 415 tokens); the rank is read above the gradient's rounding noise (:func:`numerical_rank`), per
layer; the encoder search enumerates a length's combinations up to ``max_combinations`` (the paper: up to 10^7, then
random draws) and above that proposes sentences from the first layer's key gradient split by token and position
(:mod:`gradinv.attacks.dager_links`: a once-occurring token's share of it lies in the span of its own sentence's
queries), or, where that does not apply, by a beam search (each prefix scored by the second-layer distance of its
newest position computed on the prefix alone); either certifies only what passes the same whole-sentence test.
Under next-token loss the last token of a sentence is only a target and enters no layer input: the attack appends the
tokenizer's closing special token when the input format has one (BERT's ``[SEP]``).

Under noise (a ``noise`` defense, DP-SGD) every direction of the gradient carries some: the rank test above reads a
full span and stops, or the thresholds pass no sentence whole (measured from noise 1e-7 on a random GPT-2). With the
noise level the observation records (the official code takes it as an argument, ``--defense_noise``), the span is
read above the noise's spectral edge and the thresholds are widened (ours): to a fraction of Wedin's bound on the
span's error (:data:`NOISE_SLACK`), and for each vector to a multiple of its own first-order error, the edge times the
norm of its span coefficients each divided by its singular value (:data:`VECTOR_SLACK`, :data:`SECOND_SLACK`); nothing
is certified then; the widened first threshold passes noise at unused positions too, so the scan keeps to the
positions the position-embedding gradient shows used, where it is shared (ours; :func:`read_length`: on MiniLM at
noise 1e-6, candidates had reached position 44 of a 12-token batch). Quantisation is read the same way (ours): its
rounding error, uniform over one step whose size the shared tensor shows (:func:`rounding_noise`), is noise of std
``step / sqrt(12)`` per entry. Under pruning or top-k alone (ours) the zeros are unknown entries of the low-rank
gradients: where enough survive they are filled in (:func:`gradinv.attacks.completion.complete`, alternating least
squares) and the search runs on the completion, its thresholds at least three times how far two completions' spans
differ; where too few survive the attack says so.

A LoRA client (PEFT adapters ``W + B A`` on the attention projections) shares the gradients of ``A`` and ``B``; that of
``A`` is ``B^T dL/dY X^T``, whose row space is the span of the layer's inputs while they number fewer than the
adapters' rank ``r`` (the official code has a LoRA mode, ``--train_method lora``), so the same search runs on it. The
attack stops where that gradient is zero (``B = 0``, PEFT's initialisation) or has full rank ``r`` (the span read is
then only part of the inputs').
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import torch

from gradinv.attacks.completion import complete
from gradinv.attacks.dager_links import Links, first_layer_links, linked_sentences
from gradinv.attacks.embedding_inversion import read_length
from gradinv.text.models import TransformerLayout, input_format, layout
from gradinv.text.observation import TextObservation, TextReconstruction
from gradinv.validation import check_arguments

log = logging.getLogger(__name__)

#: Under recorded noise, the thresholds are this fraction of Wedin's bound on the span's error (ours: on a random
#: 3-layer GPT-2, true tokens and sentences sat at 1/20 (first layer) and 1/10 (second) of it, wrong ones above 1/2;
#: at 1/4, wrong prefixes passed at noise 3e-6 and the decoder's search ran to its width bound).
NOISE_SLACK = 0.15

#: Under recorded noise, the gradient's own rounding noise still counts: its singular values reach this many times their
#: median (ours: 1.1e-7 against 2e-8 on a random GPT-2), so a recorded noise whose edge lies below that is read as
#: that level (at noise 1e-9 the edge alone let 48 rounding directions into the span).
ROUNDING_EDGE = 5.0

#: Under recorded noise, a first-layer candidate's threshold is this multiple of its own first-order error (the
#: noise's edge times the norm of its span coefficients, each divided by its singular value), when above ``tau1``.
VECTOR_SLACK = 3.0

#: The same for the second layer's inputs (prefixes and sentences).
SECOND_SLACK = 1.0

#: Under pruning, each layer's threshold is at least this multiple of how far two completions' spans differ.
COMPLETION_SLACK = 3.0

SPARSIFIERS = frozenset({"prune", "topk"})
"""Defenses that zero entries and leave the rest exact: their zeros are completed (:func:`sparsified_only`)."""

ACCOUNTED_FOR = frozenset({"noise", "dpsgd", "quantize"}) | SPARSIFIERS
"""Defenses DAGER accounts for when run ``noise_aware`` (the default): recorded noise and DP-SGD's
(:func:`recorded_noise`; the official code's ``--defense_noise``), quantisation's rounding (:func:`rounding_noise`),
pruning and top-k (the zeros completed). DAGER so run is the attack that knows the defense; gradinv has no such text
attack for signSGD."""


def numerical_rank(matrix: torch.Tensor, eps: float, *, values: torch.Tensor | None = None) -> int:
    """The rank of a gradient stored at precision ``eps``: singular values above ten times the rounding noise, the
    noise being the median of the values under the bound ``eps * s_max * (sqrt(m) + sqrt(n))`` (each entry is off by
    about ``eps * s_max``; a random matrix of such errors has about that spectral norm); all values when none is
    under it. A fixed cut at the bound (or NumPy's ``max(m, n) * eps * s_max``) dropped real directions of GPT-2
    gradients, whose smallest signal sat at 6e-6 of ``s_max`` above a 1e-8 noise floor. ``values``: the matrix's
    singular values (float64), when already computed."""
    values = _singular_values(matrix, values)
    if values.numel() == 0 or float(values[0]) == 0.0:
        return 0
    median = rounding_median(matrix, eps, values=values)
    return int(values.numel()) if median == 0.0 else int((values > 10 * median).sum())


def rounding_median(matrix: torch.Tensor, eps: float, *, values: torch.Tensor | None = None) -> float:
    """The median of the singular values under ``eps * s_max * (sqrt(m) + sqrt(n))``: the level of the gradient's own
    rounding noise (:func:`numerical_rank`); 0 when none is under the bound."""
    values = _singular_values(matrix, values)
    if values.numel() == 0 or float(values[0]) == 0.0:
        return 0.0
    bound = eps * float(values[0]) * (matrix.shape[0] ** 0.5 + matrix.shape[1] ** 0.5)
    under = values[values < bound]
    return 0.0 if under.numel() == 0 else float(under.median())


def _singular_values(matrix: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    """``values`` if given, else the singular values of ``matrix`` in float64 (largest first)."""
    return torch.linalg.svdvals(matrix.double()) if values is None else values


def span_basis(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """``(d, rank)`` orthonormal basis of the column space of ``matrix`` ``(d, m)``: its leading left singular
    vectors (float64)."""
    u, _, _ = torch.linalg.svd(matrix.double(), full_matrices=False)
    return u[:, :rank]


def span_distance(basis: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``(...)`` distance of each normalised vector ``(..., d)`` to the span of ``basis`` ``(d, r)``."""
    v = vectors.double()
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return (v - (v @ basis) @ basis.t()).norm(dim=-1)


def noise_rank(matrix: torch.Tensor, std: float, floor: float = 0.0, *, values: torch.Tensor | None = None) -> int:
    """The rank of a low-rank gradient under i.i.d. noise of ``std`` per entry: its singular values above 1.1 times
    the noise's spectral edge ``std * (sqrt(m) + sqrt(n))`` (the largest singular value of an ``m x n`` matrix of
    such noise, Bai-Yin), or above ``floor`` if higher (the gradient's own rounding noise, which a tinier recorded
    noise does not cover: see :data:`ROUNDING_EDGE`); a signal direction weaker than the noise is lost, as it must
    be."""
    values = _singular_values(matrix, values)
    return int((values > max(1.1 * noise_edge(matrix, std), floor)).sum())


def noise_edge(matrix: torch.Tensor, std: float) -> float:
    """``std * (sqrt(m) + sqrt(n))``: the spectral norm of ``matrix``'s shape of i.i.d. noise of ``std``."""
    return std * (matrix.shape[0] ** 0.5 + matrix.shape[1] ** 0.5)


def wedin_bound(
    matrix: torch.Tensor, std: float, rank: int, floor: float = 0.0, *, values: torch.Tensor | None = None
) -> float:
    """Wedin's bound on the sine of the angle between the span read off the noisy ``matrix`` and the true one:
    the noise's spectral norm (or ``floor``, if higher) over the ``rank``-th singular value (capped at 1)."""
    if rank == 0:
        return 1.0
    values = _singular_values(matrix, values)
    return min(1.0, max(noise_edge(matrix, std), floor) / float(values[rank - 1]))


def recorded_noise(observation: TextObservation) -> float:
    """The std of the noise the observation's recorded defenses added to each gradient entry (variances add):
    ``noise``'s ``std`` (Gaussian or Laplacian), DP-SGD's ``noise_multiplier * max_grad_norm / B``; 0 when none.

    Raises:
        ValueError: DP-SGD noise with the batch size withheld (the noise on the mean gradient depends on it).
    """
    variance = 0.0
    for defense in observation.defenses:
        if defense.get("name") == "noise":
            variance += float(defense["std"]) ** 2
        elif defense.get("name") == "dpsgd" and float(defense["noise_multiplier"]) > 0:
            if observation.batch_size is None:
                raise ValueError(
                    "DP-SGD noise on the mean gradient is noise_multiplier * max_grad_norm / B, and the threat "
                    "withholds B: grant knows_batch_size, or run dager with noise_aware=False"
                )
            std = float(defense["noise_multiplier"]) * float(defense["max_grad_norm"]) / observation.batch_size
            variance += std**2
    return math.sqrt(variance)


def rounding_noise(observation: TextObservation, name: str) -> float:
    """The std of the rounding error a recorded ``quantize`` defense left in the shared tensor ``name``: uniform over
    one step (``step / sqrt(12)``), the step read off the tensor itself (its largest entry is a level:
    ``max |g| / (2^(bits-1) - 1)``, :func:`gradinv.defenses.quantize.quantize_uniform`); 0 when nothing was quantised,
    and for one bit (signs: no step to read an error from). Rounding errors of a fine step behave as independent
    noise of that std (ours: the reading of :func:`noise_rank` applies)."""
    variance = 0.0
    for defense in observation.defenses:
        if defense.get("name") == "quantize":
            half = 2 ** (int(defense["bits"]) - 1) - 1
            if half > 0:
                step = float(observation.update[name].abs().max()) / half
                variance += step**2 / 12
    return math.sqrt(variance)


def sparsified_only(observation: TextObservation) -> bool:
    """Whether the update was sparsified (``prune``, ``topk``: entries zeroed, the rest exact) and altered no other
    way (DP-SGD without noise only rescales): its zeros are then unknown entries of the low-rank gradient, which
    :func:`~gradinv.attacks.completion.complete` fills in where enough survive."""
    altered = altering_defenses(observation)
    return bool(altered) and all(name in SPARSIFIERS for name in altered)


def altering_defenses(observation: TextObservation) -> list[str]:
    """The recorded defenses that change the update's entries (noise, pruning, quantisation, signs, DP-SGD's noise):
    under any of them a span test can pass a wrong sentence (16-bit quantisation of a random GPT-2's gradient: one
    wrong sentence within the thresholds), so DAGER certifies nothing. DP-SGD without noise only rescales each
    sentence's gradient, which leaves the spans as they are."""
    return [
        str(d.get("name"))
        for d in observation.defenses
        if not (d.get("name") == "dpsgd" and float(d.get("noise_multiplier", 1.0)) == 0)
    ]


class DAGER:
    """DAGER (Petrov et al., NeurIPS 2024): exact sentences from the first attention layers' gradients.

    Args:
        tau1: first-layer span distance below which a token is a candidate at a position (the paper's 1e-5, for
            float32 gradients).
        tau2: second-layer span distance below which a prefix (decoder) or sentence (encoder) is kept (paper: 1e-3).
        rank_cutoff: the span must be at least this much narrower than the layer (paper: 20), else nothing can be
            told apart and the attack stops.
        max_positions: positions scanned for candidates (the model's own limit if smaller).
        max_prefixes: decoder prefixes kept per position (the lowest distances), a bound on the search's width.
        max_combinations: an encoder length with at most this many candidate sentences has every one tested (the
            paper's search, up to 10^7); longer ones are proposed by the first-layer links (``links``) where they
            apply, else by a beam search of width ``beam`` (ours).
        beam: prefixes the encoder's beam search keeps per position.
        per_prefix: extensions of each prefix the beam search considers (its lowest-distance ones).
        chunk: sequences per forward pass.
        noise_aware: where the observation records pruning or top-k alone, complete the gradients' zeroed entries
            (:mod:`~gradinv.attacks.completion`); where it records noise (a ``noise`` defense, DP-SGD) or
            quantisation (its rounding error, :func:`rounding_noise`), read the span above the noise's spectral edge
            (:func:`noise_rank`) and widen the thresholds to the span's error (module docstring; the official code
            likewise takes the noise level as an argument). No sentence is certified under noise. ``False``: the
            attack as published (under noise it reads a full span and stops, or passes no sentence whole).
        links: on a BERT-family encoder whose first layer's key gradient is shared (not LoRA), propose sentences from
            that gradient's split by token and position (:mod:`~gradinv.attacks.dager_links`, ours) instead of the
            beam search; every sentence proposed still passes the whole-sentence test. ``False``: the paper's search
            and the beam.
    """

    name = "dager"
    setting = "text"
    # under recorded noise, each span direction's first-order error (noise edge / singular value), first and second
    # layer: set on the copy that runs the search (:meth:`reconstruct`), ``None`` otherwise
    _error: torch.Tensor | None = None
    _error2: torch.Tensor | None = None
    # an encoder's first-layer links (:mod:`gradinv.attacks.dager_links`), set on the copy that runs the search
    _links: Links | None = None
    exact = True

    def __init__(
        self,
        *,
        tau1: float = 1e-4,
        tau2: float = 1e-3,
        rank_cutoff: int = 20,
        max_positions: int = 128,
        max_prefixes: int = 2048,
        max_combinations: int = 100_000,
        beam: int = 256,
        per_prefix: int = 3,
        chunk: int = 256,
        noise_aware: bool = True,
        links: bool = True,
    ) -> None:
        check_arguments(self, locals())
        for key, value in (("tau1", tau1), ("tau2", tau2)):
            if not 0 < value < 1:
                raise ValueError(f"{key} must lie in (0, 1), got {value!r}")
        for key, value in (
            ("rank_cutoff", rank_cutoff),
            ("max_positions", max_positions),
            ("max_prefixes", max_prefixes),
            ("max_combinations", max_combinations),
            ("beam", beam),
            ("per_prefix", per_prefix),
            ("chunk", chunk),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "rank_cutoff" else 1):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        self.tau1, self.tau2, self.rank_cutoff = tau1, tau2, rank_cutoff
        self.max_positions, self.max_prefixes, self.chunk = max_positions, max_prefixes, chunk
        self.max_combinations, self.beam, self.per_prefix = max_combinations, beam, per_prefix
        if not isinstance(noise_aware, bool):
            raise TypeError(f"noise_aware must be a bool, got {noise_aware!r}")
        if not isinstance(links, bool):
            raise TypeError(f"links must be a bool, got {links!r}")
        self.noise_aware, self.links = noise_aware, links

    def config(self) -> dict[str, Any]:
        return dict(vars(self))

    def reconstruct(
        self, observation: TextObservation, *, callback: Any = None, device: Any = None, seed: int = 0
    ) -> TextReconstruction:
        """Recover the client's sentences from a shared gradient. ``callback``, ``device`` and ``seed`` are
        accepted for a common call with the optimisation attacks and unused: the search is exact and deterministic,
        on the CPU (its cost is the vocabulary screen and the span algebra in float64).

        Raises:
            TypeError: not a :class:`~gradinv.text.TextObservation`, or a model whose layout gradinv cannot read.
            ValueError: the update lacks the first two attention layers' projection gradients (or, for a PEFT LoRA
                model, their A matrices' gradients: adapters on the attention projections of the first two layers).
        """
        if not isinstance(observation, TextObservation):
            raise TypeError(f"dager attacks text observations, got {type(observation).__name__}")
        start = time.perf_counter()
        lay = layout(observation.model)
        missing = [name for name in lay.projections[:2] if name not in observation.update]
        if len(lay.projections) < 2 or missing:
            raise ValueError(f"dager needs the gradients of the first two attention projections; missing {missing}")
        grads = [lay.input_space(observation.update[name]) for name in lay.projections[:2]]
        eps = float(torch.finfo(observation.update[lay.projections[0]].dtype).eps)
        completion: list[dict[str, Any]] = []
        if self.noise_aware and sparsified_only(observation):  # the zeros are unknown entries of a low-rank matrix
            for index, g in enumerate(grads):
                filled, done = complete(g)
                completion.append(done)
                if filled is None:  # too few entries left (the defense's doing), or over the budget (the attack's)
                    why = f"pruned gradient not completed: {done['stopped']}"
                    stop = {"completion": completion, "stopped": why, "inconclusive": bool(done.get("over_budget"))}
                    return self._result(observation, [], [], start, stop, why)
                grads[index] = filled
        noise = recorded_noise(observation) if self.noise_aware else 0.0
        # per layer: the recorded noise and any quantisation's rounding error of that tensor (variances add)
        rounding = [rounding_noise(observation, name) if self.noise_aware else 0.0 for name in lay.projections[:2]]
        levels = [math.sqrt(noise**2 + r**2) for r in rounding]
        spectra = [torch.linalg.svdvals(g.double()) for g in grads]  # one SVD per layer serves every rule below
        floors = [0.0, 0.0]
        aware = max(levels) > 0
        if aware:
            floors = [ROUNDING_EDGE * rounding_median(g, eps, values=v) for g, v in zip(grads, spectra, strict=True)]
            ranks = [noise_rank(g, n, f, values=v) for g, n, f, v in zip(grads, levels, floors, spectra, strict=True)]
        else:
            ranks = [numerical_rank(g, eps, values=v) for g, v in zip(grads, spectra, strict=True)]
        rank, width = max(ranks), grads[0].shape[0]
        info: dict[str, Any] = {"ranks": ranks, "width": width, "noise_std": noise}
        if max(rounding) > 0:
            info["rounding_std"] = rounding
        if completion:
            info["completion"] = completion
        message = None
        if rank > width - self.rank_cutoff:
            message = f"the span has rank {rank}, within {self.rank_cutoff} of the layer width {width}: too many tokens"
        elif lay.lora and min(ranks) == 0:
            message = (
                "the LoRA A matrices got no gradient: B is zero, as PEFT initialises it (the adapters' first step), "
                "and dL/dA = B^T dL/dY X^T carries no input"
            )
        elif lay.lora and rank >= min(g.shape[1] for g in grads):
            message = (
                f"the LoRA A gradient has full rank {rank} = the adapters' rank r: the batch has at least r tokens, "
                "and the span read is only part of theirs"
            )
        if message is not None:
            # a stop the batch or the attack's limits caused says nothing of the defense; only a span filled by a
            # defense DAGER did not account for is the defense's doing
            accounted = aware or bool(completion) or not altering_defenses(observation)
            stop = {"stopped": message, "inconclusive": lay.lora or accounted}
            return self._result(observation, [], [], start, info | stop, message)
        bases = [span_basis(g, r) for g, r in zip(grads, ranks, strict=True)]
        search_with = self
        if aware:  # the thresholds widened to the span's error under the recorded noise
            search_with = copy.copy(self)
            layers = list(zip(grads, levels, ranks, floors, spectra, strict=True))
            bounds = [wedin_bound(g, n, r, f, values=v) for g, n, r, f, v in layers]
            search_with.tau1 = max(self.tau1, NOISE_SLACK * bounds[0])
            search_with.tau2 = max(self.tau2, NOISE_SLACK * bounds[1])
            info["thresholds"] = [search_with.tau1, search_with.tau2]
            errors = [max(noise_edge(g, n), f) / v[:r] for g, n, r, f, v in layers]
            search_with._error, search_with._error2 = errors
            # widened thresholds let noise pass at unused positions too: scan only the positions the batch used
            positions = observation.update.get(lay.positions)  # absent from a LoRA client's update
            try:  # no row above the noise: nothing to read, the scan keeps its own limit
                used = None if positions is None else read_length(positions)
            except ValueError:
                used = None
            if used is not None:
                search_with.max_positions = min(self.max_positions, used)
                info["positions_read"] = search_with.max_positions
        if completion:  # the spans completed are as far off as two completions differ: thresholds at least that
            search_with = copy.copy(search_with)
            search_with.tau1 = max(search_with.tau1, COMPLETION_SLACK * completion[0]["agreement"])
            search_with.tau2 = max(search_with.tau2, COMPLETION_SLACK * completion[1]["agreement"])
            info["thresholds"] = [search_with.tau1, search_with.tau2]
        with torch.no_grad():
            candidates = search_with._candidates(lay, bases[0])
            info["candidates"] = [len(c) for c in candidates]
            if self.links and not lay.causal and candidates:
                tokens = sorted(set().union(*candidates))
                linked = first_layer_links(lay, observation.update, tokens, len(candidates))
                if linked is not None:
                    search_with = copy.copy(search_with)
                    search_with._links = linked
                    info["link_split_residual"] = linked.residual
            search = search_with._decoder if lay.causal else search_with._encoder
            found = search(lay, bases[1], candidates, observation.tokenizer, info) if candidates else []
        closing = input_format(observation.tokenizer)[1] if observation.task == "causal_lm" else None
        if closing is not None:
            # next-token loss: the last token is only ever a target, so no layer input carries it; the input format
            # (public) says what it is
            found = [(ids + [closing], d) for ids, d in found]
            info["appended"] = closing
        sentences = [ids for ids, _ in found]
        distances = [d for _, d in found]
        info["distances"] = distances
        altered = altering_defenses(observation)
        certified = [d < self.tau2 and not altered for d in distances]
        certificate = (
            f"span rank {rank} < width {width} - {self.rank_cutoff}; every token of a certified sentence has its "
            f"first-layer input within {self.tau1:g} and its second-layer input within {self.tau2:g} of the spans"
        )
        if altered:
            certificate = (
                f"not certified: the update passed through {', '.join(altered)}, which change its entries, so the "
                "spans read need not be those of the client's inputs"
            )
        if aware:
            what = " and ".join(
                part
                for part, present in ((f"noise of std {noise:.3g}", noise > 0), ("quantisation", max(rounding) > 0))
                if present
            )
            certificate += (
                f"; {what} recorded, spans read above its edge (ranks {ranks}), sentences kept "
                f"within {search_with.tau1:.3g} and {search_with.tau2:.3g} of them"
            )
        if closing is not None:
            certificate += "; the closing token, in no layer input, is the input format's"
        return self._result(observation, sentences, certified, start, info, certificate)

    def _result(
        self,
        observation: TextObservation,
        sentences: list[list[int]],
        certified: list[bool],
        start: float,
        info: dict[str, Any],
        certificate: str,
    ) -> TextReconstruction:
        texts = [observation.tokenizer.decode(ids, skip_special_tokens=True) for ids in sentences]
        return TextReconstruction(
            token_ids=sentences,
            texts=texts,
            seconds=time.perf_counter() - start,
            certified=certified,
            certificate=certificate,
            attack=self.name,
            config=self.config(),
            info=info,
        )

    def _candidates(self, lay: TransformerLayout, basis: torch.Tensor) -> list[list[int]]:
        """Per position, the tokens whose first-layer input lies in the first span, closest first;
        the scan stops at the first position with none. A float32 screen (distance < 1e-2) leaves few vectors for
        the float64 distance."""
        limit = min(self.max_positions, _positions(lay))
        coarse = basis.float()
        error = self._error
        screen = max(1e-4, 4 * self.tau1**2)  # squared distance, with room for float32 (and for noisy spans)
        out = []
        for position in range(limit):
            inputs = lay.first_input(position)
            unit = inputs / inputs.norm(dim=-1, keepdim=True)
            projection = unit @ coarse
            squared = 1 - projection.pow(2).sum(-1)
            if error is None:
                near = torch.nonzero(squared < screen).flatten()
            else:  # each vector's own allowance, screened in float32 with room to spare
                allowed = (VECTOR_SLACK * (projection * error.float()).norm(dim=-1)).clamp_min(self.tau1)
                near = torch.nonzero(squared < (4 * allowed**2).clamp_min(screen)).flatten()
            distance = span_distance(basis, inputs[near])
            threshold: torch.Tensor | float = self.tau1
            if error is not None:  # under noise: each vector's own first-order error, by its span coefficients
                v = inputs[near].double()
                coefficients = (v / v.norm(dim=-1, keepdim=True)) @ basis
                threshold = (VECTOR_SLACK * (coefficients * error).norm(dim=-1)).clamp_min(self.tau1)
            hits = distance < threshold
            if not bool(hits.any()):
                break
            out.append(near[hits][distance[hits].argsort()].tolist())
        return out

    def _excess(self, basis: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Second-layer span distance of ``inputs`` ``(..., d)``; under recorded noise, less each vector's own
        allowance above ``tau2`` (:data:`SECOND_SLACK` times its first-order error), so that every test stays
        ``< tau2``."""
        distance = span_distance(basis, inputs)
        error = self._error2
        if error is None:
            return distance
        v = inputs.double()
        coefficients = (v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)) @ basis
        allowed = SECOND_SLACK * (coefficients * error).norm(dim=-1)
        return distance - (allowed - self.tau2).clamp_min(0.0)

    def _second(self, lay: TransformerLayout, basis: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``(n, L)`` second-layer span distance of every position of the sentences ``ids`` ``(n, L)``."""
        parts = []
        for rows in ids.split(self.chunk):
            parts.append(self._excess(basis, lay.layer_inputs(rows, torch.ones_like(rows), 1)))
        return torch.cat(parts)

    def _decoder(
        self, lay: TransformerLayout, basis: torch.Tensor, candidates: list[list[int]], tokenizer: Any, info: dict
    ) -> list[tuple[list[int], float]]:
        """Extend every kept prefix by every candidate of the next position; a prefix none of whose
        extensions passes is a finished sentence. The prefixes' first-layer keys and values are cached (groups of
        prefixes, each with its cache), so each extension costs one token."""
        first = torch.tensor(candidates[0]).unsqueeze(1)
        cache = _new_cache()
        score = self._excess(basis, lay.layer_inputs(first, None, 1, cache))[:, 0]
        keep = torch.nonzero(score < self.tau2).flatten()
        cache.batch_select_indices(keep)
        groups = [(first[keep], score[keep], cache)] if keep.numel() else []
        done: list[tuple[list[int], float]] = []
        for position in range(1, len(candidates)):
            if not groups:
                break
            nxt = torch.tensor(candidates[position])
            grown = []
            for prefixes, worst, cache in groups:
                for rows in torch.arange(prefixes.shape[0]).split(max(1, self.chunk // len(nxt))):
                    part = copy.deepcopy(cache) if rows.numel() < prefixes.shape[0] else cache
                    if rows.numel() < prefixes.shape[0]:
                        part.batch_select_indices(rows)
                    part.batch_repeat_interleave(len(nxt))
                    tokens = nxt.repeat(rows.numel()).unsqueeze(1)
                    score = self._excess(basis, lay.layer_inputs(tokens, None, 1, part))[:, 0]
                    passed = (score < self.tau2).reshape(rows.numel(), len(nxt))
                    for row in rows[~passed.any(1)].tolist():
                        done.append((prefixes[row].tolist(), float(worst[row])))
                    flat = torch.nonzero(passed.flatten()).flatten()
                    if flat.numel():
                        part.batch_select_indices(flat)
                        extended = torch.cat([prefixes[rows].repeat_interleave(len(nxt), 0), tokens], 1)[flat]
                        best = torch.maximum(worst[rows].repeat_interleave(len(nxt))[flat], score[flat])
                        grown.append((extended, best, part))
            groups = self._bounded(grown, position)
        for prefixes, worst, _ in groups:
            done += [(p.tolist(), float(w)) for p, w in zip(prefixes, worst, strict=True)]
        return done

    def _bounded(self, groups: list[tuple[torch.Tensor, torch.Tensor, Any]], position: int) -> list:
        """The groups, trimmed to the ``max_prefixes`` prefixes of lowest worst distance when there are more."""
        total = sum(g[0].shape[0] for g in groups)
        if total <= self.max_prefixes:
            return groups
        log.warning("dager: %d prefixes at position %d, keeping %d", total, position, self.max_prefixes)
        cut = torch.cat([g[1] for g in groups]).sort().values[self.max_prefixes - 1]
        trimmed = []
        for prefixes, worst, cache in groups:
            keep = torch.nonzero(worst <= cut).flatten()
            if keep.numel():
                cache.batch_select_indices(keep)
                trimmed.append((prefixes[keep], worst[keep], cache))
        return trimmed

    def _encoder(
        self, lay: TransformerLayout, basis: torch.Tensor, candidates: list[list[int]], tokenizer: Any, info: dict
    ) -> list[tuple[list[int], float]]:
        """For each position ``e`` where ``[SEP]`` is a candidate, every sentence ``[CLS] w_1 .. w_{e-1} [SEP]`` over
        the candidates of positions ``1 .. e-1`` (``[SEP]`` excluded there) is tested whole against the second span
        (the paper's search), when there are at most ``max_combinations``; else the first-layer links propose them
        (:func:`~gradinv.attacks.dager_links.linked_sentences`, when set; ``info["linked"]`` counts what they found)
        or :meth:`_beam` does. Which search served each length goes into ``info["encoder_search"]``."""
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        found: list[tuple[list[int], float]] = []
        searched: list[tuple[int, str]] = info.setdefault("encoder_search", [])
        if cls not in candidates[0]:
            return found
        if self._links is not None:

            def accept(ids: list[int]) -> float | None:
                worst = float(self._second(lay, basis, torch.tensor([ids])).max())
                return worst if worst < self.tau2 else None

            found += linked_sentences(self._links, cls, sep, accept)
            info["linked"] = len(found)
        slots = [[t for t in tokens if t != sep] for tokens in candidates]
        ends = [p for p, tokens in enumerate(candidates) if sep in tokens and p >= 1]
        large = [e for e in ends if math.prod(len(s) for s in slots[1:e]) > self.max_combinations]
        for end in ends:
            if end in large:
                continue
            searched.append((end + 1, "all combinations"))
            for block in _product_blocks(slots[1:end], self.chunk):
                found += self._whole(lay, basis, block, cls, sep)
        if large and self._links is not None:  # the links proposed these lengths' sentences; no beam
            searched += [(e + 1, "first-layer links") for e in large]
        elif large:
            searched += [(e + 1, f"beam of {self.beam}") for e in large]
            for _, prefixes in self._beam(lay, basis, cls, slots, set(large)):
                found += self._whole(lay, basis, prefixes[:, 1:], cls, sep)
        unique: dict[tuple[int, ...], float] = {}
        for ids, distance in found:
            unique[tuple(ids)] = min(distance, unique.get(tuple(ids), float("inf")))
        return [(list(k), d) for k, d in unique.items()]

    def _whole(
        self, lay: TransformerLayout, basis: torch.Tensor, middle: torch.Tensor, cls: int, sep: int
    ) -> list[tuple[list[int], float]]:
        """The sentences ``[CLS] middle [SEP]`` whose every position passes the second span, with their worst
        distance."""
        n = middle.shape[0]
        ids = torch.cat([torch.full((n, 1), cls), middle, torch.full((n, 1), sep)], 1)
        worst = self._second(lay, basis, ids).max(1).values
        return [(ids[row].tolist(), float(worst[row])) for row in torch.nonzero(worst < self.tau2).flatten().tolist()]

    def _beam(
        self, lay: TransformerLayout, basis: torch.Tensor, cls: int, slots: list[list[int]], ends: set[int]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Ours: a beam search over prefixes, each scored by the summed second-layer distance of its newest
        position computed on the prefix alone (as if the rest were padding). On MiniLM the true token had the lowest
        such distance in 17 of 18 extensions tried; the whole-sentence test then decides. Yields, at each ``e`` in
        ``ends``, the ``(n, e)`` prefixes kept."""
        prefixes = torch.tensor([[cls]])
        scores = torch.zeros(1, dtype=torch.float64)
        for position in range(1, max(ends)):
            nxt = torch.tensor(slots[position])
            if nxt.numel() == 0:
                return
            grown = torch.cat([prefixes.repeat_interleave(len(nxt), 0), nxt.repeat(prefixes.shape[0]).unsqueeze(1)], 1)
            step = self._second(lay, basis, grown)[:, -1].reshape(prefixes.shape[0], len(nxt))
            # each prefix keeps its best few extensions, so one sentence's near-misses cannot crowd out the others
            kept = step.argsort(1)[:, : self.per_prefix if position > 1 else len(nxt)]  # every first word stays
            rows = torch.arange(prefixes.shape[0]).unsqueeze(1).expand_as(kept)
            total = scores[rows.flatten()] + step[rows.flatten(), kept.flatten()]
            chosen = rows.flatten() * len(nxt) + kept.flatten()
            order = total.argsort()[: self.beam]
            prefixes, scores = grown[chosen[order]], total[order]
            if position + 1 in ends:
                yield position + 1, prefixes


def _product_blocks(slots: list[list[int]], size: int) -> Iterator[torch.Tensor]:
    """The Cartesian product of ``slots`` as ``(n, len(slots))`` blocks of at most ``size`` rows."""
    rows = itertools.product(*slots)
    while block := list(itertools.islice(rows, size)):
        yield torch.tensor(block, dtype=torch.int64).reshape(len(block), len(slots))


def _new_cache() -> Any:
    import transformers

    return transformers.DynamicCache()


def _positions(lay: TransformerLayout) -> int:
    config: Any = lay.model.config
    return int(getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 512)

"""DAGER's encoder search by first-layer links (ours): which tokens share a sentence, read off the first attention
layer's key gradient, so that an encoder's batch need not be enumerated.

DAGER (Petrov et al., NeurIPS 2024) assembles an encoder's sentences by testing whole candidate sentences against the
second layer's span, because bidirectional attention makes every position's second-layer input depend on the whole
sentence. Once a batch has more tokens than distinct tokens and positions together, every batch token passes the
first-layer test at every position, and the candidates number ``|T|^(n-2)`` per length: on the trained MiniLM with 16
reviews of 12 tokens, 113 tokens at each of 10 positions. The paper then draws random sentences; our beam search lost
true prefixes (4 of 16 sentences recovered). This module uses more of the first layer than its span.

1. **The gradient splits by token and by position.** A BERT-family first layer reads ``z = LN(e_t + p_i + s)``
   (word, position and token-type embeddings, then the embedding LayerNorm ``gamma * (x - mu) / sigma + beta``), so
   ``z`` lies in the span of the columns ``C = [gamma*e_t (t in T), gamma*p_i (i < L), gamma*s_k, gamma, beta]``.
   The key projection's weight gradient ``dW_K = sum_{s,i} g_{s,i} z_{s,i}^T`` (``g = dL/dk``) is therefore
   ``M C^T`` with ``M`` solved by least squares (:func:`split_gradient`); ``M``'s column for ``gamma*e_t`` is
   ``A_t = sum over t's occurrences of g_{s,i} / sigma_{t,i}``, its column for ``gamma*p_i`` is ``B_i``, the same sum
   over position ``i``'s tokens. A token occurring once in the batch thus hands over its own key gradient, up to scale.
   Regressing each ``B_i`` on the ``A_t`` (:func:`position_weights`) weighs 1 for such a token at its position.
2. **A key gradient lies in the span of its sentence's queries.** Per head ``h``, with attention ``a`` and context
   gradient ``dc``, ``dL/dk_i = sum_j a_ji (dc_j . (v_i - c_j)) q_j / sqrt(d_h)`` (Vaswani et al. 2017, Eq. 1,
   differentiated), and ``q_j = W_Q^h z_j + b_Q^h`` is computable for every candidate token at every position. So a
   once-occurring token's ``A_t`` lies, head by head, in the span of the ``n`` queries of its sentence: on MiniLM,
   relative residual 1e-6 for the true sentence against 0.5-0.7 for another (``n = 12`` of ``d_h = 32`` dimensions).
   The test needs ``n < d_h``.
3. **The search** (:func:`link_sentence`): with ``[CLS]`` at 0, ``[SEP]`` last and the anchor token at the position of
   its largest weight, the other positions are filled greedily (the candidate and position that most reduce the
   residual, as in orthogonal matching pursuit, Pati et al. 1993). The greedy step finds the sentence's tokens but
   often misplaces them (residual 1e-2 on MiniLM): the tokens placed are reordered by their position weights (an
   assignment problem, Kuhn 1955), then each position's best token is taken with the others held and two positions'
   tokens swapped, each change kept where it reduces the residual, until none does. Measured on 16 reviews of 24
   tokens: without the reordering 9 sentences came back, with it 16; taking the best swap each round instead of each
   improving one in turn, 14.

Every sentence proposed is then tested whole against the second span, as DAGER tests any sentence: what is returned
and certified passes the paper's test, the links only propose. A token occurring in two sentences hands over the sum
of two sentences' key gradients, which neither sentence's queries span; a sentence each of whose tokens also occurs
in another sentence may not be found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from gradinv.text.models import TransformerLayout

#: Sweeps of changes and swaps at most per anchor (the measured searches settled within 4).
MAX_SWEEPS = 20

#: A search ending within this residual of its anchor's share is a near miss, worth a joint search.
NEAR = 0.05

#: A token of a near miss joins the joint search when its position weight is within this of 1 where it was placed.
GROUP_SLACK = 0.3


@dataclass
class Links:
    """What the first layer says about a batch (:func:`first_layer_links`).

    Attributes:
        tokens: the candidate tokens ``T`` (vocabulary ids), in the order of the columns below.
        anchors: ``(d_out, |T|)`` each token's share ``A_t`` of the key gradient.
        weights: ``(|T|, L)`` position weights: how much of ``A_t`` position ``i``'s share holds.
        queries: ``(L, |T|, H, d_h)`` the first layer's query of each candidate token at each position, per head.
        residual: relative residual of the split (float rounding when the layer is as described).
    """

    tokens: list[int]
    anchors: torch.Tensor
    weights: torch.Tensor
    queries: torch.Tensor
    residual: float


def embedding_columns(lay: TransformerLayout, tokens: list[int], length: int) -> torch.Tensor:
    """``(d, |T| + L + S + 2)`` the columns ``C`` spanning every first-layer input of the tokens at positions
    ``< length`` (module docstring, 1): ``gamma*e_t``, ``gamma*p_i``, ``gamma*s_k`` for each token type, ``gamma``,
    ``beta``."""
    emb: Any = lay.base.embeddings
    norm = emb.LayerNorm
    gamma, beta = norm.weight.detach().double(), norm.bias.detach().double()
    words = emb.word_embeddings.weight.detach().double()[tokens]
    places = emb.position_embeddings.weight.detach().double()[:length]
    kinds = emb.token_type_embeddings.weight.detach().double()
    return torch.cat([gamma * words, gamma * places, gamma * kinds, gamma[None], beta[None]]).t()


def split_gradient(grad: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``M`` with ``grad ~ M C^T`` (least squares) for a weight gradient ``grad`` ``(d_out, d)`` and columns ``C``
    ``(d, K)``, and the relative residual ``|grad - M C^T| / |grad|``."""
    grad = grad.double()
    shares = torch.linalg.lstsq(columns, grad.t(), driver="gelsd").solution.t()  # rank-deficient: beta = 0
    residual = float((grad - shares @ columns.t()).norm() / grad.norm().clamp_min(1e-300))
    return shares, residual


def position_weights(anchors: torch.Tensor, places: torch.Tensor) -> torch.Tensor:
    """``(|T|, L)`` least-squares weights of each position's share ``B_i`` (``places`` ``(d_out, L)``) on the
    tokens' shares ``A_t`` (``anchors`` ``(d_out, |T|)``)."""
    return torch.linalg.lstsq(anchors, places, driver="gelsd").solution


def head_residual(targets: torch.Tensor, generators: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head, the part of each of ``targets`` ``(m, H, d_h)`` outside the span of ``generators`` ``(k, H, d_h)``,
    and that span's orthonormal bases ``(H, d_h, k)``."""
    bases, _ = torch.linalg.qr(generators.permute(1, 2, 0))
    return targets - torch.einsum("hdk,hek,mhe->mhd", bases, bases, targets), bases


def reductions(rest: torch.Tensor, bases: torch.Tensor, options: torch.Tensor) -> torch.Tensor:
    """``(n,)`` how much each of ``options`` ``(n, H, d_h)``, added to the span with orthonormal ``bases``, would
    reduce the squared residuals ``rest`` ``(m, H, d_h)``, summed over targets and heads."""
    outside = options - torch.einsum("hdk,hek,nhe->nhd", bases, bases, options)
    along = torch.einsum("nhd,mhd->nmh", outside, rest)
    return (along.pow(2) / outside.pow(2).sum(-1).clamp_min(1e-300).unsqueeze(1)).sum((1, 2))


def link_residual(targets: torch.Tensor, queries: torch.Tensor, sentence: dict[int, int]) -> float:
    """Relative residual of ``targets`` ``(m, H, d_h)`` (each of unit norm; the root of their squared residuals'
    sum) in the span of the queries of ``sentence`` (position -> index into the candidates)."""
    generators = torch.stack([queries[i, c] for i, c in sentence.items()])
    return float(head_residual(targets, generators)[0].norm())


def link_sentence(
    targets: torch.Tensor,
    queries: torch.Tensor,
    weights: torch.Tensor,
    fixed: dict[int, int],
    length: int,
    start: list[int] | None = None,
) -> tuple[list[int], float]:
    """The sentence of ``length`` positions (indices into the candidates) whose queries best span ``targets``
    ``(m, H, d_h)``, key-gradient shares of tokens of one sentence, with the positions in ``fixed`` held (module
    docstring, 3), and its relative residual. ``weights``: the position weights ``(|T|, L)``; ``start``: a sentence
    to improve instead of the greedy step's."""
    targets = targets / targets.flatten(1).norm(dim=1).clamp_min(1e-300)[:, None, None]
    sentence = dict(fixed) if start is None else dict(enumerate(start))
    count = queries.shape[1]
    while len(sentence) < length:  # greedy: the candidate and position reducing the residual most
        rest, bases = head_residual(targets, torch.stack([queries[i, c] for i, c in sentence.items()]))
        open_ = [i for i in range(length) if i not in sentence]
        best = int(reductions(rest, bases, queries[open_].flatten(0, 1)).argmax())
        sentence[open_[best // count]] = best % count
    free = [i for i in range(length) if i not in fixed]
    current = link_residual(targets, queries, sentence)
    if start is None:
        placed = [sentence[i] for i in free]
        # the tokens placed, reordered by their position weights (an assignment problem): the greedy step finds the
        # sentence's tokens, less their order
        rows, cols = linear_sum_assignment(-weights[placed][:, free].detach().cpu().numpy())
        reordered = dict(sentence)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            reordered[free[c]] = placed[r]
        if (value := link_residual(targets, queries, reordered)) < current:
            sentence, current = reordered, value
    for _ in range(MAX_SWEEPS):
        changed = False
        for i in free:  # each position's best token, the others held
            rest, bases = head_residual(targets, torch.stack([queries[k, c] for k, c in sentence.items() if k != i]))
            c = int(reductions(rest, bases, queries[i]).argmax())
            if c != sentence[i]:
                sentence[i], changed = c, True
        current = link_residual(targets, queries, sentence)
        for a, first in enumerate(free):  # swaps of two positions' tokens, each kept where it reduces the residual
            for second in free[a + 1 :]:
                swapped = dict(sentence)
                swapped[first], swapped[second] = sentence[second], sentence[first]
                if (value := link_residual(targets, queries, swapped)) < current - 1e-12:
                    sentence, current, changed = swapped, value, True
        if not changed:
            break
    return [sentence[i] for i in range(length)], current


def first_layer_links(
    lay: TransformerLayout, update: dict[str, torch.Tensor], tokens: list[int], length: int
) -> Links | None:
    """The first layer's split (module docstring, 1-2) for candidate ``tokens`` at positions ``< length``, or
    ``None`` where it does not apply: not a BERT-family layout, the first layer's key gradient not shared (a LoRA
    client's frozen key), more columns than the layer is wide, or ``length`` not below the head width."""
    if lay.family != "bert":
        return None
    base: Any = lay.base
    attention: Any = base.encoder.layer[0].attention.self
    names = {id(p): n for n, p in lay.model.named_parameters()}
    key = names.get(id(attention.key.weight))
    if key is None or key not in update:
        return None
    heads = int(attention.num_attention_heads)
    width = attention.query.weight.shape[0] // heads
    columns = embedding_columns(lay, tokens, length)
    if columns.shape[1] >= columns.shape[0] or length >= width:
        return None
    grads = [update[key]] + [
        update[n] for n in (names.get(id(attention.query.weight)), names.get(id(attention.value.weight))) if n in update
    ]
    shares, residual = split_gradient(torch.cat([g.detach() for g in grads]), columns)
    count = len(tokens)
    weights = position_weights(shares[:, :count], shares[:, count : count + length])
    d_out = update[key].shape[0]
    emb: Any = lay.base.embeddings
    with torch.no_grad():
        words = emb.word_embeddings.weight[tokens].double()
        kind = emb.token_type_embeddings.weight[0].double()
        norm = emb.LayerNorm
        w_q, b_q = attention.query.weight.double(), attention.query.bias.double()
        queries = torch.stack(
            [
                torch.nn.functional.layer_norm(
                    words + emb.position_embeddings.weight[i].double() + kind,
                    norm.normalized_shape,
                    norm.weight.double(),
                    norm.bias.double(),
                    norm.eps,
                )
                @ w_q.t()
                + b_q
                for i in range(length)
            ]
        ).reshape(length, count, heads, width)
    return Links(tokens, shares[:d_out, :count], weights, queries, residual)


def linked_sentences(
    links: Links, cls: int, sep: int, accept: Callable[[list[int]], float | None]
) -> list[tuple[list[int], float]]:
    """The sentences the links propose (token ids, ``[CLS]`` .. ``[SEP]``) that ``accept`` passes, with what it
    returned (the second-layer distance). Each candidate token but ``[CLS]``/``[SEP]`` anchors one search, at the
    position of its largest weight, in the order of how close that weight is to 1 (once-occurring tokens first); an
    anchor already in an accepted sentence at that position is skipped. A proposal is also cut at each earlier
    ``[SEP]`` after the anchor (a shorter sentence of a padded batch: its padding positions enter no query)."""
    index = {t: k for k, t in enumerate(links.tokens)}
    if cls not in index or sep not in index:
        return []
    length, heads, width = links.queries.shape[0], links.queries.shape[2], links.queries.shape[3]
    peak, where = links.weights.max(1)
    shares = links.anchors.t().reshape(-1, heads, width)
    found: list[tuple[list[int], float]] = []
    covered: set[tuple[int, int]] = set()
    for k in (peak - 1).abs().argsort().tolist():
        token, j = links.tokens[k], int(where[k])
        if token in (cls, sep) or not 0 < j < length - 1 or (token, j) in covered:
            continue
        fixed = {0: index[cls], j: k, length - 1: index[sep]}
        picks, residual = link_sentence(shares[k : k + 1], links.queries, links.weights, fixed, length)
        accepted = _first_accepted([links.tokens[c] for c in picks], j, sep, accept)
        if accepted is None and residual < NEAR:  # a near miss: its once-occurring tokens' shares join (ours)
            start = dict(enumerate(picks))
            group = {k} | {
                c
                for i, c in start.items()
                if 0 < i < length - 1
                and int(where[c]) == i
                and abs(float(peak[c]) - 1) < GROUP_SLACK
                and link_residual(shares[c : c + 1], links.queries, start) < NEAR
            }
            if len(group) > 1:
                picks, _ = link_sentence(shares[sorted(group)], links.queries, links.weights, fixed, length, picks)
                accepted = _first_accepted([links.tokens[c] for c in picks], j, sep, accept)
        if accepted is not None:
            found.append(accepted)
            covered |= {(t, i) for i, t in enumerate(accepted[0])}
    return found


def _first_accepted(
    ids: list[int], anchor: int, sep: int, accept: Callable[[list[int]], float | None]
) -> tuple[list[int], float] | None:
    """The shortest cut of ``ids`` at a ``[SEP]`` after position ``anchor`` that ``accept`` passes, with its value."""
    for end in [e for e, t in enumerate(ids) if t == sep and e > anchor]:
        distance = accept(ids[: end + 1])
        if distance is not None:
            return ids[: end + 1], distance
    return None

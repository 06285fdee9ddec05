"""LightSecAgg (So, He, Yang, Li, Yu, Avestimehr & Ramchandran, "LightSecAgg: a Lightweight and Versatile Design
for Secure Aggregation in Federated Learning", MLSys 2022, Sec. 4), in process.

Secure aggregation by one-shot reconstruction of the *aggregate* mask instead of per-client seeds. With ``N``
clients, privacy against ``T`` colluding clients and at least ``U > T`` clients surviving (so ``D = N - U`` drops are
tolerated), over the prime field ``F_q``:

1. Offline mask encoding (Sec. 4.1). Client ``i`` draws a uniform mask ``z_i in F_q^d``, splits it into ``U - T``
   pieces of length ``d / (U - T)``, appends ``T`` uniform noise pieces, and encodes the ``U`` pieces with a Lagrange
   (MDS) code: the polynomial through the pieces at points ``beta_1..beta_U`` is evaluated at ``alpha_j`` for each
   client ``j`` (Eq. 4), and ``[z~_i]_j`` is sent to client ``j``.
2. Masked upload (Sec. 4.2). Client ``i`` sends ``x~_i = x_i + z_i``; some clients drop before or after sending.
3. One-shot aggregate-mask recovery (Sec. 4.3). Each surviving client ``j`` that responds sends
   ``sum_{i in U1} [z~_i]_j`` over the set ``U1`` of clients whose masked model arrived. From any ``U`` responses
   the server interpolates the aggregate polynomial and reads ``sum_{i in U1} z_i`` off its first ``U - T`` pieces,
   then ``sum x~_i - sum z_i = sum_{i in U1} x_i``.

Any ``T`` colluding clients see ``T`` evaluations of each encoded mask, and the ``T`` noise pieces make them uniform
(Theorem 1); the server sees uniform masked models and encodings of the aggregate mask only. Field and quantisation:
the paper's prime ``q = 2^32 - 5``; a float travels as ``round(x * 2^scale_bits)`` in two's-complement style modulo
``q`` (so ``|sum x| * 2^scale_bits`` must stay below ``q / 2``: checked).

Share delivery between clients is modelled by direct hand-over (the paper encrypts them pairwise and routes them
through the server, which never reads them).
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gradinv.fl.secagg import check_vectors, prg

Q = 2**32 - 5
"""The field modulus of the paper's implementation (largest prime below 2^32: products fit in uint64)."""


def uniform(length: int) -> np.ndarray:
    """``length`` uniform elements of ``F_q`` from an AES-CTR stream under a fresh 256-bit seed (64-bit words
    reduced modulo ``q``: bias below 2^-31)."""
    return prg(secrets.token_bytes(32), length) % np.uint64(Q)


def to_field(vector: np.ndarray, scale_bits: int, modulus: int = Q) -> np.ndarray:
    """float -> ``F_modulus``: ``round(x * 2^scale_bits) mod q`` (negative values wrap to ``q - |v|``)."""
    return np.mod(np.round(np.asarray(vector, dtype=np.float64) * 2.0**scale_bits).astype(np.int64), modulus).astype(
        np.uint64
    )


def from_field(vector: np.ndarray, scale_bits: int, modulus: int = Q) -> np.ndarray:
    """``F_modulus`` -> float, reading elements above ``q / 2`` as negative."""
    signed = vector.astype(np.int64)
    signed = np.where(signed > modulus // 2, signed - modulus, signed)
    return signed.astype(np.float64) / 2.0**scale_bits


def lagrange_matrix(targets: Sequence[int], sources: Sequence[int], modulus: int = Q) -> np.ndarray:
    """``M[a, b] = prod_{m != b} (targets[a] - sources[m]) / (sources[b] - sources[m])`` over ``F_modulus``:
    multiplying the values of a polynomial of degree ``< len(sources)`` at ``sources`` gives its values at
    ``targets``. Cached (read-only): every client of a round uses the same points."""
    return _lagrange(tuple(int(t) for t in targets), tuple(int(s) for s in sources), int(modulus))


@functools.lru_cache(maxsize=256)
def _lagrange(targets: tuple[int, ...], sources: tuple[int, ...], modulus: int) -> np.ndarray:
    out = np.zeros((len(targets), len(sources)), dtype=np.uint64)
    for a, t in enumerate(targets):
        for b, s in enumerate(sources):
            num, den = 1, 1
            for m, sm in enumerate(sources):
                if m != b:
                    num = num * (t - sm) % modulus
                    den = den * (s - sm) % modulus
            out[a, b] = num * pow(den, -1, modulus) % modulus
    out.setflags(write=False)
    return out


def apply_matrix(matrix: np.ndarray, rows: np.ndarray, modulus: int = Q) -> np.ndarray:
    """``matrix @ rows`` over ``F_modulus`` for ``(A, B)`` and ``(B, L)`` uint64 arrays (``modulus < 2^32``: every
    product fits in 64 bits)."""
    q = np.uint64(modulus)
    out = np.zeros((matrix.shape[0], rows.shape[1]), dtype=np.uint64)
    for b in range(matrix.shape[1]):
        out = (out + (matrix[:, b : b + 1] * rows[b : b + 1]) % q) % q
    return out


@dataclass(frozen=True)
class Points:
    """The public evaluation points: ``beta_1..beta_U`` carry the pieces, ``alpha_1..alpha_N`` one per client."""

    betas: tuple[int, ...]
    alphas: tuple[int, ...]

    @classmethod
    def make(cls, n: int, needed: int) -> Points:
        return cls(tuple(range(1, needed + 1)), tuple(range(needed + 1, needed + n + 1)))


def encode_mask(mask: np.ndarray, privacy: int, points: Points) -> np.ndarray:
    """Sec. 4.1: the ``(N, d / (U - T))`` encoded sub-masks of one client's mask, row ``j`` for client ``j``.

    ``mask`` must have a length divisible by ``U - T`` (pad it).
    """
    needed = len(points.betas)
    pieces = mask.reshape(needed - privacy, -1)
    noise = np.stack([uniform(pieces.shape[1]) for _ in range(privacy)]) if privacy else pieces[:0]
    return apply_matrix(lagrange_matrix(points.alphas, points.betas), np.concatenate([pieces, noise]))


def decode_aggregate_mask(responses: dict[int, np.ndarray], privacy: int, points: Points) -> np.ndarray:
    """Sec. 4.3: ``sum z_i`` from ``U`` clients' aggregated encoded sub-masks ``{client j: sum_i [z~_i]_j}``."""
    needed = len(points.betas)
    chosen = sorted(responses)[:needed]
    sources = [points.alphas[j] for j in chosen]
    decoder = lagrange_matrix(points.betas[: needed - privacy], sources)
    return apply_matrix(decoder, np.stack([responses[j] for j in chosen])).reshape(-1)


@dataclass
class LightServerView:
    """Everything the server receives: masked models, and the aggregated encoded masks of the responders."""

    masked_inputs: dict[int, np.ndarray]
    aggregate_shares: dict[int, np.ndarray]
    survivors: list[int]
    dropped: list[int]
    responders: list[int]
    privacy: int
    needed: int
    scale_bits: int


def light_secure_sum(
    vectors: list[np.ndarray],
    *,
    privacy: int | None = None,
    needed: int | None = None,
    drop_before_upload: tuple[int, ...] = (),
    drop_in_recovery: tuple[int, ...] = (),
    scale_bits: int = 16,
) -> tuple[np.ndarray, LightServerView]:
    """Run LightSecAgg over ``vectors`` (one float vector per client); return the sum over the clients whose masked
    model arrived, and the server's view.

    Args:
        privacy: ``T``, the number of colluding clients that learn nothing (default ``needed - 1``).
        needed: ``U``, the clients that must survive (default a majority ``N // 2 + 1``); ``T < U <= N``.
        drop_before_upload: clients that encoded and shared their masks, then went offline before uploading.
        drop_in_recovery: clients that uploaded their masked model but do not answer the recovery round.
        scale_bits: fixed-point fraction bits of the quantisation.

    Raises:
        ValueError: fewer than 2 clients, bad ``T``/``U``, vectors of different sizes, a NaN, an infinity or a value
            beyond ``q / 2^(scale_bits + 1) / N`` (the field's range for a sum of ``N``), or fewer than ``U`` uploads
            or responders.
    """
    n = len(vectors)
    if not isinstance(scale_bits, int) or not 1 <= scale_bits <= 30:
        raise ValueError(f"scale_bits must be an integer in [1, 30], got {scale_bits!r}")
    floats = check_vectors(vectors, (Q // 2 - 1) / 2.0**scale_bits / max(n, 1), "LightSecAgg")
    needed = n // 2 + 1 if needed is None else needed
    privacy = needed - 1 if privacy is None else privacy
    if not 0 <= privacy < needed <= n:
        raise ValueError(f"LightSecAgg needs 0 <= privacy T < needed U <= N = {n}, got T={privacy}, U={needed}")
    d = floats[0].size
    dropped, silent = set(drop_before_upload), set(drop_in_recovery)
    if not (dropped | silent) <= set(range(n)):
        raise ValueError(f"dropped clients must lie in [0, {n})")
    survivors = sorted(set(range(n)) - dropped)
    responders = sorted(set(survivors) - silent)
    if len(survivors) < needed or len(responders) < needed:
        raise ValueError(
            f"{len(survivors)} uploads and {len(responders)} recovery responses: LightSecAgg needs U = {needed}"
        )
    points = Points.make(n, needed)
    padded = math.ceil(d / (needed - privacy)) * (needed - privacy)
    # Offline: masks and their encodings, delivered client to client (held[j][i] = [z~_i]_j)
    masks = [uniform(padded) for _ in range(n)]
    held = [dict[int, np.ndarray]() for _ in range(n)]
    for i, mask in enumerate(masks):
        for j, row in enumerate(encode_mask(mask, privacy, points)):
            held[j][i] = row
    # Upload: masked models of the survivors
    q = np.uint64(Q)
    masked = {i: (to_field(floats[i], scale_bits) + masks[i][:d]) % q for i in survivors}
    # Recovery: each responder aggregates the encoded masks of the clients whose upload arrived
    shares = {}
    for j in responders:
        total = np.zeros_like(held[j][survivors[0]])
        for i in survivors:
            total = (total + held[j][i]) % q
        shares[j] = total
    aggregate_mask = decode_aggregate_mask(shares, privacy, points)[:d]
    result: np.ndarray = np.zeros(d, dtype=np.uint64)
    for y in masked.values():
        result = (result + y) % q
    result = (result + (q - aggregate_mask)) % q
    view = LightServerView(masked, shares, survivors, sorted(dropped), responders, privacy, needed, scale_bits)
    return from_field(result, scale_bits), view

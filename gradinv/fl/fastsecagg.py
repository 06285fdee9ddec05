"""FastSecAgg (Kadhe, Rajaraman, Koyluoglu & Ramchandran, "FastSecAgg: Scalable Secure Aggregation for
Privacy-Preserving Federated Learning", ICML 2020 FL workshop, arXiv:2009.11248), in process.

**FastShare**, the paper's multi-secret sharing: the dealer writes ``L`` secrets and random masks into a vector with
zero padding, and the shares are its discrete Fourier transform over ``F_q`` (``N | q - 1``); the zeros make the
shares a code whose erasures a *peeling decoder* fills in before the inverse DFT gives back secrets and masks (the
paper's Fig. 1). Here ``N = n1 n2`` with coprime ``n1, n2``, so by the Good-Thomas index maps the length-``N`` DFT is
a 2-D ``n1 x n2`` DFT (the prime-factor FFT, each short DFT a dense product): the vector is a grid ``x[a, b]``,
non-zero only in the ``k1 x k2`` corner, and client ``j`` gets ``X[j mod n1, j mod n2]``, where

    X[u, v] = sum_{a < k1, b < k2} x[a, b] w1^(u a) w2^(v b)        (w1, w2 roots of unity of order n1, n2)

Every row of ``X`` is then a Reed-Solomon codeword of dimension ``k2`` and every column one of dimension ``k1``:
``X`` is a product code, and the decoder peels: any row with ``k2`` known shares, or column with ``k1``, is
interpolated whole, until nothing is missing. Peeling stalls only where every touched row misses ``n2 - k2 + 1``
and every touched column ``n1 - k1 + 1`` shares, so it always succeeds with up to ``(n1-k1+1)(n2-k2+1) - 1``
shares missing and, for random drops (the paper's model), far beyond; beyond, the server's decoding is refused.

**Privacy** (the collusion bound): the masks fill the triangle ``{(a, b): a + b < T}`` of the corner. A share is
the value at ``(w1^u, w2^v)`` of the bivariate polynomial with coefficients ``x``; for any ``T`` distinct grid points
there is a polynomial of total degree ``< T`` that is one at one point and zero at the others (a product of linear
factors ``X - X_j`` or ``Y - Y_j``, one per other point), so the masks reach any ``T`` shares through a map of rank
``T`` and those shares are uniform whatever the secrets: **any T clients learn nothing** (checked exhaustively in
the tests). The paper's theorems go further (privacy against a constant fraction of clients, about 10%); its
construction of the masks' positions is not in the references stored here, so this module implements the bound it
can prove, with ``T`` bounded by the corner the mask triangle must fit in: the default design's ``T`` is 10% of 10
clients and 1.2% of 1,000. ``n1 = 1`` is the 1-D case (packed Shamir sharing at the ``N``-th roots of unity): any
``T`` private, any ``N - k2`` drops tolerated, decoding by one interpolation of ``k2`` points.

**FastSecAgg** (the protocol, Sec. 4): each client quantises its update, splits it into chunks of ``L`` and
FastShares each chunk; share ``j`` goes to client ``j``. Clients that drop before sharing are out of the sum. Every
client that stays sums the shares it received (linearity: a share of the sum) and sends that sum to the server,
which decodes the sum of the inputs from the arrived sums. Field ``q = 2^32 - 2^20 + 1`` (``q - 1 = 2^20 3^2 5 7
13``); a float travels as ``round(x 2^scale_bits) mod q``, so ``|sum| 2^scale_bits < q / 2`` (checked).

Share delivery between clients is modelled by direct hand-over (the paper encrypts shares pairwise and routes them
through the server, which cannot read them).
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from gradinv.fl import lightsecagg as light
from gradinv.fl.lightsecagg import apply_matrix, lagrange_matrix
from gradinv.fl.secagg import check_vectors, prg

Q = 4293918721
"""The field: ``2^32 - 2^20 + 1``, prime, with ``q - 1 = 2^20 * 3^2 * 5 * 7 * 13`` (roots of unity of many orders;
elements below 2^32, so products fit in uint64)."""
GENERATOR = 19
"""A generator of the multiplicative group of ``F_q``."""


def root_of_unity(order: int) -> int:
    """A primitive ``order``-th root of unity in ``F_q`` (``order`` must divide ``q - 1``)."""
    if order < 1 or (Q - 1) % order:
        raise ValueError(f"F_q has no root of unity of order {order}: it must divide q - 1 = 2^20 * 3^2 * 5 * 7 * 13")
    return pow(GENERATOR, (Q - 1) // order, Q)


@functools.lru_cache(maxsize=64)
def dft_matrix(n: int, *, inverse: bool = False) -> np.ndarray:
    """``F[u, a] = w^(u a)`` for a primitive ``n``-th root ``w`` (the inverse: ``w^(-u a) / n``), over ``F_q``.
    Cached (read-only): every client of a round shares with the same matrices."""
    w = root_of_unity(n)
    if inverse:
        w = pow(w, -1, Q)
    scale = pow(n, -1, Q) if inverse else 1
    out = np.array([[pow(w, u * a, Q) * scale % Q for a in range(n)] for u in range(n)], dtype=np.uint64)
    out.setflags(write=False)
    return out


def uniform(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform elements of ``F_q`` from an AES-CTR stream under a fresh 256-bit seed (bias below 2^-31)."""
    return (prg(secrets.token_bytes(32), math.prod(shape)) % np.uint64(Q)).reshape(shape)


def dft2(grid: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The 2-D transform ``first @ grid @ second^T`` of an ``(n1, n2, m)`` grid, over ``F_q``."""
    n1, n2, m = grid.shape
    out = apply_matrix(first, grid.reshape(n1, n2 * m), Q).reshape(n1, n2, m)
    out = apply_matrix(second, out.transpose(1, 0, 2).reshape(n2, n1 * m), Q)
    return np.ascontiguousarray(out.reshape(n2, n1, m).transpose(1, 0, 2))


def mask_triangle(privacy: int, n1: int, n2: int) -> tuple[tuple[int, int], ...]:
    """The mask positions for privacy ``T``: ``{(a, b): a + b < T, a < n1, b < n2}`` (the monomials of total
    degree below ``T``, up to the grid's aliasing ``w1^n1 = w2^n2 = 1``)."""
    return tuple((a, b) for a in range(min(privacy, n1)) for b in range(min(privacy - a, n2)))


def _divisors(limit: int) -> list[int]:
    return [d for d in range(1, limit + 1) if (Q - 1) % d == 0]


@dataclass(frozen=True)
class FastShare:
    """The sharing scheme: an ``n1 x n2`` grid of shares (``N = n1 n2``), a ``k1 x k2`` corner of data, privacy
    ``T``. ``L = k1 k2 - |masks|`` secrets per sharing.

    Raises:
        ValueError: ``n1, n2`` not coprime or ``N`` not dividing ``q - 1``, a corner larger than the grid, a mask
            triangle outside the corner, or no room left for a secret.
    """

    n1: int
    n2: int
    k1: int
    k2: int
    privacy: int

    def __post_init__(self) -> None:
        for name in ("n1", "n2", "k1", "k2", "privacy"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "privacy" else 1):
                raise ValueError(
                    f"FastShare: {name} must be a {'non-negative' if name == 'privacy' else 'positive'} "
                    f"integer, got {value!r}"
                )
        if math.gcd(self.n1, self.n2) != 1:
            raise ValueError(f"FastShare needs coprime n1, n2 (the Good-Thomas maps), got {self.n1}, {self.n2}")
        root_of_unity(self.size)  # N | q - 1
        if self.k1 > self.n1 or self.k2 > self.n2:
            raise ValueError(f"the data corner {self.k1} x {self.k2} must fit the share grid {self.n1} x {self.n2}")
        if min(self.privacy, self.n1) > self.k1 or min(self.privacy, self.n2) > self.k2:
            raise ValueError(
                f"privacy T={self.privacy} needs its mask triangle inside the {self.k1} x {self.k2} corner: "
                f"k1 >= min(T, n1) and k2 >= min(T, n2)"
            )
        if self.secrets_per_sharing < 1:
            raise ValueError(f"privacy T={self.privacy} leaves no secret in the {self.k1} x {self.k2} corner")

    @property
    def size(self) -> int:
        """``N``, the number of shares."""
        return self.n1 * self.n2

    @cached_property
    def masks(self) -> tuple[tuple[int, int], ...]:
        """The mask positions: ``{(a, b): a + b < T}`` (``a < n1``, ``b < n2``)."""
        return mask_triangle(self.privacy, self.n1, self.n2)

    @cached_property
    def positions(self) -> tuple[tuple[int, int], ...]:
        """The secrets' positions: the rest of the ``k1 x k2`` corner, row by row."""
        taken = set(self.masks)
        return tuple((a, b) for a in range(self.k1) for b in range(self.k2) if (a, b) not in taken)

    @property
    def secrets_per_sharing(self) -> int:
        """``L``."""
        return self.k1 * self.k2 - len(self.masks)

    @property
    def guaranteed_drops(self) -> int:
        """Missing shares the peeling decoder always survives: ``(n1 - k1 + 1)(n2 - k2 + 1) - 1``."""
        return (self.n1 - self.k1 + 1) * (self.n2 - self.k2 + 1) - 1

    def cell(self, j: int) -> tuple[int, int]:
        """Share ``j``'s place in the grid (the Good-Thomas output map ``j -> (j mod n1, j mod n2)``)."""
        return j % self.n1, j % self.n2

    @classmethod
    def design(cls, clients: int, *, privacy: int | None = None) -> FastShare:
        """A scheme for ``clients`` shares: the smallest ``N >= clients`` that splits into coprime factors of
        ``q - 1`` (the most balanced split; shares past ``clients`` are never dealt and count as missing), corners
        of ``n - max(1, n // 4)`` per side (a quarter of each row and column is redundancy), and ``privacy``
        (default ``max(1, clients // 10)``, the paper's 10%, lowered until the mask triangle takes at most half
        the corner)."""
        if not isinstance(clients, int) or clients < 2:
            raise ValueError(f"FastShare needs at least 2 clients, got {clients!r}")
        divisors = _divisors(max(2 * clients, 16))
        splits = [(a, b) for a in divisors for b in divisors if a <= b and a * b >= clients and math.gcd(a, b) == 1]
        n1, n2 = min(splits, key=lambda s: (s[0] * s[1], s[1] - s[0]))

        def corner(n: int) -> int:
            return 1 if n == 1 else max(1, n - max(1, n // 4))

        k1, k2 = corner(n1), corner(n2)
        if k1 * k2 < 2:  # too small for redundancy: keep every share
            k1, k2 = n1, n2
        if privacy is not None:
            return cls(n1, n2, k1, k2, privacy)
        t = max(1, clients // 10)
        while t > 1 and not (min(t, n1) <= k1 and min(t, n2) <= k2 and 2 * len(mask_triangle(t, n1, n2)) <= k1 * k2):
            t -= 1
        return cls(n1, n2, k1, k2, t)

    def share(self, values: np.ndarray) -> np.ndarray:
        """The ``(N, m)`` shares of ``m`` sharings at once: ``values`` is ``(L, m)`` in ``F_q``, fresh masks."""
        values = np.asarray(values, dtype=np.uint64)
        if values.ndim != 2 or values.shape[0] != self.secrets_per_sharing:
            raise ValueError(f"FastShare shares ({self.secrets_per_sharing}, m) secrets, got {values.shape}")
        m = values.shape[1]
        grid = np.zeros((self.n1, self.n2, m), dtype=np.uint64)
        rows, cols = zip(*self.positions, strict=True)
        grid[list(rows), list(cols)] = values % np.uint64(Q)
        if self.masks:
            rows, cols = zip(*self.masks, strict=True)
            grid[list(rows), list(cols)] = uniform((len(self.masks), m))
        spectrum = dft2(grid, dft_matrix(self.n1), dft_matrix(self.n2))
        index = np.arange(self.size)
        return spectrum[index % self.n1, index % self.n2]

    def reconstruct(self, shares: Mapping[int, np.ndarray]) -> np.ndarray:
        """The ``(L, m)`` secrets from the shares that arrived (``{share index: (m,) values}``): peeling, then the
        inverse DFT.

        Raises:
            ValueError: an index outside ``[0, N)``, values of different lengths, a missing-share pattern the
                peeling decoder cannot fill (naming how many were missing against the guaranteed tolerance), or
                shares that are not one codeword (a corrupted or foreign share, seen when there is redundancy).
        """
        if not shares:
            raise ValueError("FastShare: no shares to reconstruct from")
        lengths = {np.asarray(value).shape for value in shares.values()}
        if len(lengths) != 1 or len(next(iter(lengths))) != 1:
            raise ValueError(f"FastShare: every share must be one vector of the same length, got shapes {lengths}")
        m = next(iter(lengths))[0]
        grid = np.zeros((self.n1, self.n2, m), dtype=np.uint64)
        known = np.zeros((self.n1, self.n2), dtype=bool)
        for j, value in shares.items():
            if not isinstance(j, int | np.integer) or not 0 <= j < self.size:
                raise ValueError(f"FastShare: share index {j!r} outside [0, {self.size})")
            grid[self.cell(int(j))] = np.asarray(value, dtype=np.uint64) % np.uint64(Q)
            known[self.cell(int(j))] = True
        w1, w2 = root_of_unity(self.n1), root_of_unity(self.n2)
        progress = True
        while progress and not known.all():
            progress = False
            for axis, k, w in ((1, self.k2, w2), (0, self.k1, w1)):
                for line in range(known.shape[1 - axis]):
                    have = known[line] if axis == 1 else known[:, line]
                    if have.all() or have.sum() < k:
                        continue
                    sources = np.flatnonzero(have)[:k]
                    targets = np.flatnonzero(~have)
                    interpolate = lagrange_matrix(
                        [pow(w, int(t), Q) for t in targets], [pow(w, int(s), Q) for s in sources], Q
                    )
                    if axis == 1:
                        grid[line, targets] = apply_matrix(interpolate, grid[line, sources], Q)
                        known[line, targets] = True
                    else:
                        grid[targets, line] = apply_matrix(interpolate, grid[sources, line], Q)
                        known[targets, line] = True
                    progress = True
        if not known.all():
            raise ValueError(
                f"FastShare: {self.size - len(shares)} of {self.size} shares missing and the peeling decoder is "
                f"stuck with {int((~known).sum())} unknown; decoding is guaranteed up to {self.guaranteed_drops} "
                "missing shares (more only for favourable patterns)"
            )
        data = dft2(grid, dft_matrix(self.n1, inverse=True), dft_matrix(self.n2, inverse=True))
        padding = np.ones((self.n1, self.n2), dtype=bool)
        padding[: self.k1, : self.k2] = False
        if data[padding].any():
            raise ValueError("FastShare: the shares are not one codeword (a corrupted or foreign share)")
        rows, cols = zip(*self.positions, strict=True)
        return data[list(rows), list(cols)]


def to_field(vector: np.ndarray, scale_bits: int) -> np.ndarray:
    """float -> ``F_q``: ``round(x * 2^scale_bits) mod q``."""
    return light.to_field(vector, scale_bits, Q)


def from_field(vector: np.ndarray, scale_bits: int) -> np.ndarray:
    """``F_q`` -> float, reading elements above ``q / 2`` as negative."""
    return light.from_field(vector, scale_bits, Q)


@dataclass
class FastServerView:
    """Everything the server receives: each responding client's sum of the shares dealt to it."""

    aggregate_shares: dict[int, np.ndarray]
    survivors: list[int]
    dropped: list[int]
    responders: list[int]
    scheme: FastShare
    scale_bits: int


def fast_secure_sum(
    vectors: list[np.ndarray],
    *,
    scheme: FastShare | None = None,
    privacy: int | None = None,
    drop_before_upload: tuple[int, ...] = (),
    drop_in_recovery: tuple[int, ...] = (),
    scale_bits: int = 16,
) -> tuple[np.ndarray, FastServerView]:
    """Run FastSecAgg over ``vectors`` (one float vector per client); return the sum over the clients whose shares
    were dealt, and the server's view.

    Args:
        scheme: the FastShare parameters (default :meth:`FastShare.design` for the number of clients, with
            ``privacy``); its ``N`` must be at least the number of clients (client ``j`` holds share ``j``).
        privacy: ``T`` for the default scheme (any ``T`` colluding clients learn nothing).
        drop_before_upload: clients that go offline before dealing their shares (out of the sum).
        drop_in_recovery: clients that dealt their shares but do not send their sum of received shares (their input
            stays in the sum; their share is missing for the decoder).
        scale_bits: fixed-point fraction bits of the quantisation.

    Raises:
        ValueError: fewer than 2 clients, bad settings, vectors of different sizes, a NaN, an infinity or a value
            beyond ``q / 2^(scale_bits + 1) / n`` (the field's range for a sum of ``n``), fewer than 2 clients in the
            sum (the "sum" would be one client's input), or too many missing shares for the decoder.
    """
    n = len(vectors)
    if not isinstance(scale_bits, int) or not 1 <= scale_bits <= 30:
        raise ValueError(f"scale_bits must be an integer in [1, 30], got {scale_bits!r}")
    floats = check_vectors(vectors, (Q // 2 - 1) / 2.0**scale_bits / max(n, 1), "FastSecAgg")
    if scheme is None:
        scheme = FastShare.design(n, privacy=privacy)
    elif privacy is not None and privacy != scheme.privacy:
        raise ValueError(f"privacy={privacy} disagrees with the scheme's T={scheme.privacy}")
    if scheme.size < n:
        raise ValueError(f"the FastShare scheme deals {scheme.size} shares for {n} clients")
    dropped, silent = set(drop_before_upload), set(drop_in_recovery)
    if not (dropped | silent) <= set(range(n)):
        raise ValueError(f"dropped clients must lie in [0, {n})")
    survivors = sorted(set(range(n)) - dropped)
    responders = sorted(set(survivors) - silent)
    if len(survivors) < 2:
        raise ValueError(f"{len(survivors)} client(s) dealt shares: a sum of fewer than 2 reveals an input; refused")
    d, per = floats[0].size, scheme.secrets_per_sharing
    chunks = max(1, math.ceil(d / per))
    q = np.uint64(Q)
    # Sharing: client i deals its chunks; client j adds what it receives (held[j] = sum_i share_i[j])
    held = {j: np.zeros(chunks, dtype=np.uint64) for j in range(n)}
    for i in survivors:
        padded = np.zeros(per * chunks, dtype=np.uint64)
        padded[:d] = to_field(floats[i], scale_bits)
        dealt = scheme.share(padded.reshape(chunks, per).T)
        for j in range(n):
            held[j] = (held[j] + dealt[j]) % q
    # Recovery: the responders' sums; the server decodes the sum of the inputs
    sums = {j: held[j] for j in responders}
    total = scheme.reconstruct(sums).T.reshape(-1)[:d]
    view = FastServerView(sums, survivors, sorted(dropped), responders, scheme, scale_bits)
    return from_field(total, scale_bits), view

"""Secure aggregation by pairwise masking (Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving
Machine Learning", CCS 2017, Sec. 4, Fig. 4), in process.

Each client ``u`` holds a vector ``x_u`` (its flattened update, in fixed point modulo ``2^64``) and sends

    y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)   (mod 2^64)

where ``s_uv`` comes from Diffie-Hellman key agreement (X25519) between ``u`` and ``v`` and ``b_u`` is a fresh
self-mask seed; PRG is AES-256 in counter mode. Before masking, every client Shamir-shares (threshold ``t``) its
masking key and ``b_u`` with the others (Round 1). After the masked inputs arrive the server asks the survivors for
shares of ``b_u`` of every surviving ``u`` and of the masking key of every dropped ``u`` (Round 3, never both for
one client), removes the self masks and the dropped clients' pairwise masks, and is left with ``sum x_u`` over the
survivors: nothing else. Pairwise masks cancel in the sum; a single ``y_u`` is uniformly distributed.

What the server sees is recorded in :class:`ServerView`. Share delivery between clients is modelled by direct hand-
over (the paper encrypts them under a second agreed key and routes them through the server); the server never holds
them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

PRIME = 2**521 - 1
"""The Shamir field: a Mersenne prime wider than the 256-bit secrets."""
SCALE_BITS = 32
"""Fixed point: a float ``x`` travels as ``round(x * 2^32)`` modulo ``2^64``."""


def shamir_split(secret: int, n: int, threshold: int) -> list[tuple[int, int]]:
    """``n`` shares ``(i, f(i))``, ``i = 1..n``, of a random polynomial of degree ``threshold - 1`` with ``f(0) =
    secret`` over GF(:data:`PRIME`)."""
    if not 0 <= secret < PRIME:
        raise ValueError("the secret must lie in [0, PRIME)")
    coefficients = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, n + 1):
        y = 0
        for c in reversed(coefficients):
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def shamir_combine(shares: list[tuple[int, int]]) -> int:
    """Lagrange interpolation at 0 of ``threshold`` or more shares."""
    secret = 0
    for i, (xi, yi) in enumerate(shares):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(shares):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    return secret


def prg(seed: bytes, length: int) -> np.ndarray:
    """``length`` pseudo-random uint64 words: AES-256-CTR keystream under ``SHA-256(seed)``."""
    key = hashlib.sha256(seed).digest()
    encryptor = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    stream = encryptor.update(b"\0" * (8 * length)) + encryptor.finalize()
    return np.frombuffer(stream, dtype=np.uint64).copy()


def check_vectors(vectors: list[np.ndarray], limit: float, protocol: str) -> list[np.ndarray]:
    """The clients' vectors as flat float64 arrays of one size, every entry finite and within ``[-limit, limit]``
    (what the protocol's field or fixed point can carry for a sum over all of them).

    Raises:
        TypeError: a vector that is not numeric.
        ValueError: fewer than 2 clients, different sizes, or a NaN, an infinity or a value out of range, naming the
            client and the entry.
    """
    if len(vectors) < 2:
        raise ValueError(f"{protocol} needs n >= 2 clients, got {len(vectors)}")
    arrays = []
    for i, vector in enumerate(vectors):
        try:
            array = np.asarray(vector, dtype=np.float64).ravel()
        except (TypeError, ValueError) as err:
            raise TypeError(f"{protocol}: client {i}'s vector is not numeric: {err}") from err
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise ValueError(f"{protocol}: client {i}'s vector holds {array[bad[0]]} at entry {bad[0]}")
        if array.size and float(np.abs(array).max()) > limit:
            at = int(np.abs(array).argmax())
            raise ValueError(
                f"{protocol}: client {i}'s entry {at} is {array[at]:.6g}, outside [-{limit:.6g}, {limit:.6g}], what "
                f"the protocol can carry for a sum over {len(vectors)} clients: clip or scale the updates"
            )
        arrays.append(array)
    sizes = {a.size for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"every client must send a vector of the same size, got sizes {sorted(sizes)}")
    return arrays


def to_fixed(vector: np.ndarray) -> np.ndarray:
    """float -> fixed point modulo 2^64 (two's complement)."""
    return np.round(np.asarray(vector, dtype=np.float64) * 2.0**SCALE_BITS).astype(np.int64).view(np.uint64)


def from_fixed(vector: np.ndarray) -> np.ndarray:
    return vector.view(np.int64).astype(np.float64) / 2.0**SCALE_BITS


def _raw(key: X25519PrivateKey) -> int:
    return int.from_bytes(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()), "big")


def _public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass
class Client:
    """One participant: its keys, its self-mask seed, and the shares others gave it."""

    index: int
    vector: np.ndarray
    mask_key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    self_seed: int = field(default_factory=lambda: secrets.randbits(256))
    held: dict[int, tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=dict)

    def public_key(self) -> bytes:
        return _public_bytes(self.mask_key.public_key())

    def shares(self, n: int, threshold: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Round 1: shares of (masking key, self-mask seed), one per client."""
        key_shares = shamir_split(_raw(self.mask_key), n, threshold)
        seed_shares = shamir_split(self.self_seed, n, threshold)
        return list(zip(key_shares, seed_shares, strict=True))

    def masked_input(self, public_keys: dict[int, bytes]) -> np.ndarray:
        """Round 2: ``y_u`` (uint64 arithmetic wraps modulo 2^64)."""
        y = to_fixed(self.vector) + prg(self.self_seed.to_bytes(32, "big"), self.vector.size)
        for v, key in public_keys.items():
            if v == self.index:
                continue
            mask = prg(self.mask_key.exchange(X25519PublicKey.from_public_bytes(key)), self.vector.size)
            y = y + mask if self.index < v else y - mask
        return y

    def unmask(
        self, survivors: set[int], dropped: set[int], collude_on: frozenset[int] = frozenset()
    ) -> list[tuple[int, str, tuple[int, int]]]:
        """Round 3: the self-seed share of each survivor and the key share of each dropped client, never both; for a
        survivor in ``collude_on`` a colluding client breaks the rule and hands over its key share too."""
        if survivors & dropped:
            raise ValueError("a client cannot be both surviving and dropped")
        out: list[tuple[int, str, tuple[int, int]]] = []
        for owner, (key_share, seed_share) in self.held.items():
            if owner in survivors:
                out.append((owner, "seed", seed_share))
                if owner in collude_on:
                    out.append((owner, "key", key_share))
            elif owner in dropped:
                out.append((owner, "key", key_share))
        return out


@dataclass
class ServerView:
    """Everything the server receives during one aggregation."""

    public_keys: dict[int, bytes]
    masked_inputs: dict[int, np.ndarray]
    revealed: dict[int, list[tuple[str, tuple[int, int]]]]
    survivors: list[int]
    dropped: list[int]
    threshold: int
    responders: list[int] = field(default_factory=list)


def secure_sum(
    vectors: list[np.ndarray],
    *,
    threshold: int | None = None,
    drop_before_masking: tuple[int, ...] = (),
    drop_in_unmasking: tuple[int, ...] = (),
    collude_on: tuple[int, ...] = (),
) -> tuple[np.ndarray, ServerView]:
    """Run the protocol over ``vectors`` (one float vector per client) and return the server's result and view.

    Args:
        threshold: Shamir threshold ``t`` (default: a majority, ``n // 2 + 1``); at least ``t`` clients must survive.
        drop_before_masking: clients that go offline after sharing their keys and before sending a masked input
            (their pairwise masks are then removed from the survivors' inputs with the recovered keys).
        drop_in_unmasking: clients whose masked input arrived but who do not answer the unmasking round (their
            input stays in the sum; their self mask is rebuilt from the others' shares). At least ``t`` must answer.
        collude_on: survivors whose masking-key shares the answering clients also hand to the server, breaking the
            protocol's "never both shares of one client" rule (``t`` colluding clients can): the server then holds
            both secrets of that client, and its view (``revealed``) unmasks that client's input alone. Models the
            collusion bound; the returned sum is unchanged.

    Returns:
        ``(sum over surviving clients, what the server saw)``.

    Raises:
        ValueError: fewer than 2 clients, a bad threshold, vectors of different sizes, a NaN, an infinity or a value
            beyond ``2^31 / n`` (the fixed point's range for a sum of ``n``), fewer than ``t`` survivors, or fewer
            than ``t`` clients answering the unmasking round.
    """
    n = len(vectors)
    arrays = check_vectors(vectors, (2.0**63 - 1) / 2.0**SCALE_BITS / max(n, 1), "secure aggregation")
    threshold = n // 2 + 1 if threshold is None else threshold
    if not 1 < threshold <= n:
        raise ValueError(f"threshold must lie in [2, {n}], got {threshold}")
    dropped, silent = set(drop_before_masking), set(drop_in_unmasking)
    if not (dropped | silent | set(collude_on)) <= set(range(n)) or dropped & silent:
        raise ValueError(f"drop_before_masking and drop_in_unmasking must name different clients in [0, {n})")
    survivors = set(range(n)) - dropped
    if len(survivors) < threshold:
        raise ValueError(f"only {len(survivors)} clients survive, fewer than the threshold {threshold}")
    responders = survivors - silent
    if len(responders) < threshold:
        raise ValueError(
            f"only {len(responders)} clients answer the unmasking round, fewer than the threshold {threshold}: "
            "the self masks cannot be removed"
        )
    clients = [Client(i, array) for i, array in enumerate(arrays)]
    # Round 0: advertise keys
    public_keys = {c.index: c.public_key() for c in clients}
    # Round 1: share keys (delivered client to client)
    for c in clients:
        for holder, share in zip(clients, c.shares(n, threshold), strict=True):
            holder.held[c.index] = share
    # Round 2: masked inputs of the survivors
    masked = {c.index: c.masked_input(public_keys) for c in clients if c.index in survivors}
    # Round 3: unmasking
    revealed: dict[int, list[tuple[str, tuple[int, int]]]] = {}
    for c in clients:
        if c.index in responders:
            for owner, kind, item in c.unmask(survivors, dropped, frozenset(collude_on)):
                revealed.setdefault(owner, []).append((kind, item))
    total = np.zeros(arrays[0].size, dtype=np.uint64)
    for y in masked.values():
        total = total + y
    for owner, items in revealed.items():
        wanted = "seed" if owner in survivors else "key"
        shares = [share for kind, share in items if kind == wanted]
        if len(shares) < threshold:
            raise ValueError(f"cannot unmask client {owner}: {len(shares)} shares of its {wanted}")
        secret = shamir_combine(shares[:threshold])
        if owner in survivors:
            total = total - prg(secret.to_bytes(32, "big"), total.size)
        else:
            key = X25519PrivateKey.from_private_bytes(secret.to_bytes(32, "big"))
            for v in survivors:
                mask = prg(key.exchange(X25519PublicKey.from_public_bytes(public_keys[v])), total.size)
                # the survivor v added +mask if v < owner, else -mask: undo it
                total = total - mask if v < owner else total + mask
    view = ServerView(public_keys, masked, revealed, sorted(survivors), sorted(dropped), threshold, sorted(responders))
    return from_fixed(total), view

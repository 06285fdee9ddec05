"""Aggregation under additively homomorphic encryption (Aono, Hayashi, Wang & Moriai, "Privacy-Preserving Deep
Learning via Additively Homomorphic Encryption", IEEE TIFS 2018, Sec. 4), with CKKS (Cheon, Kim, Kim & Song,
ASIACRYPT 2017) through TenSEAL.

In Aono et al.'s protocol the clients share one secret key; the server holds only the public context. Each client
encrypts its update, the server adds the ciphertexts (Sec. 4.2, Eq. 7) and returns the encrypted sum, which only the
clients can decrypt: an honest-but-curious server never sees an update or even the aggregate in the clear. CKKS
packs ``poly_modulus_degree / 2`` reals per ciphertext; an update is encrypted in chunks of that many slots.

**Collusion scope.** Every client holds the one secret key, and the server keeps each client's ciphertext: a server
colluding with any single client (or a client that reads the server's storage) decrypts *every* client's individual
update, not just the sum (``tests/fl/test_homomorphic.py`` shows it). Protection against such collusion needs
threshold or multi-key encryption, which this module does not implement. **Decryption leakage.** CKKS is
approximate: a decrypted result carries the encryption noise, and when decryptions reach the adversary the noise
can reveal the secret key (Li & Micciancio, EUROCRYPT 2021, IND-CPA-D); here the clients decrypt the sum, and a
protocol that sends the decrypted sum back to the server exposes it. **Parameters** are refused above the 128-bit
bound of the Homomorphic Encryption Standard (total coefficient-modulus bits for each ``N``,
:data:`MAX_MODULUS_BITS`), and values are refused where the sum over all clients would overflow the plaintext's
integer part (``2^(first prime bits - scale bits - 1)``).

TenSEAL is an optional dependency (``pip install 'gradinv[he]'``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradinv.fl.secagg import check_vectors


def tenseal() -> Any:
    """The ``tenseal`` module, or an ImportError that says how to install it."""
    try:
        import tenseal as ts
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "homomorphic aggregation needs TenSEAL: pip install 'gradinv[he]' (or pip install tenseal)"
        ) from err
    return ts


MAX_MODULUS_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
"""The largest total coefficient modulus (bits) for 128-bit classical security with a ternary secret, per ring
dimension N (Homomorphic Encryption Standard, Albrecht et al. 2018, Table 1; what SEAL enforces by default)."""


@dataclass(frozen=True)
class CKKSParameters:
    """CKKS parameters: TenSEAL's recommended 128-bit-secure setting for one multiplication depth by default
    (N = 8192, moduli 60/40/40/60 bits, scale 2^40); additions need no depth.

    Raises:
        ValueError: an N that is not a power of two in [1024, 32768], moduli outside [20, 60] bits or summing above
            :data:`MAX_MODULUS_BITS` for N, or a scale that leaves no integer bits under the first modulus.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    scale_bits: int = 40

    def __post_init__(self) -> None:
        if self.poly_modulus_degree not in MAX_MODULUS_BITS:
            raise ValueError(
                f"poly_modulus_degree must be one of {sorted(MAX_MODULUS_BITS)}, got {self.poly_modulus_degree!r}"
            )
        bits = tuple(self.coeff_mod_bit_sizes)
        if len(bits) < 2 or any(isinstance(b, bool) or not isinstance(b, int) or not 20 <= b <= 60 for b in bits):
            raise ValueError(f"coeff_mod_bit_sizes must be two or more integers in [20, 60], got {bits!r}")
        limit = MAX_MODULUS_BITS[self.poly_modulus_degree]
        if sum(bits) > limit:
            raise ValueError(
                f"coeff_mod_bit_sizes sum to {sum(bits)} bits, above the {limit} bits that N = "
                f"{self.poly_modulus_degree} allows for 128-bit security: use fewer or smaller moduli, or a larger N"
            )
        if (
            isinstance(self.scale_bits, bool)
            or not isinstance(self.scale_bits, int)
            or not 1 <= self.scale_bits < bits[0]
        ):
            raise ValueError(f"scale_bits must be an integer in [1, {bits[0]}), got {self.scale_bits!r}")

    @property
    def value_limit(self) -> float:
        """The largest magnitude the decrypted sum may reach: the first modulus's bits above the scale, less a sign
        bit."""
        return 2.0 ** (self.coeff_mod_bit_sizes[0] - self.scale_bits - 1)

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


def keygen(params: CKKSParameters = CKKSParameters()) -> tuple[Any, bytes]:
    """The clients' secret context and the serialized public context handed to the server (no secret key)."""
    ts = tenseal()
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    context.global_scale = 2.0**params.scale_bits
    public = context.copy()
    public.make_context_public()
    return context, public.serialize()


def encrypt(vector: np.ndarray, context: Any, slots: int) -> list[bytes]:
    """A client's update as serialized CKKS ciphertexts of ``slots`` values each (the last one shorter)."""
    ts = tenseal()
    values = np.asarray(vector, dtype=np.float64).ravel()
    return [ts.ckks_vector(context, values[i : i + slots].tolist()).serialize() for i in range(0, values.size, slots)]


def add(public_context: bytes, ciphertexts: list[list[bytes]]) -> list[bytes]:
    """Server side: the encrypted sum of the clients' ciphertexts, computed with the public context only."""
    ts = tenseal()
    context = ts.context_from(public_context)
    if context.has_secret_key():
        raise ValueError("the server's context must not hold the secret key")
    total = [ts.ckks_vector_from(context, c) for c in ciphertexts[0]]
    for client in ciphertexts[1:]:
        if len(client) != len(total):
            raise ValueError("every client must send the same number of ciphertexts")
        for k, c in enumerate(client):
            total[k] = total[k] + ts.ckks_vector_from(context, c)
    return [t.serialize() for t in total]


def decrypt(ciphertexts: list[bytes], context: Any, size: int) -> np.ndarray:
    """Client side: the first ``size`` values of the decrypted ciphertexts (needs the secret context)."""
    ts = tenseal()
    values = np.concatenate([np.asarray(ts.ckks_vector_from(context, c).decrypt()) for c in ciphertexts])
    return values[:size]


@dataclass
class HomomorphicView:
    """What the server holds, and what the protocol cost per client."""

    public_context: bytes
    ciphertexts: dict[int, list[bytes]]
    aggregate: list[bytes]
    survivors: list[int]
    plaintext_bytes: int
    ciphertext_bytes: int
    encrypt_seconds: float
    add_seconds: float
    decrypt_seconds: float
    params: CKKSParameters = field(default_factory=CKKSParameters)

    @property
    def size_overhead(self) -> float:
        """Ciphertext bytes per client over its float32 update's bytes."""
        return self.ciphertext_bytes / self.plaintext_bytes


def encrypted_sum(
    vectors: list[np.ndarray], *, params: CKKSParameters = CKKSParameters(), keys: tuple[Any, bytes] | None = None
) -> tuple[np.ndarray, HomomorphicView]:
    """Run one homomorphic aggregation over ``vectors``: the clients encrypt, the server adds with the public
    context, and the clients decrypt the sum. Returns the decrypted sum (what a key-holding client gets) and the
    server's view with the measured costs (mean per client). ``keys``: the clients' shared secret context and the
    public context from :func:`keygen` (default: fresh ones), e.g. to model a client colluding with the server.

    Raises:
        ValueError: fewer than 2 clients, vectors of different sizes, or a NaN, an infinity or a value beyond
            ``CKKSParameters.value_limit / n`` (naming the client).
    """
    if not isinstance(params, CKKSParameters):
        raise TypeError(f"params must be a CKKSParameters, got {type(params).__name__}")
    vectors = check_vectors(vectors, params.value_limit / max(len(vectors), 1), "homomorphic aggregation")
    size = vectors[0].size
    secret, public = keygen(params) if keys is None else keys
    start = time.perf_counter()
    ciphertexts = {i: encrypt(v, secret, params.slots) for i, v in enumerate(vectors)}
    encrypt_seconds = (time.perf_counter() - start) / len(vectors)
    start = time.perf_counter()
    aggregate = add(public, list(ciphertexts.values()))
    add_seconds = time.perf_counter() - start
    start = time.perf_counter()
    total = decrypt(aggregate, secret, size)
    decrypt_seconds = time.perf_counter() - start
    view = HomomorphicView(
        public_context=public,
        ciphertexts=ciphertexts,
        aggregate=aggregate,
        survivors=list(range(len(vectors))),
        plaintext_bytes=4 * size,
        ciphertext_bytes=sum(len(c) for c in ciphertexts[0]),
        encrypt_seconds=encrypt_seconds,
        add_seconds=add_seconds,
        decrypt_seconds=decrypt_seconds,
        params=params,
    )
    return total, view

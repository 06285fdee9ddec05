"""Aggregation under additively homomorphic encryption (Aono, Hayashi, Wang & Moriai, "Privacy-Preserving Deep
Learning via Additively Homomorphic Encryption", IEEE TIFS 2018, Sec. 4), with CKKS (Cheon, Kim, Kim & Song,
ASIACRYPT 2017) through TenSEAL.

In Aono et al.'s protocol the clients share one secret key; the server holds only the public context. Each client
encrypts its update, the server adds the ciphertexts (Sec. 4.2, Eq. 7) and returns the encrypted sum, which only the
clients can decrypt: the server never sees an update or even the aggregate in the clear. CKKS packs
``poly_modulus_degree / 2`` reals per ciphertext; an update is encrypted in chunks of that many slots.

TenSEAL is an optional dependency (``pip install 'gradinv[he]'``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def tenseal() -> Any:
    """The ``tenseal`` module, or an ImportError that says how to install it."""
    try:
        import tenseal as ts
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "homomorphic aggregation needs TenSEAL: pip install 'gradinv[he]' (or pip install tenseal)"
        ) from err
    return ts


@dataclass(frozen=True)
class CKKSParameters:
    """CKKS parameters: TenSEAL's recommended 128-bit-secure setting for one multiplication depth by default
    (N = 8192, moduli 60/40/40/60 bits, scale 2^40); additions need no depth."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    scale_bits: int = 40

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
    vectors: list[np.ndarray], *, params: CKKSParameters = CKKSParameters()
) -> tuple[np.ndarray, HomomorphicView]:
    """Run one homomorphic aggregation over ``vectors``: the clients encrypt, the server adds with the public
    context, and the clients decrypt the sum. Returns the decrypted sum (what a key-holding client gets) and the
    server's view with the measured costs (mean per client).

    Raises:
        ValueError: fewer than 2 clients or vectors of different sizes.
    """
    if len(vectors) < 2:
        raise ValueError(f"homomorphic aggregation needs n >= 2 clients, got {len(vectors)}")
    sizes = {np.asarray(v).size for v in vectors}
    if len(sizes) != 1:
        raise ValueError(f"every client must send a vector of the same size, got sizes {sorted(sizes)}")
    size = sizes.pop()
    secret, public = keygen(params)
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

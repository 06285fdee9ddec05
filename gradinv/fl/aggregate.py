"""What a server running secure aggregation observes: the mean update of the surviving clients, computed through a
real masking protocol (never by adding the plain updates), as one :class:`~gradinv.Observation`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from gradinv.defenses.base import Defense
from gradinv.fl.fastsecagg import fast_secure_sum
from gradinv.fl.homomorphic import encrypted_sum
from gradinv.fl.lightsecagg import light_secure_sum
from gradinv.fl.secagg import secure_sum
from gradinv.observation import Observation, ThreatModel

PROTOCOLS: dict[str, tuple[Callable[..., tuple[np.ndarray, Any]], str]] = {
    "secagg": (secure_sum, "Bonawitz et al. CCS 2017 (pairwise masks, X25519, AES-CTR PRG, Shamir t-of-n), in process"),
    "lightsecagg": (light_secure_sum, "So et al. MLSys 2022 (Lagrange-coded masks over F_q, one-shot recovery)"),
    "fastsecagg": (
        fast_secure_sum,
        "Kadhe et al. 2020 (FastShare: DFT of zero-padded secrets and masks over F_q, peeling decoder; any T "
        "colluding clients learn nothing)",
    ),
    "homomorphic": (
        encrypted_sum,
        "Aono et al. 2018 with CKKS (TenSEAL): the server adds ciphertexts and cannot decrypt; the observation is the "
        "decrypted aggregate a key-holding client (or a server colluding with one) sees",
    ),
}


MALICIOUS = {
    "secagg": (
        'secagg here is Bonawitz et al.\'s semi-honest protocol; against a malicious server (server="malicious") it '
        "needs the signatures and the consistency check of the paper's active version (Sec. 6-7), which are not "
        "implemented: such a server can report clients as dropped and unmask one client's input"
    ),
    "lightsecagg": (
        'lightsecagg here is the semi-honest protocol; a malicious server (server="malicious") can claim every other '
        "client dropped and decode one client's model: not modelled"
    ),
    "fastsecagg": (
        "fastsecagg here is the honest-but-curious protocol of Kadhe et al.; a malicious server "
        '(server="malicious") can claim every other client dropped before sharing: not modelled'
    ),
    "homomorphic": (
        "homomorphic aggregation here follows Aono et al.'s honest-but-curious model; a malicious server "
        '(server="malicious") can return one client\'s ciphertext as "the sum" for the clients to decrypt: not '
        "modelled"
    ),
}
"""Why each protocol refuses a malicious server."""


def flatten(update: dict[str, torch.Tensor]) -> np.ndarray:
    """One float64 vector of an update, in its key order."""
    return torch.cat([value.detach().flatten() for value in update.values()]).double().numpy()


def unflatten(vector: np.ndarray, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`flatten`, shaped and typed like ``like``."""
    out, offset = {}, 0
    for name, value in like.items():
        size = math.prod(value.shape)
        out[name] = torch.from_numpy(vector[offset : offset + size].copy()).reshape(value.shape).to(value.dtype)
        offset += size
    return out


def observe_aggregate(
    model: torch.nn.Module,
    clients: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    threat: ThreatModel | None = None,
    defenses: Sequence[Defense] = (),
    seed: int = 0,
    protocol: str = "secagg",
    **options: Any,
) -> Observation:
    """The server's observation under secure aggregation: the mean of the surviving clients' updates.

    Each client computes its update as :func:`gradinv.observe` does (with ``defenses``, seed ``seed + i``); the
    vectors then go through ``protocol`` (``"secagg"``: :func:`gradinv.fl.secagg.secure_sum`; ``"lightsecagg"``:
    :func:`gradinv.fl.lightsecagg.light_secure_sum`; ``"fastsecagg"``: :func:`gradinv.fl.fastsecagg.fast_secure_sum`;
    ``"homomorphic"``: :func:`gradinv.fl.homomorphic.encrypted_sum`, where the server itself holds only ciphertexts
    and the observation is what a key-holding client decrypts) with ``options`` (threshold, dropped clients, ...).
    With equal batch sizes the mean of FedSGD gradients is the gradient of the union batch, so any attack can be run
    on it; the observation's batch size (if granted) is the survivors' total, and no BatchNorm statistics are granted.
    """
    from gradinv.fl.client import observe

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown secure aggregation protocol {protocol!r}; available: {', '.join(PROTOCOLS)}")
    threat = threat or ThreatModel()
    if threat.server == "malicious":
        raise ValueError(MALICIOUS[protocol])
    if len(clients) < 2:
        raise ValueError(f"secure aggregation needs n >= 2 clients, got {len(clients)}")
    per_client = [
        observe(model, images, labels, threat=replace(threat, knows_bn_stats=False), seed=seed + i, defenses=defenses)
        for i, (images, labels) in enumerate(clients)
    ]
    run, description = PROTOCOLS[protocol]
    total, view = run([flatten(o.update) for o in per_client], **options)
    survivors = view.survivors
    first = per_client[0]
    labels = torch.cat([clients[i][1] for i in survivors]) if threat.knows_labels else None
    record: dict[str, Any] = {
        "name": "secure_aggregation",
        "protocol": protocol,
        "description": description,
        "clients": len(clients),
        "survivors": len(survivors),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items() if k != "params"},
    }
    return Observation(
        model=first.model,
        update=unflatten(total / len(survivors), first.update),
        threat=threat,
        image_shape=first.image_shape,
        num_classes=first.num_classes,
        labels=labels,
        batch_size=sum(int(clients[i][0].shape[0]) for i in survivors) if threat.knows_batch_size else None,
        bn_stats=None,
        model_spec=first.model_spec,
        defenses=[*first.defenses, record | _costs(view)],
        model_training=list(first.model_training),
    )


def _costs(view: Any) -> dict[str, Any]:
    """The measured protocol costs worth recording (homomorphic encryption: time and ciphertext size)."""
    if not hasattr(view, "size_overhead"):
        return {}
    return {
        "server_can_decrypt": False,
        "encrypt_seconds": round(view.encrypt_seconds, 4),
        "ciphertext_bytes": view.ciphertext_bytes,
        "size_overhead": round(view.size_overhead, 2),
    }

"""Homomorphic aggregation (Aono et al. with CKKS): the server adds ciphertexts it cannot read; the clients decrypt
the exact sum up to CKKS's approximation error."""

import numpy as np
import pytest

import gradinv as gi
from gradinv.fl.aggregate import observe_aggregate

ts = pytest.importorskip("tenseal")

from gradinv.fl.homomorphic import CKKSParameters, add, encrypt, encrypted_sum, keygen  # noqa: E402


def test_the_clients_decrypt_the_sum_and_the_costs_are_measured() -> None:
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=10_000) * 0.01 for _ in range(3)]
    total, view = encrypted_sum(vectors)
    assert np.abs(total - sum(vectors)).max() < 1e-6
    assert len(view.aggregate) == 3  # ceil(10000 / 4096) ciphertexts
    assert view.size_overhead > 10 and view.encrypt_seconds > 0  # CKKS at N=8192 costs > 10x the float32 bytes


def test_the_server_cannot_decrypt() -> None:
    rng = np.random.default_rng(1)
    vectors = [rng.normal(size=100) for _ in range(2)]
    _, view = encrypted_sum(vectors)
    server = ts.context_from(view.public_context)
    assert not server.has_secret_key()
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(server, view.aggregate[0]).decrypt()
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(server, view.ciphertexts[0][0]).decrypt()


def test_encryption_is_randomised_and_the_server_refuses_a_secret_context() -> None:
    secret, public = keygen(CKKSParameters())
    vector = np.ones(10)
    assert encrypt(vector, secret, 4096) != encrypt(vector, secret, 4096)  # same plaintext, different ciphertexts
    with pytest.raises(ValueError, match="must not hold the secret key"):
        add(secret.serialize(save_secret_key=True), [encrypt(vector, secret, 4096)] * 2)


def test_a_key_holder_sees_the_mean_update() -> None:
    images, labels = gi.data.load("digits", n=4, size=8, channels=1, seed=0)
    model = gi.models.make("mlp", image_shape=(1, 8, 8), hidden=(32,), seed=0)
    agg = observe_aggregate(model, [(images[:2], labels[:2]), (images[2:], labels[2:])], protocol="homomorphic")
    union = gi.observe(model, images, labels)
    for name, value in union.update.items():
        assert (agg.update[name] - value).abs().max() < 1e-5
    record = agg.defenses[-1]
    assert record["protocol"] == "homomorphic" and record["server_can_decrypt"] is False
    assert record["size_overhead"] > 10


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="n >= 2"):
        encrypted_sum([np.zeros(3)])
    with pytest.raises(ValueError, match="same size"):
        encrypted_sum([np.zeros(3), np.zeros(4)])

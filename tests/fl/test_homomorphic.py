"""Homomorphic aggregation (Aono et al. with CKKS): the server adds ciphertexts it cannot read; the clients decrypt
the exact sum up to CKKS's approximation error."""

import numpy as np
import pytest

import gradinv as gi
from gradinv.fl.aggregate import observe_aggregate

ts = pytest.importorskip("tenseal")

from gradinv.fl.homomorphic import CKKSParameters, add, decrypt, encrypt, encrypted_sum, keygen  # noqa: E402


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


def test_a_server_colluding_with_one_client_decrypts_every_clients_own_update() -> None:
    # Prepare: three clients share one secret key (Aono et al.); the server keeps each client's ciphertext
    rng = np.random.default_rng(2)
    vectors = [rng.normal(size=500) for _ in range(3)]
    keys = keygen(CKKSParameters())
    _, view = encrypted_sum(vectors, keys=keys)
    # Execute: client 0 hands its copy of the secret context to the server
    stolen = ts.context_from(keys[0].serialize(save_secret_key=True))
    others = [decrypt(view.ciphertexts[i], stolen, 500) for i in (1, 2)]
    # Assert: not just the sum: each other client's individual update comes out
    assert all(np.abs(got - vectors[i]).max() < 1e-5 for got, i in zip(others, (1, 2), strict=True))


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="n >= 2"):
        encrypted_sum([np.zeros(3)])
    with pytest.raises(ValueError, match="same size"):
        encrypted_sum([np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match="client 1's vector holds nan"):
        encrypted_sum([np.zeros(3), np.array([0.0, np.nan, 1.0])])
    with pytest.raises(ValueError, match="client 0's entry 2"):
        encrypted_sum([np.array([0.0, 0.0, 3e5]), np.zeros(3)])  # 2^19 / 2 clients = 262144


@pytest.mark.parametrize(
    "params, message",
    [
        ({"coeff_mod_bit_sizes": (60, 60, 60, 60)}, "240 bits, above the 218 bits"),
        ({"poly_modulus_degree": 4096}, "200 bits, above the 109 bits"),
        ({"poly_modulus_degree": 5000}, "poly_modulus_degree"),
        ({"coeff_mod_bit_sizes": (60, 70)}, r"in \[20, 60\]"),
        ({"scale_bits": 60}, "scale_bits"),
    ],
)
def test_ckks_parameters_below_128_bit_security_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CKKSParameters(**params)
    assert CKKSParameters(poly_modulus_degree=16384, coeff_mod_bit_sizes=(60, 40, 40, 40, 40, 60)).slots == 8192

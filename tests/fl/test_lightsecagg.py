"""LightSecAgg: the server recovers exactly the sum of the clients whose masked model arrived, and nothing else."""

import itertools

import numpy as np
import pytest

import gradinv as gi
from gradinv.fl.aggregate import observe_aggregate
from gradinv.fl.lightsecagg import (
    Points,
    Q,
    apply_matrix,
    decode_aggregate_mask,
    encode_mask,
    from_field,
    lagrange_matrix,
    light_secure_sum,
    to_field,
    uniform,
)
from tests.helpers import rank_mod


@pytest.mark.parametrize(
    "privacy, needed, before, during",
    [(2, 3, (), ()), (1, 3, (4,), ()), (2, 3, (0,), (3,)), (0, 2, (1, 2, 3), ())],
)
def test_the_server_recovers_exactly_the_sum_of_the_uploads(privacy, needed, before, during) -> None:
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=3001) * 0.05 for _ in range(5)]
    total, view = light_secure_sum(
        vectors, privacy=privacy, needed=needed, drop_before_upload=before, drop_in_recovery=during
    )
    survivors = [i for i in range(5) if i not in before]
    # exact in the field: the quantised survivors' sum, nothing more or less
    exact = sum(to_field(vectors[i], 16).astype(np.int64) for i in survivors) % Q
    assert np.array_equal(to_field(total, 16).astype(np.int64), exact)
    assert np.abs(total - sum(vectors[i] for i in survivors)).max() <= len(survivors) * 2.0**-17
    assert view.survivors == survivors and set(view.masked_inputs) == set(survivors)
    assert set(view.aggregate_shares) == set(survivors) - set(during)


def test_lagrange_code_reconstructs_from_any_needed_evaluations() -> None:
    points = Points.make(n=6, needed=4)
    pieces = np.stack([uniform(50) for _ in range(4)])
    evaluations = apply_matrix(lagrange_matrix(points.alphas, points.betas), pieces)
    for chosen in itertools.combinations(range(6), 4):
        decoder = lagrange_matrix(points.betas, [points.alphas[j] for j in chosen])
        back = apply_matrix(decoder, evaluations[list(chosen)])
        assert np.array_equal(back, pieces)
    # and the aggregate decodes the sum of the masks
    masks = [uniform(60) for _ in range(3)]
    encoded = [encode_mask(m, 2, points) for m in masks]
    responses = {j: sum(e[j] for e in encoded) % np.uint64(Q) for j in (0, 2, 3, 5)}
    assert np.array_equal(decode_aggregate_mask(responses, 2, points), sum(masks) % np.uint64(Q))


def test_any_t_colluding_clients_learn_nothing_about_a_mask() -> None:
    # Theorem 1: the T colluders' shares are the noise pieces through an invertible T x T map plus a function of the
    # mask, so every mask is equally consistent with what they hold (the map from noise to their shares has rank T).
    n, needed, privacy = 6, 4, 2
    points = Points.make(n, needed)
    code = lagrange_matrix(points.alphas, points.betas)
    for colluders in itertools.combinations(range(n), privacy):
        assert rank_mod(code[list(colluders)][:, needed - privacy :], Q) == privacy
    # but T + 1 colluders outnumber the noise pieces: their shares pin down part of the mask
    for colluders in itertools.combinations(range(n), privacy + 1):
        assert rank_mod(code[list(colluders)][:, needed - privacy :], Q) == privacy < privacy + 1


def test_a_masked_model_is_uniform_noise() -> None:
    rng = np.random.default_rng(1)
    vectors = [rng.normal(size=20000) * 0.05 for _ in range(4)]
    _, view = light_secure_sum(vectors)
    masked = view.masked_inputs[0]
    assert masked.max() < Q and abs(masked.mean() / Q - 0.5) < 0.01
    assert abs(np.corrcoef(from_field(masked, 16), vectors[0])[0, 1]) < 0.05


def test_bad_settings_are_rejected() -> None:
    vectors = [np.zeros(10)] * 4
    with pytest.raises(ValueError, match="n >= 2"):
        light_secure_sum(vectors[:1])
    with pytest.raises(ValueError, match="privacy T < needed U"):
        light_secure_sum(vectors, privacy=3, needed=3)
    with pytest.raises(ValueError, match="needs U = 3"):
        light_secure_sum(vectors, needed=3, drop_before_upload=(0, 1))
    with pytest.raises(ValueError, match="needs U = 3"):
        light_secure_sum(vectors, needed=3, drop_in_recovery=(0, 1))
    with pytest.raises(ValueError, match=r"client 0's entry 0 is 100000, outside \[-8192"):
        light_secure_sum([np.full(3, 1e5)] * 4)  # (q/2) / 2^16 / 4 clients
    with pytest.raises(ValueError, match="client 2's vector holds nan at entry 1"):
        light_secure_sum([np.zeros(3), np.zeros(3), np.array([0.0, np.nan, 0.0])])
    with pytest.raises(ValueError, match="client 1's vector holds -inf"):
        light_secure_sum([np.zeros(3), np.array([-np.inf, 0.0, 0.0])])
    with pytest.raises(ValueError, match="unknown secure aggregation protocol"):
        images, labels = gi.data.load("digits", n=2, size=8, channels=1)
        observe_aggregate(gi.models.make("mlp", image_shape=(1, 8, 8)), [(images, labels)] * 2, protocol="magic")


def test_an_attack_on_a_lightsecagg_aggregate_sees_the_mean_update() -> None:
    # The aggregate equals the plain mean update to fixed-point precision, so attacks face the same union batch
    images, labels = gi.data.load("skimage", n=3, size=16, seed=0)
    mlp = gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(300,), seed=0)
    clients = [(images[i : i + 1], labels[i : i + 1]) for i in range(3)]
    agg = observe_aggregate(mlp, clients, protocol="lightsecagg", needed=2, privacy=1)
    union = gi.observe(mlp, images, labels)
    for name, value in union.update.items():
        assert (agg.update[name] - value).abs().max() < 1e-4
    assert agg.defenses[-1]["protocol"] == "lightsecagg" and agg.defenses[-1]["survivors"] == 3

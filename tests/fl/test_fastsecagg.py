"""FastSecAgg: FastShare is the DFT of zero-padded secrets and masks, its peeling decoder fills every missing-share
pattern within the guarantee, any T shares say nothing, and the server decodes exactly the sum of the dealt inputs."""

import itertools

import numpy as np
import pytest

import gradinv as gi
from gradinv.fl.aggregate import observe_aggregate
from gradinv.fl.fastsecagg import (
    FastShare,
    Q,
    fast_secure_sum,
    root_of_unity,
    to_field,
    uniform,
)
from tests.helpers import rank_mod


def _index(scheme: FastShare, u: int, v: int) -> int:
    """The share index in grid cell ``(u, v)`` (the Chinese remainder)."""
    return next(j for j in range(scheme.size) if scheme.cell(j) == (u, v))


def test_the_shares_are_the_length_n_dft_under_the_good_thomas_maps() -> None:
    # No padding, no masks: the shares must be exactly the N = 36 point DFT of the vector x_1d[a n2 + b n1] = x[a, b]
    scheme = FastShare(4, 9, 4, 9, 0)
    values = uniform((36, 1))
    shares = scheme.share(values)[:, 0]
    grid = np.zeros((4, 9), dtype=object)
    for (a, b), value in zip(scheme.positions, values[:, 0], strict=True):
        grid[a, b] = int(value)
    line = [0] * 36
    for a, b in itertools.product(range(4), range(9)):
        line[(a * 9 + b * 4) % 36] = grid[a, b]
    w = root_of_unity(36)
    dft = [sum(x * pow(w, i * j, Q) for i, x in enumerate(line)) % Q for j in range(36)]
    assert [int(s) for s in shares] == dft


def test_the_peeling_decoder_fills_every_pattern_within_the_guarantee() -> None:
    scheme = FastShare(3, 4, 2, 3, 1)  # distances 2 x 2: any 3 missing shares of 12
    assert scheme.guaranteed_drops == 3 and scheme.secrets_per_sharing == 5
    values = uniform((5, 7))
    shares = scheme.share(values)
    for missing in range(4):
        for gone in itertools.combinations(range(12), missing):
            back = scheme.reconstruct({j: shares[j] for j in range(12) if j not in gone})
            assert np.array_equal(back, values), gone
    # a 2 x 2 rectangle of the grid (d1 x d2 missing) is beyond peeling: refused, never a wrong answer
    rectangle = {_index(scheme, u, v) for u in (0, 1) for v in (1, 3)}
    with pytest.raises(ValueError, match="4 of 12 shares missing and the peeling decoder is stuck with 4 unknown"):
        scheme.reconstruct({j: shares[j] for j in range(12) if j not in rectangle})


def test_random_drops_far_beyond_the_guarantee_decode() -> None:
    # The paper's dropout model is a random subset: 100 clients (N = 104, guaranteed 11), 20% of them drop
    scheme = FastShare.design(100)
    assert (scheme.n1, scheme.n2, scheme.k1, scheme.k2) == (8, 13, 6, 10) and scheme.guaranteed_drops == 11
    values = uniform((scheme.secrets_per_sharing, 3))
    shares = scheme.share(values)
    rng = np.random.default_rng(0)
    for _ in range(10):
        arrived = rng.permutation(100)[:80]
        assert np.array_equal(scheme.reconstruct({int(j): shares[j] for j in arrived}), values)


def _mask_map(scheme: FastShare, masks: tuple[tuple[int, int], ...]) -> np.ndarray:
    """``E[j, (a, b)] = w1^(u a) w2^(v b)``: how the masks reach share ``j``."""
    w1, w2 = root_of_unity(scheme.n1), root_of_unity(scheme.n2)
    rows = []
    for j in range(scheme.size):
        u, v = scheme.cell(j)
        rows.append([pow(w1, u * a, Q) * pow(w2, v * b, Q) % Q for a, b in masks])
    return np.array(rows, dtype=object)


def test_any_t_colluding_clients_learn_nothing() -> None:
    # Every T shares see the masks through a rank-T map, so they are uniform whatever the secrets
    scheme = FastShare(3, 5, 3, 4, 3)
    assert len(scheme.masks) == 6
    code = _mask_map(scheme, scheme.masks)
    for colluders in itertools.combinations(range(15), 3):
        assert rank_mod(code[list(colluders)], Q) == 3, colluders
    # T masks in one row of the corner are not enough: three shares of one grid column see one mask value
    naive = _mask_map(scheme, ((0, 0), (0, 1), (0, 2)))
    column = [_index(scheme, u, 2) for u in range(3)]
    assert rank_mod(naive[column], Q) == 1
    # and the masks are drawn afresh: sharing the same secrets twice changes every share
    values = uniform((scheme.secrets_per_sharing, 4))
    assert (scheme.share(values) != scheme.share(values)).all()


@pytest.mark.parametrize("before, during", [((), ()), ((4,), ()), ((0,), (3, 7)), ((2, 5), (1,)), ((), (0, 6, 11))])
def test_the_server_decodes_exactly_the_sum_of_the_dealt_inputs(before, during) -> None:
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=1001) * 0.05 for _ in range(12)]
    total, view = fast_secure_sum(vectors, drop_before_upload=before, drop_in_recovery=during)
    survivors = [i for i in range(12) if i not in before]
    exact = sum(to_field(vectors[i], 16).astype(np.int64) for i in survivors) % Q
    assert np.array_equal(to_field(total, 16).astype(np.int64), exact)
    assert np.abs(total - sum(vectors[i] for i in survivors)).max() <= len(survivors) * 2.0**-17
    assert view.survivors == survivors and sorted(view.aggregate_shares) == sorted(set(survivors) - set(during))
    # the server holds only sums of shares, spread over the whole field
    first = view.aggregate_shares[view.responders[0]]
    assert first.size == 201 and 0.4 < first.mean() / Q < 0.6


def test_drops_beyond_what_the_decoder_can_fill_are_refused() -> None:
    vectors = [np.full(50, 0.01 * i) for i in range(12)]  # N = 12: a 3 x 4 grid, corner 2 x 3
    scheme = FastShare.design(12)
    rectangle = tuple(_index(scheme, u, v) for u in (0, 1) for v in (0, 1))
    with pytest.raises(ValueError, match="peeling decoder is stuck"):
        fast_secure_sum(vectors, drop_in_recovery=rectangle)
    with pytest.raises(ValueError, match="fewer than 2 reveals an input"):
        fast_secure_sum(vectors[:3], drop_before_upload=(0, 1))


def test_a_corrupted_share_is_refused() -> None:
    scheme = FastShare(3, 4, 2, 3, 1)
    shares = scheme.share(uniform((5, 2)))
    arrived = {j: shares[j].copy() for j in range(12)}
    arrived[5][1] = (arrived[5][1] + 1) % Q
    with pytest.raises(ValueError, match="not one codeword"):
        scheme.reconstruct(arrived)


def test_bad_settings_are_rejected() -> None:
    vectors = [np.zeros(10)] * 4
    with pytest.raises(ValueError, match="n >= 2"):
        fast_secure_sum(vectors[:1])
    with pytest.raises(ValueError, match="coprime"):
        FastShare(2, 4, 2, 3, 1)
    with pytest.raises(ValueError, match="no root of unity of order 11"):
        FastShare(1, 11, 1, 8, 1)
    with pytest.raises(ValueError, match="must fit the share grid"):
        FastShare(3, 4, 4, 3, 1)
    with pytest.raises(ValueError, match="mask triangle inside"):
        FastShare(3, 4, 2, 3, 3)
    with pytest.raises(ValueError, match="leaves no secret"):
        FastShare(1, 4, 1, 2, 2)
    with pytest.raises(ValueError, match="privacy must be a non-negative integer"):
        FastShare(1, 4, 1, 2, -1)
    with pytest.raises(ValueError, match="deals 4 shares for 5 clients"):
        fast_secure_sum([np.zeros(3)] * 5, scheme=FastShare(1, 4, 1, 3, 1))
    with pytest.raises(ValueError, match="share index 12 outside"):
        FastShare(3, 4, 2, 3, 1).reconstruct({12: np.zeros(2, dtype=np.uint64)})
    with pytest.raises(ValueError, match=r"client 0's entry 0 is 100000, outside \[-8190"):
        fast_secure_sum([np.full(3, 1e5)] * 4)  # (q/2) / 2^16 / 4 clients
    with pytest.raises(ValueError, match="client 2's vector holds nan at entry 1"):
        fast_secure_sum([np.zeros(3), np.zeros(3), np.array([0.0, np.nan, 0.0])])
    with pytest.raises(ValueError, match="dropped clients must lie in"):
        fast_secure_sum(vectors, drop_in_recovery=(7,))


def test_an_attack_on_a_fastsecagg_aggregate_sees_the_mean_update() -> None:
    images, labels = gi.data.load("skimage", n=3, size=16, seed=0)
    mlp = gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(300,), seed=0)
    clients = [(images[i : i + 1], labels[i : i + 1]) for i in range(3)]
    agg = observe_aggregate(mlp, clients, protocol="fastsecagg")
    union = gi.observe(mlp, images, labels)
    for name, value in union.update.items():
        assert (agg.update[name] - value).abs().max() < 1e-4
    assert agg.defenses[-1]["protocol"] == "fastsecagg" and agg.defenses[-1]["survivors"] == 3

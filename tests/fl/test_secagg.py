"""Bonawitz et al.'s secure aggregation: the server gets the exact sum of the survivors and nothing else, and an
optimisation attack on the aggregate falls to the level of guessing (an exact batch attack does not)."""

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

import gradinv as gi
from gradinv.fl.aggregate import observe_aggregate
from gradinv.fl.secagg import PRIME, from_fixed, prg, secure_sum, shamir_combine, shamir_split


@pytest.mark.parametrize("dropped", [(), (2,), (0, 4)])
def test_the_server_recovers_exactly_the_sum_of_the_survivors(dropped: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=5000) * 0.01 for _ in range(5)]
    total, view = secure_sum(vectors, threshold=3, drop_before_masking=dropped)
    plain = sum(v for i, v in enumerate(vectors) if i not in dropped)
    assert np.abs(total - plain).max() < 1e-8  # fixed point at 2^-32
    assert view.survivors == [i for i in range(5) if i not in dropped] and set(view.masked_inputs) == set(
        view.survivors
    )
    # a dropped client's key is revealed, a survivor's self-mask seed: never both for one client
    assert all({kind for kind, _ in view.revealed[i]} == {"key" if i in dropped else "seed"} for i in view.revealed)


def test_a_masked_input_reveals_nothing_about_the_vector() -> None:
    rng = np.random.default_rng(1)
    vectors = [rng.normal(size=20000) * 0.01 for _ in range(4)]
    _, view = secure_sum(vectors)
    masked = view.masked_inputs[0]
    # uniform over 2^64: every bit is a fair coin, and the decoded value is uncorrelated with the vector
    bits = np.unpackbits(masked.view(np.uint8)).mean()
    assert 0.49 < bits < 0.51
    assert abs(np.corrcoef(from_fixed(masked), vectors[0])[0, 1]) < 0.05


def test_shamir_needs_the_threshold() -> None:
    shares = shamir_split(123456789, 5, 3)
    assert shamir_combine(shares[:3]) == 123456789 == shamir_combine(shares[2:])
    assert shamir_combine(shares[:2]) != 123456789


def test_fewer_than_t_shares_are_consistent_with_any_secret() -> None:
    # Prepare: t - 1 = 2 shares of one secret, and a different secret
    shares = shamir_split(123456789, 5, 3)[:2]
    other = 987654321
    # Execute: the degree-2 polynomial through (0, other) and the two shares gives three more shares of `other`
    points = [(0, other), *shares]
    completed = [(x, shamir_combine([(xi - x, yi) for xi, yi in points])) for x in (3, 4, 5)]
    # Assert: the two shares are part of a valid 3-of-5 sharing of `other`: they say nothing about the secret
    assert shamir_combine([*shares, completed[0]]) == other
    assert shamir_combine(completed) == other and all(0 <= y < PRIME for _, y in completed)


def _pairwise(view, owner: int, key: X25519PrivateKey, size: int) -> np.ndarray:
    """The sum of the pairwise masks client ``owner`` added, rebuilt from its masking key."""
    total = np.zeros(size, dtype=np.uint64)
    for v, public in view.public_keys.items():
        if v != owner:
            mask = prg(key.exchange(X25519PublicKey.from_public_bytes(public)), size)
            total = total + mask if owner < v else total - mask
    return total


def _looks_uniform(word: np.ndarray, vector: np.ndarray) -> bool:
    bits = np.unpackbits(word.view(np.uint8)).mean()
    return 0.49 < bits < 0.51 and abs(np.corrcoef(from_fixed(word), vector)[0, 1]) < 0.05


def test_each_mask_alone_hides_an_input_and_both_shares_of_one_client_unmask_it() -> None:
    # Prepare: 4 clients; the answering clients (wrongly) also hand over client 1's masking-key shares
    rng = np.random.default_rng(3)
    vectors = [rng.normal(size=20000) * 0.01 for _ in range(4)]
    total, view = secure_sum(vectors, threshold=3, collude_on=(1,))
    y, size = view.masked_inputs[1], vectors[1].size
    seed = shamir_combine([share for kind, share in view.revealed[1] if kind == "seed"][:3])
    key_secret = shamir_combine([share for kind, share in view.revealed[1] if kind == "key"][:3])
    key = X25519PrivateKey.from_private_bytes(key_secret.to_bytes(32, "big"))
    self_mask, pairwise = prg(seed.to_bytes(32, "big"), size), _pairwise(view, 1, key, size)
    # Execute / Assert: removing only the self mask (what the protocol reveals for a survivor) leaves the pairwise
    # masks, which hide x_u; removing only the pairwise masks leaves the self mask, which hides it too
    assert _looks_uniform(y - self_mask, vectors[1])
    assert _looks_uniform(y - pairwise, vectors[1])
    # with both secrets of one client (the rule "never both" broken) the server reads its input exactly
    assert np.abs(from_fixed(y - self_mask - pairwise) - vectors[1]).max() < 1e-9
    assert np.abs(total - sum(vectors)).max() < 1e-8  # the sum itself is unaffected


@pytest.mark.parametrize("silent, ok", [((3, 4), True), ((2, 3, 4), False)])
def test_clients_may_drop_during_unmasking_down_to_the_threshold(silent: tuple[int, ...], ok: bool) -> None:
    # 6 clients, t = 3, client 5 drops before masking; `silent` send their masked input, then do not answer
    rng = np.random.default_rng(4)
    vectors = [rng.normal(size=300) for _ in range(6)]
    if not ok:
        with pytest.raises(ValueError, match="only 2 clients answer the unmasking round"):
            secure_sum(vectors, threshold=3, drop_before_masking=(5,), drop_in_unmasking=silent)
        return
    total, view = secure_sum(vectors, threshold=3, drop_before_masking=(5,), drop_in_unmasking=silent)
    # exactly t responders rebuild the silent clients' self masks and the dropped one's key: the sum is exact and
    # includes the silent clients' inputs
    assert view.responders == [0, 1, 2] and np.abs(total - sum(vectors[:5])).max() < 1e-8
    assert all(len(items) == 3 for items in view.revealed.values())  # the silent clients sent no share


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([np.nan, 1.0, 0.0]), "client 1's vector holds nan at entry 0"),
        (np.array([0.0, np.inf, 0.0]), "client 1's vector holds inf at entry 1"),
        (np.array([1.5e9, 0.0, 0.0]), r"client 1's entry 0 is 1.5e\+09, outside"),
    ],
)
def test_values_the_fixed_point_cannot_carry_are_refused_by_name(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        secure_sum([np.zeros(3), bad, np.ones(3)])


def test_bad_settings_are_rejected() -> None:
    vectors = [np.zeros(3)] * 4
    with pytest.raises(ValueError, match="n >= 2"):
        secure_sum(vectors[:1])
    with pytest.raises(ValueError, match="threshold"):
        secure_sum(vectors, threshold=5)
    with pytest.raises(ValueError, match="fewer than the threshold"):
        secure_sum(vectors, threshold=3, drop_before_masking=(0, 1))
    with pytest.raises(ValueError, match="same size"):
        secure_sum([np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match="different clients"):
        secure_sum(vectors, drop_before_masking=(1,), drop_in_unmasking=(1,))


def test_a_malicious_server_is_refused_with_the_reason() -> None:
    images, labels = gi.data.load("skimage", n=2, size=8, seed=0)
    model = gi.models.make("mlp", image_shape=(3, 8, 8), hidden=(8,), seed=0)
    clients = [(images[i : i + 1], labels[i : i + 1]) for i in range(2)]
    for protocol, word in (
        ("secagg", "consistency check"),
        ("lightsecagg", "semi-honest"),
        ("fastsecagg", "Kadhe"),
        ("homomorphic", "Aono"),
    ):
        with pytest.raises(ValueError, match=word):
            observe_aggregate(model, clients, threat=gi.ThreatModel(server="malicious"), protocol=protocol)


def test_an_attack_on_the_aggregate_of_four_clients_is_at_guessing_level() -> None:
    # Prepare: four clients holding one photograph each; the attacker targets one image (batch size guessed 1)
    images, labels = gi.data.load("skimage", n=4, size=16, seed=0)
    model = gi.models.make("lenet", image_shape=(3, 16, 16), seed=0)
    threat = gi.ThreatModel(knows_batch_size=False)
    attack = gi.attacks.make("dlg", steps=100, batch_size=1, line_search="strong_wolfe")
    # Execute
    alone = attack.reconstruct(gi.observe(model, images[:1], labels[:1], threat=threat))
    agg = observe_aggregate(model, [(images[i : i + 1], labels[i : i + 1]) for i in range(4)], threat=threat)
    rec = attack.reconstruct(agg)
    # Assert: one client alone leaks (> 40 dB); behind secure aggregation no client's image beats its own mean colour
    assert gi.metrics.psnr(alone.images, images[:1]).item() > 40
    for i in range(4):
        image = images[i : i + 1]
        guess = image.mean((2, 3), keepdim=True).expand_as(image)
        assert gi.metrics.psnr(rec.images, image).item() < gi.metrics.psnr(guess, image).item() + 1
    assert agg.defenses[-1]["name"] == "secure_aggregation" and agg.defenses[-1]["clients"] == 4


def test_secure_aggregation_hides_who_not_what_from_an_exact_batch_attack() -> None:
    # The aggregate of four single-image clients is a batch gradient of four: SPEAR reads images out of it
    images, labels = gi.data.load("skimage", n=4, size=16, seed=0)
    mlp = gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(500,), seed=0)
    agg = observe_aggregate(mlp, [(images[i : i + 1], labels[i : i + 1]) for i in range(4)])
    rec = gi.attacks.make("spear").reconstruct(agg)
    assert gi.metrics.score(rec, images, labels)["exact_fraction"] >= 0.5

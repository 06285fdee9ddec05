"""Bonawitz et al.'s secure aggregation: the server gets the exact sum of the survivors and nothing else, and an
optimisation attack on the aggregate falls to the level of guessing (an exact batch attack does not)."""

import numpy as np
import pytest

import gradinv as gi
from gradinv.fl.aggregate import observe_aggregate
from gradinv.fl.secagg import from_fixed, secure_sum, shamir_combine, shamir_split


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

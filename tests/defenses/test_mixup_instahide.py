"""MixUp and InstaHide hide images behind encodings: exact attacks recover the encodings, the mixed labels undo
MixUp, and only the magnitude survives InstaHide's sign flip."""

import pytest
import torch

import gradinv as gi
from gradinv.attacks.exact import classifier_targets
from gradinv.defenses.instahide import magnitude
from gradinv.defenses.mixup import mixing, unmix
from gradinv.fl.client import encode_batch, normalize

NORM = ((0.5,), (0.25,))


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Six MNIST digits of six distinct classes."""
    images, labels = gi.data.load("mnist_subset", indices=list(range(0, 5000, 50)), size=16, channels=1)
    pick = [int((labels == c).nonzero()[0]) for c in range(6)]
    return images[pick], labels[pick]


def _attack(images: torch.Tensor, labels: torch.Tensor, defense: gi.defenses.Defense, client_data=None):
    model = gi.models.make("mlp", image_shape=(1, 16, 16), hidden=(2000,), seed=0)
    threat = gi.ThreatModel(normalization=NORM)
    obs = gi.observe(model, images, labels, threat=threat, defenses=[defense], client_data=client_data)
    encodings, soft = encode_batch(images, labels, 10, [defense], seed=0, client_data=client_data)
    return obs, gi.attacks.make("spear").reconstruct(obs), encodings, soft


def test_mixup_leaves_encodings_and_its_labels_give_the_images_back(digits) -> None:
    # Prepare
    images, labels = digits
    obs, rec, encodings, soft = _attack(images, labels, gi.defenses.make("mixup", k=4, upper_bound=0.65, pool="batch"))
    # Execute: the attacker reads the mixed labels of its encodings off the classifier and inverts the mixing
    targets = classifier_targets(obs, normalize(rec.images, NORM)).float()
    originals, classes = unmix(rec.images, targets)
    decoded = gi.Reconstruction(originals.clamp(0, 1), classes, [], 0.0, {}, "spear+unmix", {}, {})
    # Assert: encodings exact, originals hidden by them (< 25 dB), then exact after unmixing, with their labels
    assert gi.metrics.score(rec, encodings, labels)["exact_fraction"] == 1.0
    assert gi.metrics.score(rec, images, labels)["psnr"] < 25
    unmixed = gi.metrics.score(decoded, images, labels)
    assert unmixed["psnr"] > 60 and unmixed["exact_fraction"] == 1.0 and unmixed["label_acc"] == 1.0
    assert soft.shape == (6, 10) and torch.allclose(soft.sum(1), torch.ones(6))
    assert obs.defenses == [{"name": "mixup", "k": 4, "upper_bound": 0.65, "lower_bound": 0.0, "pool": "batch"}]


def test_with_partners_from_the_training_set_the_batch_cannot_be_unmixed(digits) -> None:
    # Prepare: the client's training set is 100 digits (the batch's six among them), as Huang et al.'s code mixes
    images, labels = digits
    pool = gi.data.load("mnist_subset", indices=list(range(0, 5000, 50)), size=16, channels=1)
    defense = gi.defenses.make("mixup", k=4, pool="dataset")
    # Execute
    obs, rec, encodings, soft = _attack(images, labels, defense, client_data=pool)
    targets = classifier_targets(obs, normalize(rec.images, NORM)).float()
    # Assert: each encoding is batch image i plus three training-set images: SPEAR still reads the encodings
    # exactly, but their labels now name more classes than there are encodings, and the in-batch unmixing that
    # decoded the batch pool exactly (above) has nothing to invert
    assert gi.metrics.score(rec, encodings, labels)["exact_fraction"] == 1.0
    assert gi.metrics.score(rec, images, labels)["psnr"] < 25
    with pytest.raises(ValueError, match="needs 6 distinct classes"):
        unmix(rec.images, targets)
    assert int((soft.sum(0) > 0.01).sum()) > 6 and obs.defenses[0]["pool"] == "dataset"
    with pytest.raises(ValueError, match="client_data"):
        gi.observe(obs.model, images, labels, defenses=[defense])


def test_instahide_leaves_only_the_magnitude_of_the_mixture(digits) -> None:
    images, labels = digits
    obs, rec, encodings, _ = _attack(images, labels, gi.defenses.make("instahide", k=4, pool="batch"))
    mixed, _ = encode_batch(images, labels, 10, [gi.defenses.make("mixup", k=4, pool="batch")], seed=0)
    # the attack recovers InstaHide's encodings exactly, which are far from the images ...
    assert gi.metrics.score(rec, encodings, labels)["exact_fraction"] == 1.0
    assert gi.metrics.score(rec, images, labels)["psnr"] < 10
    # ... and equal, up to the per-entry sign flip, the MixUp of the same partners and coefficients
    assert torch.allclose(magnitude(encodings), (2 * mixed - 1).abs(), atol=1e-6)
    flips = ((2 * encodings - 1) * (2 * mixed - 1) < 0).float().mean()
    assert 0.4 < float(flips) < 0.6


def test_mixing_respects_its_bounds_and_rejects_bad_parameters() -> None:
    images, labels = gi.data.load("skimage", n=8, size=16, seed=0)
    encoded, soft = encode_batch(
        images, labels, 10, [gi.defenses.make("mixup", k=3, upper_bound=0.5, pool="batch")], seed=3
    )
    assert 0 <= float(encoded.min()) and float(encoded.max()) <= 1 and torch.allclose(soft.sum(1), torch.ones(8))
    partners, coefficients = mixing(8, 3, 0.5, 0.1, torch.Generator().manual_seed(0))
    assert float(coefficients.max()) <= 0.5 and float(coefficients.min()) >= 0.1
    assert torch.allclose(coefficients.sum(1), torch.ones(8)) and all(len(set(row.tolist())) == 3 for row in partners)
    for kwargs, message in (({"k": 1}, "k must be"), ({"upper_bound": 0.2}, "bounds"), ({"lower_bound": -1}, "bounds")):
        with pytest.raises(ValueError, match=message):
            gi.defenses.make("instahide", **kwargs, pool="batch")
    with pytest.raises(ValueError, match="at least 4 images"):
        gi.observe(
            gi.models.make("lenet", image_shape=(3, 16, 16)),
            images[:2],
            labels[:2],
            defenses=[gi.defenses.make("mixup", pool="batch")],
        )
    with pytest.raises(ValueError, match="distinct classes"):
        unmix(encoded, soft)  # eight images, fewer classes

"""Decoding MixUp and InstaHide from many encodings of the same images (Carlini et al. 2021; Huang et al. 2021's
upper bound: the attacker is given the mixing plan)."""

import pytest
import torch

import gradinv as gi
from gradinv.attacks.instahide_decode import best_global_sign, decode, mixtures, residual
from gradinv.fl.client import encode_batch


@pytest.fixture(scope="module")
def epochs() -> tuple[torch.Tensor, ...]:
    """16 MNIST digits encoded by InstaHide (k=4) in 10 epochs, with each epoch's plan and MixUp of the same plan."""
    images, labels = gi.data.load("mnist_subset", indices=list(range(0, 1600, 100)), size=16, channels=1)
    defense = gi.defenses.make("instahide", k=4, pool="batch")
    encodings, mixed, partners, coefficients = [], [], [], []
    for epoch in range(10):
        encoded, _ = encode_batch(images, labels, 10, [defense], seed=epoch)
        plan = defense.plan(16, generator=torch.Generator().manual_seed(epoch))
        encodings.append(encoded)
        mixed.append(mixtures(images, *plan))
        partners.append(plan[0])
        coefficients.append(plan[1])
    return images, torch.cat(encodings), torch.cat(mixed), torch.cat(partners), torch.cat(coefficients)


def test_instahide_encodings_decode_to_the_images(epochs) -> None:
    images, encodings, _, partners, coefficients = epochs
    # the encodings alone hide the digits: even the best-matched encoding is far from every image
    rows, cols = gi.metrics.match(encodings, images)
    assert float(gi.metrics.psnr(encodings[rows], images[cols]).max()) < 12
    decoded = best_global_sign(decode(encodings, partners, coefficients, 16), images)
    assert float(gi.metrics.psnr(decoded, images).min()) > 60


def test_adam_decoding_explains_the_encodings(epochs) -> None:
    # Carlini et al.'s gradient descent, as Huang et al. ran it: it fits the magnitudes but each pixel keeps its own
    # sign, so the images come back only roughly
    images, encodings, _, partners, coefficients = epochs
    decoded = decode(encodings, partners, coefficients, 16, method="adam", steps=300)
    target = 2 * encodings.double() - 1
    before = residual(target, torch.zeros_like(target), signed=True).pow(2).mean()
    after = residual(target, mixtures(2 * decoded.double() - 1, partners, coefficients), signed=True).pow(2).mean()
    assert after < 0.25 * before
    mean_image = images.mean(0, keepdim=True).expand_as(images)
    assert float(gi.metrics.psnr(best_global_sign(decoded, images), images).mean()) > 14
    assert float(gi.metrics.psnr(mean_image, images).mean()) < 16


def test_mixup_decodes_exactly_without_labels(epochs) -> None:
    images, _, mixed, partners, coefficients = epochs
    decoded = decode(mixed, partners, coefficients, 16, signed=False)
    assert float(gi.metrics.psnr(decoded, images).min()) > 60


def test_decoding_rejects_too_few_encodings_and_bad_input(epochs) -> None:
    images, encodings, _, partners, coefficients = epochs
    with pytest.raises(ValueError, match="more epochs"):
        decode(encodings[:16], partners[:16], coefficients[:16], 16)  # one epoch: 16 equations, 136 unknowns
    with pytest.raises(ValueError, match=r"\(M, k\)"):
        decode(encodings, partners[:5], coefficients, 16)
    with pytest.raises(ValueError, match="index the 8"):
        decode(encodings, partners, coefficients, 8)
    with pytest.raises(TypeError, match="integer"):
        decode(encodings, partners.float(), coefficients, 16)
    with pytest.raises(ValueError, match="method"):
        decode(encodings, partners, coefficients, 16, method="magic")

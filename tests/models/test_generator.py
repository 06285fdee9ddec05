"""The generator GIAS uses: the decoder, its VAE training, the shipped weights."""

import pytest
import torch

import gradinv as gi
from gradinv.models.generator import Decoder, load_generator, train_vae


def test_decoder_maps_latents_to_images_in_the_box() -> None:
    decoder = Decoder(latent=8, channels=3, size=12)
    with torch.no_grad():
        out = decoder(torch.randn(5, 8))
    assert out.shape == (5, 3, 12, 12) and decoder.latent_shape == (8,)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    with pytest.raises(ValueError, match="multiple of 4"):
        Decoder(size=10)


def test_vae_training_lowers_its_loss_on_real_digits() -> None:
    # Prepare
    images, _ = gi.data.load("mnist_subset", size=8, channels=1, indices=range(256))
    losses: list[float] = []
    # Execute
    decoder = train_vae(images, latent=4, epochs=4, progress=lambda epoch, total, loss: losses.append(loss))
    # Assert: the loss (per image: Bernoulli negative log-likelihood + KL) falls; the decoder makes 8x8 images
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0]
    assert decoder(torch.zeros(1, 4)).shape == (1, 1, 8, 8) and not decoder.training


def test_shipped_generator_loads_frozen_and_draws_digit_like_images() -> None:
    decoder = load_generator("digits16")
    samples = decoder(torch.randn((64, 16), generator=torch.Generator().manual_seed(0)))
    assert samples.shape == (64, 1, 16, 16) and not any(p.requires_grad for p in decoder.parameters())
    # MNIST digits: a dark background (mostly near 0) and a bright stroke
    assert float((samples < 0.1).float().mean()) > 0.5 and float(samples.amax(dim=(1, 2, 3)).mean()) > 0.7
    with pytest.raises(ValueError, match="unknown generator"):
        load_generator("faces")

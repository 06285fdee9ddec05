"""GIAS (Jeon et al., NeurIPS 2021): the latent search finds an image in the generator's range; the parameter
search goes beyond it on a real digit the generator never saw."""

import pytest
import torch
from torch import nn

import gradinv as gi
from gradinv.models.generator import load_generator


def _observe(images: torch.Tensor, labels: torch.Tensor) -> gi.Observation:
    model = gi.models.make("lenet", image_shape=(1, 16, 16), seed=0)
    return gi.observe(model, images, labels, threat=gi.ThreatModel(knows_labels=True))


def test_latent_search_recovers_an_image_the_generator_can_make() -> None:
    # Prepare: the client's image is G(z*) for an unknown latent z*
    z = torch.randn((1, 16), generator=torch.Generator().manual_seed(3))
    image = load_generator("digits16")(z).detach()
    obs = _observe(image, torch.tensor([3]))
    # Execute
    rec = gi.attacks.make("gias", steps=150, parameter_fraction=0.0, restarts=2).reconstruct(obs)
    # Assert
    assert float(gi.metrics.psnr(rec.images, image)) > 30.0
    losses = rec.info["restart_losses"]
    assert len(losses) == 2 and losses[rec.info["chosen_restart"]] == min(losses) and losses[0] != losses[1]
    assert rec.info["generator"] == "digits16"


def test_parameter_search_goes_beyond_the_generators_range_on_a_held_out_digit() -> None:
    # Prepare: a digit the shipped generator never saw (it was trained on digits 0-3,999)
    images, labels = gi.data.load("mnist_subset", size=16, channels=1, indices=[4000])
    obs = _observe(images, labels)
    # Execute: the same latent search (100 steps), then 100 steps of parameter search or nothing
    latent = gi.attacks.make("gias", steps=100, parameter_fraction=0.0, restarts=1).reconstruct(obs)
    full = gi.attacks.make("gias", steps=200, parameter_fraction=0.5, restarts=1).reconstruct(obs)
    # Assert: the parameter search lowers the gradient distance and gains > 5 dB
    assert full.trace[-1] < latent.trace[-1]
    assert float(gi.metrics.psnr(full.images, images)) > float(gi.metrics.psnr(latent.images, images)) + 5.0


def test_gias_checks_its_generator() -> None:
    images, labels = gi.data.load("skimage", size=16, indices=[0])
    obs = gi.observe(gi.models.make("lenet", image_shape=(3, 16, 16)), images, labels)
    with pytest.raises(ValueError, match="makes"):
        gi.attacks.make("gias", steps=2).reconstruct(obs)  # the digit generator makes 1x16x16 images
    bare = nn.Sequential(nn.Linear(8, 768), nn.Sigmoid(), nn.Unflatten(1, (3, 16, 16)))
    with pytest.raises(ValueError, match="latent_shape"):
        gi.attacks.make("gias", generator=bare)
    rec = gi.attacks.make("gias", generator=bare, latent_shape=(8,), steps=4, restarts=1).reconstruct(obs)
    assert rec.images.shape == (1, 3, 16, 16) and rec.config["generator"] == "custom Sequential"
    for kwargs, match in [({"steps": 1}, "steps"), ({"parameter_fraction": 1.0}, "parameter_fraction")]:
        with pytest.raises(ValueError, match=match):
            gi.attacks.make("gias", **kwargs)

"""The bias trick is exact on a fully connected first layer, and says which condition fails otherwise."""

import pytest
import torch

import gradinv as gi

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.mark.parametrize("seed", range(4))
def test_bias_trick_is_exact_for_one_image(seed: int) -> None:
    # Prepare
    images, labels = gi.data.load("skimage", n=1, size=32, seed=seed)
    model = gi.models.make("mlp", hidden=(256,), seed=seed)
    obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM))
    # Execute
    rec = gi.attacks.make("bias_trick").reconstruct(obs)
    # Assert: exact to 1e-4, label exact, certified by its own rows' gradient, residual ~0
    assert (rec.images - images).abs().max() < 1e-4
    assert torch.equal(rec.labels, labels) and rec.certified == [True]
    assert rec.residual["rel_l2"] < 1e-5 and rec.info["consistency_error"][0] < 1e-5


def test_bias_trick_on_a_batch_reports_which_images_are_exact() -> None:
    # Prepare: 8 photographs through a ReLU MLP; only rows driven by a single sample are exact
    images, labels = gi.data.load("skimage", n=8, size=32, seed=0)
    model = gi.models.make("mlp", hidden=(1000,), seed=0)
    obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM))
    # Execute
    rec = gi.attacks.make("bias_trick").reconstruct(obs)
    scores = gi.metrics.score(rec, images, labels)
    # Assert: the 4 images read off two rows or more are certified; 3 more sit alone in one row each (consistent
    # with their own label, too weak to certify); the eighth, a mixture, comes back without a label
    by_match = {e["match"]: e for e in scores["per_image"]}
    assert rec.certified == [True] * 4 + [False] * 4 and rec.info["rows_used"][3:] == [2, 1, 1, 1, 1]
    assert all(
        by_match[i]["max_abs_error"] < 1e-4 and by_match[i]["label_pred"] == by_match[i]["label"] for i in range(7)
    )
    assert rec.labels[7] == -1 and by_match[7]["max_abs_error"] > 0.1 and rec.label_counts.sum() == 8


def test_bias_trick_recovers_a_small_batch_whole_with_labels() -> None:
    images, labels = gi.data.load("skimage", n=3, size=32, seed=2)
    model = gi.models.make("mlp", hidden=(1000,), seed=0)
    obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM))
    rec = gi.attacks.make("bias_trick").reconstruct(obs)
    scores = gi.metrics.score(rec, images, labels)
    assert scores["exact_fraction"] == 1.0 and scores["label_acc"] == 1.0 and all(rec.certified)
    assert rec.info["label_source"] == "one-sample consistency" and rec.residual["rel_l2"] < 1e-5


def test_bias_trick_certifies_a_whole_batch_through_train_mode_batchnorm() -> None:
    # a BatchNorm after the first layer couples the samples: the whole batch and its residual certify it
    images, labels = gi.data.load("skimage", n=2, size=16, seed=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(768, 500),
        torch.nn.ReLU(),
        torch.nn.BatchNorm1d(500),
        torch.nn.Linear(500, 10),
    )
    rec = gi.attacks.make("bias_trick").reconstruct(gi.observe(model, images, labels))
    scores = gi.metrics.score(rec, images, labels)
    assert scores["exact_fraction"] == 1.0 and scores["label_acc"] == 1.0 and rec.certified == [True, True]
    assert rec.certificate.startswith("whole batch")


@pytest.mark.parametrize(
    "model, message",
    [
        (gi.models.make("lenet", seed=0), "not nn.Linear"),
        (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10, bias=False)), "no bias"),
    ],
)
def test_bias_trick_names_the_failing_condition(model, message: str) -> None:
    images, labels = gi.data.load("skimage", n=1, size=32, seed=0)
    obs = gi.observe(model, images, labels)
    with pytest.raises(ValueError, match=message):
        gi.attacks.make("bias_trick").reconstruct(obs)


def test_bias_trick_refuses_multi_step_updates() -> None:
    images, labels = gi.data.load("skimage", n=1, size=32, seed=0)
    obs = gi.observe(
        gi.models.make("mlp", hidden=(32,), seed=0),
        images,
        labels,
        threat=gi.ThreatModel(update="fedavg", local_steps=3),
    )
    with pytest.raises(ValueError, match="single local step"):
        gi.attacks.make("bias_trick").reconstruct(obs)

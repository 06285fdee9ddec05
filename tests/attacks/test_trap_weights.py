"""Curious Abandon Honesty: trap weights make a third or more of a batch of 32 leak exactly."""

import pytest
import torch

import gradinv as gi
from gradinv.attacks.trap_weights import trap_rows

NORM = ((0.5,), (0.25,))


def _run(n: int, hidden: int):
    images, labels = gi.data.load("mnist_subset", n=n, size=28, channels=1, seed=0)
    public, _ = gi.data.load("mnist_subset", n=200, size=28, channels=1, seed=99)  # the server's own digits
    attack = gi.attacks.make("trap_weights").fit(public, n)
    threat = gi.ThreatModel(server="malicious", normalization=NORM)
    model = attack.prepare_model(gi.models.make("mlp", image_shape=(1, 28, 28), hidden=(hidden,), seed=0), threat)
    rec = attack.reconstruct(gi.observe(model, images, labels, threat=threat))
    return attack, rec, gi.metrics.score(rec, images, labels)


def test_trap_weights_recover_a_third_of_a_batch_of_32_exactly() -> None:
    attack, rec, scores = _run(32, 1000)
    assert scores["exact_fraction"] >= 1 / 3, scores["exact_fraction"]
    # certified images are exact (no same-label average slips through), with their own labels
    assert scores["certified_not_exact"] == 0 and sum(rec.certified) >= 5
    by_match = {e["match"]: e for e in scores["per_image"]}
    assert all(by_match[i]["label_pred"] == by_match[i]["label"] for i, ok in enumerate(rec.certified) if ok)
    assert 0 < attack.scale < 1


def test_fit_tunes_the_firing_rate_to_one_sample_per_batch() -> None:
    # Prepare
    public, _ = gi.data.load("mnist_subset", n=200, size=28, channels=1, seed=99)
    held_out, _ = gi.data.load("mnist_subset", n=200, size=28, channels=1, seed=7)
    attack = gi.attacks.make("trap_weights", seed=3).fit(public, 20)
    # Execute: the firing rate of fresh trap rows on other digits
    weights = trap_rows(512, 784, attack.scale, torch.Generator().manual_seed(11))
    rate = float((held_out.flatten(1) @ weights.T > 0).double().mean())
    # Assert
    assert 0.02 < rate < 0.1  # about 1 / 20


def test_trap_weights_need_a_malicious_server_and_a_linear_first_layer() -> None:
    attack = gi.attacks.make("trap_weights")
    with pytest.raises(ValueError, match="malicious"):
        attack.prepare_model(gi.models.make("mlp"), gi.ThreatModel())
    with pytest.raises(ValueError, match="not nn.Linear"):
        attack.prepare_model(gi.models.make("lenet"), gi.ThreatModel(server="malicious"))

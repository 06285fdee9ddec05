"""Certificates: an image is certified only where the attack's own uniqueness condition proves it is the data."""

import pytest
import torch
from torch import nn

import gradinv as gi
from gradinv.attacks.base import Attack, Result
from gradinv.attacks.certify import Shares, certify_samples, coupling, obstacle
from gradinv.fl.client import normalize

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _same_label_pair() -> tuple[gi.Observation, torch.Tensor, torch.Tensor]:
    """Two photographs of one class through a ReLU MLP whose classifier barely depends on its input: both samples
    get the same output gradient, so every row they share gives exactly their mean, in perfect agreement (the old
    "two agreeing rows" rule called such a group exact)."""
    images, _ = gi.data.load("skimage", n=2, size=16, seed=0)
    labels = torch.tensor([3, 3])
    model = gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(256,), seed=0)
    with torch.no_grad():
        model.net[-1].weight.mul_(1e-6)
    obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM))
    return obs, images, labels


def test_one_sample_consistency_rejects_a_same_label_mixture_and_accepts_each_sample() -> None:
    # Prepare: the rows each sample drives alone, and the rows both drive, with their agreeing mixture
    obs, images, labels = _same_label_pair()
    inputs = normalize(images, NORM)
    z = inputs.flatten(1) @ obs.model.net[1].weight.T + obs.model.net[1].bias
    active = z > 0
    alone = [(active[0] & ~active[1]).nonzero().flatten(), (active[1] & ~active[0]).nonzero().flatten()]
    both = (active[0] & active[1]).nonzero().flatten()
    weight, bias = obs.update["net.1.weight"], obs.update["net.1.bias"]
    mixture = (weight[both] / bias[both, None]).double()
    assert len(both) > 20 and float((mixture - mixture[0]).norm(dim=1).max() / mixture[0].norm()) < 1e-4
    candidates = torch.stack([inputs[0], inputs[1], mixture[0].float().reshape(3, 16, 16)])
    # Execute
    certified, found, errors, _ = certify_samples(
        obs, "net.1", candidates, [bias[alone[0]], bias[alone[1]], bias[both]], [alone[0], alone[1], both]
    )
    # Assert: each sample explains its own rows with its own label; the mixture explains its rows at half the scale
    assert certified == [True, True, False] and found[:2] == [3, 3] and found[2] == -1
    assert max(errors[:2]) < 1e-5 and errors[2] > 0.3


def test_bias_trick_never_certifies_a_mixture_and_labels_each_image() -> None:
    # Prepare / Execute: batches of real images through ReLU MLPs, where some rows mix several samples
    for data, n, seed in (("lfw", 16, 0), ("mnist_subset", 32, 4), ("lfw", 16, 3)):
        images, labels = gi.data.load(data, n=n, size=28 if data == "mnist_subset" else 32, seed=seed)
        model = gi.models.make("mlp", image_shape=tuple(images.shape[1:]), hidden=(1000,), seed=seed)
        norm = ((0.5,) * images.shape[1], (0.25,) * images.shape[1])
        obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=norm))
        rec = gi.attacks.make("bias_trick").reconstruct(obs)
        scores = gi.metrics.score(rec, images, labels)
        by_match = {e["match"]: e for e in scores["per_image"]}
        # Assert: certified images are exact and carry their own label; mixtures are returned uncertified
        assert scores["certified_not_exact"] == 0 and sum(rec.certified) >= 2, (data, seed, rec.certified)
        for i, ok in enumerate(rec.certified):
            if ok:
                assert by_match[i]["max_abs_error"] < 1e-4 and by_match[i]["label_pred"] == by_match[i]["label"]
        assert scores["exact_fraction"] < 1.0 and rec.label_counts is not None  # part of the batch is mixed


def test_coupled_models_withheld_batch_sizes_and_defenses_block_one_sample_certificates() -> None:
    images, labels = gi.data.load("skimage", n=2, size=16, seed=0)
    mlp = gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(64,), seed=0)
    bn = nn.Sequential(nn.Flatten(), nn.Linear(768, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    assert coupling(bn, training=True) is not None and coupling(bn, training=False) is None
    assert coupling(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)), training=True) is not None
    cases = {
        "BatchNorm": gi.observe(bn, images, labels),
        "batch size": gi.observe(mlp, images, labels, threat=gi.ThreatModel(knows_batch_size=False)),
        "defenses": gi.observe(mlp, images, labels, defenses=[gi.defenses.make("noise", std=1e-9)]),
        "local steps": gi.observe(mlp, images, labels, threat=gi.ThreatModel(update="fedavg", local_steps=2)),
    }
    for message, observation in cases.items():
        assert message in str(obstacle(observation))
        with pytest.raises(ValueError, match=message):
            Shares(observation, "net.1", normalize(images, None))
    assert obstacle(gi.observe(mlp, images, labels)) is None


def test_one_local_step_is_certified_at_its_own_scale() -> None:
    # the FedAvg update of one step is local_lr times the gradient of the first mini-batch
    images, labels = gi.data.load("skimage", n=3, size=16, seed=2)
    model = gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(1000,), seed=0)
    threat = gi.ThreatModel(update="fedavg", local_steps=1, local_lr=0.5, normalization=NORM)
    rec = gi.attacks.make("bias_trick").reconstruct(gi.observe(model, images, labels, threat=threat))
    scores = gi.metrics.score(rec, images, labels)
    assert all(rec.certified) and scores["exact_fraction"] == 1.0 and scores["label_acc"] == 1.0


class _Claims(Attack):
    """An exact attack that returns the true batch with wrong labels and claims it certified."""

    name = "claims"
    exact = True

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, whole: bool) -> None:
        self._images, self._labels, self._whole = images, labels, whole

    def run(self, observation, callback):  # type: ignore[no-untyped-def]
        n = self._images.shape[0]
        return Result(self._images, self._labels, [], {}, [True] * n, "claimed", whole_batch=self._whole)


@pytest.mark.parametrize("whole", [True, False])
def test_a_certificate_the_batch_residual_contradicts_is_withdrawn(whole: bool) -> None:
    images, labels = gi.data.load("skimage", n=2, size=16, seed=0)
    obs = gi.observe(gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(32,), seed=0), images, labels)
    right = _Claims(images, labels, whole).reconstruct(obs)
    wrong = _Claims(images, (labels + 1) % 10, whole).reconstruct(obs)
    assert right.certified == [True, True] and right.residual["rel_l2"] < 1e-5
    assert wrong.certified == [False, False] and "withdrawn" in wrong.certificate


def test_optimisation_attacks_never_certify(lenet_cat) -> None:  # type: ignore[no-untyped-def]
    rec = lenet_cat.idlg
    assert rec.residual["rel_l2"] < 1e-3 and rec.certified == [False] and "never certified" in rec.certificate

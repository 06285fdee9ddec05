"""A train-mode client that shares its BatchNorm buffers shares its batch's statistics: read back exactly."""

import pytest
import torch

import gradinv as gi
from gradinv.attacks.base import attacker_model
from gradinv.attacks.objectives import bn_prior_target, shared_statistics, statistics_from_buffers


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return gi.data.load("skimage", indices=[0, 1, 2, 3], size=16)  # four photographs


@pytest.mark.parametrize(
    "name, options, momentum",
    [("convnet", {"width": 8}, 0.1), ("resnet20", {"width": 8}, 0.1), ("convnet", {"width": 8}, None)],
)
def test_the_buffers_carry_the_batch_statistics_exactly(name, options, momentum) -> None:
    # Prepare: the client trains in train mode and shares its buffers; the batch's statistics, granted, to compare
    images, labels = _batch()
    model = gi.models.make(name, image_shape=(3, 16, 16), seed=0, **options)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = momentum  # None: PyTorch's cumulative average, 1 / num_batches_tracked
    threat = gi.ThreatModel(bn_mode="train", knows_bn_stats=True, shares_buffers=True)
    observation = gi.observe(model, images, labels, threat=threat)
    # Execute
    stats = statistics_from_buffers(observation.model, observation.buffers, observation.image_shape, 4)
    # Assert: every layer's mean and biased variance, to float rounding
    assert set(stats) == set(observation.bn_stats) and len(stats) >= 8
    for layer, (mean, var) in observation.bn_stats.items():
        assert torch.allclose(stats[layer][0], mean, atol=2e-5), layer
        assert torch.allclose(stats[layer][1], var, atol=2e-5, rtol=1e-4), layer


def test_attacks_use_them_only_where_they_say_something() -> None:
    images, labels = _batch()
    model = gi.models.make("convnet", width=8, image_shape=(3, 16, 16), seed=0)
    granted = gi.observe(model, images, labels, threat=gi.ThreatModel(bn_mode="train", knows_bn_stats=True))
    shared = gi.observe(model, images, labels, threat=gi.ThreatModel(bn_mode="train", shares_buffers=True))
    # train mode, one gradient: the prior's target is the batch's own statistics, read off the buffers
    stats, source = bn_prior_target(shared, attacker_model(shared), 4)
    assert source == "client buffers"
    for layer, (mean, var) in granted.bn_stats.items():
        assert torch.allclose(stats[layer][0], mean, atol=2e-5) and torch.allclose(stats[layer][1], var, atol=2e-5)
    assert bn_prior_target(granted, attacker_model(granted), 4)[1] == "client batch"
    rec = gi.attacks.make("inverting_gradients", steps=2, bn_reg=0.01).reconstruct(shared)
    assert rec.info["bn_target"] == "client buffers"
    rec = gi.attacks.make("gradinversion", steps=2, seeds=1, bn_reg=0.01).reconstruct(shared)
    assert rec.info["bn_target"] == "client buffers"
    # eval mode leaves the buffers as broadcast, and FedAvg's several passes mix its batches: nothing to read
    for threat in (
        gi.ThreatModel(bn_mode="eval", shares_buffers=True),
        gi.ThreatModel(bn_mode="train", shares_buffers=True, update="fedavg", local_steps=2),
    ):
        observation = gi.observe(model, images, labels, threat=threat)
        assert shared_statistics(observation, attacker_model(observation), 4) is None
        assert bn_prior_target(observation, attacker_model(observation), 4)[1] == "running statistics"
    evaluated = gi.observe(model, images, labels, threat=gi.ThreatModel(bn_mode="eval", shares_buffers=True))
    assert all(torch.equal(evaluated.buffers[k], v) for k, v in model.state_dict().items() if k in evaluated.buffers)


def test_the_observation_carries_buffers_exactly_when_shared(tmp_path) -> None:
    images, labels = _batch()
    model = gi.models.make("convnet", width=8, image_shape=(3, 16, 16), seed=0)
    shared = gi.observe(model, images, labels, threat=gi.ThreatModel(bn_mode="train", shares_buffers=True))
    kept = gi.observe(model, images, labels, threat=gi.ThreatModel(bn_mode="train"))
    assert kept.buffers is None and set(shared.buffers) == {k for k, _ in model.named_buffers()}
    shared.save(tmp_path / "obs")
    again = gi.Observation.load(tmp_path / "obs")
    assert all(torch.equal(again.buffers[k], v) for k, v in shared.buffers.items())
    with pytest.raises(ValueError, match="buffers must be given exactly when"):
        gi.Observation(**{**vars(kept), "buffers": shared.buffers})
    with pytest.raises(ValueError, match="match the model's named buffers"):
        gi.Observation(**{**vars(shared), "buffers": {"x": torch.zeros(1)}})

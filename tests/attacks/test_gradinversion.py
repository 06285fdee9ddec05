"""GradInversion (Yin et al., CVPR 2021): its registration, consensus, schedule, objective, and the attack on
real photographs through a BatchNorm ConvNet."""

import math

import pytest
import torch

import gradinv as gi
from gradinv.attacks.base import attacker_model, target_update
from gradinv.attacks.gradinversion import (
    GradInversion,
    consensus,
    learning_rate,
    register,
    shifted_windows,
)
from gradinv.attacks.objectives import BatchNormInputs, batchnorm_matching, total_variation
from gradinv.fl.client import normalize


def _photo(index: int = 0, size: int = 32) -> torch.Tensor:
    return gi.data.load("skimage", indices=[index], size=size)[0][0]


def test_shifted_windows_follow_their_offsets() -> None:
    # Prepare
    image = _photo(1, 16)[None]
    # Execute
    windows = shifted_windows(image, 2)
    # Assert: window (dy, dx) = (1, -2) is k = (1 + 2) * 5 + (-2 + 2); out[i, j] = image[i + 1, j - 2] inside
    assert windows.shape == (25, 1, 3, 16, 16)
    assert torch.equal(windows[12], image)
    assert torch.equal(windows[15][..., :15, 2:], image[..., 1:, :14])


def test_register_recovers_each_candidates_shift_and_mirror() -> None:
    # Prepare: 24x24 crops of one 32x32 photograph at other offsets, one of them mirrored
    photo = _photo(0)
    reference = photo[:, 4:28, 4:28]
    offsets = [(2, -3), (-1, 4), (3, 3)]
    candidates = torch.stack([photo[:, 4 + a : 28 + a, 4 + b : 28 + b] for a, b in offsets])
    candidates[1] = candidates[1].flip(-1)
    # Execute
    registered, shifts, flipped, correlation = register(candidates, reference, 4)
    # Assert: crop (a, b) holds reference[i + a, j + b], so the registration shifts it back by (-a, -b); the mirrored
    # one is found mirrored; away from the replicated border the registered crops are the reference itself
    assert shifts.tolist() == [[-a, -b] for a, b in offsets]
    assert flipped.tolist() == [False, True, False]
    assert all(0.9 < c <= 1.0 + 1e-6 for c in correlation.tolist())
    for m in range(3):
        assert torch.allclose(registered[m][:, 4:20, 4:20], reference[:, 4:20, 4:20], atol=1e-6)


def test_register_rejects_bad_shapes_and_shifts() -> None:
    with pytest.raises(ValueError, match=r"\(M, C, H, W\)"):
        register(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), 1)
    with pytest.raises(ValueError, match="max_shift"):
        register(torch.zeros(1, 3, 8, 8), torch.zeros(3, 8, 8), 8)


def test_consensus_of_misaligned_seeds_is_the_image_where_the_plain_mean_is_blurred() -> None:
    # Prepare: four "seeds" of a batch of two photographs, each seed shifted or mirrored differently
    photos = torch.stack([_photo(0), _photo(1)])
    truth = photos[:, :, 4:28, 4:28]
    offsets, mirrors = [(0, 0), (2, -2), (-3, 1), (1, 3)], [False, True, False, True]
    seeds = torch.stack(
        [
            torch.stack([p[:, 4 + a : 28 + a, 4 + b : 28 + b] for p in photos]).flip(-1)
            if mirror
            else torch.stack([p[:, 4 + a : 28 + a, 4 + b : 28 + b] for p in photos])
            for (a, b), mirror in zip(offsets, mirrors, strict=True)
        ]
    )
    # Execute
    mean, registered = consensus(seeds, max_shift=4)
    # Assert: the registered seeds coincide (away from the replicated border), so their mean is the photograph in
    # one common frame (registered back onto the truth, equal to it); the plain mean is a blur far from it
    inner = (slice(None), slice(None), slice(4, 20), slice(4, 20))
    assert registered.shape == seeds.shape
    for g in range(1, 4):
        assert torch.allclose(registered[g][inner], registered[0][inner], atol=1e-6)
    aligned = register(mean, truth, 4)[0]
    centre = (slice(None), slice(None), slice(8, 16), slice(8, 16))
    assert torch.allclose(aligned[centre], truth[centre], atol=1e-5)
    assert float(gi.metrics.psnr(seeds.mean(0)[inner], truth[inner]).max()) < 25.0


def test_learning_rate_warms_up_then_follows_the_cosine() -> None:
    assert learning_rate(0, 1000, 0.1, 50) == pytest.approx(0.1 / 50)
    assert learning_rate(49, 1000, 0.1, 50) == pytest.approx(0.1)
    assert learning_rate(50, 1000, 0.1, 50) == pytest.approx(0.1)
    assert learning_rate(525, 1000, 0.1, 50) == pytest.approx(0.05)
    assert learning_rate(999, 1000, 0.1, 50) == pytest.approx(0.05 * (1 + math.cos(math.pi * 949 / 950)))


def test_batchnorm_prior_weights_the_first_layer() -> None:
    # Prepare: two layers, each off by a known mean and variance
    target = {"a": (torch.zeros(2), torch.ones(2)), "b": (torch.zeros(3), torch.ones(3))}
    trial = {"a": (torch.tensor([3.0, 4.0]), torch.ones(2)), "b": (torch.zeros(3), torch.tensor([1.0, 1.0, 3.0]))}
    # Execute / Assert: 10 * (5 + 0) + (0 + 2)
    assert float(batchnorm_matching(trial, target, 10.0)) == pytest.approx(52.0)
    with pytest.raises(ValueError, match="BatchNorm"):
        batchnorm_matching({}, target, 10.0)


def _observation(n: int = 2, size: int = 16) -> tuple[gi.Observation, torch.Tensor, torch.Tensor]:
    images, _ = gi.data.load("skimage", indices=list(range(n)), size=size)
    labels = torch.arange(n)
    model = gi.models.make("convnet", width=4, image_shape=(3, size, size), seed=0)
    threat = gi.ThreatModel(knows_bn_stats=True, bn_mode="train")
    return gi.observe(model, images, labels, threat=threat), images, labels


def test_objective_is_the_papers_sum_and_vanishes_on_the_truth() -> None:
    # Prepare: the client's own batch, its labels, its BatchNorm statistics and the observed gradient
    obs, images, labels = _observation()
    attack = GradInversion(group=0.5, l2=1e-3, tv=1e-2)
    model = attacker_model(obs)
    x = normalize(images, obs.threat.normalization)
    target = target_update(obs, model)
    delta = torch.full_like(x, 0.01)
    # Execute
    at_truth = attack._objective(model, obs.threat, x, labels, target, obs.bn_stats, None)
    anchored = attack._objective(model, obs.threat, x, labels, target, obs.bn_stats, x + delta)
    elsewhere = attack._objective(model, obs.threat, x + delta, labels, target, obs.bn_stats, None)
    # Assert: at the truth the gradient and BatchNorm terms are zero, leaving the image priors; the group term is
    # alpha_group ||x - E||_2; a wrong image pays for its gradient distance
    priors = 1e-2 * total_variation(x) + 1e-3 * torch.linalg.vector_norm(x)
    assert float(at_truth.detach()) == pytest.approx(float(priors), rel=1e-4)
    assert float((anchored - at_truth).detach()) == pytest.approx(
        0.5 * float(torch.linalg.vector_norm(delta)), rel=1e-4
    )
    # elsewhere: alpha_G / 2 times the squared distance of the gradients, plus alpha_BN R_BN, plus the priors
    y = (x + delta).requires_grad_(True)
    with BatchNormInputs(model) as recorder:
        loss = torch.nn.functional.cross_entropy(model(y), labels)
    gradient = torch.autograd.grad(loss, list(model.parameters()))
    distance = sum(float((a - b).pow(2).sum()) for a, b in zip(gradient, target, strict=True))
    bn = sum(
        (10.0 if i == 0 else 1.0)
        * float((m - obs.bn_stats[k][0]).norm().detach() + (v - obs.bn_stats[k][1]).norm().detach())
        for i, (k, (m, v)) in enumerate(recorder.stats.items())
    )
    expected = (
        1e-4 / 2 * distance + 0.1 * bn + 1e-2 * float(total_variation(y).detach()) + 1e-3 * float(y.norm().detach())
    )
    assert float(elsewhere.detach()) == pytest.approx(expected, rel=1e-4)
    assert 1e-4 / 2 * distance > 1e-3 and bn > 1e-3


def test_gradinversion_beats_its_start_on_real_photographs() -> None:
    # Prepare: two 16x16 photographs through a BatchNorm ConvNet in training mode, batch statistics granted
    obs, images, labels = _observation()
    start = torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(0)).clamp(0, 1)
    start_psnr = gi.metrics.score(gi.Reconstruction(images=start, labels=None, trace=[], seconds=0), images)["psnr"]
    # Execute
    rec = gi.attacks.make("gradinversion", steps=150, seeds=2, consensus_every=10, lr=0.05).reconstruct(obs)
    # Assert: Yin's rule found both labels; the reconstruction beats the noise it started from by > 5 dB
    scores = gi.metrics.score(rec, images, labels)
    assert sorted(rec.labels.tolist()) == [0, 1]
    assert rec.info["bn_target"] == "client batch" and rec.info["label_source"] == "yin"
    assert scores["psnr"] > start_psnr + 5.0
    assert rec.trace[-1] < rec.trace[0] / 10


def test_group_term_pulls_the_seeds_to_their_consensus() -> None:
    # Prepare
    obs, _, _ = _observation()
    options = {"steps": 60, "seeds": 3, "consensus_every": 5, "consensus_start": 0.0, "output": "best"}
    # Execute: the same seeds, without and with a strong group term
    apart = gi.attacks.make("gradinversion", group=0.0, **options).reconstruct(obs)
    together = gi.attacks.make("gradinversion", group=1.0, **options).reconstruct(obs)
    # Assert: the group term brings the registered seeds much closer to one another
    assert together.info["seed_spread"] < apart.info["seed_spread"] / 3


def test_the_anchor_is_the_consensus_of_the_current_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a consensus that records when it is asked and answers with a grey batch
    obs, _, _ = _observation()
    asked: list[tuple[int, ...]] = []

    def grey(seeds: torch.Tensor, max_shift: int) -> tuple[torch.Tensor, torch.Tensor]:
        asked.append(tuple(seeds.shape))
        return torch.full_like(seeds[0], 0.5), seeds

    monkeypatch.setattr("gradinv.attacks.gradinversion.consensus", grey)
    options = {"steps": 20, "seeds": 3, "consensus_every": 5, "consensus_start": 0.25, "langevin": 0.0}
    # Execute
    rec = gi.attacks.make("gradinversion", group=100.0, output="best", **options).reconstruct(obs)
    # Assert: asked at steps 5, 10 and 15 for all three seeds' batches; a strong group term pulls the seeds to it
    assert asked == [(3, 2, 3, 16, 16)] * 3
    assert float((rec.images - 0.5).abs().max()) < 0.2


def test_gradinversion_rejects_bad_settings() -> None:
    for kwargs, match in [
        ({"steps": 0}, "steps"),
        ({"seeds": 0}, "seeds"),
        ({"group": -1.0}, "weights"),
        ({"consensus_start": 1.5}, "consensus_start"),
        ({"output": "mean"}, "output"),
        ({"label_strategy": "magic"}, "label_strategy"),
    ]:
        with pytest.raises(ValueError, match=match):
            gi.attacks.make("gradinversion", **kwargs)

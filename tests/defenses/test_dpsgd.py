"""DP-SGD through Opacus: the shared update is the clipped, noised gradient, and epsilon is reported."""

import pytest
import torch
import torch.nn.functional as F

import gradinv as gi

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_noise_free_update_is_the_mean_of_clipped_per_sample_gradients() -> None:
    # Prepare: an oracle by explicit per-sample autograd
    images, labels = gi.data.load("skimage", n=3, size=16, seed=0)
    model = gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(32,), seed=0)
    clip = 0.5
    per_sample = []
    for i in range(3):
        loss = F.cross_entropy(model(images[i : i + 1]), labels[i : i + 1])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        per_sample.append([g * min(1.0, clip / float(norm)) for g in grads])
    expected = [sum(gs) / 3 for gs in zip(*per_sample, strict=True)]
    # Execute
    dp = gi.defenses.make("dpsgd", noise_multiplier=0.0, max_grad_norm=clip)
    obs = gi.observe(model, images, labels, defenses=[dp])
    # Assert
    for (name, _), e in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(obs.update[name], e, rtol=1e-5, atol=1e-7)


def test_dp_sum_is_opacus_dp_sgd_noise_included() -> None:
    # Prepare: three photographs' own gradients (one at a time) through an MLP, clipped at 0.5 (their norms are ~10)
    from gradinv.defenses.dpsgd import dp_gradient, dp_sum

    images, labels = gi.data.load("skimage", n=3, size=16, seed=0)
    model = gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(32,), seed=0)
    params = list(model.parameters())
    per_sample = [
        torch.autograd.grad(F.cross_entropy(model(images[i : i + 1]), labels[i : i + 1]), params) for i in range(3)
    ]
    # Execute: ours (the text client's DP-SGD) and Opacus' optimizer, the noise drawn from the same seed
    ours = dp_sum(per_sample, noise_multiplier=1.5, max_grad_norm=0.5, generator=torch.Generator().manual_seed(4))
    opacus = dp_gradient(
        model, images, labels, noise_multiplier=1.5, max_grad_norm=0.5, generator=torch.Generator().manual_seed(4)
    )
    # Assert: the same clipping, the same noise, the same scale
    for a, b in zip(ours, opacus, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        dp_sum([], noise_multiplier=1.0, max_grad_norm=1.0, generator=torch.Generator())


def test_dp_noise_raises_the_attack_error_monotonically_and_epsilon_falls() -> None:
    images, labels = gi.data.load("skimage", indices=[0], size=32)
    errors, epsilons = [], []
    for sigma in (0.0, 1e-5, 1e-4, 1e-3, 1e-2):
        dp = gi.defenses.make("dpsgd", noise_multiplier=sigma)
        model = gi.models.make("mlp", hidden=(256,), seed=0)
        obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM), defenses=[dp])
        rec = gi.attacks.make("bias_trick").reconstruct(obs)
        errors.append(float((rec.images - images).abs().mean()))
        epsilons.append(obs.defenses[0]["epsilon"])
    assert errors[0] < 1e-6  # clipping alone rescales rows: the bias trick stays exact
    assert all(a < b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert all(a > b for a, b in zip(epsilons, epsilons[1:], strict=False)), epsilons
    assert 1.0 < gi.defenses.make("dpsgd", noise_multiplier=1.0).epsilon() < 4.0  # q = 0.01, 1000 steps, 1e-5


def test_batchnorm_models_are_converted_and_the_report_says_so(tmp_path) -> None:
    images, labels = gi.data.load("skimage", n=2, size=32, seed=0)
    model = gi.models.make("convnet", width=4, seed=0)
    dp = gi.defenses.make("dpsgd")
    obs = gi.observe(model, images, labels, defenses=[dp])
    assert obs.defenses[0]["converted"] is True
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in obs.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the caller's model is untouched
    # the converted architecture is not the zoo's: loading asks for it instead of rebuilding the BatchNorm one
    obs.save(tmp_path / "obs")
    with pytest.raises(ValueError, match="pass model="):
        gi.Observation.load(tmp_path / "obs")
    loaded = gi.Observation.load(tmp_path / "obs", model=dp.prepare_model(model))
    assert all(torch.equal(loaded.update[k], v) for k, v in obs.update.items())
    # the same defense object on a model without BatchNorm reports no conversion
    mlp = gi.models.make("mlp", hidden=(8,), seed=0)
    assert gi.observe(mlp, images, labels, defenses=[dp]).defenses[0]["converted"] is False


def test_fedavg_with_dp_steps_matches_plain_fedavg_without_noise_or_clipping() -> None:
    images, labels = gi.data.load("digits", n=4, size=8, seed=0)
    model = gi.models.make("mlp", image_shape=(3, 8, 8), hidden=(16,), seed=0)
    threat = gi.ThreatModel(update="fedavg", local_steps=3, local_lr=0.1, local_batch_size=2)
    dp = gi.defenses.make("dpsgd", noise_multiplier=0.0, max_grad_norm=1e6)
    plain = gi.observe(model, images, labels, threat=threat)
    private = gi.observe(model, images, labels, threat=threat, defenses=[dp])
    for name, value in plain.update.items():
        torch.testing.assert_close(private.update[name], value, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "threat, steps, low, high",
    [
        (gi.ThreatModel(), 1, 4.6, 4.8),  # one Gaussian step at sigma 1, delta 1e-5: RDP gives 4.73
        (gi.ThreatModel(update="fedavg", local_steps=5, local_lr=0.1), 5, 12.2, 12.4),
        (gi.ThreatModel(update="fedavg", local_steps=3, local_lr=0.1, local_batch_size=2), 2, 7.0, 7.2),
    ],
)
def test_the_release_epsilon_is_that_of_the_update_the_server_sees(threat, steps, low, high) -> None:
    # Prepare: 4 images, sigma 1, the training run stated as 1000 steps at q = 0.01
    images, labels = gi.data.load("digits", n=4, size=8, seed=0)
    model = gi.models.make("mlp", image_shape=(3, 8, 8), hidden=(16,), seed=0)
    dp = gi.defenses.make("dpsgd", noise_multiplier=1.0)
    # Execute
    record = gi.observe(model, images, labels, threat=threat, defenses=[dp]).defenses[0]
    # Assert: no amplification by subsampling for a batch the attacker knows, composed over the steps a sample took
    # part in (local steps over mini-batches); the training run's epsilon is the stated run's, unchanged
    assert dp.release_steps == steps and low < record["release_epsilon"] < high
    assert record["release_epsilon"] > record["epsilon"] and 2.0 < record["epsilon"] < 2.2


def test_utility_reports_the_epsilon_of_the_run_it_simulates() -> None:
    def factory() -> torch.nn.Module:
        return gi.models.make("mlp", image_shape=(1, 8, 8), hidden=(16,), seed=0)

    result = gi.evaluate.utility(factory, "digits", [gi.defenses.make("dpsgd")], epochs=1, n=400, size=8)
    # 10 steps of batch 32 out of 320 training images, sigma 1
    from gradinv.defenses.dpsgd import gaussian_epsilon

    assert result.epsilon == pytest.approx(gaussian_epsilon(1.0, 32 / 320, 10, 1e-5)) and result.epsilon < 4.7
    assert gi.evaluate.utility(factory, "digits", [], epochs=1, n=400, size=8).epsilon is None


@pytest.mark.parametrize("other, word", [("mixup", "mixup"), ("instahide", "instahide"), ("dropout", "dropout")])
def test_dpsgd_refuses_what_it_cannot_account_for(other: str, word: str) -> None:
    images, labels = gi.data.load("skimage", n=4, size=8, seed=0)
    model = gi.models.make("mlp", image_shape=(3, 8, 8), hidden=(16,), seed=0)
    for chain in ([other, "dpsgd"], ["dpsgd", other]):
        with pytest.raises(ValueError, match=f"dpsgd with {word}"):
            gi.observe(model, images, labels, defenses=[gi.defenses.make(name) for name in chain])


def test_secure_rng_noise_is_fresh_and_the_default_is_reproducible() -> None:
    images, labels = gi.data.load("skimage", n=2, size=8, seed=0)
    model = gi.models.make("mlp", image_shape=(3, 8, 8), hidden=(16,), seed=0)

    def update(**options: object) -> torch.Tensor:
        obs = gi.observe(model, images, labels, seed=3, defenses=[gi.defenses.make("dpsgd", **options)])
        return obs.update["net.1.weight"]

    assert torch.equal(update(), update())
    assert not torch.equal(update(secure_rng=True), update(secure_rng=True))


def test_dpsgd_rejects_bad_parameters_and_a_second_trainer() -> None:
    with pytest.raises(ValueError, match="noise_multiplier"):
        gi.defenses.make("dpsgd", noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="sample_rate"):
        gi.defenses.make("dpsgd", sample_rate=0.0)
    images, labels = gi.data.load("skimage", n=1, size=16, seed=0)
    model = gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(8,), seed=0)
    with pytest.raises(ValueError, match="only one defense"):
        gi.observe(model, images, labels, defenses=[gi.defenses.make("dpsgd"), gi.defenses.make("dpsgd")])

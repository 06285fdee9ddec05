"""Utility is measured by training with the defended updates: it is high without a defense and falls with it."""

import pytest

import gradinv as gi

NORM = ((0.5,), (0.25,))


def _mlp():
    return gi.models.make("mlp", image_shape=(1, 8, 8), hidden=(64,), seed=0)


def _mean_accuracy(defense: str | None, **options: float) -> tuple[float, gi.evaluate.Utility]:
    """Mean test accuracy over 3 seeds (split, order and noise): single runs with heavy noise are chaotic (std 1
    gave 0.67-0.87 across seeds here), their mean is not."""
    runs = [
        gi.evaluate.utility(
            _mlp,
            "digits",
            [gi.defenses.make(defense, **options)] if defense else [],
            epochs=3,
            n=1797,
            size=8,
            normalization=NORM,
            seed=seed,
        )
        for seed in range(3)
    ]
    return sum(r.accuracy for r in runs) / 3, runs[0]


def test_utility_prices_a_defense_in_accuracy() -> None:
    # Prepare / Execute: scikit-learn digits (1797 real 8x8 images), 3 epochs, with and without heavy noise
    clean, first = _mean_accuracy(None)
    noisy, noisy_run = _mean_accuracy("noise", std=1.0)
    pruned, _ = _mean_accuracy("prune", ratio=0.9)
    # Assert: the clean model learns (chance is 0.1), noise of std 1 costs > 10 points, 90% pruning costs < 10
    assert clean > 0.9 and first.n_test == 359 and first.steps == 3 * (1438 // 32)
    assert noisy < clean - 0.1
    assert pruned > clean - 0.1
    assert noisy_run.defenses == [{"name": "noise", "std": 1.0, "distribution": "gaussian"}]


def test_utility_rejects_bad_settings() -> None:
    for kwargs, message in (({"epochs": 0}, "epochs"), ({"test_fraction": 1.0}, "test_fraction")):
        with pytest.raises(ValueError, match=message):
            gi.evaluate.utility(_mlp, "digits", [], size=8, **kwargs)
    with pytest.raises(ValueError, match="exceeds"):
        gi.evaluate.utility(_mlp, "digits", [], n=20, size=8, batch_size=64)
    with pytest.raises(TypeError, match="gi.defenses"):
        gi.evaluate.utility(_mlp, "digits", ["prune"], size=8)  # type: ignore[list-item]


def test_pretrain_returns_a_trained_copy_whose_training_every_observation_records(tmp_path) -> None:
    import torch

    # Prepare: an MLP at initialisation, 8x8 digits
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Execute: two epochs, then one more on top; observe one digit with the trained model
    trained = gi.evaluate.pretrain(model, "digits", 2, n=1797, size=8, lr=0.02, normalization=NORM, seed=0)
    again = gi.evaluate.pretrain(trained, "digits", 1, n=1797, size=8, lr=0.02, normalization=NORM, seed=1)
    images, labels = gi.data.load("digits", n=1, size=8, channels=1, seed=3)
    obs = gi.observe(again, images, labels)
    loaded = gi.Observation.load(obs.save(tmp_path / "obs"))
    # Assert: the original is untouched and untrained (no record); the copy learned (chance 0.1) and says how
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "gradinv_training") and gi.observe(model, images, labels).model_training == []
    record = trained.gradinv_training[0]
    assert record["epochs"] == 2 and record["steps"] == 2 * (1438 // 32) and record["lr"] == 0.02
    assert record["dataset"] == "digits" and record["test_accuracy"] > 0.8 and record["seed"] == 0
    assert not torch.equal(trained.state_dict()["net.1.weight"], model.state_dict()["net.1.weight"])
    assert [r["epochs"] for r in obs.model_training] == [2, 1] and loaded.model_training == obs.model_training
    assert trained.training == model.training
    # the trained copy is what the client trains from: its update differs from the initialisation's
    assert not torch.equal(obs.update["net.1.weight"], gi.observe(model, images, labels).update["net.1.weight"])
    with pytest.raises(TypeError, match="epochs"):
        gi.evaluate.pretrain(model, "digits", 1.5, size=8)  # type: ignore[arg-type]


def test_the_server_can_step_with_adam() -> None:
    runs = {
        opt: gi.evaluate.utility(
            _mlp, "digits", [], 2, n=1797, size=8, normalization=NORM, lr=1e-3 if opt == "adam" else 0.05,
            server_optimizer=opt,
        )
        for opt in ("sgd", "adam")
    }  # fmt: skip
    assert runs["adam"].accuracy > 0.8 and runs["adam"].accuracy != runs["sgd"].accuracy
    # Adam at lr 0.5 overshoots where 1e-3 learns: the optimiser is really used
    assert gi.evaluate.utility(_mlp, "digits", [], 2, n=1797, size=8, normalization=NORM, server_optimizer="adam",
                               lr=0.5).accuracy < runs["adam"].accuracy  # fmt: skip
    with pytest.raises(ValueError, match="server_optimizer"):
        gi.evaluate.utility(_mlp, "digits", [], size=8, server_optimizer="rmsprop")  # type: ignore[arg-type]

"""Gradient-protection defenses, applied where the client applies them, measured against real attacks."""

import pytest
import torch

import gradinv as gi

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _bias_trick_error(defenses: list) -> float:
    """Max pixel error of the (otherwise exact) bias trick on one photograph through an MLP."""
    images, labels = gi.data.load("skimage", indices=[0], size=32)
    model = gi.models.make("mlp", hidden=(256,), seed=0)
    obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM), defenses=defenses)
    rec = gi.attacks.make("bias_trick").reconstruct(obs)
    return float((rec.images - images).abs().mean())


@pytest.fixture(scope="module")
def dlg_lenet(photo, lenet_cat) -> tuple:
    """DLG (100 L-BFGS steps) against the DLG LeNet on the cat photograph, and its undefended PSNR."""
    images, labels = photo
    undefended = gi.metrics.score(lenet_cat.dlg, images, labels)["psnr"]
    return lenet_cat.model, gi.attacks.make("dlg", steps=100, seed=0), undefended


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("prune", {"ratio": 0.99}),
        ("topk", {"fraction": 0.01}),  # one global threshold (Aji & Heafield's 99% drop)
        ("dropout", {"p": 0.5}),  # Zheng 2021: the attacker's model draws other masks than the client's
    ],
)
def test_the_defense_stops_dlg_on_the_dlg_lenet(photo, dlg_lenet, name: str, kwargs: dict) -> None:
    # Prepare
    images, labels = photo
    model, attack, undefended = dlg_lenet
    # Execute
    observation = gi.observe(model, images, labels, defenses=[gi.defenses.make(name, **kwargs)])
    defended = gi.metrics.score(attack.reconstruct(observation), images, labels)["psnr"]
    # Assert
    assert undefended > 30.0 and defended < 15.0, (undefended, defended)
    assert observation.defenses == [gi.defenses.make(name, **kwargs).config()]


def test_topk_keeps_the_largest_entries_over_the_whole_update() -> None:
    update = {"a": torch.tensor([5.0, -0.125, 0.25]), "b": torch.tensor([[-4.0, 0.375], [0.0625, 1.0]])}
    g = torch.Generator()
    kept = gi.defenses.make("topk", fraction=3 / 7).apply(update, generator=g)
    assert kept["a"].tolist() == [5.0, 0.0, 0.0] and kept["b"].tolist() == [[-4.0, 0.0], [0.0, 1.0]]
    per_tensor = gi.defenses.make("topk", fraction=0.5, scope="tensor").apply(update, generator=g)
    assert per_tensor["a"].tolist() == [5.0, 0.0, 0.25] and per_tensor["b"].tolist() == [[-4.0, 0.0], [0.0, 1.0]]


def test_dropout_acts_while_the_client_trains_and_keeps_the_layout(photo) -> None:
    images, labels = photo
    model = gi.models.make("lenet", seed=0)
    defended = gi.defenses.make("dropout", p=0.5).prepare_model(model)
    assert [n for n, _ in defended.named_parameters()] == [n for n, _ in model.named_parameters()]
    defended.train()
    first, second = defended(images), defended(images)
    assert not torch.allclose(first, second)  # a fresh mask each pass
    defended.eval()
    assert torch.allclose(defended(images), model.eval()(images), atol=1e-6)  # off at test time
    # the same client seed gives the same mask, so the observation is reproducible
    a = gi.observe(model, images, labels, defenses=[gi.defenses.make("dropout")], seed=3)
    b = gi.observe(model, images, labels, defenses=[gi.defenses.make("dropout")], seed=3)
    assert all(torch.equal(a.update[k], b.update[k]) for k in a.update)


def test_noise_raises_the_error_monotonically() -> None:
    errors = [_bias_trick_error([gi.defenses.make("noise", std=s)]) for s in (0.0, 1e-4, 1e-3, 1e-2, 1e-1)]
    assert errors[0] < 1e-5
    assert all(a < b for a, b in zip(errors, errors[1:], strict=False)), errors


def test_laplacian_noise_has_the_requested_spread() -> None:
    update = {"w": torch.zeros(200_000)}
    noisy = gi.defenses.make("noise", std=0.5, distribution="laplacian").apply(
        update, generator=torch.Generator().manual_seed(0)
    )["w"]
    assert abs(float(noisy.std()) - 0.5) < 0.01 and abs(float(noisy.mean())) < 0.01
    assert float((noisy.abs() - noisy.abs().mean()).pow(2).mean()) > 0  # heavier tail than a constant


def test_quantisation_error_grows_as_bits_fall() -> None:
    errors = [_bias_trick_error([gi.defenses.make("quantize", bits=b)]) for b in (16, 8, 4, 2)]
    assert all(a < b for a, b in zip(errors, errors[1:], strict=False)), errors


def test_sign_and_prune_transform_as_specified() -> None:
    update = {"w": torch.tensor([-3.0, 0.6, 2.0, -0.1, 0.0])}
    g = torch.Generator()
    assert gi.defenses.make("sign").apply(update, generator=g)["w"].tolist() == [-1.0, 1.0, 1.0, -1.0, 0.0]
    assert gi.defenses.make("prune", ratio=0.6).apply(update, generator=g)["w"].tolist() == [-3.0, 0.0, 2.0, 0, 0]
    levels = gi.defenses.make("quantize", bits=1).apply(update, generator=g)["w"]
    assert levels.tolist() == [-3.0, 3.0, 3.0, -3.0, 0.0]
    two = gi.defenses.make("quantize", bits=3).apply(update, generator=g)["w"]  # levels k * 3 / 3, k in -3..3
    assert two.tolist() == [-3.0, 1.0, 2.0, -0.0, 0.0]


def test_defenses_compose_in_order_and_are_recorded(tmp_path) -> None:
    images, labels = gi.data.load("skimage", n=2, size=16, seed=0)
    model = gi.models.make("lenet", image_shape=(3, 16, 16), seed=0)
    chain = [gi.defenses.make("prune", ratio=0.5), gi.defenses.make("sign")]
    obs = gi.observe(model, images, labels, defenses=chain)
    for value in obs.update.values():
        assert set(value.unique().tolist()) <= {-1.0, 0.0, 1.0}
        assert float((value == 0).double().mean()) >= 0.49
    obs.save(tmp_path / "obs")
    assert gi.Observation.load(tmp_path / "obs").defenses == [d.config() for d in chain]


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("prune", {"ratio": 1.0}, r"\[0, 1\)"),
        ("prune", {"ratio": -0.1}, r"\[0, 1\)"),
        ("noise", {"std": -1.0}, ">= 0"),
        ("noise", {"distribution": "uniform"}, "gaussian"),
        ("quantize", {"bits": 0}, "bits"),
        ("topk", {"fraction": 0.0}, r"\(0, 1\]"),
        ("topk", {"scope": "layer"}, "scope"),
        ("dropout", {"p": 1.0}, r"\[0, 1\)"),
        ("dropout", {"where": "conv"}, "where"),
        ("magic", {}, "unknown defense"),
    ],
)
def test_bad_parameters_are_rejected(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gi.defenses.make(name, **kwargs)


def test_observe_rejects_non_defenses(photo) -> None:
    images, labels = photo
    with pytest.raises(TypeError, match="gi.defenses"):
        gi.observe(gi.models.make("lenet"), images, labels, defenses=["prune"])  # type: ignore[list-item]

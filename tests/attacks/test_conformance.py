"""Every registered attack honours the contract: shapes, [0, 1] range, determinism by seed, clear errors."""

import inspect

import pytest
import torch

import gradinv as gi
from gradinv.models.generator import Decoder

QUICK = {"steps": 3}
# GIAS needs a generator of the conformance images (3x16x16); an untrained decoder serves for the contract
EXTRA: dict[str, dict[str, object]] = {"gias": {"generator": Decoder(latent=8, channels=3, size=16), "restarts": 1}}
# Exact attacks need their structure: a fully connected first layer (bias trick); malicious ones modify the model.
MODEL_FOR = {name: ("mlp", {"hidden": (64,)}) for name in ("bias_trick", "trap_weights", "spear")}
# Dimitrov et al.'s attack is for FedAvg clients that reshuffle each epoch
THREAT_FOR: dict[str, dict[str, object]] = {
    "fedavg_leakage": {"update": "fedavg", "local_steps": 2, "local_shuffle": True}
}


def _options(name: str, **extra: object) -> dict:
    accepted = inspect.signature(gi.attacks.REGISTRY[name].__init__).parameters
    return {k: v for k, v in {**QUICK, **EXTRA.get(name, {}), **extra}.items() if k in accepted}


def _malicious(name: str) -> bool:
    return gi.attacks.REGISTRY[name].prepare_model is not gi.attacks.Attack.prepare_model


def _observe(name: str, n: int = 1, **threat_kwargs: object) -> tuple[gi.Observation, torch.Tensor]:
    images, labels = gi.data.load("skimage", n=n, size=16, seed=1)
    model_name, kwargs = MODEL_FOR.get(name, ("lenet", {}))
    model = gi.models.make(model_name, image_shape=(3, 16, 16), seed=0, **kwargs)
    attack = gi.attacks.make(name, **_options(name))
    threat = gi.ThreatModel(
        server="malicious" if _malicious(name) else "honest", **{**THREAT_FOR.get(name, {}), **threat_kwargs}
    )
    return gi.observe(attack.prepare_model(model, threat), images, labels, threat=threat), images


@pytest.fixture(scope="module", params=gi.attacks.names("horizontal"))
def setting(request) -> tuple[str, gi.Observation, torch.Tensor]:
    obs, images = _observe(request.param, normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    return request.param, obs, images


def test_reconstruction_contract(setting) -> None:
    # Prepare
    name, obs, images = setting
    steps: list[int] = []
    # Execute
    attack = gi.attacks.make(name, **_options(name))
    rec = attack.reconstruct(obs, callback=lambda step, total, loss: steps.append(step))
    # Assert
    assert isinstance(rec, gi.Reconstruction) and rec.attack == name
    assert rec.images.shape == images.shape and rec.images.dtype == torch.float32
    assert 0.0 <= rec.images.min() and rec.images.max() <= 1.0
    assert rec.labels is not None and rec.labels.shape == (1,) and rec.labels.dtype == torch.int64
    assert rec.seconds > 0 and steps and steps[-1] == rec.config.get("steps", 1)
    assert len(rec.trace) >= 1 or "steps" not in rec.config  # iterative attacks record their objective
    assert set(rec.residual) == {"cosine", "rel_l2"}


def test_determinism_by_seed(setting) -> None:
    name, obs, _ = setting
    first = gi.attacks.make(name, **_options(name, seed=5)).reconstruct(obs)
    second = gi.attacks.make(name, **_options(name, seed=5)).reconstruct(obs)
    assert torch.equal(first.images, second.images) and first.trace == second.trace
    # a malicious attack's seed shapes its model; an exact attack's answer is the data whatever the seed
    if "seed" in _options(name, seed=6) and not _malicious(name) and not gi.attacks.REGISTRY[name].exact:
        other = gi.attacks.make(name, **_options(name, seed=6)).reconstruct(obs)
        assert not torch.equal(first.images, other.images)


@pytest.mark.parametrize("name", gi.attacks.names("horizontal"))
def test_missing_side_information_is_a_clear_error(name: str) -> None:
    # Prepare: the threat model withholds the batch size
    obs, images = _observe(name, knows_batch_size=False)
    attack = gi.attacks.make(name, **_options(name))
    # Execute / Assert
    if "batch_size" in attack.requires:
        with pytest.raises(ValueError, match="batch size"):
            attack.reconstruct(obs)
    # a guess from the user always makes it run
    guessed = gi.attacks.make(name, **_options(name, batch_size=1)).reconstruct(obs)
    assert guessed.images.shape == images.shape
    if "labels" in attack.requires:
        with pytest.raises(ValueError, match="labels"):
            attack.reconstruct(obs)


@pytest.mark.parametrize("name", gi.attacks.names("horizontal"))
def test_bad_hyperparameters_are_rejected(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        gi.attacks.make(name, no_such_option=1)
    if "steps" in _options(name):
        with pytest.raises(ValueError, match="steps"):
            gi.attacks.make(name, steps=0)


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="unknown attack"):
        gi.attacks.make("deep_magic")
    with pytest.raises(TypeError, match="gi.Observation"):
        gi.attacks.make("dlg").reconstruct("not an observation")  # type: ignore[arg-type]


def test_idlg_refuses_a_batch() -> None:
    images, labels = gi.data.load("skimage", n=2, size=16, seed=1)
    obs = gi.observe(gi.models.make("lenet", image_shape=(3, 16, 16), seed=0), images, labels)
    with pytest.raises(ValueError, match="single sample"):
        gi.attacks.make("idlg", **QUICK).reconstruct(obs)


@pytest.mark.parametrize("name, key", [("dlg", "gradient_distance"), ("inverting_gradients", "gradient_loss")])
def test_restarts_keep_the_best_by_gradient_loss(name: str, key: str) -> None:
    # Prepare: the first restart of a 3-restart run is the 1-restart run (same seed, same first draw)
    obs, _ = _observe(name)
    single = gi.attacks.make(name, steps=5, seed=2, restarts=1).reconstruct(obs)
    triple = gi.attacks.make(name, steps=5, seed=2, restarts=3).reconstruct(obs)
    # Assert: the kept result is never worse than the first restart; DLG's trace covers every restart one after
    # another, Inverting Gradients' (restarts in lockstep) is the chosen restart's, one value per step
    assert triple.info[key] <= single.info[key]
    if name == "dlg":
        assert len(triple.trace) > len(single.trace)
    else:
        assert len(triple.trace) == len(single.trace) == 5

"""The SoK's threat models A-H (Carletti et al., USENIX Security 2025) as ThreatModel presets, and the attacks each
one lets run."""

import json

import pytest

import gradinv as gi
from gradinv.attacks.base import threat_conflict
from gradinv.evaluate.grid import load_grid
from gradinv.observation import SOK_PRESETS, sok_missing


@pytest.mark.parametrize(
    "letter, server, training, bn_stats, labels",
    [
        ("A", "honest", False, False, False),
        ("B", "honest", False, False, False),
        ("C", "honest", True, False, False),
        ("D", "honest", True, False, False),
        ("E", "honest", True, True, True),
        ("F", "malicious", True, False, False),
        ("G", "malicious", True, False, False),
        ("H", "malicious", True, False, False),
    ],
)
def test_each_letter_sets_what_the_attacker_knows(letter, server, training, bn_stats, labels) -> None:
    threat = gi.ThreatModel.preset(letter, bn_mode="eval")
    assert (threat.sok, threat.server, threat.knows_training) == (letter, server, training)
    assert (threat.knows_bn_stats, threat.knows_labels, threat.knows_batch_size) == (bn_stats, labels, True)
    assert threat.bn_mode == "eval"
    # recorded with every result: it survives the JSON round trip a cell or an observation file makes
    assert gi.ThreatModel.from_dict(json.loads(json.dumps(threat.to_dict()))) == threat


def test_the_table_is_the_soks() -> None:
    # the knowledge columns of Carletti et al.'s Table 1: each letter's set, and the order they nest in
    has = {letter: knowledge for letter, (_, knowledge) in SOK_PRESETS.items()}
    assert has["A"] == {"updates"} and has["B"] == {"updates", "basic"}
    assert has["C"] - has["B"] == {"training"} and has["D"] - has["C"] == {"surrogate"}
    assert has["E"] - has["D"] == {"distribution"}
    assert has["F"] == has["C"] | {"active"} and has["G"] == has["F"] | {"surrogate"}
    assert has["H"] == has["G"] | {"selection"}
    # a manipulator has no surrogate data (F) nor the client's statistics (F-H): not everything is above E
    assert sok_missing("F", "D") == ["surrogate"] and sok_missing("H", "E") == ["distribution"]
    assert sok_missing("E", "G") == ["active"] and sok_missing("H", "A") == []


def test_a_letter_refuses_fields_it_sets_and_inconsistent_records() -> None:
    with pytest.raises(ValueError, match="sets knows_bn_stats itself"):
        gi.ThreatModel.preset("B", knows_bn_stats=True)
    with pytest.raises(ValueError, match="unknown SoK threat model"):
        gi.ThreatModel.preset("Z")
    with pytest.raises(ValueError, match="means knows_training=False"):
        gi.ThreatModel(sok="A")  # a record claiming A while granting the training details
    with pytest.raises(ValueError, match="means server='malicious'"):
        gi.ThreatModel(sok="F")
    # how the client trains is not the letter's to set
    fedavg = gi.ThreatModel.preset("C", update="fedavg", local_steps=3, local_lr=0.01)
    assert fedavg.update == "fedavg" and fedavg.local_steps == 3


def test_attacks_graded_above_the_letter_are_refused(photo) -> None:
    # Prepare: the cat through LeNet, observed under the eavesdropper A
    images, labels = photo
    model = gi.models.make("lenet", seed=0)
    observation = gi.observe(model, images, labels, threat=gi.ThreatModel.preset("A"))
    # Execute / Assert: iDLG (graded A) runs; Inverting Gradients (B: its TV prior and box) is refused, naming why
    assert gi.attacks.make("idlg", steps=2).reconstruct(observation).images.shape == images.shape
    with pytest.raises(ValueError, match=r"assumes SoK threat model B .*basic knowledge of the data domain"):
        gi.attacks.make("inverting_gradients", steps=2).reconstruct(observation)
    # the letters a grid consults, without running anything
    attack = gi.attacks.REGISTRY
    assert threat_conflict(attack["gradinversion"], gi.ThreatModel.preset("D")) is not None
    assert threat_conflict(attack["gradinversion"], gi.ThreatModel.preset("E")) is None
    assert "surrogate data" in threat_conflict(attack["imprint"], gi.ThreatModel.preset("F"))
    assert threat_conflict(attack["imprint"], gi.ThreatModel.preset("G")) is None
    assert threat_conflict(attack["gias"], gi.ThreatModel.preset("H")) is None
    # a threat set field by field is not graded: only the fields' own checks apply
    assert threat_conflict(attack["gradinversion"], gi.ThreatModel()) is None


def test_a_fedavg_update_needs_the_training_details(photo) -> None:
    images, labels = photo
    model = gi.models.make("lenet", seed=0)
    for letter in ("B", "C"):
        threat = gi.ThreatModel.preset(letter, update="fedavg", local_steps=2, local_lr=0.01)
        observation = gi.observe(model, images, labels, threat=threat)
        attack = gi.attacks.make("inverting_gradients", steps=2)
        if letter == "B":
            with pytest.raises(ValueError, match="withholds its training details"):
                attack.reconstruct(observation)
        else:
            assert attack.reconstruct(observation).images.shape == images.shape
    field_by_field = gi.ThreatModel(update="fedavg", local_steps=2, knows_training=False)
    assert "training details" in threat_conflict(gi.attacks.REGISTRY["idlg"], field_by_field)


def test_a_grid_takes_presets_records_them_and_refuses_what_they_refuse(tmp_path) -> None:
    # Prepare: two presets; Inverting Gradients restricted to B, where the SoK grades it
    path = tmp_path / "grid.toml"
    text = (
        "[grid]\nname = 'sok'\ndata = 'skimage'\nsize = 16\nbatch_sizes = [1]\nseeds = [0]\n"
        "[[models]]\nname = 'lenet'\n[[defenses]]\nname = 'none'\n"
        "[[attacks]]\nname = 'idlg'\nsteps = 2\n"
        "[[attacks]]\nname = 'inverting_gradients'\nsteps = 2\nthreats = ['B']\n"
        "[[threats]]\nlabel = 'A'\npreset = 'A'\n[[threats]]\nlabel = 'B'\npreset = 'B'\nbn_mode = 'eval'\n"
    )
    path.write_text(text)
    # Execute
    grid = load_grid(path)
    # Assert: each cell's threat records its letter (and B's client setting)
    cells = {(c.config["attack"], c.config["threat"]["sok"], c.config["threat"]["bn_mode"]) for c in grid.cells}
    assert cells == {("idlg", "A", "train"), ("idlg", "B", "eval"), ("inverting_gradients", "B", "eval")}
    assert all(c.config["threat"]["knows_training"] is False for c in grid.cells)
    # Inverting Gradients under A is an impossible combination, named as such; a letter's own field is refused
    path.write_text(text.replace("threats = ['B']\n", ""))
    with pytest.raises(ValueError, match="assumes SoK threat model B"):
        load_grid(path)
    path.write_text(text.replace("bn_mode = 'eval'", "knows_labels = true"))
    with pytest.raises(ValueError, match="sets knows_labels itself"):
        load_grid(path)
    # a grid without presets records neither new field (its cells' keys stay as they were)
    path.write_text(text.replace("preset = 'A'", "").replace("preset = 'B'", ""))
    assert all(
        "sok" not in c.config["threat"] and "knows_training" not in c.config["threat"] for c in load_grid(path).cells
    )

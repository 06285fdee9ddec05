import pytest
import torch

import gradinv as gi
from gradinv.attacks.labels import idlg_source, llg_labels, recover, recover_with_source


@pytest.mark.parametrize("model_name", ["lenet", "convnet", "resnet20", "mlp"])
def test_idlg_recovers_the_label_of_every_single_image(model_name: str) -> None:
    # Prepare: every bundled photograph and 30 MNIST digits, each shared alone
    photos, photo_labels = gi.data.load("skimage", n=18, size=32, seed=0)
    digits, digit_labels = gi.data.load("mnist_subset", n=30, size=32, seed=0)
    images, labels = torch.cat([photos, digits]), torch.cat([photo_labels, digit_labels])
    kwargs = {"width": 8} if model_name == "convnet" else {"width": 4} if model_name == "resnet20" else {}
    model = gi.models.make(model_name, seed=0, **kwargs)
    threat = gi.ThreatModel(knows_labels=False)
    # Execute
    found = [
        int(recover("idlg", gi.observe(model, images[i : i + 1], labels[i : i + 1], threat=threat), 1))
        for i in range(len(images))
    ]
    # Assert
    assert found == labels.tolist()


def test_idlg_uses_the_weight_rows_when_the_layer_has_no_bias() -> None:
    # Prepare: sigmoid features are positive, so the sign of the row sums gives the label (iDLG, Sec. 3)
    images, labels = gi.data.load("skimage", n=8, size=32, seed=0)
    model = gi.models.make("lenet", seed=0)
    for i in range(8):
        obs = gi.observe(model, images[i : i + 1], labels[i : i + 1])
        # Execute
        label = gi.attacks.labels.idlg_label(obs.update["fc.weight"], None)
        # Assert
        assert int(label) == int(labels[i])


def test_idlg_says_when_its_rule_did_not_decide_the_label() -> None:
    # Prepare: the cat through DLG's LeNet, shared as it is and under Gaussian noise of std 0.05 (the bias gradient's
    # entries are p_k - y_k: nine small positive ones, -0.9 at the cat's class)
    images, labels = gi.data.load("skimage", indices=[1], size=32)
    model = gi.models.make("lenet", seed=0)
    threat = gi.ThreatModel(knows_labels=False)
    clean = gi.observe(model, images, labels, threat=threat)
    noisy = gi.observe(model, images, labels, threat=threat, defenses=[gi.defenses.make("noise", std=0.05)], seed=0)
    # Execute
    found, source = recover_with_source("idlg", clean, 1)
    guessed, guess_source = recover_with_source("idlg", noisy, 1)
    # Assert: the rule holds on the clean update (one negative class) and decides; under the noise several classes
    # are negative and the source says the label is a guess, whether or not the guess is right
    assert found.tolist() == labels.tolist() and source == "idlg"
    assert guess_source.startswith("idlg, guessed:") and "of 10 classes have a negative gradient" in guess_source
    assert int((noisy.update["fc.bias"] < 0).sum()) > 1
    # the attacks report it: iDLG's label_source
    rec = gi.attacks.make("idlg", steps=1).reconstruct(noisy)
    assert rec.info["label_source"] == guess_source


def test_idlg_reads_the_weight_rows_when_a_defense_zeroed_the_bias_gradient() -> None:
    weight = torch.tensor([[0.5, 0.25], [-1.0, -0.5], [0.125, 0.125]])  # row sums 0.75, -1.5, 0.25
    zero = torch.zeros(3)
    assert idlg_source(weight, zero) == "idlg" and int(gi.attacks.labels.idlg_label(weight, zero)) == 1
    both = torch.tensor([-0.25, -0.5, 0.75])
    assert int(gi.attacks.labels.idlg_label(weight, both)) == 1 and "2 of 3 classes" in idlg_source(weight, both)
    assert "0 of 3 classes" in idlg_source(torch.ones(3, 2), None)


@pytest.mark.parametrize("model_name, kwargs", [("mlp", {"hidden": (256,)}), ("convnet", {"width": 8})])
def test_yin_is_exact_for_distinct_labels(model_name: str, kwargs: dict) -> None:
    # Prepare: 8 MNIST digits with distinct labels through a ReLU network
    pool, pool_labels = gi.data.load("mnist_subset", n=200, size=28, channels=1, seed=0)
    keep = [int((pool_labels == c).nonzero()[0]) for c in range(8)]
    images, labels = pool[keep], pool_labels[keep]
    model = gi.models.make(model_name, image_shape=(1, 28, 28), seed=0, **kwargs)
    obs = gi.observe(model, images, labels)
    # Execute
    found = recover("yin", obs, 8)
    # Assert
    assert sorted(found.tolist()) == sorted(labels.tolist())


@pytest.mark.parametrize("wanted", [[0, 1, 2, 3], [3, 3, 7, 1], [2, 2, 2, 5, 5, 9]])
def test_llg_counts_labels_with_repeats(wanted: list[int]) -> None:
    # Prepare: a batch with repeated labels, five differently initialised ReLU networks
    pool, pool_labels = gi.data.load("mnist_subset", n=300, size=28, channels=1, seed=0)
    used: list[int] = []
    for c in wanted:
        used.append(next(int(i) for i in (pool_labels == c).nonzero().flatten() if int(i) not in used))
    for seed in range(5):
        model = gi.models.make("mlp", image_shape=(1, 28, 28), hidden=(256,), seed=seed)
        obs = gi.observe(model, pool[used], pool_labels[used])
        # Execute
        found = recover("llg", obs, len(wanted))
        # Assert: the multiset of labels is recovered exactly
        assert sorted(found.tolist()) == sorted(wanted), seed


def test_llg_rule_on_a_hand_made_gradient() -> None:
    # g = row sums: classes 2 and 5 present, class 2 twice as often (impact ~ -1 per occurrence)
    weight = torch.zeros(6, 2)
    weight[:, 0] = torch.tensor([0.2, 0.2, -1.8, 0.2, 0.2, -0.8])
    assert llg_labels(weight, 3).tolist() == [2, 2, 5]


def test_label_recovery_errors() -> None:
    images, labels = gi.data.load("skimage", n=2, size=32, seed=0)
    obs = gi.observe(gi.models.make("lenet", seed=0), images, labels)
    with pytest.raises(ValueError, match="single sample"):
        recover("idlg", obs, 2)
    with pytest.raises(ValueError, match="unknown label strategy"):
        recover("magic", obs, 2)
    with pytest.raises(ValueError, match="distinct labels"):
        recover("yin", obs, 11)


def test_label_recovery_on_trained_networks(trained) -> None:
    # Prepare: 40 held-out digits, one at a time (iDLG) and in 5 batches of 8 (LLG, label counts)
    from collections import Counter

    images, labels = trained.images, trained.labels
    for model in (trained.lenet.model, trained.convnet.model):
        threat = gi.ThreatModel(bn_mode="eval")
        # Execute
        single = [
            int(recover("idlg", gi.observe(model, images[i : i + 1], labels[i : i + 1], threat=threat), 1))
            for i in range(40)
        ]
        counts = []
        for start in range(0, 40, 8):
            obs = gi.observe(model, images[start : start + 8], labels[start : start + 8], threat=threat)
            found = Counter(recover("llg", obs, 8).tolist()) & Counter(labels[start : start + 8].tolist())
            counts.append(sum(found.values()) / 8)
        # Assert: iDLG stays exact after training; LLG's count rule, exact at initialisation (above), gets about
        # half of the labels (the README's 0.58 and 0.53): its impact estimate assumes untrained softmax outputs
        assert single == labels.tolist()
        assert 0.4 <= sum(counts) / len(counts) <= 0.8, counts

"""Vertical FL (CAFE's setting): the parties' strips, the training record, and the replayed weights."""

import pytest
import torch
from torch.func import functional_call

import gradinv as gi
from gradinv.fl.vertical import VerticalModel, VerticalObservation, strips, train_vertical


def _digits(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    return gi.data.load("mnist_subset", n=n, size=16, channels=1, seed=0)


def test_strips_cut_equal_columns_in_order() -> None:
    images, _ = _digits(2)
    parts = strips(images, 4)
    assert [p.shape[-1] for p in parts] == [4, 4, 4, 4]
    assert torch.equal(torch.cat(parts, dim=-1), images)
    with pytest.raises(ValueError, match="equal strips"):
        strips(images, 3)


def test_each_party_sees_only_its_strip() -> None:
    # Prepare: change the pixels of party 2's strip only
    images, _ = _digits(2)
    model = VerticalModel(image_shape=(1, 16, 16), parties=4, seed=0)
    changed = images.clone()
    changed[..., 8:12] = 1.0 - changed[..., 8:12]
    # Execute / Assert: only party 2's embedding moves
    for m, (a, b) in enumerate(zip(strips(images, 4), strips(changed, 4), strict=True)):
        same = torch.equal(model.bottoms[m](a), model.bottoms[m](b))
        assert same == (m != 2)


def test_training_record_replays_every_gradient() -> None:
    # Prepare
    images, labels = _digits()
    model = VerticalModel(image_shape=(1, 16, 16), parties=4, seed=0)
    # Execute: 7 iterations of batch 4 at lr 0.5 (an epoch is 3 batches; the order reshuffles every epoch)
    obs = train_vertical(model, images, labels, batch_size=4, iterations=7, lr=0.5, seed=1)
    weights = obs.weights()
    # Assert: each recorded gradient is the batch's mean-loss gradient at the replayed weights of that iteration;
    # every epoch visits each sample once; the model passed in is unchanged
    names = [n for n, _ in model.named_parameters()]
    for t, batch in enumerate(obs.batches):
        params = {k: w.clone().requires_grad_(True) for k, w in weights[t].items()}
        loss = torch.nn.functional.cross_entropy(functional_call(model, params, (images[batch],)), labels[batch])
        grads = torch.autograd.grad(loss, [params[k] for k in names])
        for k, g in zip(names, grads, strict=True):
            assert torch.allclose(g, obs.gradients[t][k], atol=1e-6)
    assert sorted(torch.cat(obs.batches[:3]).tolist()) == list(range(12))
    assert not torch.equal(weights[0]["top.1.weight"], weights[6]["top.1.weight"])
    assert torch.equal(dict(model.named_parameters())["top.1.weight"], weights[0]["top.1.weight"])


def test_noise_is_added_to_what_the_parties_send() -> None:
    # Prepare
    images, labels = _digits()
    model = VerticalModel(image_shape=(1, 16, 16), parties=4, seed=0)
    # Execute: the same run without and with noise of std 0.01
    clean = train_vertical(model, images, labels, batch_size=4, iterations=3, seed=2)
    noisy = train_vertical(model, images, labels, batch_size=4, iterations=3, noise_std=0.01, seed=2)
    # Assert: the same batches; every recorded entry moved by noise of that std
    assert all(torch.equal(a, b) for a, b in zip(clean.batches, noisy.batches, strict=True))
    diff = torch.cat([(noisy.gradients[t][k] - g).flatten() for t in range(3) for k, g in clean.gradients[t].items()])
    assert float(diff.std()) == pytest.approx(0.01, rel=0.05) and abs(float(diff.mean())) < 1e-3


def test_vertical_inputs_are_checked() -> None:
    images, labels = _digits()
    model = VerticalModel(image_shape=(1, 16, 16), parties=4, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        train_vertical(model, images, labels, batch_size=13, iterations=1)
    with pytest.raises(ValueError, match="noise_std"):
        train_vertical(model, images, labels, batch_size=4, iterations=1, noise_std=-1.0)
    obs = train_vertical(model, images, labels, batch_size=4, iterations=1)
    with pytest.raises(ValueError, match="sample indices"):
        VerticalObservation(obs.model, 0.0, [torch.tensor([0, 12])], obs.gradients, labels, (1, 16, 16))
    with pytest.raises(TypeError, match="VerticalModel"):
        VerticalObservation(torch.nn.Linear(2, 2), 0.0, obs.batches, obs.gradients, labels, (1, 16, 16))  # type: ignore[arg-type]


def test_gradient_defenses_act_on_what_the_parties_send_and_others_are_refused() -> None:
    # Prepare
    images, labels = _digits()
    model = VerticalModel(image_shape=(1, 16, 16), parties=4, seed=0)
    prune = gi.defenses.make("prune", ratio=0.9)
    # Execute: the same fixed-model run without and with pruning
    clean = train_vertical(model, images, labels, batch_size=4, iterations=3, seed=2)
    pruned = train_vertical(model, images, labels, batch_size=4, iterations=3, seed=2, defenses=[prune])
    # Assert: each recorded gradient is the defense applied to the clean one, and the record names the defense
    for t in range(3):
        expected = prune.apply(clean.gradients[t], generator=torch.Generator().manual_seed(0))
        for k, g in pruned.gradients[t].items():
            assert torch.equal(g, expected[k]), (t, k)
    assert pruned.defenses == [prune.config()] and clean.defenses == []
    # and a training run steps with the defended gradients: iteration 1's record is the defense applied to the
    # gradient at the weights the defended step 0 led to
    moving = train_vertical(model, images, labels, batch_size=4, iterations=2, lr=0.5, seed=2, defenses=[prune])
    params = {k: w.requires_grad_(True) for k, w in moving.weights()[1].items()}
    batch = moving.batches[1]
    loss = torch.nn.functional.cross_entropy(functional_call(model, params, (images[batch],)), labels[batch])
    names = [k for k, _ in model.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(loss, [params[k] for k in names]), strict=True))
    expected = prune.apply(grads, generator=torch.Generator())
    for k in names:
        assert torch.allclose(moving.gradients[1][k], expected[k], atol=1e-6), k
    for name in ("mixup", "dropout", "soteria"):
        with pytest.raises(ValueError, match=f"defense '{name}' changes the client's"):
            train_vertical(model, images, labels, batch_size=4, iterations=1, defenses=[gi.defenses.make(name)])
    with pytest.raises(TypeError, match="gi.defenses objects"):
        train_vertical(model, images, labels, batch_size=4, iterations=1, defenses=["prune"])  # type: ignore[list-item]

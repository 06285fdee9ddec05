"""Dimitrov et al. (TMLR 2022) against a client that reshuffles its data every local epoch."""

import copy

import pytest
import torch

import gradinv as gi
from gradinv.attacks.fedavg_leakage import match_epochs, order_invariant_prior
from gradinv.update import compute_update, epoch_orders

DIGITS = [4226, 1222, 227, 3001]  # four MNIST digits (an 8, two 2s and a 6)


def _client(shuffle: bool, local_steps: int = 6) -> tuple[gi.Observation, torch.Tensor, torch.Tensor]:
    x, y = gi.data.load("mnist_subset", indices=DIGITS, size=16, channels=1)
    model = gi.models.make("lenet", image_shape=(1, 16, 16), seed=0)
    threat = gi.ThreatModel(
        update="fedavg",
        local_steps=local_steps,
        local_lr=0.1,
        local_batch_size=2,
        local_shuffle=shuffle,
        knows_labels=True,
    )
    return gi.observe(model, x, y, threat=threat, seed=3), x, y


def test_the_client_reshuffles_before_every_epoch() -> None:
    # Prepare: the observed update of a shuffling client, and the same client recomputed
    observation, x, y = _client(shuffle=True)
    model, threat = observation.model, observation.threat
    # Execute
    again = compute_update(model, x, y, threat, orders=epoch_orders(4, threat, torch.Generator().manual_seed(3)))
    in_order = compute_update(model, x, y, threat)
    # Assert: the observation is the shuffled run (the client's seed), not the data-order one
    names = [n for n, _ in model.named_parameters()]
    assert all(torch.allclose(observation.update[n], u, atol=1e-7) for n, u in zip(names, again, strict=True))
    assert not all(torch.allclose(observation.update[n], u, atol=1e-5) for n, u in zip(names, in_order, strict=True))
    # and by hand: a fresh permutation before each of the 3 epochs, its two halves as the mini-batches
    client, generator = copy.deepcopy(model), torch.Generator().manual_seed(3)
    start = [p.detach().clone() for p in client.parameters()]
    for _ in range(3):
        order = torch.randperm(4, generator=generator)
        for batch in (order[:2], order[2:]):
            loss = torch.nn.functional.cross_entropy(client(x[batch]), y[batch])
            grads = torch.autograd.grad(loss, list(client.parameters()))
            with torch.no_grad():
                for p, g in zip(client.parameters(), grads, strict=True):
                    p -= 0.1 * g
    by_hand = [p0 - p.detach() for p0, p in zip(start, client.parameters(), strict=True)]
    assert all(torch.allclose(observation.update[n], u, atol=1e-6) for n, u in zip(names, by_hand, strict=True))
    with pytest.raises(ValueError, match="local_shuffle"):
        gi.ThreatModel(local_shuffle=True)  # one gradient has no epochs to shuffle
    with pytest.raises(ValueError, match="does not reshuffle"):
        gi.observe(model, x, y, threat=threat, defenses=[gi.defenses.make("dpsgd", noise_multiplier=0.0)])


def test_the_prior_sees_sets_not_orders_and_matching_undoes_permutations() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 8, 8, generator=generator)
    projection = torch.nn.Conv2d(1, 6, 3, padding=1, bias=False).requires_grad_(False)
    permuted = torch.stack([images, images[[2, 0, 3, 1]], images[[3, 2, 1, 0]]])  # three epochs, three orders
    other = torch.stack([images, torch.rand(4, 1, 8, 8, generator=generator)])
    assert float(order_invariant_prior(permuted, projection)) == pytest.approx(0.0, abs=1e-12)
    assert float(order_invariant_prior(other, projection)) > 1e-3
    noisy = permuted + 0.01 * torch.randn(permuted.shape, generator=generator)
    assert torch.allclose(match_epochs(noisy), images, atol=0.03)  # aligned to epoch 0's order, then averaged
    assert (match_epochs(noisy) - images).abs().mean() < (noisy[0] - images).abs().mean()


def test_it_recovers_what_an_attack_assuming_the_data_order_cannot() -> None:
    # Prepare: 3 local epochs of 2 mini-batches of 2, reshuffled each epoch
    observation, x, y = _client(shuffle=True)
    # Execute: the same budget for Inverting Gradients unrolled in data order (the authors' baseline) and this attack
    naive = gi.attacks.make("inverting_gradients", steps=200).reconstruct(observation)
    attack = gi.attacks.make("fedavg_leakage", steps=200).reconstruct(observation)
    # Assert: measured 8.5 dB against 5.7
    assert attack.info["epochs"] == 3
    psnr = {name: gi.metrics.score(r, x, y)["psnr"] for name, r in (("naive", naive), ("attack", attack))}
    assert psnr["attack"] > psnr["naive"] + 2.0, psnr
    with pytest.raises(ValueError, match="FedAvg"):
        gi.attacks.make("fedavg_leakage", steps=1).reconstruct(gi.observe(observation.model, x, y))
    with pytest.raises(ValueError, match="training details"):
        b = gi.ThreatModel.preset("B", update="fedavg", local_steps=2, local_shuffle=True, local_batch_size=2)
        gi.attacks.make("fedavg_leakage", steps=1).reconstruct(gi.observe(observation.model, x, y, threat=b))

"""Client-side augmentation: the client trains on privately flipped and cropped copies, a fresh draw per local epoch."""

from __future__ import annotations

import pytest
import torch

import gradinv as gi
from gradinv.fl.augmentation import augment, augmented_batch, augmented_epochs, padding
from gradinv.update import compute_update, normalize


def test_flips_and_crops_are_torchvisions_random_flip_and_padded_crop() -> None:
    images = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    flipped = augment(images, "flip", torch.Generator().manual_seed(1))
    same = [torch.equal(a, b) for a, b in zip(flipped, images, strict=True)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, images, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and 16 < sum(mirrored) < 48
    cropped = augment(images, "crop_flip", torch.Generator().manual_seed(2))
    pad = padding(16)
    assert pad == 2
    # each crop is the (possibly mirrored) image shifted by at most pad pixels, zeros where it left the frame
    for a, b in zip(cropped, images, strict=True):
        padded = torch.nn.functional.pad(torch.stack([b, b.flip(-1)]), (pad, pad, pad, pad))
        windows = [
            padded[f, :, pad + dy : pad + dy + 16, pad + dx : pad + dx + 16]
            for f in (0, 1)
            for dy in range(-pad, pad + 1)
            for dx in range(-pad, pad + 1)
        ]
        assert any(torch.equal(a, w) for w in windows)
    assert not torch.equal(cropped, augment(images, "flip", torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="augmentation"):
        gi.ThreatModel(augmentation="rotate")  # type: ignore[arg-type]


def test_the_shared_gradient_is_that_of_the_clients_augmented_batch() -> None:
    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1, 0, 3, 4], size=16)
    threat = gi.ThreatModel(augmentation="crop_flip")
    obs = gi.observe(model, images, labels, threat=threat, seed=5)
    trained_on = augmented_batch(images, threat, 5)
    expected = compute_update(obs.model, normalize(trained_on, None), labels, threat)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(obs.update.values(), expected, strict=True))
    plain = gi.observe(model, images, labels, seed=5)
    assert not torch.allclose(plain.update["fc.weight"], obs.update["fc.weight"])
    assert not torch.equal(trained_on, images)


def test_a_fedavg_client_draws_afresh_for_every_local_epoch() -> None:
    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1, 0], size=16)
    threat = gi.ThreatModel(update="fedavg", local_steps=2, local_lr=0.1, augmentation="flip")
    copies, epochs = augmented_epochs(images, threat, 7)
    assert epochs == 2 and copies.shape[0] == 4 and not torch.equal(copies[:2], copies[2:])
    obs = gi.observe(model, images, labels, threat=threat, seed=7)
    # step 1 on epoch 1's copy, step 2 on epoch 2's
    weights = [p.detach().clone().requires_grad_(True) for p in obs.model.parameters()]
    names = [n for n, _ in obs.model.named_parameters()]
    current = weights
    for e in range(2):
        state = dict(zip(names, current, strict=True))
        logits = torch.func.functional_call(obs.model, state, (copies[2 * e : 2 * e + 2],))
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, labels), current)
        current = [w - 0.1 * g for w, g in zip(current, grads, strict=True)]
    for (name, shared), w0, w in zip(obs.update.items(), weights, current, strict=True):
        assert torch.allclose(shared, w0 - w, atol=1e-6), name


def test_idlg_recovers_what_the_client_trained_on_not_its_orientation() -> None:
    # the attacker knows the family, not the draw: iDLG inverts the augmented image, which is the private image
    # mirrored; scored against the photograph as it is, that looks like a failure
    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1], size=16)
    threat = gi.ThreatModel(augmentation="flip")
    seed = next(s for s in range(20) if not torch.equal(augmented_batch(images, threat, s), images))
    obs = gi.observe(model, images, labels, threat=threat, seed=seed)
    rec = gi.attacks.make("idlg", steps=50, line_search="strong_wolfe").reconstruct(obs)
    versus_trained_on = float(gi.metrics.psnr(rec.images, augmented_batch(images, threat, seed)).mean())
    versus_photo = float(gi.metrics.psnr(rec.images, images).mean())
    assert versus_trained_on > 30 and versus_photo < versus_trained_on - 15, (versus_trained_on, versus_photo)

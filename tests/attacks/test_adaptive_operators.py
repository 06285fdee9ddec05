"""Adaptive attacks that compute the trial through the client's operator or match its output's likelihood:
DP-SGD's clipping, quantisation cells, dropout masks, the orthant of signs, ATS's policy undone."""

from __future__ import annotations

import copy

import pytest
import torch

import gradinv as gi
from gradinv.attacks.adaptive import (
    TV_PRIOR,
    cell_distance,
    clipped_update,
    cone_distance,
    noise_prior,
    quantization_cells,
)
from tests.helpers import lenet_cat, plain_and_adaptive, psnrs


def test_the_adaptive_trial_update_is_dpsgd_s_clipping() -> None:
    # Prepare: a batch of two photographs; Opacus' DP-SGD gradient without noise is the reference
    from gradinv.defenses.dpsgd import dp_gradient

    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1, 2], size=16)
    x = gi.fl.client.normalize(images, gi.ThreatModel().normalization)
    generator = torch.Generator().manual_seed(0)
    # Execute
    ours = clipped_update(model, x, labels, gi.ThreatModel(), 0.5)
    opacus = dp_gradient(model, x, labels, noise_multiplier=0.0, max_grad_norm=0.5, generator=generator)
    # Assert: the same per-sample clipping and average (the per-sample norms, ~11, are far above 0.5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, opacus, strict=True))


def test_adaptive_idlg_computes_its_trial_through_dpsgd_s_clipping() -> None:
    # Prepare: DP-SGD clipping at 0.1 (the gradient's norm is 11), no noise, on the 16x16 cat through DLG's LeNet
    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1], size=16)
    dp = gi.defenses.make("dpsgd", noise_multiplier=0.0, max_grad_norm=0.1)
    obs = gi.observe(model, images, labels, seed=0, defenses=[dp])
    # Execute
    runs = plain_and_adaptive(obs, "idlg", steps=50, line_search="strong_wolfe")
    psnr = psnrs(runs, images, labels)
    # Assert: matching the clipped update with an unclipped trial fails; clipping the trial too recovers the image
    # (measured 5.6 against 38.6 dB)
    assert psnr[False] < 10 and psnr[True] > 30, psnr


def test_the_adaptive_trial_unrolls_dpsgd_s_local_steps_over_fedavg() -> None:
    # Prepare: two photographs, three local DP-SGD steps on mini-batches of one (Opacus, no noise) as the reference
    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1, 2], size=16)
    threat = gi.ThreatModel(update="fedavg", local_steps=3, local_lr=0.5, local_batch_size=1)
    x = gi.fl.client.normalize(images, threat.normalization)
    dp = gi.defenses.make("dpsgd", noise_multiplier=0.0, max_grad_norm=0.5)
    client_model = dp.prepare_model(copy.deepcopy(model))  # the client steps its own copy in place
    client = dp.client_update(client_model, x, labels, threat, torch.Generator().manual_seed(0))
    # Execute
    ours = clipped_update(model, x, labels, threat, 0.5)
    # Assert: the same steps on the same mini-batches, each clipped per sample (each moves the weights, so a
    # trial that clipped only once, or took one step, would differ)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, client, strict=True))
    one = clipped_update(model, x, labels, gi.ThreatModel(), 0.5)
    assert not torch.allclose(ours[0], 3 * 0.5 * one[0], atol=1e-4)
    # and the noise of the update: three steps' noises, each lr * sigma * C / b
    noisy_dp = gi.defenses.make("dpsgd", noise_multiplier=2.0, max_grad_norm=0.5)
    noisy = gi.observe(model, images, labels, threat=threat, defenses=[noisy_dp])
    expected = 2 * 3 * (0.5 * 2.0 * 0.5 / 1) ** 2 * TV_PRIOR * 2 * 3 * 16 * 16
    assert noise_prior(noisy, 2) == pytest.approx(expected)


def test_adaptive_dlg_breaks_dpsgd_clipping_over_fedavg() -> None:
    # Prepare: the cat through DLG's LeNet, two local DP-SGD steps clipped at 0.1 (no noise)
    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1], size=16)
    threat = gi.ThreatModel(update="fedavg", local_steps=2, local_lr=0.1)
    dp = gi.defenses.make("dpsgd", noise_multiplier=0.0, max_grad_norm=0.1)
    obs = gi.observe(model, images, labels, seed=0, defenses=[dp], threat=threat)
    # Execute
    psnr = psnrs(plain_and_adaptive(obs, "idlg", steps=50, line_search="strong_wolfe"), images, labels)
    # Assert: the unclipped trial fails, the trial through the client's clipped local steps recovers the cat
    assert psnr[False] < 12 and psnr[True] > 25, psnr


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_every_true_entry_lies_in_its_quantisation_cell(bits: int) -> None:
    # Prepare: the same client update, shared in full and quantised
    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1], size=16)
    true = gi.observe(model, images, labels, seed=0).update
    shared = gi.observe(model, images, labels, seed=0, defenses=[gi.defenses.make("quantize", bits=bits)]).update
    # Execute
    lower, upper = quantization_cells(list(shared.values()), bits)
    # Assert: the cells hold the truth, and are as narrow as the rounding (one step wide; the sign's half-range)
    half = 2 ** (bits - 1) - 1
    for g, q, lo, hi in zip(true.values(), shared.values(), lower, upper, strict=True):
        slack = 1e-6 * float(g.abs().max())  # float32 rounding of g / step
        assert bool((lo <= g + slack).all() and (g <= hi + slack).all())
        width = q.abs().max() / half if half else q.abs().max()
        assert float((hi - lo).max()) <= float(width) * (1 + 1e-4)  # the float32 subtraction rounds too
    # the cell distance: no penalty for the truth (the plain distance to the levels has one), one outside the cells
    distance = cell_distance(lower, upper)
    inside = [torch.clamp(g, lo, hi) for g, lo, hi in zip(true.values(), lower, upper, strict=True)]
    assert float(distance(inside, list(shared.values()))) == 0.0
    outside = [u + 2 * (hi - lo) + 1e-3 for u, lo, hi in zip(upper, lower, upper, strict=True)]
    assert float(distance(outside, list(shared.values()))) > 0


def test_adaptive_inverting_gradients_matches_the_quantisation_cells() -> None:
    model, images, labels, obs = lenet_cat(gi.defenses.make("quantize", bits=2))
    runs = plain_and_adaptive(obs, "inverting_gradients", steps=1000)
    psnr = psnrs(runs, images, labels)
    # 2 bits: three levels per tensor; matching the cells instead of the levels: measured 6.5 against 17.6 dB
    assert runs[True].info["adaptive_distance"] == "cell_distance" and psnr[True] > psnr[False] + 6, psnr


def test_adaptive_idlg_optimises_the_dropout_masks() -> None:
    # Prepare: Zheng's dropout (p = 0.5, before the classifier) on the 16x16 cat through DLG's LeNet; the client's
    # masks are private
    model, images, labels, obs = lenet_cat(gi.defenses.make("dropout", p=0.5))
    # Execute
    runs = plain_and_adaptive(obs, "idlg", steps=50, line_search="strong_wolfe")
    psnr = psnrs(runs, images, labels)
    # Assert: fresh random masks defeat the plain attack; optimising them (Scheliga et al.) recovers the image
    # (measured 7.1 against 46.1 dB); the observation's model is left without masks
    assert runs[True].info["private_draws"] == "optimised" and psnr[False] < 12 and psnr[True] > 30, psnr
    assert all(getattr(m, "mask", None) is None for m in obs.model.modules())


def test_adaptive_inverting_gradients_matches_the_orthant_of_the_shared_signs() -> None:
    # Prepare: signSGD's update (the signs only) of the 16x16 cat through DLG's LeNet
    model, images, labels, obs = lenet_cat(gi.defenses.make("sign"))
    true = [u for u in gi.observe(model, images, labels, seed=0).update.values()]
    signs = list(obs.update.values())
    # the cone distance is 0 for the true gradient at any scale, 1 for its opposite
    assert float(cone_distance([3 * t for t in true], signs)) == 0.0
    assert float(cone_distance([-t for t in true], signs)) == pytest.approx(1.0)
    # a zero sign (a unit that passed no gradient) asks for an exact zero
    assert float(cone_distance([torch.tensor([1.0, 1.0])], [torch.tensor([1.0, 0.0])])) == pytest.approx(0.5)
    # Execute
    runs = plain_and_adaptive(obs, "inverting_gradients", steps=1000)
    psnr = psnrs(runs, images, labels)
    # Assert: matching the orthant, not the +-1 vector: measured 6.6 against 21.4 dB
    assert runs[True].info["adaptive_distance"] == "cone_distance" and psnr[True] > psnr[False] + 8, psnr


def test_adaptive_inverting_gradients_optimises_the_dropout_masks_too() -> None:
    # the masks are leaves of Adam beside the images: a run that left them out of its gradient kept the fresh random
    # masks of the plain attack
    model, images, labels, obs = lenet_cat(gi.defenses.make("dropout", p=0.5))
    runs = plain_and_adaptive(obs, "inverting_gradients", steps=1000)
    psnr = psnrs(runs, images, labels)
    assert psnr[True] > psnr[False] + 6, psnr  # measured 7.3 against 19.5 dB


def test_adaptive_idlg_undoes_the_ats_policy_on_what_it_recovers() -> None:
    # Prepare: the cat (16x16) through ATS 3-1-7 (translateX 9, contrast 6, translateY 2) and DLG's LeNet
    from gradinv.attacks.ats_decode import undo
    from gradinv.defenses import ats
    from gradinv.fl.client import encode_batch

    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1], size=16)
    defense = gi.defenses.make("ats", policy="3-1-7")
    obs = gi.observe(model, images, labels, seed=0, defenses=[defense])
    encoded, _ = encode_batch(images, labels, 10, [defense], seed=0)
    # Execute
    plain, adaptive = plain_and_adaptive(obs, "idlg", steps=50, line_search="strong_wolfe").values()
    # Assert: the plain attack recovers the transformed photograph (ATS hides nothing from the inversion), far from
    # the photograph itself; the adaptive one undoes the policy: the part of the cat the shift kept comes back
    assert float(gi.metrics.psnr(plain.images, encoded)) > 30.0
    assert float(gi.metrics.psnr(plain.images, images)) < 12.0
    assert adaptive.info["ats_decoded"] == "3-1-7"
    # measured where the client's own draw (found by replaying each draw on the photograph) kept the cat in view
    draws = [[a, b, c] for a in (1, -1) for b in (1, -1) for c in (1, -1)]
    drawn = next(d for d in draws if torch.equal(ats.transform(images[0], [3, 1, 7], d), encoded[0]))
    kept = (undo(ats.transform(torch.ones(3, 16, 16), [3, 1, 7], drawn), [3, 1, 7], drawn) > 0.5).all(dim=0)
    error = (adaptive.images[0] - images[0]).abs()[:, kept].mean()
    assert float(error) < 0.03 and float((plain.images[0] - images[0]).abs()[:, kept].mean()) > 0.15

"""Soteria masks the representation's gradient and stops the optimisation attacks on the DLG LeNet."""

import pytest
import torch

import gradinv as gi
from gradinv.defenses.soteria import representation_sensitivity


def test_batched_sensitivity_matches_the_papers_per_feature_loop() -> None:
    # Prepare: the paper code's loop, one backward pass per feature
    images, _ = gi.data.load("skimage", n=2, size=16, seed=0)
    model = gi.models.make("lenet", image_shape=(3, 16, 16), seed=0)
    x = images.clone().requires_grad_(True)
    r = model.body(x).flatten(1)
    expected = torch.zeros(r.shape[1])
    for f in range(r.shape[1]):
        (g,) = torch.autograd.grad(r[:, f].sum(), x, retain_graph=True)
        expected[f] = (g.flatten(1).norm(dim=1) / (r[:, f].detach() + 1e-10)).sum()
    # Execute
    ours = representation_sensitivity(model, model.fc, images)
    # Assert
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)


def test_soteria_masks_only_the_classifier_columns_of_insensitive_features(photo) -> None:
    images, labels = photo
    model = gi.models.make("lenet", seed=0)
    plain = gi.observe(model, images, labels)
    masked = gi.observe(model, images, labels, defenses=[gi.defenses.make("soteria", pruning_rate=80)])
    zero_columns = (masked.update["fc.weight"] == 0).all(dim=0)
    assert abs(float(zero_columns.double().mean()) - 0.8) < 0.01
    kept = ~zero_columns
    torch.testing.assert_close(masked.update["fc.weight"][:, kept], plain.update["fc.weight"][:, kept])
    for name in plain.update:
        if name != "fc.weight":
            torch.testing.assert_close(masked.update[name], plain.update[name])


def test_soteria_at_80_percent_stops_idlg_on_the_dlg_lenet(photo, lenet_cat) -> None:
    images, labels = photo
    attack = gi.attacks.make("idlg", steps=100, seed=0)
    defended = gi.observe(lenet_cat.model, images, labels, defenses=[gi.defenses.make("soteria", pruning_rate=80)])
    assert gi.metrics.score(lenet_cat.idlg, images, labels)["psnr"] > 30.0  # undefended (shared run)
    assert gi.metrics.score(attack.reconstruct(defended), images, labels)["psnr"] < 15.0


def test_soteria_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="percentage"):
        gi.defenses.make("soteria", pruning_rate=100)

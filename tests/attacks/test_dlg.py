"""DLG and iDLG on DLG's sigmoid LeNet, batch 1: four real photographs at initialisation, four digits on a trained
network. The counts asserted are the README's; ``benchmarks/optimisation_attacks.py`` re-measures every variant
(the strong-Wolfe DLG on the photographs and iDLG on the trained network are left to it: the suite's time)."""

import pytest
import torch

import gradinv as gi

PHOTOS = {"astronaut": 0, "cat": 1, "coffee": 2, "rocket": 3}
VARIANTS = {"idlg": ("idlg", {}), "dlg": ("dlg", {}), "dlg-wolfe": ("dlg", {"line_search": "strong_wolfe"})}


def _successes(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, variant: str) -> list[float]:
    """PSNR of each image's reconstruction (100 L-BFGS steps, labels withheld), and asserts every label is right
    where the image is recovered."""
    name, options = VARIANTS[variant]
    psnrs = []
    for i in range(images.shape[0]):
        obs = gi.observe(model, images[i : i + 1], labels[i : i + 1], threat=gi.ThreatModel(bn_mode="eval"))
        rec = gi.attacks.make(name, steps=100, seed=0, **options).reconstruct(obs)
        scores = gi.metrics.score(rec, images[i : i + 1], labels[i : i + 1])
        if scores["psnr"] > 30:
            assert scores["label_acc"] == 1.0 and not any(rec.certified), (variant, i, scores)
        psnrs.append(scores["psnr"])
    return psnrs


@pytest.mark.parametrize("variant, wins", [("idlg", 4), ("dlg", 3)])
def test_on_four_photographs_at_initialisation(variant: str, wins: int) -> None:
    # Prepare: astronaut, cat, coffee, rocket at 16x16 through the untrained LeNet
    images, labels = gi.data.load("skimage", indices=list(PHOTOS.values()), size=16)
    model = gi.models.make("lenet", image_shape=(3, 16, 16), seed=0)
    # Execute
    psnrs = _successes(model, images, labels, variant)
    # Assert: the README's count of images above 30 dB (a lower bound: trajectories differ in the last bits
    # across machines). The paper's fixed-step L-BFGS with joint labels diverges on the astronaut.
    assert sum(p > 30 for p in psnrs) >= wins, psnrs


@pytest.mark.parametrize("variant, wins", [("dlg-wolfe", 1)])
def test_on_a_trained_lenet(trained, variant: str, wins: int) -> None:
    # Prepare: two held-out digits through the LeNet trained for 5 epochs (test accuracy ~0.87)
    assert trained.lenet.accuracy > 0.8
    # Execute
    psnrs = _successes(trained.lenet.model, trained.images[:2], trained.labels[:2], variant)
    # Assert: training makes the attack much harder (at initialisation the same digits all come back); the
    # line search keeps at least one of these two (3 of 4 in benchmarks/optimisation_attacks.py, where iDLG's
    # fixed steps keep 1 of 4 and the paper's DLG none)
    assert sum(p > 30 for p in psnrs) >= wins, psnrs

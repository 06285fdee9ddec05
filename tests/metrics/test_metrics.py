import math

import pytest
import torch
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

import gradinv as gi
from gradinv.metrics import lpips as lp
from gradinv.metrics import match, psnr, ssim


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    images, _ = gi.data.load("skimage", n=4, size=32, seed=0)
    noisy = (images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    return images, noisy


def test_ssim_matches_torchmetrics(pair) -> None:
    a, b = pair
    ours = ssim(a, b)
    for i in range(len(a)):
        ref = structural_similarity_index_measure(a[i : i + 1].double(), b[i : i + 1].double(), data_range=1.0)
        assert abs(float(ours[i]) - float(ref)) < 1e-6


def test_valid_ssim_matches_scikit_image(pair) -> None:
    a, b = pair
    ours = ssim(a, b, padding="valid")
    for i in range(len(a)):
        ref = structural_similarity(
            a[i].permute(1, 2, 0).numpy(),
            b[i].permute(1, 2, 0).numpy(),
            channel_axis=2,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert abs(float(ours[i]) - float(ref)) < 1e-5


def test_psnr_matches_torchmetrics(pair) -> None:
    a, b = pair
    ours = psnr(a, b)
    for i in range(len(a)):
        ref = peak_signal_noise_ratio(a[i : i + 1], b[i : i + 1], data_range=1.0)
        assert abs(float(ours[i]) - float(ref)) < 1e-4


def test_matching_undoes_a_permutation(pair) -> None:
    a, b = pair
    perm = torch.tensor([2, 0, 3, 1])
    rows, cols = match(b[perm], a)
    assert [int(perm[r]) for r in rows] == cols.tolist()


def test_score_matches_before_scoring_and_reports_labels(pair) -> None:
    # Prepare: a permuted exact reconstruction with one wrong label
    images, _ = pair
    labels = torch.tensor([0, 1, 2, 3])
    perm = torch.tensor([3, 1, 0, 2])
    predicted = labels[perm].clone()
    predicted[0] = 9
    rec = gi.Reconstruction(images=images[perm], labels=predicted, trace=[], seconds=0.0)
    # Execute
    scores = gi.metrics.score(rec, images, labels)
    # Assert
    assert scores["psnr"] == 1000.0 and math.isclose(scores["ssim"], 1.0)
    assert scores["label_acc"] == 0.75 and scores["label_count_acc"] == 0.75
    assert [e["index"] for e in scores["per_image"]] == [0, 1, 2, 3]


def test_lpips_reports_why_it_is_missing_or_scores(pair) -> None:
    a, b = pair
    reason = lp.unavailable_reason()
    scores = gi.metrics.score(gi.Reconstruction(images=b, labels=None, trace=[], seconds=0.0), a)
    if reason is None:
        assert 0 < scores["lpips"] < 1
    else:
        assert scores["lpips"] is None and "LPIPS unavailable" in scores["lpips_note"]
        with pytest.raises(RuntimeError, match="missing"):
            lp.lpips(a, b)


def test_metrics_reject_bad_shapes(pair) -> None:
    a, b = pair
    with pytest.raises(ValueError, match="one shape"):
        psnr(a, b[:, :1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gi.metrics.score(gi.Reconstruction(images=b * 3, labels=None, trace=[], seconds=0.0), a)


def test_lpips_network_runs_from_weight_files(tmp_path, monkeypatch, pair) -> None:
    # Prepare: weight files of the right layout (random values: this checks the plumbing, not the calibration)
    torch.manual_seed(0)
    features = lp._alexnet_features()
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "alexnet.pth")
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(lp._CHANNELS)}
    torch.save(lins, tmp_path / "alex.pth")
    monkeypatch.setenv("GRADINV_LPIPS_BACKBONE", str(tmp_path / "alexnet.pth"))
    monkeypatch.setenv("GRADINV_LPIPS_LINEAR", str(tmp_path / "alex.pth"))
    lp._network.cache_clear()
    a, b = pair
    try:
        # Execute
        assert lp.unavailable_reason() is None
        same, noisy = lp.lpips(a, a), lp.lpips(a, b)
        scores = gi.metrics.score(gi.Reconstruction(images=b, labels=None, trace=[], seconds=0.0), a)
    finally:
        lp._network.cache_clear()
    # Assert
    assert torch.allclose(same, torch.zeros(4), atol=1e-6) and (noisy > 0).all()
    assert scores["lpips"] == pytest.approx(float(noisy.mean()), rel=1e-5)


def test_psnr_matching_keeps_exact_pairs_that_mse_matching_trades_away() -> None:
    # Prepare: one-pixel images; rec 0 equals orig 0, rec 1 is far from orig 1 (MSE 12 s^2) but nearer orig 0 (3 s^2)
    s = 0.1
    originals = torch.tensor([0.5, 0.5 + 3**0.5 * s]).view(2, 1, 1, 1)
    recs = torch.tensor([0.5, 0.5 - 3**0.5 * s]).view(2, 1, 1, 1)
    # Execute
    _, by_psnr = match(recs, originals)
    _, by_mse = match(recs, originals, cost="mse")
    # Assert: MSE matching swaps (total 6 s^2 < 12 s^2) and loses the exact pair; PSNR matching keeps it
    assert by_mse.tolist() == [1, 0]
    assert by_psnr.tolist() == [0, 1]


def test_scores_count_unknown_labels_as_wrong_and_take_the_attacks_label_counts(pair) -> None:
    # Prepare: the right images in shuffled order, one label unknown, the batch's label counts given separately
    images, _ = pair
    labels = torch.tensor([0, 1, 1, 2])
    order = torch.tensor([2, 0, 3, 1])
    predicted = labels[order].clone()
    predicted[1] = -1  # the attack could not tell the class of its second image (original 0)
    counts = torch.bincount(labels, minlength=3)
    rec = gi.Reconstruction(
        images=images[order], labels=predicted, trace=[], seconds=0, certified=[True, False, True, False],
        label_counts=counts,
    )  # fmt: skip
    # Execute
    scores = gi.metrics.score(rec, images, labels)
    # Assert: labels follow their images through the matching; -1 is wrong; counts come from label_counts
    assert scores["label_acc"] == 0.75 and scores["labels_known"] == 0.75 and scores["label_count_acc"] == 1.0
    assert scores["certified_fraction"] == 0.5 and scores["certified_not_exact"] == 0
    assert [e["label_pred"] for e in scores["per_image"]] == [None, 1, 1, 2]
    assert [e["certified"] for e in scores["per_image"]] == [False, False, True, True]


def test_a_certified_image_that_is_wrong_is_counted(pair) -> None:
    images, noisy = pair
    rec = gi.Reconstruction(images=noisy, labels=None, trace=[], seconds=0, certified=[True, False, False, False])
    assert gi.metrics.score(rec, images)["certified_not_exact"] == 1


@pytest.mark.parametrize(
    "labels, predicted, error, message",
    [
        (torch.tensor([0, 1, 2, 3, 4]), None, ValueError, r"labels must have shape \(4,\)"),
        (torch.tensor([0.0, 1.0, 1.0, 2.0]), None, TypeError, "integer class indices"),
        (torch.tensor([0, 1, 1, 2]), torch.tensor([0.5, 1.0, 1.0, 2.0]), TypeError, "reconstruction.labels"),
        (torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1]), ValueError, r"reconstruction.labels must have shape"),
        (torch.tensor([0, -1, 1, 2]), None, ValueError, "labels must be >= 0"),
    ],
)
def test_score_rejects_labels_that_do_not_fit(pair, labels, predicted, error, message) -> None:
    images, noisy = pair
    rec = gi.Reconstruction(images=noisy, labels=predicted, trace=[], seconds=0)
    with pytest.raises(error, match=message):
        gi.metrics.score(rec, images, labels)

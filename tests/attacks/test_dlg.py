"""DLG and iDLG reach the papers' quality on the DLG LeNet (sigmoid), batch 1, real photographs."""

import gradinv as gi


def test_dlg_recovers_image_and_label(lenet_cat) -> None:
    # Prepare
    images, labels = lenet_cat.images, lenet_cat.labels
    # Execute: DLG with its joint dummy label (L-BFGS, lr 1, 100 steps; shared with the defense tests)
    rec = lenet_cat.dlg
    scores = gi.metrics.score(rec, images, labels)
    # Assert
    assert scores["psnr"] >= 30.0, scores
    assert scores["label_acc"] == 1.0
    assert rec.residual["rel_l2"] < 1e-2  # the residual certifies what ground truth confirms
    assert rec.info["label_source"] == "joint optimisation"


def test_idlg_recovers_image_with_the_exact_label(lenet_cat) -> None:
    rec = lenet_cat.idlg  # 100 steps, shared with the defense tests
    scores = gi.metrics.score(rec, lenet_cat.images, lenet_cat.labels)
    assert scores["psnr"] >= 30.0, scores
    assert scores["label_acc"] == 1.0 and rec.info["label_source"] == "idlg"

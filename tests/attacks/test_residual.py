import torch

import gradinv as gi
from gradinv.attacks import gradient_residual


def test_residual_certifies_the_true_batch_and_flags_a_wrong_one() -> None:
    # Prepare
    images, labels = gi.data.load("skimage", n=3, size=32, seed=0)
    for threat in (gi.ThreatModel(), gi.ThreatModel(update="fedavg", local_steps=2, local_lr=0.01)):
        obs = gi.observe(gi.models.make("convnet", width=4, seed=0), images, labels, threat=threat)
        # Execute
        exact = gradient_residual(obs, images, labels)
        wrong = gradient_residual(obs, torch.rand_like(images), labels)
        # Assert
        assert exact["rel_l2"] < 1e-5 and abs(exact["cosine"] - 1) < 1e-9
        assert wrong["rel_l2"] > 0.05


def test_residual_of_the_true_encodings_with_their_soft_labels_is_zero() -> None:
    # Prepare: MixUp and InstaHide clients; the evaluation re-derives the very encodings each client trained on
    from gradinv.fl.client import encode_batch

    images, labels = gi.data.load("skimage", n=4, size=16, seed=0)
    model = gi.models.make("mlp", image_shape=(3, 16, 16), hidden=(64,), seed=0)
    for name in ("mixup", "instahide"):
        defense = gi.defenses.make(name, k=2, pool="batch")
        obs = gi.observe(model, images, labels, seed=5, defenses=[defense])
        encodings, targets = encode_batch(images, labels, 10, [defense], seed=5)
        assert targets.dim() == 2 and bool(((targets > 0) & (targets < 1)).any())  # genuinely soft
        # Execute
        soft = gradient_residual(obs, encodings, targets)
        rounded = gradient_residual(obs, encodings, targets.argmax(dim=1))
        # Assert: the soft targets reproduce the update; rounding them does not
        assert soft["rel_l2"] < 1e-5, (name, soft)
        assert rounded["rel_l2"] > 0.05

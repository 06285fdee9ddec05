"""CAFE (Jin et al., NeurIPS 2021) on real digits in vertical FL: its Steps I-II are exact on a fixed model, and
with them the whole training set comes back; gradient matching alone does not."""

import pytest
import torch

import gradinv as gi
from gradinv.attacks.cafe import CAFE, adam_rows, membership, recover_loss_gradients
from gradinv.fl.vertical import VerticalModel, VerticalObservation, record_residual, strips, train_vertical


@pytest.fixture(scope="module")
def fixed_run() -> tuple:
    images, labels = gi.data.load("mnist_subset", n=20, size=16, channels=1, seed=0)
    model = VerticalModel(image_shape=(1, 16, 16), parties=4, seed=0)
    obs = train_vertical(model, images, labels, batch_size=5, iterations=40, lr=0.0, seed=0)
    return obs, images, labels, model


def test_steps_one_and_two_recover_each_samples_loss_gradient_and_layer_input(fixed_run: tuple) -> None:
    # Prepare: the truth, per sample: dl_i/dZ_i at each party's first fully connected layer, and its input H_i
    obs, images, labels, model = fixed_run
    parts = strips(images, 4)
    features = [model.bottoms[m].features(p).detach() for m, p in enumerate(parts)]
    z = [model.bottoms[m].fc(f).detach().requires_grad_(True) for m, f in enumerate(features)]
    loss = torch.nn.functional.cross_entropy(model.top(torch.cat(z, dim=1)), labels, reduction="sum")
    truth = torch.autograd.grad(loss, z)
    # Execute
    a = membership(obs.batches, 20)
    v = recover_loss_gradients(a, torch.stack([g["bottoms.1.fc.bias"] for g in obs.gradients]))
    inputs = CAFE().layer_inputs(obs)
    # Assert
    assert torch.allclose(a.sum(dim=1), torch.ones(40, dtype=torch.float64))
    assert torch.allclose(v.float(), truth[1], atol=1e-6)
    for m in range(4):
        assert torch.allclose(inputs[m], features[m], atol=1e-5)


def test_cafe_recovers_the_whole_training_set(fixed_run: tuple) -> None:
    # Prepare
    obs, images, labels, _ = fixed_run
    # Execute: with CAFE's first-layer alignment, and with gradient matching over the record alone
    rec = CAFE(passes=6).reconstruct(obs)
    plain = CAFE(passes=6, alignment=0.0).reconstruct(obs)
    # Assert: every one of the 20 digits comes back (> 40 dB, in its own index, with its label); without the
    # alignment most do not
    psnr = gi.metrics.psnr(rec.images, images)
    assert float(psnr.min()) > 40.0
    assert torch.equal(rec.labels, labels) and rec.info["never_seen"] == [] and rec.info["device"] == "cpu"
    start = torch.rand((20, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    plain_psnr = float(gi.metrics.psnr(plain.images, images).mean())
    assert float(gi.metrics.psnr(start, images).mean()) + 10.0 < plain_psnr < float(psnr.min()) - 10.0


def test_cafe_refuses_a_horizontal_observation_bad_settings_and_absent_devices(fixed_run: tuple) -> None:
    with pytest.raises(ValueError, match="passes"):
        CAFE(passes=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            CAFE().reconstruct(fixed_run[0], device="cuda")
    images, labels = gi.data.load("skimage", n=1, size=16)
    obs = gi.observe(gi.models.make("lenet", image_shape=(3, 16, 16)), images, labels)
    with pytest.raises(TypeError, match="VerticalObservation"):
        CAFE().reconstruct(obs)
    with pytest.raises(TypeError, match="VerticalObservation"):
        CAFE().run(obs, None)


def test_cafe_is_a_registered_vertical_attack_with_progress(fixed_run: tuple, tmp_path) -> None:
    from gradinv.pipeline import RunConfig, run

    assert "cafe" in gi.attacks.names() and gi.attacks.names("vertical") == ["cafe"]
    assert "cafe" not in gi.attacks.names("horizontal") and "Jin et al." in gi.attacks.describe()["cafe"]
    steps: list[tuple[int, int]] = []
    rec = gi.attacks.make("cafe", passes=1).reconstruct(fixed_run[0], callback=lambda s, t, _: steps.append((s, t)))
    assert steps == [(s, 40) for s in range(1, 41)] and len(rec.trace) == 40
    # the one-client pipeline (gradinv attack) points to the vertical command instead of failing inside
    with pytest.raises(ValueError, match="run `gradinv vertical`"):
        run(RunConfig(attacks=["cafe"]), tmp_path / "out")
    with pytest.raises(ValueError, match="setting must be"):
        gi.attacks.names("diagonal")


def test_samples_no_batch_contains_are_reported_and_left_alone(fixed_run: tuple) -> None:
    # Prepare: the record without the iterations whose batch held sample 19
    obs, _, labels, _ = fixed_run
    keep = [t for t, b in enumerate(obs.batches) if 19 not in b.tolist()]
    partial = VerticalObservation(
        obs.model, obs.lr, [obs.batches[t] for t in keep], [obs.gradients[t] for t in keep], labels, obs.image_shape
    )
    start = torch.rand((20, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    # Execute
    rec = CAFE(passes=1).reconstruct(partial)
    # Assert
    assert rec.info["never_seen"] == [19] and rec.info["iterations"] == len(keep)
    assert torch.equal(rec.images[19], start[19]) and not torch.equal(rec.images[0], start[0])


def test_adam_on_rows_is_adam_for_each_row() -> None:
    # Prepare: three rows stepped in different batches, against torch's Adam on each row alone
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((3, 4), generator=generator)
    state = (torch.zeros_like(x), torch.zeros_like(x), torch.zeros(3))
    rows = [x[i].clone().requires_grad_(True) for i in range(3)]
    reference = [torch.optim.Adam([r], lr=0.1) for r in rows]
    # Execute: five steps on rows {0, 2}, {1}, {0, 1, 2}, {2}, {0}
    for index in ([0, 2], [1], [0, 1, 2], [2], [0]):
        grad = torch.randn((len(index), 4), generator=generator)
        x[index] = adam_rows(x[index], grad, state, torch.tensor(index), 0.1)
        for j, i in enumerate(index):
            rows[i].grad = grad[j].clone()
            reference[i].step()
    # Assert
    for i in range(3):
        assert torch.allclose(x[i], rows[i].detach(), atol=1e-6)


def test_the_record_residual_is_zero_for_the_truth_only(fixed_run: tuple) -> None:
    obs, images, _, _ = fixed_run
    assert record_residual(obs, images)["rel_l2"] < 1e-5
    assert record_residual(obs, images.flip(0))["rel_l2"] > 0.1

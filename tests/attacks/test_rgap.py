"""R-GAP is exact on rank-sufficient chains, degrades where the rank analysis says so, and names what it cannot do."""

import pytest
import torch
from torch import nn

import gradinv as gi

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
NARROW = (3, 9, 9, 9, 16, 32)  # too few first-layer channels: 3*81 + 3*48 constraints for 768 unknowns


def _observe(model: nn.Module, n: int = 1, seed: int = 1, **threat: object) -> tuple[gi.Observation, torch.Tensor]:
    images, labels = gi.data.load("skimage", n=n, size=16, seed=seed)
    return gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM, **threat)), images


@pytest.mark.parametrize("seed, head_bias", [(1, True), (3, False)])
def test_rgap_is_exact_on_the_rank_sufficient_cnn6(seed: int, head_bias: bool) -> None:
    # Prepare: R-GAP's CNN6 (bias-free, LeakyReLU), with and without a classifier bias (the scalar solve)
    model = gi.models.make("cnn6", image_shape=(3, 16, 16), seed=seed, head_bias=head_bias)
    images, labels = gi.data.load("skimage", n=1, size=16, seed=seed)
    obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM))
    # Execute
    rec = gi.attacks.make("rgap").reconstruct(obs)
    scores = gi.metrics.score(rec, images, labels)
    # Assert: above 60 dB (the paper's bar), every layer rank-sufficient at the answer, so certified
    assert scores["psnr"] > 60 and scores["label_acc"] == 1.0
    assert rec.info["rank_sufficient"] and rec.residual["rel_l2"] < 1e-4 and rec.certified == [True]


def test_rgap_degrades_where_the_rank_analysis_says_so() -> None:
    # Prepare: the same image through CNN6 and through a CNN6 whose first layer is rank-deficient
    full = gi.models.make("cnn6", image_shape=(3, 16, 16), seed=0)
    narrow = gi.models.make("cnn6", image_shape=(3, 16, 16), seed=0, channels=NARROW)
    images, labels = gi.data.load("skimage", n=1, size=16, seed=1)
    # Execute
    psnr = {}
    for name, model in (("full", full), ("narrow", narrow)):
        obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM))
        rec = gi.attacks.make("rgap").reconstruct(obs)
        psnr[name] = gi.metrics.score(rec, images, labels)["psnr"]
        if name == "narrow":
            narrow_rec = rec
    report = gi.analysis.rank_report(narrow, (3, 16, 16))
    # Assert: the report flags the first layer (768 unknowns, 243 forward + 144 gradient equations) and only it
    first = report[0]
    assert (first.unknowns, first.forward_constraints, first.gradient_constraints) == (768, 243, 144)
    assert not first.sufficient and first.rank < 768 and all(r.sufficient for r in report[1:])
    assert not narrow_rec.info["rank_sufficient"]
    # exact vs measurably worse, although the deficient answer reproduces the gradient: the gradient does not
    # determine the input there, so it is never certified, whatever its residual
    assert psnr["full"] > 60 and psnr["narrow"] < 45 and psnr["full"] - psnr["narrow"] > 20
    assert narrow_rec.residual["rel_l2"] < 1e-3 and narrow_rec.certified == [False]
    assert "rank-deficient at the answer ('body.0' rank" in narrow_rec.certificate
    first_at_answer = narrow_rec.info["ranks"][0]
    assert first_at_answer["unknowns"] == 768 and not first_at_answer["sufficient"]


def test_rgap_inverts_the_sigmoid_lenet_of_dlg() -> None:
    model = gi.models.make("lenet", image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", n=1, size=16, seed=2)
    obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM))
    rec = gi.attacks.make("rgap").reconstruct(obs)
    assert gi.metrics.score(rec, images, labels)["psnr"] > 60 and torch.equal(rec.labels, labels)
    assert rec.certified == [True] and rec.info["rank_sufficient"]


def test_rgap_reads_one_local_step_and_refuses_more() -> None:
    model = gi.models.make("cnn6", image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", n=1, size=16, seed=1)
    # the client sends float32 weights: w_before - w_after keeps ~4 digits of lr * gradient at lr 0.1 (and ~0 at the
    # default 1e-4), so one local step is read well but no longer to 60 dB
    threat = gi.ThreatModel(update="fedavg", local_steps=1, local_lr=0.1, normalization=NORM)
    rec = gi.attacks.make("rgap").reconstruct(gi.observe(model, images, labels, threat=threat))
    assert gi.metrics.score(rec, images, labels)["psnr"] > 35
    many = gi.observe(model, images, labels, threat=gi.ThreatModel(update="fedavg", local_steps=3))
    with pytest.raises(ValueError, match="3 local steps"):
        gi.attacks.make("rgap").reconstruct(many)


class _Skip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.fc = nn.Linear(768, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x + self.act(self.conv(x))).flatten(1))


@pytest.mark.parametrize(
    "model, n, message",
    [
        (gi.models.make("convnet", width=8, image_shape=(3, 16, 16), seed=0), 1, "BatchNorm2d"),
        (gi.models.make("cnn6", image_shape=(3, 16, 16), seed=0), 2, "single sample"),
        (_Skip(), 1, "skip connections"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(784, 10), nn.Sigmoid()), 1, "classifier"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(196, 10)), 1, "MaxPool2d"),
    ],
)
def test_rgap_names_the_failing_condition(model: nn.Module, n: int, message: str) -> None:
    obs, _ = _observe(model, n=n)
    with pytest.raises(ValueError, match=message):
        gi.attacks.make("rgap").reconstruct(obs)


def test_rank_report_on_the_paper_models() -> None:
    # CNN6 is rank-sufficient everywhere; DLG's LeNet too at 16x16; constraint counts follow the architecture
    cnn6 = gi.analysis.rank_report(gi.models.make("cnn6", image_shape=(3, 16, 16), seed=0), (3, 16, 16))
    assert [r.unknowns for r in cnn6] == [768, 972, 900, 900, 900, 576, 1152]
    assert all(r.sufficient for r in cnn6) and cnn6[0].forward_constraints == 12 * 9 * 9
    lenet = gi.analysis.rank_report(gi.models.make("lenet", image_shape=(3, 16, 16), seed=0), (3, 16, 16))
    assert all(r.sufficient for r in lenet)
    with pytest.raises(ValueError, match="BatchNorm2d"):
        gi.analysis.rank_report(gi.models.make("resnet20", image_shape=(3, 16, 16), seed=0), (3, 16, 16))


def _stacked_system(
    conv: nn.Conv2d, shape: tuple[int, int, int], g: torch.Tensor, z: torch.Tensor, weight_grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """R-GAP's stacked system built independently of the solvers: the Jacobians of ``x -> dL/dW`` (the weight
    gradient of the convolution for ``g``) and ``x -> conv(x)`` at the known units, each block scaled to unit
    Frobenius norm."""
    weight = conv.weight.detach().double()
    args = {"stride": conv.stride, "padding": conv.padding}

    def gradient_rows(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.grad.conv2d_weight(x[None], weight.shape, g[None], **args).reshape(-1)  # type: ignore[arg-type]

    def forward_rows(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x[None], weight, **args)[0][~torch.isnan(z)]  # type: ignore[arg-type]

    x0 = torch.zeros(shape, dtype=torch.float64)
    blocks, sides = [], []
    for rows, side in ((gradient_rows, weight_grad.reshape(-1)), (forward_rows, z[~torch.isnan(z)])):
        jac = torch.autograd.functional.jacobian(rows, x0).reshape(-1, x0.numel())
        blocks.append(jac / jac.norm())
        sides.append(side / jac.norm())
    return torch.cat(blocks), torch.cat(sides)


@pytest.mark.parametrize(
    "layer, shape, solver",
    [
        (nn.Conv2d(12, 36, 3, padding=1, bias=False), (12, 5, 5), "cg"),  # the gradient rows alone have full rank
        # strided: the pixels only the kernel's centre meets get 24 gradient rows for 25 unknowns per channel
        (nn.Conv2d(3, 24, 3, stride=2, padding=1, bias=False), (3, 9, 9), "cholesky"),
        (nn.Conv2d(3, 2, 4, stride=2, padding=2, bias=False), (3, 8, 8), "eigh"),  # too few rows: rank-deficient
    ],
)
def test_each_solver_gives_the_least_squares_solution_of_the_stacked_system(
    layer: nn.Conv2d, shape: tuple[int, int, int], solver: str
) -> None:
    # Prepare: an inconsistent system (a ReLU's unknown units, noisy targets), as a defended or float32 update gives
    from gradinv.attacks.rgap import conv_equations, solve_conv

    gen = torch.Generator().manual_seed(0)
    layer = layer.double().requires_grad_(False)
    torch.nn.init.normal_(layer.weight, generator=gen)
    x_true = torch.rand(shape, dtype=torch.float64, generator=gen)
    out = nn.functional.conv2d(x_true[None], layer.weight, stride=layer.stride, padding=layer.padding)[0]
    g = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    z = torch.where(torch.rand(out.shape, generator=gen) < 0.3, torch.nan, out)
    z = z + 0.05 * torch.randn(out.shape, dtype=torch.float64, generator=gen)
    weight_grad = torch.nn.grad.conv2d_weight(x_true[None], layer.weight.shape, g[None], layer.stride, layer.padding)
    noise = torch.randn(weight_grad.shape, dtype=torch.float64, generator=gen)
    weight_grad = weight_grad + 0.05 * weight_grad.std() * noise
    matrix, side = _stacked_system(layer, shape, g, z, weight_grad)
    # Execute
    # (25 CG steps here; 40 allowed: a CG whose directions are not conjugate falls back to the dense solve)
    x, rank, used = solve_conv(conv_equations(layer, shape, g, z, weight_grad), 1e-7, max_iter=40)
    # Assert: the solver expected for this structure, and the (minimum-norm) least-squares solution of the system
    expected = torch.linalg.pinv(matrix, rtol=1e-7) @ side
    assert used == solver and rank == torch.linalg.matrix_rank(matrix, rtol=1e-7)
    assert (rank == x_true.numel()) == (solver != "eigh")
    assert torch.allclose(torch.from_numpy(x), expected, rtol=0, atol=1e-8 * float(expected.abs().max()))
    # the noise matters: the answer is not the truth, so reaching the least-squares point is what is checked
    assert float((expected - x_true.reshape(-1)).abs().max()) > 1e-3

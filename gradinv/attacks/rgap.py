"""R-GAP: the recursive closed-form gradient attack (Zhu & Blaschko, "R-GAP: Recursive Gradient Attack on Privacy",
ICLR 2021).

For one sample, every layer ``z = W x (+ b)`` followed by an invertible activation ``x' = sigma(z)`` gives two sets of
linear equations in its input ``x`` (paper Sec. 3, Eq. 5-8):

- the *forward* constraints ``W x = sigma^{-1}(x') - b`` once the layer's output ``x'`` is known, and
- the *gradient* constraints ``dL/dW = g x^T`` (for a convolution: ``dL/dW[o] = sum_p g[o, p] patch_p(x)``, the
  weight-sharing case that conv-as-FC misses), with ``g = dL/dz = sigma'(z) * (W'^T g')`` from the layer above.

R-GAP starts at the classifier, where the gradient of softmax cross-entropy fixes its input, and solves the layers'
systems one after another down to the image. A layer's input is unique when the stacked system has full column rank:
that is the paper's rank analysis (Sec. 4), :func:`rank_report`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.lapack import dpocon
from scipy.optimize import brentq
from scipy.sparse import coo_matrix
from torch import nn

from gradinv.attacks.base import Attack, Callback, Result
from gradinv.attacks.exact import check_single_step
from gradinv.fl.client import cross_entropy, denormalize
from gradinv.observation import Observation
from gradinv.validation import check_arguments

ACTIVATIONS = (nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Identity, nn.ReLU)
MAX_UNKNOWNS = 20_000
"""Layers whose input has more entries are refused: their normal equations would not fit in memory."""


@dataclass(frozen=True)
class Stage:
    """One linear layer of the chain and what follows it up to the next linear layer."""

    name: str
    layer: nn.Conv2d | nn.Linear
    activation: nn.Module | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class LayerRank:
    """The rank analysis of one layer (R-GAP Sec. 4): can its input be solved for uniquely?"""

    layer: str
    kind: str
    unknowns: int
    forward_constraints: int
    gradient_constraints: int
    rank: int

    @property
    def sufficient(self) -> bool:
        """Full column rank: the layer's input is the unique solution."""
        return self.rank >= self.unknowns

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "sufficient": self.sufficient}


def chain(model: nn.Module, image_shape: tuple[int, ...]) -> list[Stage]:
    """Split a float64 copy of ``model`` into linear layers (Conv2d / Linear) and the elementwise activations between
    them; the stages hold that copy's modules (``model`` itself is not touched).

    Raises:
        ValueError: a module R-GAP cannot invert (pooling, BatchNorm, ...), two activations in a row, a layer with
            groups/dilation, an activation after the classifier, or a model that is not the chain of its leaves.
    """
    model = copy.deepcopy(model).double()
    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    stages: list[dict[str, Any]] = []
    for name, module in leaves:
        if isinstance(module, nn.Conv2d | nn.Linear):
            if isinstance(module, nn.Conv2d) and (
                module.groups != 1 or module.dilation != (1, 1) or module.padding_mode != "zeros"
            ):
                raise ValueError(f"R-GAP supports plain convolutions; {name!r} has groups/dilation/padding_mode")
            if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
                raise ValueError(f"R-GAP needs numeric padding; {name!r} has padding={module.padding!r}")
            stages.append({"name": name, "layer": module, "activation": None})
        elif isinstance(module, ACTIVATIONS):
            if not stages:
                raise ValueError(f"activation {name!r} comes before any linear layer")
            if stages[-1]["activation"] is not None:
                raise ValueError(f"two activations in a row ({name!r}): R-GAP inverts one per layer")
            stages[-1]["activation"] = module
        elif isinstance(module, nn.Flatten):
            continue
        else:
            raise ValueError(
                f"R-GAP inverts chains of Conv2d/Linear layers and elementwise invertible activations; "
                f"{name!r} is a {type(module).__name__}"
            )
    if not stages:
        raise ValueError("the model has no Conv2d or Linear layer")
    if not isinstance(stages[-1]["layer"], nn.Linear) or stages[-1]["activation"] is not None:
        raise ValueError("R-GAP needs a linear classifier as the last layer, with no activation after it")
    # run the leaves in order and check that this is what the model computes
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    probe = torch.rand(1, *image_shape, dtype=torch.float64)
    with torch.no_grad():
        expected = model(probe)
        x = probe
        for stage in stages:
            layer = stage["layer"]
            if isinstance(layer, nn.Linear):
                x = x.flatten(1)
            if x.shape[1:] != _expected_input(layer, x):
                raise ValueError(f"layer {stage['name']!r} does not take the previous layer's output")
            before = tuple(x.shape[1:])
            x = layer(x)
            shapes.append((before, tuple(x.shape[1:])))
            if stage["activation"] is not None:
                x = stage["activation"](x)
    if x.shape != expected.shape or not torch.allclose(x, expected, rtol=1e-9, atol=1e-9):
        raise ValueError("the model is not the plain chain of its layers (skip connections?): R-GAP cannot recurse")
    return [Stage(s["name"], s["layer"], s["activation"], i, o) for s, (i, o) in zip(stages, shapes, strict=True)]


def _expected_input(layer: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    if isinstance(layer, nn.Linear):
        return (layer.in_features,)
    return (layer.in_channels, *x.shape[2:])  # type: ignore[union-attr]


def invert_activation(activation: nn.Module | None, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, sigma'(z))`` from an activation's output ``sigma(z)``; for ReLU, ``z`` is unknown (NaN) where the output
    is zero, and the derivative there is 0."""
    if activation is None or isinstance(activation, nn.Identity):
        return output, torch.ones_like(output)
    if isinstance(activation, nn.LeakyReLU):
        slope = activation.negative_slope
        if slope <= 0:
            return invert_activation(nn.ReLU(), output)
        negative = output < 0
        return torch.where(negative, output / slope, output), torch.where(negative, slope, 1.0).to(output)
    if isinstance(activation, nn.ReLU):
        active = output > 0
        return torch.where(active, output, torch.nan), active.to(output)
    if isinstance(activation, nn.Sigmoid):
        y = output.clamp(1e-15, 1 - 1e-15)
        return torch.log(y) - torch.log1p(-y), y * (1 - y)
    if isinstance(activation, nn.Tanh):
        y = output.clamp(-1 + 1e-15, 1 - 1e-15)
        return torch.atanh(y), 1 - y * y
    raise ValueError(f"cannot invert {type(activation).__name__}")


def classifier_input(
    weight: torch.Tensor, weight_grad: torch.Tensor, bias_grad: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The classifier's input ``h``, ``g = dL/dlogits`` and the label, from one sample's cross-entropy gradient.

    ``dL/dW = g h^T`` with ``g = softmax(W h + b) - e_y``. With a bias ``g = dL/db`` (then ``h`` is the bias trick).
    Without one, the label's row has the largest norm (``|g_y| = sum_{k != y} g_k``) and ``h = dL/dW_y / t`` where
    ``t = p_y - 1`` solves the scalar equation ``t = softmax(W dL/dW_y / t)_y - 1`` (R-GAP's first step, Sec. 3.1, for
    softmax instead of the paper's logistic loss).
    """
    if bias_grad is not None and float(bias_grad.abs().max()) > 0:
        g = bias_grad
        h = (g @ weight_grad) / (g @ g)
        return h, g, int(g.argmin())
    label = int(weight_grad.norm(dim=1).argmax())
    direction = weight_grad[label]
    if float(direction.abs().max()) == 0:
        raise ValueError("the classifier's gradient is zero: nothing to invert")
    logits = weight @ direction

    def gap(t: float) -> float:
        return float(torch.softmax(logits / t, dim=0)[label]) - 1.0 - t

    # the gap may cross zero more than once: bracket every crossing on a grid dense near both ends, keep the root
    # whose g h^T reproduces the whole gradient
    ends = np.logspace(-12, 0, 400)
    grid = np.unique(np.concatenate([-ends, -1 + ends]).clip(-1 + 1e-12, -1e-12))
    values = np.array([gap(t) for t in grid])
    crossings = np.nonzero(np.sign(values[:-1]) * np.sign(values[1:]) <= 0)[0]
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for i in crossings:
        t = brentq(gap, grid[i], grid[i + 1], xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
        h = direction / t
        g = torch.softmax(weight @ h, dim=0)
        g[label] -= 1
        error = float((torch.outer(g, h) - weight_grad).norm())
        if best is None or error < best[0]:
            best = (error, h, g)
    if best is None:
        raise ValueError("no consistent scale for the classifier input (is the loss softmax cross-entropy?)")
    return best[1], best[2], label


def patch_index(input_shape: tuple[int, ...], conv: nn.Conv2d) -> torch.Tensor:
    """``(C*kh*kw, P)`` indices into the flattened input of each entry of each patch; ``-1`` marks padding."""
    ids = torch.arange(1, math.prod(input_shape) + 1, dtype=torch.float64).reshape(1, *input_shape)
    cols = nn.functional.unfold(ids, conv.kernel_size, padding=conv.padding, stride=conv.stride)  # type: ignore[arg-type]
    return cols[0].round().long() - 1


def conv_system(
    conv: nn.Conv2d,
    input_shape: tuple[int, ...],
    g: torch.Tensor,
    z: torch.Tensor | None,
    weight_grad: torch.Tensor,
) -> tuple[coo_matrix, np.ndarray, int, int]:
    """The stacked linear system ``A x = c`` of one convolution's input (R-GAP Eq. 7-8), both blocks scaled to unit
    Frobenius norm (a row scaling, so a consistent system keeps its solution).

    Args:
        g: ``dL/dz`` of the layer's output, ``(O, H', W')``.
        z: the pre-activation output minus bias, ``(O, H', W')`` with NaN where unknown; ``None``: no forward rows.
        weight_grad: ``dL/dW``, ``(O, C, kh, kw)``.

    Returns:
        ``(A, c, forward rows, gradient rows)``.
    """
    index = patch_index(input_shape, conv).numpy()  # (R, P)
    out_channels = conv.out_channels
    n_patch_rows, n_positions = index.shape
    gmat = g.reshape(out_channels, n_positions).numpy()
    weight = conv.weight.detach().double().reshape(out_channels, n_patch_rows).numpy()
    valid = index >= 0
    # gradient rows (o, r): sum_p g[o, p] x[index[r, p]]
    r_idx, p_idx = np.nonzero(valid)
    o = np.repeat(np.arange(out_channels), r_idx.size)
    grad_rows = o * n_patch_rows + np.tile(r_idx, out_channels)
    grad_cols = np.tile(index[r_idx, p_idx], out_channels)
    grad_vals = gmat[:, p_idx].reshape(-1)
    grad_rhs = weight_grad.reshape(-1).numpy()
    grad_scale = 1.0 / max(np.sqrt((grad_vals**2).sum()), 1e-300)
    rows, cols, vals, rhs = [grad_rows], [grad_cols], [grad_vals * grad_scale], [grad_rhs * grad_scale]
    n_grad = out_channels * n_patch_rows
    n_fwd = 0
    if z is not None:
        zmat = z.reshape(out_channels, n_positions).numpy()
        known = ~np.isnan(zmat)  # (O, P)
        row_of = np.cumsum(known.reshape(-1)).reshape(known.shape) - 1
        n_fwd = int(known.sum())
        o_k, p_k = np.nonzero(known)
        # forward rows (o, p): sum_r W[o, r] x[index[r, p]]
        r_all = np.arange(n_patch_rows)
        cols_k = index[:, p_k].T  # (K, R)
        ok = cols_k >= 0
        fwd_rows = np.broadcast_to(row_of[o_k, p_k][:, None], cols_k.shape)[ok] + n_grad
        fwd_vals = weight[o_k][:, r_all][ok]
        fwd_scale = 1.0 / max(np.sqrt((fwd_vals**2).sum()), 1e-300)
        rows.append(fwd_rows)
        cols.append(cols_k[ok])
        vals.append(fwd_vals * fwd_scale)
        rhs.append(zmat[known] * fwd_scale)
    shape = (n_grad + n_fwd, math.prod(input_shape))
    matrix = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    return matrix, np.concatenate(rhs), n_fwd, n_grad


def solve_normal(matrix: coo_matrix, rhs: np.ndarray, rcond: float) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Minimum-norm least squares through the normal equations ``A^T A x = A^T c`` (singular values of ``A`` below
    ``rcond * s_max`` dropped). Returns ``(x, rank, singular values or None)``.

    First a Cholesky factorisation of ``G = A^T A`` with LAPACK's condition estimate: when it proves ``G`` far from
    singular (``1 / cond_1(G) > 10 n rcond^2``, which bounds ``cond_2(G) <= n cond_1(G)`` below ``1 / rcond^2`` even if
    the estimate is off by 10x), ``A`` has full column rank and one triangular solve gives ``x`` (singular values
    ``None``); this is R-GAP's rank-sufficient case, about 10x faster than the eigendecomposition, which handles the
    rest.
    """
    csr = matrix.tocsr()
    gram = (csr.T @ csr).toarray()
    right = csr.T @ rhs
    n = gram.shape[0]
    try:
        factor = cho_factor(gram, check_finite=False)
        estimate, info = dpocon(factor[0], float(np.abs(gram).sum(axis=0).max()))
        if info == 0 and estimate > 10 * n * rcond**2:
            return cho_solve(factor, right, check_finite=False), n, None
    except np.linalg.LinAlgError:  # not positive definite: rank-deficient, or nearly
        pass
    eigenvalues, vectors = np.linalg.eigh(gram)
    singular = np.sqrt(np.clip(eigenvalues, 0.0, None))[::-1]
    keep = eigenvalues > (rcond * singular[0]) ** 2
    x = vectors[:, keep] @ ((vectors[:, keep].T @ right) / eigenvalues[keep])
    return x, int(keep.sum()), singular


def _check_size(stage: Stage) -> None:
    unknowns = math.prod(stage.input_shape)
    if unknowns > MAX_UNKNOWNS:
        raise ValueError(
            f"layer {stage.name!r} has {unknowns} input entries (> {MAX_UNKNOWNS}): too large to solve in closed form"
        )


def recurse(
    stages: list[Stage],
    grads: dict[str, torch.Tensor],
    *,
    rcond: float,
) -> tuple[torch.Tensor, int, list[LayerRank]]:
    """Run R-GAP from the classifier to the input through the float64 stages of :func:`chain`. ``grads`` maps
    ``"<layer>.weight"``/``"<layer>.bias"`` to one sample's gradient (float64). Returns ``(input, label, rank per
    layer from the input up)``."""
    head = stages[-1]
    weight = head.layer.weight.detach().double()
    bias_grad = grads.get(f"{head.name}.bias") if head.layer.bias is not None else None
    x, g, label = classifier_input(weight, grads[f"{head.name}.weight"], bias_grad)
    ranks = [LayerRank(head.name, "Linear", x.numel(), 0, weight.shape[0] * x.numel(), x.numel())]
    above = head
    for stage in reversed(stages[:-1]):
        _check_size(stage)
        # g and z of this layer's output, from the layer above (whose input is this layer's activated output)
        with torch.enable_grad():
            probe = x.reshape(1, *above.input_shape).clone().requires_grad_(True)
            (back,) = torch.autograd.grad(above.layer(probe), probe, g.reshape(1, *above.output_shape))
        activated = x.reshape(stage.output_shape)
        z, slope = invert_activation(stage.activation, activated)
        g = slope * back.reshape(stage.output_shape)
        if stage.layer.bias is not None:
            bias = stage.layer.bias.detach().double()
            z = z - (bias[:, None, None] if isinstance(stage.layer, nn.Conv2d) else bias)
        weight_grad = grads[f"{stage.name}.weight"]
        if isinstance(stage.layer, nn.Linear):
            if float(g.abs().max()) == 0:
                raise ValueError(f"layer {stage.name!r}: no gradient reaches it, its input cannot be solved for")
            x = (g @ weight_grad) / (g @ g)
            ranks.append(LayerRank(stage.name, "Linear", x.numel(), 0, weight_grad.numel(), x.numel()))
        else:
            matrix, rhs, n_fwd, n_grad = conv_system(stage.layer, stage.input_shape, g, z, weight_grad)
            solution, rank, _ = solve_normal(matrix, rhs, rcond)
            x = torch.from_numpy(solution)
            ranks.append(LayerRank(stage.name, "Conv2d", x.numel(), n_fwd, n_grad, rank))
        above = stage
    return x.reshape(stages[0].input_shape), label, ranks[::-1]


def rank_report(
    model: nn.Module, image_shape: tuple[int, int, int], *, seed: int = 0, rcond: float = 1e-7
) -> list[LayerRank]:
    """R-GAP's rank analysis (Sec. 4), layer by layer, for one sample through ``model``.

    For each linear layer: the unknowns (entries of its input), the forward constraints (``W x = z``, only those of
    units whose activation can be inverted: a ReLU's inactive units give none), the gradient constraints
    (``dL/dW = g x^T``) and the numerical rank of the stacked system. ``sufficient`` means the input is determined;
    where it is not, R-GAP returns the minimum-norm solution and degrades. The constraints' rank depends on the weights
    and, through ``g``, on the sample: computed here at a random input in ``[0, 1]`` with label 0.

    Raises:
        ValueError: the model is not a chain R-GAP can recurse through.
    """
    stages = chain(model, image_shape)
    for stage in stages:
        _check_size(stage)
    generator = torch.Generator().manual_seed(seed)
    probe = torch.rand(1, *image_shape, generator=generator, dtype=torch.float64)
    outputs = []
    x = probe
    for stage in stages:
        layer = stage.layer
        out = layer(x.flatten(1) if isinstance(layer, nn.Linear) else x)
        out.retain_grad()
        outputs.append(out)
        x = stage.activation(out) if stage.activation is not None else out
    cross_entropy(x, torch.zeros(1, dtype=torch.long)).backward()
    report = []
    for stage, out in zip(stages, outputs, strict=True):
        layer = stage.layer
        unknowns = math.prod(stage.input_shape)
        g = out.grad[0]  # type: ignore[index]
        if isinstance(layer, nn.Linear):
            rank = unknowns if float(g.abs().max()) > 0 else 0
            report.append(LayerRank(stage.name, "Linear", unknowns, 0, g.numel() * unknowns, rank))
            continue
        z = out[0].detach().clone()
        if isinstance(stage.activation, nn.ReLU) or (
            isinstance(stage.activation, nn.LeakyReLU) and stage.activation.negative_slope <= 0
        ):
            z[z <= 0] = torch.nan
        matrix, rhs, n_fwd, n_grad = conv_system(layer, stage.input_shape, g, z, layer.weight.grad)  # type: ignore[arg-type]
        _, rank, _ = solve_normal(matrix, rhs, rcond)
        report.append(LayerRank(stage.name, "Conv2d", unknowns, n_fwd, n_grad, rank))
    return report


class RGAP(Attack):
    """R-GAP (Zhu & Blaschko, ICLR 2021): solve each layer's forward and gradient constraints in closed form, from
    the classifier down to the image, for one sample.

    Needs a chain of Conv2d/Linear layers with elementwise invertible activations (LeakyReLU, sigmoid, tanh; ReLU
    drops the forward constraints of inactive units), a linear classifier with softmax cross-entropy, batch size 1
    and a gradient (or one local step). ``info["ranks"]`` gives the rank analysis met on the way, computed at the
    answer itself (each layer's system is built from the recovered ``g`` and ``z``): a rank-deficient layer yields
    the minimum-norm solution, and the result degrades. The image is **certified** only when every layer has full
    column rank there *and* the image reproduces the observed gradient (residual below
    :data:`~gradinv.attacks.certify.CERTIFIED_RESIDUAL`, with the batch size of 1 granted): where the rank is short,
    the gradient does not determine the input and a zero residual proves nothing.

    Args:
        rcond: singular values of a layer's system below ``rcond * s_max`` count as zero (gradinv's own: the normal
            equations resolve about ``sqrt(machine eps)``).
    """

    name = "rgap"
    exact = True
    requires = frozenset()
    max_batch = 1

    def __init__(self, *, rcond: float = 1e-7) -> None:
        check_arguments(self, locals())
        if not 0 < rcond < 1:
            raise ValueError(f"rcond must be in (0, 1), got {rcond}")
        self.rcond = rcond

    def run(self, observation: Observation, callback: Callback | None) -> Result:
        check_single_step(observation, self.name)
        if observation.batch_size not in (None, 1):
            raise ValueError(f"R-GAP inverts a single sample; the batch has {observation.batch_size}")
        stages = chain(observation.model, observation.image_shape)
        scale = observation.threat.local_lr if observation.threat.update == "fedavg" else 1.0
        grads = {name: u.detach().double() / scale for name, u in observation.update.items()}
        x, label, ranks = recurse(stages, grads, rcond=self.rcond)
        if callback is not None:
            callback(1, 1, 0.0)
        image = denormalize(x.float().reshape(1, *observation.image_shape), observation.threat.normalization)
        sufficient = all(r.sufficient for r in ranks)
        info = {"ranks": [r.as_dict() for r in ranks], "rank_sufficient": sufficient}
        short = [f"{r.layer!r} rank {r.rank} < {r.unknowns} unknowns" for r in ranks if not r.sufficient]
        evidence = (
            f"every one of {len(ranks)} layers has full column rank at the answer (R-GAP Sec. 4) and the image "
            "reproduces the observed gradient"
            if sufficient
            else "not certified: rank-deficient at the answer (" + "; ".join(short) + "): other inputs give the same "
            "gradient, so even a zero residual proves nothing"
        )
        return Result(image, torch.tensor([label]), [], info, [sufficient], evidence, whole_batch=True)

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

import contextlib
import copy
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.lapack import dpocon
from scipy.optimize import brentq
from scipy.sparse import coo_matrix, csr_matrix
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn.grad import conv2d_input

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
    solver: str = "closed form"
    """How the input was solved for: ``"closed form"`` (a linear layer), ``"cg"``, ``"cholesky"`` or ``"eigh"``
    (:func:`solve_conv`)."""

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


@dataclass
class ConvEquations:
    """R-GAP's linear system for one convolution's input ``x`` (Eq. 7-8), in the structure the solvers use.

    The *gradient* rows ``dL/dW[o, c, k] = sum_i B[i, o*K + k] x[c, i]`` meet the same ``B`` (``(H*W, O*K)``) in every
    input channel: they are ``C`` independent systems ``B^T x_c = dL/dW[:, c]``, whose normal matrix is block
    diagonal with ``C`` copies of ``B B^T``. The *forward* rows ``(W x)[o, p] = z[o, p]`` are the convolution at the
    units whose activation could be inverted (``known``). Each block is divided by the Frobenius norm of its
    coefficients (a row scaling, so a consistent system keeps its solution).
    """

    conv: nn.Conv2d
    input_shape: tuple[int, ...]
    block: np.ndarray
    """``B``, ``(H*W, O*K)``."""
    weight_grads: np.ndarray
    """``dL/dW`` per input channel, ``(C, O*K)``."""
    grad_scale: float
    known: torch.Tensor
    """``(O, H', W')`` bool: the units whose pre-activation is known."""
    targets: torch.Tensor
    """``z`` (minus bias) with 0 where unknown, ``(O, H', W')``."""
    fwd_scale: float

    @property
    def n_grad(self) -> int:
        return self.weight_grads.size

    @property
    def n_fwd(self) -> int:
        return int(self.known.sum())

    @functools.cached_property
    def forward(self) -> csr_matrix:
        """The unscaled forward rows of the known units, sparse (:func:`forward_rows`)."""
        return forward_rows(self.conv, self.input_shape, self.known)

    def _transposed(self, out: torch.Tensor) -> np.ndarray:
        """``F^T out`` for ``out`` of shape ``(O, H', W')``, laid out ``(H*W, C)``."""
        weight = self.conv.weight.detach().double()
        stride, padding = self.conv.stride, self.conv.padding
        back = conv2d_input((1, *self.input_shape), weight, out[None], stride=stride, padding=padding)  # type: ignore[arg-type]
        return back.reshape(self.input_shape[0], -1).numpy().T

    def forward_normal(self, x: np.ndarray) -> np.ndarray:
        """``s_f^2 F^T M F x`` for ``x`` laid out ``(H*W, C)``, through the convolution and its transpose."""
        image = torch.from_numpy(np.ascontiguousarray(x.T).reshape(1, *self.input_shape))
        weight = self.conv.weight.detach().double()
        out = nn.functional.conv2d(image, weight, stride=self.conv.stride, padding=self.conv.padding)  # type: ignore[arg-type]
        return self.fwd_scale**2 * self._transposed(out[0] * self.known)

    def right_side(self) -> np.ndarray:
        """``A^T c``, laid out ``(H*W, C)``."""
        grad_part = self.grad_scale**2 * (self.block @ self.weight_grads.T)
        return grad_part + self.fwd_scale**2 * self._transposed(self.targets)

    def gram(self) -> np.ndarray:
        """The dense normal matrix ``A^T A`` (channel-major unknowns): ``C`` diagonal blocks ``s_g^2 B B^T`` plus
        ``s_f^2 F^T M F`` from the sparse forward rows."""
        n_pixels = self.block.shape[0]
        channels = self.input_shape[0]
        if self.n_fwd:
            gram = (self.fwd_scale**2 * (self.forward.T @ self.forward)).toarray()
        else:
            gram = np.zeros((channels * n_pixels,) * 2)
        diagonal = self.grad_scale**2 * (self.block @ self.block.T)
        for c in range(channels):
            gram[c * n_pixels : (c + 1) * n_pixels, c * n_pixels : (c + 1) * n_pixels] += diagonal
        return gram


def patch_index(input_shape: tuple[int, ...], conv: nn.Conv2d) -> torch.Tensor:
    """``(C*kh*kw, P)`` indices into the flattened input of each entry of each patch; ``-1`` marks padding."""
    ids = torch.arange(1, math.prod(input_shape) + 1, dtype=torch.float64).reshape(1, *input_shape)
    cols = nn.functional.unfold(ids, conv.kernel_size, padding=conv.padding, stride=conv.stride)  # type: ignore[arg-type]
    return cols[0].round().long() - 1


def forward_rows(conv: nn.Conv2d, input_shape: tuple[int, ...], known: torch.Tensor) -> csr_matrix:
    """The unscaled forward rows ``(W x)[o, p]`` of the ``known`` units, sparse ``(n_known, C*H*W)``."""
    index = patch_index(input_shape, conv).numpy()  # (R, P)
    weight = conv.weight.detach().double().reshape(conv.out_channels, -1).numpy()
    o_k, p_k = np.nonzero(known.reshape(conv.out_channels, -1).numpy())
    cols = index[:, p_k].T  # (K, R)
    ok = cols >= 0
    rows = np.broadcast_to(np.arange(o_k.size)[:, None], cols.shape)[ok]
    shape = (o_k.size, math.prod(input_shape))
    return coo_matrix((weight[o_k][:, np.arange(index.shape[0])][ok], (rows, cols[ok])), shape=shape).tocsr()


def conv_equations(
    conv: nn.Conv2d,
    input_shape: tuple[int, ...],
    g: torch.Tensor,
    z: torch.Tensor | None,
    weight_grad: torch.Tensor,
) -> ConvEquations:
    """R-GAP's system (Eq. 7-8) for one convolution's input.

    Args:
        g: ``dL/dz`` of the layer's output, ``(O, H', W')``.
        z: the pre-activation output minus bias, ``(O, H', W')`` with NaN where unknown; ``None``: no forward rows.
        weight_grad: ``dL/dW``, ``(O, C, kh, kw)``.
    """
    channels, height, width = input_shape
    index = patch_index((1, height, width), conv).numpy()  # (K, P) positions in one channel, -1 on padding
    kernel, n_positions = index.shape
    out_channels = conv.out_channels
    gmat = g.reshape(out_channels, n_positions).numpy()
    k_idx, p_idx = np.nonzero(index >= 0)
    block = np.zeros((height * width, out_channels * kernel))
    # within one kernel offset the positions are distinct, so assignment drops no sum
    cols = np.arange(out_channels)[:, None] * kernel + k_idx[None, :]
    block[np.broadcast_to(index[k_idx, p_idx], cols.shape), cols] = gmat[:, p_idx]
    grad_norm = math.sqrt(channels) * float(np.linalg.norm(block))
    per_channel = weight_grad.numpy().reshape(out_channels, channels, kernel).transpose(1, 0, 2).reshape(channels, -1)
    known = torch.zeros(g.shape, dtype=torch.bool) if z is None else ~torch.isnan(z)
    targets = torch.zeros(g.shape, dtype=torch.float64) if z is None else torch.nan_to_num(z, nan=0.0) * known
    # ||F||_F^2: each known unit's weights over the input entries its patch covers (not the padding)
    full = patch_index(input_shape, conv).numpy() >= 0  # (C*K, P)
    squares = conv.weight.detach().double().reshape(out_channels, -1).numpy() ** 2 @ full  # (O, P)
    fwd_norm = math.sqrt(float((squares * known.reshape(out_channels, -1).numpy()).sum()))
    return ConvEquations(
        conv, tuple(input_shape), block, per_channel, 1.0 / max(grad_norm, 1e-300), known, targets,
        1.0 / max(fwd_norm, 1e-300),
    )  # fmt: skip


def solve_eigh(gram: np.ndarray, right: np.ndarray, rcond: float) -> tuple[np.ndarray, int]:
    """Minimum-norm least squares from the normal equations ``G x = A^T c`` (``G = A^T A``) through the
    eigendecomposition of ``G``: singular values of ``A`` below ``rcond * s_max`` are dropped. Returns
    ``(x, numerical rank)``."""
    eigenvalues, vectors = np.linalg.eigh(gram)
    keep = eigenvalues > rcond**2 * max(float(eigenvalues[-1]), 0.0)
    x = vectors[:, keep] @ ((vectors[:, keep].T @ right) / eigenvalues[keep])
    return x, int(keep.sum())


def _proven_factor(gram: np.ndarray, rcond: float) -> tuple[np.ndarray, bool] | None:
    """The Cholesky factor of ``gram`` (overwritten) when LAPACK's condition estimate proves it far from singular at
    ``rcond``, else ``None``.

    The test: ``1 / cond_1(G) > 10 n rcond^2``, which bounds ``cond_2(G) <= n cond_1(G)`` below ``1 / rcond^2`` even
    if the estimate is off by 10x, so the ``A`` of ``G = A^T A`` has full column rank at ``rcond``.
    """
    norm = max(float(np.abs(chunk).sum(axis=0).max()) for chunk in np.array_split(gram, 8, axis=1))
    try:  # the transpose of the symmetric matrix is Fortran-ordered: LAPACK factorises it without a copy
        factor = cho_factor(gram.T, check_finite=False, overwrite_a=True)
    except np.linalg.LinAlgError:  # not positive definite: rank-deficient, or nearly
        return None
    estimate, info = dpocon(factor[0], norm)
    return factor if info == 0 and estimate > 10 * gram.shape[0] * rcond**2 else None


def solve_conv(
    equations: ConvEquations, rcond: float, *, tol: float = 1e-13, max_iter: int = 500
) -> tuple[np.ndarray, int, str]:
    """The least-squares solution of one convolution's system (minimum norm where it is rank-deficient), its
    numerical rank and the solver that gave it (``"cg"``, ``"cholesky"``, ``"eigh"``); ``x`` flattened channel-major.

    1. Where the gradient rows alone have full column rank (their per-channel normal matrix ``B B^T``, only ``H*W``
       square, proven well-conditioned by :func:`_proven_factor`; R-GAP's unstrided inner layers), the system is never
       formed: the gradient rows' own per-channel solution starts preconditioned conjugate gradients on the stacked
       normal equations (the forward rows applied as a convolution and its transpose, the factorised
       ``I_C kron B B^T`` as preconditioner), which stop at a normal residual below ``tol`` of the right side.
    2. Otherwise (strided first layers), or if CG has not converged in ``max_iter`` steps, the dense normal matrix
       (:meth:`ConvEquations.gram`) and its Cholesky factorisation, when that proves full column rank.
    3. Otherwise (rank-deficient layers) the minimum-norm solution through the eigendecomposition (:func:`solve_eigh`).
    """
    n_pixels, n_cols = equations.block.shape
    unknowns = math.prod(equations.input_shape)
    right = equations.right_side()
    small = equations.block @ equations.block.T
    factor = _proven_factor(small.copy(), rcond) if n_cols >= n_pixels else None
    if factor is not None:
        scale = equations.grad_scale**2
        gram = scale * small
        x = cho_solve(factor, equations.block @ equations.weight_grads.T, check_finite=False)
        if equations.n_fwd == 0:
            return x.T.reshape(-1), unknowns, "cholesky"
        # many small products alternate between torch (the convolutions) and BLAS: with both multi-threaded, each
        # waits for the other's spinning threads (3x slower on 2 cores), so both run on one thread here
        with threadpool_limits(1, user_api="blas"), _torch_threads(1):
            refined = _conjugate_gradients(
                equations, gram, factor, x, right, tol * float(np.linalg.norm(right)), max_iter
            )
        if refined is not None:
            return refined.T.reshape(-1), unknowns, "cg"
    right = right.T.reshape(-1)
    factor = _proven_factor(equations.gram(), rcond)
    if factor is not None:
        return cho_solve(factor, right, check_finite=False), unknowns, "cholesky"
    return (*solve_eigh(equations.gram(), right, rcond), "eigh")


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _conjugate_gradients(
    equations: ConvEquations,
    gram: np.ndarray,
    factor: tuple[np.ndarray, bool],
    x: np.ndarray,
    right: np.ndarray,
    bound: float,
    max_iter: int,
) -> np.ndarray | None:
    """Preconditioned CG on ``(gram kron I_C + s_f^2 F^T M F) x = right`` from ``x`` (``(H*W, C)`` layout), the
    preconditioner ``factor`` of ``gram / s_g^2``; ``None`` if the residual is not below ``bound`` within ``max_iter``
    steps."""
    scale = equations.grad_scale**2
    residual = right - gram @ x - equations.forward_normal(x)
    precond = cho_solve(factor, residual, check_finite=False) / scale
    direction, rho = precond, float((residual * precond).sum())
    for _ in range(max_iter):
        if float(np.linalg.norm(residual)) <= bound:
            return x
        image = gram @ direction + equations.forward_normal(direction)
        alpha = rho / float((direction * image).sum())
        x, residual = x + alpha * direction, residual - alpha * image
        precond = cho_solve(factor, residual, check_finite=False) / scale
        rho, previous = float((residual * precond).sum()), rho
        direction = precond + (rho / previous) * direction
    return None


def backward_through(stage: Stage, g: torch.Tensor) -> torch.Tensor:
    """``dL/d(input)`` of a stage's linear layer from ``dL/d(output)`` ``g``: ``W^T g``, or the transposed
    convolution."""
    layer = stage.layer
    weight = layer.weight.detach().double()
    if isinstance(layer, nn.Linear):
        return g.reshape(-1) @ weight
    shape = (1, *stage.input_shape)
    out = g.reshape(1, *stage.output_shape)
    return conv2d_input(shape, weight, out, stride=layer.stride, padding=layer.padding)  # type: ignore[arg-type]


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
        back = backward_through(above, g)
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
            equations = conv_equations(stage.layer, stage.input_shape, g, z, weight_grad)
            solution, rank, solver = solve_conv(equations, rcond)
            x = torch.from_numpy(solution)
            counts = (equations.n_fwd, equations.n_grad)
            ranks.append(LayerRank(stage.name, "Conv2d", x.numel(), *counts, rank, solver))
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
        equations = conv_equations(layer, stage.input_shape, g, z, layer.weight.grad)  # type: ignore[arg-type]
        _, rank, solver = solve_conv(equations, rcond)
        report.append(LayerRank(stage.name, "Conv2d", unknowns, equations.n_fwd, equations.n_grad, rank, solver))
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

    Each convolution's least squares is solved by the cheapest method that also proves its rank
    (:func:`solve_conv`; ``info["ranks"][i]["solver"]``): matrix-free conjugate gradients where the gradient rows
    alone have full rank, else the dense normal equations (Cholesky, or the eigendecomposition for the minimum-norm
    answer of a rank-deficient layer). CNN6 at 32x32 takes about 0.85 s on 2 cores (``benchmarks/exact_attacks.py``).

    Args:
        rcond: singular values of a layer's system below ``rcond * s_max`` count as zero (gradinv's own: the normal
            equations resolve about ``sqrt(machine eps)``).
    """

    name = "rgap"
    # the SoK's grade (Carletti et al. 2025, attack table): Zhu & Blaschko 2021: B
    sok = "B"
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
        # the torch work here is small (one image's convolutions) and the heavy part is LAPACK's: torch's threads
        # would only compete with BLAS's for the cores (1.3 s instead of 0.8 s on CNN6 with two of each on 2 cores)
        with _torch_threads(1):
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

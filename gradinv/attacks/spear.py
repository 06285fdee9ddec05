"""SPEAR: exact inversion of a whole batch through a ReLU layer (Dimitrov, Baader, Müller & Vechev, "SPEAR: Exact
Gradient Inversion of Batches in Federated Learning", NeurIPS 2024).

For a linear layer ``Z = W X + b 1^T`` followed by ReLU, with the batch's inputs as the columns of ``X`` (``n x B``):

- ``dL/dW = (dL/dZ) X^T`` has rank at most ``B`` (Theorem 3.1), so from its SVD ``dL/dW = L R`` with ``L`` ``(m x B)``
  and ``R`` ``(B x n)`` there is an unknown invertible ``Q`` with ``dL/dZ = L Q`` and ``X^T = Q^{-1} R`` (Sec. 3.1);
- ``dL/dZ`` is sparse: a ReLU passes no gradient to a unit it did not activate, so about half of each column is 0
  (Sec. 3.2). If ``B - 1`` rows ``A`` of column ``i`` are all zero, ``q_i`` spans the kernel of ``L_A`` (Lemma 3.2):
  sampling random ``(B-1)``-row submatrices and keeping kernels whose image ``L q`` is sparse finds the columns of
  ``Q`` up to scale (Alg. 1);
- the bias gradient ``dL/db = (dL/dZ) 1 = L Q 1`` fixes the scales (Sec. 3.3), and ``X^T = Q^{-1} R`` follows;
- a recovered sample passes when its column of ``dL/dZ`` is zero on every unit its recomputed
  pre-activation leaves inactive (the paper's ReLU consistency check, Sec. 4).

The chance that a random submatrix isolates one sample falls as ``2^{-(B-1)}``: the cost grows exponentially with
the batch size, and a fixed sample budget fails more often as ``B`` grows (paper Fig. 5).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from gradinv.attacks import labels as label_recovery
from gradinv.attacks.base import Attack, Callback, Result
from gradinv.attacks.bias_trick import ReadOff
from gradinv.attacks.certify import certify_samples, obstacle
from gradinv.attacks.exact import check_single_step, first_linear
from gradinv.observation import UNKNOWN_LABEL, Observation
from gradinv.validation import check_arguments, check_positive_int, check_seed


def relu_after(model: nn.Module, layer_name: str) -> None:
    """Raise ``ValueError`` unless the output of ``layer_name`` goes straight into a ReLU.

    The model's forward is traced (``torch.fx``) so that a functional ``torch.relu`` / ``F.relu`` / ``.relu()``
    counts as well as an ``nn.ReLU`` module; a model that cannot be traced is judged by the order its modules are
    registered in (the module after ``layer_name`` must be an ``nn.ReLU``).
    """
    consumer = _traced_consumer(model, layer_name)
    if consumer is not None:
        ok, kind = consumer
    else:
        leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
        position = [n for n, _ in leaves].index(layer_name)
        following = leaves[position + 1][1] if position + 1 < len(leaves) else None
        ok = isinstance(following, nn.ReLU)
        kind = "nothing" if following is None else type(following).__name__
    if not ok:
        raise ValueError(f"SPEAR needs a ReLU after the first linear layer {layer_name!r}; it is followed by {kind}")


def _traced_consumer(model: nn.Module, layer_name: str) -> tuple[bool, str] | None:
    """Whether the traced graph feeds ``layer_name``'s output to a ReLU alone, and what it feeds it to; ``None``
    when the model cannot be traced."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - data-dependent control flow and the like: fall back to the module order
        return None
    node = next((n for n in graph.nodes if n.op == "call_module" and n.target == layer_name), None)
    if node is None:
        return None
    users = list(node.users)
    if len(users) != 1:
        return False, f"{len(users)} operations" if users else "nothing"
    user = users[0]
    modules = dict(model.named_modules())
    if user.op == "call_module":
        module = modules[str(user.target)]
        return isinstance(module, nn.ReLU), type(module).__name__
    if user.op == "call_function":
        return user.target in (torch.relu, torch.nn.functional.relu), getattr(user.target, "__name__", str(user.target))
    if user.op == "call_method":
        return user.target == "relu", f".{user.target}()"
    return False, user.op


def low_rank_factors(weight_grad: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dL/dW ~= L R`` from the top ``batch_size`` singular triplets: ``L = U S`` ``(m, B)``, ``R = V^T`` ``(B, n)``;
    also returns all singular values."""
    u, s, vh = torch.linalg.svd(weight_grad, full_matrices=False)
    return u[:, :batch_size] * s[:batch_size], vh[:batch_size], s


def estimate_batch_size(singular_values: torch.Tensor, rel_tol: float = 1e-5) -> int:
    """The numerical rank of ``dL/dW`` (Theorem 3.1: the batch size, when ``B`` is below both dimensions)."""
    return max(int((singular_values > rel_tol * singular_values[0]).sum()), 1)


def sample_directions(
    left: torch.Tensor,
    samples: int,
    generator: torch.Generator,
    *,
    zero_tol: float,
    min_zeros: int,
    chunk: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernels of random ``(B-1) x B`` row submatrices of ``L`` whose image ``L q`` is sparse (Alg. 1, lines 3-9).

    ``left`` holds the live rows of ``L`` only: rows that vanish (units no sample activated) are zero in every
    direction and must be left out by the caller. A kernel is kept only if it is one-dimensional (the submatrix has
    rank ``B - 1``) and ``L q`` has at least ``min_zeros`` entries below ``zero_tol * max |L q|``. Returns
    ``(directions (K, B), zero counts (K,))``.
    """
    norms = left.norm(dim=1)
    rows, size = left.shape
    if rows < size - 1:
        return left.new_zeros((0, size)), torch.zeros(0, dtype=torch.long)
    kept, zeros_kept = [], []
    left_norm = left / norms[:, None]
    # the sparsity screen in float32 where the tolerance allows it (float32's rounding, ~1e-7 of the largest entry,
    # stays far below it): half the time of the float64 product
    screen = left.float() if zero_tol >= 1e-6 else left
    groups = rows // (size - 1)
    done = 0
    while done < samples:
        count = min(chunk, samples - done)
        done += count
        # uniformly random (B-1)-subsets of the rows: one random permutation of the rows cut into rows // (B-1)
        # disjoint groups (each group a uniform subset; 8x cheaper than drawing every subset apart)
        perms = torch.rand(-(-count // groups), rows, generator=generator).argsort(dim=1)
        picks = perms[:, : groups * (size - 1)].reshape(-1, size - 1)[:count]
        sub = left_norm[picks]  # (count, B-1, B)
        # the kernel with its last coordinate fixed at 1: one (B-1) x (B-1) LU solve per submatrix (2.5x cheaper
        # than a complete QR); a singular block (rank below B-1, or a kernel orthogonal to the last axis) is dropped
        if size > 1:
            solution, info = torch.linalg.solve_ex(sub[:, :, :-1], -sub[:, :, -1:])
            q = torch.cat([solution[..., 0], torch.ones(count, 1, dtype=sub.dtype)], dim=1)
            simple = (info == 0) & torch.isfinite(q).all(dim=1)
            q = q[simple]
        else:
            q = torch.ones(count, 1, dtype=left.dtype)
        q = q / q.norm(dim=1, keepdim=True)
        size_of = (q.to(screen.dtype) @ screen.T).abs_()  # |L q|, (k, m)
        small = size_of <= zero_tol * size_of.amax(dim=1, keepdim=True)
        zeros = small.sum(dim=1)
        good = zeros >= min_zeros
        kept.append(q[good])
        zeros_kept.append(zeros[good])
    return torch.cat(kept), torch.cat(zeros_kept)


def distinct(directions: torch.Tensor, zeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One copy of each direction (up to sign and scale, to 6 digits): the same column of ``Q`` is found by many
    submatrices, and a pool of copies would crowd out the others."""
    if directions.shape[0] == 0:
        return directions, zeros
    unit = directions / directions.norm(dim=1, keepdim=True)
    unit = unit * unit.gather(1, unit.abs().argmax(dim=1, keepdim=True)).sign()
    _, inverse = torch.unique(torch.round(unit * 1e6), dim=0, return_inverse=True)
    count = int(inverse.max()) + 1
    first = torch.full((count,), directions.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(directions.shape[0]), reduce="amin")
    return directions[first], zeros[first]


def select_directions(directions: torch.Tensor, zeros: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Greedy filtering (Alg. 1, GreedyFilter): take the sparsest directions that stay linearly independent of those
    already chosen (which also merges duplicates). Returns up to ``batch_size`` unit columns ``(B, k)``."""
    if directions.shape[0] == 0:
        return directions.new_zeros((batch_size, 0))
    unit = directions / directions.norm(dim=1, keepdim=True)
    chosen: list[torch.Tensor] = []
    basis = unit.new_zeros((unit.shape[1], 0))  # orthonormal basis of the chosen span, grown by Gram-Schmidt
    for index in zeros.argsort(descending=True, stable=True).tolist():
        q = unit[index]
        residual = q - basis @ (basis.T @ q)
        if float(residual.norm()) < 0.1:  # a duplicate, or in the span of the chosen ones
            continue
        chosen.append(q)
        basis = torch.cat([basis, (residual / residual.norm())[:, None]], dim=1)
        if len(chosen) == batch_size:
            break
    return torch.stack(chosen, dim=1)


def relu_consistency(
    gradient_z: torch.Tensor, pre_activation: torch.Tensor, zero_tol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, whether ``dL/dZ`` vanishes on every unit the recomputed ``Z`` leaves inactive (SPEAR Sec. 4: a
    ReLU passes no gradient there). The converse is not asked: an active unit may carry a vanishing gradient (its
    share of the loss gradient, ``W_2^T dL/dh``, can be ~0), and asking it flagged exact samples as inconsistent (one
    unit in 500: 1 of 20 batches of 8 photographs in ``benchmarks/certificates.py``, two of three seed-0 batches of
    photograph crops). A wrong direction's ``dL/dZ`` mixes samples and is in general non-zero on units its recomputed
    input leaves inactive, so it fails; the rule alone proves nothing, and a certificate also needs each sample's own
    gradient on every unit (:mod:`gradinv.attacks.certify`). Returns ``(consistent (B,) bool, fraction of units that
    satisfy the rule (B,))``."""
    scale = gradient_z.abs().amax(dim=0, keepdim=True).clamp_min(1e-300)
    zero = gradient_z.abs() <= zero_tol * scale
    inactive = pre_activation <= 0
    borderline = pre_activation.abs() <= 1e-6 * pre_activation.abs().amax(dim=0, keepdim=True)
    agree = zero | ~inactive | borderline
    fraction = agree.double().mean(dim=0)
    return fraction == 1.0, fraction


CHUNK = 8192
"""Submatrices drawn between two attempts to solve the batch."""

POOL_PER_SAMPLE = 64
"""Candidate directions kept per sample of the batch between attempts (the sparsest ones)."""


def solve_batch(
    left: torch.Tensor,
    right: torch.Tensor,
    bias_grad: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    columns: torch.Tensor,
    zero_tol: float,
) -> tuple[torch.Tensor, list[bool], torch.Tensor, int, torch.Tensor]:
    """Scale the found directions with the bias gradient (``L Q diag(s) 1 = dL/db``), invert ``X^T = Q^{-1} R`` and
    check each sample's ReLU consistency. Missing directions are completed by an orthonormal basis (those samples
    are never flagged). Returns ``(inputs (B, n), consistent, agreement, found, dL/dZ (m, B))``: column ``b`` of
    ``dL/dZ`` is sample ``b``'s share of the layer's output gradient."""
    size, found = right.shape[0], columns.shape[1]
    if found < size:
        basis = torch.linalg.qr(torch.cat([columns, torch.eye(size, dtype=torch.float64)], dim=1)).Q
        columns = torch.cat([columns, basis[:, found:size]], dim=1)
    scales = torch.linalg.lstsq(left @ columns, bias_grad[:, None]).solution[:, 0]
    q = columns * scales
    inputs = torch.linalg.lstsq(q, right).solution  # (B, n) = X^T
    gradient_z = left @ q
    consistent, agreement = relu_consistency(gradient_z, weight @ inputs.T + bias[:, None], zero_tol)
    exact = [bool(c) and found == size for c in consistent.tolist()]
    return inputs, exact, agreement, found, gradient_z


class SPEAR(Attack):
    """SPEAR (Dimitrov et al., NeurIPS 2024): the whole batch, exactly, from the first linear+ReLU layer's gradient.

    Needs a fully connected first layer with bias followed by ReLU (an MLP's, or the input of a linear head given
    its features), more units than the batch size, and a gradient or one local step. The batch size comes from the
    threat model, else from ``batch_size``, else from the rank of the layer's gradient. ``info["relu_consistent"]``
    flags each sample that passes the ReLU consistency check; ``info["found"]`` is the number of directions
    recovered.

    A sample is **certified** when all ``B`` directions were found, it passes ReLU consistency, and its recovered
    column of ``dL/dZ`` equals its own gradient with one label at the update's scale (one-sample consistency on
    every unit, :mod:`gradinv.attacks.certify`; that label is its own). Where per-sample gradients are not available
    (train-mode BatchNorm after the layer, a withheld batch size, a defense) the whole batch is certified only when
    every sample is ReLU-consistent and the batch's own update reproduces the observed one, labels from the
    classifier's gradient.

    Args:
        samples: the submatrix budget (the paper's ``N``; 500,000 is gradinv's own, enough for batches of 16 here);
            the expected need grows as ``B 2^(B-1)``.
        zero_tol: an entry of ``L q`` counts as zero below ``zero_tol`` times the largest (gradinv's own, for a
            float32 gradient).
        min_sparsity: a kept direction must zero at least this fraction of the units (gradinv's own: ReLU zeroes
            about half of them per sample at initialisation; a random kernel direction zeroes only ``B - 1``).
        batch_size: the batch size when the threat model withholds it (default: the gradient's numerical rank).
        label_strategy: label recovery for the label counts of a batch not recovered whole.
        seed: seeds the submatrix sampling.
        max_seconds: stop sampling after this long (``None``: only the sample budget stops it); the attack then
            returns what it has, uncertified, and says which budget ran out (``info["stopped"]``).
    """

    name = "spear"
    # the SoK's grade (Carletti et al. 2025, attack table): Dimitrov et al. 2024: B
    sok = "B"
    exact = True
    requires = frozenset()

    def __init__(
        self,
        *,
        samples: int = 500_000,
        zero_tol: float = 1e-5,
        min_sparsity: float = 0.15,
        batch_size: int | None = None,
        label_strategy: str = "auto",
        seed: int = 0,
        max_seconds: float | None = 300.0,
    ) -> None:
        check_arguments(self, locals())
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if not 0 < zero_tol < 1:
            raise ValueError(f"zero_tol must be in (0, 1), got {zero_tol}")
        if not 0 < min_sparsity < 1:
            raise ValueError(f"min_sparsity must be in (0, 1), got {min_sparsity}")
        check_positive_int("batch_size", batch_size)
        check_seed("seed", seed)
        if label_strategy not in label_recovery.names():
            raise ValueError(f"unknown label_strategy {label_strategy!r}; available: {label_recovery.names()}")
        self.samples, self.zero_tol, self.min_sparsity = samples, zero_tol, min_sparsity
        self.batch_size, self.label_strategy, self.seed = batch_size, label_strategy, seed
        self.max_seconds = max_seconds

    def run(self, observation: Observation, callback: Callback | None) -> Result:
        check_single_step(observation, self.name)
        name, layer = first_linear(observation.model, observation.image_shape)
        relu_after(observation.model, name)
        weight_grad = observation.update[f"{name}.weight"].double()
        bias_grad = observation.update[f"{name}.bias"].double()
        units = weight_grad.shape[0]
        left, right, singular = low_rank_factors(weight_grad, min(weight_grad.shape))
        size = observation.batch_size or self.batch_size or estimate_batch_size(singular)
        if size > min(weight_grad.shape):
            raise ValueError(
                f"SPEAR needs more units ({units}) and input entries ({weight_grad.shape[1]}) than the batch ({size})"
            )
        left, right = left[:, :size], right[:size]
        layer_params = (layer.weight.detach().double(), layer.bias.detach().double())  # type: ignore[union-attr]
        solved, drawn, candidates, stop = self._search(left, right, bias_grad, layer_params, size)
        inputs, consistent, agreement, found, gradient_z = solved
        images = inputs.float().reshape(size, *observation.image_shape)
        checked = obstacle(observation) is None
        if checked:
            per_sample = [gradient_z[:, b] for b in range(size)]
            ok, labels, errors, evidence = certify_samples(
                observation, name, images, per_sample, [torch.arange(units)] * size
            )
            certified = [a and b for a, b in zip(ok, consistent, strict=True)]
        else:
            certified, labels, errors = [False] * size, [UNKNOWN_LABEL] * size, [float("nan")] * size
            evidence = str(obstacle(observation))
        evidence = f"ReLU consistency (SPEAR Sec. 4) with all {size} directions found; {evidence}"
        if not all(consistent):
            evidence += f"; {stop}"
        picked = ReadOff(images, certified, labels, evidence, observation.batch_size, checked, whole=all(consistent))
        result = picked.complete(observation, self.label_strategy)
        if callback is not None:
            callback(1, 1, 0.0)
        result.info.update(
            relu_consistent=consistent,
            found=found,
            batch_size=size,
            candidates=candidates,
            samples_drawn=drawn,
            stopped=stop,
            relu_agreement=[round(float(a), 6) for a in agreement],
            consistency_error=[None if e != e else float(f"{e:.3g}") for e in errors],
        )
        return result

    def _search(
        self,
        left: torch.Tensor,
        right: torch.Tensor,
        bias_grad: torch.Tensor,
        layer_params: tuple[torch.Tensor, torch.Tensor],
        size: int,
    ) -> tuple[tuple[torch.Tensor, list[bool], torch.Tensor, int, torch.Tensor], int, int, str]:
        """Alg. 1: sample submatrices in chunks until every sample passes ReLU consistency, the sample budget is
        spent or ``max_seconds`` pass. The pool keeps only the sparsest :data:`POOL_PER_SAMPLE` ``* B`` candidates,
        so each attempt costs the same whatever was drawn before (linear in the samples drawn)."""
        weight, bias = layer_params
        if size == 1:  # one sample: Q is a scalar, fixed by the bias gradient
            one = torch.ones(1, 1, dtype=torch.float64)
            return solve_batch(left, right, bias_grad, weight, bias, one, self.zero_tol), 0, 1, "one sample"
        generator = torch.Generator().manual_seed(self.seed)
        norms = left.norm(dim=1)
        live = left[norms > self.zero_tol * norms.max()]  # units no sample activated carry no information
        min_zeros = max(size, int(self.min_sparsity * live.shape[0]))
        directions = left.new_zeros((0, size))
        zeros = torch.zeros(0, dtype=torch.long)
        start, drawn, cap = time.perf_counter(), 0, POOL_PER_SAMPLE * size
        while True:
            chunk = min(CHUNK, self.samples - drawn)
            drawn += chunk
            new, new_zeros = sample_directions(live, chunk, generator, zero_tol=self.zero_tol, min_zeros=min_zeros)
            directions, zeros = distinct(torch.cat([directions, new]), torch.cat([zeros, new_zeros]))
            if directions.shape[0] > cap:
                keep = zeros.argsort(descending=True, stable=True)[:cap]
                directions, zeros = directions[keep], zeros[keep]
            solved = solve_batch(
                left, right, bias_grad, weight, bias, select_directions(directions, zeros, size), self.zero_tol
            )
            elapsed = time.perf_counter() - start
            if all(solved[1]):
                return solved, drawn, int(directions.shape[0]), f"solved after {drawn} samples ({elapsed:.1f} s)"
            if drawn >= self.samples:
                return (
                    solved,
                    drawn,
                    int(directions.shape[0]),
                    f"sample budget of {self.samples} spent ({elapsed:.1f} s)",
                )
            if self.max_seconds is not None and elapsed > self.max_seconds:
                stop = f"time budget of {self.max_seconds:g} s spent after {drawn} samples"
                return solved, drawn, int(directions.shape[0]), stop

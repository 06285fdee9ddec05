"""CAFE: Catastrophic Data Leakage in Vertical Federated Learning (Jin, Chen, Hsu, Yu, Chen & Yu, NeurIPS 2021)."""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.func import functional_call

from gradinv.attacks.base import Attack, Callback, Result
from gradinv.attacks.objectives import euclidean_distance, total_variation
from gradinv.fl.vertical import VerticalModel, VerticalObservation, record_residual, strips
from gradinv.observation import Observation, Reconstruction
from gradinv.validation import check_arguments, check_device, check_seed


def membership(batches: list[torch.Tensor], n: int) -> torch.Tensor:
    """``A (T, N)``: ``A[t, i] = 1 / |s_t|`` if sample ``i`` is in batch ``t``, else 0 (the batch mean's weights)."""
    a = torch.zeros(len(batches), n, dtype=torch.float64)
    for t, batch in enumerate(batches):
        a[t, batch] = 1.0 / batch.numel()
    return a


def recover_loss_gradients(a: torch.Tensor, bias_gradients: torch.Tensor) -> torch.Tensor:
    """CAFE's Step I (Jin et al.): each sample's ``dL/dZ`` at the first fully connected layer.

    Every iteration's bias gradient is its batch's mean: ``grad_b_t = sum_i A[t, i] V_i``. CAFE fits ``V (N, E)`` to
    all observed iterations by gradient descent on ``sum_t ||A_t V - grad_b_t||^2``; here its minimiser is computed
    directly (least squares, minimum norm where a sample's row is not determined). ``bias_gradients`` is ``(T, E)``.
    """
    return torch.linalg.lstsq(a, bias_gradients.double(), driver="gelsd").solution


def recover_layer_inputs(a: torch.Tensor, v: torch.Tensor, weight_gradients: torch.Tensor) -> torch.Tensor:
    """CAFE's Step II: each sample's input ``H_i`` to the first fully connected layer.

    ``grad_W_t = sum_i A[t, i] V_i H_i^T`` is linear in ``H (N, F)`` given ``V (N, E)`` (Step I): row ``(t, e)`` of the
    design is ``A[t, i] V[i, e]``. Least squares over all iterations (CAFE descends on the same squared residual).
    ``weight_gradients`` is ``(T, E, F)``.
    """
    t, e, f = weight_gradients.shape
    design = (a[:, None, :] * v.T[None, :, :]).reshape(t * e, -1)  # ((t, e), i)
    return torch.linalg.lstsq(design, weight_gradients.double().reshape(t * e, f), driver="gelsd").solution


def adam_rows(
    rows: torch.Tensor,
    grad: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    index: torch.Tensor,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.Tensor:
    """One Adam step (Kingma & Ba, ICLR 2015) for the rows ``index`` of a tensor whose other rows wait: each row keeps
    its own moments and step count in ``state = (first (N, ...), second (N, ...), counts (N,))``, updated in place.
    Returns the stepped ``rows`` (the current values of those rows)."""
    first, second, counts = state
    counts[index] += 1
    first[index] = betas[0] * first[index] + (1 - betas[0]) * grad
    second[index] = betas[1] * second[index] + (1 - betas[1]) * grad.pow(2)
    c = counts[index].view(-1, *[1] * (rows.dim() - 1))
    corrected = first[index] / (1 - betas[0] ** c)
    return rows - lr * corrected / ((second[index] / (1 - betas[1] ** c)).sqrt() + eps)


class CAFE(Attack):
    """CAFE (Jin et al., NeurIPS 2021): the whole training set from a vertical FL run's gradients.

    The server knows each iteration's batch indices, so it keeps one fake sample per real one and improves the rows
    of each observed batch. Step I recovers every sample's ``dL/dZ`` at each party's first fully connected layer
    from the bias gradients (:func:`recover_loss_gradients`); Step II the layer's inputs ``H`` from its weight
    gradients (:func:`recover_layer_inputs`); Step III optimises the fake data, batch by observed batch, on

        ``||grad_theta_t(x_s, y_s) - g_t||^2 + alpha_TV TV(x_s) + alpha_H sum_m ||H_m(x_s) - H_m||^2``

    (gradient matching at that iteration's weights, replayed from the initial model and the gradients, plus the
    total variation and CAFE's alignment of the first-layer inputs), with Adam per sample and the pixels kept in
    [0, 1]. The server holds the labels (vertical FL).

    Steps I and II are solved in closed form over all observed iterations: the minimisers of the squared residuals
    CAFE descends on (exact when the model is fixed, ``lr = 0``; a least-squares average
    over training when it moves). Samples that no batch contains stay at their start (``info["never_seen"]``).

    Args:
        passes: sweeps of Step III over the observed iterations.
        lr: Adam's step size for the fake data.
        tv: ``alpha_TV``.
        alignment: ``alpha_H``, the weight of the first-layer input alignment (0: gradient matching alone, DLG over
            the record).
        seed: seeds the fake data's start.
    """

    name = "cafe"
    setting = "vertical"

    def __init__(
        self, *, passes: int = 20, lr: float = 0.1, tv: float = 1e-3, alignment: float = 1.0, seed: int = 0
    ) -> None:
        check_arguments(self, locals())
        if passes < 1 or lr <= 0 or tv < 0 or alignment < 0:
            raise ValueError(
                f"passes >= 1, lr > 0, tv >= 0 and alignment >= 0 needed, got {passes}, {lr}, {tv}, {alignment}"
            )
        check_seed("seed", seed)
        self.passes, self.lr, self.tv, self.alignment, self.seed = passes, lr, tv, alignment, seed

    def reconstruct(
        self,
        observation: Observation | VerticalObservation,
        *,
        callback: Callback | None = None,
        device: str | torch.device | None = None,
    ) -> Reconstruction:
        """Recover all ``N`` samples (``images[i]`` is sample ``i``, with its label).

        ``callback(step, total, loss)``: after each Step III batch update. ``device``: where Step III runs the model
        (default the CPU); Steps I-II are float64 least squares on the CPU. The images come back on the CPU.

        Raises:
            TypeError: a horizontal :class:`~gradinv.Observation` (one client's update has no vertical record).
        """
        if not isinstance(observation, VerticalObservation):
            raise TypeError(f"CAFE attacks a gi.fl.vertical.VerticalObservation, got {type(observation).__name__}")
        chosen = check_device(device)
        start = time.perf_counter()
        inputs = [h.to(chosen) for h in self.layer_inputs(observation)]
        images, trace = self._fake_data(observation, inputs, chosen, callback)
        seen = torch.zeros(observation.num_samples, dtype=torch.bool)
        for batch in observation.batches:
            seen[batch] = True
        return Reconstruction(
            images=images.cpu(),
            residual=record_residual(observation, images.cpu()),
            labels=observation.labels.clone(),
            trace=trace,
            seconds=time.perf_counter() - start,
            attack=self.name,
            config={k: v for k, v in vars(self).items() if not k.startswith("_")},
            info={
                "never_seen": (~seen).nonzero().flatten().tolist(),
                "iterations": len(observation.batches),
                "device": str(chosen),
            },
        )

    def layer_inputs(self, observation: VerticalObservation) -> list[torch.Tensor]:
        """Steps I and II for every party: ``H_m (N, F)``, the inputs of its first fully connected layer."""
        a = membership(observation.batches, observation.num_samples)
        out = []
        for m in range(observation.model.parties):
            bias = torch.stack([g[f"bottoms.{m}.fc.bias"] for g in observation.gradients])
            weight = torch.stack([g[f"bottoms.{m}.fc.weight"] for g in observation.gradients])
            v = recover_loss_gradients(a, bias)
            out.append(recover_layer_inputs(a, v, weight).float())
        return out

    def run(self, observation: Observation, callback: Callback | None) -> Result:
        """CAFE has no horizontal form: :meth:`reconstruct` takes the vertical record."""
        raise TypeError(f"CAFE attacks a gi.fl.vertical.VerticalObservation, got {type(observation).__name__}")

    def _fake_data(
        self,
        observation: VerticalObservation,
        inputs: list[torch.Tensor],
        device: torch.device,
        callback: Callback | None = None,
    ) -> tuple[torch.Tensor, list[float]]:
        """Step III: Adam per sample on the batches' objectives, in observed order, ``passes`` times."""
        model = copy.deepcopy(observation.model).to(device)
        weights = [{k: w.to(device) for k, w in step.items()} for step in observation.weights()]
        gradients = [{k: g.to(device) for k, g in step.items()} for step in observation.gradients]
        labels = observation.labels.to(device)
        names = [n for n, _ in model.named_parameters()]
        generator = torch.Generator().manual_seed(self.seed)  # on the CPU: the same start on every device
        x = torch.rand((observation.num_samples, *observation.image_shape), generator=generator).to(device)
        state = (torch.zeros_like(x), torch.zeros_like(x), torch.zeros(observation.num_samples, device=device))
        trace = []
        for _ in range(self.passes):
            for t, batch in enumerate(observation.batches):
                batch = batch.to(device)
                rows = x[batch].clone().requires_grad_(True)
                target = [gradients[t][k] for k in names]
                loss = self._objective(
                    model, weights[t], names, target, labels[batch], rows, [h[batch] for h in inputs]
                )
                (grad,) = torch.autograd.grad(loss, rows)
                x[batch] = adam_rows(rows.detach(), grad, state, batch, self.lr).clamp(0.0, 1.0)
                trace.append(float(loss.detach()))
                if callback is not None:
                    callback(len(trace), self.passes * len(observation.batches), trace[-1])
        return x, trace

    def _objective(
        self,
        model: VerticalModel,
        weights: dict[str, torch.Tensor],
        names: list[str],
        target: list[torch.Tensor],
        labels: torch.Tensor,
        rows: torch.Tensor,
        inputs: list[torch.Tensor],
    ) -> torch.Tensor:
        """One observed batch's Step III objective (the class docstring's sum); ``inputs`` are the batch's recovered
        first-layer inputs, one ``(B, F)`` per party."""
        params = {k: w.clone().requires_grad_(True) for k, w in weights.items()}
        loss = nn.functional.cross_entropy(functional_call(model, params, (rows,)), labels)
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=True)
        objective = euclidean_distance(grads, target) + self.tv * total_variation(rows)
        if self.alignment > 0:
            for m, part in enumerate(strips(rows, model.parties)):
                features = model.layer_input(m, part, weights)
                objective = objective + self.alignment * (features - inputs[m]).pow(2).sum()
        return objective

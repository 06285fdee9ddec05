"""DLG: Deep Leakage from Gradients (Zhu, Liu & Han, NeurIPS 2019)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

from gradinv.attacks.adaptive import PrivateDraws, adapt, private_draws
from gradinv.attacks.base import Attack, Callback, Result, attacker_device, attacker_model, target_update
from gradinv.attacks.objectives import euclidean_distance, total_variation
from gradinv.fl.client import compute_update, denormalize
from gradinv.observation import Observation
from gradinv.validation import check_arguments, check_positive_int, check_seed


class DLG(Attack):
    """Deep Leakage from Gradients (Zhu et al., NeurIPS 2019, Algorithm 1).

    Dummy inputs ``x'`` and dummy label logits ``y'`` start from N(0, 1) and are optimised jointly with L-BFGS
    so that the gradient of ``CE(F(x'), softmax(y'))`` matches the shared one in squared Euclidean distance
    (Eq. 4): ``min_{x', y'} ||dL(F(x', W), y')/dW - dW||^2``. Labels come back as ``argmax y'``; when the threat
    model grants the labels they are used as they are and only ``x'`` is optimised. The paper's code runs 300
    L-BFGS steps of lr 1 (each up to 20 inner iterations); the best iterate by gradient distance is kept. A FedAvg
    update (``threat.update == "fedavg"``) is matched through the unrolled local steps, its distance divided by
    ``(local_steps * local_lr)^2`` so that L-BFGS's tolerances act as on one gradient.

    Args:
        steps: L-BFGS steps (``optimizer.step`` calls) per restart.
        lr: L-BFGS learning rate.
        max_iter: inner iterations per L-BFGS step (PyTorch's default, which the paper's code keeps).
        history_size: L-BFGS memory (PyTorch's default, as ``max_iter``).
        line_search: ``None`` (the paper's fixed-step L-BFGS) or ``"strong_wolfe"`` (steadier on saturated nets).
        restarts: independent random starts; the one with the smallest gradient distance wins.
        seed: seeds the dummy initialisation.
        batch_size: the batch size to assume when the threat model withholds it.
        adaptive: account for the client's recorded defense (:mod:`gradinv.attacks.adaptive`: under pruning,
            top-k or Soteria, match only the entries the defense let through; under Gaussian noise, add the
            noise-aware TV prior of the posterior); a defense without an adaptive counterpart raises ``ValueError``.
    """

    name = "dlg"
    # the SoK's grade (Carletti et al. 2025, attack table): Zhu et al. 2019: A
    sok = "A"
    requires = frozenset({"batch_size"})

    def __init__(
        self,
        *,
        steps: int = 300,
        lr: float = 1.0,
        max_iter: int = 20,
        history_size: int = 100,
        line_search: str | None = None,
        restarts: int = 1,
        seed: int = 0,
        batch_size: int | None = None,
        adaptive: bool = False,
    ) -> None:
        check_arguments(self, locals())
        if steps < 1 or restarts < 1 or max_iter < 1:
            raise ValueError(f"steps, restarts and max_iter must be >= 1, got {steps}, {restarts}, {max_iter}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        check_positive_int("history_size", history_size, allow_none=False)
        check_positive_int("batch_size", batch_size)
        check_seed("seed", seed)
        self.steps, self.lr, self.max_iter, self.history_size = steps, lr, max_iter, history_size
        if line_search not in (None, "strong_wolfe"):
            raise ValueError(f"line_search must be None (the paper) or 'strong_wolfe', got {line_search!r}")
        self.line_search = line_search
        self.restarts, self.seed, self.batch_size = restarts, seed, batch_size
        self.adaptive = adaptive

    def fixed_labels(self, observation: Observation, n: int) -> tuple[torch.Tensor | None, str]:
        """Labels to hold fixed (``None``: optimise dummy labels jointly, as DLG does) and where they came from."""
        if observation.labels is not None:
            return observation.labels, "threat model"
        return None, "joint optimisation"

    def run(self, observation: Observation, callback: Callback | None) -> Result:
        model = attacker_model(observation)
        target = target_update(observation, model)
        threat, n = observation.threat, self.batch_size_of(observation)
        adaptation = adapt(observation, target, n) if self.adaptive else None
        view = adaptation.view if adaptation else list
        # the noise's negative log-likelihood or the quantisation cells, and the prior that goes with them
        match = adaptation.distance if adaptation and adaptation.distance else euclidean_distance
        prior = adaptation.prior if adaptation else 0.0
        clipped = adaptation.update if adaptation else None  # DP-SGD's clipping, as the client ran it
        fixed, label_source = self.fixed_labels(observation, n)
        device = attacker_device(observation)
        fixed = None if fixed is None else fixed.to(device)
        generator = torch.Generator().manual_seed(self.seed)  # on the CPU: the same start on every device
        # A FedAvg update is about local_steps * local_lr times a gradient: match it on the gradient's scale, so that
        # L-BFGS's absolute tolerances stop it where they would on one gradient (a constant factor, same minimiser).
        scale = 1.0 if threat.update == "gradient" else 1.0 / (threat.local_steps * threat.local_lr) ** 2
        if clipped is not None:  # a clipped update is far smaller than a gradient: match it on the unit scale instead
            scale = 1.0 / max(float(sum((t.detach() ** 2).sum() for t in target)), 1e-30)
        best: tuple[float, torch.Tensor, torch.Tensor] | None = None
        trace: list[float] = []
        for _ in range(self.restarts):
            x = torch.randn((n, *observation.image_shape), generator=generator).to(device).requires_grad_(True)
            y = torch.randn((n, observation.num_classes), generator=generator).to(device).requires_grad_(fixed is None)

            # the client's private dropout masks, optimised with the input (Scheliga et al.; adaptive.py)
            masks = private_draws(model, n, device, observation) if adaptation and adaptation.draws else None

            def objective(x: torch.Tensor = x, y: torch.Tensor = y, masks: PrivateDraws | None = masks) -> torch.Tensor:
                labels = fixed if fixed is not None else torch.softmax(y, dim=-1)
                with masks.installed(model) if masks is not None else contextlib.nullcontext():
                    if clipped is not None:
                        trial = view(clipped(model, x, labels, threat))
                    else:
                        trial = view(compute_update(model, x, labels, threat, create_graph=True))
                distance = match(trial, target)
                if prior:  # the noise-aware posterior (adaptive.py): the prior's weight grows with the noise
                    distance = distance + prior * total_variation(x)
                return distance * scale

            extra = [] if masks is None else masks.parameters()
            candidate = self._minimise(objective, x, y, fixed is None, trace, callback, extra)
            if candidate is not None and (best is None or candidate[0] < best[0]):
                best = candidate
        if best is None:
            raise RuntimeError("DLG diverged (NaN loss) from its first step; try another seed or a smaller lr")
        loss, x_best, y_best = best
        labels = fixed if fixed is not None else y_best.argmax(dim=-1)
        images = denormalize(x_best, threat.normalization)
        if adaptation:  # under ATS, the policy undone (adaptive.py)
            images = adaptation.finish(images)
        info = {"gradient_distance": loss, "label_source": label_source, "adaptive": self.adaptive}
        if adaptation:
            info.update(adaptation.info())
        return Result(images, labels, trace, info=info)

    def _minimise(
        self,
        objective: Callable[[], torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        joint: bool,
        trace: list[float],
        callback: Callback | None,
        extra: list[torch.Tensor] | None = None,
    ) -> tuple[float, torch.Tensor, torch.Tensor] | None:
        """L-BFGS on ``x`` (and ``y`` if ``joint``, and the ``extra`` leaves: an adaptive attack's dropout masks); the
        best finite iterate as ``(loss, x, y)``."""
        variables = ([x, y] if joint else [x]) + list(extra or [])
        optimizer = torch.optim.LBFGS(
            variables,
            lr=self.lr,
            max_iter=self.max_iter,
            history_size=self.history_size,
            line_search_fn=self.line_search,
        )

        def closure() -> torch.Tensor:
            loss = objective()
            for v, g in zip(variables, torch.autograd.grad(loss, variables), strict=True):
                v.grad = g
            return loss

        best: tuple[float, torch.Tensor, torch.Tensor] | None = None
        for step in range(self.steps):
            before = (x.detach().clone(), y.detach().clone())
            loss = float(optimizer.step(closure).detach())  # the loss at ``before``
            if not math.isfinite(loss):
                break
            trace.append(loss)
            if best is None or loss < best[0]:
                best = (loss, *before)
            if callback is not None:
                callback(step + 1, self.steps, loss)
        final = float(objective().detach())
        if math.isfinite(final) and (best is None or final < best[0]):
            best = (final, x.detach().clone(), y.detach().clone())
        return best

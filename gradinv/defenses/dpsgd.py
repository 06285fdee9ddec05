"""DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, Algorithm 1) through Opacus."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradinv.defenses.base import Defense
from gradinv.observation import ThreatModel
from gradinv.validation import check_arguments


def _opacus() -> Any:
    try:
        import opacus
    except ImportError as err:  # pragma: no cover - opacus is a dependency
        raise ImportError("the dpsgd defense needs opacus: pip install torch==2.13.0 opacus") from err
    return opacus


def dp_gradient(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """One DP-SGD gradient: per-sample gradients clipped to ``max_grad_norm``, summed, Gaussian noise of std
    ``noise_multiplier * max_grad_norm`` added, divided by the batch size (what Opacus' ``DPOptimizer.pre_step``
    leaves in ``p.grad``)."""
    opacus = _opacus()
    wrapped = opacus.GradSampleModule(model, loss_reduction="mean")
    optimizer = opacus.optimizers.DPOptimizer(
        torch.optim.SGD(wrapped.parameters(), lr=0.0),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=inputs.shape[0],
        loss_reduction="mean",
        generator=generator,
    )
    optimizer.zero_grad()
    with warnings.catch_warnings():  # Opacus' hooks warn that the inputs need no gradient: they do not
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        F.cross_entropy(wrapped(inputs), labels).backward()
    optimizer.pre_step()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    wrapped._close()
    return grads


class DPSGD(Defense):
    """The client trains with DP-SGD: per-sample clipping and Gaussian noise, through Opacus.

    The shared update is the clipped, noised batch gradient (or, for FedAvg, the weight difference after
    ``local_steps`` DP-SGD steps). Models with BatchNorm are converted as Opacus requires (``ModuleValidator.fix``:
    BatchNorm -> GroupNorm) before the server broadcasts them; ``config()["converted"]`` says so. The privacy spent,
    ``epsilon`` at ``delta`` for ``steps`` steps at sampling rate ``sample_rate``, comes from Opacus' RDP accountant.

    Args:
        noise_multiplier: noise std relative to ``max_grad_norm``.
        max_grad_norm: per-sample clipping norm C.
        sample_rate: the client's batch size over its dataset size (for the accountant).
        steps: training steps the accountant charges for.
        delta: the delta of the (epsilon, delta) guarantee.
    """

    name = "dpsgd"

    def __init__(
        self,
        *,
        noise_multiplier: float = 1.0,
        max_grad_norm: float = 1.0,
        sample_rate: float = 0.01,
        steps: int = 1000,
        delta: float = 1e-5,
    ) -> None:
        check_arguments(self, locals())
        if noise_multiplier < 0 or max_grad_norm <= 0:
            raise ValueError(
                f"noise_multiplier must be >= 0 and max_grad_norm > 0, got {noise_multiplier}, {max_grad_norm}"
            )
        if not 0 < sample_rate <= 1 or steps < 1 or not 0 < delta < 1:
            raise ValueError(
                f"need 0 < sample_rate <= 1, steps >= 1, 0 < delta < 1; got {sample_rate}, {steps}, {delta}"
            )
        self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
        self.sample_rate, self.steps, self.delta = sample_rate, steps, delta
        self.converted = False

    def epsilon(self) -> float:
        """Privacy spent (RDP accountant), ``inf`` without noise."""
        if self.noise_multiplier == 0:
            return float("inf")
        accountant = _opacus().accountants.RDPAccountant()
        accountant.history = [(self.noise_multiplier, self.sample_rate, self.steps)]
        with warnings.catch_warnings():  # tiny noise puts the optimum at the smallest order: epsilon is huge anyway
            warnings.filterwarnings("ignore", message="Optimal order")
            return float(accountant.get_epsilon(delta=self.delta))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "epsilon": self.epsilon()}

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model as Opacus can train it (BatchNorm replaced by GroupNorm where present)."""
        validator = _opacus().validators.ModuleValidator
        self.converted = bool(validator.validate(model, strict=False))
        if not self.converted:
            return model
        fixed = validator.fix(copy.deepcopy(model))
        # the zoo spec names the BatchNorm architecture: a saved observation must not rebuild that one
        fixed.__dict__.pop("gradinv_spec", None)
        return fixed

    def client_update(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        threat: ThreatModel,
        generator: torch.Generator,
    ) -> list[torch.Tensor]:
        """The update of a DP-SGD client: one noised gradient, or the weight change after local DP-SGD steps."""

        def dp_step(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
            return dp_gradient(
                model,
                x,
                y,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=self.max_grad_norm,
                generator=generator,
            )

        if threat.update == "gradient":
            return dp_step(inputs, labels)
        from gradinv.fl.client import minibatches  # the client module imports the defenses: import late

        start = [p.detach().clone() for p in model.parameters()]
        batches = minibatches(inputs.shape[0], threat.local_batch_size)
        for step in range(threat.local_steps):
            idx = batches[step % len(batches)]
            grads = dp_step(inputs[idx], labels[idx])
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads, strict=True):
                    p.sub_(threat.local_lr * g)
        return [s - p.detach() for s, p in zip(start, model.parameters(), strict=True)]

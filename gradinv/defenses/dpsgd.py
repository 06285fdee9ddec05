"""DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, Algorithm 1) through Opacus."""

from __future__ import annotations

import copy
import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradinv.defenses.base import Defense
from gradinv.observation import ThreatModel
from gradinv.update import minibatches
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
    secure_mode: bool = False,
) -> list[torch.Tensor]:
    """One DP-SGD gradient: per-sample gradients clipped to ``max_grad_norm``, summed, Gaussian noise of std
    ``noise_multiplier * max_grad_norm`` added, divided by the batch size (what Opacus' ``DPOptimizer.pre_step``
    leaves in ``p.grad``). ``secure_mode``: Opacus' noise that resists floating-point attacks (sums of 4 draws)."""
    opacus = _opacus()
    wrapped = opacus.GradSampleModule(model, loss_reduction="mean")
    optimizer = opacus.optimizers.DPOptimizer(
        torch.optim.SGD(wrapped.parameters(), lr=0.0),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=inputs.shape[0],
        loss_reduction="mean",
        generator=generator,
        secure_mode=secure_mode,
    )
    optimizer.zero_grad()
    with warnings.catch_warnings():  # Opacus' hooks warn that the inputs need no gradient: they do not
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        F.cross_entropy(wrapped(inputs), labels).backward()
    optimizer.pre_step()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    wrapped._close()
    return grads


def dp_sum(
    per_sample: Sequence[Sequence[torch.Tensor]],
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """DP-SGD's gradient from per-sample gradients (Abadi et al., CCS 2016, Algorithm 1, lines 4-6): each sample's
    gradient scaled by ``min(1, C / (|g| + 1e-6))`` (its norm over every tensor; Opacus' flat clipping and epsilon),
    summed, Gaussian noise of std ``noise_multiplier * C`` added to each entry, divided by the number of samples.

    Args:
        per_sample: one list of gradient tensors per sample, each in the same order and shapes.
        generator: draws the noise (on the tensors' device).
    """
    if not per_sample:
        raise ValueError("dp_sum needs at least one sample's gradient")
    total = [torch.zeros_like(g) for g in per_sample[0]]
    for grads in per_sample:
        norm = torch.stack([g.detach().double().pow(2).sum() for g in grads]).sum().sqrt()
        factor = float((max_grad_norm / (norm + 1e-6)).clamp(max=1.0))
        for t, g in zip(total, grads, strict=True):
            t.add_(g.detach(), alpha=factor)
    std = noise_multiplier * max_grad_norm
    if std > 0:
        for t in total:
            t.add_(torch.normal(0.0, std, t.shape, generator=generator, device=t.device, dtype=t.dtype))
    return [t / len(per_sample) for t in total]


def gaussian_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """(epsilon at ``delta``) of ``steps`` compositions of the sampled Gaussian mechanism, from Opacus' RDP accountant
    (Mironov 2017; Mironov, Talwar & Zhang 2019); ``inf`` without noise. ``sample_rate = 1`` is the plain Gaussian
    mechanism: no amplification by subsampling."""
    if noise_multiplier == 0:
        return float("inf")
    accountant = _opacus().accountants.RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():  # tiny noise puts the optimum at the smallest order: epsilon is huge anyway
        warnings.filterwarnings("ignore", message="Optimal order")
        return float(accountant.get_epsilon(delta=delta))


def noise_seed(generator: torch.Generator) -> int:
    """A seed for DP-SGD's noise: one draw of the client's generator, hashed with a label, so that the noise stream
    shares no draws with the streams the client's seed starts elsewhere (MixUp's plan, dropout masks)."""
    draw = int(torch.randint(0, 2**62, (1,), generator=generator))
    return int.from_bytes(hashlib.sha256(f"gradinv dpsgd noise {draw}".encode()).digest()[:8], "big") >> 1


class DPSGD(Defense):
    """The client trains with DP-SGD: per-sample clipping and Gaussian noise, through Opacus.

    The shared update is the clipped, noised batch gradient (or, for FedAvg, the weight difference after
    ``local_steps`` DP-SGD steps). Models with BatchNorm are converted as Opacus requires (``ModuleValidator.fix``:
    BatchNorm -> GroupNorm) before the server broadcasts them; ``config()["converted"]`` says so.

    Two guarantees are reported, both at ``delta`` (RDP accountant):

    - ``release_epsilon``: what protects the one update the server observes from this client. The attacker knows
      the batch, so subsampling amplification does not apply: it is the plain Gaussian mechanism (sensitivity
      ``max_grad_norm``, noise ``noise_multiplier * max_grad_norm``) composed over the local steps in which a sample
      takes part (``release_steps``: 1 for a gradient; ``ceil(local_steps / mini-batches)`` for FedAvg). At
      ``noise_multiplier = 1`` one step gives about 4.7 at ``delta = 1e-5``. ``None`` until the defense has run.
    - ``epsilon``: the whole training run a sample takes part in, with subsampling amplification: ``steps`` noisy
      steps at sampling rate ``sample_rate``, the caller's statement of the run (gradinv simulates one round;
      ``gi.evaluate.utility`` reports the epsilon of the run it does simulate).

    The noise has its own generator, derived from the client's seed apart from every other random draw (MixUp's,
    dropout's); ``secure_rng=True`` instead seeds it from the operating system's entropy (not reproducible) and uses
    Opacus' ``secure_mode`` noise, robust to floating-point attacks; the generator itself stays PyTorch's (Opacus'
    cryptographic ``torchcsprng`` route is unmaintained). DP-SGD clips per training example: beside MixUp or InstaHide
    (each private image enters several encodings, so its sensitivity grows with their number) or dropout (Opacus'
    per-sample gradients cannot replay the client's private masks) it is refused.

    Args:
        noise_multiplier: noise std relative to ``max_grad_norm`` (Abadi et al.'s sigma).
        max_grad_norm: per-sample clipping norm C.
        sample_rate: the client's batch size over its dataset size, for the training-run ``epsilon``.
        steps: training steps the training-run ``epsilon`` charges for.
        delta: the delta of both (epsilon, delta) guarantees.
        secure_rng: OS-seeded noise with Opacus' secure mode (see above).
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
        secure_rng: bool = False,
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
        self.sample_rate, self.steps, self.delta, self.secure_rng = sample_rate, steps, delta, secure_rng
        self.converted = False
        self.release_steps: int | None = None

    def epsilon(self) -> float:
        """The training run's epsilon (``steps`` at ``sample_rate``), ``inf`` without noise."""
        return gaussian_epsilon(self.noise_multiplier, self.sample_rate, self.steps, self.delta)

    def release_epsilon(self, release_steps: int | None = None) -> float | None:
        """The epsilon of one observed update: the plain Gaussian mechanism over ``release_steps`` (default: those of
        the last update this defense computed), no subsampling amplification."""
        steps = self.release_steps if release_steps is None else release_steps
        return None if steps is None else gaussian_epsilon(self.noise_multiplier, 1.0, steps, self.delta)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "epsilon": self.epsilon(), "release_epsilon": self.release_epsilon()}

    def check_chain(self, defenses: list[Defense]) -> None:
        for other in defenses:
            if type(other).encode is not Defense.encode:
                raise ValueError(
                    f"dpsgd with {other.name}: DP-SGD clips each encoding, and each private image enters several "
                    "encodings, so its sensitivity is a multiple of max_grad_norm and epsilon would not hold"
                )
            if other.name == "dropout":
                raise ValueError(
                    "dpsgd with dropout: Opacus' per-sample gradients cannot replay the client's private dropout "
                    "masks; the combination is not supported"
                )

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

        # the noise's own stream: derived from the client's generator, apart from every other draw
        seed = int.from_bytes(os.urandom(8), "big") >> 1 if self.secure_rng else noise_seed(generator)
        noise = torch.Generator(device=inputs.device).manual_seed(seed)  # Opacus draws on the model's device

        def dp_step(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
            return dp_gradient(
                model,
                x,
                y,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=self.max_grad_norm,
                generator=noise,
                secure_mode=self.secure_rng,
            )

        if threat.update == "gradient":
            self.release_steps = 1
            return dp_step(inputs, labels)
        start = [p.detach().clone() for p in model.parameters()]
        batches = minibatches(inputs.shape[0], threat.local_batch_size)
        self.release_steps = math.ceil(threat.local_steps / len(batches))
        for step in range(threat.local_steps):
            idx = batches[step % len(batches)]
            grads = dp_step(inputs[idx], labels[idx])
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads, strict=True):
                    p.sub_(threat.local_lr * g)
        return [s - p.detach() for s, p in zip(start, model.parameters(), strict=True)]

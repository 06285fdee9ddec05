"""Adaptive attacks: an attacker who knows which defense the client ran (the server runs the protocol, so it does).

A defense must be judged against an attacker who accounts for it (Balunovic, Dimitrov, Staab & Vechev, "Bayesian
Framework for Gradient Leakage", ICLR 2022; Wu, Chen, Guo & Weinberger, "Learning to Invert: Simple Adaptive
Attacks for Gradient Inversion in Federated Learning", UAI 2023). For the sparsifying defenses (pruning the smallest
entries, Zhu et al. 2019 Sec. 5; top-k) the shared update is the client's gradient on the entries the defense let
through and zero elsewhere: the adaptive attacker matches its trial gradient *on those entries only* (a zero in the
shared update says nothing about the gradient there), instead of asking the trial gradient to be zero where the
defense cut it, which is what an attacker ignoring the defense does.

Soteria (Sun et al., CVPR 2021) is a sparsifier of one layer: it zeroes the classifier's weight-gradient columns of
the features it judges sensitive and leaves every other entry exact. Balunovic et al. break it by leaving
the defended layer out of the match; the same support view does that for the zeroed columns and keeps the columns
Soteria let through, which are exact and say more.

Gaussian noise of std ``sigma`` on the update: the Bayes-optimal attack (Balunovic et al., Sec. 4) maximises the
posterior ``log p(g | x) + log p(x)``: with ``log p(g | x) = -||g(x) - g||^2 / (2 sigma^2)`` and the image prior
``log p(x) = -lambda TV(x)``, it minimises ``||g(x) - g||^2 + 2 sigma^2 lambda TV(x)``: the squared L2 distance
(DLG's own) with a TV prior whose weight grows with the noise variance (:func:`noise_prior`). The attack that ignores
the noise is the same with ``lambda = 0``; Inverting Gradients' cosine distance is replaced by the likelihood's L2.

DP-SGD (Abadi et al., CCS 2016, Alg. 1): the shared gradient is ``(sum_i clip_C(g_i) + N(0, sigma^2 C^2)) / B``. The
adaptive attacker computes its trial update through the same operator (:func:`clipped_update`: per-sample gradients,
each scaled to norm at most ``C``, averaged) and matches it with the posterior above at the noise's std
``sigma C / B`` (the server sets the clipping bound and the noise multiplier, so it knows them). Over FedAvg the
client runs ``k`` local DP-SGD steps: the trial unrolls the same steps, each clipped per sample, and the noise of the
update is the sum of the steps' noises scaled by the step size (std ``lr sigma C / b`` each, ``b`` the local
mini-batch).

Laplacian noise: the likelihood is ``exp(-||g(x) - g||_1 / b)`` (``b = sigma / sqrt 2``), so the distance is L1 and
the prior's weight ``b lambda`` (the same Bayesian derivation).

Uniform quantisation to ``bits`` bits (each tensor rounded to levels ``k * step``, ``step = max|g| / (2^(bits-1) - 1)``,
the scale shared): the shared value says only which rounding cell the true entry lies in, ``[q - step/2, q +
step/2]`` (clipped to ``[-max|g|, max|g|]``; one bit: the sign's half-range). The likelihood is uniform on the cells,
so the adaptive attacker matches its trial to the *cells*, the squared distance to the box (zero anywhere inside,
where the plain attack still pulls toward the level), and adds the TV prior at the rounding error's variance
``step^2 / 12`` (gradinv's own: the uniform error's variance in the Gaussian prior weight).

Dropout (Zheng 2021: a random mask on the classifier's input, drawn privately by the client): Scheliga, Maeder &
Seeland ("Dropout is NOT All You Need to Prevent Gradient Leakage", AAAI 2023) break it by optimising the client's
masks jointly with the input. :class:`PrivateDraws` relaxes each sample's binary mask to ``sigmoid(logit) / (1 -
p)`` (one logit per unit, started at the keep probability, so the first trial is dropout's expectation), installed
in the model's dropout layers while the trial update is computed; the attack optimises the logits with its input.

PRECODE (Scheliga et al., WACV 2022: a variational bottleneck before the classifier, ``z = mu + sigma * eps`` with
a private ``eps``) is random in the same way: the adaptive attacker optimises each sample's ``eps`` with the input
(started at 0, the mean), installed in the bottleneck while the trial update is computed.

Sign compression (signSGD, Bernstein et al., ICML 2018: ``sign(g)`` shared, no magnitude): the shared signs say
only which orthant the gradient lies in, a cone with no scale. The adaptive attacker matches its trial to that cone,
scale-free: the squared share of the trial's norm on entries of the wrong sign (and on entries the client's gradient
had at exactly zero), ``||min(0, s * g')||^2 / ||g'||^2`` (:func:`cone_distance`, gradinv's own; 0 inside the cone,
1 at the opposite orthant). No noise, so no prior beyond the attack's own.

ATS (Gao et al., CVPR 2021: the client's images through a searched augmentation policy) hides nothing from the
inversion itself, which recovers the transformed images; Balunovic et al. (Sec. 6) and Wu et al. break it by knowing
the policy. The adaptive attacker inverts the update as the plain one does and then undoes the policy on each image
(:func:`gradinv.attacks.ats_decode.decode`: each image's signs chosen by the round trip, no ground truth).

Every other recorded defense (MixUp, InstaHide: their encodings have their own decoding attack) raises
``ValueError`` with ``adaptive=True`` rather than silently running the plain attack.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.func import functional_call

from gradinv.attacks.ats_decode import decode
from gradinv.attacks.objectives import euclidean_distance, l1_distance
from gradinv.defenses.precode import VariationalBottleneck
from gradinv.observation import Observation, ThreatModel
from gradinv.update import compute_update, model_loss

SPARSIFIERS = frozenset({"prune", "topk", "soteria"})
"""Defenses that zero entries of the update and leave the rest exact: the adaptive view keeps only what survived."""

QUANTIZERS = frozenset({"quantize"})
"""Defenses that round the update: the adaptive objective matches the rounding cells."""

NOISE = frozenset({"noise", "dpsgd"})
"""Defenses that add noise to the update: the adaptive objective is the noise-aware posterior (Gaussian noise)."""

DROPOUT = frozenset({"dropout", "precode"})
"""Defenses whose client draws at random in private (dropout masks, PRECODE's latent noise): the adaptive attacker
optimises the draws too."""

SIGNS = frozenset({"sign"})
"""Defenses that share only signs: the adaptive objective matches the orthant."""

TRANSFORMS = frozenset({"ats"})
"""Defenses that transform the client's images by a known policy: the update is an honest one of the transformed
images, so the adaptive attacker inverts it as it is and undoes the policy on what it recovers
(:mod:`gradinv.attacks.ats_decode`)."""

ADAPTABLE = SPARSIFIERS | NOISE | QUANTIZERS | DROPOUT | SIGNS | TRANSFORMS
"""Every defense with an adaptive counterpart."""

TV_PRIOR = 16.0
"""``lambda`` of the image prior ``p(x) ~ exp(-lambda sum |grad x|)`` in the noise-aware objective: a total variation
*summed* over the entries (of the normalised input), so that ``lambda`` does not depend on the image size; as
:func:`~gradinv.attacks.objectives.total_variation` is a mean, its weight is ``2 sigma^2 lambda`` times the number of
entries. gradinv's own calibration, with iDLG on DLG's LeNet at 32x32 (docs/adaptive.md): the best weight of the mean
TV was 0.1 (``lambda`` 16) at std 1e-3 and 10 at std 1e-2 on the cat (the same ``lambda``: the Bayesian scaling
holds), and 0.03-0.1 on two other photographs at std 1e-3."""

View = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]
"""Maps a trial update to what the attacker compares with the observed one."""


def support_masks(target: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, 1 where the shared update is nonzero (the defense let the entry through), else 0."""
    return [(t != 0).to(t.dtype) for t in target]


def defense_view(observation: Observation, target: Sequence[torch.Tensor]) -> View:
    """The adaptive attacker's view of a trial update under the client's recorded defenses.

    Raises:
        ValueError: no defense is recorded (nothing to adapt to), or one has no adaptive counterpart yet.
    """
    names = [str(d.get("name")) for d in observation.defenses]
    if not names:
        raise ValueError("adaptive=True, but the observation records no client defense to adapt to")
    unsupported = sorted(set(names) - ADAPTABLE)
    if unsupported:
        raise ValueError(
            f"no adaptive counterpart yet for the defense(s) {unsupported}; adaptive attacks exist for "
            f"{sorted(ADAPTABLE)} (run with adaptive=False for the attack that ignores the defense)"
        )
    masks = support_masks(target)

    def view(trial: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [g * m for g, m in zip(trial, masks, strict=True)]

    return view


def noise_prior(observation: Observation, batch_size: int) -> float:
    """The weight of the mean total variation in the noise-aware objective (module docstring), in the update's units,
    for a trial batch of ``batch_size`` inputs; 0 when no noise is recorded. Gaussian noise: ``2 sigma^2 lambda``
    times the batch's number of input entries (noises added one after another add their variances; DP-SGD's is
    ``(noise_multiplier * max_grad_norm / B)^2``, over ``k`` local steps of size ``lr`` on mini-batches of ``b``:
    ``k (lr noise_multiplier max_grad_norm / b)^2``). Laplacian noise of std ``sigma`` (scale ``b = sigma / sqrt 2``):
    the likelihood is ``exp(-||g(x) - g||_1 / b)``, so the objective is the L1 distance plus ``b lambda`` times the
    entries (:func:`likelihood`).

    Raises:
        ValueError: Laplacian noise beside other noise (their sum has no closed-form likelihood).
    """
    variance, laplace = 0.0, []
    for defense in observation.defenses:
        name = defense.get("name")
        if name == "dpsgd":
            threat = observation.threat
            step_batch = batch_size if threat.local_batch_size is None else min(threat.local_batch_size, batch_size)
            std = float(defense["noise_multiplier"]) * float(defense["max_grad_norm"]) / step_batch
            if threat.update == "gradient":
                variance += std**2
            else:  # the update sums local_steps independent noises, each scaled by the step size
                variance += threat.local_steps * (threat.local_lr * std) ** 2
        elif name == "noise" and defense.get("distribution", "gaussian") == "laplacian":
            laplace.append(float(defense["std"]))
        elif name == "noise":
            variance += float(defense["std"]) ** 2
    entries = batch_size * math.prod(observation.image_shape)
    if laplace:
        if len(laplace) > 1 or variance > 0:
            raise ValueError(
                "no adaptive counterpart for Laplacian noise beside other noise (their sum has no closed-form "
                "likelihood); run with adaptive=False"
            )
        return laplace[0] / math.sqrt(2) * TV_PRIOR * entries
    return 2 * variance * TV_PRIOR * entries


def likelihood(observation: Observation) -> str:
    """The noise likelihood of the adaptive objective: ``"laplacian"`` (L1 distance) where Laplacian noise is
    recorded, else ``"gaussian"`` (squared L2)."""
    laplacian = any(
        d.get("name") == "noise" and d.get("distribution", "gaussian") == "laplacian" for d in observation.defenses
    )
    return "laplacian" if laplacian else "gaussian"


UpdateFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, ThreatModel], list[torch.Tensor]]
"""Computes a trial's update, differentiably: ``(model, inputs, labels, threat) -> update``."""


def clipped_gradient(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    weights: list[torch.Tensor],
    max_grad_norm: float,
) -> list[torch.Tensor]:
    """One DP-SGD step's gradient without its noise, at the parameters ``weights`` (in ``state``), differentiable
    w.r.t. ``inputs``: each sample's gradient scaled to norm at most ``max_grad_norm``, then averaged (Abadi et al.,
    Alg. 1; what Opacus computes before adding noise)."""
    total: list[torch.Tensor] | None = None
    for i in range(inputs.shape[0]):
        loss = model_loss(functional_call(model, state, (inputs[i : i + 1],)), labels[i : i + 1], model)
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        norm = torch.sqrt(sum((g * g).sum() for g in grads))  # type: ignore[arg-type]
        factor = torch.clamp(max_grad_norm / (norm + 1e-12), max=1.0)
        scaled = [g * factor for g in grads]
        total = scaled if total is None else [t + g for t, g in zip(total, scaled, strict=True)]
    assert total is not None
    return [t / inputs.shape[0] for t in total]


def clipped_update(
    model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, threat: ThreatModel, max_grad_norm: float
) -> list[torch.Tensor]:
    """DP-SGD's update without its noise, differentiable w.r.t. ``inputs``: one clipped gradient (a shared gradient),
    or ``w_before - w_after`` after ``threat.local_steps`` local DP-SGD steps on the client's mini-batches in data
    order, each step's gradient clipped per sample (a FedAvg update: the DP-SGD client's own loop, unrolled)."""

    def step(
        m: torch.nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, w: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        return clipped_gradient(m, state, x, y, w, max_grad_norm)

    return compute_update(model, inputs, labels, threat, create_graph=True, step_gradient=step)


def trial_update(observation: Observation) -> UpdateFn | None:
    """How the adaptive attacker computes a trial's update when the client's defense changes the update itself
    (DP-SGD's per-sample clipping); ``None``: the plain update."""
    clips = [float(d["max_grad_norm"]) for d in observation.defenses if d.get("name") == "dpsgd"]
    if not clips:
        return None
    if len(clips) > 1:
        raise ValueError("no adaptive counterpart for DP-SGD applied twice")
    bound = clips[0]

    def update(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, threat: ThreatModel) -> list:
        return clipped_update(model, inputs, labels, threat, bound)

    return update


def quantization_cells(target: Sequence[torch.Tensor], bits: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per entry, the interval ``[lower, upper]`` of true values that :func:`~gradinv.defenses.quantize.
    quantize_uniform` rounds to the shared value (module docstring); a tensor shared as all zeros was all zeros."""
    half = 2 ** (bits - 1) - 1
    lower, upper = [], []
    for q in target:
        top = q.abs().max()
        if top == 0:
            lower.append(torch.zeros_like(q))
            upper.append(torch.zeros_like(q))
        elif half == 0:  # one bit: sign(g) * max|g|
            lower.append(torch.where(q > 0, torch.zeros_like(q), -top))
            upper.append(torch.where(q > 0, top, torch.zeros_like(q)))
        else:
            step = top / half
            lower.append(torch.clamp(q - step / 2, min=-top))
            upper.append(torch.clamp(q + step / 2, max=top))
    return lower, upper


Distance = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]
"""Compares a (viewed) trial update with the observed one."""


def cell_distance(lower: Sequence[torch.Tensor], upper: Sequence[torch.Tensor]) -> Distance:
    """The squared Euclidean distance from a trial update to the box ``[lower, upper]`` (0 inside)."""

    def distance(trial: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
        terms = [
            (torch.relu(lo - t) + torch.relu(t - hi)).pow(2).sum()
            for t, lo, hi in zip(trial, lower, upper, strict=True)
        ]
        return torch.stack(terms).sum()

    distance.__name__ = "cell_distance"
    return distance


def cone_distance(trial: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """The scale-free distance from a trial update to the orthant of the shared signs ``target`` (module
    docstring): the squared norm on wrong-signed entries (a zero sign asks for zero) over the squared norm."""
    wrong = [torch.where(s == 0, t, torch.relu(-s * t)) for t, s in zip(trial, target, strict=True)]
    off = torch.stack([w.pow(2).sum() for w in wrong]).sum()
    total = torch.stack([t.pow(2).sum() for t in trial]).sum()
    return off / total.clamp_min(1e-30)


@dataclass(frozen=True)
class PrivateDraws:
    """The client's private random draws for a trial batch, as leaves the adaptive attack optimises with its input
    (module docstring): relaxed dropout masks (logits, ``(n, in_features)`` per dropout layer) and PRECODE's latent
    noise (``(n, k)`` per bottleneck, started at 0, the mean)."""

    masks: dict[str, torch.Tensor]
    noises: dict[str, torch.Tensor]

    def parameters(self) -> list[torch.Tensor]:
        """The leaves the attack optimises (a draw read off the update exactly is held fixed)."""
        return [t for t in (*self.masks.values(), *self.noises.values()) if t.requires_grad]

    @contextlib.contextmanager
    def installed(self, model: torch.nn.Module) -> Iterator[None]:
        """The draws in ``model``'s modules for the block (masks recomputed from the logits, so differentiable)."""
        modules = dict(model.named_modules())
        try:
            for name, logit in self.masks.items():
                modules[name].mask = torch.sigmoid(logit) / (1 - modules[name].p)
            for name, noise in self.noises.items():
                modules[name].noise = noise
            yield
        finally:
            for name in self.masks:
                modules[name].mask = None
            for name in self.noises:
                modules[name].noise = None


def private_draws(
    model: torch.nn.Module, batch_size: int, device: torch.device, observation: Observation | None = None
) -> PrivateDraws:
    """Fresh draws for every dropout layer (masks at the keep probability, ``sigmoid(logit) = 1 - p`` for the layer's
    rate ``p``) and every PRECODE bottleneck of ``model``: its noise read off the observed update for one sample
    (:func:`bottleneck_noise`; held fixed where the reading is exact, :func:`exact_read`, else a start that is
    optimised), else optimised from 0, the mean."""
    from gradinv.defenses.dropout import DroppedLinear

    masks, noises = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, DroppedLinear):
            start = math.log((1 - m.p) / m.p) if m.p > 0 else 10.0
            masks[name] = torch.full((batch_size, m.in_features), start, device=device, requires_grad=True)
        elif isinstance(m, VariationalBottleneck):
            read = None if observation is None or batch_size != 1 else bottleneck_noise(observation, name, m)
            if read is None:  # optimised from the mean
                noises[name] = torch.zeros((batch_size, m.latent), device=device, requires_grad=True)
            elif exact_read(observation):  # held fixed (optimising it too lost 20 dB of iDLG at 16x16)
                noises[name] = read.to(device)
            else:  # another defense or several local steps blur the reading: a start, optimised
                noises[name] = read.to(device).requires_grad_(True)
    return PrivateDraws(masks, noises)


def exact_read(observation: Observation | None) -> bool:
    """Whether :func:`bottleneck_noise` is exact: one sample's own gradient (or one local step), PRECODE the only
    defense (noise, clipping or pruning on the update would perturb the reading)."""
    if observation is None:
        return False
    one_step = observation.threat.update == "gradient" or observation.threat.local_steps == 1
    return one_step and [d.get("name") for d in observation.defenses] == ["precode"]


def bottleneck_noise(observation: Observation, name: str, bottleneck: VariationalBottleneck) -> torch.Tensor | None:
    """The client's latent draw ``eps`` of one sample, read off its update (gradinv's own, from the bias trick of
    Phong et al. 2018): the encoder's and the decoder's gradients are ``g h^T`` and ``g' z^T`` with their bias
    gradients ``g`` and ``g'``, so ``h = dW^T g / ||g||^2`` (the bottleneck's input; the KL term's gradient has the
    same form) and ``z = dW'^T g' / ||g'||^2`` (its latent sample), and ``eps = (z - mu(h)) / std(h)``. ``None``
    when a bias gradient is zero or missing."""
    update = observation.update
    keys = [f"{name}.encoder.weight", f"{name}.encoder.bias", f"{name}.decoder.weight", f"{name}.decoder.bias"]
    if any(k not in update for k in keys):
        return None
    w_enc, b_enc, w_dec, b_dec = (update[k].detach().double() for k in keys)
    if float(b_enc.norm()) == 0 or float(b_dec.norm()) == 0:
        return None
    h = (w_enc.T @ b_enc) / (b_enc @ b_enc)
    z = (w_dec.T @ b_dec) / (b_dec @ b_dec)
    with torch.no_grad():
        weight, bias = bottleneck.encoder.weight.double(), bottleneck.encoder.bias.double()
        mu, raw = (weight @ h + bias).chunk(2)
    return ((z - mu) / torch.nn.functional.softplus(raw)).float()[None]


@dataclass(frozen=True)
class Adaptation:
    """What an adaptive attack changes, from the defenses recorded in the observation.

    Attributes:
        view: maps a trial update to what is compared (the support of a sparsifier).
        distance: replaces the attack's own distance (the noise's likelihood, the quantisation cells); ``None``:
            keep it.
        prior: the weight of the mean total variation that goes with ``distance`` (0: the attack keeps its own).
        update: computes the trial's update through the client's operator (DP-SGD's clipping); ``None``: the plain
            update.
    """

    view: View
    distance: Distance | None
    prior: float
    update: UpdateFn | None
    draws: bool = False
    """The client drew at random in private (dropout in train mode, PRECODE): the attack optimises the draws too
    (:func:`private_draws`, one set per restart)."""
    policy: str | None = None
    """The client's ATS policy: the recovered images are decoded through it (:meth:`finish`)."""

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        """The attack's images, with the client's ATS policy undone when there is one."""
        if self.policy is None:
            return images
        return decode(images, self.policy)[0].to(images)

    def info(self) -> dict[str, object]:
        """What the result records of the adaptation."""
        out: dict[str, object] = {}
        if self.distance is not None:
            out["adaptive_distance"] = self.distance.__name__
        if self.prior:
            out["noise_prior"] = self.prior
        if self.update is not None:
            out["adaptive_update"] = "dpsgd clipping"
        if self.draws:
            out["private_draws"] = "optimised"
        if self.policy is not None:
            out["ats_decoded"] = self.policy
        return out


def adapt(observation: Observation, target: Sequence[torch.Tensor], batch_size: int) -> Adaptation:
    """The adaptive attack's changes for the client's recorded defenses (module docstring), for a trial batch of
    ``batch_size``.

    Raises:
        ValueError: no defense recorded, or one without an adaptive counterpart (see :func:`defense_view`), or a
            combination whose likelihood is not built (quantisation with noise, quantisation twice).
    """
    view = defense_view(observation, target)
    policies = [str(d["policy"]) for d in observation.defenses if d.get("name") in TRANSFORMS]
    if len(policies) > 1:
        raise ValueError("no adaptive counterpart for two ATS policies in one chain; run with adaptive=False")
    policy = policies[0] if policies else None
    # dropout draws nothing in eval mode; PRECODE's bottleneck draws in every mode (its official code)
    draws = any(
        d.get("name") == "precode" or (d.get("name") in DROPOUT and observation.threat.bn_mode == "train")
        for d in observation.defenses
    )
    noisy = any(
        d.get("name") == "noise" or (d.get("name") == "dpsgd" and float(d["noise_multiplier"]) > 0)
        for d in observation.defenses
    )
    prior = noise_prior(observation, batch_size)
    update = trial_update(observation)
    if any(d.get("name") in SIGNS for d in observation.defenses):
        if len(observation.defenses) > 1 or noisy:
            raise ValueError(
                "no adaptive counterpart for sign compression beside another defense (the shared signs would be "
                "of the other defense's output); run with adaptive=False"
            )
        return Adaptation(list, cone_distance, 0.0, update, draws, policy)  # a zero sign is kept: it asks for a zero
    quantized = [d for d in observation.defenses if d.get("name") in QUANTIZERS]
    if quantized:
        if len(quantized) > 1 or noisy:
            raise ValueError(
                "no adaptive counterpart for quantisation beside noise or twice (no closed-form likelihood); run "
                "with adaptive=False"
            )
        bits = int(quantized[0]["bits"])
        lower, upper = quantization_cells(target, bits)
        half = max(2 ** (bits - 1) - 1, 1)
        entries = sum(t.numel() for t in target)
        variance = sum(float(t.abs().max() / half) ** 2 / 12 * t.numel() for t in target) / max(entries, 1)
        prior = 2 * variance * TV_PRIOR * batch_size * math.prod(observation.image_shape)
        return Adaptation(view, cell_distance(lower, upper), prior, update, draws, policy)
    if noisy:
        distance = l1_distance if likelihood(observation) == "laplacian" else euclidean_distance
        return Adaptation(view, distance, prior, update, draws, policy)
    return Adaptation(view, None, 0.0, update, draws, policy)

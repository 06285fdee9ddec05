"""The auditor's shortcut: point gradinv at your own model and data, run every attack whose conditions hold (the
exact ones first), and write a report saying whether a server could rebuild a client's batch.

What an audit does (``gradinv audit --model my_model.py:Net --data DIR --batch-size 32``):

1. Loads the model class from a Python file (your code, run as you would run it) and, optionally, its weights.
2. Draws one client batch from your image folder and simulates the client sharing its update under the threat model
   and defenses you give.
3. Plans the attacks with :func:`gradinv.analysis.applicable_attacks`: the exact attacks whose conditions hold on
   your architecture, batch size and threat model (bias trick, SPEAR, R-GAP for an honest server; trap weights and
   imprint modules for a malicious one), then the optimisation attack (Inverting Gradients, with the BatchNorm prior
   when the model has BatchNorm layers).
4. Runs them in that order. An attack that *certifies* every image of the batch (``Reconstruction.certified``: its
   own uniqueness condition holds, e.g. one-sample consistency or R-GAP's full rank at the answer, not merely a
   small gradient residual, which a rank-deficient model reproduces with a wrong image) settles the question, and
   the slower attacks after it are skipped unless ``run_all``.
5. Scores every reconstruction against the batch and writes ``report.html`` with the plan, the reasons, the
   verdict and the pictures. The verdict is a lower bound on what leaks: "no image above 20 dB" means none within
   the attacks and the budget run (stated: Inverting Gradients' steps and restarts), never that the model is
   safe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from gradinv import attacks, data, defenses, report
from gradinv.analysis import applicable_attacks
from gradinv.attacks.base import Attack, Callback
from gradinv.evaluate.cells import score_run
from gradinv.fl.client import num_outputs, observe
from gradinv.models.user import load_model
from gradinv.observation import Observation, Reconstruction, ThreatModel
from gradinv.pipeline import client_training_set, split_options
from gradinv.report.grid import PROTECTED_PSNR
from gradinv.validation import check_device

HONEST_EXACT = ("bias_trick", "spear", "rgap")
MALICIOUS_EXACT = ("trap_weights", "imprint")


@dataclass(frozen=True)
class Step:
    """One attack of the plan and why it is there."""

    attack: str
    exact: bool
    reason: str


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has BatchNorm layers."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def plan(
    model: nn.Module, image_shape: tuple[int, int, int], batch_size: int, threat: ThreatModel
) -> tuple[list[Step], list[Step]]:
    """The attacks to run, in order (exact ones first), and those left out, each with its reason.

    Exact attacks come from :func:`gradinv.analysis.applicable_attacks` and must fit the threat model (the
    malicious-server ones only for ``server="malicious"``, gradient-only ones only for a shared gradient);
    Inverting Gradients closes the plan, as it applies to any differentiable model.
    """
    chosen, skipped = [], []
    wanted = MALICIOUS_EXACT if threat.server == "malicious" else HONEST_EXACT
    for a in applicable_attacks(model, image_shape, batch_size):
        if a.attack not in HONEST_EXACT + MALICIOUS_EXACT:
            continue
        if a.attack not in wanted:
            skipped.append(
                Step(a.attack, a.exact, f"needs a {'malicious' if a.attack in MALICIOUS_EXACT else 'honest'} server")
            )
        elif not a.applies:
            skipped.append(Step(a.attack, a.exact, a.reason))
        elif threat.update != "gradient":
            skipped.append(Step(a.attack, a.exact, "inverts a single gradient; the client shares a FedAvg update"))
        else:
            chosen.append(Step(a.attack, a.exact, a.reason))
    chosen.sort(key=lambda s: not s.exact)  # exact first, approximate (rank-deficient R-GAP) after
    bn = " with the BatchNorm prior" if has_batchnorm(model) else ""
    chosen.append(Step("inverting_gradients", False, f"optimisation attack for any differentiable model{bn}"))
    return chosen, skipped


def certified(rec: Reconstruction, batch_size: int) -> bool:
    """Whether the attack certified every image of the batch (``Reconstruction.certified``; no ground truth)."""
    return sum(rec.certified) >= batch_size


@dataclass
class AuditConfig:
    """What ``gradinv audit`` runs; see the module docstring."""

    model: str
    data: str
    batch_size: int
    model_options: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    dataset: str = "folder"
    size: int = 32
    channels: int = 3
    defenses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    threat: ThreatModel = field(default_factory=ThreatModel)
    attack_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 4000
    """Inverting Gradients' steps per restart (inversefed's reconstruct_image.py: 4000)."""
    restarts: int = 2
    """Inverting Gradients' restarts (breaching's and inversefed's ImageNet settings use 8; a GPU affords them)."""
    run_all: bool = False
    seed: int = 0
    client_images: int = 256
    """The client's training set drawn from ``data`` for defenses that mix from it (MixUp's ``pool="dataset"``)."""
    device: str = "cpu"
    """Where the client and the attacks compute: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""


def audit(
    config: AuditConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: Callable[[str], Callback | None] | None = None,
) -> dict[str, Any]:
    """Run the audit of ``config`` and write ``report.html``, ``metrics.json`` and the pictures into ``out``.

    Returns:
        The run record (also in ``metrics.json``), with an ``audit`` entry: the plan, what was skipped and why, the
        verdict.
    """
    if not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise ValueError(f"batch size must be an integer >= 1, got {config.batch_size!r}")
    for key in ("steps", "restarts"):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    device = str(check_device(config.device))
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)  # the initialisation, where no weights are given, is reproducible too
        model = load_model(config.model, config.model_options, config.weights)
    shape = (config.channels, config.size, config.size)
    try:
        num_classes = num_outputs(model, shape)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"the model does not take images of shape {shape} (set --size/--channels): {err}") from err
    client_defenses = [defenses.make(name, **params) for name, params in config.defenses]
    steps, skipped = plan(model, shape, config.batch_size, config.threat)
    options: dict[str, Any] = {
        "inverting_gradients.steps": config.steps,
        "inverting_gradients.restarts": config.restarts,
    }
    if has_batchnorm(model):
        # Huang et al. 2021's settings (examples/bashes): with the batch's BN statistics, and without
        options["inverting_gradients.bn_reg"] = 0.005 if config.threat.knows_bn_stats else 0.001
        options["inverting_gradients.tv"] = 0.1 if config.threat.knows_bn_stats else 0.05
    names = [s.attack for s in steps]
    options.update(config.attack_options)
    per_attack = split_options(names, options)
    chosen: dict[str, Attack] = {name: attacks.make(name, **per_attack[name]) for name in names}
    folder = report.prepare_folder(out, overwrite=overwrite)
    images, labels = data.load(
        config.dataset,
        n=config.batch_size,
        size=config.size,
        seed=config.seed,
        channels=config.channels,
        num_classes=num_classes,
        root=config.data,
    )
    pool = client_training_set(
        client_defenses,
        config.dataset,
        max(config.client_images, config.batch_size),
        size=config.size,
        seed=config.seed,
        channels=config.channels,
        num_classes=num_classes,
        root=config.data,
    )
    results: dict[str, tuple[Reconstruction, dict[str, Any]]] = {}
    observations: dict[str, Observation] = {}
    for name, attack in chosen.items():
        # a malicious server's attack sends its own modified model: its own observation
        own = type(attack).prepare_model is not Attack.prepare_model
        key = name if own else "shared"
        if key not in observations:
            sent = attack.prepare_model(copy.deepcopy(model), config.threat) if own else model
            fresh = [defenses.make(n, **params) for n, params in config.defenses]  # DP-SGD accounts per object
            observations[key] = observe(
                sent,
                images,
                labels,
                threat=config.threat,
                seed=config.seed,
                defenses=fresh,
                client_data=pool,
                device=device,
            )
            observations[key].save(folder / ("observation" if key == "shared" else f"observation-{name}"))
        rec = attack.reconstruct(observations[key], callback=progress(name) if progress else None, device=device)
        results[name] = (rec, score_run(rec, images, labels, config.threat, config.seed))
        if not config.run_all and certified(rec, config.batch_size):
            break
    last = next(reversed(results))
    reason = f"{last} certified every image of the batch ({results[last][0].certificate})"
    skipped += [Step(s.attack, s.exact, reason) for s in steps if s.attack not in results]
    ig = chosen["inverting_gradients"]
    budget = f"{ig.steps} steps x {ig.restarts} restarts of Inverting Gradients"  # type: ignore[attr-defined]
    verdict = _verdict(results, config.batch_size, budget if "inverting_gradients" in results else None)
    record_config = {
        "model": config.model,
        "model_options": config.model_options,
        "weights": config.weights,
        "data": f"{config.dataset}:{config.data}",
        "batch_size": int(images.shape[0]),
        "size": config.size,
        "channels": config.channels,
        "num_classes": num_classes,
        "threat": config.threat.to_dict(),
        "defenses": [d.config() for d in client_defenses],
        "seed": config.seed,
        "labels": labels.tolist(),
        "audit": {
            "plan": [vars(s) for s in steps if s.attack in results],
            "skipped": [vars(s) for s in skipped],
            "verdict": verdict,
        },
    }
    save_file({"images": images.contiguous(), "labels": labels}, str(folder / "ground_truth.safetensors"))
    return report.write_run(folder, originals=images, results=results, config=record_config)


def _verdict(
    results: dict[str, tuple[Reconstruction, dict[str, Any]]], batch_size: int, budget: str | None
) -> dict[str, Any]:
    """Per original image, the best PSNR any attack reached (``None``: no attack returned an image for it), against
    the image as it is or, for an augmenting client, as the client's pass saw it (flipped or shifted, it is the
    image); how many exceed :data:`PROTECTED_PSNR`; which attacks certified the whole batch. A lower bound:
    ``budget`` names the optimisation attack's budget when it ran."""
    best: list[float | None] = [None] * batch_size
    for _, scores in results.values():
        for entry in [*scores["per_image"], *scores.get("per_image_vs_augmented", [])]:
            previous = best[entry["index"]]
            best[entry["index"]] = entry["psnr"] if previous is None else max(previous, entry["psnr"])
    leaked = sum(b is not None and b >= PROTECTED_PSNR for b in best)
    strongest = max(results, key=lambda n: max(results[n][1]["psnr"], results[n][1].get("psnr_vs_augmented", -1e9)))
    certified_by = [n for n, (rec, _) in results.items() if certified(rec, batch_size)]
    within = f" within {budget}" if budget else ""
    if leaked == 0:
        summary = (
            f"no image of the batch above {PROTECTED_PSNR:g} dB from {', '.join(results)}{within}: a lower bound on "
            "what leaks, not a proof of safety (stronger or adaptive attacks, more steps or restarts may do better)"
        )
    else:
        summary = f"{leaked} of {batch_size} images recovered above {PROTECTED_PSNR:g} dB" + (
            f"; {', '.join(certified_by)} certified every image (the answer is provably the client's batch)"
            if certified_by
            else f" (none certified{within}; more may leak)"
        )
    return {
        "budget": budget,
        "leaked": leaked,
        "threshold_db": PROTECTED_PSNR,
        "best_psnr_per_image": best,
        "strongest_attack": strongest,
        "certified_by": certified_by,
        "summary": summary,
    }

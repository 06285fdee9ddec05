"""Inverting Gradients in gradinv and in breaching (Geiping et al.'s own framework), side by side in one process.

    python benchmarks/versus_breaching.py --breaching /path/to/breaching-checkout [--steps 200] [--photos 0 1 2]

Breaching is never a dependency of gradinv: give the path of a checkout (the folder holding ``breaching/``) and run
this with a Python where both import. Breaching needs torchvision, which PyPI's build does not import beside the CPU
torch 2.13.0 of this project's venv; on this machine a separate venv works::

    python -m venv /tmp/bvenv
    /tmp/bvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 hydra-core scipy lpips
    /tmp/bvenv/bin/pip install -e . torch==2.14.1 torchvision==0.29.1
    /tmp/bvenv/bin/python benchmarks/versus_breaching.py --breaching /path/to/breaching

The case, identical on both sides: the paper's ConvNet-64 (breaching's ``ConvNet``, gradinv's ``convnet``; gradinv's
seeded weights copied into breaching's model by position), BatchNorm in eval mode, one 32x32 scikit-image
photograph per cell, its label given, no input normalisation, the client gradient computed once by gradinv and handed
to both, the same start (gradinv's seeded ``randn``, passed to breaching as ``initial_data``), and Inverting
Gradients' objective and optimiser: the cosine distance plus ``--tv`` times total variation, signed Adam at lr 0.1,
the box [0, 1], the step size divided by 10 at 3/8, 5/8 and 7/8 of ``--steps``, and the best iterate by objective
(breaching's rule; gradinv's ``keep="best"``). Breaching's TV takes the mean over a zero-padded image (ours over the
interior): the same term up to the border.

Each photograph runs, interleaved, in three pairings: both in float32 (breaching's default), both in mixed precision
(gradinv ``precision="bfloat16"``, breaching ``impl.mixed_precision=True``, which autocasts to bfloat16 on the CPU
and also switches to channels-last), and gradinv's bfloat16 against breaching's float32 default. Printed: seconds per
step of each, their ratio (breaching / gradinv: > 1 means gradinv is faster) and the PSNR each reaches after the same
steps.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import torch

import gradinv as gi


def breaching_case(breaching, model: torch.nn.Module, width: int, steps: int, tv: float, mixed: bool):
    """Breaching's ConvNet with ``model``'s weights and an Inverting Gradients attacker configured like gradinv's."""
    from breaching.cases.models.model_preparation import ConvNet

    theirs = ConvNet(width=width, num_classes=10, num_channels=3)
    mine, their_state = list(model.state_dict().values()), theirs.state_dict()
    if len(mine) != len(their_state):
        raise SystemExit(f"models differ: {len(mine)} tensors against breaching's {len(their_state)}")
    theirs.load_state_dict(dict(zip(their_state, mine, strict=True)))
    theirs.eval()
    overrides = [
        f"optim.max_iterations={steps}",
        f"optim.callback={steps + 1}",
        f"regularization.total_variation.scale={tv}",
        f"impl.mixed_precision={mixed}",
    ]
    cfg = breaching.get_attack_config("invertinggradients", overrides=overrides)
    setup = {"dtype": torch.float, "device": torch.device("cpu")}
    attacker = breaching.attacks.prepare_attack(theirs, torch.nn.CrossEntropyLoss(), cfg, setup)
    return theirs, attacker


def run_breaching(breaching, model, width, steps, tv, mixed, gradient, label, start) -> tuple[torch.Tensor, float]:
    from omegaconf import OmegaConf

    theirs, attacker = breaching_case(breaching, model, width, steps, tv, mixed)
    metadata = OmegaConf.create({"shape": list(start.shape[1:]), "modality": "vision"})
    payload = [{"parameters": list(theirs.parameters()), "buffers": list(theirs.buffers()), "metadata": metadata}]
    shared = [
        {
            "gradients": [g.clone() for g in gradient],
            "buffers": None,
            "metadata": {"num_data_points": 1, "labels": label.clone(), "local_hyperparams": None},
        }
    ]
    began = time.perf_counter()
    output, _ = attacker.reconstruct(payload, shared, {}, initial_data=start.clone())
    return output["data"].detach().clamp(0, 1), (time.perf_counter() - began) / steps


def run_gradinv(observation, steps, tv, precision) -> tuple[torch.Tensor, float]:
    attack = gi.attacks.make("inverting_gradients", steps=steps, tv=tv, keep="best", seed=0, precision=precision)
    began = time.perf_counter()
    reconstruction = attack.reconstruct(observation)
    return reconstruction.images, (time.perf_counter() - began) / steps


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(gi.metrics.psnr(a, b).mean()) if a.shape == b.shape else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--breaching", type=Path, required=True, help="a breaching checkout (holds breaching/)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--photos", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--tv", type=float, default=1e-4, help="TV weight (the paper's script: 1e-4)")
    args = parser.parse_args()
    if not (args.breaching / "breaching" / "__init__.py").is_file():
        raise SystemExit(f"{args.breaching} holds no breaching/ package")
    sys.path.insert(0, str(args.breaching))
    logging.disable(logging.INFO)
    import breaching

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"ConvNet-{args.width}, {args.size}x{args.size}, {args.steps} steps, TV {args.tv}, BN eval, batch 1\n")
    model = gi.models.make("convnet", width=args.width, image_shape=(3, args.size, args.size), seed=0).eval()
    pairings = [("float32", False), ("bfloat16", True), ("bfloat16", False)]
    header = "photo  gradinv   breaching        gradinv s/step  breaching s/step  ratio  PSNR gradinv  PSNR breaching"
    print(header)
    ratios: dict[tuple[str, bool], list[float]] = {p: [] for p in pairings}
    for index in args.photos:
        images, labels = gi.data.load("skimage", indices=[index], size=args.size)
        threat = gi.ThreatModel(bn_mode="eval")
        observation = gi.observe(model, images, labels, threat=threat)
        gradient = [observation.update[name].clone() for name, _ in model.named_parameters()]
        start = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))  # gradinv's start for seed 0
        for precision, mixed in pairings:
            ours, our_step = run_gradinv(observation, args.steps, args.tv, precision)
            theirs, their_step = run_breaching(
                breaching, model, args.width, args.steps, args.tv, mixed, gradient, labels, start
            )
            ratios[(precision, mixed)].append(their_step / our_step)
            print(
                f"{index:>5}  {precision:<9} {'mixed' if mixed else 'float32':<16} {our_step:>14.3f}  "
                f"{their_step:>16.3f}  {their_step / our_step:>5.2f}  {psnr(ours, images):>12.2f}  "
                f"{psnr(theirs, images):>14.2f}",
                flush=True,
            )
    print()
    for (precision, mixed), values in ratios.items():
        values.sort()
        print(
            f"gradinv {precision} vs breaching {'mixed' if mixed else 'float32'}: median ratio "
            f"{values[len(values) // 2]:.2f} (range {values[0]:.2f}-{values[-1]:.2f})"
        )


if __name__ == "__main__":
    main()

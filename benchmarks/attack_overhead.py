"""Time per attack iteration through gradinv's API against a bare PyTorch loop of the same math, in one run.

    python benchmarks/attack_overhead.py [--repeats 3] [--steps 20]

For each attack and model, both sides start from the same seeded dummy data and run the same optimiser, so they do
the same work; L-BFGS runs with ``max_iter=1`` on both sides so that one step is exactly one evaluation of the
gradient-matching objective and its gradient. The time per step is ``(t(2 * steps) - t(steps)) / steps`` (fixed
set-up costs cancel), the median of ``--repeats`` interleaved runs. The ratio ``gradinv / bare`` is the overhead of our
abstractions (target: < 1.05).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import gradinv as gi

NORM = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def bare_dlg(obs: gi.Observation, steps: int, seed: int = 0) -> None:
    """DLG as in Zhu et al.'s reference code: L-BFGS on dummy data and dummy labels, Euclidean matching."""
    model = copy.deepcopy(obs.model)
    params = list(model.parameters())
    target = [obs.update[n] for n, _ in model.named_parameters()]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *obs.image_shape), generator=g).requires_grad_(True)
    y = torch.randn((1, obs.num_classes), generator=g).requires_grad_(True)
    opt = torch.optim.LBFGS([x, y], lr=1.0, max_iter=1, history_size=100)

    def closure() -> torch.Tensor:
        out = model(x)
        loss = torch.sum(-torch.softmax(y, -1) * F.log_softmax(out, -1), -1).mean()
        dy = torch.autograd.grad(loss, params, create_graph=True)
        d = sum(((a - b) ** 2).sum() for a, b in zip(dy, target, strict=True))
        x.grad, y.grad = torch.autograd.grad(d, [x, y])
        return d  # type: ignore[return-value]

    for _ in range(steps):
        opt.step(closure)


def bare_idlg(obs: gi.Observation, steps: int, seed: int = 0) -> None:
    """iDLG: the label from the last layer's bias gradient, then L-BFGS on the dummy data alone."""
    model = copy.deepcopy(obs.model)
    params = list(model.parameters())
    target = [obs.update[n] for n, _ in model.named_parameters()]
    label = target[-1].argmin().reshape(1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *obs.image_shape), generator=g).requires_grad_(True)
    torch.randn((1, obs.num_classes), generator=g)  # gradinv draws the (unused) label logits too
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=100)

    def closure() -> torch.Tensor:
        loss = F.cross_entropy(model(x), label)
        dy = torch.autograd.grad(loss, params, create_graph=True)
        d = sum(((a - b) ** 2).sum() for a, b in zip(dy, target, strict=True))
        (x.grad,) = torch.autograd.grad(d, [x])
        return d  # type: ignore[return-value]

    for _ in range(steps):
        opt.step(closure)


def bare_inverting_gradients(obs: gi.Observation, steps: int, seed: int = 0) -> None:
    """Inverting Gradients: cosine matching + TV, signed Adam, step decay, box constraint."""
    model = copy.deepcopy(obs.model)
    params = list(model.parameters())
    target = [obs.update[n] for n, _ in model.named_parameters()]
    label = target[-1].argmin().reshape(1)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORM)
    low, high = -mean / std, (1 - mean) / std
    x = torch.randn((1, *obs.image_shape), generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.1)
    milestones = [int(4000 * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), label)
        dy = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((a * b).sum() for a, b in zip(dy, target, strict=True))
        na = torch.sqrt(sum(a.pow(2).sum() for a in dy))  # type: ignore[arg-type]
        nb = torch.sqrt(sum(b.pow(2).sum() for b in target))  # type: ignore[arg-type]
        tv = (x[..., 1:] - x[..., :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
        objective = 1 - dot / (na * nb) + 1e-4 * tv
        (grad,) = torch.autograd.grad(objective, [x])
        x.grad = grad.sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, high), low))


BARE: dict[str, Callable[[gi.Observation, int], None]] = {
    "dlg": bare_dlg,
    "idlg": bare_idlg,
    "inverting_gradients": bare_inverting_gradients,
}


def per_step(runs: dict[str, Callable[[int], object]], steps: int, repeats: int) -> dict[str, float]:
    """Median seconds per step of each run, interleaved so drift hits all alike; fixed costs cancel by differencing
    the medians of ``2 * steps`` and ``steps`` long runs."""
    times: dict[tuple[str, int], list[float]] = {(name, k): [] for name in runs for k in (steps, 2 * steps)}
    for _ in range(repeats):
        for name, run in runs.items():
            for k in (steps, 2 * steps):
                t0 = time.perf_counter()
                run(k)
                times[(name, k)].append(time.perf_counter() - t0)
    med = {key: statistics.median(values) for key, values in times.items()}
    return {name: (med[(name, 2 * steps)] - med[(name, steps)]) / steps for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, labels = gi.data.load("skimage", n=1, size=32, seed=1)
    models = {
        "lenet": gi.models.make("lenet", seed=0),
        "convnet-16": gi.models.make("convnet", width=16, seed=0),
        "resnet20": gi.models.make("resnet20", seed=0),
    }
    print(f"{'attack':<22}{'model':<12}{'gradinv ms/step':>16}{'bare ms/step':>14}{'ratio':>8}")
    for model_name, model in models.items():
        threat = gi.ThreatModel(bn_mode="eval", normalization=NORM)
        obs = gi.observe(model, images, labels, threat=threat)
        for name, bare in BARE.items():
            options = {} if name == "inverting_gradients" else {"max_iter": 1}

            def ours(k: int, name: str = name, obs: gi.Observation = obs, options: dict = options) -> object:
                return gi.attacks.make(name, steps=k, seed=0, **options).reconstruct(obs)

            def theirs(k: int, bare: Callable[[gi.Observation, int], None] = bare, obs: gi.Observation = obs) -> None:
                bare(obs, k)

            steps = args.steps * (5 if model_name == "lenet" else 1)  # ~0.5 s per measurement
            timing = per_step({"ours": ours, "bare": theirs}, steps, args.repeats)
            a, b = timing["ours"], timing["bare"]
            print(f"{name:<22}{model_name:<12}{1e3 * a:>16.2f}{1e3 * b:>14.2f}{a / b:>8.3f}", flush=True)


if __name__ == "__main__":
    main()

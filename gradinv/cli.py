"""The ``gradinv`` command line: attack, audit, demo, flower-demo, evaluate, results, list."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from gradinv import attacks, data, defenses, models
from gradinv.attacks.base import Callback
from gradinv.data import NORMALIZATIONS
from gradinv.observation import SOK_KNOWLEDGE, SOK_PRESETS, ThreatModel, sok_fields, sok_missing
from gradinv.pipeline import RunConfig, TextRunConfig, VerticalConfig, run, run_text, run_vertical

app = typer.Typer(
    help="gradinv: gradient inversion attacks and defenses for federated learning.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["steps=300", "tv=1e-4", "signed=false"]`` -> typed dict (JSON values, else strings)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"options are key=value, got {pair!r}")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def parse_defense(text: str) -> tuple[str, dict[str, Any]]:
    """``"prune:ratio=0.99"`` -> ``("prune", {"ratio": 0.99})``; ``"sign"`` -> ``("sign", {})``."""
    name, _, rest = text.partition(":")
    return name, parse_options([p for p in rest.split(",") if p]) if rest else {}


@contextmanager
def _progress() -> Iterator[Any]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4g}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:

        def factory(name: str) -> Callback:
            task = bar.add_task(name, total=None, loss=float("nan"))

            def callback(step: int, total: int, loss: float) -> None:
                bar.update(task, completed=step, total=total, loss=loss)

            return callback

        yield factory


KNOWLEDGE_FLAGS = {
    "knows_labels": ("--labels", False),
    "knows_batch_size": ("--batch-size-unknown", True),
    "knows_bn_stats": ("--bn-stats", False),
    "server": ("--server", "honest"),
}
"""The options that say what the attacker knows (and their defaults): a ``--preset`` letter sets them itself."""


def _threat(normalize: str, preset: str | None = None, **fields: Any) -> ThreatModel:
    """The threat model of the command-line options; ``normalize`` names the client's input normalisation, ``preset``
    a SoK threat model (``ThreatModel.preset``) that sets what the attacker knows."""
    if normalize not in NORMALIZATIONS:
        raise typer.BadParameter(f"--normalize must be one of {list(NORMALIZATIONS)}, got {normalize!r}")
    if preset is None:
        return ThreatModel(normalization=NORMALIZATIONS[normalize], **fields)
    changed = [flag for key, (flag, default) in KNOWLEDGE_FLAGS.items() if fields.pop(key) != default]
    if changed:
        raise ValueError(f"--preset {preset} sets what the attacker knows itself: drop {', '.join(changed)}")
    return ThreatModel.preset(preset.upper(), normalization=NORMALIZATIONS[normalize], **fields)


PYTHON_TO_CLI = {
    "pass overwrite=True (--overwrite)": "add --overwrite",
    "pass resume=True (--resume) to continue it": "add --resume to continue it",
    "use device='cpu'": "use --device cpu",
}
"""Library messages name Python arguments; on the command line the same advice names the flags."""


def _cli_spelling(message: str) -> str:
    for python, cli in PYTHON_TO_CLI.items():
        message = message.replace(python, cli)
    return message


def _fail(err: BaseException) -> typer.Exit:
    """Print ``err`` as a one-line error in command-line spelling; the exit (status 2) for the caller to raise."""
    console.print(f"[red]error:[/red] {escape(_cli_spelling(str(err)))}", soft_wrap=True)
    return typer.Exit(code=2)


@contextmanager
def _removed_on_failure(out: Path, *, keep_results: bool = False) -> Iterator[None]:
    """Remove ``out`` if this command created it and then failed (an error, not Ctrl-C), so that a failed start
    leaves nothing behind to block the retry. ``keep_results``: keep it once it holds a finished grid cell."""
    existed = out.exists()
    try:
        yield
    except Exception:
        if not existed and out.exists() and not (keep_results and _has_cells(out)):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _has_cells(out: Path) -> bool:
    import sqlite3

    database = out / "results.sqlite"
    if not database.exists():
        return False
    try:
        with sqlite3.connect(database) as db:
            return bool(db.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
    except sqlite3.Error:
        return False


def _print_summary(record: dict[str, Any], out: Path) -> None:
    table = Table(title=f"gradinv: {record['model']} on {record['data']}, batch {record['batch_size']}")
    for column in ("attack", "PSNR dB", "SSIM", "certified", "label acc", "residual rel L2", "seconds"):
        table.add_column(column, justify="right")
    for name, result in record["attacks"].items():
        s = result["scores"]
        acc = s.get("label_acc")
        table.add_row(
            name,
            f"{s['psnr']:.2f}",
            f"{s['ssim']:.3f}",
            f"{sum(result.get('certified', []))}/{record['batch_size']}",
            "n/a" if acc is None else f"{acc:.2f}",
            f"{s['residual'].get('rel_l2', float('nan')):.2e}",
            f"{result['seconds']:.1f}",
        )
    console.print(table)
    console.print(f"report: [bold]{out / 'report.html'}[/bold]")


@app.command()
def attack(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must not exist or be empty)."),
    attack_names: list[str] = typer.Option(["inverting_gradients"], "--attack", "-a", help="Attack (repeatable)."),
    option: list[str] = typer.Option([], "--opt", help="Attack option key=value, or attack.key=value (repeatable)."),
    defense: list[str] = typer.Option(
        [], "--defense", "-d", help="Client defense NAME or NAME:key=value,key=value (repeatable, applied in order)."
    ),
    model: str = typer.Option("lenet", help="Model from `gradinv list`."),
    model_option: list[str] = typer.Option([], "--model-opt", help="Model option key=value, e.g. width=16."),
    dataset: str = typer.Option("skimage", "--data", help="Dataset from `gradinv list`."),
    root: str | None = typer.Option(None, help="Folder for cifar10, mnist and folder datasets."),
    download: bool = typer.Option(False, help="Fetch cifar10/mnist into --root if missing (needs internet)."),
    index: list[int] = typer.Option([], "--index", help="Attack these images of the dataset (repeatable)."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Images in the client's batch."),
    size: int = typer.Option(32, help="Image height and width."),
    channels: int = typer.Option(3, help="1 or 3 channels."),
    num_classes: int = typer.Option(10, help="Classes of the model."),
    update: str = typer.Option("gradient", help="What the client shares: gradient or fedavg."),
    local_steps: int = typer.Option(5, help="FedAvg local SGD steps."),
    local_lr: float = typer.Option(1e-4, help="FedAvg local learning rate."),
    local_batch_size: int | None = typer.Option(None, help="FedAvg local mini-batch size (default: whole batch)."),
    labels: bool = typer.Option(False, "--labels/--no-labels", help="Attacker knows the labels."),
    knows_batch_size: bool = typer.Option(True, "--batch-size-known/--batch-size-unknown"),
    bn_mode: str = typer.Option("train", help="Client BatchNorm mode: train or eval."),
    bn_stats: bool = typer.Option(False, "--bn-stats/--no-bn-stats", help="Attacker knows the batch BN statistics."),
    shares_buffers: bool = typer.Option(
        False, "--shares-buffers/--keeps-buffers", help="The client sends its BatchNorm buffers after training."
    ),
    normalize: str = typer.Option("none", help=f"Client input normalisation: {', '.join(NORMALIZATIONS)}."),
    augmentation: str = typer.Option(
        "none", help="The client's private data augmentation: none, flip or crop_flip (each local epoch afresh)."
    ),
    server: str = typer.Option("honest", help="honest or malicious."),
    preset: str | None = typer.Option(
        None, help="A SoK threat model A-H (Carletti et al. 2025; `gradinv list`): sets what the attacker knows."
    ),
    seed: int = typer.Option(0, help="Seeds the data draw, the client and the model."),
    model_seed: int | None = typer.Option(None, help="Seeds the model's initialisation (default: --seed)."),
    client_images: int = typer.Option(256, help="The client's training set, for MixUp/InstaHide's pool=dataset."),
    pretrain_epochs: int = typer.Option(
        0, help="Train the broadcast model this many epochs on --data first (a later FL round; recorded)."
    ),
    pretrain_images: int = typer.Option(1000, help="Images of --data the pretraining draws (a fifth held out)."),
    device: str = typer.Option("cpu", help="Where to compute: cpu, cuda, cuda:N or mps."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Simulate a client sharing its update, run attacks on it, and write a report."""
    try:
        threat = _threat(
            normalize,
            preset,
            server=server,
            update=update,
            local_steps=local_steps,
            local_lr=local_lr,
            local_batch_size=local_batch_size,
            knows_labels=labels,
            knows_batch_size=knows_batch_size,
            bn_mode=bn_mode,
            knows_bn_stats=bn_stats,
            shares_buffers=shares_buffers,
            augmentation=augmentation,
        )
        config = RunConfig(
            attacks=attack_names,
            attack_options=parse_options(option),
            model=model,
            model_options=parse_options(model_option),
            data=dataset,
            root=root,
            download=download,
            indices=index or None,
            defenses=[parse_defense(d) for d in defense],
            batch_size=batch_size,
            size=size,
            channels=channels,
            num_classes=num_classes,
            threat=threat,
            seed=seed,
            model_seed=model_seed,
            client_images=client_images,
            device=device,
            pretrain_epochs=pretrain_epochs,
            pretrain_images=pretrain_images,
        )
        with _progress() as factory, _removed_on_failure(out):
            record = run(config, out, overwrite=overwrite, progress=factory)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as err:
        raise _fail(err) from err
    _print_summary(record, out)


@app.command("text")
def text_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must not exist or be empty)."),
    attack_names: list[str] = typer.Option(["dager"], "--attack", "-a", help="Text attack: dager, tag, lamp."),
    option: list[str] = typer.Option([], "--opt", help="Attack option key=value, or attack.key=value (repeatable)."),
    defense: list[str] = typer.Option(
        [],
        "--defense",
        "-d",
        help="Defense NAME or NAME:key=value,... (noise, prune, topk, quantize, sign; dpsgd: DP-SGD training).",
    ),
    model: str = typer.Option("gpt2", help="gpt2 or bert (random weights), minilm (trained, shipped)."),
    model_option: list[str] = typer.Option([], "--model-opt", help="Model option key=value, e.g. n_layer=3."),
    task: str = typer.Option("classification", help="classification or causal_lm (gpt2)."),
    dataset: str = typer.Option(
        "rotten_tomatoes", "--data", help="rotten_tomatoes (bundled), or a CSV (text, label) / .txt file / folder."
    ),
    batch_size: int = typer.Option(4, "--batch-size", "-b", help="Sentences in the client's batch."),
    max_length: int = typer.Option(32, help="Tokens kept per sentence."),
    lora_rank: int = typer.Option(0, help="> 0: the client fine-tunes LoRA adapters of this rank (B random)."),
    labels: bool = typer.Option(False, "--labels/--no-labels", help="Attacker knows the labels."),
    seed: int = typer.Option(0, help="Seeds the sentence draw, the model and the attacks."),
    device: str = typer.Option("cpu", help="Where to compute: cpu, cuda, cuda:N or mps."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Simulate a text client fine-tuning a transformer, run text attacks on its gradient, and write a report
    (``gradinv attack --modality text`` in the issue's words)."""
    try:
        config = TextRunConfig(
            attacks=attack_names,
            attack_options=parse_options(option),
            model=model,
            model_options=parse_options(model_option),
            task=task,
            data=dataset,
            batch_size=batch_size,
            max_length=max_length,
            defenses=[parse_defense(d) for d in defense],
            threat=ThreatModel(knows_labels=labels),
            seed=seed,
            device=device,
            lora_rank=lora_rank,
        )
        with _progress() as factory, _removed_on_failure(out):
            record = run_text(config, out, overwrite=overwrite, progress=factory)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as err:
        raise _fail(err) from err
    table = Table(title=f"gradinv text: {model} ({task}) on {dataset}, batch {batch_size}")
    for column in ("attack", "ROUGE-1", "ROUGE-2", "token acc", "exact", "certified (wrong)", "seconds"):
        table.add_column(column, justify="right")
    for name, result in record["attacks"].items():
        s = result["scores"]
        table.add_row(
            name,
            f"{s['rouge1']:.3f}",
            f"{s['rouge2']:.3f}",
            f"{s['token_acc']:.3f}",
            f"{s['exact']:.2f}",
            f"{s['certified']} ({s['certified_wrong']})",
            f"{result['seconds']:.1f}",
        )
    console.print(table)
    console.print(f"report: [bold]{out / 'report.html'}[/bold]")


@app.command("vertical")
def vertical_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must not exist or be empty)."),
    dataset: str = typer.Option("mnist_subset", "--data", help="Dataset from `gradinv list`."),
    root: str | None = typer.Option(None, help="Folder for cifar10, mnist and folder datasets."),
    samples: int = typer.Option(40, help="Samples the parties hold (all of them are attacked)."),
    size: int = typer.Option(16, help="Image height and width (a multiple of --parties)."),
    channels: int = typer.Option(1, help="1 or 3 channels."),
    parties: int = typer.Option(4, help="Parties, each holding a vertical strip of every image."),
    batch_size: int = typer.Option(10, "--batch-size", "-b", help="Samples per training iteration."),
    iterations: int | None = typer.Option(None, help="Training iterations observed (default 2 x samples)."),
    lr: float = typer.Option(0.0, help="SGD step size of the training (0: the model stays fixed)."),
    passes: int = typer.Option(6, help="CAFE's Step III sweeps over the record."),
    seed: int = typer.Option(0, help="Seeds the data draw, the model and the batch order."),
    device: str = typer.Option("cpu", help="Where CAFE's Step III computes: cpu, cuda, cuda:N or mps."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Vertical FL: train on every party's strip of the samples, attack the server's record with CAFE, report."""
    config = VerticalConfig(
        data=dataset,
        root=root,
        samples=samples,
        size=size,
        channels=channels,
        parties=parties,
        batch_size=batch_size,
        iterations=iterations,
        lr=lr,
        passes=passes,
        seed=seed,
        device=device,
    )
    try:
        with _removed_on_failure(out):
            record = run_vertical(config, out, overwrite=overwrite)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as err:
        raise _fail(err) from err
    _print_summary(record, out)


DEMO_NOTES = {
    "idlg": "iDLG reads the label off the last layer's gradient (exact for one image), then L-BFGS matches the "
    "gradient: on DLG's untrained sigmoid LeNet this recovers the photograph (4 of 4 photographs above 35 dB at 32x32, "
    "benchmarks/optimisation_attacks.py).",
    "dlg": "DLG optimises the label jointly with the image. With the paper's fixed-step L-BFGS it recovers some "
    "photographs and diverges on others (1 of 4 at 32x32 in the benchmark); a strong-Wolfe line search "
    "(gradinv attack -a dlg --opt line_search=strong_wolfe) gets 4 of 4.",
    "inverting_gradients": "Inverting Gradients (cosine distance, signed Adam, total variation) was designed for ReLU "
    "networks and budgets of 4,000-24,000 steps; on this saturating sigmoid LeNet the demo's budget (20 Adam steps "
    "per L-BFGS step: 2,000 by default) leaves colour noise with at most a trace of the photograph. On the paper's "
    "ReLU ConvNet (width 64) it recovers this photograph: 27.7 dB, SSIM 0.85 after 1,000 steps (the README's example).",
    "rgap": "R-GAP solves the same gradient in closed form, layer by layer from the classifier down: every layer of "
    "this LeNet has full column rank at the photograph, so the answer is exact and certified without ground truth, "
    "in seconds (on rank-deficient networks it is not: see the README).",
}
"""One sentence per demo attack for its report: what to expect and why."""


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder."),
    steps: int = typer.Option(100, help="L-BFGS steps of DLG/iDLG; Inverting Gradients takes 20x as many Adam steps."),
    device: str = typer.Option("cpu", help="Where to compute: cpu, cuda, cuda:N or mps."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Attack one real photograph shared as a gradient through the DLG LeNet: iDLG, DLG, Inverting Gradients, R-GAP."""
    config = RunConfig(
        attacks=("idlg", "dlg", "inverting_gradients", "rgap"),
        # L-BFGS steps each run up to 20 inner iterations; Adam steps are single iterations
        attack_options={"idlg.steps": steps, "dlg.steps": steps, "inverting_gradients.steps": 20 * steps},
        model="lenet",
        data="skimage",
        batch_size=1,
        indices=(1,),  # chelsea, the cat
        model_seed=0,
        notes=DEMO_NOTES,
        device=device,
    )
    try:
        with _progress() as factory:
            record = run(config, out, overwrite=overwrite, progress=factory)
    except FileExistsError as err:
        raise _fail(err) from err
    _print_summary(record, out)


@app.command("flower-demo")
def flower_demo(
    out: Path = typer.Option(Path("runs/flower"), "--out", "-o", help="Output folder."),
    clients: int = typer.Option(3, help="Flower clients, one MNIST digit each."),
    secure_aggregation: bool = typer.Option(False, "--secure-aggregation", help="Run the fit rounds under SecAgg+."),
    attack_names: list[str] = typer.Option(["bias_trick", "spear"], "--attack", "-a", help="Attacks to run."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Run a real Flower simulation (needs gradinv[flower]) with a curious server and report what it recovered."""
    try:
        from gradinv import flower
    except ImportError as err:
        raise _fail(err) from err
    try:
        verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
        records = flower.demo(
            out,
            clients=clients,
            secure_aggregation=secure_aggregation,
            attacks=attack_names,
            overwrite=overwrite,
            quiet=not verbose,
        )
    except (ValueError, TypeError, FileExistsError) as err:
        raise _fail(err) from err
    table = Table(title="what the Flower server recovered (PSNR, dB)")
    table.add_column("round")
    table.add_column("update")
    for name in attack_names:
        table.add_column(name)
    for r in records:
        if "failed" in r:  # a reply the wrapper could not read: not audited, the round went on
            table.add_row(str(r["round"]), r["target"], *[f"not audited: {r['failed']}"] * len(attack_names))
            continue
        cells = [a.get("scores", {}).get("psnr", a.get("error", "")) for a in r["attacks"].values()]
        table.add_row(str(r["round"]), r["target"], *(f"{c:.1f}" if isinstance(c, float) else str(c) for c in cells))
    console.print(table)
    console.print(f"report: {out / 'report.html'}")


@app.command("audit")
def audit_command(
    model: str = typer.Option(..., "--model", "-m", help="Your model: path/to/file.py:ClassName."),
    data_dir: str = typer.Option(..., "--data", help="Your images: a folder (DIR/<class>/<image> or flat)."),
    batch_size: int = typer.Option(..., "--batch-size", "-b", help="The batch a client trains on."),
    out: Path = typer.Option(Path("runs/audit"), "--out", "-o", help="Output folder."),
    model_option: list[str] = typer.Option([], "--model-opt", help="Constructor argument key=value (repeatable)."),
    weights: str = typer.Option(None, help="The broadcast weights: a state dict (.safetensors, or .pt/.pth)."),
    dataset: str = typer.Option("folder", help="How --data is laid out: folder, mnist (IDX files) or cifar10."),
    size: int = typer.Option(32, help="Image height and width the model takes."),
    channels: int = typer.Option(3, help="1 or 3 channels."),
    defense: list[str] = typer.Option(
        [], "--defense", "-d", help="Client defense NAME or NAME:key=value,key=value (repeatable, applied in order)."
    ),
    server: str = typer.Option("honest", help="honest or malicious (may send a modified model)."),
    update: str = typer.Option("gradient", help="What the client shares: gradient or fedavg."),
    local_steps: int = typer.Option(5, help="FedAvg local SGD steps."),
    local_lr: float = typer.Option(1e-4, help="FedAvg local learning rate."),
    labels: bool = typer.Option(False, "--labels/--no-labels", help="Grant the attacker the labels."),
    bn_stats: bool = typer.Option(False, "--bn-stats/--no-bn-stats", help="Grant the attacker the batch's BN stats."),
    bn_mode: str = typer.Option("train", help="Client BatchNorm mode: train or eval."),
    normalize: str = typer.Option("none", help=f"Client input normalisation: {', '.join(NORMALIZATIONS)}."),
    steps: int = typer.Option(4000, help="Steps per restart of the optimisation attack (Inverting Gradients)."),
    restarts: int = typer.Option(2, help="Restarts of the optimisation attack (Inverting Gradients)."),
    option: list[str] = typer.Option([], "--opt", help="Attack option attack.key=value (repeatable)."),
    run_all: bool = typer.Option(False, "--all", help="Run every planned attack even after a certified recovery."),
    seed: int = typer.Option(0, help="Seeds which batch is drawn and the client."),
    client_images: int = typer.Option(256, help="The client's training set, for MixUp/InstaHide's pool=dataset."),
    device: str = typer.Option("cpu", help="Where to compute: cpu, cuda, cuda:N or mps."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Audit your own model: can a server rebuild a client's batch from what it shares? (exact attacks first)"""
    from gradinv.audit import AuditConfig, audit

    try:
        threat = _threat(
            normalize,
            server=server,
            update=update,
            local_steps=local_steps,
            local_lr=local_lr,
            knows_labels=labels,
            knows_bn_stats=bn_stats,
            bn_mode=bn_mode,
        )
        config = AuditConfig(
            model=model,
            model_options=parse_options(model_option),
            weights=weights,
            data=data_dir,
            dataset=dataset,
            batch_size=batch_size,
            size=size,
            channels=channels,
            defenses=[parse_defense(d) for d in defense],
            threat=threat,
            attack_options=parse_options(option),
            steps=steps,
            restarts=restarts,
            run_all=run_all,
            seed=seed,
            client_images=client_images,
            device=device,
        )
        with _progress() as factory, _removed_on_failure(out):
            record = audit(config, out, overwrite=overwrite, progress=factory)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as err:
        raise _fail(err) from err
    _print_summary(record, out)
    verdict = record["audit"]["verdict"]
    console.print(f"[bold]verdict:[/bold] {escape(verdict['summary'])}", soft_wrap=True)
    for step in record["audit"]["skipped"]:
        console.print(f"  not run: {step['attack']}: {escape(step['reason'])}", soft_wrap=True)


@app.command("evaluate")
def evaluate_grid(
    grid_file: Path = typer.Argument(..., help="The grid, a TOML file (see examples/tiny.toml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: results.sqlite, report.html, cells/."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run recorded in --out (skips finished cells)."),
    backend: str = typer.Option("local", help="'local' (in process) or 'ray' (one Ray task per cell)."),
    address: str = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
    num_cpus: int = typer.Option(None, help="CPUs of the local Ray."),
    device: str = typer.Option(None, help="Where to compute: cpu, cuda, cuda:N or mps (default: the grid's device)."),
) -> None:
    """Run the attack x defense x setting grid of GRID_FILE (Huang et al. 2021's protocol) and write the report."""
    from gradinv.evaluate import GridError, evaluate, load_grid
    from gradinv.report.grid import write_grid_report

    try:
        grid = load_grid(grid_file)
    except (GridError, FileNotFoundError) as err:
        raise _fail(err) from err
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    try:
        with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(f"grid {grid.name}: jobs", total=None)

            def progress(done: int, total: int, description: str) -> None:
                bar.update(task, completed=done, total=total)
                bar.console.print(f"  {description}", soft_wrap=True, markup=False)

            with _removed_on_failure(out, keep_results=True):
                evaluate(
                    grid,
                    out,
                    resume=resume,
                    backend=backend,
                    address=address,
                    num_cpus=num_cpus,
                    progress=progress,
                    device=device,
                )
            report = write_grid_report(grid, out)
    except (ValueError, FileExistsError, ImportError) as err:
        raise _fail(err) from err
    _print_results(out)
    console.print(f"report: [bold]{report}[/bold]")


def _print_results(folder: Path) -> None:
    """The grid's table, readable at 80 columns: a column with one value in every row goes into the caption, numbers
    are rounded for the eye (``--format csv`` keeps every digit), and labels wrap instead of being cut."""
    from gradinv.evaluate.results import load_table

    rows = load_table(folder)
    columns: dict[str, tuple[str, Callable[[Any], str]]] = {
        "model": ("model", str),
        "threat_label": ("threat", str),
        "batch_size": ("batch", str),
        "attack": ("attack", str),
        "defense_label": ("defense", str),
        "psnr": ("PSNR", lambda v: f"{v:.1f}"),
        "ssim": ("SSIM", lambda v: f"{v:.2f}"),
        "rouge1": ("ROUGE-1", lambda v: f"{v:.3f}"),
        "exact": ("exact", lambda v: f"{v:.2f}"),
        "accuracy": ("acc.", lambda v: f"{v:.3f}"),
        "cost_seconds": ("cost s", lambda v: f"{v:.3g}"),
    }
    labels = ("model", "threat_label", "batch_size", "attack", "defense_label")  # text columns, left-aligned
    constant = {c for c in labels if len({r[c] for r in rows}) == 1}
    same = ", ".join(f"{columns[c][0]} {rows[0][c]}" for c in columns if c in constant) if rows else ""
    table = Table(
        title=f"gradinv grid results: {folder}",
        caption=(f"in every row: {same}. " if same else "")
        + "PSNR in dB; ROUGE-1 and exact: text cells' sentences; acc.: test accuracy with the defense; "
        + "cost s: seconds to recover the client's whole dataset. "
        + "All columns: --format csv",
        box=None,
        header_style="bold underline",
        padding=(0, 0, 0, 1),
        pad_edge=False,
    )
    texts = any(r.get("modality") == "text" for r in rows)
    # a column empty in every row (PSNR of a text grid, ROUGE of an image grid) is left out; exact only beside text
    shown = [
        c for c in columns if c not in constant and any(r[c] is not None for r in rows) and (c != "exact" or texts)
    ]
    cells = [["" if row[c] is None else columns[c][1](row[c]) for c in shown] for row in rows]
    for i, c in enumerate(shown):
        longest = max([len(columns[c][0]), *(len(line[i]) for line in cells)])
        table.add_column(columns[c][0], justify="left" if c in labels else "right", min_width=longest, overflow="fold")
    for line in cells:
        table.add_row(*line)
    console.print(table)


@app.command("results")
def results(
    folder: Path = typer.Argument(..., help="An output folder of `gradinv evaluate`."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
) -> None:
    """Print a grid's results table, or export it as CSV or JSON (to stdout)."""
    from gradinv.evaluate.results import export

    if not (folder / "results.sqlite").exists():
        console.print(f"[red]error:[/red] {folder} has no results.sqlite", soft_wrap=True)
        raise typer.Exit(code=2)
    if fmt == "table":
        _print_results(folder)
    elif fmt in ("csv", "json"):
        typer.echo(export(folder, fmt), nl=False)
    else:
        console.print(f"[red]error:[/red] --format must be table, csv or json, not {fmt!r}", soft_wrap=True)
        raise typer.Exit(code=2)


@app.command("list")
def list_all() -> None:
    """List the attacks, label-recovery strategies, defenses, models and datasets."""
    for title, entries in (
        ("attacks", attacks.describe()),
        ("label recovery", attacks.labels.describe()),
        ("defenses", defenses.describe()),
        ("models", models.describe()),
        ("datasets", data.describe()),
        ("threat models (--preset; Carletti et al., USENIX Security 2025)", _presets()),
    ):
        table = Table(title=title, show_header=False)
        table.add_column("name", style="bold")
        table.add_column("description")
        for name, line in entries.items():
            table.add_row(name, line)
        console.print(table)


def _presets() -> dict[str, str]:
    """One line per SoK threat model: what the attacker has, the fields it sets, the attacks that run under it."""
    out = {}
    for letter, (title, has) in SOK_PRESETS.items():
        knows = "; ".join(line for key, line in SOK_KNOWLEDGE.items() if key in has)
        fields = ", ".join(f"{k}={v}" for k, v in sok_fields(letter).items())
        graded = {a: attacks.REGISTRY[a].sok for a in attacks.names("horizontal")}
        runs = [a for a, grade in graded.items() if grade is not None and not sok_missing(letter, grade)]
        out[letter] = f"{title}: {knows}. Sets {fields}. Attacks: {', '.join(runs) or 'none'}"
    return out


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress messages.")) -> None:
    """gradinv: reconstruct a client's data from what it shares, and measure how well defenses stop it."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


if __name__ == "__main__":
    app()

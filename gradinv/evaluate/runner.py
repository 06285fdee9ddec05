"""Run a grid into an output folder: cells in process or as Ray tasks, every finished cell recorded at once in
``results.sqlite``, a resumed run skipping what is recorded (``gradinv.report.grid`` writes the report from it)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gradinv import figures
from gradinv.evaluate.cells import execute, utility_config
from gradinv.evaluate.grid import Grid, attack_label, config_key
from gradinv.evaluate.store import Store
from gradinv.observation import atomic_write
from gradinv.validation import check_device

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
"""Called as ``progress(done, total, description)`` after each job."""
Job = tuple[str, str, dict[str, Any]]  # (kind: "utility" | "cell", key, config)


def jobs(grid: Grid, store: Store) -> list[Job]:
    """What is left to run: utility trainings first (cells share them), then the unfinished cells."""
    done = store.finished()
    pending: list[Job] = []
    seen: set[str] = set()
    for cell in grid.cells:
        setup = utility_config(cell.config)
        if setup is not None:
            key = config_key(setup)
            if key not in seen and store.utility(key) is None:
                pending.append(("utility", key, setup))
            seen.add(key)
    pending += [("cell", cell.key, cell.config) for cell in grid.cells if cell.key not in done]
    return pending


def _local(pending: list[Job], device: str) -> Iterator[tuple[Job, dict[str, Any]]]:
    for job in pending:
        yield job, execute(job[0], job[2], device)


def _ray(
    pending: list[Job], address: str | None, num_cpus: int | None, device: str
) -> Iterator[tuple[Job, dict[str, Any]]]:
    try:
        import ray
    except ImportError as err:
        raise ImportError("the Ray backend needs Ray: pip install 'gradinv[ray]'") from err
    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
        if address is None:
            options["num_cpus"] = num_cpus
        ray.init(**options)
    try:
        # a GPU cell reserves one whole GPU (a Ray task that reserves none may not see any)
        remote = ray.remote(num_gpus=1)(execute) if device.startswith("cuda") else ray.remote(execute)
        # utility jobs go first and cells do not wait on them: accuracy joins the cells when the report is written
        waiting = {remote.remote(kind, config, device): (kind, key, config) for kind, key, config in pending}
        while waiting:
            ready, _ = ray.wait(list(waiting), num_returns=1)
            for ref in ready:
                yield waiting.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def _save(store: Store, folder: Path, job: Job, result: dict[str, Any]) -> str:
    kind, key, config = job
    if kind == "utility":
        if "error" in result:
            log.warning("utility training failed: %s", result["error"])
            return f"utility failed: {result['error']}"
        store.record_utility(key, config, result["accuracy"], {k: v for k, v in result.items() if k != "accuracy"})
        return f"utility {result['accuracy']:.3f}"
    if "error" in result:
        store.record(key, config, error=f"{result['error']} ({result['where']})", seconds=result["seconds"])
        return f"{attack_label(config)} x {config['defense_label']}: failed ({result['error']})"
    if config.get("modality") == "text":  # sentences, no pictures: the report shows them from the summary
        store.record(key, config, summary=result["summary"], images=result["rows"], seconds=result["seconds"])
        summary = result["summary"]
        return (
            f"{attack_label(config)} x {config['defense_label']}: ROUGE-1 {summary['rouge1']['mean']:.3f}, "
            f"exact {summary['exact_fraction']:.2f}"
        )
    picture = folder / "cells" / f"{key}.png"
    picture.parent.mkdir(exist_ok=True)
    captions = [f"{r['psnr']:.1f} dB" if r.get("psnr") is not None else "none" for r in result["rows"]]
    row = [(attack_label(config), result["reconstructions"], captions)]
    atomic_write(picture, lambda tmp: figures.reconstruction_grid(result["originals"], row, tmp, dpi=60))
    store.record(key, config, summary=result["summary"], images=result["rows"], seconds=result["seconds"])
    psnr = result["summary"]["psnr"]["mean"]
    return f"{attack_label(config)} x {config['defense_label']}: {'n/a' if psnr is None else f'{psnr:.1f}'} dB"


def evaluate(
    grid: Grid,
    out: str | Path,
    *,
    resume: bool = False,
    backend: str = "local",
    address: str | None = None,
    num_cpus: int | None = None,
    progress: Progress | None = None,
    device: str | None = None,
) -> Path:
    """Run every cell of ``grid`` not yet recorded in ``out/results.sqlite`` (the report is
    :func:`gradinv.report.grid.write_grid_report`'s: this module computes and stores, the report reads).

    Args:
        grid: from :func:`gradinv.evaluate.load_grid`.
        out: the output folder. An existing database is continued only with ``resume``.
        resume: continue a run (finished and failed cells are kept, not rerun).
        backend: ``"local"`` (in process, one cell after another) or ``"ray"`` (one Ray task per cell).
        address: a Ray cluster to join (``None``: start a local Ray).
        num_cpus: CPUs of the local Ray (``None``: all).
        progress: optional ``progress(done, total, description)``.
        device: where cells and utility trainings compute (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; default
            the grid's ``[grid] device``, itself ``"cpu"`` by default). Not part of a cell's key: results are
            identical in meaning on every device, and a run resumed on another device continues the same cells.

    Returns:
        The output folder.
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    chosen = str(check_device(device if device is not None else grid.settings.get("device", "cpu")))
    folder = Path(out)
    database = folder / "results.sqlite"
    if database.exists() and not resume:
        raise FileExistsError(
            f"{database} exists: pass resume=True (--resume) to continue it, or choose another folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "grid.toml").exists():
        atomic_write(folder / "grid.toml", lambda tmp: shutil.copyfile(grid.path, tmp))
    store = Store(database)
    try:
        pending = jobs(grid, store)
        total = len(pending)
        cells_left = sum(j[0] == "cell" for j in pending)
        start = (
            f"{cells_left} of {len(grid.cells)} cells to run, {total - cells_left} utility trainings"
            if total
            else f"all {len(grid.cells)} cells already done"
        )
        log.info(start)
        if progress is not None:
            progress(0, total, start)
        stream = _local(pending, chosen) if backend == "local" else _ray(pending, address, num_cpus, chosen)
        for done, (job, result) in enumerate(stream, start=1):
            description = _save(store, folder, job, result)
            if progress is not None:
                progress(done, total, description)
        return folder
    finally:
        store.close()

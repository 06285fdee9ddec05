"""gradinv as the curious server inside a real Flower run (``flwr``, optional: ``pip install 'gradinv[flower]'``).

:class:`CuriousStrategy` wraps the user's Flower strategy (FedAvg or any other), forwards every call to it, and, for
each round and each client reply the server is allowed to see, builds a :class:`gradinv.Observation` from the
broadcast weights and the client's returned weights and runs the chosen attacks, writing the reconstructions and a
report. Under Flower's SecAgg+ (Bell et al., CCS 2020, through ``SecAggPlusWorkflow`` and ``secaggplus_mod``) the
strategy receives every client's reply carrying the same unmasked *aggregate*: the wrapper notices, says so in the
report, and attacks the aggregate instead (the union batch of all clients).

Client replies describe the local training in their metrics (Flower ``FitRes.metrics``): ``lr`` (required),
``local_steps`` (default 1), ``batch_size`` (the local mini-batch size; default the client's ``num_examples``), and
``partition_id`` (which data partition; used only to score against ground truth in evaluation code). A client that
sends its gradient instead of its weights (FedSGD) says ``update="gradient"``; the default is ``"weights"``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradinv import attacks as attack_registry
from gradinv import figures
from gradinv.attacks.base import Attack
from gradinv.fl.client import num_outputs
from gradinv.metrics import score
from gradinv.observation import Observation, Reconstruction, ThreatModel, atomic_write, atomic_write_text
from gradinv.report import prepare_folder
from gradinv.report.flower import render

try:
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.client_manager import ClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import FedAvg, Strategy
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "gradinv.fl.flower needs Flower: pip install 'gradinv[flower]' (or pip install 'flwr[simulation]')"
    ) from err

Truth = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def model_at(model: nn.Module, arrays: Sequence[np.ndarray], keys: Sequence[str]) -> nn.Module:
    """A copy of ``model`` loaded with Flower's parameter list (one array per ``keys`` entry, in order)."""
    if len(arrays) != len(keys):
        raise ValueError(f"the Flower parameters have {len(arrays)} arrays, the model's keys {len(keys)}")
    state = model.state_dict()
    copy_ = copy.deepcopy(model)
    copy_.load_state_dict(
        {k: torch.from_numpy(np.array(a, copy=True)).to(state[k].dtype) for k, a in zip(keys, arrays, strict=True)}
    )
    return copy_


def by_parameter(arrays: Sequence[np.ndarray], keys: Sequence[str], model: nn.Module) -> dict[str, torch.Tensor]:
    """Flower's array list (one array per ``keys`` entry) as a tensor per trainable parameter of ``model``, in
    ``named_parameters()`` order and the parameter's dtype."""
    index = {k: i for i, k in enumerate(keys)}
    out = {}
    for name, param in model.named_parameters():
        if name not in index:
            raise ValueError(f"parameter {name!r} is missing from the Flower parameter keys")
        value = np.asarray(arrays[index[name]], dtype=np.float64)
        out[name] = torch.from_numpy(value).to(param.dtype).reshape(param.shape)
    return out


def weight_difference(
    before: Sequence[np.ndarray], after: Sequence[np.ndarray], keys: Sequence[str], model: nn.Module
) -> dict[str, torch.Tensor]:
    """``w_before - w_after`` for every trainable parameter (computed in float64, stored in the parameter's dtype)."""
    diffs = [
        np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64) for b, a in zip(before, after, strict=True)
    ]
    return by_parameter(diffs, keys, model)


class CuriousStrategy(Strategy):
    """A Flower strategy that behaves exactly like ``inner`` and attacks every client update it receives.

    Args:
        inner: the user's Flower strategy; every call is forwarded to it and its results are returned unchanged.
        model: the model architecture the federation trains (any weights; the broadcast weights are loaded into a
            copy each round).
        image_shape: ``(C, H, W)`` of one input (public: the server defines the input format).
        attacks: attack names (``gi.attacks.names()``) or attack objects, run in order on each observation.
        out: the output folder (created; must be empty unless ``overwrite``).
        threat: side information granted to the attacker (labels and BN statistics are never in a Flower reply,
            so they are withheld); the update kind, local steps and lr come from each reply.
        keys: the ``state_dict`` key of each array in Flower's parameter list (default: ``model.state_dict()``'s
            order, as Flower's PyTorch examples send them).
        truth: evaluation only: ``partition_id -> (images, labels)`` to score reconstructions; attacks never see it.
        secure_aggregation: whether the server sees only an aggregate; ``None`` detects it (every reply carries
            identical weights, as under SecAgg+).
        overwrite: replace a non-empty output folder.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        model: nn.Module,
        image_shape: tuple[int, int, int],
        attacks: Sequence[str | Attack] = ("bias_trick",),
        out: str | Path,
        threat: ThreatModel | None = None,
        keys: Sequence[str] | None = None,
        truth: Truth | None = None,
        secure_aggregation: bool | None = None,
        overwrite: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(inner, Strategy):
            raise TypeError(f"inner must be a Flower Strategy, got {type(inner).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.inner, self.model, self.image_shape = inner, model, tuple(image_shape)
        self.attacks = [a if isinstance(a, Attack) else attack_registry.make(a) for a in attacks]
        vertical = [a.name for a in self.attacks if a.setting == "vertical"]
        if vertical:
            raise ValueError(f"{vertical} attack vertical FL records; a Flower round shares horizontal updates")
        self.threat = replace(threat or ThreatModel(), knows_labels=False, knows_bn_stats=False)
        self.keys = list(keys) if keys is not None else list(model.state_dict())
        self.truth, self.secure_aggregation = truth, secure_aggregation
        self.num_classes = num_outputs(model, self.image_shape)
        self.out = prepare_folder(out, overwrite=overwrite)
        self.records: list[dict[str, Any]] = []
        self._broadcast: dict[int, list[np.ndarray]] = {}

    def __repr__(self) -> str:
        return f"CuriousStrategy({self.inner!r})"

    # --- forwarded to the inner strategy ---
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, Any]]:
        self._broadcast[server_round] = [a.copy() for a in parameters_to_ndarrays(parameters)]
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Any]]:
        if server_round in self._broadcast and results:
            self.audit(server_round, [fit for _, fit in results])
        return self.inner.aggregate_fit(server_round, results, failures)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, Any]]:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self, server_round: int, results: list[Any], failures: list[Any]
    ) -> tuple[float | None, dict[str, Any]]:
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Any]] | None:
        return self.inner.evaluate(server_round, parameters)

    # --- the curious part ---
    def audit(self, server_round: int, replies: list[FitRes]) -> list[dict[str, Any]]:
        """Attack the replies of one round; returns (and writes) one record per attacked update."""
        before = self._broadcast[server_round]
        weights = [parameters_to_ndarrays(fit.parameters) for fit in replies]
        aggregated = self.secure_aggregation
        if aggregated is None:
            aggregated = len(replies) > 1 and all(
                all(np.array_equal(a, b) for a, b in zip(weights[0], w, strict=True)) for w in weights[1:]
            )
        model = model_at(self.model, before, self.keys).train(self.threat.bn_mode == "train")
        targets: list[tuple[str, list[FitRes], list[np.ndarray]]]
        if aggregated:
            targets = [("aggregate", replies, weights[0])]
        else:
            labels = _labels(replies)
            targets = [(labels[k], [fit], w) for k, (fit, w) in enumerate(zip(replies, weights, strict=True))]
        written = []
        for label, fits, after in targets:
            try:
                observation = self._observation(model, before, after, fits, aggregated)
            except (ValueError, TypeError, KeyError) as err:  # a malformed reply: recorded, the round goes on
                record: dict[str, Any] = {
                    "round": server_round,
                    "target": label,
                    "failed": f"{type(err).__name__}: {err}",
                }
            else:
                record = self._attack(server_round, label, observation, fits, aggregated)
            self.records.append(record)
            written.append(record)
        atomic_write_text(self.out / "results.json", json.dumps(self.records, indent=2, default=str))
        atomic_write_text(self.out / "report.html", render(self.records, self.out))
        return written

    def _observation(
        self,
        model: nn.Module,
        before: list[np.ndarray],
        after: list[np.ndarray],
        fits: list[FitRes],
        aggregated: bool,
    ) -> Observation:
        metrics = [dict(fit.metrics or {}) for fit in fits]
        examples = sum(int(fit.num_examples) for fit in fits)
        kinds = {str(m.get("update", "weights")) for m in metrics}
        if kinds == {"gradient"}:  # the client sent its gradient in place of weights (FedSGD)
            threat = self.threat.as_gradient()
            update = by_parameter(after, self.keys, model)
        elif kinds == {"weights"}:
            if any("lr" not in m for m in metrics):
                raise ValueError("each client reply must report its learning rate as metrics['lr'] (and local_steps)")
            lrs = {float(m["lr"]) for m in metrics}
            steps = {int(m.get("local_steps", 1)) for m in metrics}
            if len(lrs) > 1 or len(steps) > 1:
                raise ValueError(f"the aggregated clients disagree on lr {sorted(lrs)} or local steps {sorted(steps)}")
            local_batch = int(metrics[0].get("batch_size", fits[0].num_examples)) if not aggregated else None
            threat = replace(
                self.threat,
                update="fedavg",
                local_steps=steps.pop(),
                local_lr=lrs.pop(),
                local_batch_size=local_batch if local_batch is not None and local_batch < examples else None,
            )
            update = weight_difference(before, after, self.keys, model)
        else:
            raise ValueError(f"metrics['update'] must be 'weights' or 'gradient' for every reply, got {sorted(kinds)}")
        return Observation(
            model=model,
            update=update,
            threat=threat,
            image_shape=self.image_shape,  # type: ignore[arg-type]
            num_classes=self.num_classes,
            batch_size=examples if threat.knows_batch_size else None,
            defenses=[{"name": "flower_secaggplus", "clients": len(fits)}] if aggregated else [],
        )

    def _attack(
        self, server_round: int, label: str, observation: Observation, fits: list[FitRes], aggregated: bool
    ) -> dict[str, Any]:
        folder = self.out / f"round_{server_round:03d}" / label
        folder.mkdir(parents=True, exist_ok=True)
        truth = self._truth(fits)
        record: dict[str, Any] = {
            "round": server_round,
            "target": label,
            "secure_aggregation": aggregated,
            "clients": [_partition(fit, k) for k, fit in enumerate(fits)],
            "threat": observation.threat.to_dict(),
            "batch_size": observation.batch_size,
            "attacks": {},
        }
        rows = []
        for attack in self.attacks:
            start = time.perf_counter()
            try:
                rec = attack.reconstruct(observation)
            except (ValueError, RuntimeError) as err:  # the attack's conditions do not hold for this update
                record["attacks"][attack.name] = {"error": str(err)}
                continue
            entry: dict[str, Any] = {"seconds": time.perf_counter() - start, "info": rec.info}
            captions = [""] * rec.images.shape[0]
            if truth is not None:
                scores = score(rec, *truth)
                entry["scores"] = {k: v for k, v in scores.items() if k != "per_image"}
                entry["per_image_psnr"] = [p["psnr"] for p in scores["per_image"]]
                captions = [""] * truth[0].shape[0]
                for p in scores["per_image"]:  # the figure lays reconstructions out like the originals
                    captions[p["index"]] = f"{p['psnr']:.1f} dB"
            record["attacks"][attack.name] = entry
            rows.append((attack.name, rec, captions))
        if rows:
            originals = truth[0] if truth is not None else rows[0][1].images
            lines = [(name, _aligned(rec, originals, truth is not None), caps) for name, rec, caps in rows]
            atomic_write(folder / "reconstruction.png", lambda tmp: figures.reconstruction_grid(originals, lines, tmp))
            record["figure"] = str((folder / "reconstruction.png").relative_to(self.out))
        atomic_write_text(folder / "record.json", json.dumps(record, indent=2, default=str))
        return record

    def _truth(self, fits: list[FitRes]) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.truth is None:
            return None
        parts = [self.truth(_partition(fit, k)) for k, fit in enumerate(fits)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _partition(fit: FitRes, fallback: int) -> int:
    """The reply's ``partition_id``, or ``fallback`` (its position) when it reports none or not an integer."""
    value = (fit.metrics or {}).get("partition_id", fallback)
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


def _labels(replies: list[FitRes]) -> list[str]:
    """One folder name per reply: ``client_<partition_id>``; a reply without an integer id, or repeating one
    already taken, is named by its position as well, so no two replies share a folder."""
    labels: list[str] = []
    for k, fit in enumerate(replies):
        value = (fit.metrics or {}).get("partition_id")
        label = f"client_{value}" if isinstance(value, int) and not isinstance(value, bool) else f"reply_{k}"
        labels.append(label if label not in labels else f"{label}_reply_{k}")
    return labels


def _aligned(rec: Reconstruction, originals: torch.Tensor, scored: bool) -> torch.Tensor:
    """The reconstruction laid out like the originals: matched by best PSNR when ground truth is there."""
    if not scored:
        return rec.images
    from gradinv.metrics.matching import match

    rows, cols = match(rec.images, originals)
    out = torch.zeros_like(originals)
    out[cols] = rec.images[rows]
    return out


class SGDClient(NumPyClient):
    """A Flower client that takes ``local_steps`` SGD steps of size ``lr`` on its private batch (full batch or
    mini-batches of ``batch_size``), exactly as :func:`gradinv.fl.client.compute_update` does, and reports them."""

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        partition_id: int,
        lr: float,
        local_steps: int,
        batch_size: int | None,
        threat: ThreatModel,
    ) -> None:
        self.check_threat(threat)
        self.model, self.images, self.labels, self.partition_id = model, images, labels, partition_id
        self.threat = replace(
            threat, update="fedavg", local_steps=local_steps, local_lr=lr, local_batch_size=batch_size
        )

    @staticmethod
    def check_threat(threat: ThreatModel) -> None:
        """Refuses what this client does not simulate: it trains on its images in order and as they are.

        Raises:
            ValueError: ``threat.augmentation`` or ``threat.local_shuffle`` set.
        """
        if threat.augmentation != "none" or threat.local_shuffle:
            raise ValueError(
                "the simulated Flower client trains on its images in order and as they are: use augmentation='none' "
                "and local_shuffle=False (gi.observe simulates augmenting and shuffling clients)"
            )

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        from gradinv.fl.client import compute_update, normalize

        keys = list(self.model.state_dict())
        model = model_at(self.model, parameters, keys).train(self.threat.bn_mode == "train")
        delta = compute_update(model, normalize(self.images, self.threat.normalization), self.labels, self.threat)
        changed = dict(zip([n for n, _ in model.named_parameters()], delta, strict=True))
        state = model.state_dict()
        after = [(state[k] - changed[k]).detach().numpy() if k in changed else state[k].numpy() for k in keys]
        metrics = {
            "lr": self.threat.local_lr,
            "local_steps": self.threat.local_steps,
            "partition_id": self.partition_id,
        }
        if self.threat.local_batch_size is not None:
            metrics["batch_size"] = self.threat.local_batch_size
        return after, int(self.images.shape[0]), metrics


def simulate(
    strategy: Strategy,
    model: nn.Module,
    clients: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    rounds: int = 1,
    lr: float = 0.1,
    local_steps: int = 1,
    batch_size: int | None = None,
    threat: ThreatModel | None = None,
    secure_aggregation: bool = False,
    quiet: bool = False,
) -> None:
    """Run a real Flower simulation (Ray backend) of ``len(clients)`` :class:`SGDClient` s, each holding one
    ``(images, labels)`` partition, under ``strategy``; with ``secure_aggregation`` the fit rounds go through
    Flower's SecAgg+ workflow (every client's key shared with all others, all shares needed: ``num_shares=1.0``,
    ``reconstruction_threshold=1.0``) and the clients run ``secaggplus_mod``.

    The broadcast model starts at ``model``'s weights (in ``state_dict`` order). ``quiet``: Flower's and Ray's
    logging below errors is silenced (the command line does so unless ``--verbose``).
    """
    if len(clients) < 2:
        raise ValueError(f"a Flower simulation here needs >= 2 clients, got {len(clients)}")
    threat = threat or ThreatModel()
    SGDClient.check_threat(threat)
    initial = ndarrays_to_parameters([v.detach().numpy() for v in model.state_dict().values()])
    user_strategy = strategy.inner if isinstance(strategy, CuriousStrategy) else strategy
    if isinstance(user_strategy, FedAvg) and user_strategy.initial_parameters is None:
        user_strategy.initial_parameters = initial
    data = [(x.clone(), y.clone()) for x, y in clients]

    def client_fn(context: Context) -> Any:
        pid = int(context.node_config["partition-id"])
        images, labels = data[pid]
        return SGDClient(
            copy.deepcopy(model),
            images,
            labels,
            partition_id=pid,
            lr=lr,
            local_steps=local_steps,
            batch_size=batch_size,
            threat=threat,
        ).to_client()

    client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secure_aggregation else [])
    config = ServerConfig(num_rounds=rounds)
    if secure_aggregation:
        server_app = ServerApp()

        @server_app.main()
        def main(grid: Any, context: Context) -> None:
            legacy = LegacyContext(context=context, config=config, strategy=strategy)
            workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=1.0)
            DefaultWorkflow(fit_workflow=workflow)(grid, legacy)

    else:
        server_app = ServerApp(server_fn=lambda context: ServerAppComponents(strategy=strategy, config=config))
    backend: dict[str, Any] = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}}
    if quiet:
        flwr_logger = logging.getLogger("flwr")
        flwr_logger.setLevel(logging.ERROR)
        flwr_logger.propagate = False
        backend["init_args"] = {"logging_level": logging.ERROR, "log_to_driver": False}
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=len(clients),
            backend_config=backend,
        )


def demo(
    out: str | Path,
    *,
    clients: int = 3,
    images_per_client: int = 1,
    secure_aggregation: bool = False,
    attacks: Sequence[str] = ("bias_trick",),
    dataset: str = "mnist_subset",
    hidden: int = 256,
    lr: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """A Flower simulation on bundled real images (one partition per client, an MLP, one FedAvg round) with a
    curious server; returns its records and writes ``out/report.html``."""
    from gradinv import data, models

    images, labels = data.load(dataset, n=clients * images_per_client, size=28, channels=1, seed=seed)
    parts = [
        (
            images[i * images_per_client : (i + 1) * images_per_client],
            labels[i * images_per_client : (i + 1) * images_per_client],
        )
        for i in range(clients)
    ]
    model = models.make("mlp", image_shape=(1, 28, 28), hidden=(hidden,), seed=seed)
    inner = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients, min_available_clients=clients)
    strategy = CuriousStrategy(
        inner,
        model=model,
        image_shape=(1, 28, 28),
        attacks=attacks,
        out=out,
        truth=lambda pid: parts[pid],
        overwrite=overwrite,
    )
    simulate(strategy, model, parts, lr=lr, secure_aggregation=secure_aggregation, quiet=quiet)
    return strategy.records

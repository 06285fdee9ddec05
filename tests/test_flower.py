"""gradinv as the curious server in a real Flower simulation: it reads a client's image exactly without secure
aggregation, and only the aggregate with Flower's SecAgg+."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("flwr")

import torch  # noqa: E402
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters  # noqa: E402
from flwr.server.client_manager import SimpleClientManager  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import gradinv as gi  # noqa: E402
from gradinv import flower  # noqa: E402
from gradinv.cli import app  # noqa: E402


@pytest.mark.slow
def test_the_curious_server_recovers_each_client_without_secure_aggregation(tmp_path) -> None:
    # through the command line: gradinv flower-demo runs the Flower simulation and prints the table
    out = tmp_path / "plain"
    result = CliRunner().invoke(app, ["flower-demo", "--out", str(out), "--clients", "2", "--attack", "bias_trick"])
    assert result.exit_code == 0, result.output
    records = json.loads((out / "results.json").read_text())
    assert sorted(r["target"] for r in records) == ["client_0", "client_1"]
    for record in records:
        assert not record["secure_aggregation"]
        assert record["attacks"]["bias_trick"]["scores"]["psnr"] > 30
    assert (out / "report.html").read_text().count("<h2>") == 2
    assert (out / "round_001" / "client_0" / "reconstruction.png").exists()


@pytest.mark.slow
def test_with_secagg_plus_the_server_sees_only_the_aggregate(tmp_path) -> None:
    records = flower.demo(tmp_path / "secure", clients=2, attacks=("bias_trick",), secure_aggregation=True)
    (record,) = records
    assert record["target"] == "aggregate" and record["secure_aggregation"] and sorted(record["clients"]) == [0, 1]
    # the reconstruction is a blend: no client's image comes back (each well below the 30 dB of the plain run)
    assert max(record["attacks"]["bias_trick"]["per_image_psnr"]) < 20
    assert "Secure aggregation" in (tmp_path / "secure" / "report.html").read_text()


def test_gradinv_imports_without_flower_and_the_wrapper_says_how_to_install() -> None:
    code = (
        "import sys; sys.modules['flwr'] = None\n"
        "import gradinv\n"
        "try:\n"
        "    import gradinv.flower\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'gradinv[flower]'" in out


def test_a_gradient_reply_and_a_weight_reply_are_both_read_exactly(tmp_path) -> None:
    # Without a simulation: the strategy's audit on hand-made Flower replies (FedSGD gradient, FedAvg weights)
    images, labels = gi.data.load("mnist_subset", n=2, size=28, channels=1, seed=0)
    model = gi.models.make("mlp", image_shape=(1, 28, 28), hidden=(64,), seed=0)
    truth = {0: (images[:1], labels[:1]), 1: (images[1:], labels[1:])}
    inner = FedAvg(min_fit_clients=0, min_available_clients=0)
    strategy = flower.CuriousStrategy(
        inner, model=model, image_shape=(1, 28, 28), out=tmp_path / "audit", truth=truth.__getitem__
    )
    before = [v.detach().numpy().copy() for v in model.state_dict().values()]
    strategy.configure_fit(1, ndarrays_to_parameters(before), SimpleClientManager())
    gradient = gi.observe(model, *truth[0]).update
    weights = gi.observe(model, *truth[1], threat=gi.ThreatModel(update="fedavg", local_steps=1, local_lr=0.1)).update
    replies = [
        FitRes(
            Status(Code.OK, ""),
            ndarrays_to_parameters([g.numpy() for g in gradient.values()]),
            1,
            {"update": "gradient", "partition_id": 0},
        ),
        FitRes(
            Status(Code.OK, ""),
            ndarrays_to_parameters([b - w.numpy() for b, w in zip(before, weights.values(), strict=True)]),
            1,
            {"lr": 0.1, "partition_id": 1},
        ),
    ]
    records = strategy.audit(1, replies)
    assert [r["target"] for r in records] == ["client_0", "client_1"]
    assert all(r["attacks"]["bias_trick"]["scores"]["psnr"] > 60 for r in records)
    assert records[0]["threat"]["update"] == "gradient" and records[1]["threat"]["update"] == "fedavg"
    # a reply without its learning rate, one with a non-integer id and one repeating an id: the malformed one is
    # recorded as not audited, the others get folders of their own, and the round still aggregates
    bad = FitRes(Status(Code.OK, ""), replies[1].parameters, 1, {"partition_id": "zero"})
    twin = FitRes(Status(Code.OK, ""), replies[0].parameters, 1, {"update": "gradient", "partition_id": 0})
    records = strategy.audit(1, [replies[0], bad, twin])
    assert [r["target"] for r in records] == ["client_0", "reply_1", "client_0_reply_2"]
    assert "learning rate" in records[1]["failed"] and "attacks" in records[2]
    assert (tmp_path / "audit" / "round_001" / "client_0_reply_2" / "record.json").exists()
    proxies = [(None, fit) for fit in (replies[0], bad)]
    parameters, _ = strategy.aggregate_fit(1, proxies, [])  # type: ignore[arg-type]
    assert parameters is not None and "Not audited" in (tmp_path / "audit" / "report.html").read_text()


def test_the_wrapper_rejects_what_is_not_a_strategy(tmp_path) -> None:
    with pytest.raises(TypeError, match="Flower Strategy"):
        flower.CuriousStrategy(object(), model=gi.models.make("mlp"), image_shape=(3, 32, 32), out=tmp_path / "x")


def test_the_simulation_refuses_client_training_it_does_not_simulate() -> None:
    model = gi.models.make("mlp", image_shape=(1, 8, 8), hidden=(8,))
    clients = [(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))] * 2
    for threat in (gi.ThreatModel(augmentation="flip"), gi.ThreatModel(update="fedavg", local_shuffle=True)):
        with pytest.raises(ValueError, match="in order and as they are"):
            flower.simulate(object(), model, clients, threat=threat)  # type: ignore[arg-type]

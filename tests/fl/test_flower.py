"""gradinv as the curious server in a real Flower simulation: it reads a client's image exactly without secure
aggregation, and only the aggregate with Flower's SecAgg+."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("flwr")

from gradinv.fl import flower  # noqa: E402


@pytest.mark.slow
def test_the_curious_server_recovers_each_client_without_secure_aggregation(tmp_path) -> None:
    records = flower.demo(tmp_path / "plain", clients=2, attacks=("bias_trick",))
    assert sorted(r["target"] for r in records) == ["client_0", "client_1"]
    for record in records:
        assert not record["secure_aggregation"]
        assert record["attacks"]["bias_trick"]["scores"]["psnr"] > 30
    assert (tmp_path / "plain" / "report.html").read_text().count("<h2>") == 2
    assert json.loads((tmp_path / "plain" / "results.json").read_text()) == json.loads(json.dumps(records, default=str))


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
        "    import gradinv.fl.flower\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'gradinv[flower]'" in out


def test_the_wrapper_rejects_what_is_not_a_strategy(tmp_path) -> None:
    import gradinv as gi

    with pytest.raises(TypeError, match="Flower Strategy"):
        flower.CuriousStrategy(object(), model=gi.models.make("mlp"), image_shape=(3, 32, 32), out=tmp_path / "x")

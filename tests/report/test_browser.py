"""Every kind of report page, as a reader sees it in headless Chromium at 1280 px: the page never scrolls sideways,
every table row has as many cells as its header (values under the right headers), every picture loads and fits,
a screenshot comes out the window's size and is not blank, and a grid page stays small.

Chromium is installed by this set-up where it is missing and the machine allows it (Debian's package, as root);
otherwise the tests are skipped with the reason."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from typer.testing import CliRunner

import gradinv as gi
from gradinv import figures
from gradinv.cli import app
from gradinv.report import browser
from gradinv.report.flower import render as render_flower

WIDTH = 1280
runner = CliRunner()


def _install_chromium() -> str | None:
    """Debian's chromium through apt-get, when running as root on a machine that has apt-get; its reason if not."""
    if shutil.which("apt-get") is None:
        return "no apt-get to install Chromium with"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "Chromium is missing and installing it needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=600, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600, check=False)
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                return f"apt-get could not install chromium: {done.stderr.strip()[-300:]}"
    except subprocess.TimeoutExpired:
        return "installing Chromium took over 10 minutes"
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    found = browser.find_chromium()
    if found is None:
        reason = _install_chromium()
        found = browser.find_chromium()
        if found is None:
            pytest.skip(f"headless browser tests need Chromium: {reason or 'installed, but not found on PATH'}")
    return found


GRID = """[grid]
name = "browser"
data = "digits"
size = 8
channels = 1
images = 2
batch_sizes = [1, 2]
seeds = [0]

[utility]
dataset = "digits"
epochs = 1
n = 400

[[models]]
name = "mlp"
hidden = [64]

[[threats]]
label = "labels unknown"

[[attacks]]
name = "bias_trick"

[[attacks]]
name = "inverting_gradients"
steps = 5
restarts = 1

[[defenses]]
name = "none"

[[defenses]]
name = "prune"
sweep = { ratio = [0.5, 0.9, 0.99] }

[[defenses]]
name = "noise"
std = 0.01
"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One page of each kind: the demo's run report, a grid report and a Flower report."""
    root = tmp_path_factory.mktemp("pages")
    result = runner.invoke(app, ["demo", "--out", str(root / "demo"), "--steps", "1"])
    assert result.exit_code == 0, result.output
    grid_file = root / "grid.toml"
    grid_file.write_text(GRID)
    result = runner.invoke(app, ["evaluate", str(grid_file), "--out", str(root / "grid")])
    assert result.exit_code == 0, result.output
    flower = root / "flower"
    flower.mkdir()
    images, _ = gi.data.load("skimage", n=2, size=32, seed=0)
    figures.reconstruction_grid(images, [("bias_trick", images.flip(0), ["7.1 dB", "8.2 dB"])], flower / "r.png")
    records = [
        {
            "round": 1,
            "target": f"client_{i}",
            "secure_aggregation": False,
            "clients": [i],
            "batch_size": 2,
            "figure": "r.png",
            "attacks": {
                "bias_trick": {"scores": {"psnr": 7.123456, "ssim": 0.1234567, "exact_fraction": 0.0}, "seconds": 0.5},
                "spear": {"error": "SPEAR needs a fully connected first layer with bias, followed by ReLU"},
            },
        }
        for i in range(2)
    ]
    (flower / "report.html").write_text(render_flower(records, flower))
    return {name: root / name / "report.html" for name in ("demo", "grid", "flower")}


@pytest.mark.parametrize("kind", ["demo", "grid", "flower"])
def test_report_pages_lay_out_at_1280_px(chromium: str, pages: dict[str, Path], kind: str) -> None:
    # Execute
    measured = browser.layout(pages[kind], width=WIDTH, binary=chromium)
    # Assert: no sideways scrolling of the page itself (wide tables scroll inside their own box)
    assert measured["window"] == WIDTH
    assert measured["width"] <= measured["window"], json.dumps(measured)
    assert measured["body_right"] <= WIDTH
    assert measured["tables"], "every report has a table"
    for table in measured["tables"]:
        head, *rows = table["cells"]
        assert rows and all(n == head for n in rows), f"cells per row {table['cells']}: values under wrong headers"
        assert table["right"] <= WIDTH
    assert measured["images"], "every report shows pictures"
    for picture in measured["images"]:
        assert min(picture["natural"]) > 0, "a picture did not load"
        assert picture["right"] <= WIDTH and picture["shown"][0] > 100


def test_the_demo_page_says_why_each_attack_did_what_it_did(pages: dict[str, Path]) -> None:
    text = pages["demo"].read_text()
    record = json.loads((pages["demo"].parent / "metrics.json").read_text())
    assert set(record["notes"]) == set(record["attacks"]) == {"idlg", "dlg", "inverting_gradients", "rgap"}
    assert "Why these results" in text and text.count("<li><b>") >= 4
    # R-GAP's panel is exact and certified without ground truth on this LeNet, whatever the optimisers' budget
    assert record["attacks"]["rgap"]["certified"] == [True] and record["attacks"]["rgap"]["scores"]["psnr"] > 60
    assert "e-05" not in text.split("<h2>Configuration</h2>")[0]  # numbers in the tables are formatted


def test_the_grid_page_stays_small(pages: dict[str, Path]) -> None:
    # 2 attacks x 5 defense settings x 2 batch sizes: the trade-off plot and each cell's thumbnail inlined (about
    # 60 kB and 6 kB each here; thumbnails at the run report's resolution would take over 20 kB each)
    cells = 2 * 5 * 2
    size = pages["grid"].stat().st_size
    assert size < 100_000 + cells * 10_000, f"{size / 1e3:.0f} kB for {cells} cells"


def test_a_screenshot_has_the_windows_size_and_shows_the_page(chromium: str, pages: dict[str, Path], tmp_path) -> None:
    # Execute
    shot = browser.screenshot(pages["demo"], tmp_path / "shot.png", width=WIDTH, height=900, binary=chromium)
    # Assert
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (900, WIDTH)
    assert np.asarray(pixels).std() > 0.05  # text and pictures, not a blank page
    assert not (tmp_path / ".shot.png.tmp.png").exists()


def test_layout_rejects_a_missing_page_and_a_missing_browser(tmp_path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="no page"):
        browser.layout(tmp_path / "nope.html")
    page = tmp_path / "p.html"
    page.write_text("<html><body></body></html>")
    monkeypatch.delenv("GRADINV_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="GRADINV_CHROMIUM"):
        browser.layout(page)


def test_a_page_too_wide_is_caught(chromium: str, tmp_path) -> None:
    # the check can fail: a 2000 px block outside any scrolling box overflows the body
    page = tmp_path / "wide.html"
    page.write_text('<html><body><div style="width:2000px">wide</div><table><tr><th>a</th><th>b</th></tr>'
                    "<tr><td>1</td></tr></table></body></html>")  # fmt: skip
    measured = browser.layout(page, width=WIDTH, binary=chromium)
    assert measured["width"] > measured["window"]
    assert measured["tables"][0]["cells"] == [2, 1]


def test_the_readme_screenshot_script_photographs_a_run(chromium: str, pages: dict[str, Path], tmp_path) -> None:
    # docs/report_png.py, on a finished demo (without --run it runs the demo first)
    spec = importlib.util.spec_from_file_location("report_png", Path(__file__).parents[2] / "docs" / "report_png.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shot = module.main(["--run", str(pages["demo"].parent), "--out", str(tmp_path / "report.png"), "--height", "700"])
    assert mpimg.imread(shot).shape[:2] == (700, WIDTH)

"""`gradinv text`: a text client, the text attacks, and a report with true and recovered sentences side by side,
tokens coloured by correctness."""

import json

from typer.testing import CliRunner

from gradinv.cli import app
from gradinv.report.text import coloured

runner = CliRunner()
GPT2 = ["--model-opt", "n_layer=3", "--model-opt", "n_embd=384", "--model-opt", "n_head=6"]


def test_text_command_writes_scores_and_a_side_by_side_report(tmp_path, tokenizer) -> None:
    # Execute: DAGER on two reviews from a random 3-layer GPT-2
    out = tmp_path / "run"
    result = runner.invoke(app, ["text", "--out", str(out), "-b", "2", *GPT2])
    # Assert: both sentences exact in the scores, the table printed, every recovered token marked right
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    scores = record["attacks"]["dager"]["scores"]
    assert scores["exact"] == 1.0 and scores["certified"] == 2 and scores["certified_wrong"] == 0
    assert record["modality"] == "text" and len(record["texts"]) == 2 and "dager" in result.output
    page = (out / "report.html").read_text()
    truth_tokens = sum(len(ids) for ids in record["truth"])
    assert page.count('class="right"') == truth_tokens and 'class="wrong"' not in page
    for piece in tokenizer.convert_ids_to_tokens(record["truth"][0]):
        assert piece in page


def test_a_lora_client_through_the_text_command(tmp_path) -> None:
    # Execute: the same two reviews, the client fine-tuning LoRA adapters of rank 64 on c_attn
    out = tmp_path / "lora"
    result = runner.invoke(app, ["text", "--out", str(out), "-b", "2", "--lora-rank", "64", *GPT2])
    # Assert: DAGER reads both sentences off the adapters' gradients; the run records the rank
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["lora_rank"] == 64
    assert record["attacks"]["dager"]["scores"]["exact"] == 1.0
    bad = runner.invoke(app, ["text", "--out", str(tmp_path / "bad"), "--lora-rank", "-1", *GPT2])
    assert bad.exit_code == 2 and "LoRA rank" in bad.output


def test_tokens_are_coloured_by_position() -> None:
    spans = coloured(["the", "film", "<b>"], ["the", "movie"])
    assert spans.count('class="right"') == 1 and spans.count('class="wrong"') == 2
    assert "&lt;b&gt;" in spans  # escaped


def test_text_command_refuses_bad_input(tmp_path) -> None:
    result = runner.invoke(app, ["text", "--out", str(tmp_path / "a"), "--attack", "dlg"])
    assert result.exit_code == 2 and "unknown text attack" in result.output
    unlabelled = tmp_path / "mine.txt"
    unlabelled.write_text("a private sentence\nanother one here\n")
    result = runner.invoke(app, ["text", "--out", str(tmp_path / "b"), "--data", str(unlabelled), "-b", "2", *GPT2])
    assert result.exit_code == 2 and "need labels" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

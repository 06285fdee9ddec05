"""Text cells of the grid: declared by [text] and [[text_models]], checked before anything runs, run as a text
client's batches attacked and scored per sentence, tabled, ranked and reported."""

from pathlib import Path

import pytest

import gradinv as gi
from gradinv.evaluate import GridError, load_grid
from gradinv.evaluate.results import load_table
from gradinv.evaluate.text_cells import PROTECTED_ROUGE
from gradinv.report.grid import text_ranking, write_grid_report
from tests.helpers import grid_file

EXAMPLES = Path(__file__).parents[2] / "examples"
TEXT = """[grid]
batch_sizes = [2]

[text]
sentences = 2
max_length = 12

[[text_models]]
name = "gpt2"
label = "small"
n_layer = 3
n_embd = 128
n_head = 2

[[attacks]]
name = "dager"
"""


def test_the_text_example_expands_into_text_cells_without_image_models() -> None:
    grid = load_grid(EXAMPLES / "text.toml")
    # dager x 2 text models x 2 batch sizes x 5 defense settings (none, noise x 2, prune, dpsgd)
    assert len(grid.cells) == 2 * 2 * 5 and len({c.key for c in grid.cells}) == len(grid.cells)
    config = grid.cells[0].config
    assert config["modality"] == "text" and config["utility"] is None
    assert config["text"] == {"data": "rotten_tomatoes", "sentences": 4, "max_length": 12}
    assert {c.config.get("model_label", c.config["model"]) for c in grid.cells} == {"gpt2-3x256", "minilm"}
    assert {c.config["task"] for c in grid.cells} == {"classification"}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ('[[defenses]]\nname = "mixup"\nk = 2\n', "changes the client's model, data or training"),
        ('[[defenses]]\nname = "dpsgd"\nsecure_rng = true\n', "secure_rng"),
        ('[[threats]]\nupdate = "fedavg"\nlocal_steps = 2\n[[defenses]]\nname = "none"\n', "share one gradient"),
        ('[[threats]]\naugmentation = "flip"\n[[defenses]]\nname = "none"\n', "flips and crops images"),
        ('[[threats]]\nserver = "malicious"\n[[defenses]]\nname = "none"\n', "honest server"),
    ],
)
def test_impossible_text_cells_are_rejected(tmp_path: Path, extra: str, reason: str) -> None:
    with pytest.raises(GridError, match=reason):
        load_grid(grid_file(tmp_path, TEXT + extra))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("sentences = 2", "sentences = 3"), "must divide the text client's sentences = 3"),
        (("sentences = 2", "sentences = 201"), r"data 'rotten_tomatoes', sentences = 201: n must be"),
        (('name = "gpt2"', 'name = "gpt3"'), "unknown text model 'gpt3'"),
        (("n_head = 2", "n_head = 3"), "text model 'gpt2'"),  # 128 is not divisible by 3 heads
        (('label = "small"', 'task = "translation"'), "task must be one of"),
        (('label = "small"', "num_labels = 1"), "num_labels must be an integer in"),
        (('label = "small"', "lora_rank = -1"), "lora_rank must be an integer in"),
        (("max_length = 12", "max_length = 1"), "max_length must lie in"),
        (('name = "dager"', 'name = "dagger"'), "unknown attack 'dagger'"),
    ],
)
def test_bad_text_grids_are_rejected(tmp_path: Path, change: tuple[str, str], reason: str) -> None:
    with pytest.raises(GridError, match=reason):
        load_grid(grid_file(tmp_path, TEXT.replace(*change) + '[[defenses]]\nname = "none"\n'))


def test_text_attacks_that_need_a_classifier_or_the_batch_size_are_refused(tmp_path: Path) -> None:
    causal = TEXT.replace('label = "small"', 'task = "causal_lm"') + '[[attacks]]\nname = "tag"\n'
    with pytest.raises(GridError, match="attacks sequence classifiers"):
        load_grid(grid_file(tmp_path, causal + '[[defenses]]\nname = "none"\n'))
    blind = TEXT + '[[attacks]]\nname = "lamp"\n[[threats]]\nknows_batch_size = false\n[[defenses]]\nname = "none"\n'
    with pytest.raises(GridError, match="needs the batch size"):
        load_grid(grid_file(tmp_path, blind))
    adapters = (
        TEXT.replace('label = "small"', "lora_rank = 8") + '[[attacks]]\nname = "tag"\n[[defenses]]\nname = "none"\n'
    )
    with pytest.raises(GridError, match="a LoRA client does not share: give the attack a length option"):
        load_grid(grid_file(tmp_path, adapters))
    told = adapters.replace('name = "tag"', 'name = "tag"\nlength = 12')
    assert len(load_grid(grid_file(tmp_path, told)).cells) == 2  # dager and tag


def test_the_users_sentences_are_read_relative_to_the_grid_and_need_labels_for_a_classifier(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("the first sentence of mine\nanother one here\n")
    unlabelled = TEXT.replace("[text]", '[text]\ndata = "mine.txt"') + '[[defenses]]\nname = "none"\n'
    with pytest.raises(GridError, match="need labels"):
        load_grid(grid_file(tmp_path, unlabelled))
    (tmp_path / "mine.csv").write_text("text,label\nthe first sentence of mine,0\nanother one here,2\n")
    labelled = TEXT.replace("[text]", '[text]\ndata = "mine.csv"') + '[[defenses]]\nname = "none"\n'
    with pytest.raises(GridError, match="label 2: num_labels 2"):
        load_grid(grid_file(tmp_path, labelled))
    grid = load_grid(grid_file(tmp_path, labelled.replace('label = "small"', 'label = "small"\nnum_labels = 3')))
    assert grid.cells[0].config["text"]["data"] == str((tmp_path / "mine.csv").resolve())
    causal = unlabelled.replace('label = "small"', 'task = "causal_lm"')
    assert len(load_grid(grid_file(tmp_path, causal)).cells) == 1  # next-token loss needs no labels


def test_a_text_grid_runs_scores_every_sentence_ranks_and_reports(tmp_path: Path) -> None:
    # Prepare: four reviews in batches of two, a 3-layer GPT-2, no defense and strong noise
    text = TEXT.replace("sentences = 2", "sentences = 4")
    text += '[[defenses]]\nname = "none"\n[[defenses]]\nname = "noise"\nstd = 0.01\n'
    grid = load_grid(grid_file(tmp_path, text))
    # Execute
    out = gi.evaluate.evaluate(grid, tmp_path / "out")
    write_grid_report(grid, out)
    # Assert: without a defense DAGER returns all four sentences exactly, certified, none wrongly
    rows = {r["defense_label"]: r for r in load_table(out)}
    clean, noisy = rows["none"], rows["noise(std=0.01)"]
    assert clean["modality"] == "text" and clean["images"] == 4 and clean["psnr"] is None
    assert clean["exact"] == clean["certified"] == clean["rouge1"] == clean["token_acc"] == 1.0
    assert clean["certified_wrong"] == 0 and clean["inversions"] == 2  # two batches of two
    # under noise of 1e-2 nothing comes back exactly and nothing is certified
    assert noisy["exact"] == 0.0 and noisy["certified"] == 0.0 and noisy["rouge1"] < 0.5
    store = gi.evaluate.Store(out / "results.sqlite")
    try:
        sentences = [r for c in store.cells() for r in store.images(c["key"])]
        kept = next(c for c in store.cells() if c["config"]["defense_label"] == "none")["summary"]["sentences"]
    finally:
        store.close()
    assert sorted({r["image"] for r in sentences}) == [0, 1, 2, 3] and len(sentences) == 8
    assert [s["index"] for s in kept] == [0, 1, 2, 3] and all(s["found"] == s["truth"] for s in kept)
    page = (out / "report.html").read_text()
    assert "Text cells" in page and " ".join(kept[0]["truth"]) in page
    assert "<b>none</b>: worst case ROUGE-1 1" in page and "Privacy-utility" not in page  # no image cells


def test_a_tag_cell_scores_against_the_sentences_it_attacked(tmp_path: Path) -> None:
    from gradinv.evaluate.cells import run_cell

    text = TEXT.replace('name = "dager"', 'name = "tag"\nsteps = 2') + '[[defenses]]\nname = "none"\n'
    config = load_grid(grid_file(tmp_path, text)).cells[0].config
    result = run_cell(config)
    assert [r["image"] for r in result["rows"]] == [0, 1] and result["summary"]["exact_fraction"] == 0.0
    assert all(0.0 <= r["rouge1"] < 1.0 for r in result["rows"])


def _row(defense: str, names: list[str], rouge1: float, exact: float = 0.0, reads: bool = True) -> dict:
    return {"modality": "text", "defense_label": defense, "defenses": names, "rouge1": rouge1, "exact": exact,
            "dager_aware": reads, "attack": "dager", "threat_label": "t", "model": "m"}  # fmt: skip


def test_the_text_ranking_needs_an_attack_that_knows_the_defense() -> None:
    rows = [
        _row("noise", ["noise"], 0.1),
        _row("noise, published", ["noise"], 0.05, reads=False),  # only DAGER as published ran against it
        _row("prune", ["prune"], 0.1),  # DAGER completes what pruning zeroed: it knows the defense
        _row("sign", ["sign"], 0.1),  # gradinv has no text attack that knows signSGD
        _row("dpsgd", ["dpsgd"], 0.35),
        _row("none", [], 0.1),
        _row("quantize", ["quantize"], 0.1, exact=0.25),  # low ROUGE on average, yet one sentence exact
        _row("quantize 8 bits", ["quantize"], 0.05),  # DAGER reads its rounding as noise: an attack that knows it
        {"modality": "image", "defense_label": "images", "defenses": [], "rouge1": None},
    ]
    ranked = {e["defense"]: e["status"] for e in text_ranking(rows, PROTECTED_ROUGE)}
    assert ranked == {
        "noise": "protective",
        "noise, published": "unverified",
        "prune": "protective",
        "sign": "unverified",
        "dpsgd": "leaks",
        "none": "unverified",
        "quantize": "leaks",
        "quantize 8 bits": "protective",
    }
    order = [e["defense"] for e in text_ranking(rows, PROTECTED_ROUGE)]
    # protective first (lowest worst case first), leaks last (likewise)
    assert order[:3] == ["quantize 8 bits", "noise", "prune"] and order[-2:] == ["quantize", "dpsgd"]


def test_guessing_frequent_words_stays_under_the_text_threshold(tokenizer) -> None:
    # the claim behind PROTECTED_ROUGE: the most frequent words of the prior corpus, without any gradient, score
    # about 0.2 ROUGE-1 on the bundled reviews
    from collections import Counter

    from rouge_score import rouge_scorer

    from gradinv.text import sentences
    from gradinv.text.prior import prior_corpus

    counts: Counter[int] = Counter()
    for paragraph in prior_corpus():
        counts.update(tokenizer(paragraph, add_special_tokens=False)["input_ids"])
    common = [token for token, _ in counts.most_common(10)]
    scorer = rouge_scorer.RougeScorer(["rouge1"])
    texts, _ = sentences(n=None, seed=0)
    scores = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:10]
        guess = tokenizer.decode(common[: len(ids)])
        scores.append(scorer.score(tokenizer.decode(ids), guess)["rouge1"].fmeasure)
    mean = sum(scores) / len(scores)
    assert 0.15 < mean < PROTECTED_ROUGE - 0.05


def test_each_batch_is_the_clients_next_sentences_with_their_labels(tmp_path: Path, monkeypatch) -> None:
    # Prepare: spy on the client, and an attack that returns one fixed sentence, certified (wrongly)
    from gradinv.evaluate import text_cells
    from gradinv.evaluate.cells import run_cell
    from gradinv.text import TextReconstruction

    seen: list[tuple[list[str], list[int] | None]] = []  # the client's batches, in order
    observe = text_cells.observe_text

    def spy(model, tokenizer, texts, labels=None, **kwargs):
        seen.append((list(texts), None if labels is None else list(labels)))
        return observe(model, tokenizer, texts, labels, **kwargs)

    class Fixed:
        def reconstruct(self, observation, **kwargs):
            ids = observation.tokenizer("a wrong sentence")["input_ids"]
            return TextReconstruction(token_ids=[ids], texts=["a wrong sentence"], seconds=0.5, certified=[True])

    monkeypatch.setattr(text_cells, "observe_text", spy)
    monkeypatch.setattr(text_cells.attacks, "make", lambda name, **options: Fixed())
    text = TEXT.replace("sentences = 2", "sentences = 6") + '[[defenses]]\nname = "none"\n'
    grid = load_grid(grid_file(tmp_path, text))
    config = grid.cells[0].config
    # Execute
    result = run_cell(config)
    row = load_table(gi.evaluate.evaluate(grid, tmp_path / "out"))[0]
    # Assert: the table counts the wrongly certified sentences of every batch
    assert row["certified_wrong"] == 3 and row["certified"] == pytest.approx(1 / 2) and row["exact"] == 0.0
    # three batches of the client's six sentences in order, each with its own labels
    texts, labels = text_cells.text_data(config)
    assert seen[:3] == [(texts[i : i + 2], labels[i : i + 2]) for i in (0, 2, 4)]
    summary = result["summary"]
    assert summary["certified_wrong"] == 3 and summary["certified_fraction"] == pytest.approx(1 / 2)
    assert summary["matched_fraction"] == pytest.approx(1 / 2) and summary["exact_fraction"] == 0.0
    assert summary["cost"]["inversions"] == 3 and summary["attack_seconds_per_batch"] == 0.5
    assert [s["index"] for s in summary["sentences"]] == list(range(6))
    assert [s["found"] is None for s in summary["sentences"]].count(True) == 3  # one match per batch of two
    tokenizer = text_cells.shipped_tokenizer()
    truth = [tokenizer.convert_ids_to_tokens(ids) for ids in text_cells.references(tokenizer, texts, 12)]
    assert [s["truth"] for s in summary["sentences"]] == truth


def test_one_grid_holds_image_and_text_cells(tmp_path: Path) -> None:
    images = '[[models]]\nname = "mlp"\nhidden = [16]\n[[attacks]]\nname = "bias_trick"\n[[defenses]]\nname = "none"\n'
    grid = load_grid(grid_file(tmp_path, TEXT.replace("[grid]", "[grid]\nimages = 2") + images))
    kinds = sorted(c.config.get("modality", "image") for c in grid.cells)
    assert kinds == ["image", "text"]
    image = next(c.config for c in grid.cells if "modality" not in c.config)
    assert image["model"] == "mlp" and "text" not in image  # an image cell's key is as it was


def test_a_dager_stopped_by_its_own_limits_shows_no_defense_protective(tmp_path: Path, monkeypatch) -> None:
    # Prepare: pruning 0.9, and a completion that stops over its budget (as at GPT-2-small's shape on a CPU)
    from gradinv.attacks import dager

    monkeypatch.setattr(dager, "complete", lambda matrix: (None, {"stopped": "over the budget", "over_budget": True}))
    text = TEXT + '[[defenses]]\nname = "prune"\nratio = 0.9\n'
    # Execute
    out = gi.evaluate.evaluate(load_grid(grid_file(tmp_path, text)), tmp_path / "out")
    row = load_table(out)[0]
    # Assert: nothing recovered, yet the attack's failure is its own: the ranking does not call pruning protective
    assert row["rouge1"] == 0.0 and row["dager_aware"] is False
    assert [e["status"] for e in text_ranking([row], PROTECTED_ROUGE)] == ["unverified"]

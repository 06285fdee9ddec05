"""The grid's text cells: a text client (``gradinv.fl.text_client.observe_text``: a transformer fine-tuned on its
private sentences) shares one gradient per batch under the cell's gradient defenses, the cell's text attack (DAGER,
TAG, LAMP) inverts it, and the evaluation side, which alone reads the sentences, scores each one
(``gradinv.metrics.text.text_score``: ROUGE-1/2/L, token accuracy, exact, certified).

A grid declares them with a ``[text]`` section (``data``: a bundled corpus or the path of the user's sentences,
``sentences``: how many the client holds, all attacked, ``max_length``: tokens kept per sentence) and
``[[text_models]]`` entries (``name`` of :data:`gradinv.text.models.TEXT_MODELS`, ``task``, ``num_labels``,
``lora_rank``, an optional ``label``, the rest Hugging Face configuration overrides); every text attack of
``[[attacks]]`` runs on every text model, threat, batch size, defense and seed. No utility is measured for them.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from gradinv import attacks, defenses
from gradinv.evaluate.cost import full_recovery
from gradinv.evaluate.summary import mean_std
from gradinv.fl.text_client import check_text_client, observe_text
from gradinv.metrics.text import references, text_score
from gradinv.observation import ThreatModel
from gradinv.text import CORPORA, make_text_model, read_sentences, sentences, shipped_tokenizer, with_lora

TEXT_KEYS = {"data": "rotten_tomatoes", "sentences": 8, "max_length": 32}
"""The ``[text]`` section's keys and defaults."""
TEXT_RANGES: dict[str, tuple[float, float]] = {"sentences": (1, 100_000), "max_length": (2, 4096)}
TEXT_MODEL_KEYS = ("name", "label", "task", "num_labels", "lora_rank")
"""A ``[[text_models]]`` entry's own keys; any other key is a configuration override of the model."""

PROTECTED_ROUGE = 0.3
"""Below this worst-case ROUGE-1 (and with no sentence exact) the report's text ranking calls a defense protective.
Guessing the most frequent words of the prior corpus, without any gradient, scores 0.19 (10 tokens) to 0.20 (30
tokens) ROUGE-1 on the bundled reviews (``tests/evaluate/test_text_cells.py`` re-measures it): a threshold above
what no attack needs, stated in the report, not a paper's."""

SHOWN_SENTENCES = 64
"""Sentences per cell whose tokens (true and recovered) the summary keeps for the report."""


def text_conflict(
    attack: Any,
    options: dict[str, Any],
    threat: ThreatModel,
    model: dict[str, Any],
    chain: list[tuple[str, dict[str, Any]]],
) -> str | None:
    """Why a text attack cannot run on this text model (its ``task`` and ``lora_rank``), threat model and defense
    chain, or ``None``."""
    if threat.server != "honest":
        return "text clients are simulated with an honest server (no malicious text model changes)"
    if attack.name in ("tag", "lamp"):
        if model["task"] != "classification":
            return f"attack {attack.name!r} attacks sequence classifiers, not task {model['task']!r} (dager does)"
        if not threat.knows_batch_size:
            return f"attack {attack.name!r} needs the batch size, which this threat model withholds"
        if model["lora_rank"] and options.get("length") is None:
            return (
                f"attack {attack.name!r} reads the sentence length off the position-embedding gradient, which a LoRA "
                "client does not share: give the attack a length option"
            )
    try:
        check_text_client(threat, [defenses.make(name, **params) for name, params in chain])
    except (TypeError, ValueError) as err:
        return f"defense chain {[n for n, _ in chain]}: {err}"
    return None


def text_data(config: dict[str, Any]) -> tuple[list[str], list[int] | None]:
    """The client's sentences of a cell (``[text] data``, ``sentences``, drawn by the cell's seed) and their labels
    (``None`` when a file of the user's has none).

    Raises:
        ValueError: fewer sentences than asked for.
    """
    setup = config["text"]
    if setup["data"] in CORPORA:
        texts, labels = sentences(setup["data"], n=setup["sentences"], seed=config["seed"])
        return texts, list(labels)
    texts, found = read_sentences(setup["data"], n=setup["sentences"], seed=config["seed"])
    return texts, None if any(label is None for label in found) else [
        int(label) for label in found if label is not None
    ]


def text_model(config: dict[str, Any]) -> torch.nn.Module:
    """The cell's broadcast transformer: ``make_text_model`` with the cell's seed, LoRA adapters if ``lora_rank``."""
    model = make_text_model(
        config["model"],
        task=config["task"],
        num_labels=config["num_labels"],
        seed=config["seed"],
        **config["model_options"],
    )
    return with_lora(model, config["lora_rank"], seed=config["seed"]) if config["lora_rank"] else model


def run_text_cell(config: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Run one text cell on ``device``: the client's ``sentences`` in batches of the cell's batch size, each batch's
    gradient (with the cell's defenses, fresh per batch) attacked and scored. Returns ``summary`` and one row per
    sentence (``image``: its index; ``rouge1``, ``rouge2``, ``rougeL``, ``token_acc``, ``exact``, ``certified``)."""
    texts, labels = text_data(config)
    tokenizer = shipped_tokenizer()
    model = text_model(config)
    threat = ThreatModel(**config["threat"])
    attack = attacks.make(config["attack"], **config["attack_options"])
    b, max_length = config["batch_size"], config["text"]["max_length"]
    rows: list[dict[str, Any]] = []
    shown: list[dict[str, Any]] = []
    seconds: list[float] = []
    evidence: list[str] = []
    certified_wrong = inconclusive = 0
    chain = []
    for batch in range(len(texts) // b):
        part = texts[batch * b : (batch + 1) * b]
        part_labels = None if labels is None else labels[batch * b : (batch + 1) * b]
        chain = [defenses.make(name, **params) for name, params in config["defenses"]]  # fresh: DP-SGD accounting
        client_seed = config["seed"] * 100_003 + batch
        observed = observe_text(
            model,
            tokenizer,
            part,
            part_labels if config["task"] == "classification" else None,
            task=config["task"],
            threat=threat,
            max_length=max_length,
            defenses=chain,
            seed=client_seed,
            device=device,
        )
        rec = attack.reconstruct(observed, device=device, seed=client_seed)
        scores = text_score(rec, part, tokenizer, max_length=max_length)
        certified_wrong += scores["certified_wrong"]
        inconclusive += bool(rec.info.get("inconclusive"))  # the attack stopped for its own limits, not the defense's
        seconds.append(rec.seconds)
        if rec.certificate and rec.certificate not in evidence:
            evidence.append(rec.certificate)
        truth = references(tokenizer, part, max_length)
        for entry in scores["per_sentence"]:
            index = batch * b + entry["index"]
            rows.append(
                {
                    "image": index,
                    "batch": batch,
                    **{key: entry[key] for key in ("rouge1", "rouge2", "rougeL", "token_acc")},
                    "matched": int(entry["match"] is not None),
                    "exact": int(entry["exact"]),
                    "certified": int(entry["certified"]),
                }
            )
            if len(shown) < SHOWN_SENTENCES:
                found = None if entry["match"] is None else rec.token_ids[entry["match"]]
                shown.append(
                    {
                        "index": index,
                        "truth": [str(p) for p in tokenizer.convert_ids_to_tokens(truth[entry["index"]])],
                        "found": None if found is None else [str(p) for p in tokenizer.convert_ids_to_tokens(found)],
                    }
                )
    per_batch = statistics.fmean(seconds)
    summary = {
        **{key: mean_std([r[key] for r in rows]) for key in ("rouge1", "rouge2", "rougeL", "token_acc")},
        "exact_fraction": statistics.fmean(r["exact"] for r in rows),
        "certified_fraction": statistics.fmean(r["certified"] for r in rows),
        "certified_wrong": certified_wrong,
        "inconclusive": inconclusive,
        "matched_fraction": statistics.fmean(r["matched"] for r in rows),
        "certificates": evidence,
        "attack_seconds_per_batch": per_batch,
        "cost": full_recovery(per_batch, b, len(texts), chain),
        "defenses": [d.config() for d in chain],
        "sentences": shown,
    }
    return {"summary": summary, "rows": [{k: v for k, v in r.items() if k != "matched"} for r in rows]}

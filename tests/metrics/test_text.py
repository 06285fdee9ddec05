"""Text metrics: ROUGE against the tokenizer's own decoding, matched by the Hungarian algorithm; exact and
certified counts in token space."""

from gradinv.metrics.text import references, text_score
from gradinv.text import TextReconstruction


def _rec(ids: list[list[int]], certified: list[bool] | None = None) -> TextReconstruction:
    return TextReconstruction(token_ids=ids, texts=[""] * len(ids), seconds=0.0, certified=certified or [])


def test_a_perfect_recovery_in_any_order_scores_one(tokenizer, reviews) -> None:
    # Prepare
    texts = reviews[0][:3]
    truth = references(tokenizer, texts, 64)
    # Execute
    scores = text_score(_rec(truth[::-1], [True] * 3), texts, tokenizer)
    # Assert
    assert scores["rouge1"] == scores["rougeL"] == scores["exact"] == scores["token_acc"] == 1.0
    assert (
        scores["certified"] == 3
        and scores["certified_wrong"] == 0
        and sorted(scores["pairs"]) == [(0, 2), (1, 1), (2, 0)]
    )


def test_partial_and_wrong_recoveries(tokenizer) -> None:
    # Prepare: two true sentences; one recovered with its last word wrong (and certified: a certification error),
    # the other missing
    texts = ["the cat sat on the mat", "a dog ran"]
    truth = references(tokenizer, texts, 64)
    wrong = list(truth[0])
    wrong[-2] = tokenizer.convert_tokens_to_ids("hat")
    # Execute
    scores = text_score(_rec([wrong], [True]), texts, tokenizer)
    # Assert: ROUGE-1 F of 5/6 on the first, 0 on the unmatched second; 7 of 8 tokens of the first at their place
    # ([CLS] the cat sat on the hat [SEP]), none of the second (5 tokens)
    assert abs(scores["rouge1"] - (5 / 6) / 2) < 1e-9
    assert abs(scores["token_acc"] - 7 / 13) < 1e-9
    assert scores["exact"] == 0 and scores["certified_wrong"] == 1


def test_per_sentence_scores_follow_the_matching(tokenizer) -> None:
    # Prepare: the second true sentence recovered exactly (certified), the first with one word wrong (not certified)
    texts = ["the cat sat on the mat", "a dog ran"]
    truth = references(tokenizer, texts, 64)
    wrong = list(truth[0])
    wrong[-2] = tokenizer.convert_tokens_to_ids("hat")
    # Execute
    per = text_score(_rec([truth[1], wrong], [True, False]), texts, tokenizer)["per_sentence"]
    # Assert: one entry per true sentence, in their order, each with its match's scores and certificate
    assert [e["index"] for e in per] == [0, 1] and [e["match"] for e in per] == [1, 0]
    assert abs(per[0]["rouge1"] - 5 / 6) < 1e-9 and abs(per[0]["token_acc"] - 7 / 8) < 1e-9
    assert per[0]["exact"] is False and per[0]["certified"] is False
    assert per[1]["rouge1"] == per[1]["rouge2"] == per[1]["token_acc"] == 1.0
    assert per[1]["exact"] is True and per[1]["certified"] is True


def test_an_unmatched_sentence_scores_zero(tokenizer) -> None:
    texts = ["the cat sat on the mat", "a dog ran"]
    truth = references(tokenizer, texts, 64)
    per = text_score(_rec([truth[0]], [True]), texts, tokenizer)["per_sentence"]
    assert per[1]["match"] is None and per[1]["rouge1"] == per[1]["token_acc"] == 0.0
    assert per[1]["exact"] is False and per[1]["certified"] is False

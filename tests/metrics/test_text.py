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

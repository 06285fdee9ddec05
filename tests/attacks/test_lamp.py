"""LAMP on a real sentence from a trained encoder: its cosine distance, the four reorderings, a discrete step that
puts a shuffled sentence back in order, and a short run that recovers words."""

import numpy as np
import pytest
import torch

import gradinv as gi
from gradinv.attacks.embedding_inversion import build_problem
from gradinv.attacks.lamp import LAMP, cosine_distance, reorder
from gradinv.fl.text_client import observe_text
from gradinv.metrics.text import references, text_score
from gradinv.text.prior import shipped_prior


def test_cosine_distance_is_scale_free_and_averaged_over_layers() -> None:
    a = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])]
    assert float(cosine_distance(a, [3 * t for t in a])) == pytest.approx(0.0)
    # layer 1 opposite (2), layer 2 orthogonal (1): mean 1.5
    assert float(cosine_distance(a, [torch.tensor([-1.0, 0.0]), torch.tensor([5.0, 0.0])])) == pytest.approx(1.5)


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_reorderings_are_permutations_that_keep_the_special_positions(kind) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        order = reorder(9, kind, rng)
        assert sorted(order.tolist()) == list(range(9)) and order[0] == 0 and order[-1] == 8
        inner = order[1:-1].tolist()
        if kind == 0:  # two positions exchanged
            assert sum(a != b for a, b in zip(inner, range(1, 8), strict=True)) in (0, 2)
        elif kind == 1:  # one token moved: the others keep their order
            assert any([t for t in inner if t != m] == sorted(t for t in inner if t != m) for m in inner)
        elif kind == 3:  # a prefix moved to the end: a rotation
            shift = inner.index(1)
            assert inner == [*range(1, 8)][-shift:] + [*range(1, 8)][:-shift] if shift else inner == [*range(1, 8)]
    with pytest.raises(ValueError):
        reorder(9, 4, rng)


def test_a_discrete_step_puts_a_shuffled_review_back_in_order(tokenizer, reviews, minilm2) -> None:
    # Prepare: the true embeddings of a real review with two inner tokens exchanged
    texts, labels = reviews
    text = [" ".join(texts[1].split()[:4])]
    obs = observe_text(minilm2, tokenizer, text, labels[1:2], max_length=16)
    problem = build_problem(obs, None)
    truth = torch.tensor(references(tokenizer, text, 16))
    shuffled = truth.clone()
    shuffled[0, [1, 4]] = truth[0, [4, 1]]
    x = problem.embeddings[shuffled].clone()
    # 60 orders: 15 exchanges of two of the 4 inner tokens, the one undoing it drawn with probability 1/8 each
    attack = LAMP(swap_candidates=60)
    # Execute
    taken = attack._swap(problem, shipped_prior(tokenizer), x, problem.labels, np.random.default_rng(0))
    # Assert: the order of lowest gradient distance plus perplexity is the client's
    assert taken == 1
    assert torch.equal(problem.project(x), truth)


def test_lamp_recovers_most_words_of_a_real_review_in_a_short_run(tokenizer, reviews, minilm2) -> None:
    # Prepare: the first five words of a real review, shared by the trained two-layer encoder; labels given
    texts, labels = reviews
    text = [" ".join(texts[2].split()[:5])]
    obs = observe_text(minilm2, tokenizer, text, labels[2:3], threat=gi.ThreatModel(knows_labels=True), max_length=16)
    # Execute: a short run (100 steps, 10 starts, 20 orders at steps 26, 51 and 76)
    rec = LAMP(steps=100, init_candidates=10, swap_candidates=20, swap_every=25).reconstruct(obs, seed=0)
    # Assert: ROUGE-1 measured 0.6 here, where a random start scores 0; the discrete steps ran
    scores = text_score(rec, text, tokenizer, max_length=16)
    assert scores["rouge1"] >= 0.4
    assert rec.info["swaps"] == 3 and rec.info["label_source"] == "given"
    assert rec.info["init_size"] == pytest.approx(float(problem_norm(obs)), rel=1e-6)


def problem_norm(obs) -> float:
    problem = build_problem(obs, None)
    return float(problem.embeddings[~problem.banned].norm(dim=1).mean())


def test_lamp_refuses_bad_options() -> None:
    for bad in ({"loss": "l2"}, {"steps": 0}, {"lr": -1.0}, {"swap_burnin": 1.0}, {"init_size": 0.0}):
        with pytest.raises(ValueError):
            LAMP(**bad)
    with pytest.raises(TypeError, match="prior"):
        LAMP(prior=object())  # type: ignore[arg-type]
    assert LAMP(loss="tag").config()["coeff_perplexity"] == 60.0 and LAMP().config()["coeff_reg"] == 1.0

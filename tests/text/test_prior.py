"""Language-model priors: the Kneser-Ney bigram is a probability distribution with the textbook values, the shipped
one reads real review sentences as more natural than their shuffles (without having counted them), and a causal
LM's score is its own loss."""

import random

import numpy as np
import pytest
import torch

from gradinv.text import make_text_model
from gradinv.text.prior import BigramPrior, CausalLMPrior, kneser_ney_bigram, prior_corpus, shipped_prior


def test_kneser_ney_bigram_is_a_distribution_with_the_textbook_values() -> None:
    # Prepare: a 10-token vocabulary, sequences where 0 is followed by 1 twice, 1 by 2 and by 3
    prior = BigramPrior([[0, 1, 2], [0, 1, 3], [4, 1]], vocab_size=10, discount=0.75)
    # Execute: every conditional distribution over the vocabulary
    tokens = np.arange(10)
    sums = [np.exp(prior.log_prob(np.full(10, a), tokens)).sum() for a in range(10)]
    # Assert: each sums to 1 (seen histories 0, 1, 4 and unseen ones alike)
    assert np.allclose(sums, 1.0, atol=1e-12)
    # P(1 | 0) = (2 - D)/2 + D * N1+(0.)/2 * Pc(1), Pc(1) = (N1+(.1) + 1) / (N1+(..) + V) with 4 distinct pairs
    pc1 = (2 + 1) / (4 + 10)
    expected = (2 - 0.75) / 2 + 0.75 * 1 / 2 * pc1
    assert np.isclose(np.exp(prior.log_prob(np.array([0]), np.array([1])))[0], expected)
    # an unseen history backs off to the continuation probability alone
    assert np.isclose(np.exp(prior.log_prob(np.array([7]), np.array([1])))[0], pc1)
    # nll is the mean negative log-probability per predicted token
    nll = prior.nll(torch.tensor([[0, 1, 2]]))
    manual = -(prior.log_prob(np.array([0]), np.array([1])) + prior.log_prob(np.array([1]), np.array([2]))) / 2
    assert torch.allclose(nll, torch.from_numpy(manual))


def test_kneser_ney_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="discount"):
        kneser_ney_bigram([[0, 1]], 4, discount=1.0)
    with pytest.raises(ValueError, match="two or more tokens"):
        kneser_ney_bigram([[0]], 4)


def test_shipped_prior_prefers_real_review_order_it_never_counted(tokenizer, reviews) -> None:
    # Prepare: eight real reviews in the tokenizer's ids, and a shuffle of each one's inner tokens
    texts, _ = reviews
    prior = shipped_prior(tokenizer)
    rng = random.Random(0)
    wins = 0
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        inner = ids[1:-1]
        rng.shuffle(inner)
        # Execute
        true, shuffled = prior.nll(torch.tensor([ids, ids[:1] + inner + ids[-1:]]))
        wins += bool(true < shuffled)
    # Assert: the true order reads more natural every time, and none of the reviews is in the counted prose
    assert wins == len(texts)
    corpus = set(prior_corpus())
    assert not any(text in corpus for text in texts)


def test_causal_lm_prior_is_the_models_own_loss_per_sequence() -> None:
    # Prepare: a small random GPT-2 language model and two sequences
    model = make_text_model("gpt2", task="causal_lm", seed=0, n_layer=1, n_embd=32, n_head=2)
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 1037, 3185, 102]])
    # Execute
    nll = CausalLMPrior(model).nll(ids)
    # Assert
    with torch.no_grad():
        own = [float(model(input_ids=row[None], labels=row[None]).loss) for row in ids]
    assert torch.allclose(nll, torch.tensor(own), atol=1e-5)
    with pytest.raises(TypeError, match="causal LM"):
        CausalLMPrior(object())  # type: ignore[arg-type]

"""What TAG and LAMP share: the dummy's gradient is the client's at the true sentence, the length read off the
position-embedding gradient (also under noise), the projection to tokens, the special tokens, the refusals."""

import pytest
import torch

import gradinv as gi
from gradinv.attacks.embedding_inversion import (
    banned_tokens,
    build_problem,
    head_labels,
    nearest_tokens,
    optimise,
    read_length,
    special_ids,
)
from gradinv.attacks.tag import tag_distance
from gradinv.defenses import make as make_defense
from gradinv.fl.text_client import observe_text
from gradinv.metrics.text import references
from gradinv.text import make_text_model, with_lora

BERT = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}


@pytest.fixture(scope="module")
def small_bert():
    return make_text_model("bert", seed=0, **BERT)


def test_the_dummys_gradient_at_the_true_sentences_is_the_shared_one(tokenizer, reviews, small_bert) -> None:
    # Prepare: two reviews cut at 10 tokens (so neither is padded), shared by a small BERT classifier, labels known
    texts, labels = reviews
    threat = gi.ThreatModel(knows_labels=True)
    obs = observe_text(small_bert, tokenizer, texts[:2], labels[:2], threat=threat, max_length=10)
    problem = build_problem(obs, None)
    ids = torch.tensor(references(tokenizer, texts[:2], 10))
    # Execute: the matched gradients at the true word embeddings
    x = problem.embeddings[ids].clone()
    grads = problem.gradients(x, problem.labels, create_graph=False)
    # Assert: equal to the shared ones (the word embeddings left out), the length read exactly
    assert problem.length == ids.shape[1] == 10 and problem.batch == 2
    assert "bert.embeddings.word_embeddings.weight" not in problem.names
    assert len(problem.names) == len(obs.update) - 1
    for grad, target in zip(grads, problem.target, strict=True):
        assert torch.allclose(grad, target, atol=1e-6, rtol=1e-4)
    # and the projection gives the sentences back
    assert torch.equal(problem.project(x * 3.0), ids)


def test_a_lora_clients_adapter_gradient_is_matched_with_the_length_told(tokenizer, reviews) -> None:
    # Prepare: the small BERT with LoRA adapters (r = 8, B drawn at random as after some fine-tuning) on the query
    # and value projections: the client shares only the adapters' gradient, no position embedding
    texts, labels = reviews
    model = with_lora(make_text_model("bert", seed=0, **BERT), 8)
    obs = observe_text(model, tokenizer, texts[:2], labels[:2], threat=gi.ThreatModel(knows_labels=True), max_length=10)
    # Execute
    problem = build_problem(obs, None, length=10)
    ids = torch.tensor(references(tokenizer, texts[:2], 10))
    grads = problem.gradients(problem.embeddings[ids].clone(), problem.labels, create_graph=False)
    # Assert: every matched gradient is an adapter's, equal to the shared one at the true sentences
    assert problem.length == 10 and all(".lora_" in n for n in problem.names) and len(problem.names) == len(obs.update)
    for grad, target in zip(grads, problem.target, strict=True):
        assert torch.allclose(grad, target, atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="pass length="):
        build_problem(obs, None)
    with pytest.raises(ValueError, match="length must be"):
        gi.attacks.make("tag", length=1)


def test_labels_from_the_heads_bias_at_batch_one_only(tokenizer, reviews, small_bert) -> None:
    # Prepare: each of four reviews alone, then two together, labels withheld
    texts, labels = reviews
    for text, label in zip(texts[:4], labels[:4], strict=True):
        obs = observe_text(small_bert, tokenizer, [text], [label])
        # Execute
        found, source = head_labels(obs.update, 2, 1)
        # Assert: iDLG's rule gives the label of a single sentence
        assert source == "recovered (iDLG)" and found is not None and found.tolist() == [label]
    pair = observe_text(small_bert, tokenizer, texts[:2], labels[:2])
    assert head_labels(pair.update, 2, 2) == (None, "optimised")
    assert build_problem(pair, None).labels is None
    # under a noise defense both classes' bias gradients can be negative: the label is then a guess, and said to be
    noisy = observe_text(small_bert, tokenizer, texts[:1], labels[:1], defenses=[make_defense("noise", std=1.0)])
    bias = next(g for n, g in noisy.update.items() if n.endswith(".bias") and g.shape == (2,))
    guessed, source = head_labels(noisy.update, 2, 1)
    assert guessed is not None and (source == "recovered (iDLG)") is (int((bias < 0).sum()) == 1)
    forced = {**noisy.update, "classifier.bias": torch.tensor([-0.25, -0.5])}
    assert head_labels(forced, 2, 1)[1].startswith("idlg, guessed: 2 of 2 classes")


def test_read_length_counts_the_positions_used_also_under_noise(tokenizer, reviews, small_bert) -> None:
    # Prepare: four reviews (padded to the longest), clean and under Gaussian noise below the last rows' signal
    # (noise 8e-6 per row, the rows of the longest sentence alone 4.5e-5)
    texts, labels = reviews
    longest = max(len(r) for r in references(tokenizer, texts[:4], 64))
    name = "bert.embeddings.position_embeddings.weight"
    clean = observe_text(small_bert, tokenizer, texts[:4], labels[:4])
    noisy = observe_text(small_bert, tokenizer, texts[:4], labels[:4], defenses=[make_defense("noise", std=1e-6)])
    # Execute / Assert
    assert read_length(clean.update[name]) == longest
    assert read_length(noisy.update[name]) == longest
    with pytest.raises(ValueError, match="zero"):
        read_length(torch.zeros(8, 4))


def test_special_tokens_and_projection(tokenizer) -> None:
    # Prepare: BERT's input format; embeddings where a banned token is the nearest
    assert special_ids(tokenizer) == (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    banned = banned_tokens(tokenizer)
    assert banned[tokenizer.cls_token_id] and banned[tokenizer.convert_tokens_to_ids("[unused5]")]
    assert not banned[tokenizer.convert_tokens_to_ids("movie")]
    movie = tokenizer.convert_tokens_to_ids("movie")
    film = tokenizer.convert_tokens_to_ids("film")
    embeddings = torch.randn(len(tokenizer), 16, generator=torch.Generator().manual_seed(0))
    embeddings[film] = 50 * (embeddings[movie] + 0.5 * embeddings[film])  # a near direction, a far larger norm
    x = embeddings[[tokenizer.cls_token_id, movie]][None] * 2.0
    # Execute
    ids = nearest_tokens(x, embeddings, banned)
    # Assert: the banned [CLS] is never picked even at its own embedding; "movie" is, by direction (a dot
    # product would pick the long "film")
    assert int(ids[0, 0]) != tokenizer.cls_token_id and int(ids[0, 1]) == movie


def test_build_problem_refuses_what_it_cannot_attack(tokenizer, reviews, small_bert) -> None:
    texts, labels = reviews
    lm = make_text_model("gpt2", task="causal_lm", seed=0, n_layer=1, n_embd=32, n_head=2)
    with pytest.raises(ValueError, match="classifiers"):
        build_problem(observe_text(lm, tokenizer, texts[:1], task="causal_lm"), None)
    hidden = observe_text(small_bert, tokenizer, texts[:1], labels[:1], threat=gi.ThreatModel(knows_batch_size=False))
    with pytest.raises(ValueError, match="batch size"):
        build_problem(hidden, None)
    obs = observe_text(small_bert, tokenizer, texts[:1], labels[:1])
    del obs.update["bert.embeddings.position_embeddings.weight"]
    with pytest.raises(ValueError, match="position-embedding"):
        build_problem(obs, None)
    with pytest.raises(TypeError, match="TextObservation"):
        build_problem(object(), None)  # type: ignore[arg-type]
    # the caller's model keeps its attention kernels (the attack works on a copy)
    before = small_bert.config._attn_implementation
    build_problem(observe_text(small_bert, tokenizer, texts[:1], labels[:1]), None)
    assert small_bert.config._attn_implementation == before


def test_the_optimisation_holds_the_special_tokens_at_the_ends(tokenizer, reviews, small_bert) -> None:
    # Prepare: a random start for one review's gradient
    texts, labels = reviews
    obs = observe_text(small_bert, tokenizer, texts[:1], labels[:1], threat=gi.ThreatModel(knows_labels=True))
    problem = build_problem(obs, None)
    x0 = torch.randn(1, problem.length, problem.embeddings.shape[1], generator=torch.Generator().manual_seed(0))
    # Execute: three Adam steps of TAG's distance
    best, _, trace = optimise(
        problem, x0, lambda a, b: tag_distance(a, b, 0.01), steps=3, lr=0.1, lr_decay=1.0, coeff_reg=0.0, init_size=0.0
    )
    # Assert: [CLS] and [SEP] sit at the ends of the kept embeddings, as the input format puts them
    assert torch.equal(best[0, 0], problem.embeddings[tokenizer.cls_token_id])
    assert torch.equal(best[0, -1], problem.embeddings[tokenizer.sep_token_id])
    assert len(trace) == 3 and not torch.equal(best[0, 1], x0[0, 1])

"""DAGER's first-layer links on the shipped trained encoder: the key gradient splits by token and position, a
once-occurring token's share lies in its own sentence's query span and no other's, and a batch of 16 real reviews
comes back exactly (the paper's search and our beam recovered 4 of them)."""

import collections

import pytest
import torch

import gradinv as gi
from gradinv.attacks.dager_links import (
    embedding_columns,
    first_layer_links,
    link_residual,
    link_sentence,
    linked_sentences,
    split_gradient,
)
from gradinv.fl.text_client import observe_text
from gradinv.metrics.text import text_score
from gradinv.text import make_text_model, sentences, with_lora
from gradinv.text.models import layout, tokenize

KEY = "bert.encoder.layer.0.attention.self.key.weight"


@pytest.fixture(scope="module")
def batch16(tokenizer):
    """16 reviews cut at 12 tokens through the trained MiniLM: the observation, the token ids, the attention mask."""
    texts, labels = sentences(n=16, seed=0)
    model = make_text_model("minilm", seed=0)
    obs = observe_text(model, tokenizer, texts, labels, max_length=12)
    encoded = tokenize(tokenizer, texts, 12)
    return texts, obs, encoded["input_ids"], encoded["attention_mask"].bool()


def test_the_key_gradient_splits_by_token_and_position(batch16) -> None:
    # Prepare
    _, obs, ids, mask = batch16
    lay = layout(obs.model)
    tokens = sorted(set(ids[mask].tolist()))
    # Execute
    links = first_layer_links(lay, obs.update, tokens, 12)
    # Assert: the split is exact to float32 rounding; 113 tokens + 12 positions + 2 types + gamma + beta columns
    assert links is not None and links.residual < 1e-5
    assert embedding_columns(lay, tokens, 12).shape == (384, 113 + 12 + 2 + 2)
    # a once-occurring token weighs ~1 at its own position, and that is its largest weight
    counts = collections.Counter(ids[mask].tolist())
    once = [(t, int(torch.nonzero(ids == t)[0, 1])) for t in tokens if counts[t] == 1]
    assert len(once) > 60
    for token, position in once:
        row = links.weights[tokens.index(token)]
        assert int(row.argmax()) == position
    own = torch.tensor([links.weights[tokens.index(t), p] for t, p in once])
    assert float(own.median()) == pytest.approx(1, abs=0.1)
    # splitting by columns that miss a token's leaves a residual
    assert split_gradient(obs.update[KEY], embedding_columns(lay, tokens[1:], 12))[1] > 1e-3


def test_a_token_share_lies_in_its_own_sentence_query_span(batch16) -> None:
    # Prepare: every once-occurring token of the first four sentences
    _, obs, ids, mask = batch16
    tokens = sorted(set(ids[mask].tolist()))
    links = first_layer_links(layout(obs.model), obs.update, tokens, 12)
    counts = collections.Counter(ids[mask].tolist())
    heads, width = links.queries.shape[2:]
    own, other = [], []
    for s in range(4):
        for j in range(1, int(mask[s].sum()) - 1):
            token = int(ids[s, j])
            if counts[token] != 1:
                continue
            share = links.anchors[:, tokens.index(token)].reshape(1, heads, width)
            share = share / share.norm()
            # Execute
            for row, out in ((s, own), (s + 4, other)):
                n = int(mask[row].sum())
                out.append(link_residual(share, links.queries, {i: tokens.index(int(ids[row, i])) for i in range(n)}))
    # Assert: in the span of its own sentence's 12 queries (of 32 dimensions per head), far from another's
    assert len(own) > 20 and max(own) < 1e-4 and min(other) > 0.3


def test_the_search_places_every_token_of_an_anchor_sentence(batch16, tokenizer) -> None:
    # Prepare: the anchors "sandra" and "believe" (each once in the batch)
    _, obs, ids, mask = batch16
    tokens = sorted(set(ids[mask].tolist()))
    links = first_layer_links(layout(obs.model), obs.update, tokens, 12)
    heads, width = links.queries.shape[2:]

    def search(word: str, weights: torch.Tensor) -> tuple[list[int], list[int], float]:
        anchor = tokenizer.convert_tokens_to_ids(word)
        row, position = (int(v) for v in torch.nonzero(ids == anchor)[0])
        share = links.anchors[:, tokens.index(anchor)].reshape(1, heads, width)
        ends = {0: tokens.index(tokenizer.cls_token_id), 11: tokens.index(tokenizer.sep_token_id)}
        picks, residual = link_sentence(share, links.queries, weights, ends | {position: tokens.index(anchor)}, 12)
        return [tokens[c] for c in picks], ids[row].tolist(), residual

    # Execute
    found, truth, residual = search("sandra", links.weights)
    placed, sentence, _ = search("believe", links.weights)
    unweighted, _, _ = search("believe", torch.zeros_like(links.weights))
    # Assert: the sentence, token for token; the greedy step's tokens need the position weights' order for the second
    assert found == truth and residual < 1e-5
    assert placed == sentence and unweighted != sentence


def test_dager_recovers_sixteen_reviews_from_the_trained_encoder(batch16, tokenizer) -> None:
    # Prepare
    texts, obs, _, _ = batch16
    # Execute
    rec = gi.attacks.make("dager").reconstruct(obs)
    scores = text_score(rec, texts, tokenizer, max_length=12)
    # Assert: all 16 exact (one of them 11 tokens long: cut at its own [SEP]) and certified, none wrongly; the links
    # found them all and account for the whole second span, so no beam ran
    assert scores["exact"] == 1.0 and sum(rec.certified) == 16 and scores["certified_wrong"] == 0
    assert rec.info["linked"] == 16 and rec.info["encoder_search"][-1] == (12, "first-layer links")
    assert sorted(len(ids) for ids in rec.token_ids)[:2] == [11, 12]


def test_the_links_apply_only_where_the_first_layer_is_as_described(batch16, tokenizer, reviews) -> None:
    # Prepare
    _, obs, ids, mask = batch16
    lay = layout(obs.model)
    tokens = sorted(set(ids[mask].tolist()))
    gpt2 = make_text_model("gpt2", seed=0, n_layer=2, n_embd=64, n_head=4)
    lora = with_lora(make_text_model("minilm", seed=0), 8)
    texts, labels = reviews[0][:1], reviews[1][:1]
    # Execute / Assert: a decoder; a LoRA client; the key gradient withheld; a length not below the head width (32);
    # more columns than the layer is wide
    assert first_layer_links(layout(gpt2), observe_text(gpt2, tokenizer, texts, labels).update, tokens, 12) is None
    assert first_layer_links(layout(lora), observe_text(lora, tokenizer, texts, labels).update, tokens, 12) is None
    assert first_layer_links(lay, {k: v for k, v in obs.update.items() if k != KEY}, tokens, 12) is None
    assert first_layer_links(lay, obs.update, tokens, 32) is None and first_layer_links(lay, obs.update, tokens, 31)
    assert first_layer_links(lay, obs.update, list(range(1000, 1400)), 12) is None
    with pytest.raises(TypeError, match="links"):
        gi.attacks.make("dager", links=1)


def test_a_near_miss_is_searched_again_with_its_sentence_tokens_shares(tokenizer) -> None:
    # Prepare: eight reviews cut at 24 tokens; from the anchor "##ware" ("beware the quirky brit-com ...") the search
    # ends in a near miss, the first half of the sentence misplaced
    texts, labels = sentences(n=8, seed=0)
    obs = observe_text(make_text_model("minilm", seed=0), tokenizer, texts, labels, max_length=24)
    ids = tokenize(tokenizer, texts, 24)["input_ids"]
    tokens = sorted(set(ids.flatten().tolist()))
    links = first_layer_links(layout(obs.model), obs.update, tokens, 24)
    heads, width = links.queries.shape[2:]
    shares = links.anchors.t().reshape(-1, heads, width)
    anchor = tokenizer.convert_tokens_to_ids("##ware")
    row = int(torch.nonzero(ids == anchor)[0, 0])
    truth = ids[row].tolist()
    fixed = {0: tokens.index(tokenizer.cls_token_id), 2: tokens.index(anchor), 23: tokens.index(tokenizer.sep_token_id)}
    alone, residual = link_sentence(shares[[tokens.index(anchor)]], links.queries, links.weights, fixed, 24)
    # Execute: the joint search, from the near miss, over the shares of every once-occurring token of the sentence
    # that the near miss placed where its weight is ~1
    once = [tokens.index(t) for t in set(truth) if (ids == t).sum() == 1]
    group = [c for i, c in enumerate(alone) if c in once and int(links.weights[c].argmax()) == i]
    joint, joint_residual = link_sentence(shares[group], links.queries, links.weights, fixed, 24, alone)
    # Assert: alone a near miss (the first half misplaced); jointly, the sentence token for token
    assert alone != [tokens.index(t) for t in truth] and 1e-3 < residual < 0.05
    assert [tokens[c] for c in joint] == truth and joint_residual < 1e-5
    # and the attack's own loop does the same: all eight reviews (seven without the joint search)
    every = [ids[r][ids[r] != tokenizer.pad_token_id].tolist() for r in range(8)]
    found = linked_sentences(
        links, tokenizer.cls_token_id, tokenizer.sep_token_id, lambda s: 0.0 if s in every else None
    )
    assert sorted(s for s, _ in found) == sorted(every)

"""DAGER on real sentences: exact and certified from a random GPT-2 (classification and next-token loss) and from
the shipped trained encoder; nothing certified where the span cannot tell tokens apart."""

import pytest
import torch

import gradinv as gi
from gradinv.attacks.dager import (
    noise_edge,
    noise_rank,
    numerical_rank,
    recorded_noise,
    rounding_noise,
    span_basis,
    span_distance,
    wedin_bound,
)
from gradinv.fl.text_client import observe_text
from gradinv.metrics.text import references, text_score
from gradinv.text import make_text_model, with_lora
from gradinv.text.models import layout

GPT2 = {"n_layer": 3, "n_embd": 384, "n_head": 6}


def test_span_distance_and_rank() -> None:
    # Prepare: a rank-5 float32 "gradient" (sum of 5 outer products, one of them 5e-7 times weaker: under NumPy's
    # matrix_rank bound of 40 * eps = 5e-6 and under the noise bound, above the rounding noise itself, 1e-8)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 40, generator=generator)
    errors = torch.randn(5, 30, generator=generator)
    errors[4] *= 5e-7
    grad = (inputs.t() @ errors).float()
    # Execute
    rank = numerical_rank(grad, float(torch.finfo(torch.float32).eps))
    basis = span_basis(grad, rank)
    # Assert: the weak direction is signal, not rounding noise; the strong inputs are in the span (the weak one only
    # to float32's precision over its weight), a random vector is not
    assert rank == 5 and numerical_rank(inputs.t().double() @ errors.double(), 2.2e-16) == 5
    assert float(span_distance(basis, inputs[:4]).max()) < 1e-6
    assert float(span_distance(basis, torch.randn(40, generator=generator))) > 0.5
    assert float(span_distance(basis, 3 * inputs[0])) < 1e-4  # scale-free


def test_noise_rank_reads_the_signal_above_the_noise_edge() -> None:
    # Prepare: a rank-5 40 x 300 gradient (singular values 2.3-3.5 x 1e-1... well above the edge) plus noise of
    # std 1e-3 per entry (edge 1e-3 * (sqrt(40) + sqrt(300)) = 0.024)
    generator = torch.Generator().manual_seed(0)
    signal = torch.randn(40, 5, generator=generator) @ torch.randn(5, 300, generator=generator) * 0.01
    noisy = signal + 1e-3 * torch.randn(40, 300, generator=generator)
    # Execute / Assert: the rounding-noise rank counts every direction, the noise-aware one the signal's
    assert numerical_rank(noisy.float(), float(torch.finfo(torch.float32).eps)) == 40
    assert noise_rank(noisy, 1e-3) == 5 and noise_rank(noisy, 1.0) == 0
    assert noise_edge(noisy, 1e-3) == pytest.approx(1e-3 * (40**0.5 + 300**0.5))
    values = torch.linalg.svdvals(noisy.double())
    assert wedin_bound(noisy, 1e-3, 5) == pytest.approx(noise_edge(noisy, 1e-3) / float(values[4]))
    # and the true inputs lie within that bound of the noisy span, a random vector far outside
    basis = span_basis(noisy, 5)
    inputs = torch.linalg.svd(signal.double(), full_matrices=False)[0][:, :5].t()
    assert float(span_distance(basis, inputs).max()) < wedin_bound(noisy, 1e-3, 5)
    assert float(span_distance(basis, torch.randn(40, generator=generator))) > 0.5


def test_under_recorded_noise_dager_reads_the_span_above_its_edge(tokenizer, reviews) -> None:
    # Prepare: four reviews through a random 3-layer GPT-2 of width 384, Gaussian noise of std 1e-6 on the gradient
    texts, labels = reviews[0][:4], reviews[1][:4]
    model = make_text_model("gpt2", seed=0, **GPT2)
    obs = observe_text(model, tokenizer, texts, labels, defenses=[gi.defenses.make("noise", std=1e-6)])
    # Execute
    aware = gi.attacks.make("dager").reconstruct(obs)
    plain = gi.attacks.make("dager", noise_aware=False).reconstruct(obs)
    # Assert: the published thresholds find no token in the noisy span (its rank read 120 and 123 here; under
    # DP-SGD's noise it read the full 384 and stopped: tests/fl/test_text_client.py); with the recorded noise every
    # sentence comes back token for token (the spans' ranks those of the noise-free gradient, 120 and 124), and none
    # is certified
    assert not plain.texts and plain.info["candidates"] == [] and plain.info["noise_std"] == 0.0
    assert aware.info["noise_std"] == 1e-6 and aware.info["ranks"] == [120, 124]
    assert text_score(aware, texts, tokenizer)["exact"] == 1.0 and not any(aware.certified)
    assert aware.certificate.startswith("not certified: the update passed through noise")
    assert "noise of std 1e-06 recorded" in aware.certificate
    assert 1e-4 < aware.info["thresholds"][0] < aware.info["thresholds"][1] < 0.1
    # noise far below the thresholds (std 1e-9): the sentences pass the published ones too, and still no certificate
    faint = gi.attacks.make("dager").reconstruct(
        observe_text(model, tokenizer, texts, labels, defenses=[gi.defenses.make("noise", std=1e-9)])
    )
    assert max(faint.info["distances"]) < 1e-3 and len(faint.texts) == 4 and not any(faint.certified)
    # the recorded noise: variances add; DP-SGD's is noise_multiplier * max_grad_norm / B and needs B
    dp = gi.defenses.make("dpsgd", noise_multiplier=1.0, max_grad_norm=1.6e-5)
    two = observe_text(model, tokenizer, texts, labels, defenses=[gi.defenses.make("noise", std=3e-6), dp])
    assert recorded_noise(two) == pytest.approx(((3e-6) ** 2 + (4e-6) ** 2) ** 0.5)
    hidden = observe_text(model, tokenizer, texts, labels, defenses=[dp], threat=gi.ThreatModel(knows_batch_size=False))
    with pytest.raises(ValueError, match="knows_batch_size"):
        gi.attacks.make("dager").reconstruct(hidden)
    with pytest.raises(TypeError, match="noise_aware"):
        gi.attacks.make("dager", noise_aware="yes")


def test_nothing_is_certified_behind_a_defense_that_changes_the_update(tokenizer, reviews) -> None:
    # Prepare: four reviews through the random 3-layer GPT-2, the gradient quantised to 16 bits (the spans keep their
    # ranks, 120 and 124, and one wrong sentence passes both span tests)
    texts, labels = reviews[0][:4], reviews[1][:4]
    model = make_text_model("gpt2", seed=0, **GPT2)
    obs = observe_text(model, tokenizer, texts, labels, defenses=[gi.defenses.make("quantize", bits=16)])
    # Execute: DAGER as published (reading the rounding as noise is the next test)
    rec = gi.attacks.make("dager", noise_aware=False).reconstruct(obs)
    # Assert: what passes is returned, none of it certified, and the certificate says why
    assert rec.info["ranks"] == [120, 124] and rec.texts and min(rec.info["distances"]) < 1e-3
    assert not any(rec.certified) and "passed through quantize" in rec.certificate


def test_quantisation_is_read_as_noise_of_its_step(tokenizer, reviews) -> None:
    # Prepare: the same four reviews, the gradient quantised to 14 bits: as published, DAGER reads a full span and stops
    texts, labels = reviews[0][:4], reviews[1][:4]
    model = make_text_model("gpt2", seed=0, **GPT2)
    obs = observe_text(model, tokenizer, texts, labels, defenses=[gi.defenses.make("quantize", bits=14)])
    # Execute
    published = gi.attacks.make("dager", noise_aware=False).reconstruct(obs)
    aware = gi.attacks.make("dager").reconstruct(obs)
    # Assert: the rounding error of each tensor, uniform over its step (max |g| / 8191), read as noise of std
    # step / sqrt(12), lets DAGER read the spans above it: every review exact, none certified
    name = layout(model).projections[0]
    step = float(obs.update[name].abs().max()) / (2**13 - 1)
    assert rounding_noise(obs, name) == pytest.approx(step / 12**0.5)
    # the published attack's full span is the quantisation's doing
    assert "too many tokens" in published.info["stopped"] and published.info["inconclusive"] is False
    assert text_score(aware, texts, tokenizer)["exact"] == 1.0 and not any(aware.certified)
    second = layout(model).projections[1]  # each layer's own step
    assert aware.info["rounding_std"] == [rounding_noise(obs, name), rounding_noise(obs, second)]
    assert rounding_noise(obs, name) != rounding_noise(obs, second) and "quantisation recorded" in aware.certificate


def test_under_noise_each_vector_is_allowed_its_own_error_on_the_trained_encoder(tokenizer, reviews) -> None:
    # Prepare: one review (12 tokens) through the shipped MiniLM under Gaussian noise of std 1e-7; its [CLS] input
    # lies along the span's weakest directions, whose error one threshold per layer did not allow (nothing found)
    obs = observe_text(
        make_text_model("minilm", seed=0), tokenizer, reviews[0][:1], reviews[1][:1], max_length=12,
        defenses=[gi.defenses.make("noise", std=1e-7)],
    )  # fmt: skip
    # Execute
    rec = gi.attacks.make("dager").reconstruct(obs)
    # Assert: the sentence token for token, not certified; the scan kept to the 12 positions the position-embedding
    # gradient shows used (at noise 1e-6, widened thresholds had passed candidates out to position 44)
    assert text_score(rec, reviews[0][:1], tokenizer, max_length=12)["exact"] == 1.0 and not any(rec.certified)
    assert rec.info["positions_read"] == 12 and len(rec.info["candidates"]) <= 12


def test_dager_reads_a_lora_clients_adapter_gradients(tokenizer, reviews) -> None:
    # Prepare: the random 3-layer GPT-2 with LoRA adapters on c_attn; four reviews cut at 16 tokens (64 in all)
    texts, labels = reviews[0][:4], reviews[1][:4]

    def client(rank: int, zero_b: bool):  # zero_b: PEFT's own initialisation (the adapters' first step)
        model = with_lora(make_text_model("gpt2", seed=0, **GPT2), rank, zero_b=zero_b)
        return observe_text(model, tokenizer, texts, labels, max_length=16)

    # Execute
    dager = gi.attacks.make("dager")
    rec = dager.reconstruct(client(64, False))
    first, narrow = dager.reconstruct(client(64, True)), dager.reconstruct(client(16, False))
    # Assert: dL/dA = B^T dL/dY X^T spans the layer's inputs when r exceeds the distinct inputs (57 and 60 here): every
    # sentence exact and certified; with B = 0 the gradient is zero, and at r = 16 the span read is cut at r
    assert text_score(rec, texts, tokenizer, max_length=16)["exact"] == 1.0 and all(rec.certified)
    assert rec.info["ranks"] == [57, 60]
    assert "B is zero" in first.info["stopped"] and not first.texts
    assert "adapters' rank r" in narrow.info["stopped"] and narrow.info["ranks"] == [16, 16]


def test_dager_recovers_eight_real_sentences_exactly_from_a_random_gpt2(tokenizer, reviews) -> None:
    # Prepare: a random 3-layer GPT-2 of width 384 classifying eight movie reviews
    texts, labels = reviews
    model = make_text_model("gpt2", seed=0, **GPT2)
    obs = observe_text(model, tokenizer, texts, labels)
    # Execute
    rec = gi.attacks.make("dager").reconstruct(obs)
    scores = text_score(rec, texts, tokenizer)
    # Assert: every sentence token for token, each certified, none certified wrongly
    assert scores["exact"] == 1.0 and scores["rouge1"] == scores["rouge2"] == scores["rougeL"] == 1.0
    assert len(rec.texts) == 8 and all(rec.certified) and scores["certified_wrong"] == 0
    assert rec.info["ranks"][0] < rec.info["width"] - 20
    assert max(rec.info["distances"]) < 1e-3


def test_next_token_loss_recovers_every_token_but_the_closing_one_it_appends(tokenizer, reviews) -> None:
    # Prepare: the same decoder trained for next-token prediction on four sentences
    texts = reviews[0][:4]
    model = make_text_model("gpt2", task="causal_lm", seed=0, **GPT2)
    obs = observe_text(model, tokenizer, texts, task="causal_lm")
    # Execute
    rec = gi.attacks.make("dager").reconstruct(obs)
    # Assert: the last token is only a target; the attack appends the format's [SEP] and the sentences are exact
    assert rec.info["appended"] == tokenizer.sep_token_id
    assert sorted(rec.token_ids) == sorted(references(tokenizer, texts, 64))
    # a second threshold under the client's float32 noise keeps nothing
    assert gi.attacks.make("dager", tau2=1e-9).reconstruct(obs).token_ids == []


def test_dager_on_the_shipped_trained_encoder(tokenizer, reviews) -> None:
    # Prepare: all-MiniLM-L6-v2 (trained) classifying two reviews cut at 10 tokens
    texts, labels = reviews[0][:2], reviews[1][:2]
    model = make_text_model("minilm", seed=0)
    obs = observe_text(model, tokenizer, texts, labels, max_length=10)
    # Execute: the paper's encoder search, every combination of the per-position candidates
    rec = gi.attacks.make("dager", links=False).reconstruct(obs)
    scores = text_score(rec, texts, tokenizer, max_length=10)
    # Assert
    assert scores["exact"] == 1.0 and all(rec.certified) and scores["certified_wrong"] == 0
    assert rec.info["encoder_search"] == [(10, "all combinations")]


def test_the_encoder_beam_search_recovers_what_enumeration_cannot_afford(tokenizer, reviews) -> None:
    # Prepare: four reviews cut at 12 tokens through the trained MiniLM: 4-8 candidates per position, far more
    # combinations than the enumeration is allowed here
    texts, labels = reviews[0][:4], reviews[1][:4]
    model = make_text_model("minilm", seed=0)
    obs = observe_text(model, tokenizer, texts, labels, max_length=12)
    # Execute
    rec = gi.attacks.make("dager", max_combinations=1000, per_prefix=2, links=False).reconstruct(obs)
    scores = text_score(rec, texts, tokenizer, max_length=12)
    # Assert: all four exact and certified by the whole-sentence test, found by the beam (two of the reviews start
    # with "a": that prefix needs both of its extensions, and every first word must stay)
    assert scores["exact"] == 1.0 and scores["certified_wrong"] == 0
    assert ("beam" in rec.info["encoder_search"][-1][1]) and all(rec.certified)


def test_nothing_is_certified_when_the_batch_fills_the_layer(tokenizer, reviews) -> None:
    # Prepare: eight sentences (~200 tokens) through a GPT-2 of width 64
    model = make_text_model("gpt2", seed=0, n_layer=3, n_embd=64, n_head=4)
    obs = observe_text(model, tokenizer, *reviews)
    # Execute
    rec = gi.attacks.make("dager").reconstruct(obs)
    # Assert: and the stop is the batch's, not a defense's (no result of it may be read as protection)
    assert rec.token_ids == [] and "too many tokens" in rec.info["stopped"] and rec.info["inconclusive"] is True


def test_dager_refuses_what_it_cannot_attack(tokenizer, reviews) -> None:
    # Prepare
    model = make_text_model("gpt2", seed=0, n_layer=3, n_embd=64, n_head=4)
    obs = observe_text(model, tokenizer, reviews[0][:1], reviews[1][:1])
    obs.update = {k: v for k, v in obs.update.items() if "h.1.attn" not in k}
    image_obs = gi.observe(
        gi.models.make("lenet", image_shape=(3, 16, 16)), torch.rand(1, 3, 16, 16), torch.tensor([0])
    )
    # Execute / Assert
    with pytest.raises(ValueError, match="first two attention projections"):
        gi.attacks.make("dager").reconstruct(obs)
    with pytest.raises(TypeError, match="text observations"):
        gi.attacks.make("dager").reconstruct(image_obs)
    with pytest.raises(ValueError, match="tau1"):
        gi.attacks.make("dager", tau1=0)
    assert gi.attacks.names("text") == ["tag", "lamp", "dager"] and "dager" not in gi.attacks.names()


def test_a_pruned_gradient_is_completed_where_enough_entries_survive(tokenizer, reviews) -> None:
    # Prepare: two reviews (12 tokens) through a random 3-layer GPT-2 of width 128, 30% of each tensor pruned (at
    # width 192 half of it: benchmarks/dager.py --noise)
    texts, labels = reviews[0][:2], reviews[1][:2]
    model = make_text_model("gpt2", seed=0, n_layer=3, n_embd=128, n_head=2)
    half = observe_text(model, tokenizer, texts, labels, max_length=12, defenses=[gi.defenses.make("prune", ratio=0.3)])
    most = observe_text(model, tokenizer, texts, labels, max_length=12, defenses=[gi.defenses.make("prune", ratio=0.9)])
    # Execute
    published = gi.attacks.make("dager", noise_aware=False).reconstruct(half)
    completed = gi.attacks.make("dager").reconstruct(half)
    refused = gi.attacks.make("dager").reconstruct(most)
    # Assert: as published the pruned gradient has full rank; completed, both reviews come back exactly (not
    # certified), at the clean gradient's ranks; at 0.9 too few entries survive and the attack says so
    assert "too many tokens" in published.info["stopped"]
    clean = observe_text(model, tokenizer, texts, labels, max_length=12)
    eps = float(torch.finfo(torch.float32).eps)
    lay = layout(model)
    assert [c["rank"] for c in completed.info["completion"]] == [
        numerical_rank(lay.input_space(clean.update[name]), eps) for name in lay.projections[:2]
    ]
    assert text_score(completed, texts, tokenizer, max_length=12)["exact"] == 1.0 and not any(completed.certified)
    assert not refused.texts and "pruned gradient not completed" in refused.info["stopped"]
    assert refused.info["inconclusive"] is False  # too few entries: the defense's doing, not the attack's budget


def test_noise_that_drowns_the_position_gradient_leaves_the_scan_its_own_limit(tokenizer, reviews) -> None:
    # noise of std 1 on every entry: no position-embedding row stands out, so no length is read, and nothing whole
    # comes back (the attack returns, it does not fail)
    model = make_text_model("gpt2", seed=0, **GPT2)
    obs = observe_text(model, tokenizer, reviews[0][:2], reviews[1][:2], defenses=[gi.defenses.make("noise", std=1.0)])
    rec = gi.attacks.make("dager").reconstruct(obs)
    assert "positions_read" not in rec.info and text_score(rec, reviews[0][:2], tokenizer)["exact"] == 0.0

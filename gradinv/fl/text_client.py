"""A text client: fine-tunes a Hugging Face transformer on its private sentences and shares one gradient (plain, or
DP-SGD's: per-sentence clipping and Gaussian noise)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gradinv.defenses.base import Defense
from gradinv.defenses.dpsgd import DPSGD, dp_sum, noise_seed
from gradinv.observation import ThreatModel
from gradinv.text.models import tokenize
from gradinv.text.observation import TASKS, TextObservation
from gradinv.validation import check_device


def text_loss(model: nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor | None, task: str) -> torch.Tensor:
    """The client's loss: the classifier's cross-entropy on ``labels``, or the next-token cross-entropy over the real
    positions (padding is labelled -100, so it enters no term)."""
    if task == "classification":
        return model(**batch, labels=labels).loss
    targets = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return model(**batch, labels=targets).loss


def check_text_client(threat: ThreatModel, defenses: Sequence[Defense]) -> None:
    """What a simulated text client supports: one shared gradient, no image augmentation, gradient defenses (their
    ``apply``) and at most one ``dpsgd`` (without Opacus' secure-mode noise).

    Raises:
        ValueError: a FedAvg threat, image augmentation, two ``dpsgd`` defenses or ``secure_rng``.
        TypeError: a defense that changes the client's model, data or training (other than ``dpsgd``).
    """
    if threat.update != "gradient":
        raise ValueError("text clients share one gradient here: ThreatModel(update='gradient')")
    if threat.augmentation != "none":
        raise ValueError(f"augmentation={threat.augmentation!r} flips and crops images; a text client has none")
    private = [defense for defense in defenses if isinstance(defense, DPSGD)]
    for defense in defenses:
        kind = type(defense)
        changes = ("client_update", "encode", "prepare_model")
        if not isinstance(defense, DPSGD) and any(getattr(kind, m) is not getattr(Defense, m) for m in changes):
            raise TypeError(
                f"defense {defense.name!r} changes the client's model, data or training; text clients take "
                "gradient defenses (noise, prune, topk, quantize, sign) and dpsgd"
            )
    if len(private) > 1:
        raise ValueError(f"{len(private)} dpsgd defenses: a client trains with one")
    if private and private[0].secure_rng:
        raise ValueError("dpsgd's secure_rng (Opacus' secure-mode noise) is not simulated for text clients")


def observe_text(
    model: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    labels: Sequence[int] | torch.Tensor | None = None,
    *,
    task: str = "classification",
    threat: ThreatModel | None = None,
    max_length: int = 64,
    defenses: Sequence[Defense] = (),
    seed: int = 0,
    device: str | torch.device | None = None,
) -> TextObservation:
    """Simulate a text client sharing the gradient of one batch of sentences, and return all the attacker sees.

    The model runs in eval mode (no dropout) and every parameter that requires a gradient is trained (freeze the
    rest, or wrap the model with PEFT's LoRA, to share only adapters).

    Args:
        model: a Hugging Face sequence classifier or causal LM (not modified).
        tokenizer: its tokenizer (public: the server defines the input format).
        texts: the client's private sentences.
        labels: one integer class per sentence (``classification``); ignored for ``causal_lm``.
        task: one of :data:`gradinv.text.TASKS`.
        threat: only a shared gradient (``update="gradient"``) is simulated for text.
        max_length: tokens kept per sentence.
        defenses: gradient defenses (their ``apply``: noise, pruning, ...) in order, and at most one ``dpsgd``: the
            client then trains with DP-SGD (Abadi et al. 2016, Algorithm 1): each sentence's own gradient (of its
            own loss: its cross-entropy, or its tokens' mean next-token loss) is clipped to ``max_grad_norm``, the
            clipped ones are summed, Gaussian noise of std ``noise_multiplier * max_grad_norm`` is added and the sum
            divided by the batch size (:func:`~gradinv.defenses.dpsgd.dp_sum`; a sentence at a time, so any
            architecture works, GPT-2's ``Conv1D`` included); the other defenses then act on that update.
        seed: seeds the defenses' randomness (DP-SGD's noise from its own stream, as for images).
        device: where the client computes its gradient; the observation comes back on the CPU.

    Raises:
        ValueError: an unknown task, missing or misaligned labels, no sentences, a FedAvg threat, or image
            augmentation.
        TypeError: texts that are not strings, or a defense that changes the client's training or data (other than
            ``dpsgd``).
    """
    chosen = check_device(device)
    threat = threat or ThreatModel()
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    check_text_client(threat, defenses)
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise TypeError("texts must be a non-empty list of non-empty strings")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    target = None
    if task == "classification":
        if labels is None:
            raise ValueError("a classification client needs one label per sentence")
        target = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if target.numel() != len(texts):
            raise ValueError(f"{target.numel()} labels for {len(texts)} sentences")
    private = [defense for defense in defenses if isinstance(defense, DPSGD)]
    batch = tokenize(tokenizer, texts, max_length)
    model.eval()
    original = next(model.parameters()).device
    model.to(chosen)
    generator = torch.Generator().manual_seed(seed)
    try:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        on = {k: v.to(chosen) for k, v in batch.items()}
        y = None if target is None else target.to(chosen)
        if private:  # DP-SGD: each sentence's gradient on its own (its padded row: padding enters no term)
            dp = private[0]
            per_sample = [
                torch.autograd.grad(
                    text_loss(
                        model, {k: v[i : i + 1] for k, v in on.items()}, None if y is None else y[i : i + 1], task
                    ),
                    params,
                )
                for i in range(len(texts))
            ]
            noise = torch.Generator(device=chosen).manual_seed(noise_seed(generator))
            grads = dp_sum(
                per_sample, noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm, generator=noise
            )
            dp.release_steps = 1
        else:
            grads = list(torch.autograd.grad(text_loss(model, on, y, task), params))
    finally:
        model.to(original)
    update = {n: g.detach().cpu() for (n, _), g in zip(named, grads, strict=True)}
    for defense in defenses:
        update = defense.apply(update, generator=generator)
    return TextObservation(
        model=model,
        update=update,
        threat=threat,
        tokenizer=tokenizer,
        task=task,
        labels=target if threat.knows_labels and target is not None else None,
        batch_size=len(texts) if threat.knows_batch_size else None,
        defenses=[defense.config() for defense in defenses],
    )

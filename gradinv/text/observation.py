"""What the attacker of a text client sees (:class:`TextObservation`) and what a text attack returns
(:class:`TextReconstruction`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradinv.observation import ThreatModel

TASKS = ("classification", "causal_lm")
"""``classification``: cross-entropy of a sequence classifier on the sentence labels; ``causal_lm``: next-token
cross-entropy over every real (unpadded) position."""


@dataclass
class TextObservation:
    """All the attacker of a text client sees: the broadcast transformer, the shared gradient, the threat model,
    the public tokenizer (the server defines the input format), and the side information the threat grants.

    Attributes:
        model: the model at the broadcast weights (eval mode: no dropout).
        update: the shared gradient by parameter name, for the parameters the client trains (all of them, or the
            LoRA adapters).
        threat: the threat model (a shared gradient of one batch).
        tokenizer: the Hugging Face tokenizer the client uses (right padding).
        task: one of :data:`TASKS`.
        labels: ``(N,)`` int64 sentence labels, only if ``threat.knows_labels`` (classification).
        batch_size: ``N`` sentences, only if ``threat.knows_batch_size``.
        defenses: the configuration of each defense the client applied, in order.
    """

    model: nn.Module
    update: dict[str, torch.Tensor]
    threat: ThreatModel
    tokenizer: Any
    task: str
    labels: torch.Tensor | None = None
    batch_size: int | None = None
    defenses: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.threat, ThreatModel):
            raise TypeError(f"threat must be a gi.ThreatModel, got {type(self.threat).__name__}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        params = dict(self.model.named_parameters())
        for name, grad in self.update.items():
            if name not in params or not isinstance(grad, torch.Tensor) or grad.shape != params[name].shape:
                raise ValueError(f"update entry {name!r} does not match a model parameter of the same shape")
        if self.labels is not None and not self.threat.knows_labels:
            raise ValueError("the threat model withholds labels, yet the observation carries them")
        if self.batch_size is not None and not self.threat.knows_batch_size:
            raise ValueError("the threat model withholds the batch size, yet the observation carries it")


@dataclass
class TextReconstruction:
    """What a text attack returns.

    Attributes:
        token_ids: one list of token ids per recovered sentence (special tokens included, padding removed).
        texts: the recovered sentences decoded by the observation's tokenizer (special tokens dropped).
        seconds: wall time of the attack.
        certified: one bool per recovered sentence: True only where the attack's own condition shows the sentence is
            one the client held (see ``certificate``).
        certificate: the evidence behind ``certified``, in words.
        attack: the attack's registry name.
        config: the attack's hyperparameters.
        info: extra attack-specific results.
    """

    token_ids: list[list[int]]
    texts: list[str]
    seconds: float
    certified: list[bool] = field(default_factory=list)
    certificate: str = ""
    attack: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.token_ids):
            raise ValueError(f"{len(self.texts)} texts for {len(self.token_ids)} token sequences")
        if not self.certified:
            self.certified = [False] * len(self.token_ids)
        if len(self.certified) != len(self.token_ids):
            raise ValueError(f"certified has {len(self.certified)} entries for {len(self.token_ids)} sentences")

"""What the continuous text attacks (TAG, LAMP) share: the dummy sentences as word embeddings fed to the client's
classifier, their gradient against the shared one, the special tokens fixed by the public input format, and the
projection of embeddings onto vocabulary tokens.

Both papers optimise the word embeddings a transformer reads (``inputs_embeds``; the model adds its position and
token-type embeddings), so the word-embedding matrix's own gradient is neither produced by the dummy nor matched (it
would reveal the batch's token set outright; LAMP's ``use_embedding`` is off in every published run, and we follow
it). The sentence length is read off the position-embedding gradient (:func:`read_length`); LAMP's published runs
were told the true lengths instead.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradinv.attacks.labels.idlg import idlg_label, idlg_source
from gradinv.text.models import input_format, layout
from gradinv.text.observation import TextObservation, TextReconstruction
from gradinv.validation import check_device

Distance = Callable[[list[torch.Tensor], list[torch.Tensor]], torch.Tensor]
"""A gradient distance: (dummy gradients, shared gradients) -> a scalar."""


def read_length(position_grad: torch.Tensor) -> int:
    """The padded sentence length the batch used: one past the last row of the position-embedding gradient whose norm
    exceeds three times the median row norm (rows of unused positions are zero, or noise under a noise defense; the
    median is theirs while the batch uses fewer than half of the model's positions)."""
    norms = position_grad.detach().double().norm(dim=1)
    used = (norms > 3 * norms.median()).nonzero()
    if used.numel() == 0:
        raise ValueError("the position-embedding gradient is zero: no sentence length can be read")
    return int(used.max()) + 1


def special_ids(tokenizer: Any) -> tuple[int | None, int | None, int | None]:
    """The opening, closing and padding token ids of the tokenizer's input format (``None`` where it has none)."""
    opening, closing = input_format(tokenizer)
    return opening, closing, tokenizer.pad_token_id


def banned_tokens(tokenizer: Any) -> torch.Tensor:
    """``(V,)`` bool: the tokens a projection never picks (special tokens and BERT's ``[unused*]`` slots; LAMP's
    ``unused_tokens``)."""
    banned = torch.zeros(len(tokenizer), dtype=torch.bool)
    banned[list(tokenizer.all_special_ids)] = True
    for token, index in tokenizer.get_vocab().items():
        if re.fullmatch(r"\[unused\d+\]", token):
            banned[index] = True
    return banned


def nearest_tokens(x: torch.Tensor, embeddings: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
    """``(N, L)`` the vocabulary token of largest cosine similarity to each embedding ``(N, L, d)`` (LAMP's
    ``get_closest_tokens``, cosine metric)."""
    cos = F.normalize(x.detach(), dim=-1) @ F.normalize(embeddings, dim=-1).t()
    return cos.masked_fill(banned.to(cos.device), -2.0).argmax(dim=-1)


@dataclass
class Problem:
    """A text gradient-matching problem built from a :class:`TextObservation`.

    Attributes:
        model: the client's classifier on the attack's device (eval mode).
        names: the matched parameters (the shared ones, less the word embeddings).
        params: those parameters, in order.
        target: their shared gradients, on the device.
        embeddings: ``(V, d)`` the word-embedding matrix (detached).
        banned: ``(V,)`` tokens never picked.
        opening, closing: the special tokens every sentence starts and ends with (``None``: none).
        batch: ``N`` sentences.
        length: ``L`` tokens per sentence (padding unknown: every dummy has ``L``).
        labels: ``(N,)`` labels given by the threat or recovered (:func:`head_labels`), or ``None`` (then
            optimised as soft labels).
        num_labels: the classifier's classes.
        label_source: ``given``, ``recovered (iDLG)`` or ``optimised``.
    """

    model: nn.Module
    names: list[str]
    params: list[nn.Parameter]
    target: list[torch.Tensor]
    embeddings: torch.Tensor
    banned: torch.Tensor
    opening: int | None
    closing: int | None
    batch: int
    length: int
    labels: torch.Tensor | None
    num_labels: int
    label_source: str = "given"

    @property
    def device(self) -> torch.device:
        return self.embeddings.device

    def gradients(self, x: torch.Tensor, labels: torch.Tensor, *, create_graph: bool) -> list[torch.Tensor]:
        """The matched parameters' gradients of the client's loss on dummy embeddings ``x`` ``(N, L, d)`` with
        ``labels``: ``(N,)`` classes or ``(N, K)`` probabilities (cross-entropy, mean over the batch, as the
        client's classifier computes it)."""
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
        logits = self.model(inputs_embeds=x, attention_mask=mask).logits
        loss = F.cross_entropy(logits, labels)
        return list(torch.autograd.grad(loss, self.params, create_graph=create_graph))

    def fix_special(self, x: torch.Tensor) -> None:
        """Set the first and last positions to the opening and closing tokens' embeddings, in place (LAMP's
        ``fix_special_tokens``)."""
        with torch.no_grad():
            if self.opening is not None:
                x[:, 0] = self.embeddings[self.opening]
            if self.closing is not None:
                x[:, -1] = self.embeddings[self.closing]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` token ids of the embeddings, the special positions kept as the input format's."""
        ids = nearest_tokens(x, self.embeddings, self.banned)
        if self.opening is not None:
            ids[:, 0] = self.opening
        if self.closing is not None:
            ids[:, -1] = self.closing
        return ids


def build_problem(
    observation: TextObservation, device: str | torch.device | None, length: int | None = None
) -> Problem:
    """The :class:`Problem` of a classification observation, its model copied to ``device`` if it lives elsewhere.
    ``length``: the padded sentence length, tokens included, when the attacker is told it (LAMP's own runs were);
    ``None`` reads it off the position-embedding gradient, which a LoRA client does not share.

    Raises:
        TypeError: not a :class:`TextObservation`, or a model gradinv cannot read.
        ValueError: a next-token (``causal_lm``) observation, no batch size, or neither ``length`` nor a
            position-embedding gradient.
    """
    if not isinstance(observation, TextObservation):
        raise TypeError(f"expected a gi.text.TextObservation, got {type(observation).__name__}")
    if observation.task != "classification":
        raise ValueError(
            "TAG and LAMP attack sequence classifiers (their papers' setting); a next-token client's targets are "
            "its own unknown tokens — use dager"
        )
    if observation.batch_size is None:
        raise ValueError("the threat model withholds the batch size, which this attack needs")
    chosen = check_device(device)
    # a copy: the attack switches attention to the eager kernels (PyTorch's fused attention has no second
    # derivative, which gradient matching needs) and must not touch the caller's model
    model: Any = copy.deepcopy(observation.model).to(chosen).eval()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    lay = layout(model)
    named = dict(model.named_parameters())
    ids_of = {id(p): n for n, p in named.items()}
    word = ids_of[id(model.get_input_embeddings().weight)]
    position_name = lay.positions
    if length is None and position_name not in observation.update:
        raise ValueError(
            f"the update lacks the position-embedding gradient {position_name!r}, which gives the length (a LoRA "
            "client shares only its adapters): pass length="
        )
    names = [n for n in observation.update if n != word]
    if not names:
        raise ValueError("the update holds no gradient this attack can match")
    embeddings = named[word].detach()
    opening, closing, _pad = special_ids(observation.tokenizer)
    labels, source = observation.labels, "given"
    if labels is None:
        labels, source = head_labels(observation.update, int(model.config.num_labels), observation.batch_size)
    return Problem(
        model=model,
        names=names,
        params=[named[n] for n in names],
        target=[observation.update[n].to(chosen) for n in names],
        embeddings=embeddings,
        banned=banned_tokens(observation.tokenizer).to(chosen),
        opening=opening,
        closing=closing,
        batch=observation.batch_size,
        length=read_length(observation.update[position_name]) if length is None else length,
        labels=None if labels is None else labels.to(chosen),
        num_labels=int(model.config.num_labels),
        label_source=source,
    )


def head_labels(update: dict[str, torch.Tensor], num_labels: int, batch: int) -> tuple[torch.Tensor | None, str]:
    """A single sentence's label from the classifier head's bias gradient (:func:`~gradinv.attacks.labels.idlg.
    idlg_label`: under cross-entropy ``dL/db_k = p_k - y_k``, negative at the true class only): ``(labels,
    "recovered (iDLG)")``, or the rule's own words where a defense left other than one negative class and the label
    is a guess (:func:`~gradinv.attacks.labels.idlg.idlg_source`); for a batch, or a head without bias (the weight's
    row sums would need non-negative features), ``(None, "optimised")`` (soft labels optimised beside the
    embeddings)."""
    heads = [n for n, g in update.items() if n.endswith(".bias") and g.shape == (num_labels,)]
    weight = heads[-1][: -len("bias")] + "weight" if heads else None
    if batch != 1 or weight not in update:
        return None, "optimised"
    source = idlg_source(update[weight], update[heads[-1]])
    return idlg_label(update[weight], update[heads[-1]]), "recovered (iDLG)" if source == "idlg" else source


def check_length(length: int | None) -> None:
    """``length`` is ``None`` or an integer >= 2 (a sentence with its opening and closing tokens)."""
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 2):
        raise ValueError(f"length must be None or an integer >= 2 (special tokens included), got {length!r}")


def text_result(
    observation: TextObservation, ids: torch.Tensor, seconds: float, attack: Any, info: dict[str, Any]
) -> TextReconstruction:
    """The :class:`TextReconstruction` of projected ids (nothing certified: an optimisation proves nothing)."""
    sentences = [row.tolist() for row in ids.cpu()]
    return TextReconstruction(
        token_ids=sentences,
        texts=[observation.tokenizer.decode(s, skip_special_tokens=True) for s in sentences],
        seconds=seconds,
        certificate="none: an optimisation attack certifies nothing",
        attack=attack.name,
        config=attack.config(),
        info=info,
    )


Discrete = Callable[[torch.Tensor, torch.Tensor, int], None]
"""A discrete step run between gradient steps: (embeddings ``(N, L, d)`` to change in place, current labels, step)."""


def optimise(
    problem: Problem,
    x: torch.Tensor,
    distance: Distance,
    *,
    steps: int,
    lr: float,
    lr_decay: float,
    coeff_reg: float,
    init_size: float,
    discrete: Discrete | None = None,
    callback: Callable[[int, int, float], None] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Adam on the dummy embeddings ``x`` (and on soft labels where none are known), as both papers run it: the
    learning rate decays by ``lr_decay`` every 50 steps, the loss is ``distance + coeff_reg * (mean token norm -
    init_size)^2``, the special positions are reset after every step, ``discrete`` runs after that, and the
    embeddings of the lowest loss seen are returned with the labels and the loss trace."""
    x = x.detach().clone().requires_grad_(True)
    problem.fix_special(x)
    variables: list[torch.Tensor] = [x]
    label_logits = None
    if problem.labels is None:
        generator = torch.Generator().manual_seed(seed + 1)
        label_logits = torch.randn(problem.batch, problem.num_labels, generator=generator).to(problem.device)
        label_logits.requires_grad_(True)
        variables.append(label_logits)
    optimiser = torch.optim.Adam(variables, lr=lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=50, gamma=lr_decay)

    def labels() -> torch.Tensor:
        if label_logits is None:
            assert problem.labels is not None
            return problem.labels
        return label_logits.softmax(dim=-1)

    best, best_loss, trace = x.detach().clone(), float("inf"), []
    for step in range(steps):
        optimiser.zero_grad()
        loss = distance(problem.gradients(x, labels(), create_graph=True), problem.target)
        if coeff_reg:
            loss = loss + coeff_reg * (x.norm(dim=-1).mean() - init_size).square()
        value = float(loss.detach())
        if value < best_loss:
            best_loss, best = value, x.detach().clone()
        loss.backward()
        optimiser.step()
        schedule.step()
        problem.fix_special(x)
        if discrete is not None:
            discrete(x, labels().detach(), step)
        trace.append(value)
        if callback is not None:
            callback(step + 1, steps, value)
    return best, labels().detach(), trace

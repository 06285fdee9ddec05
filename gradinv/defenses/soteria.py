"""Soteria (Sun, Li, Wang, Wang, Chen & Chen, "Soteria: Provable Defense against Privacy Leakage in Federated
Learning from Representation Perspective", CVPR 2021)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from gradinv.defenses.base import Defense
from gradinv.models import classifier, layer_input
from gradinv.observation import ThreatModel
from gradinv.update import compute_update
from gradinv.validation import check_arguments


def representation_sensitivity(model: nn.Module, layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``sum_n ||d r_{n,f} / d x_n|| / r_{n,f}`` for every feature ``f`` of the representation ``r`` feeding ``layer``.

    One batched backward pass (a cotangent per feature) replaces the paper code's loop over features.
    """
    x = inputs.detach().clone().requires_grad_(True)
    _, r = layer_input(model, layer, x)  # (N, F)
    features = r.shape[1]
    cotangents = torch.eye(features, dtype=r.dtype, device=r.device)[:, None, :].expand(features, r.shape[0], features)
    (jac,) = torch.autograd.grad(r, x, grad_outputs=cotangents, is_grads_batched=True)  # (F, N, C, H, W)
    norms = jac.flatten(2).norm(dim=2)  # (F, N)
    return (norms / (r.detach().T + 1e-10)).sum(dim=1)


class Soteria(Defense):
    """Soteria (Sun et al., CVPR 2021, Sec. 4, Eq. 9 and their code): perturb the representation's gradient.

    For each feature ``f`` of the representation ``r`` that feeds the classifier, the client measures how strongly
    the input drives it, ``||dr_f/dX|| / r_f``; the ``pruning_rate`` percent of features with the smallest values
    have their columns of the classifier's weight gradient set to zero before sharing (the paper's closed-form
    approximation of its optimisation problem). The paper reports that 80% pruning stops DLG and Inverting
    Gradients at little accuracy cost; it protects only the classifier's gradient (attacks that drop that layer, or
    exact attacks on earlier layers, are not stopped).

    Args:
        pruning_rate: percentage of representation features masked, in [0, 100).
    """

    name = "soteria"

    def __init__(self, *, pruning_rate: float = 80.0) -> None:
        check_arguments(self, locals())
        if not 0 <= pruning_rate < 100:
            raise ValueError(f"pruning_rate is a percentage in [0, 100), got {pruning_rate}")
        self.pruning_rate = pruning_rate

    def client_update(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        threat: ThreatModel,
        generator: torch.Generator,
    ) -> list[torch.Tensor]:
        """The client's update with the classifier's weight-gradient columns of the least sensitive features zeroed."""
        weight_name, _ = classifier(model)
        probe = copy.deepcopy(model)  # the sensitivity pass must not move the client's BN buffers
        layer = probe.get_submodule(weight_name.rpartition(".")[0])
        score = representation_sensitivity(probe, layer, inputs)
        threshold = torch.quantile(score.abs().double(), self.pruning_rate / 100).to(score.dtype)
        mask = (score.abs() >= threshold).to(inputs.dtype)
        update = compute_update(model, inputs, labels, threat)
        names = [n for n, _ in model.named_parameters()]
        index = names.index(weight_name)
        update[index] = update[index] * mask[None, :]
        return update

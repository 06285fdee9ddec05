"""The bias trick: exact inputs from a fully connected first layer (Phong et al., IEEE TIFS 2018, Sec. 3;
stated in general as Geiping et al., NeurIPS 2020, Prop. 3.1)."""

from __future__ import annotations

import torch

from gradinv.attacks import labels as label_recovery
from gradinv.attacks.base import Attack, Callback, Result
from gradinv.attacks.exact import assign_labels, check_single_step, first_linear, group_identical, row_candidates
from gradinv.fl.client import denormalize
from gradinv.observation import Observation


class BiasTrick(Attack):
    """Read the client's inputs off the first linear layer's gradient: ``x = (dL/dW_i) / (dL/db_i)``.

    For one sample every row with ``dL/db_i != 0`` gives the input exactly. For a batch, row ``i`` gives
    ``sum_n delta_{n,i} x_n / sum_n delta_{n,i}``: exact when one sample alone drives the row (after a ReLU, rows
    that only one sample activates). Rows that agree with each other to ``tol`` are driven by the same single sample,
    so a group of two or more agreeing rows is reported exact (``info["exact"]``); the rest are mixtures. Labels come
    from the classifier's gradient once every input is known (exact per image), else from label recovery.

    Args:
        tol: relative L2 agreement under which two rows count as the same sample.
        label_strategy: label recovery used when the batch is not recovered whole.
        batch_size: the batch size to assume when the threat model withholds it (default: the number of exact
            groups found).
    """

    name = "bias_trick"
    exact = True
    requires = frozenset()

    def __init__(self, *, tol: float = 1e-4, label_strategy: str = "auto", batch_size: int | None = None) -> None:
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if label_strategy not in label_recovery.names():
            raise ValueError(f"unknown label_strategy {label_strategy!r}; available: {label_recovery.names()}")
        self.tol, self.label_strategy, self.batch_size = tol, label_strategy, batch_size

    def run(self, observation: Observation, callback: Callback | None) -> Result:
        check_single_step(observation, self.name)
        name, _ = first_linear(observation.model, observation.image_shape)
        weight, bias = observation.update[f"{name}.weight"], observation.update[f"{name}.bias"]
        candidates, rows = row_candidates(weight, bias)
        if candidates.shape[0] == 0:
            raise ValueError("the first layer's bias gradient is zero: no row carries an input")
        weights = bias.abs()[rows]
        groups = sorted(group_identical(candidates, tol=self.tol), key=len, reverse=True)
        means = torch.stack([(candidates[g] * weights[g, None]).sum(0) / weights[g].sum() for g in groups])
        # a sample whose rows are nearly, not exactly, alone can split into close groups: keep the largest of each
        distinct = [cluster[0] for cluster in group_identical(means, tol=100 * self.tol)]
        groups, means = [groups[i] for i in distinct], means[distinct]
        certain = [g for g in groups if len(g) >= 2]
        n = observation.batch_size or self.batch_size or max(len(certain), 1)
        chosen, inputs = groups[:n], means[:n].reshape(-1, *observation.image_shape)
        exact = [len(g) >= 2 or n == 1 for g in chosen]
        found = assign_labels(observation, inputs) if all(exact) and len(chosen) == n else None
        labels = found if found is not None else label_recovery.recover(self.label_strategy, observation, len(chosen))
        if callback is not None:
            callback(1, 1, 0.0)
        info = {
            "exact": exact,
            "rows_used": [len(g) for g in chosen],
            "label_source": "classifier gradient" if found is not None else self.label_strategy,
        }
        return Result(denormalize(inputs, observation.threat.normalization), labels, [], info)

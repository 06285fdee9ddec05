"""iDLG: Improved Deep Leakage from Gradients (Zhao, Mopuri & Bilen, arXiv 2001.02610, 2020)."""

from __future__ import annotations

import torch

from gradinv.attacks.dlg import DLG
from gradinv.attacks.labels import recover_with_source
from gradinv.observation import Observation


class IDLG(DLG):
    """iDLG (Zhao et al. 2020, Sec. 3): read the label of the single sample from the sign of the last layer's
    gradient (exact, see :func:`gradinv.attacks.labels.idlg_label`), then run DLG's L-BFGS gradient matching on the
    dummy image alone with that label fixed (the paper's code: L-BFGS, lr 1, 300 iterations).

    Defined for batch size 1: a larger batch raises ``ValueError``. Arguments as :class:`~gradinv.attacks.dlg.DLG`.
    """

    name = "idlg"
    # the SoK's grade (Carletti et al. 2025, attack table): Zhao et al. 2020: A
    sok = "A"
    max_batch = 1

    def fixed_labels(self, observation: Observation, n: int) -> tuple[torch.Tensor | None, str]:
        if n != 1:
            raise ValueError(f"iDLG reconstructs a single sample, the batch size is {n}; use 'inverting_gradients'")
        if observation.labels is not None:
            return observation.labels, "threat model"
        return recover_with_source("idlg", observation, 1)

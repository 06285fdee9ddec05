"""Shared fixtures: real bundled images, small models, seeded torch."""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# one thread per worker when pytest-xdist splits the suite over the cores (the README's test command), else two
# The README's test command splits the suite over two workers (pytest-xdist), one thread each; alone, two threads
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def photo() -> tuple[torch.Tensor, torch.Tensor]:
    """One real 32x32 RGB photograph from scikit-image (the cat) and its label."""
    import gradinv as gi

    return gi.data.load("skimage", indices=[1], size=32)  # chelsea, the cat


class LenetCat:
    """The DLG LeNet (seed 0) observing the cat's gradient (labels withheld), and DLG's and iDLG's 100-step
    reconstructions of it, each computed once per session (the attack tests and the defense tests share them)."""

    def __init__(self, photo: tuple[torch.Tensor, torch.Tensor]) -> None:
        import gradinv as gi

        self.images, self.labels = photo
        self.model = gi.models.make("lenet", seed=0)
        self.observation = gi.observe(self.model, self.images, self.labels, threat=gi.ThreatModel(knows_labels=False))

    @functools.cached_property
    def dlg(self) -> Any:
        import gradinv as gi

        return gi.attacks.make("dlg", steps=100, seed=0).reconstruct(self.observation)

    @functools.cached_property
    def idlg(self) -> Any:
        import gradinv as gi

        return gi.attacks.make("idlg", steps=100, seed=0).reconstruct(self.observation)


@pytest.fixture(scope="session")
def lenet_cat(photo: tuple[torch.Tensor, torch.Tensor]) -> LenetCat:
    """See :class:`LenetCat`."""
    return LenetCat(photo)


class Trained:
    """Networks trained for a few epochs on 3000 MNIST digits (16x16, grey), where the papers' claims live:
    DLG's sigmoid LeNet (5 epochs, about 0.87 test accuracy) and a width-8 ConvNet with BatchNorm (2 epochs, about
    0.92); 40 held-out digits to attack. Trained once per session."""

    def __init__(self) -> None:
        import gradinv as gi

        # trained under two threads in every mode: a float sum's order depends on the thread count, and the
        # checkpoint (the tests' measured numbers) with it
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            self._train(gi)
        finally:
            torch.set_num_threads(threads)
        self.images, self.labels = gi.data.load("mnist_subset", n=40, size=16, channels=1, seed=777)

    def _train(self, gi: Any) -> None:
        common = {"epochs": 5, "n": 3000, "size": 16, "channels": 1, "lr": 0.05}
        self.lenet = gi.evaluate.utility(
            lambda: gi.models.make("lenet", seed=0, image_shape=(1, 16, 16)), "mnist_subset", [], **common
        )
        common["epochs"] = 2
        self.convnet = gi.evaluate.utility(
            lambda: gi.models.make("convnet", width=8, seed=0, image_shape=(1, 16, 16)), "mnist_subset", [], **common
        )


@pytest.fixture(scope="session")
def trained() -> Trained:
    """See :class:`Trained`."""
    return Trained()


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The WordPiece tokenizer shipped with all-MiniLM-L6-v2 (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from gradinv.text import shipped_tokenizer

    return shipped_tokenizer()


@pytest.fixture(scope="session")
def reviews() -> tuple[list[str], list[int]]:
    """Eight real movie-review sentences (Pang & Lee's sentence polarity) and their labels."""
    from gradinv.text import sentences

    return sentences(n=8, seed=0)


@pytest.fixture(scope="session")
def minilm2() -> Any:
    """The shipped trained MiniLM cut to its first two layers (trained embeddings and attention, a third of the
    cost) with a seeded two-class head: a cheap trained client for the optimisation attacks on text."""
    from gradinv.text import make_text_model

    model = make_text_model("minilm", seed=0)
    model.bert.encoder.layer = model.bert.encoder.layer[:2]
    model.config.num_hidden_layers = 2
    return model

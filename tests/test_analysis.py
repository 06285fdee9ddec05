import pytest
import torch
from torch import nn

import gradinv as gi


def test_applicability_matches_what_the_attacks_do() -> None:
    # Prepare
    mlp = gi.models.make("mlp", hidden=(64,), seed=0)
    lenet = gi.models.make("lenet", seed=0)
    # Execute
    on_mlp = {a.attack: a for a in gi.analysis.applicable_attacks(mlp, (3, 32, 32), 1)}
    on_lenet = {a.attack: a for a in gi.analysis.applicable_attacks(lenet, (3, 32, 32), 4)}
    # Assert: the verdicts agree with running the attacks
    assert on_mlp["bias_trick"].applies and on_mlp["bias_trick"].exact and on_mlp["idlg"].applies
    assert not on_lenet["bias_trick"].applies and "not nn.Linear" in on_lenet["bias_trick"].reason
    assert on_mlp["trap_weights"].applies and not on_lenet["trap_weights"].applies and on_lenet["imprint"].applies
    assert not on_lenet["idlg"].applies and "batch size 4" in on_lenet["idlg"].reason
    images, labels = gi.data.load("skimage", n=4, size=32, seed=0)
    with pytest.raises(ValueError, match="not nn.Linear"):
        gi.attacks.make("bias_trick").reconstruct(gi.observe(lenet, images, labels))
    with pytest.raises(ValueError, match="batch_size"):
        gi.analysis.applicable_attacks(mlp, (3, 32, 32), 0)


def test_applicability_of_spear_and_rgap() -> None:
    mlp = gi.models.make("mlp", hidden=(64,), seed=0)
    cnn6 = gi.models.make("cnn6", image_shape=(3, 16, 16), seed=0)
    narrow = gi.models.make("cnn6", image_shape=(3, 16, 16), seed=0, channels=(3, 9, 9, 9, 16, 32))
    verdict = {
        key: {a.attack: a for a in gi.analysis.applicable_attacks(model, shape, batch)}
        for key, model, shape, batch in [
            ("mlp8", mlp, (3, 32, 32), 8),
            ("mlp64", mlp, (3, 32, 32), 64),
            ("cnn6", cnn6, (3, 16, 16), 1),
            ("narrow", narrow, (3, 16, 16), 1),
            ("cnn6x2", cnn6, (3, 16, 16), 2),
        ]
    }
    assert verdict["mlp8"]["spear"].exact and not verdict["mlp64"]["spear"].applies
    assert not verdict["cnn6"]["spear"].applies and "not nn.Linear" in verdict["cnn6"]["spear"].reason
    assert verdict["cnn6"]["rgap"].exact and "rank-sufficient" in verdict["cnn6"]["rgap"].reason
    assert verdict["narrow"]["rgap"].applies and not verdict["narrow"]["rgap"].exact
    assert "rank-deficient" in verdict["narrow"]["rgap"].reason and "< 768" in verdict["narrow"]["rgap"].reason
    assert not verdict["cnn6x2"]["rgap"].applies and "one sample" in verdict["cnn6x2"]["rgap"].reason


class _Functional(nn.Module):
    """A user's model applying its activation functionally, as much user code does."""

    def __init__(self, activation: str) -> None:
        super().__init__()
        self.fc1, self.fc2, self.activation = nn.Linear(3 * 8 * 8, 32), nn.Linear(32, 4), activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc1(x.flatten(1))
        return self.fc2(hidden.relu() if self.activation == "relu" else torch.sigmoid(hidden))


def test_spear_applicability_sees_functional_activations() -> None:
    spear = {a.attack: a for a in gi.analysis.applicable_attacks(_Functional("relu"), (3, 8, 8), 2)}["spear"]
    assert spear.applies and spear.exact
    spear = {a.attack: a for a in gi.analysis.applicable_attacks(_Functional("sigmoid"), (3, 8, 8), 2)}["spear"]
    assert not spear.applies and "followed by sigmoid" in spear.reason

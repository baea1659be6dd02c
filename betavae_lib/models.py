"""VAE models: an MLP (Kingma & Welling 2014) and the convolutional net of Burgess et
al. (2018).

Every model maps images (B, C, H, W) in [0, 1] to a diagonal Gaussian posterior
``(mu, logvar)``, each (B, D), and latents z (B, D) to decoder logits (B, C, H, W).
``torch.sigmoid(logits)`` is the mean image for every likelihood. ``model.config`` holds
the constructor arguments, so a checkpoint can rebuild the model.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn

from ._common import check_pixel_range, model_device, positive_int


class VAEOutput(NamedTuple):
    """What ``forward`` returns: decoder logits (B, C, H, W), posterior mu and logvar
    (B, D), and z (B, D)."""

    logits: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample of q(z|x) that gradients flow
    through."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class VAE(nn.Module):
    """Shared behaviour: ``forward``, ``sample``, ``reconstruct`` and input checks;
    subclasses give the nets."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
        self.image_shape = tuple(positive_int("image_shape", s) for s in image_shape)
        self.latent_dim = positive_int("latent_dim", latent_dim)
        # log sigma of the Gaussian likelihood with learned sigma; unused (no gradient)
        # by the others.
        self.log_sigma = nn.Parameter(torch.zeros(()))

    def check_model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Raise a clear error unless ``x`` is a float batch (B, C, H, W) of this
        model's image shape and dtype, in [0, 1]; returns ``x``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(
                f"images must be floating point in [0, 1], got dtype {x.dtype}; "
                f"convert uint8 images with x.float() / 255"
            )
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"{type(self).__name__} expects images of shape "
                f"(B, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        if x.dtype != self.log_sigma.dtype:
            raise TypeError(
                f"images are {x.dtype} "
                f"but the model's weights are {self.log_sigma.dtype}; "
                f"convert them with x.to({self.log_sigma.dtype})"
            )
        # The value check makes an accelerator report back to the host, so it is skipped
        # there in training mode (fit checks the whole dataset once instead); it always
        # runs on the CPU and in eval mode.
        if (
            x.numel()
            and (x.device.type == "cpu" or not self.training)
            and not torch.compiler.is_compiling()
        ):
            check_pixel_range(x, "images")
        return x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) -> posterior mean and log-variance, each (B, D)."""
        h = self.encoder(self.check_model_input(x))
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, D) -> decoder logits (B, C, H, W)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"latents must have shape (B, {self.latent_dim}), got {tuple(z.shape)}"
            )
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> VAEOutput:
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        return VAEOutput(self.decode(z), mu, logvar, z)

    @torch.no_grad()
    def sample(
        self, n: int, std: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Decode ``n`` draws z ~ N(0, std^2 I): mean images (n, C, H, W) in [0, 1]."""
        n = positive_int("n", n)
        z = torch.randn(
            n, self.latent_dim, generator=generator, device=model_device(self)
        )
        z = z * std
        return torch.sigmoid(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of each image: (B, C, H, W) in [0, 1]."""
        mu, _ = self.encode(x)
        return torch.sigmoid(self.decode(mu))


# The hidden units an MLPVAE may have, by the name its ``activation`` argument takes.
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLPVAE(VAE):
    """Fully connected VAE; the default 784-400-400-20 is the common MNIST baseline.

    image_shape: (C, H, W); hidden: sizes of the hidden layers (mirrored in the
    decoder); activation: the hidden units, ``"relu"`` or ``"tanh"`` (Burda et al.
    2016 use tanh: ``MLPVAE(50, (200, 200), activation="tanh")``). ``config`` holds
    ``activation`` only when it is not ``"relu"``, so a ReLU model's config (and every
    file and cache key made from it) is the one it had before the option existed.
    """

    def __init__(
        self,
        latent_dim: int = 20,
        hidden: tuple[int, ...] = (400, 400),
        image_shape: tuple[int, int, int] = (1, 28, 28),
        activation: str = "relu",
    ):
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, "
                f"got {activation!r}"
            )
        super().__init__(image_shape, latent_dim)
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise ValueError(
                "hidden must be a sequence of hidden-layer sizes, e.g. (400, 400) "
                f"or (32,) for one layer; got {hidden!r}"
            )
        hidden = [positive_int("hidden sizes", h) for h in hidden]
        self.activation = activation
        self.config = {
            "latent_dim": self.latent_dim,
            "hidden": hidden,
            "image_shape": list(self.image_shape),
        }
        if activation != "relu":
            self.config["activation"] = activation
        unit = ACTIVATIONS[activation]
        n = math.prod(self.image_shape)
        sizes = [n, *hidden]
        enc = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), unit()]
        self.encoder = nn.Sequential(*enc, nn.Linear(sizes[-1], 2 * self.latent_dim))
        dec, rev = [], [self.latent_dim, *reversed(hidden)]
        for a, b in zip(rev[:-1], rev[1:]):
            dec += [nn.Linear(a, b), unit()]
        self.decoder = nn.Sequential(
            *dec, nn.Linear(rev[-1], n), nn.Unflatten(1, self.image_shape)
        )


class ConvVAE(VAE):
    """Convolutional VAE of Burgess et al. (2018), "Understanding disentangling in
    beta-VAE".

    64x64: four 4x4 stride-2 convolutions of 32 channels (64 -> 4), two 256-unit layers,
    then mu and logvar; the decoder mirrors it with transposed convolutions. 28x28: two
    stride-2 convolutions (28 -> 7), otherwise the same. image_size: 28 or 64; channels:
    image channels.
    """

    def __init__(
        self,
        latent_dim: int = 10,
        image_size: Literal[28, 64] = 64,
        channels: int = 1,
        width: int = 32,
        hidden: int = 256,
    ):
        if image_size not in (28, 64):
            raise ValueError(
                f"ConvVAE supports image_size 28 or 64, got {image_size!r}"
            )
        width, hidden = positive_int("width", width), positive_int("hidden", hidden)
        super().__init__((channels, image_size, image_size), latent_dim)
        channels = self.image_shape[0]
        self.config = {
            "latent_dim": self.latent_dim,
            "image_size": self.image_shape[1],
            "channels": channels,
            "width": width,
            "hidden": hidden,
        }
        n_down = 4 if image_size == 64 else 2
        side = image_size // 2**n_down
        enc, ch = [], channels
        for _ in range(n_down):
            enc += [nn.Conv2d(ch, width, 4, stride=2, padding=1), nn.ReLU()]
            ch = width
        self.encoder = nn.Sequential(
            *enc,
            nn.Flatten(),
            nn.Linear(width * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * self.latent_dim),
        )
        dec = [
            nn.Linear(self.latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, width * side * side),
            nn.ReLU(),
            nn.Unflatten(1, (width, side, side)),
        ]
        for i in range(n_down):
            last = i == n_down - 1
            dec.append(
                nn.ConvTranspose2d(
                    width, channels if last else width, 4, stride=2, padding=1
                )
            )
            if not last:
                dec.append(nn.ReLU())
        self.decoder = nn.Sequential(*dec)


MODELS = {"MLPVAE": MLPVAE, "ConvVAE": ConvVAE}

"""The one training loop, :func:`fit`, and :func:`evaluate`.

The whole dataset is moved to the device once; batches are taken by index from a seeded permutation
(no per-item Python, no DataLoader workers). Running sums stay on the device and are read back only
every ``log_every`` steps and at the end of an epoch, so the GPU is never stalled by the host.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .losses import LIKELIHOODS, beta_vae_loss
from .schedules import as_schedule


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite during training."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda if available, then mps, then cpu; anything else is passed to ``torch.device``."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def as_float_images(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or bool images -> float32 in [0, 1]; float images are returned as they are."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(255)
    if batch.dtype == torch.bool:
        return batch.float()
    return batch


@dataclass
class History:
    """Per-epoch curves, in nats (batch means, summed over pixels / latents).

    ``train_loss`` is the objective minimised (β-weighted); ``*_recon`` and ``*_kl`` are the two ELBO
    terms, so ``recon + kl`` is the negative ELBO; ``*_kl_per_dim`` is one list of D values per epoch.
    Train values are averages over the epoch's steps; test values are measured after the epoch.
    """

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_recon: list = field(default_factory=list)
    train_kl: list = field(default_factory=list)
    train_kl_per_dim: list = field(default_factory=list)
    test_recon: list = field(default_factory=list)
    test_kl: list = field(default_factory=list)
    test_kl_per_dim: list = field(default_factory=list)
    beta: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    steps: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(model, images: torch.Tensor, *, batch_size: int = 1000, likelihood: str = "bernoulli",
             sigma: float = 0.1) -> dict:
    """Negative-ELBO terms on ``images`` with one posterior sample per image.

    Returns ``{"recon": float, "kl": float, "kl_per_dim": (D,) list, "neg_elbo": float}`` in nats
    per image (means over images, sums over pixels / latents).
    """
    was_training = model.training
    model.eval()
    device = model.log_sigma.device
    sums = torch.zeros(2, device=device)
    kl_dims = torch.zeros(model.latent_dim, device=device)
    for start in range(0, len(images), batch_size):
        x = as_float_images(images[start:start + batch_size].to(device, non_blocking=True))
        out = model(x)
        t = beta_vae_loss(x, out.logits, out.mu, out.logvar, likelihood=likelihood, sigma=sigma,
                          log_sigma=model.log_sigma)
        sums += torch.stack([t.recon, t.kl]) * len(x)
        kl_dims += t.kl_per_dim * len(x)
    model.train(was_training)
    recon, kl = (sums / len(images)).tolist()
    return {"recon": recon, "kl": kl, "kl_per_dim": (kl_dims / len(images)).tolist(), "neg_elbo": recon + kl}


def _check_fit_args(model, images, epochs, batch_size, lr, likelihood):
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4 or tuple(images.shape[1:]) != model.image_shape:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, model.image_shape))}) for this model, "
                         f"got {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError("images is empty")
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; valid are {', '.join(LIKELIHOODS)}")
    if images.is_floating_point():
        lo, hi = images.min().item(), images.max().item()
        if not (lo >= 0 and hi <= 1):
            raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]"
                             + ("; divide uint8 pixel values by 255" if hi > 1 else ""))


def fit(model, images: torch.Tensor, *, epochs: int, batch_size: int = 128, beta=1.0, lr: float = 1e-3,
        device: str | torch.device = "auto", test_images: torch.Tensor | None = None,
        likelihood: str = "bernoulli", sigma: float = 0.1, free_bits: float = 0.0, capacity=None,
        gamma: float = 1000.0, tc: bool = False, seed: int = 0, log_every: int = 50,
        progress: bool = True, callback=None) -> History:
    """Train ``model`` on ``images`` with Adam; returns a :class:`History`.

    images: (N, C, H, W), float in [0, 1], uint8 (0..255) or bool; test_images likewise (optional).
    beta: a number or a schedule ``step -> β`` (see :mod:`betavae_lib.schedules`); capacity: ``None``,
    a number or a schedule ``step -> C`` (nats) for the capacity objective with weight ``gamma``;
    likelihood, sigma, free_bits, tc: passed to :func:`betavae_lib.losses.beta_vae_loss`.
    seed: seeds the batch order and the sampling noise. callback: ``callback(epoch, model, history)``
    after each epoch. Raises :class:`NonFiniteLossError`, naming the step, if the loss stops being finite.
    """
    from tqdm.auto import tqdm

    _check_fit_args(model, images, epochs, batch_size, lr, likelihood)
    if test_images is not None:
        _check_fit_args(model, test_images, 1, 1, 1.0, likelihood)
    beta_at = as_schedule(beta, "beta")
    capacity_at = None if capacity is None else as_schedule(capacity, "capacity")
    seed_everything(seed)
    device = pick_device(device)
    model.to(device).train()
    data = images.to(device)
    n, steps_per_epoch = len(data), math.ceil(len(data) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    history = History()
    step = 0
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc="fit", unit="step", leave=False)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=order).to(device)
        sums = torch.zeros(3, device=device)  # objective, recon, kl (weighted by batch size)
        kl_dims = torch.zeros(model.latent_dim, device=device)
        first_bad = torch.full((), -1, dtype=torch.long, device=device)
        for i in range(steps_per_epoch):
            x = as_float_images(data[perm[i * batch_size:(i + 1) * batch_size]])
            out = model(x)
            beta_now = beta_at(step)
            terms = beta_vae_loss(
                x, out.logits, out.mu, out.logvar, out.z, beta=beta_now, likelihood=likelihood, sigma=sigma,
                log_sigma=model.log_sigma, free_bits=free_bits, gamma=gamma, tc=tc, dataset_size=n,
                capacity=None if capacity_at is None else capacity_at(step))
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            opt.step()
            with torch.no_grad():
                bad = ~torch.isfinite(terms.total)
                first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
                sums += torch.stack([terms.total, terms.recon, terms.kl]).detach() * len(x)
                kl_dims += terms.kl_per_dim.detach() * len(x)
            step += 1
            if step % log_every == 0 or i == steps_per_epoch - 1:
                _raise_if_bad(first_bad, epoch)
                seen = min((i + 1) * batch_size, n)
                loss, recon, kl = (sums / seen).tolist()
                bar.set_postfix(epoch=epoch, loss=f"{loss:.1f}", recon=f"{recon:.1f}", kl=f"{kl:.2f}", beta=f"{beta_now:.3g}")
                bar.update(step - bar.n)
        loss, recon, kl = (sums / n).tolist()
        history.epoch.append(epoch)
        history.train_loss.append(loss)
        history.train_recon.append(recon)
        history.train_kl.append(kl)
        history.train_kl_per_dim.append((kl_dims / n).tolist())
        history.beta.append(float(beta_now))
        if test_images is not None:
            ev = evaluate(model, test_images, likelihood=likelihood, sigma=sigma)
            history.test_recon.append(ev["recon"])
            history.test_kl.append(ev["kl"])
            history.test_kl_per_dim.append(ev["kl_per_dim"])
        history.seconds.append(time.perf_counter() - t0)
        history.steps = step
        if callback is not None:
            callback(epoch, model, history)
    bar.close()
    model.eval()
    return history


def _raise_if_bad(first_bad: torch.Tensor, epoch: int) -> None:
    bad_step = int(first_bad.item())
    if bad_step >= 0:
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at optimiser step {bad_step} (epoch {epoch}); "
            f"lower the learning rate, check the inputs for NaN, or use the Bernoulli likelihood")

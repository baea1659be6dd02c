"""The one training loop, :func:`fit`, and :func:`evaluate`.

The whole dataset is moved to the device once; batches are taken by index from a seeded permutation
(no per-item Python, no DataLoader workers). Running sums stay on the device and are read back only
every ``log_every`` steps and at the end of an epoch, so the GPU is never stalled by the host.

Speed settings that leave the arithmetic unchanged are on by default: Adam's fused kernel where the
device has one, channels-last weights for convolutional models, and cuDNN autotuning on CUDA (off when
``torch.use_deterministic_algorithms(True)`` is set). Settings that change the arithmetic are opt-in:
``amp=True`` (bfloat16 autocast) and ``compile=True`` (``torch.compile``).

With ``checkpoint_path`` the full training state (weights, optimiser, RNG states, history) is saved
atomically every ``checkpoint_every`` epochs; ``resume=True`` continues from it and gives the same
numbers, bit for bit on the same device, as a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoints
from .losses import LIKELIHOODS, beta_vae_loss, objective_loss
from .models import VAEOutput
from .objective import Objective


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
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device {str(device)!r} was asked for but CUDA is not available here; "
                f"use device='auto' or 'cpu'"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if (
        getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
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

    @classmethod
    def from_dict(cls, values: dict) -> History:
        """The inverse of :meth:`as_dict` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@torch.no_grad()
def evaluate(
    model,
    images: torch.Tensor,
    *,
    batch_size: int = 1000,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
) -> dict:
    """Negative-ELBO terms on ``images`` with one posterior sample per image.

    Returns ``{"recon": float, "kl": float, "kl_per_dim": (D,) list, "neg_elbo": float}`` in nats
    per image (means over images, sums over pixels / latents).
    """
    _check_model(model)
    _check_images(model, images, "images")
    _positive_int("batch_size", batch_size)
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"unknown likelihood {likelihood!r}; valid are {', '.join(LIKELIHOODS)}"
        )
    return _evaluate(
        model, images, batch_size=batch_size, likelihood=likelihood, sigma=sigma
    )


@torch.no_grad()
def _evaluate(
    model, images: torch.Tensor, *, batch_size: int, likelihood: str, sigma: float
) -> dict:
    """:func:`evaluate` without the argument checks (``fit`` checks once, before the first epoch)."""
    was_training = model.training
    model.eval()
    device = model.log_sigma.device
    sums = torch.zeros(2, device=device)
    kl_dims = torch.zeros(model.latent_dim, device=device)
    for start in range(0, len(images), batch_size):
        x = as_float_images(
            images[start : start + batch_size].to(device, non_blocking=True)
        ).float()
        out = model(x)
        t = beta_vae_loss(
            x,
            out.logits,
            out.mu,
            out.logvar,
            likelihood=likelihood,
            sigma=sigma,
            log_sigma=model.log_sigma,
        )
        sums += torch.stack([t.recon, t.kl]) * len(x)
        kl_dims += t.kl_per_dim * len(x)
    model.train(was_training)
    recon, kl = (sums / len(images)).tolist()
    return {
        "recon": recon,
        "kl": kl,
        "kl_per_dim": (kl_dims / len(images)).tolist(),
        "neg_elbo": recon + kl,
    }


# ----------------------------------------------------------------------------- argument checks


def _positive_int(name: str, value) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or int(value) != value
        or value < 1
    ):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_model(model) -> None:
    if (
        not isinstance(model, nn.Module)
        or not hasattr(model, "image_shape")
        or not hasattr(model, "latent_dim")
    ):
        raise TypeError(
            f"model must be a betavae_lib VAE (MLPVAE, ConvVAE or a subclass of models.VAE), "
            f"got {type(model).__name__}"
        )


def _check_images(model, images, name: str) -> None:
    """Raise unless ``images`` is a non-empty (N, C, H, W) tensor of the model's shape with valid values."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor (N, C, H, W), got {type(images).__name__}"
        )
    if images.dim() != 4 or tuple(images.shape[1:]) != model.image_shape:
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, model.image_shape))}) for this model, "
            f"got {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise ValueError(f"{name} is empty")
    if images.dtype not in (torch.uint8, torch.bool) and not images.is_floating_point():
        raise TypeError(
            f"{name} must be float in [0, 1], uint8 (0..255) or bool, got dtype {images.dtype}"
        )
    if images.is_floating_point():
        lo, hi = (
            v.item() for v in torch.aminmax(images)
        )  # one pass; NaN anywhere makes both NaN
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"{name} contain NaN values")
        if not (lo >= 0 and hi <= 1):
            raise ValueError(
                f"float {name} must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]"
                + ("; divide uint8 pixel values by 255" if hi > 1 else "")
            )


def _check_fit_args(
    model,
    images,
    test_images,
    *,
    epochs,
    batch_size,
    lr,
    likelihood,
    sigma,
    free_bits,
    gamma,
    log_every,
    checkpoint_path,
    checkpoint_every,
    resume,
    amp,
    device,
) -> None:
    _check_model(model)
    _check_images(model, images, "images")
    if test_images is not None:
        _check_images(model, test_images, "test_images")
    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("log_every", log_every),
        ("checkpoint_every", checkpoint_every),
    ):
        _positive_int(name, value)
    if not (isinstance(lr, numbers.Real) and lr > 0):
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"unknown likelihood {likelihood!r}; valid are {', '.join(LIKELIHOODS)}"
        )
    if likelihood == "gaussian" and not sigma > 0:
        raise ValueError(
            f"sigma must be > 0 for the Gaussian likelihood, got {sigma!r}"
        )
    if not free_bits >= 0:
        raise ValueError(f"free_bits must be >= 0 nats, got {free_bits!r}")
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path (the file to resume from)")
    if amp and device.type not in ("cuda", "cpu"):
        raise ValueError(
            f"amp=True (bfloat16 autocast) is supported on cuda and cpu, not {device.type}"
        )


# ----------------------------------------------------------------------------- device settings


def _fused_adam_devices() -> list[str]:
    try:  # the list PyTorch itself checks; CPU joined it in 2.4
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return list(_get_fused_kernels_supported_devices())
    except ImportError:
        return ["cuda"]


def _adam(model, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused single-kernel update where this device has it (same update, fewer kernels)."""
    fused = device.type in _fused_adam_devices() or None
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused)


def _has_convolutions(model) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())


@contextlib.contextmanager
def _backend_settings(device: torch.device):
    """cuDNN autotuning on CUDA for the duration of ``fit`` unless deterministic algorithms are asked for."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


# ----------------------------------------------------------------------------- training state


def _rng_states(device: torch.device, order: torch.Generator) -> dict:
    """Every random state ``fit`` depends on, as tensors and numbers (``weights_only``-loadable)."""
    version, internal, gauss_next = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "order": order.get_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, device: torch.device, order: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    order.set_state(states["order"])
    npy = states["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    py = states["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss_next"]))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def _describe(value):
    """A comparable description of a number or schedule, for checking a resumed run's settings."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if not callable(value):
        return float(value)
    if dataclasses.is_dataclass(value):
        return repr(value)
    return getattr(value, "__qualname__", type(value).__qualname__)


def _fingerprint(images: torch.Tensor, samples: int = 100_000) -> float:
    """Sum of an evenly spaced sample of the pixel values: cheap, and different for different data."""
    flat = images.reshape(-1)
    sample = flat[:: max(1, flat.numel() // samples)].cpu()
    return float(sample.sum(dtype=torch.float64))


def _run_settings(
    images,
    *,
    batch_size,
    beta,
    lr,
    likelihood,
    sigma,
    free_bits,
    capacity,
    gamma,
    tc,
    seed,
) -> dict:
    """What defines the run: a checkpoint made with other settings cannot be resumed."""
    return {
        "n_images": len(images),
        "images_fingerprint": _fingerprint(images),
        "batch_size": int(batch_size),
        "beta": _describe(beta),
        "lr": float(lr),
        "likelihood": likelihood,
        "sigma": float(sigma),
        "free_bits": float(free_bits),
        "capacity": _describe(capacity),
        "gamma": float(gamma),
        "tc": bool(tc),
        "seed": int(seed),
    }


def _settings_differences(saved: dict, now: dict) -> list[str]:
    diffs = []
    for key, value in now.items():
        old = saved.get(key)
        if key == "images_fingerprint":
            same = old is not None and math.isclose(
                old, value, rel_tol=1e-6, abs_tol=1e-6
            )
        else:
            same = old == value
        if not same:
            diffs.append(f"{key}: {old!r} in the checkpoint, {value!r} now")
    return diffs


def _save_training_state(
    path, model, opt, *, epoch, step, order, device, history, settings
) -> None:
    state_dict = {
        k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
    }
    checkpoints.save_training_state(
        {
            "model": type(model).__name__,
            "config": model.config,
            "state_dict": state_dict,
            "optimizer": opt.state_dict(),
            "epoch": epoch,
            "step": step,
            "rng": _rng_states(device, order),
            "history": history.as_dict(),
            "settings": settings,
            "meta": {"epoch": epoch, "step": step},
        },
        path,
    )


def _restore_training_state(path, model, opt, *, order, device, settings):
    """Load ``path`` into ``model``, ``opt`` and the RNGs; returns ``(epoch, step, history)`` or None."""
    if not Path(path).is_file():
        warnings.warn(
            f"resume=True but there is no checkpoint at {path} yet; training starts from epoch 1",
            stacklevel=3,
        )
        return None
    state = checkpoints.read_training_state(path)
    checkpoints.check_model_matches(state, model, path)
    diffs = _settings_differences(state["settings"], settings)
    if diffs:
        raise checkpoints.CheckpointError(
            f"{path} was written by a run with other settings ({'; '.join(diffs)}). Resume with the same "
            f"data and settings, or pass resume=False or a new checkpoint_path to start a new run."
        )
    model.load_state_dict(state["state_dict"])
    fresh = {
        k: opt.param_groups[0][k]
        for k in ("fused", "foreach", "capturable")
        if k in opt.param_groups[0]
    }
    opt.load_state_dict(state["optimizer"])
    for group in (
        opt.param_groups
    ):  # keep the kernels chosen for this device, not the saving one's
        group.update(fresh)
        step_device = (
            "cpu" if not (group.get("fused") or group.get("capturable")) else None
        )
        for p in group[
            "params"
        ]:  # the step count where these kernels want it, moments in the params' layout
            for k, v in opt.state[p].items():
                if k == "step" and isinstance(v, torch.Tensor):
                    opt.state[p][k] = v.to(step_device or p.device)
                elif isinstance(v, torch.Tensor) and v.shape == p.shape:
                    opt.state[p][k] = torch.empty_like(p).copy_(v)
    _set_rng_states(state["rng"], device, order)
    return state["epoch"], state["step"], History.from_dict(state["history"])


# ----------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """What every step of one ``fit`` call needs."""

    model: nn.Module
    forward: object  # the model, or its torch.compile'd wrapper
    opt: torch.optim.Optimizer
    data: torch.Tensor
    batch_size: int
    objective: Objective
    amp: bool
    channels_last: bool
    device: torch.device


def _batch(run: _Run, index: torch.Tensor) -> torch.Tensor:
    """Images at ``index`` as float32 in [0, 1], in the memory format the model runs fastest with."""
    x = as_float_images(run.data.index_select(0, index)).float()  # faster than [index]
    return x.contiguous(memory_format=torch.channels_last) if run.channels_last else x


def _train_step(run: _Run, x: torch.Tensor, step: int):
    """One Adam step on batch ``x``; returns the loss terms (device tensors, no host sync) and β."""
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
        out = run.forward(x)
    if run.amp:
        out = VAEOutput(*(t.float() for t in out))
    objective = run.objective
    beta_now = objective.beta_at(step)
    terms = objective_loss(
        x,
        out.logits,
        out.mu,
        out.logvar,
        out.z,
        objective.coefficients(step),
        likelihood=objective.likelihood,
        sigma=objective.sigma,
        log_sigma=run.model.log_sigma,
        dataset_size=len(run.data),
    )
    run.opt.zero_grad(set_to_none=True)
    terms.total.backward()
    run.opt.step()
    return terms, beta_now


def _train_epoch(
    run: _Run, perm: torch.Tensor, epoch: int, step: int, log_every: int, bar
):
    """One pass over the data in the order ``perm``; returns (objective, recon, kl sums, kl per dim sums,
    last β, step), the sums weighted by batch size."""
    n, batch_size = len(run.data), run.batch_size
    steps_per_epoch = math.ceil(n / batch_size)
    sums = torch.zeros(3, device=run.device)  # objective, recon, kl
    kl_dims = torch.zeros(run.model.latent_dim, device=run.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=run.device)
    for i in range(steps_per_epoch):
        x = _batch(run, perm[i * batch_size : (i + 1) * batch_size])
        terms, beta_now = _train_step(run, x, step)
        with torch.no_grad():
            bad = ~torch.isfinite(terms.total)
            first_bad = torch.where(
                bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad
            )
            sums += torch.stack([terms.total, terms.recon, terms.kl]).detach() * len(x)
            kl_dims += terms.kl_per_dim.detach() * len(x)
        step += 1
        if step % log_every == 0 or i == steps_per_epoch - 1:
            _raise_if_bad(first_bad, epoch)
            if not bar.disable:
                loss, recon, kl = (sums / min((i + 1) * batch_size, n)).tolist()
                bar.set_postfix(
                    epoch=epoch,
                    loss=f"{loss:.1f}",
                    recon=f"{recon:.1f}",
                    kl=f"{kl:.2f}",
                    beta=f"{beta_now:.3g}",
                )
                bar.update(step - bar.n)
    return sums, kl_dims, beta_now, step


def _record_epoch(
    history: History, epoch: int, sums, kl_dims, n: int, beta_now
) -> None:
    loss, recon, kl = (sums / n).tolist()
    history.epoch.append(epoch)
    history.train_loss.append(loss)
    history.train_recon.append(recon)
    history.train_kl.append(kl)
    history.train_kl_per_dim.append((kl_dims / n).tolist())
    history.beta.append(float(beta_now))


def _record_test(
    history: History, model, test_images, likelihood: str, sigma: float
) -> None:
    ev = _evaluate(
        model, test_images, batch_size=1000, likelihood=likelihood, sigma=sigma
    )
    history.test_recon.append(ev["recon"])
    history.test_kl.append(ev["kl"])
    history.test_kl_per_dim.append(ev["kl_per_dim"])


def _run_callback(
    callback, epoch: int, model, history: History, device: torch.device
) -> None:
    """Call ``callback`` with torch's RNG forked, so what it draws never changes the training."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=devices):
        callback(epoch, model, history)


def fit(
    model,
    images: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    beta=1.0,
    lr: float = 1e-3,
    device: str | torch.device = "auto",
    test_images: torch.Tensor | None = None,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
    free_bits: float = 0.0,
    capacity=None,
    gamma: float = 1000.0,
    tc: bool = False,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
    callback=None,
    checkpoint_path=None,
    checkpoint_every: int = 1,
    resume: bool = False,
    amp: bool = False,
    compile: bool = False,
) -> History:
    """Train ``model`` on ``images`` with Adam; returns a :class:`History`.

    images: (N, C, H, W), float in [0, 1], uint8 (0..255) or bool; test_images likewise (optional).
    beta: a number or a schedule ``step -> β`` (see :mod:`betavae_lib.schedules`); capacity: ``None``,
    a number or a schedule ``step -> C`` (nats) for the capacity objective with weight ``gamma``;
    likelihood, sigma, free_bits, tc: as for :func:`betavae_lib.losses.beta_vae_loss`.
    These options make one :class:`betavae_lib.objective.Objective`, which raises
    ``ValueError`` for combinations it cannot honour (``tc`` with ``free_bits`` or
    ``capacity``; ``capacity`` with ``free_bits`` or a β other than 1; ``gamma``
    without ``capacity``).
    seed: seeds the batch order and the sampling noise. callback: ``callback(epoch, model, history)``
    after each epoch, run with torch's RNG forked so that it cannot change the training.

    checkpoint_path: save the training state there (atomically) every ``checkpoint_every`` epochs and
    after the last; resume: continue from that file if it exists (same model, data and settings; a
    larger ``epochs`` trains on). amp: bfloat16 autocast (cuda, cpu); compile: ``torch.compile`` the
    model. Both change the arithmetic, so they are off by default.

    Raises :class:`NonFiniteLossError`, naming the step, if the loss stops being finite.
    """
    from tqdm.auto import tqdm

    device = pick_device(device)
    _check_fit_args(
        model,
        images,
        test_images,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        likelihood=likelihood,
        sigma=sigma,
        free_bits=free_bits,
        gamma=gamma,
        log_every=log_every,
        checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every,
        resume=resume,
        amp=amp,
        device=device,
    )
    objective = Objective(  # checks the options and their combination
        beta=beta,
        capacity=capacity,
        gamma=gamma,
        free_bits=free_bits,
        tc=tc,
        likelihood=likelihood,
        sigma=sigma,
    )
    settings = (
        None
        if checkpoint_path is None
        else _run_settings(
            images,
            batch_size=batch_size,
            beta=beta,
            lr=lr,
            likelihood=likelihood,
            sigma=sigma,
            free_bits=free_bits,
            capacity=capacity,
            gamma=gamma,
            tc=tc,
            seed=seed,
        )
    )

    seed_everything(seed)
    run = _prepare_run(
        model,
        images,
        device,
        lr=lr,
        batch_size=batch_size,
        objective=objective,
        amp=amp,
        compile=compile,
    )
    order = torch.Generator().manual_seed(seed)  # the batch order
    start_epoch, step, history = 0, 0, History()
    if resume:
        restored = _restore_training_state(
            checkpoint_path,
            model,
            run.opt,
            order=order,
            device=device,
            settings=settings,
        )
        if restored is not None:
            start_epoch, step, history = restored

    total_steps = epochs * math.ceil(len(images) / batch_size)
    bar = tqdm(
        total=total_steps,
        initial=min(step, total_steps),
        disable=not progress,
        desc="fit",
        unit="step",
        leave=False,
    )
    try:
        with _backend_settings(device):
            for epoch in range(start_epoch + 1, epochs + 1):
                t0 = time.perf_counter()
                perm = torch.randperm(len(images), generator=order).to(device)
                sums, kl_dims, beta_now, step = _train_epoch(
                    run, perm, epoch, step, log_every, bar
                )
                _record_epoch(history, epoch, sums, kl_dims, len(images), beta_now)
                if test_images is not None:
                    _record_test(history, model, test_images, likelihood, sigma)
                history.seconds.append(time.perf_counter() - t0)
                history.steps = step
                if checkpoint_path is not None and (
                    epoch % checkpoint_every == 0 or epoch == epochs
                ):
                    _save_training_state(
                        checkpoint_path,
                        model,
                        run.opt,
                        epoch=epoch,
                        step=step,
                        order=order,
                        device=device,
                        history=history,
                        settings=settings,
                    )
                if callback is not None:
                    _run_callback(callback, epoch, model, history, device)
    finally:
        bar.close()
        if run.channels_last:  # hand the model back in the usual memory layout
            model.to(memory_format=torch.contiguous_format)
    model.eval()
    return history


def _prepare_run(
    model,
    images,
    device,
    *,
    lr,
    batch_size,
    objective,
    amp,
    compile,
) -> _Run:
    """Move the model and the data to ``device``, choose the fast settings, and build the optimiser."""
    channels_last = _has_convolutions(model) and device.type in ("cuda", "cpu")
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return _Run(
        model=model,
        forward=torch.compile(model) if compile else model,
        opt=_adam(model, lr, device),
        data=images.to(device),
        batch_size=int(batch_size),
        objective=objective,
        amp=amp,
        channels_last=channels_last,
        device=device,
    )


def _raise_if_bad(first_bad: torch.Tensor, epoch: int) -> None:
    bad_step = int(first_bad.item())
    if bad_step >= 0:
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at optimiser step {bad_step} (epoch {epoch}); "
            f"lower the learning rate, check the inputs for NaN, or use the Bernoulli likelihood"
        )

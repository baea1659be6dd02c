"""Save and load models with their configuration; loading never unpickles arbitrary objects.

A model checkpoint is a ``torch.save`` dict of tensors, strings and numbers only:
``{"format", "model", "config", "state_dict", "meta"}``. :func:`load` reads it with
``torch.load(weights_only=True)``, which refuses any other object, and rebuilds the model
from its class name and ``config``. Saves are atomic: a temporary file, flushed to disk, then
renamed into place, so an interrupted save leaves the previous file as it was.

A training state (written by ``fit(checkpoint_path=...)``) has the same keys plus ``optimizer``,
``epoch``, ``step``, ``rng``, ``history`` and ``settings``; :func:`load` rebuilds its model too.
This module owns both formats: writing and reading them, the random states and run settings a
training state records, and restoring them into a model, an optimiser and the generators.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from ._common import atomic_write
from .models import MODELS

FORMAT = "betavae_lib.checkpoint/1"
TRAINING_FORMAT = "betavae_lib.training/1"


class CheckpointError(ValueError):
    """A file is not a valid betavae_lib checkpoint, or does not fit the model asked for."""


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flush it to disk, then rename it into place."""
    with atomic_write(path) as (f, _):
        torch.save(obj, f)
    return Path(path)


def save(model, path: str | os.PathLike, **meta) -> Path:
    """Save ``model`` (an ``MLPVAE`` or ``ConvVAE``) with its config; ``meta``: JSON-like extras."""
    name = type(model).__name__
    if name not in MODELS:
        raise TypeError(f"can only save {', '.join(MODELS)} models, got {name}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save(
        {
            "format": FORMAT,
            "model": name,
            "config": model.config,
            "state_dict": state,
            "meta": meta,
        },
        path,
    )


def read_safely(
    path: str | os.PathLike,
    formats: tuple[str, ...],
    what: str = "betavae_lib checkpoint",
) -> dict:
    """The dict in ``path``, read with ``torch.load(weights_only=True)`` (tensors, numbers,
    strings and containers, never code), whose ``format`` is one of ``formats``; anything
    else raises :class:`CheckpointError` naming the file (``what`` names the kind of file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a safe {what}: it holds objects other than "
            f"tensors, numbers and strings, or is corrupt ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0][:200]})"
        ) from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else None
    if found not in formats:
        held = f"format {found!r}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path} is not a {what} (format {' or '.join(map(repr, formats))} "
            f"expected; it holds a {held})"
        )
    return ckpt


def read(path: str | os.PathLike) -> dict:
    """The checkpoint dict (a model checkpoint or a training state), read safely; raises
    :class:`CheckpointError`."""
    return read_safely(path, (FORMAT, TRAINING_FORMAT))


def read_training_state(path: str | os.PathLike) -> dict:
    """A training state written by ``fit(checkpoint_path=...)``, read safely."""
    ckpt = read(path)
    if ckpt["format"] != TRAINING_FORMAT:
        raise CheckpointError(
            f"{path} is a model checkpoint (from save()), not a training state from "
            f"fit(checkpoint_path=...), so training cannot resume from it"
        )
    missing = {
        "model",
        "config",
        "state_dict",
        "optimizer",
        "epoch",
        "step",
        "rng",
        "history",
        "settings",
    } - set(ckpt)
    if missing:
        raise CheckpointError(
            f"{path} is an incomplete training state: missing {', '.join(sorted(missing))}"
        )
    return ckpt


def configs_equal(a, b) -> bool:
    """Equality that treats tuples and lists alike (configs hold lists after a round trip)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(configs_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(configs_equal(a[k], b[k]) for k in a)
    return a == b


def check_model_matches(ckpt: dict, model, path="checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``model`` has the class and config saved in ``ckpt``."""
    name, config = type(model).__name__, getattr(model, "config", None)
    if ckpt["model"] != name or not configs_equal(ckpt["config"], config):
        raise CheckpointError(
            f"{path} holds a {ckpt['model']} with config {ckpt['config']}, but the model "
            f"given is a {name} with config {config}; build the model with the saved "
            f"config, or start a new checkpoint"
        )


# ----------------------------------------------------------------------------- training states


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


def _comparable_setting(value):
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


def run_settings(
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
        "beta": _comparable_setting(beta),
        "lr": float(lr),
        "likelihood": likelihood,
        "sigma": float(sigma),
        "free_bits": float(free_bits),
        "capacity": _comparable_setting(capacity),
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


def save_training_state(
    path, model, opt, *, epoch, step, order, device, history, settings
) -> None:
    state_dict = {
        k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
    }
    atomic_torch_save(
        {
            "format": TRAINING_FORMAT,
            "model": type(model).__name__,
            "config": model.config,
            "state_dict": state_dict,
            "optimizer": opt.state_dict(),
            "epoch": epoch,
            "step": step,
            "rng": _rng_states(device, order),
            "history": history,
            "settings": settings,
            "meta": {"epoch": epoch, "step": step},
        },
        path,
    )


def restore_training_state(path, model, opt, *, order, device, settings):
    """Load ``path`` into ``model``, ``opt`` and the RNGs; returns ``(epoch, step, history)`` or None."""
    if not Path(path).is_file():
        warnings.warn(
            f"resume=True but there is no checkpoint at {path} yet; training starts from epoch 1",
            stacklevel=3,
        )
        return None
    state = read_training_state(path)
    check_model_matches(state, model, path)
    diffs = _settings_differences(state["settings"], settings)
    if diffs:
        raise CheckpointError(
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
    return state["epoch"], state["step"], state["history"]


def load(path: str | os.PathLike, expect: type | str | None = None, **expect_config):
    """Rebuild the saved model (in eval mode) and return ``(model, meta)``.

    expect: a model class or name the file must hold; expect_config: config values it must have
    (e.g. ``latent_dim=10``). A mismatch raises :class:`CheckpointError`.
    """
    want = expect if isinstance(expect, str) or expect is None else expect.__name__
    if want is not None and want not in MODELS:
        raise CheckpointError(
            f"unknown model {want!r} asked for; valid are {', '.join(MODELS)}"
        )
    ckpt = read(path)
    name, config = ckpt["model"], ckpt["config"]
    if name not in MODELS:
        raise CheckpointError(
            f"{path} holds an unknown model {name!r}; known: {', '.join(MODELS)}"
        )
    if want is not None and want != name:
        raise CheckpointError(f"{path} holds a {name}, not the {want} asked for")
    for k, v in expect_config.items():
        got = config.get(k)
        if not configs_equal(got, v):
            raise CheckpointError(
                f"{path} holds a {name} with {k}={got!r}, not {v!r} as asked"
            )
    try:
        model = MODELS[name](**config)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: weights do not fit {name}({config}): {str(e)[:300]}"
        ) from None
    return model.eval(), ckpt.get("meta", {})

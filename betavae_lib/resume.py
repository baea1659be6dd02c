"""Resuming ``fit`` bit for bit: the training state it writes and reads back.

A training state (``fit(checkpoint_path=...)``) is a model checkpoint
(:mod:`betavae_lib.checkpoints`, format ``TRAINING_FORMAT``) plus ``optimizer``,
``epoch``, ``step``, ``rng``, ``history`` and ``settings``. This module writes it
(:func:`save_training_state`), records the settings that define a run's numbers
(:func:`run_settings`) and every random state ``fit`` depends on, and restores them into
a model, an optimiser and the generators (:func:`restore_training_state`), refusing a
state made with other settings or schedules.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoints import (
    TRAINING_FORMAT,
    CheckpointError,
    atomic_torch_save,
    check_model_matches,
    data_fingerprint,
    read_training_state,
)


def _rng_states(
    device: torch.device,
    order: torch.Generator,
    binarizer: torch.Generator | None = None,
) -> dict:
    """Every random state ``fit`` depends on, as tensors and numbers
    (``weights_only``-loadable); ``binarizer``: the generator of ``binarize=True``."""
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
    if binarizer is not None:
        states["binarize"] = {
            "device": binarizer.device.type,
            "state": binarizer.get_state(),
        }
    return states


def _set_rng_states(
    states: dict,
    device: torch.device,
    order: torch.Generator,
    binarizer: torch.Generator | None = None,
) -> None:
    """Restore what :func:`_rng_states` saved. Like the CUDA state, the binarisation
    state is restored only on the kind of device that saved it (a generator's state
    means nothing to another kind); elsewhere the run goes on with the fresh
    generator."""
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
    saved = states.get("binarize")
    if binarizer is not None and saved is not None:
        if saved["device"] == binarizer.device.type:
            binarizer.set_state(saved["state"])


def _comparable_setting(value):
    """A description of a number or schedule that is equal for equal settings: numbers
    as floats, dataclass schedules by their fields (``repr``), ``functools.partial`` by
    its function and arguments, other callables by name. Callables are also compared by
    value, step by step (:func:`_schedule_differences`)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if not callable(value):
        return float(value)
    if dataclasses.is_dataclass(value):
        return repr(value)
    if isinstance(value, functools.partial):
        return (
            f"partial({_comparable_setting(value.func)}, {value.args!r}, "
            f"{value.keywords!r})"
        )
    return getattr(value, "__qualname__", type(value).__qualname__)


# How each of fit's arithmetic settings is recorded; beta and capacity may be schedules.
_SETTING_TYPES = {
    "batch_size": int,
    "lr": float,
    "likelihood": str,
    "sigma": float,
    "free_bits": float,
    "gamma": float,
    "tc": bool,
    "seed": int,
    "amp": bool,
    "compile": bool,
    "binarize": bool,
}
# What a setting recorded by no older version means (their runs all had this value).
_SETTING_DEFAULTS = {"binarize": False}


def run_settings(images, arithmetic: dict) -> dict:
    """What defines the run's numbers, as recorded in a training state: the images
    (count and :func:`data_fingerprint`) and ``arithmetic``, fit's settings by name
    (batch_size, beta, lr, likelihood, sigma, free_bits, capacity, gamma, tc, seed, amp,
    compile, binarize). A checkpoint made with other settings cannot be resumed; β and
    capacity schedules are also compared step by step
    (:func:`restore_training_state`)."""
    recorded = {"n_images": len(images), "images_fingerprint": data_fingerprint(images)}
    for name, value in arithmetic.items():
        kind = _SETTING_TYPES.get(name, _comparable_setting)
        recorded[name] = kind(value)
    return recorded


def _settings_differences(saved: dict, now: dict) -> list[str]:
    """The settings that differ; one an older checkpoint lacks counts as its
    :data:`_SETTING_DEFAULTS` value."""
    saved = {**_SETTING_DEFAULTS, **saved}
    return [
        f"{key}: {saved.get(key)!r} in the checkpoint, {value!r} now"
        for key, value in now.items()
        if saved.get(key) != value
    ]


def _schedule_differences(saved: dict, schedules: dict, steps: int) -> list[str]:
    """Where the schedules (``name -> callable or None``) disagree with the values the
    checkpointed run used at steps 0..steps-1 (``saved``: name -> float64 tensor)."""
    diffs = []
    for name, schedule in schedules.items():
        used = saved.get(name, torch.zeros(0, dtype=torch.float64)).tolist()
        if schedule is None:
            if used:
                diffs.append(f"{name}: a schedule in the checkpoint, none now")
            continue
        for step in range(steps):
            now = float(schedule(step))
            if step >= len(used) or now != used[step]:
                was = used[step] if step < len(used) else None
                diffs.append(
                    f"{name} at step {step}: {was!r} in the checkpoint, {now!r} now"
                )
                break
    return diffs


def check_checkpoint_path(path, resume: bool, overwrite: bool) -> None:
    """Before training: refuse to replace an existing file unless ``resume`` or
    ``overwrite``, and make sure a checkpoint can be written at ``path`` (its folder is
    created; a test file is written there and removed)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint_path {path} is a folder, not a file")
    if path.exists() and not (resume or overwrite):
        raise FileExistsError(
            f"{path} exists, and fit would overwrite it (it may hold a finished run). "
            f"Pass resume=True to continue it, overwrite=True to replace it, or "
            f"another checkpoint_path."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".probe"
        )
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise type(e)(
            f"checkpoints cannot be written to {path}: {e}; choose another "
            f"checkpoint_path"
        ) from None


def save_training_state(
    path,
    model,
    opt,
    *,
    epoch,
    step,
    order,
    device,
    history,
    settings,
    schedule_values,
    binarizer=None,
) -> None:
    """Atomically save everything a resumed run needs (see
    :func:`restore_training_state`).
    schedule_values: name -> the values used at steps 0..step-1 (converted in place to
    floats, so each value is read back from an accelerator once); binarizer: the
    generator of ``fit(binarize=True)``, or None."""
    for values in schedule_values.values():
        values[:] = [float(v) for v in values]
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
            "rng": _rng_states(device, order, binarizer),
            "history": history,
            "settings": settings,
            "schedule_values": {
                name: torch.tensor(values, dtype=torch.float64)
                for name, values in schedule_values.items()
            },
            "meta": {"epoch": epoch, "step": step},
        },
        path,
    )


def restore_training_state(
    path, model, opt, *, order, device, settings, schedules, binarizer=None
):
    """Load ``path`` into ``model``, ``opt`` and the RNGs (``binarizer``: the generator
    of ``fit(binarize=True)``, or None), after checking that it was written by this
    model with these ``settings`` and that ``schedules`` (name -> callable or None) give
    the values the run used at every step it trained. Returns
    ``(epoch, step, history dict, schedule values: name -> list of floats)``, or None
    without a file.
    """
    if not Path(path).is_file():
        warnings.warn(
            f"resume=True but there is no checkpoint at {path} yet; "
            "training starts from epoch 1",
            stacklevel=3,
        )
        return None
    state = read_training_state(path)
    check_model_matches(state, model, path)
    if "schedule_values" not in state:
        raise CheckpointError(
            f"{path} was written by an older betavae_lib that did not record the β and "
            f"capacity of each step, so a changed schedule could not be detected; "
            f"start a new run (overwrite=True or a new checkpoint_path)"
        )
    diffs = _settings_differences(state["settings"], settings)
    diffs += _schedule_differences(state["schedule_values"], schedules, state["step"])
    if diffs:
        raise CheckpointError(
            f"{path} was written by a run with other settings ({'; '.join(diffs)}). "
            f"Resume with the same data (the same images in the same order) and "
            f"settings, or pass overwrite=True or a new checkpoint_path to start a new "
            f"run."
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
    _set_rng_states(state["rng"], device, order, binarizer)
    used = {name: values.tolist() for name, values in state["schedule_values"].items()}
    return state["epoch"], state["step"], state["history"], used

"""Save and load models with their configuration; loading never unpickles arbitrary
objects.

A model checkpoint is a ``torch.save`` dict of tensors, strings and numbers only:
``{"format", "model", "config", "state_dict", "meta"}``. :func:`load` reads it with
``torch.load(weights_only=True)``, which refuses any other object, and rebuilds the
model from its class name and ``config``. Saves are atomic: a temporary file, flushed to
disk, then renamed into place, so an interrupted save leaves the previous file as it
was.

A training state (written by ``fit(checkpoint_path=...)``) has the same keys plus
``optimizer``, ``epoch``, ``step``, ``rng``, ``history`` and ``settings``; :func:`load`
rebuilds its model too. This module owns both formats: writing and reading them, the
random states and run settings a training state records, and restoring them into a
model, an optimiser and the generators.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import inspect
import os
import random
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ._common import atomic_write
from .models import MODELS

FORMAT = "betavae_lib.checkpoint/1"
TRAINING_FORMAT = "betavae_lib.training/1"


class CheckpointError(ValueError):
    """A file is not a valid betavae_lib checkpoint, or does not fit the model asked
    for."""


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flush it to disk, then rename
    it into place."""
    with atomic_write(path) as (f, _):
        torch.save(obj, f)
    return Path(path)


def plain_value(value, where: str = "meta"):
    """``value`` as data that ``torch.load(weights_only=True)`` reads back: None, bool,
    int, float, str, tensors, and lists, tuples and dicts (str or int keys) of them.
    NumPy scalars become Python numbers, NumPy arrays tensors, paths strings, dates and
    times ISO 8601 strings; anything else raises TypeError naming ``where``, so that a
    file :func:`save` writes can always be loaded."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if type(value) in (list, tuple):
        return type(value)(plain_value(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        bad = [k for k in value if type(k) not in (str, int)]
        if bad:
            raise TypeError(f"{where} has a key {bad[0]!r}: keys must be str or int")
        return {k: plain_value(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(
        f"{where} is a {type(value).__name__}, which a checkpoint cannot hold safely; "
        f"store it as a number, string, list, dict, NumPy array or tensor"
    )


def save(model, path: str | os.PathLike, **meta) -> Path:
    """Save ``model`` (an ``MLPVAE`` or ``ConvVAE``) with its config; ``meta``: extras
    (numbers, strings, lists, dicts, arrays, tensors, paths, dates: see
    :func:`plain_value`; other types raise TypeError before anything is written)."""
    name = type(model).__name__
    if name not in MODELS:
        raise TypeError(f"can only save {', '.join(MODELS)} models, got {name}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save(
        {
            "format": FORMAT,
            "model": name,
            "config": plain_value(model.config, "model.config"),
            "state_dict": state,
            "meta": {k: plain_value(v, f"meta[{k!r}]") for k, v in meta.items()},
        },
        path,
    )


def read_safely(
    path: str | os.PathLike,
    formats: tuple[str, ...],
    what: str = "betavae_lib checkpoint",
) -> dict:
    """The dict in ``path``, read with ``torch.load(weights_only=True)`` (tensors,
    numbers, strings and containers, never code), whose ``format`` is one of
    ``formats``; anything else raises :class:`CheckpointError` naming the file (``what``
    names the kind of file)."""
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
            f"{path} is an incomplete training state: "
            f"missing {', '.join(sorted(missing))}"
        )
    return ckpt


def configs_equal(a, b) -> bool:
    """Equality that treats tuples and lists alike (configs hold lists after a round
    trip)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(configs_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(configs_equal(a[k], b[k]) for k in a)
    return a == b


def check_model_matches(ckpt: dict, model, path="checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``model`` has the class and config saved in
    ``ckpt``."""
    name, config = type(model).__name__, getattr(model, "config", None)
    if ckpt["model"] != name or not configs_equal(ckpt["config"], config):
        raise CheckpointError(
            f"{path} holds a {ckpt['model']} with config {ckpt['config']}, "
            f"but the model "
            f"given is a {name} with config {config}; build the model with the saved "
            f"config, or start a new checkpoint"
        )


# ---------------------------------------------------------------------- training states


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


def data_fingerprint(images: torch.Tensor, chunk: int = 1 << 24) -> str:
    """A BLAKE2b digest (hex) of the images' dtype, shape and every byte, in order: any
    change of the pixels, their order, dtype or shape changes it. Read in chunks of
    ``chunk`` elements, so tensors on an accelerator are copied to the host
    piecewise."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{images.dtype} {tuple(images.shape)}".encode())
    flat = images.detach().reshape(-1)
    for start in range(0, flat.numel(), chunk):
        part = flat[start : start + chunk].cpu().contiguous()
        digest.update(part.view(torch.uint8).numpy())
    return digest.hexdigest()


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


# What a config may ask for: a hostile 50 KB file must not make load allocate gigabytes.
MAX_CONFIG_INT = 2**20
MAX_CONFIG_STR = 32
MAX_PARAMETERS = 2**30  # 4 GiB of float32 weights


def _check_layout(ckpt: dict, path) -> None:
    """Raise :class:`CheckpointError` unless a model file has the keys and types
    :func:`load` reads: ``model`` (str), ``config`` (dict), ``state_dict`` (dict of
    tensors) and ``meta`` (dict)."""
    missing = [k for k in ("model", "config", "state_dict") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(missing)}")
    ckpt.setdefault("meta", {})
    for key, kind in (("model", str), ("config", dict), ("state_dict", dict)):
        if not isinstance(ckpt[key], kind):
            raise CheckpointError(
                f"{path}: {key} must be a {kind.__name__}, got a "
                f"{type(ckpt[key]).__name__}"
            )
    if not isinstance(ckpt["meta"], dict):
        raise CheckpointError(f"{path}: meta must be a dict")
    bad = [k for k, v in ckpt["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict[{bad[0]!r}] is not a tensor")


def _check_config_bounds(config: dict, path) -> None:
    """Every value in ``config`` must be a short name (a string of at most
    MAX_CONFIG_STR characters, e.g. ``activation="tanh"``; the model's constructor
    checks it) or an int in [0, MAX_CONFIG_INT], alone or in a list, with at most 64
    such ints."""
    names = [v for v in config.values() if type(v) is str]
    numbers_in = [
        v
        for value in config.values()
        if type(value) is not str
        for v in (value if type(value) is list else [value])
    ]
    if (
        len(numbers_in) > 64
        or not all(type(v) is int and 0 <= v <= MAX_CONFIG_INT for v in numbers_in)
        or not all(len(v) <= MAX_CONFIG_STR for v in names)
    ):
        raise CheckpointError(
            f"{path}: config {str(config)[:200]} asks for more than a model may have "
            f"(at most 64 integers in [0, {MAX_CONFIG_INT}], and names of at most "
            f"{MAX_CONFIG_STR} characters)"
        )


def build_model(cls, config: dict, state_dict: dict, path) -> torch.nn.Module:
    """``cls(**config)`` holding the weights ``state_dict``, built without allocating
    anything before the weights are known to fit: the model is first built on the
    ``meta`` device, its parameter count bounded by MAX_PARAMETERS and every name, shape
    and dtype compared with ``state_dict``; then it takes the file's tensors as they are
    (one floating dtype, e.g. float64 for a float64 model). Raises CheckpointError."""
    _check_config_bounds(config, path)
    description = f"{cls.__name__}({config})"
    try:
        with torch.device("meta"):
            skeleton = cls(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: config does not build {description}: {e}"
        ) from None
    wanted = skeleton.state_dict()
    size = sum(t.numel() for t in wanted.values())
    if size > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path}: {description} would have {size:,} weights, more than "
            f"{MAX_PARAMETERS:,}"
        )
    dtypes = {t.dtype for t in state_dict.values()}
    problems = [f"missing {k}" for k in wanted.keys() - state_dict.keys()]
    problems += [f"unexpected {k}" for k in state_dict.keys() - wanted.keys()]
    problems += [
        f"{k} is {tuple(state_dict[k].shape)}, not {tuple(t.shape)}"
        for k, t in wanted.items()
        if k in state_dict and state_dict[k].shape != t.shape
    ]
    if len(dtypes) > 1 or not all(d.is_floating_point for d in dtypes):
        problems.append(f"the weights must share one floating dtype, got {dtypes}")
    if problems:
        raise CheckpointError(
            f"{path}: weights do not fit {description}: {'; '.join(problems)[:300]}"
        )
    skeleton.load_state_dict(state_dict, assign=True)
    return skeleton


def _config_value(cls, config: dict, key: str):
    """``config[key]``, or the default of ``cls``'s argument ``key`` when the config
    leaves it out (an MLPVAE's config holds ``activation`` only when it is not
    ``"relu"``); None for an argument ``cls`` does not have."""
    if key in config:
        return config[key]
    parameter = inspect.signature(cls).parameters.get(key)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def load(path: str | os.PathLike, expect: type | str | None = None, **expect_config):
    """Rebuild the saved model (in eval mode) and return ``(model, meta)``.

    expect: a model class or name the file must hold; expect_config: config values it
    must have (e.g. ``latent_dim=10``; one the config leaves out has the model's
    default, e.g. ``activation="relu"``). A mismatch raises :class:`CheckpointError`.
    """
    want = expect if isinstance(expect, str) or expect is None else expect.__name__
    if want is not None and want not in MODELS:
        raise CheckpointError(
            f"unknown model {want!r} asked for; valid are {', '.join(MODELS)}"
        )
    ckpt = read(path)
    _check_layout(ckpt, path)
    name, config = ckpt["model"], ckpt["config"]
    if name not in MODELS:
        raise CheckpointError(
            f"{path} holds an unknown model {name!r}; known: {', '.join(MODELS)}"
        )
    if want is not None and want != name:
        raise CheckpointError(f"{path} holds a {name}, not the {want} asked for")
    for k, v in expect_config.items():
        got = _config_value(MODELS[name], config, k)
        if not configs_equal(got, v):
            raise CheckpointError(
                f"{path} holds a {name} with {k}={got!r}, not {v!r} as asked"
            )
    model = build_model(MODELS[name], config, ckpt["state_dict"], path)
    return model.eval(), ckpt["meta"]

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
rebuilds its model too. This module reads and writes both formats; what a training
state records and how ``fit`` resumes from it (random states, run settings, restoring
the optimiser) is :mod:`betavae_lib.resume`.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import os
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

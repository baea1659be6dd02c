"""Save and load models with their configuration; loading never unpickles arbitrary objects.

A model checkpoint is a ``torch.save`` dict of tensors, strings and numbers only:
``{"format", "model", "config", "state_dict", "meta"}``. :func:`load` reads it with
``torch.load(weights_only=True)``, which refuses any other object, and rebuilds the model
from its class name and ``config``. Saves are atomic: a temporary file, flushed to disk, then
renamed into place, so an interrupted save leaves the previous file as it was.

A training state (written by ``fit(checkpoint_path=...)``) has the same keys plus ``optimizer``,
``epoch``, ``step``, ``rng``, ``history`` and ``settings``; :func:`load` rebuilds its model too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .models import MODELS

FORMAT = "betavae_lib.checkpoint/1"
TRAINING_FORMAT = "betavae_lib.training/1"


class CheckpointError(ValueError):
    """A file is not a valid betavae_lib checkpoint, or does not fit the model asked for."""


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flush it to disk, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


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


def _read_safely(path: str | os.PathLike) -> dict:
    """``torch.load(weights_only=True)``: tensors, numbers, strings and containers, never code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a safe betavae_lib checkpoint: it holds objects other than "
            f"tensors, numbers and strings, or is corrupt ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0][:200]})"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path} is not a betavae_lib checkpoint (it holds a {type(ckpt).__name__}, "
            f"not a dict)"
        )
    return ckpt


def read(path: str | os.PathLike) -> dict:
    """The checkpoint dict (a model checkpoint or a training state), read safely; raises :class:`CheckpointError`."""
    ckpt = _read_safely(path)
    if ckpt.get("format") not in (FORMAT, TRAINING_FORMAT):
        raise CheckpointError(
            f"{path} is not a betavae_lib checkpoint (format {FORMAT!r} or "
            f"{TRAINING_FORMAT!r} expected, got {ckpt.get('format')!r})"
        )
    return ckpt


def save_training_state(state: dict, path: str | os.PathLike) -> Path:
    """Atomically save a training state (a dict of tensors and primitives; see ``fit``)."""
    return atomic_torch_save({"format": TRAINING_FORMAT, **state}, path)


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


def _same(a, b) -> bool:
    """Equality that treats tuples and lists alike (configs hold lists after a round trip)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def check_model_matches(ckpt: dict, model, path="checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``model`` has the class and config saved in ``ckpt``."""
    name, config = type(model).__name__, getattr(model, "config", None)
    if ckpt["model"] != name or not _same(ckpt["config"], config):
        raise CheckpointError(
            f"{path} holds a {ckpt['model']} with config {ckpt['config']}, but the model "
            f"given is a {name} with config {config}; build the model with the saved "
            f"config, or start a new checkpoint"
        )


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
        if not _same(got, v):
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

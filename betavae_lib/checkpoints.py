"""Save and load models with their configuration; loading never unpickles arbitrary objects.

A checkpoint is a ``torch.save`` dict of tensors, strings and numbers only:
``{"format", "model", "config", "state_dict", "meta"}``. :func:`load` reads it with
``torch.load(weights_only=True)``, which refuses any other object, and rebuilds the model
from its class name and ``config``. Saves are atomic: a temporary file renamed into place.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .models import MODELS

FORMAT = "betavae_lib.checkpoint/1"


class CheckpointError(ValueError):
    """A file is not a valid betavae_lib checkpoint, or does not fit the model asked for."""


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
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
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": FORMAT, "model": name, "config": model.config,
                              "state_dict": state, "meta": meta}, path)


def read(path: str | os.PathLike) -> dict:
    """The checkpoint dict, read safely (``weights_only=True``); raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a safe betavae_lib checkpoint: it holds objects other than "
                              f"tensors, numbers and strings, or is corrupt ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a betavae_lib checkpoint (format {FORMAT!r} expected)")
    return ckpt


def load(path: str | os.PathLike, expect: type | str | None = None, **expect_config):
    """Rebuild the saved model (in eval mode) and return ``(model, meta)``.

    expect: a model class or name the file must hold; expect_config: config values it must have
    (e.g. ``latent_dim=10``). A mismatch raises :class:`CheckpointError`.
    """
    ckpt = read(path)
    name, config = ckpt["model"], ckpt["config"]
    if name not in MODELS:
        raise CheckpointError(f"{path} holds an unknown model {name!r}; known: {', '.join(MODELS)}")
    want = expect if isinstance(expect, str) or expect is None else expect.__name__
    if want is not None and want != name:
        raise CheckpointError(f"{path} holds a {name}, not the {want} asked for")
    for k, v in expect_config.items():
        got = config.get(k)
        if (list(got) if isinstance(got, (list, tuple)) else got) != (list(v) if isinstance(v, (list, tuple)) else v):
            raise CheckpointError(f"{path} holds a {name} with {k}={got!r}, not {v!r} as asked")
    model = MODELS[name](**config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {name}({config}): {str(e)[:300]}") from None
    return model.eval(), ckpt.get("meta", {})

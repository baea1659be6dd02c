"""What several modules of the library share: argument checks, pixel checks, NumPy
views, devices, seeds and atomic file writes. Private: the public names are re-exported
where they belong (``betavae_lib.pick_device``, ``betavae_lib.seed_everything``, ...).

This module sits at the bottom of the library: it imports nothing from it.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

# ----------------------------------------------------------------------------- numbers


def positive_int(
    name: str,
    value,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    what: str | None = None,
) -> int:
    """``value`` as an ``int`` if it is a whole number in [minimum, maximum], else
    ValueError. Whole floats (``3.0``) and NumPy integers are accepted; bools, strings,
    NaN and infinities are not. ``what`` replaces the default description ("a positive
    integer") in the message.
    """
    whole = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and int(value) == value
    )
    if not whole or value < minimum or (maximum is not None and value > maximum):
        if what is None:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            if maximum is not None:
                what = f"an integer in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- arrays


def to_numpy(x, name: str = "array") -> np.ndarray:
    """A tensor or array-like as a NumPy array (tensors are detached and copied to the
    CPU; bfloat16 and float16 become float32, which NumPy can hold)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as e:
        raise TypeError(
            f"{name} must be an array or tensor, got {type(x).__name__}"
        ) from e


def finite_matrix(x, name: str, columns: str = "latent dimension") -> np.ndarray:
    """A matrix (N, D) of finite numbers: one row per sample, one column per
    ``columns``. float32 and float64 are kept (NumPy's histogram edges depend on the
    precision), other numeric dtypes become float64. Raises TypeError or ValueError
    naming the problem.
    """
    arr = to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must have shape (N, D): one row per sample, one column per "
            f"{columns}; got shape {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} contains NaN or Inf (first at row {bad[0]}, column {bad[1]}); "
            f"metrics need finite values"
        )
    return arr


# ----------------------------------------------------------------------------- images


def as_float_images(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or bool images -> float32 in [0, 1]; float images are returned as
    they are."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(255)
    if batch.dtype == torch.bool:
        return batch.float()
    return batch


def check_pixel_range(
    images: torch.Tensor, name: str = "images", tolerance: float = 0.0
) -> None:
    """Raise ValueError unless every value of the float tensor ``images`` lies in [0, 1]
    (widened by ``tolerance``). One pass over the data; a NaN anywhere fails."""
    lo, hi = (v.item() for v in torch.aminmax(images.detach()))
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} contain NaN values: got values in [nan, nan]")
    if not (lo >= -tolerance and hi <= 1 + tolerance):
        hint = ""
        if hi > 1:
            hint = "; divide uint8 pixel values by 255"
        elif lo < 0:
            hint = "; decoder outputs are logits: map them with torch.sigmoid"
        raise ValueError(
            f"float {name} must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}"
        )


# ----------------------------------------------------------------------- devices, seeds


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda if available, then mps, then cpu; anything else is passed to
    ``torch.device`` (a CUDA device where CUDA is missing raises RuntimeError)."""
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
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def model_device(model) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- files


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = ".tmp"):
    """Write ``path`` all or nothing: yields ``(file, temporary_path)``, a binary file
    beside ``path``; when the block ends normally the file is flushed to disk and
    renamed over ``path``, otherwise it is deleted and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, Path(tmp)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

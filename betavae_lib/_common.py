"""What several modules of the library share: argument checks, pixel checks, NumPy
views, devices, seeds and atomic file writes. Private: the public names are re-exported
where they belong (``betavae_lib.pick_device``, ``betavae_lib.seed_everything``, ...).

This module sits at the bottom of the library: it imports nothing from it.
"""

from __future__ import annotations

import contextlib
import glob
import math
import numbers
import os
import random
import re
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

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


MAX_SEED = 2**64 - 1  # torch's generators take seeds up to 64 bits


def check_seed(name: str, value) -> int:
    """A seed as an ``int`` in [0, 2**64 − 1] (what torch's generators accept), else
    ValueError naming ``name``."""
    return positive_int(
        name,
        value,
        minimum=0,
        maximum=MAX_SEED,
        what="a non-negative integer below 2**64",
    )


def real_number(
    name: str, value, *, minimum: float = 0.0, strict: bool = False, unit: str = ""
) -> float:
    """``value`` as a finite ``float`` that is >= ``minimum`` (> with ``strict``), else
    ValueError naming ``name`` and the valid range (``unit`` follows the bound, e.g.
    " nats"); strings and other non-numbers raise TypeError."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number, got the string {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a number, got {type(value).__name__}"
        ) from None
    if not (number > minimum if strict else number >= minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {minimum:g}{unit}, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


SCHEDULE_KINDS = ("constant", "linear", "cyclical")  # betavae_lib.schedules.SCHEDULES


def schedule_number(name: str, value) -> float:
    """``value`` as a finite float >= 0, for an option that is a number or a schedule
    (``beta``, ``capacity``): a string raises ValueError and another non-number
    TypeError, each saying that a schedule is accepted too."""
    if isinstance(value, str):
        raise ValueError(
            f"{name} must be a number or a schedule ({', '.join(SCHEDULE_KINDS)}), "
            f"got the string {value!r}"
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a number or a schedule (a callable step -> value, e.g. "
            f"{', '.join(SCHEDULE_KINDS)}), got {type(value).__name__}"
        ) from None
    return real_number(name, number)


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
    if len(arr) == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}, need at least one row")
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


def check_flag(name: str, value) -> bool:
    """``value`` if it is True or False; otherwise a TypeError naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_amp(amp, device: torch.device) -> bool:
    """``amp`` as a bool (see :func:`check_flag`), refused where bfloat16 autocast is
    not supported (devices other than cuda and cpu)."""
    amp = check_flag("amp", amp)
    if amp and device.type not in ("cuda", "cpu"):
        raise ValueError(
            f"amp=True (bfloat16 autocast) is supported on cuda and cpu, "
            f"not {device.type}"
        )
    return amp


ON_VALUES = ("on", "1", "true", "yes")
OFF_VALUES = ("off", "0", "false", "no")


def env_flag(name: str, default: bool) -> bool:
    """The on/off environment variable ``name``: ``default`` when unset or empty, True
    for on/1/true/yes, False for off/0/false/no (any case); anything else is a
    ValueError naming the variable, never silently one or the other."""
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if not value:
        return default
    if value in ON_VALUES:
        return True
    if value in OFF_VALUES:
        return False
    raise ValueError(
        f"${name} must be one of {', '.join(ON_VALUES)} (on) or "
        f"{', '.join(OFF_VALUES)} (off), got {raw!r}"
    )


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


# A temporary file older than this is stale even if its writer's PID is alive (PIDs are
# reused; a save takes seconds).
STALE_TEMPORARY_SECONDS = 24 * 3600


def _writer_is_gone(temporary: Path, path: Path, suffix: str) -> bool:
    """Whether ``temporary``, a file :func:`atomic_write` made for ``path`` (named
    ``<name>.<host>.<pid>.<random><suffix>``, or ``<name>.<random><suffix>`` by earlier
    versions), was left by a writer that has ended: one on this host whose PID is not
    alive, or any writer when the file has not changed for STALE_TEMPORARY_SECONDS."""
    middle = temporary.name[len(path.name) + 1 : -len(suffix)].split(".")
    if len(middle) not in (1, 3) or not re.fullmatch(r"[a-z0-9_]{8}", middle[-1]):
        return False  # not a name atomic_write gives
    try:
        if time.time() - temporary.stat().st_mtime > STALE_TEMPORARY_SECONDS:
            return True
    except OSError:
        return False
    if len(middle) == 1 or middle[0] != _HOST or not middle[1].isdigit():
        return False  # an earlier version's name, or another machine's writer
    try:
        os.kill(int(middle[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False


_HOST = socket.gethostname().replace(".", "-")


def remove_stale_temporaries(path: Path, suffix: str) -> list[Path]:
    """Delete the temporary files that interrupted writes of ``path`` left beside it
    (``<name>.*<suffix>`` whose writer is gone, see :func:`_writer_is_gone`); returns
    them."""
    removed = []
    for temporary in path.parent.glob(f"{glob.escape(path.name)}.*{suffix}"):
        if _writer_is_gone(temporary, path, suffix):
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
                removed.append(temporary)
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = ".tmp"):
    """Write ``path`` all or nothing: yields ``(file, temporary_path)``, a binary file
    beside ``path``; when the block ends normally the file is flushed to disk and
    renamed over ``path``, otherwise it is deleted and ``path`` is left as it was.

    The temporary file is named ``<name>.<host>.<pid>.<random><suffix>``. A process
    killed mid-write (``kill -9``, power loss) cannot delete it, so each write first
    removes the temporaries of earlier writes of the same ``path`` whose writer is
    gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, suffix)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f"{path.name}.{_HOST}.{os.getpid()}.", suffix=suffix
    )
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, Path(tmp)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------- dynamic binarisation

# Mixed with a run's seed to seed the streams that must not share its generators:
# the binarisation draws ("bina" in ASCII) and the evaluation noise ("eval").
_BINARIZE_STREAM = 0x62696E61
_EVALUATE_STREAM = 0x6576616C


def derived_seed(seed: int, stream: int) -> int:
    """A seed for ``stream`` derived from a run's ``seed`` (NumPy's ``SeedSequence`` of
    the two): fixed by the seed, yet independent of the batch order and the sampling
    noise, whose generators ``seed`` seeds directly."""
    entropy = [int(seed) % 2**64, stream]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def binarize_generator(seed: int, device: str | torch.device) -> torch.Generator:
    """The generator of a run's dynamic binarisation, on ``device`` (seeded by
    :func:`derived_seed`). ``fit(seed=s, binarize=True)`` and a ``fit_ensemble`` member
    with seed ``s`` draw from the same stream."""
    return torch.Generator(device=device).manual_seed(
        derived_seed(seed, _BINARIZE_STREAM)
    )


def evaluation_seed(seed: int) -> int:
    """The seed of the posterior samples with which a run's test metrics are computed.
    Evaluation draws from a generator of its own, restarted at this seed for every
    evaluation, so asking for test metrics never changes the trained weights and every
    epoch is scored on the same noise."""
    return derived_seed(seed, _EVALUATE_STREAM)


@contextlib.contextmanager
def seeded_noise(seed: int, device: torch.device):
    """Run the block with ``device``'s default generator seeded with ``seed``, and give
    the generator its state back afterwards: draws made inside (``randn_like`` in a
    model's forward) neither depend on nor advance the caller's stream."""
    device = torch.device(device)
    if device.type == "cuda":
        index = (
            device.index if device.index is not None else torch.cuda.current_device()
        )
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            torch.cuda.default_generators[index].manual_seed(seed)
            yield
    elif device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
    else:  # other accelerators: fork and seed every generator torch knows of
        with torch.random.fork_rng(device_type=device.type):
            torch.manual_seed(seed)
            yield


def binarize_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A Bernoulli draw per pixel of the float batch ``x`` (values in [0, 1] are the
    probabilities of a 1): exactly 0 or 1, in ``x``'s dtype, layout and device."""
    return torch.bernoulli(x, generator=generator)


# --------------------------------------------------------------- models and training


def check_vae(model) -> None:
    """Raise TypeError unless ``model`` is a betavae_lib VAE."""
    if (
        not isinstance(model, nn.Module)
        or not hasattr(model, "image_shape")
        or not hasattr(model, "latent_dim")
    ):
        raise TypeError(
            f"model must be a betavae_lib VAE "
            f"(MLPVAE, ConvVAE or a subclass of models.VAE), "
            f"got {type(model).__name__}"
        )


def check_dataset_images(model, images, name: str) -> None:
    """Raise unless ``images`` is a non-empty (N, C, H, W) tensor of the model's image
    shape, float in [0, 1], uint8 or bool (the whole dataset is checked once, before
    training)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor (N, C, H, W), got {type(images).__name__}"
        )
    if images.dim() != 4 or tuple(images.shape[1:]) != model.image_shape:
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, model.image_shape))}) "
            f"for this model, got {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise ValueError(f"{name} is empty")
    if images.dtype not in (torch.uint8, torch.bool) and not images.is_floating_point():
        raise TypeError(
            f"{name} must be float in [0, 1], uint8 (0..255) or bool, "
            f"got dtype {images.dtype}"
        )
    if images.is_floating_point():
        check_pixel_range(images, name)


def _fused_adam_devices() -> list[str]:
    try:  # the list PyTorch itself checks; CPU joined it in 2.4
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return list(_get_fused_kernels_supported_devices())
    except ImportError:
        return ["cuda"]


def adam(parameters, lr: float, device: torch.device, **options) -> torch.optim.Adam:
    """Adam with the fused single-kernel update where this device has it (same update,
    fewer kernels); ``options`` go to ``torch.optim.Adam`` (e.g. ``capturable=``)."""
    fused = device.type in _fused_adam_devices() or None
    return torch.optim.Adam(parameters, lr=lr, fused=fused, **options)


@contextlib.contextmanager
def backend_settings(device: torch.device):
    """cuDNN autotuning on CUDA while training runs unless deterministic
    algorithms are asked for."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old

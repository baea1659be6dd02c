"""A model cache the chapters share, and :func:`train_grid`, which trains through it.

:func:`train_grid` returns a grid of trained models: each one is loaded from the cache
when an entry for exactly its settings exists, and the missing ones are trained
together, as one ensemble per architecture (:func:`betavae_lib.ensemble.fit_ensemble`),
then stored. So a chapter that trains the models another chapter already trained (in the
same run profile) loads them, and a reader who opens that chapter alone trains them.

An entry's key is the SHA-256 of everything that determines the result: the model class
and config, the objective (schedules by value), the content hash of the training images
(:func:`betavae_lib.checkpoints.data_fingerprint`; and of the test images, which the
History depends on), epochs, batch size, learning rate, dynamic binarisation (when on),
seed and the library version. An entry is one file,
``$BETAVAE_CACHE_DIR/models/<key>.pt`` (default ``~/.cache/betavae_lib/models/``),
written atomically by :func:`betavae_lib.checkpoints.save` with the History and the key
beside the weights, and read back with ``weights_only`` loading. An entry that cannot
be read, or whose stored key and settings are not the ones asked for, is never trusted:
the model is retrained with a :class:`ModelCacheWarning` and the entry rewritten.
``BETAVAE_CACHE=off`` turns the cache off (nothing is read or written); values other
than on/1/true/yes and off/0/false/no are refused. A β or capacity schedule enters the
key by its class, its fields and the value it gives at every step of the run, so a
schedule whose formula changed is a miss. Only the library's own model classes
(``MLPVAE``, ``ConvVAE``) are cached; models of another class (a subclass) are trained
every time, with a :class:`ModelCacheWarning`.

``BETAVAE_CUDA_GRAPH=1`` makes :func:`train_grid` capture its training steps in a CUDA
graph on CUDA devices (``fit_ensemble(cuda_graph=True)``). ``BETAVAE_AMP=bf16`` (or
``1``) makes it train in bfloat16 autocast (``amp=True``) unless a call says
otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from . import _version, checkpoints
from ._common import (
    OFF_VALUES,  # noqa: F401 (the values that turn BETAVAE_CACHE off)
    check_flag,
    check_seed,
    env_flag,
    pick_device,
    positive_int,
    real_number,
    seed_everything,
)
from .data import cache_dir
from .ensemble import fit_ensemble
from .objective import Objective
from .train import History

CACHE_FORMAT = "betavae_lib.model_cache/1"
OBJECTIVE_FIELDS = {f.name for f in dataclasses.fields(Objective)}


class ModelCacheWarning(UserWarning):
    """A cache entry was unreadable or stale and its model is being retrained."""


def cache_enabled() -> bool:
    """False when ``$BETAVAE_CACHE`` is ``off`` (or 0, false, no); True when it is
    unset, empty, on, 1, true or yes; any other value raises ValueError."""
    return env_flag("BETAVAE_CACHE", True)


def cacheable(model_class: type) -> bool:
    """Whether entries can hold models of ``model_class``: the library's own classes
    (what :func:`betavae_lib.checkpoints.load` rebuilds), not subclasses or
    namesakes."""
    return checkpoints.MODELS.get(getattr(model_class, "__name__", None)) is model_class


def models_dir() -> Path:
    """Where entries live: ``$BETAVAE_CACHE_DIR/models`` (see ``data.cache_dir``)."""
    return cache_dir() / "models"


def entry_key(parts: dict) -> str:
    """The key of an entry: SHA-256 of ``parts`` as canonical JSON."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def key_parts(
    model_class: type,
    config: dict,
    objective: Objective,
    seed: int,
    training: dict,
    steps: int | None = None,
) -> dict:
    """Everything that determines a trained model and its History, as JSON values.

    training: what all members of a grid share (:func:`training_parts`). steps: the
    run's optimiser steps; an objective with a schedule then also enters the key by
    the coefficients it gives at every step (:func:`schedule_digest`), so that a
    schedule whose formula changed under the same name and fields is a miss.
    """
    parts = {
        "format": CACHE_FORMAT,
        "library": _version.__version__,
        "model": model_class.__name__,
        "config": json.loads(json.dumps(config)),
        "objective": objective.describe(),
        **training,
        "seed": int(seed),
    }
    if steps is not None and (callable(objective.beta) or callable(objective.capacity)):
        parts["schedule_values"] = schedule_digest(objective, steps)
    return parts


def schedule_digest(objective: Objective, steps: int) -> str:
    """SHA-256 of the objective's coefficients at steps 0 … steps − 1 (float64)."""
    digest = hashlib.sha256()
    for step in range(steps):
        digest.update(struct.pack("<6d", *map(float, objective.coefficients(step))))
    return digest.hexdigest()


def training_parts(
    images,
    test_images,
    epochs: int,
    batch_size: int,
    lr: float,
    binarize: bool = False,
    amp: bool = False,
):
    """The cache-key parts shared by a grid: content hashes of the training and test
    images, the training length, batch size and learning rate, and ``binarize`` and
    ``amp`` (each only when True, so the keys of runs without them are the ones they
    always had)."""
    parts = {
        "train_images": checkpoints.data_fingerprint(images),
        "test_images": (
            None if test_images is None else checkpoints.data_fingerprint(test_images)
        ),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
    }
    if test_images is not None:
        # Test metrics draw their own noise (train.evaluation_seed); models trained
        # while evaluation shared the training stream differ, so they are not reused.
        parts["evaluation"] = "own-noise"
    if binarize:
        parts["binarize"] = True
    if amp:
        parts["amp"] = True
    return parts


AMP_ENV = "BETAVAE_AMP"


def amp_from_env() -> bool:
    """``$BETAVAE_AMP`` as :func:`train_grid`'s default ``amp``: ``bf16``, ``1`` or
    ``true`` train in bfloat16 autocast; unset, empty, ``0``, ``fp32`` or ``false`` in
    float32; anything else raises ValueError naming the variable."""
    value = os.environ.get(AMP_ENV, "").strip().lower()
    if value in ("bf16", "1", "true"):
        return True
    if value in ("", "0", "fp32", "false"):
        return False
    raise ValueError(
        f"{AMP_ENV}={value!r} is not understood: use bf16 (or 1) for bfloat16 "
        f"autocast, fp32 (or 0, or unset) for float32"
    )


class ModelCache:
    """Entries under ``root`` (default :func:`models_dir`); ``enabled`` defaults to
    :func:`cache_enabled`. :meth:`load` returns None on a miss, and on an entry it
    does not trust (with a warning)."""

    def __init__(self, root: str | os.PathLike | None = None, enabled=None):
        self.root = Path(root).expanduser() if root is not None else models_dir()
        self.enabled = (
            cache_enabled() if enabled is None else check_flag("enabled", enabled)
        )

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str, parts: dict):
        """``(model, history)`` stored under ``key`` for ``parts``, or None."""
        path = self.path(key)
        if not self.enabled or not path.is_file():
            return None
        try:
            model, meta = checkpoints.load(path)
        except (checkpoints.CheckpointError, OSError) as e:
            reason = f"it cannot be read ({str(e).splitlines()[0][:160]})"
        else:
            reason = _stale_reason(meta, key, parts, model)
            if reason is None:
                return model, History.from_dict(meta["history"])
        warnings.warn(
            f"model cache entry {path} is not used: {reason}; the model is retrained "
            f"and the entry rewritten",
            ModelCacheWarning,
            stacklevel=3,
        )
        return None

    def store(self, key: str, parts: dict, model, history: History) -> Path | None:
        """Write the entry atomically; a cache that cannot be written only warns."""
        if not self.enabled:
            return None
        try:
            return checkpoints.save(
                model,
                self.path(key),
                cache=CACHE_FORMAT,
                key=key,
                parts=parts,
                history=history.as_dict(),
            )
        except (OSError, TypeError, ValueError) as e:  # the trained model is kept
            warnings.warn(
                f"could not write the model cache entry {self.path(key)} ({e}); the "
                f"model is returned but not cached",
                ModelCacheWarning,
                stacklevel=3,
            )
            return None


def _stale_reason(meta: dict, key: str, parts: dict, model) -> str | None:
    if meta.get("cache") != CACHE_FORMAT or meta.get("key") != key:
        return "it was written for other settings (its stored key differs)"
    if meta.get("parts") != parts:
        return "its stored settings differ from the ones asked for"
    if type(model).__name__ != parts["model"] or not isinstance(
        meta.get("history"), dict
    ):
        return "it holds another model or no History"
    return None


def _label(key) -> str:
    return " / ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def _split_spec(spec, default_seed: int) -> tuple[Objective, dict, int]:
    """A grid entry -> (objective, model config overrides, seed)."""
    if isinstance(spec, Objective):
        return spec, {}, default_seed
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"a grid entry must be an Objective or a dict of its options (plus seed= "
            f"and model config overrides), got {type(spec).__name__}"
        )
    spec = dict(spec)
    seed = check_seed("seed", spec.pop("seed", default_seed))
    objective = Objective(**{k: v for k, v in spec.items() if k in OBJECTIVE_FIELDS})
    return objective, {k: v for k, v in spec.items() if k not in OBJECTIVE_FIELDS}, seed


def train_grid(
    model_class: type,
    config: dict,
    images: torch.Tensor,
    grid: Mapping,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    test_images: torch.Tensor | None = None,
    device: str | torch.device = "auto",
    cache: ModelCache | None = None,
    cuda_graph: bool | None = None,
    progress: bool = False,
    verbose: bool = True,
    binarize: bool = False,
    amp: bool | None = None,
) -> tuple[dict, dict]:
    """Trained models and their Histories for every entry of ``grid``: ``(models,
    histories)``, both keyed like ``grid``; the models on the CPU, in eval mode.

    model_class, config: the architecture (``MLPVAE``, ``dict(latent_dim=20)``). grid:
    key -> an :class:`~betavae_lib.objective.Objective`, or a dict of its options
    (``beta=``, ``capacity=``, ...) that may also hold ``seed=`` and overrides of
    ``config`` (``latent_dim=64``). Member ``key`` is ``model_class(**config)`` built
    after ``seed_everything(seed)`` and trained as ``fit(..., seed=seed)`` would train
    it; missing members with one architecture train as one ensemble. images,
    test_images, epochs, batch_size, lr, device, binarize, amp: as for ``fit``
    (amp: default :func:`amp_from_env`). cache: a
    :class:`ModelCache` (default: the shared one, off with ``BETAVAE_CACHE=off``).
    cuda_graph: default ``BETAVAE_CUDA_GRAPH=1`` on a CUDA device. verbose: print one
    line saying, per model, "trained" or "loaded from cache".
    """
    if not isinstance(grid, Mapping):
        raise TypeError(
            f"grid must be a dict key -> Objective (or dict of its options), got a "
            f"{type(grid).__name__}; e.g. {{'beta=4': {{'beta': 4.0}}}}"
        )
    if cache is None:
        cache = ModelCache()
    elif not isinstance(cache, ModelCache):
        raise TypeError(f"cache must be a ModelCache, got {type(cache).__name__}")
    device, epochs, batch_size, lr, amp, cuda_graph = _check_training_options(
        device, seed, epochs, batch_size, lr, amp, cuda_graph
    )
    use_cache = _cacheable_or_warn(model_class, cache)
    shared = training_parts(
        images,
        test_images,
        epochs,
        batch_size,
        lr,
        check_flag("binarize", binarize),
        check_flag("amp", amp),
    )
    steps = epochs * math.ceil(len(images) / batch_size)
    models, histories, status, members = {}, {}, {}, {}
    for key, spec in grid.items():
        member = _member(model_class, config, spec, seed, shared, steps)
        found = cache.load(member.entry, member.parts) if use_cache else None
        if found is not None:
            models[key], histories[key] = found
            status[key] = "loaded from cache"
        else:
            members[key] = member
    groups = _groups(members)
    options = dict(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        device=device,
        test_images=test_images,
        progress=progress,
        cuda_graph=cuda_graph,
        binarize=binarize,
        amp=amp,
    )
    t0 = time.perf_counter()
    for keys in groups.values():
        to_train = {key: members[key] for key in keys}
        result, built = _train_group(model_class, to_train, images, options)
        for key in keys:
            model = built[key].cpu().eval()
            models[key], histories[key] = model, result.histories[key]
            status[key] = _store_trained(
                cache if use_cache else None, members[key], model, result, key
            )
    if verbose:
        seconds = time.perf_counter() - t0
        _print_status(model_class, grid, status, len(groups), seconds, cache.enabled)
    order = list(grid)
    return {k: models[k] for k in order}, {k: histories[k] for k in order}


def _check_training_options(device, seed, epochs, batch_size, lr, amp, cuda_graph):
    """:func:`train_grid`'s training options, checked: ``(device, epochs, batch_size,
    lr, amp, cuda_graph)`` with the defaults of amp and cuda_graph filled in."""
    device = pick_device(device)
    check_seed("seed", seed)
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    if isinstance(lr, bool):
        raise TypeError(f"lr must be a number, got {lr!r}")
    lr = real_number("lr", lr, strict=True)
    amp = amp_from_env() if amp is None else amp
    if cuda_graph is None:
        graph_env = env_flag("BETAVAE_CUDA_GRAPH", False)
        cuda_graph = device.type == "cuda" and graph_env
    check_flag("cuda_graph", cuda_graph)
    return device, epochs, batch_size, lr, amp, cuda_graph


def _cacheable_or_warn(model_class, cache: ModelCache) -> bool:
    """Whether models of ``model_class`` can be stored in the cache; when they cannot
    and the cache is on, warn (at :func:`train_grid`'s caller) that they are trained
    every time."""
    use_cache = cacheable(model_class)
    if not use_cache and cache.enabled:
        warnings.warn(
            f"{getattr(model_class, '__name__', model_class)} models cannot be stored "
            f"in the model cache (it holds the library's "
            f"{', '.join(checkpoints.MODELS)} models only): they are trained every "
            f"time",
            ModelCacheWarning,
            stacklevel=3,
        )
    return use_cache


def _groups(members: dict) -> dict[str, list]:
    """The keys of ``members`` (key -> :class:`_Member`) grouped by model config and
    likelihood: each group trains as one ensemble."""
    groups: dict[str, list] = {}
    for key, member in members.items():
        group = json.dumps([member.config, member.objective.likelihood], sort_keys=True)
        groups.setdefault(group, []).append(key)
    return groups


def _store_trained(cache, member, model, result, key) -> str:
    """Store the trained ``model`` of ``member`` in ``cache`` (None: not cached) unless
    it diverged; returns its status line."""
    if key in result.failed:
        return f"diverged at step {result.failed[key]}, not cached"
    if cache is not None:
        cache.store(member.entry, member.parts, model, result.histories[key])
    return "trained" if cache is not None else "trained, not cached"


class _Member(NamedTuple):
    """A grid entry to train: its objective, model config and seed, and its cache key
    with the parts it hashes."""

    objective: Objective
    config: dict
    seed: int
    entry: str
    parts: dict


def _member(model_class, config, spec, default_seed: int, shared, steps) -> _Member:
    """The grid entry ``spec`` as a :class:`_Member` (its key from
    :func:`key_parts`)."""
    objective, overrides, seed = _split_spec(spec, default_seed)
    member_config = {**config, **overrides}
    parts = key_parts(model_class, member_config, objective, seed, shared, steps)
    return _Member(objective, member_config, seed, entry_key(parts), parts)


def _train_group(model_class, group: dict, images, options: dict):
    """Build the members of ``group`` (key -> :class:`_Member`), each after
    ``seed_everything`` of its seed, and train them as one ensemble; returns the
    :class:`~betavae_lib.ensemble.EnsembleResult` and the trained models."""
    built = {}
    for key, member in group.items():
        seed_everything(member.seed)
        built[key] = model_class(**member.config)
    result = fit_ensemble(
        built,
        images,
        objectives={k: m.objective for k, m in group.items()},
        seeds={k: m.seed for k, m in group.items()},
        **options,
    )
    return result, built


def _print_status(model_class, grid, status, ensembles, seconds, enabled) -> None:
    """One line: how many models, whether the cache is on, and each model's status."""
    trained = (
        f"; {ensembles} ensemble(s) trained in {seconds:.0f} s" if ensembles else ""
    )
    off = "" if enabled else " (model cache off)"
    listed = "; ".join(f"{_label(k)}: {status[k]}" for k in grid)
    noun = "model" if len(grid) == 1 else "models"
    print(f"{len(grid)} {model_class.__name__} {noun}{off}{trained} | {listed}")

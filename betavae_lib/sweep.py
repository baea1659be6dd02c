"""Sweeps: train a grid of runs here or on a Ray cluster, then collect their scores.

A **grid** (:class:`Grid`) is a deterministic, index-addressable list of run
configurations (:class:`RunConfig`): the same index always means the same run, as
disentanglement_lib's ``--model_num``. :func:`run` trains every run of a grid that is
not finished and writes, per run, into ``root/runs/NNNNN/`` (NNNNN: the run's index):

- ``checkpoint.pt``: for a run trained alone, the training state written by
  :func:`~betavae_lib.train.fit` after every epoch (weights, optimiser, RNG states),
  from which an interrupted run resumes; for a run trained in an ensemble, a model
  checkpoint (:func:`betavae_lib.checkpoints.save`, with its History in ``meta``)
  written once training ended. ``betavae_lib.load`` and :func:`load_run` rebuild the
  model from either;
- ``record.json``: the configuration and the scores (MIG, FactorVAE score, KL,
  reconstruction, active units), wall times and the device. It is written atomically (a
  temporary file renamed into place) and a run is finished exactly when its record
  exists. ``trainer`` says how the run was trained: ``"fit"`` or ``"ensemble"``;
- ``claim``: present while a worker trains the run.

**Ensembles.** A shard's runs share data, architecture, length and learning rate
(:func:`_shard_key`), so the runs of a shard that are not finished and have no training
state to resume train as one batched model,
:func:`~betavae_lib.ensemble.fit_ensemble`, each with its own seed and
:class:`~betavae_lib.objective.Objective`; then each is scored and recorded as a run
trained alone would be. A member takes the batches and noise ``fit`` gives the run
alone; on the CPU its weights, History and scores are ``fit``'s bit for bit (on any
CPU: the ensemble makes ``fit``'s kernel calls, see :mod:`betavae_lib.ensemble`), on
CUDA (the "grouped" layout) to float32 rounding. So on CUDA a run's numbers depend, to
that rounding, on the ensemble it trained in; the same shards give the same numbers
bit for bit. A member whose
loss stops being finite is frozen by the ensemble and recorded as failed, naming the
step; the other members train on. An ensemble keeps no training state: interrupted
mid-training, its runs have no checkpoint and the next sweep trains them again from the
start (to the same numbers). A run that has a training state (a run trained alone and
interrupted) resumes alone with ``fit(resume=True)``, and a lone run (a shard of one)
trains alone with ``fit``, checkpointing every epoch. ``batch_runs=False`` trains every
run alone.

``root/grid.json`` holds the grid's configurations; a root accepts only the grid that
created it or one that extends it (runs appended at the end), so an index never changes
meaning in a root. :func:`collect` reads every record into one pandas DataFrame; a
damaged record is skipped with a :class:`SweepWarning` naming it, and :func:`run`
trains that run again. A grid holds every run once (a run listed twice is refused)
and at most :data:`MAX_GRID_RUNS` runs, a bound checked before any axis is expanded.

**Claims.** A worker claims a run by creating ``claim`` with ``os.open(O_CREAT |
O_EXCL)``, which succeeds for exactly one worker (also on NFS v3 and later), and removes
it when the run ends or fails. While a run trains, a thread touches the claim every
``stale_after / 4`` seconds. A claim is *stale* when its holder ran on this host and is
no longer running, or when nobody has touched it for ``stale_after`` seconds (a holder
on another machine that died); a stale claim is removed and the run claimed anew,
resuming from its checkpoint. Breaking a claim is serialised by a second lock file,
``claim.break``, so two workers never break the same claim and then both train.
``stale_after`` must exceed any pause of a live worker (a suspended laptop, a frozen NFS
mount), and is at least :data:`MIN_STALE_AFTER` seconds. A checkpoint that cannot be
read fails its run (naming the file), never the claims of the others.

**Backends.** ``"local"`` trains in this process; ``"ray"`` sends each shard of runs to
a Ray task with its CPU/GPU request, on an existing cluster (``address``) or on a Ray
instance started here. Both call the same function, :func:`_train_shard`, with the same
seeds, thread count and deterministic-algorithm setting, so a run's numbers do not
depend on the backend (on the same device type, for the same shards).
By default the local backend makes one shard of all runs that can share an ensemble, and
the Ray backend one shard per run (one task per CPU); give Ray ``shard_size`` > 1 and a
GPU per shard to train ensembles on a cluster. A shard's request that no node of the
cluster can meet raises :class:`SweepError` after ``connect_timeout`` seconds (nodes may
join meanwhile), instead of waiting forever. Ray is optional: ``pip install
"betavae_lib[ray]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import numbers
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoints
from ._common import MAX_SEED, check_flag
from .data import load_dataset
from .ensemble import fit_ensemble
from .metrics import active_units, factor_vae_score, mig
from .models import ConvVAE
from .objective import Objective
from .profile import Profile, get_profile
from .schedules import Linear
from .train import NonFiniteLossError, evaluate, fit, pick_device, seed_everything

RECORD_FORMAT = "betavae_lib.sweep.record/1"
BACKENDS = ("local", "ray")

# objective -> its coefficients and their defaults (None: required).
OBJECTIVES = {
    "beta_vae": {"beta": None, "warmup": 0.25},
    "beta_tcvae": {"beta": None, "warmup": 0.25},
    "free_bits": {"beta": None, "free_bits": None, "warmup": 0.25},
    "capacity": {"capacity": None, "gamma": 1000.0},
}
OBJECTIVES_DOC = """\
beta_vae    recon + β·KL; β rises from 0 over the first `warmup` fraction of steps
beta_tcvae  recon + MI + β·TC + dimension-wise KL (Chen et al. 2018); β warmed up
free_bits   recon + β·Σ_d max(KL_d, free_bits), free_bits in nats; β warmed up
capacity    recon + γ·|KL − C|, C rising from 0 to `capacity` nats over training"""

# datasets with known factors of variation (the scores need them) -> number of images.
DATASET_SIZES = {"dsprites": 737_280}


class SweepError(RuntimeError):
    """A sweep cannot go on: a root holding another grid, or a disagreeing record."""


class SweepWarning(UserWarning):
    """A damaged file of a sweep root was skipped (collect) or its run trained again."""


# Bounds checked before anything is expanded, so that a spec or an index list can never
# make the sweep allocate without limit.
MAX_GRID_RUNS = 100_000  # runs in one grid
MAX_SPEC_NODES = 100_000  # values in a spec (YAML aliases counted at every use)
MAX_NAME_LENGTH = 200  # characters of a grid's name
MIN_STALE_AFTER = 60.0  # seconds (a shared file system may show a claim's time late)
MAX_CONNECT_TIMEOUT = 3_600.0  # seconds


def _short(value, limit: int = 120) -> str:
    """``repr(value)``, cut to about ``limit`` characters (a hostile value's repr can be
    gigabytes)."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxdict = r.maxtuple = 8
    r.maxlevel = 3
    return r.repr(value)[: limit + 20]


# ------------------------------------------------------------------ run configurations


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    if (
        not _is_int(value)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        span = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {span}, got {_short(value)}")
    return int(value)


def _check_number(name: str, value, *, low: float = 0.0, high: float = math.inf):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not (low <= value <= high) or not math.isfinite(value):
        span = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number {span}, got {_short(value)}")
    return float(value)


def _check_coefficients(objective: str, given: dict) -> dict:
    """The coefficients, defaults filled in, as floats; unknown names raise."""
    if objective not in OBJECTIVES:
        raise ValueError(
            f"unknown objective {objective!r}; valid are {', '.join(OBJECTIVES)}:\n"
            f"{OBJECTIVES_DOC}"
        )
    known = OBJECTIVES[objective]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(
            f"unknown coefficient(s) {', '.join(map(repr, unknown))} for objective "
            f"{objective!r}; its coefficients are {', '.join(known)}, and run settings "
            f"are {', '.join(f for f in CONFIG_FIELDS if f != 'coefficients')}"
        )
    missing = [
        name for name, default in known.items() if default is None and name not in given
    ]
    if missing:
        raise ValueError(
            f"objective {objective!r} needs coefficient(s) {', '.join(missing)}"
        )
    values = {name: given.get(name, default) for name, default in known.items()}
    return {
        name: _check_number(
            f"coefficient {name!r}", value, high=1.0 if name == "warmup" else math.inf
        )
        for name, value in values.items()
    }


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run: objective, seed, data, training, scoring.

    objective: a key of :data:`OBJECTIVES`; coefficients: its coefficients (defaults
    filled in). seed: seeds the initial weights, the batch order, the sampling noise and
    the FactorVAE votes. dataset: ``"dsprites"``; train_size: images drawn (without
    replacement, seeded by ``data_seed``) from the factor grid, None for all of it; the
    evaluation images (``eval_size``, for MIG, KL, reconstruction and active units) are
    drawn with ``data_seed + 1``. latent_dim, width, hidden: the
    :class:`~betavae_lib.models.ConvVAE`. factor_vae_*: the FactorVAE protocol (training
    votes, evaluation votes, images for the variances, batch size).
    """

    objective: str
    coefficients: dict
    seed: int = 0
    dataset: str = "dsprites"
    train_size: int | None = None
    data_seed: int = 0
    epochs: int = 1
    batch_size: int = 64
    lr: float = 5e-4
    latent_dim: int = 10
    width: int = 32
    hidden: int = 256
    eval_size: int = 10_000
    factor_vae_train: int = 5_000
    factor_vae_eval: int = 2_500
    factor_vae_variance: int = 10_000
    factor_vae_batch: int = 64
    amp: bool = False

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        set_("amp", check_flag("amp", self.amp))
        if not isinstance(self.coefficients, dict):
            raise TypeError(
                f"coefficients must be a dict, got {type(self.coefficients).__name__}"
            )
        set_("coefficients", _check_coefficients(self.objective, self.coefficients))
        if self.dataset not in DATASET_SIZES:
            raise ValueError(
                f"unknown dataset {self.dataset!r}: sweeps score disentanglement, "
                f"which needs known factors of variation; valid are "
                f"{', '.join(DATASET_SIZES)}"
            )
        for name in ("seed", "data_seed"):
            set_(name, _check_int(name, getattr(self, name), 0, MAX_SEED))
        for name, minimum in (
            ("epochs", 1),
            ("batch_size", 1),
            ("latent_dim", 2),
            ("width", 1),
            ("hidden", 1),
            ("eval_size", 2),
            ("factor_vae_train", 1),
            ("factor_vae_eval", 1),
            ("factor_vae_variance", 2),
            ("factor_vae_batch", 2),
        ):
            set_(name, _check_int(name, getattr(self, name), minimum))
        size = DATASET_SIZES[self.dataset]
        if self.train_size is not None:
            set_("train_size", _check_int("train_size", self.train_size, 1))
            if self.train_size > size:
                raise ValueError(
                    f"train_size {self.train_size} exceeds the {size:,} images of "
                    f"{self.dataset}; use None for all of them"
                )
        if self.eval_size > size:
            raise ValueError(f"eval_size {self.eval_size} exceeds {size:,} images")
        set_("lr", _check_number("lr", self.lr))
        if self.lr == 0:
            raise ValueError("lr must be > 0")
        self._check_model_size()

    def _check_model_size(self) -> None:
        """Refuse a model too large to build: at most checkpoints.MAX_PARAMETERS
        weights."""
        size = _model_size(self.latent_dim, self.width, self.hidden)
        if size > checkpoints.MAX_PARAMETERS:
            raise ValueError(
                f"latent_dim={self.latent_dim}, width={self.width}, hidden="
                f"{self.hidden} make a ConvVAE of {size:,} weights, more than "
                f"{checkpoints.MAX_PARAMETERS:,}"
            )

    @property
    def n_train(self) -> int:
        """Training images."""
        return (
            DATASET_SIZES[self.dataset] if self.train_size is None else self.train_size
        )

    @property
    def steps(self) -> int:
        """Optimiser steps: epochs × batches per epoch."""
        return self.epochs * math.ceil(self.n_train / self.batch_size)

    def model_config(self) -> dict:
        """Keyword arguments of the :class:`~betavae_lib.models.ConvVAE`."""
        return {
            "latent_dim": self.latent_dim,
            "image_size": 64,
            "width": self.width,
            "hidden": self.hidden,
        }

    def fit_options(self) -> dict:
        """The objective as :func:`~betavae_lib.train.fit` keyword arguments."""
        c = self.coefficients
        if self.objective == "capacity":
            return {"capacity": Linear(c["capacity"], self.steps), "gamma": c["gamma"]}
        warm = max(1, int(c["warmup"] * self.steps)) if c["warmup"] > 0 else 0
        options = {"beta": Linear(c["beta"], warm) if warm else c["beta"]}
        if self.objective == "beta_tcvae":
            options["tc"] = True
        if self.objective == "free_bits":
            options["free_bits"] = c["free_bits"]
        return options

    def to_objective(self) -> Objective:
        """The objective as an :class:`~betavae_lib.objective.Objective`: what
        :meth:`fit_options` makes ``fit`` minimise (for
        :func:`~betavae_lib.ensemble.fit_ensemble`)."""
        return Objective(**self.fit_options())

    def as_dict(self) -> dict:
        """A JSON-ready dict; :meth:`from_dict` is its inverse. ``amp`` appears only
        when True, so the records and grids of float32 runs are the ones they always
        were."""
        values = dataclasses.asdict(self)
        if not values["amp"]:
            del values["amp"]
        return values

    def __hash__(self) -> int:
        return hash(json.dumps(self.as_dict(), sort_keys=True))

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        """Build from :meth:`as_dict`'s output; unknown keys raise."""
        if not isinstance(values, dict):
            raise TypeError(
                f"a run's configuration must be a dict, got {type(values).__name__}"
            )
        return cls(**_split_fields(dict(values)))


CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


@functools.lru_cache(maxsize=64)
def _model_size(latent_dim: int, width: int, hidden: int) -> int:
    """Weights of the run's ConvVAE, counted on the meta device (nothing allocated)."""
    try:
        with torch.device("meta"):
            model = ConvVAE(latent_dim=latent_dim, image_size=64, width=width,
                            hidden=hidden)  # fmt: skip
    except (TypeError, ValueError) as e:
        raise ValueError(f"latent_dim, width, hidden: {e}") from None
    return sum(p.numel() for p in model.parameters())


def _split_fields(flat: dict) -> dict:
    """Flat keys -> RunConfig arguments: keys that are not fields are coefficients."""
    if "objective" not in flat:
        raise ValueError(
            f"every run needs an objective; valid are {', '.join(OBJECTIVES)}"
        )
    coefficients = flat.pop("coefficients", None) or {}
    if not isinstance(coefficients, dict):
        raise TypeError(
            f"coefficients must be a dict, got {type(coefficients).__name__}"
        )
    coefficients = dict(coefficients)
    bad_keys = [k for k in flat if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"run settings are named by strings, got {_short(bad_keys[0])}")
    for key in [k for k in flat if k not in CONFIG_FIELDS]:
        coefficients[key] = flat.pop(key)
    return {**flat, "coefficients": coefficients}


# ----------------------------------------------------------------------------- grids


def _axis_values(name: str, value) -> Sequence:
    """A block value -> its values: a list, ``{"range": [a, b]}`` (a ``range``, not
    expanded) or a scalar."""
    if isinstance(value, dict) and set(value) == {"range"}:
        bounds = value["range"]
        if not (
            isinstance(bounds, list) and len(bounds) == 2 and all(map(_is_int, bounds))
        ):
            raise ValueError(
                f'{name}: "range" takes [start, stop] integers, got {_short(bounds)}'
            )
        value = range(*bounds)
        if not value:
            raise ValueError(f"axis {name!r}: range {list(bounds)} is empty")
        return value
    if isinstance(value, dict):
        raise ValueError(
            f'axis {name!r}: a dict value must be {{"range": [start, stop]}}, got '
            f"{_short(value)}"
        )
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"axis {name!r} has no values")
        return list(value)
    return [value]


def _block_axes(block, base: dict) -> tuple[list, list, int]:
    """A block's names, axes (lists or ranges) and number of runs, before expanding."""
    if not isinstance(block, dict):
        raise TypeError(f"each block must be a dict, got {type(block).__name__}")
    names = list(block)
    axes = [_axis_values(str(name), block[name]) for name in names]
    return names, axes, math.prod(len(axis) for axis in axes)


def _expand_block(block: dict, base: dict) -> list[RunConfig]:
    """Every combination of a block's axes (the first slowest), over the base values."""
    names, axes, _ = _block_axes(block, base)
    return [
        RunConfig.from_dict({**base, **dict(zip(names, values))})
        for values in itertools.product(*axes)
    ]


def _count_nodes(value, limit: int) -> int:
    """The values in a spec (a value reached twice, as through a YAML alias, counts
    twice), counting stops past ``limit``."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, str) and len(item) > 10_000:
            return limit + 1
    return count


class Grid(Sequence):
    """A deterministic, index-addressable list of runs: ``grid[i]`` is run ``i``.

    Build one from a spec (:meth:`from_spec`, :meth:`from_file`), by name
    (:func:`get_grid`), or from a list of configurations.
    """

    def __init__(self, runs, name: str = "grid", spec: dict | None = None):
        self.runs = tuple(itertools.islice(runs, MAX_GRID_RUNS + 1))
        if len(self.runs) > MAX_GRID_RUNS:
            raise ValueError(f"a grid holds at most {MAX_GRID_RUNS:,} runs")
        bad = [type(r).__name__ for r in self.runs if not isinstance(r, RunConfig)]
        if bad:
            raise TypeError(f"a grid holds RunConfig objects, got {bad[0]}")
        if not self.runs:
            raise ValueError("a grid needs at least one run")
        first = {}
        for index, config in enumerate(self.runs):
            identity = tuple(
                tuple(sorted(value.items())) if isinstance(value, dict) else value
                for value in (getattr(config, name) for name in CONFIG_FIELDS)
            )
            if identity in first:
                raise ValueError(
                    f"runs {first[identity]} and {index} of the grid are the same run "
                    f"({config.objective}, {config.coefficients}, seed {config.seed}); "
                    f"it would be trained and counted twice: give each its own seed, "
                    f"or remove one"
                )
            first[identity] = index
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(
                f"a grid's name must be a non-empty string of at most "
                f"{MAX_NAME_LENGTH} characters, got {_short(name)}"
            )
        self.name, self.spec = name, spec

    @classmethod
    def from_spec(cls, spec: dict) -> Grid:
        """A grid from ``{"name": str, "base": {key: value}, "blocks": [{key: ...}]}``.

        Runs are the blocks in order; within a block, every combination of its
        list-valued keys (axes), the first axis varying slowest, over the block's and
        then the base's single values. Keys that are not :class:`RunConfig` fields are
        coefficients of the objective; ``{"range": [a, b]}`` stands for
        ``list(range(a, b))``.
        """
        if not isinstance(spec, dict):
            raise TypeError(
                f"a grid spec must be a dict with keys name, base, blocks, got "
                f"{'nothing (an empty spec)' if spec is None else type(spec).__name__}"
            )
        if _count_nodes(spec, MAX_SPEC_NODES) > MAX_SPEC_NODES:
            raise ValueError(
                f"the grid spec holds more than {MAX_SPEC_NODES:,} values (YAML "
                f"aliases counted at each use) or a string of over 10,000 characters; "
                f"a grid spec lists axes, not runs"
            )
        unknown = set(spec) - {"name", "base", "blocks"}
        if unknown:
            raise ValueError(
                f"unknown grid spec key(s) {sorted(map(str, unknown))}; "
                f"a spec has name, base, blocks"
            )
        name = spec.get("name", "grid")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(
                f"a grid's name must be a non-empty string of at most "
                f"{MAX_NAME_LENGTH} characters, got {_short(name)}"
            )
        base = spec.get("base")
        if base is None:
            base = {}
        if not isinstance(base, dict):
            raise TypeError(
                f'"base" must be a dict of run settings, got {type(base).__name__}'
            )
        base = dict(base)
        lists = [k for k, v in base.items() if isinstance(v, (list, tuple, dict))]
        if lists:
            raise ValueError(
                f"base values must be single values, got lists for {lists}; "
                f"put axes in a block"
            )
        blocks = spec.get("blocks", [{}])
        if not isinstance(blocks, list) or not blocks:
            raise ValueError('"blocks" must be a non-empty list of dicts')
        sizes = [_block_axes(block, base)[2] for block in blocks]
        if sum(sizes) > MAX_GRID_RUNS:
            raise ValueError(
                f"the grid would have {sum(sizes):,} runs (blocks of "
                f"{', '.join(f'{n:,}' for n in sizes)}), more than {MAX_GRID_RUNS:,}; "
                f"split it into several grids"
            )
        runs = [run for block in blocks for run in _expand_block(block, base)]
        return cls(runs, name=name, spec=spec)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Grid:
        """A spec from a JSON or YAML (``.yaml``/``.yml``, needs PyYAML) file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not a UTF-8 text file: {e}") from None
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ImportError(
                    f"{path} is YAML, which needs PyYAML: pip install pyyaml "
                    f"(or write JSON)"
                ) from None
            try:
                spec = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ValueError(f"{path} is not valid YAML: {e}") from None
        else:
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(spec, dict):
            found = "nothing" if spec is None else f"a {type(spec).__name__}"
            raise ValueError(
                f"{path} holds {found}; a grid spec is a mapping with keys name, "
                f"base, blocks"
            )
        spec = dict(spec)
        spec.setdefault("name", path.stem)
        try:
            return cls.from_spec(spec)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{path}: {e}") from None

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index) -> RunConfig:
        if not _is_int(index):
            raise TypeError(f"grid indices are integers, got {type(index).__name__}")
        if not 0 <= index < len(self.runs):
            raise IndexError(
                f"grid {self.name!r} has {len(self.runs)} runs (indices 0 to "
                f"{len(self.runs) - 1}); index {index} is out of range"
            )
        return self.runs[index]

    def fingerprint(self) -> str:
        """12 hex digits that change when any run's configuration changes."""
        text = json.dumps([r.as_dict() for r in self.runs], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def summary(self) -> str:
        """The grid in one line: name, size, and each block's fixed values and axes."""
        if self.spec is None:
            return f"{self.name}: {len(self)} runs"
        parts = []
        for block in self.spec.get("blocks", [{}]):
            values = {k: _axis_values(k, v) for k, v in block.items()}
            fixed = [f"{k}={v[0]}" for k, v in values.items() if len(v) == 1]
            axes = [
                f"{k} {list(v) if len(v) <= 20 else f'{v[0]}..{v[-1]} ({len(v)})'}"
                for k, v in values.items()
                if len(v) > 1
            ]
            parts.append(" × ".join([" ".join(fixed)] * bool(fixed) + axes))
        return f"{self.name}: {len(self)} runs = " + " + ".join(parts)

    def __repr__(self) -> str:
        return f"Grid({self.name!r}, {len(self)} runs)"


def chapter6_seeds(profile: Profile | str | None = None) -> Grid:
    """Chapter 6's seed study: β-VAE, β × seed, the chapter's recipe per profile."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    base = {
        "dataset": "dsprites",
        "train_size": p.pick(smoke=1_024, reduced=12_800, full=None),
        "batch_size": p.pick(smoke=32, reduced=32, full=64),
        "epochs": p.pick(smoke=1, reduced=1, full=5),
        "lr": p.pick(smoke=2e-3, reduced=2e-3, full=5e-4),
        "eval_size": p.pick(smoke=1_000, reduced=4_000, full=10_000),
        "factor_vae_train": p.pick(smoke=30, reduced=100, full=5_000),
        "factor_vae_eval": p.pick(smoke=20, reduced=50, full=2_500),
        "factor_vae_variance": p.pick(smoke=500, reduced=1_000, full=10_000),
        "factor_vae_batch": p.pick(smoke=32, reduced=32, full=64),
    }
    block = {
        "objective": "beta_vae",
        "beta": p.pick(smoke=[1, 4], reduced=[1, 4, 16], full=[1, 2, 4, 6, 8, 16]),
        "seed": p.pick(smoke=[0, 1], reduced=[0, 1, 2], full=[0, 1, 2, 3, 4]),
    }
    return Grid.from_spec(
        {"name": f"chapter6-seeds-{p.name}", "base": base, "blocks": [block]}
    )


GRIDS = {"chapter6-seeds": chapter6_seeds}


def get_grid(name_or_path: str | os.PathLike, profile=None) -> Grid:
    """A built-in grid (:data:`GRIDS`, sized by ``profile``) or a spec file's grid."""
    if str(name_or_path) in GRIDS:
        return GRIDS[str(name_or_path)](profile)
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"unknown grid {str(name_or_path)!r}: not a built-in grid "
            f"({', '.join(GRIDS)}) and no such spec file"
        )
    return Grid.from_file(path)


# ------------------------------------------------------------------ the root folder


def run_dir(root: str | os.PathLike, index: int) -> Path:
    """The folder of run ``index``: ``root/runs/NNNNN``."""
    if not _is_int(index) or index < 0:
        raise TypeError(f"a run index is an integer >= 0, got {_short(index)}")
    return Path(root) / "runs" / f"{index:05d}"


def _write_json_atomic(path: Path, data) -> None:
    """Write JSON to a temporary file beside ``path``, flush, rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; records are for everyone
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class DamagedFileError(SweepError):
    """A file of a sweep root cannot be read: not JSON, or not what it should hold."""


def _read_json(path: Path, what: str, keys: tuple = ()) -> dict:
    """The dict in ``path``; DamagedFileError naming the file when it is not readable
    JSON, not a dict, or lacks one of ``keys``."""
    if path.exists() and not path.is_file():
        raise DamagedFileError(
            f"{path} is damaged: a folder where {what} belongs; remove it"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DamagedFileError(f"{path} is damaged: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DamagedFileError(
            f"{path} is damaged: it holds a {type(data).__name__}, not {what}"
        )
    missing = [k for k in keys if k not in data]
    if missing:
        raise DamagedFileError(
            f"{path} is damaged: {what} without {', '.join(missing)}"
        )
    return data


def _read_record(directory: Path) -> dict | None:
    path = directory / "record.json"
    if not path.exists():
        return None
    if not path.is_file():  # a record could never be written there: not a retrain
        raise SweepError(
            f"{path} is a folder where the run's record belongs; remove it"
        )
    return _read_json(path, "a run's record", ("config",))


def _is_finished(directory: Path, config: RunConfig) -> bool:
    """True when the run's record exists; raises if it records another configuration.
    A damaged record is reported (:class:`SweepWarning`) and the run counts as not
    finished: it is trained again (to the same numbers), and the record rewritten."""
    try:
        record = _read_record(directory)
    except DamagedFileError as e:
        warnings.warn(
            f"{e}; run {directory.name} is trained again and its record rewritten",
            SweepWarning,
            stacklevel=2,
        )
        return False
    if record is None:
        return False
    if record.get("config") != config.as_dict():
        raise SweepError(
            f"{directory / 'record.json'} records another configuration than the "
            f"grid's run {directory.name}; this root belongs to another grid: use "
            f"another root"
        )
    return True


def _prepare_root(root, grid: Grid) -> Path:
    """Make ``root`` and ``root/runs``; check it is writable and holds this grid."""
    root = Path(root).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"the sweep root {root} exists and is not a folder")
    try:
        (root / "runs").mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-test.")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise PermissionError(
            f"cannot write to the sweep root {root} ({e.strerror or e}); choose a "
            f"folder you can write to (on a cluster: one that every worker can reach)"
        ) from None
    _check_grid_file(root / "grid.json", grid)
    return root


def _check_grid_file(path: Path, grid: Grid) -> None:
    """Store the grid's runs in ``grid.json``, or check that the stored ones agree."""
    runs = [r.as_dict() for r in grid.runs]
    if path.exists() and not path.is_file():
        raise SweepError(f"{path} is a folder where the grid's file belongs; remove it")
    if path.is_file():
        try:
            stored = _read_json(path, "a grid's runs", ("runs",))["runs"]
            if not isinstance(stored, list):
                raise DamagedFileError(f"{path} is damaged: its runs are not a list")
        except DamagedFileError as e:
            raise DamagedFileError(
                f"{e}. It records which grid this root holds; restore it, or delete "
                f"it if this root holds the runs of this grid (every record is also "
                f"checked against the grid)"
            ) from None
        for index, (old, new) in enumerate(zip(stored, runs)):
            if old != new:
                raise SweepError(
                    f"{path.parent} holds another grid: its run {index} is {old}, "
                    f"this grid's is {new}. A root accepts only its own grid, or one "
                    f"that appends runs at the end; use another root"
                )
        if len(stored) >= len(runs):
            return
    _write_json_atomic(path, {"name": grid.name, "runs": runs})


# ----------------------------------------------------------------------------- claims


def _claim_owner() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "claimed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _create_claim(path: Path) -> str | None:
    """Create the claim atomically (``O_CREAT | O_EXCL``): its token, or None."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    owner = _claim_owner()
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(owner, f)
        f.flush()
        os.fsync(f.fileno())
    return owner["token"]


def _read_claim(path: Path) -> dict:
    """The claim's owner; ``{}`` while it is being written, after it is removed, or
    when it is damaged (a damaged claim is then stale once untouched for
    ``stale_after``)."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (ValueError, FileNotFoundError, IsADirectoryError):  # being written, gone
        return {}
    return owner if isinstance(owner, dict) else {}


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _claim_is_stale(path: Path, stale_after: float) -> bool:
    """Held by a gone process of this host, or untouched for ``stale_after`` seconds."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    owner = _read_claim(path)
    here = owner.get("host") == socket.gethostname() and _is_int(owner.get("pid"))
    if here and owner["pid"] != os.getpid() and not _pid_running(owner["pid"]):
        return True
    return age > stale_after


def _take_over_stale_claim(path: Path, stale_after: float) -> str | None:
    """Replace a stale claim by ours while holding ``claim.break``: our token, or None.

    The check, the removal and the new claim all happen under the lock, so that no
    other worker can judge our fresh claim stale in between.
    """
    lock = path.with_name(path.name + ".break")
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - lock.stat().st_mtime > 60:  # its breaker died mid-way
                lock.unlink()
        return None
    try:
        if not _claim_is_stale(path, stale_after):
            return None
        path.unlink(missing_ok=True)
        return _create_claim(path)
    finally:
        lock.unlink(missing_ok=True)


def _try_claim(path: Path, stale_after: float) -> str | None:
    """Claim a run: its token, or None when another live worker holds it."""
    if path.is_dir():
        raise SweepError(
            f"{path} is a folder where the run's claim file belongs (no worker makes "
            f"one); remove it"
        )
    token = _create_claim(path)
    if token is None and _claim_is_stale(path, stale_after):
        token = _take_over_stale_claim(path, stale_after)
    return token


def _release_claim(path: Path, token: str) -> None:
    """Remove the claim if it is still ours (a claim broken as stale is another's)."""
    if _read_claim(path).get("token") == token:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _heartbeat(paths, every: float):
    """Touch every file of ``paths`` every ``every`` seconds from a thread while the
    block runs (the claims of the runs being trained)."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    stop = threading.Event()

    def beat():
        while not stop.wait(every):
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)

    thread = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ------------------------------------------------------------------ training one run


@functools.lru_cache(maxsize=2)
def _dataset(name: str):
    """The dataset (cached per process); records say whether dSprites is procedural."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(name)


@functools.lru_cache(maxsize=2)
def _training_images(name: str, train_size: int | None, data_seed: int) -> torch.Tensor:
    """(N, 1, 64, 64) bool training images: a sorted, seeded subset of the grid."""
    ds = _dataset(name)
    rng = np.random.default_rng(data_seed)
    index = (
        np.arange(len(ds))
        if train_size is None
        else np.sort(rng.choice(len(ds), train_size, replace=False))
    )
    chunks = np.array_split(index, -(-len(index) // 65_536))
    return torch.cat([ds.images(chunk).bool() for chunk in chunks])


@functools.lru_cache(maxsize=2)
def _evaluation_set(name: str, eval_size: int, data_seed: int):
    """(images (N, 1, 64, 64) bool, factor classes (N, K)), seeded ``data_seed + 1``."""
    ds = _dataset(name)
    index = _evaluation_index(name, eval_size, data_seed)
    return ds.images(index).bool(), ds.index_to_factors(index)


def _evaluation_index(name: str, eval_size: int, data_seed: int) -> np.ndarray:
    return np.random.default_rng(data_seed + 1).choice(
        DATASET_SIZES[name], eval_size, replace=False
    )


def _check_evaluation_set(config: RunConfig) -> None:
    """Before training: MIG needs every factor to take two values or more among the
    evaluation images; ValueError naming eval_size otherwise (the scores would fail
    only after the training)."""
    factors = _dataset(config.dataset).index_to_factors(
        _evaluation_index(config.dataset, config.eval_size, config.data_seed)
    )
    single = [i for i in range(factors.shape[1]) if len(np.unique(factors[:, i])) < 2]
    if single:
        names = [_dataset(config.dataset).factor_names[i] for i in single]
        raise ValueError(
            f"eval_size={config.eval_size}: among these evaluation images the "
            f"factor(s) {', '.join(names)} take a single value, so MIG is undefined; "
            f"raise eval_size"
        )


@torch.no_grad()
def _posterior_means(
    model, images: torch.Tensor, device, batch: int = 1_000
) -> np.ndarray:
    """Posterior means (N, D) of ``images``, a batch at a time."""
    parts = [
        model.encode(images[i : i + batch].to(device).float())[0].cpu()
        for i in range(0, len(images), batch)
    ]
    return torch.cat(parts).double().numpy()


def _scores(model, config: RunConfig, device) -> dict:
    """MIG, FactorVAE score, KL, reconstruction and active units of a trained model."""
    ds = _dataset(config.dataset)
    images, factors = _evaluation_set(
        config.dataset, config.eval_size, config.data_seed
    )
    seed_everything(config.seed)
    terms = evaluate(model, images)
    mu = _posterior_means(model, images, device)
    m = mig(mu, factors)
    fv = factor_vae_score(
        lambda x: model.encode(x.to(device))[0].cpu(),
        ds,
        seed=config.seed,
        num_train=config.factor_vae_train,
        num_eval=config.factor_vae_eval,
        num_variance_estimate=config.factor_vae_variance,
        batch_size=config.factor_vae_batch,
    )
    return {
        "mig": m.score,
        "mig_per_factor": dict(zip(ds.factor_names, m.per_factor.tolist())),
        "factor_vae": fv.score,
        "factor_vae_active_dims": fv.num_active_dims,
        "kl": terms["kl"],
        "kl_per_dim": terms["kl_per_dim"],
        "recon": terms["recon"],
        "neg_elbo": terms["neg_elbo"],
        "active_units": active_units(mu).count,
    }


def _resumable_epoch(path: Path) -> int | None:
    """The epoch the training state at ``path`` was saved after; None when there is no
    training state to resume (no file, or the model checkpoint of an ensemble-trained
    run whose record was not written). A file that is not a valid checkpoint raises
    SweepError naming it."""
    if not path.is_file():
        return None
    try:
        ckpt = checkpoints.read(path)
        if ckpt["format"] != checkpoints.TRAINING_FORMAT:
            return None
        return int(checkpoints.read_training_state(path)["epoch"])
    except checkpoints.CheckpointError as e:
        raise SweepError(
            f"{e}. Delete {path} to train run {path.parent.name} from the start"
        ) from None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _record(
    index: int,
    config: RunConfig,
    history,
    metrics: dict,
    device: torch.device,
    *,
    trainer: str,
    train_seconds: float,
    eval_seconds: float,
    resumed_from: int,
    ensemble: dict | None = None,
) -> dict:
    """The record of a trained and scored run (module docstring)."""
    from . import __version__

    metrics["train_recon"], metrics["train_kl"] = (
        history.train_recon[-1],
        history.train_kl[-1],
    )
    return {
        "format": RECORD_FORMAT,
        "index": index,
        "config": config.as_dict(),
        "steps": history.steps,
        "metrics": metrics,
        "trainer": trainer,
        "ensemble": ensemble,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "resumed_from_epoch": resumed_from,
        "device": device.type,
        "device_name": _device_name(device),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "dataset_source": _dataset(config.dataset).source,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "torch": torch.__version__,
        "betavae_lib": __version__,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _build_model(config: RunConfig) -> ConvVAE:
    """The run's model with its initial weights (seeded by the run's seed)."""
    seed_everything(config.seed)
    return ConvVAE(**config.model_config())


def _train_and_score(index: int, config: RunConfig, directory: Path, device) -> dict:
    """Train run ``index`` alone with ``fit`` (resuming from its training state if any)
    and score it; its record."""
    device = pick_device(device)
    _check_evaluation_set(config)
    images = _training_images(config.dataset, config.train_size, config.data_seed)
    checkpoint = directory / "checkpoint.pt"
    resumed_from = _resumable_epoch(checkpoint)
    model = _build_model(config)
    history = fit(
        model,
        images,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        device=device,
        seed=config.seed,
        progress=False,
        checkpoint_path=checkpoint,
        resume=resumed_from is not None,
        overwrite=resumed_from is None,  # a model checkpoint without a record
        amp=config.amp,
        **config.fit_options(),
    )
    t0 = time.perf_counter()
    metrics = _scores(model, config, device)
    return _record(
        index,
        config,
        history,
        metrics,
        device,
        trainer="fit",
        train_seconds=float(sum(history.seconds)),
        eval_seconds=time.perf_counter() - t0,
        resumed_from=resumed_from or 0,
    )


def _train_claimed(
    index: int, config: RunConfig, root: Path, device, stale_after
) -> dict:
    """Claim run ``index``, train it alone and score it, write its record; its
    outcome."""
    directory = run_dir(root, index)
    directory.mkdir(parents=True, exist_ok=True)
    if _is_finished(directory, config):
        return {"index": index, "status": "finished"}
    claim = directory / "claim"
    token = _try_claim(claim, stale_after)
    if token is None:
        return {"index": index, "status": "busy"}
    try:
        if _is_finished(directory, config):  # finished between the check and the claim
            return {"index": index, "status": "finished"}
        with _heartbeat(claim, stale_after / 4):
            record = _train_and_score(index, config, directory, device)
        _write_json_atomic(directory / "record.json", record)
        return {"index": index, "status": "trained"}
    finally:
        _release_claim(claim, token)


def _failed(index: int, error: BaseException | str) -> dict:
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    return {"index": index, "status": "failed", "error": error}


def _claim_members(
    jobs, root: Path, stale_after, keep_going: bool = False
) -> tuple[list, list, dict]:
    """Claim the runs of ``jobs`` for an ensemble: ``(members, alone, outcomes)``.

    members: ``(index, config, claim, token)`` of runs claimed, unfinished and without
    a training state; alone: jobs with a training state to resume (not claimed, they
    train alone); outcomes: index -> outcome of runs finished or busy (or, with
    ``keep_going``, failed: a checkpoint that cannot be read). A failure releases every
    claim taken.
    """
    members, alone, outcomes = [], [], {}
    try:
        for index, config in jobs:
            directory = run_dir(root, index)
            directory.mkdir(parents=True, exist_ok=True)
            if _is_finished(directory, config):
                outcomes[index] = {"index": index, "status": "finished"}
                continue
            claim = directory / "claim"
            token = _try_claim(claim, stale_after)
            if token is None:
                outcomes[index] = {"index": index, "status": "busy"}
                continue
            try:
                finished = _is_finished(directory, config)
                resumable = (
                    not finished
                    and _resumable_epoch(directory / "checkpoint.pt") is not None
                )
            except Exception as e:
                _release_claim(claim, token)
                if not keep_going:
                    raise
                outcomes[index] = _failed(index, e)
                continue
            if finished:
                _release_claim(claim, token)
                outcomes[index] = {"index": index, "status": "finished"}
            elif resumable:
                _release_claim(claim, token)
                alone.append((index, config))
            else:
                members.append((index, config, claim, token))
    except BaseException:  # no claim may outlive a failure (or an interrupt)
        for _, _, claim, token in members:
            _release_claim(claim, token)
        raise
    return members, alone, outcomes


def _train_ensemble(members: list, root: Path, device, keep_going: bool):
    """Train the claimed ``members`` as one ensemble, then score, checkpoint and record
    each; yields each member's outcome as it is written. The caller releases the
    claims."""
    device = pick_device(device)
    for _, config, *_ in members:
        _check_evaluation_set(config)
    first = members[0][1]
    images = _training_images(first.dataset, first.train_size, first.data_seed)
    models = {index: _build_model(config) for index, config, *_ in members}
    configs = {index: config for index, config, *_ in members}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # failed: recorded
        result = fit_ensemble(
            models,
            images,
            objectives={i: c.to_objective() for i, c in configs.items()},
            seeds={i: c.seed for i, c in configs.items()},
            epochs=first.epochs,
            batch_size=first.batch_size,
            lr=first.lr,
            device=device,
            progress=False,
            on_failure="warn",
            amp=first.amp,
        )
    indices = list(configs)
    seconds = None
    diverged = []
    for index, config in configs.items():
        if index in result.failed:
            step = result.failed[index]
            error = NonFiniteLossError(
                f"run {index}: the loss became NaN or infinite at step {step} (trained "
                f"in an ensemble with runs {indices}, which trained on); lower the "
                f"learning rate or β"
            )
            if not keep_going:
                diverged.append(error)
                continue
            yield _failed(index, error)
            continue
        history = result.histories[index]
        seconds = float(sum(history.seconds)) if seconds is None else seconds
        try:
            model = models[index]
            t0 = time.perf_counter()
            metrics = _scores(model, config, device)
            record = _record(
                index,
                config,
                history,
                metrics,
                device,
                trainer="ensemble",
                train_seconds=seconds / len(indices),
                eval_seconds=time.perf_counter() - t0,
                resumed_from=0,
                ensemble={"runs": indices, "train_seconds": seconds},
            )
            directory = run_dir(root, index)
            checkpoints.save(
                model,
                directory / "checkpoint.pt",
                trainer="ensemble",
                index=index,
                config=config.as_dict(),
                epoch=config.epochs,
                step=history.steps,
                history=history.as_dict(),
            )
            _write_json_atomic(directory / "record.json", record)
        except Exception as e:
            if not keep_going:
                raise
            yield _failed(index, e)
            continue
        yield {"index": index, "status": "trained"}
    if diverged:
        raise (
            diverged[0]
            if len(diverged) == 1
            else NonFiniteLossError("; ".join(map(str, diverged)))
        )


@contextlib.contextmanager
def _torch_settings(threads: int, deterministic: bool):
    """Torch's thread count and deterministic mode for a shard, restored afterwards."""
    old_threads = torch.get_num_threads()
    old_mode = torch.are_deterministic_algorithms_enabled()
    if deterministic and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_mode)


def _train_shard(
    jobs: list,
    root: str,
    *,
    device="auto",
    threads: int = 1,
    deterministic: bool = True,
    stale_after: float = 600.0,
    keep_going: bool = False,
    batch_runs: bool = True,
    report=None,
) -> list[dict]:
    """Train one shard of runs; returns one outcome dict per run.

    jobs: ``(index, RunConfig.as_dict())`` pairs. Every backend calls this function, so
    that a run's numbers do not depend on the backend. With ``batch_runs``, the runs
    that are unfinished, free and without a training state train as one ensemble per
    :func:`_shard_key` (when there are two or more); the others (a run resuming its
    training state, a lone run) train alone with ``fit``, one after another. Outcomes:
    ``{"index", "status"}`` with status ``trained``, ``finished`` (already), ``busy``
    (claimed by another live worker) or ``failed`` (with ``error``; only with
    ``keep_going``). report: called with each outcome as it comes (the local backend's
    progress bar).
    """
    root = Path(root)
    outcomes = []

    def done(outcome):
        outcomes.append(outcome)
        if report is not None:
            report(outcome)

    jobs = [(index, RunConfig.from_dict(config)) for index, config in jobs]
    with _torch_settings(threads, deterministic):
        alone = []
        groups: dict[tuple, list] = {}
        for job in jobs:
            groups.setdefault(_shard_key(job[1]), []).append(job)
        for group in groups.values():
            if not batch_runs or len(group) == 1:
                alone += group
                continue
            members, resume, found = _claim_members(
                group, root, stale_after, keep_going
            )
            for outcome in found.values():
                done(outcome)
            alone += resume
            if len(members) == 1:  # alone after all: fit, with its checkpoints
                index, config, claim, token = members[0]
                _release_claim(claim, token)
                alone.append((index, config))
                continue
            if not members:
                continue
            claims = [claim for _, _, claim, _ in members]
            try:
                with _heartbeat(claims, stale_after / 4):
                    for outcome in _train_ensemble(members, root, device, keep_going):
                        done(outcome)
            except Exception as e:
                if not keep_going:
                    raise
                finished = {o["index"] for o in outcomes}
                for index, *_ in members:
                    if index not in finished:
                        done(_failed(index, e))
            finally:
                for _, _, claim, token in members:
                    _release_claim(claim, token)
        for index, config in sorted(alone, key=lambda job: job[0]):
            try:
                outcome = _train_claimed(index, config, root, device, stale_after)
            except Exception as e:
                if not keep_going:
                    raise
                outcome = _failed(index, e)
            done(outcome)
    return outcomes


# ----------------------------------------------------------------------------- backends


def _shard_key(config: RunConfig) -> tuple:
    """Runs sharing data, architecture, length and learning rate: what one batched
    trainer (:func:`~betavae_lib.ensemble.fit_ensemble`) can hold."""
    return (
        config.dataset,
        config.train_size,
        config.data_seed,
        config.epochs,
        config.batch_size,
        config.lr,
        config.latent_dim,
        config.width,
        config.hidden,
        config.amp,
    )


def _make_shards(grid: Grid, indices: list[int], shard_size: int | None) -> list[list]:
    """Group runs by :func:`_shard_key` (index order), then cut groups into shards of
    ``shard_size`` runs (None: a group is one shard)."""
    groups: dict[tuple, list] = {}
    for i in indices:
        groups.setdefault(_shard_key(grid[i]), []).append((i, grid[i].as_dict()))
    return [
        jobs[start : start + (shard_size or len(jobs))]
        for jobs in groups.values()
        for start in range(0, len(jobs), shard_size or len(jobs))
    ]


def _run_local(shards, root: Path, options: dict, bar) -> list[dict]:
    outcomes = []
    for shard in shards:
        outcomes += _train_shard(
            shard, str(root), **options, report=lambda o: bar.update(1)
        )
    return outcomes


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(
            'the "ray" backend needs Ray: pip install "betavae_lib[ray]" (or pip '
            'install ray); backend="local" needs nothing more'
        ) from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``ray://host:port`` -> (host, port), default port 6379/10001."""
    text, default = address, 6379
    if text.startswith("ray://"):
        text, default = text[len("ray://") :], 10001
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default))
    if not host or not port.isdigit():
        raise ValueError(
            f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379, "
            f"ray://10.0.0.5:10001 or auto)"
        )
    return host, int(port)


_PROBE = (
    "import sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
    "ray.shutdown()"
)


def _check_connect_timeout(timeout) -> float:
    """A number of seconds in (0, MAX_CONNECT_TIMEOUT]: what a socket can wait."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"connect_timeout must be a number of seconds, got {timeout!r}")
    if not (0 < timeout <= MAX_CONNECT_TIMEOUT):  # NaN fails too
        raise ValueError(
            f"connect_timeout must be a number of seconds in (0, "
            f"{MAX_CONNECT_TIMEOUT:g}], got {timeout!r}"
        )
    return float(timeout)


def _check_ray_address(address: str, timeout: float) -> None:
    """Raise ConnectionError, within about ``2 * timeout`` s, unless Ray connects.

    ``ray.init(address=...)`` retries for many minutes when nothing (or no Ray) answers,
    so the address is first tried with a TCP connection, then by ``ray.init`` in a child
    process that is killed after ``timeout`` seconds.
    """
    if address == "auto":
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({e.strerror or e}, {timeout:g} s "
            f"allowed). Start one with `ray start --head` and pass the address it "
            f"prints, or leave address unset to start a Ray instance on this machine"
        ) from None
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, address],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ConnectionError(
            f"{host}:{port} answers, but Ray did not connect to it within {timeout:g} "
            f"s: is it the head node's GCS address (printed by `ray start --head`, "
            f"port 6379 by default)?"
        ) from None
    if probe.returncode != 0:
        raise ConnectionError(
            f"Ray could not connect to {address}: {_exception_lines(probe.stderr)}"
        )


def _exception_lines(traceback_text: str) -> str:
    """The ``SomeError: message`` lines of a traceback, first (the cause) to last."""
    lines = [
        line.strip()
        for line in traceback_text.splitlines()
        if re.match(r"^[\w.]*(Error|Exception): ", line.strip())
    ]
    unique = list(dict.fromkeys(line[:400] for line in lines))
    return " <- ".join(reversed(unique)) if unique else "no message"


def _start_ray(ray, address, num_cpus, connect_timeout) -> bool:
    """Connect to ``address`` or start a local instance; True if this started Ray."""
    if ray.is_initialized():
        if address is not None:
            raise ValueError(
                "Ray is already initialised in this process; leave address unset to "
                "use it"
            )
        return False
    if address is not None:
        _check_ray_address(address, connect_timeout)
        package = str(Path(__file__).resolve().parent)  # the workers run this library
        ray.init(
            address=address,
            runtime_env={"py_modules": [package]},
            log_to_driver=False,
        )
    else:
        ray.init(
            address="local",  # a new instance, not one found on this machine
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
        )
    return True


def _run_ray(
    shards,
    root: Path,
    options: dict,
    bar,
    *,
    address,
    num_cpus,
    cpus,
    gpus,
    connect_timeout,
) -> list[dict]:
    ray = _import_ray()
    if gpus == 0 and options["device"] == "auto":
        options = {**options, "device": "cpu"}  # the task holds no GPU
    started = _start_ray(ray, address, num_cpus, connect_timeout)
    try:
        # a request no node can meet would wait forever: wait for a node that can
        # (nodes may join a cluster) at most connect_timeout, then say so
        _wait_for_fitting_node(ray, cpus, gpus, 0 if started else connect_timeout)
        task_options = {"num_cpus": cpus, "num_gpus": gpus}
        # by reference to the module, also under ``python -m`` (where this is __main__)
        from betavae_lib.sweep import _train_shard as train_shard

        task = ray.remote(train_shard).options(**task_options)
        pending = {
            task.remote(shard, str(root), **options): len(shard) for shard in shards
        }
        outcomes = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=RAY_RECHECK)
            if not done:  # nothing finished for a while: can the shards still run?
                try:
                    _wait_for_fitting_node(ray, cpus, gpus, connect_timeout)
                except SweepError:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise
            for ref in done:
                bar.update(pending.pop(ref))
                outcomes += ray.get(ref)
        return outcomes
    finally:
        if started:
            ray.shutdown()


RAY_RECHECK = 60.0  # seconds without a finished shard before the nodes are checked


def _fitting_nodes(ray, cpus: float, gpus: float) -> tuple[bool, str]:
    """Whether an alive node of the Ray cluster has ``cpus`` CPUs and ``gpus`` GPUs,
    and what the nodes have (for the message)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    have = [
        (n.get("Resources", {}).get("CPU", 0), n.get("Resources", {}).get("GPU", 0))
        for n in nodes
    ]
    fits = any(c >= cpus and g >= gpus for c, g in have)
    listed = "; ".join(f"{c:g} CPUs, {g:g} GPUs" for c, g in have) or "no alive node"
    return fits, listed


def _wait_for_fitting_node(ray, cpus: float, gpus: float, timeout: float) -> None:
    """Return once a node can run a shard (``cpus`` CPUs, ``gpus`` GPUs); SweepError
    after ``timeout`` seconds without one."""
    deadline = time.monotonic() + timeout
    while True:
        fits, listed = _fitting_nodes(ray, cpus, gpus)
        if fits:
            return
        if time.monotonic() >= deadline:
            raise SweepError(
                f"no node of the Ray cluster can run a shard: each asks for {cpus:g} "
                f"CPUs and {gpus:g} GPUs, the nodes have {listed} (waited "
                f"{timeout:g} s). Lower cpus_per_shard / gpus_per_shard, or start "
                f"Ray with more (num_cpus=, or nodes with GPUs)"
            )
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


# ------------------------------------------------------------------ run and collect


@dataclass
class SweepReport:
    """What :func:`run` did: runs trained, finished before, busy elsewhere, failed."""

    grid: str
    root: str
    backend: str
    trained: list[int] = field(default_factory=list)
    finished_before: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def __str__(self) -> str:
        text = (
            f"{self.grid}: trained {len(self.trained)} run(s), "
            f"{len(self.finished_before)} finished before, {len(self.busy)} claimed by "
            f"other workers"
        )
        if self.failed:
            text += f", {len(self.failed)} failed"
        return text + f" ({self.backend}, {self.wall_seconds:.1f} s)"


def _check_indices(grid: Grid, indices) -> list[int]:
    """The distinct indices, sorted; each is checked as it comes (a huge range fails at
    its first index out of the grid, before anything is expanded)."""
    if indices is None:
        return list(range(len(grid)))
    if isinstance(indices, (str, bytes)) or _is_int(indices):
        raise TypeError(
            f"indices must be a list of run indices (e.g. [0, 3] or range(10)), got "
            f"{_short(indices)}"
        )
    if isinstance(indices, range) and len(indices):
        grid[indices[0]], grid[indices[-1]]  # both ends within the grid
    checked = set()
    for i in indices:
        grid[i]  # raises IndexError / TypeError with the grid's size
        checked.add(int(i))
    return sorted(checked)


def run(
    grid: Grid | str,
    root: str | os.PathLike,
    *,
    backend: str = "local",
    indices=None,
    device: str = "auto",
    shard_size: int | None = None,
    cpus_per_shard: int = 1,
    gpus_per_shard: float = 0,
    deterministic: bool = True,
    batch_runs: bool = True,
    address: str | None = None,
    num_cpus: int | None = None,
    connect_timeout: float = 30.0,
    stale_after: float = 600.0,
    keep_going: bool = False,
    progress: bool = True,
) -> SweepReport:
    """Train the runs of ``grid`` (or its ``indices``) not finished in ``root``.

    grid: a :class:`Grid`, or a name or spec file for :func:`get_grid`. backend:
    ``"local"`` (this process) or ``"ray"``. Runs are cut into shards of ``shard_size``
    runs sharing data, architecture, length and learning rate (default: all such runs
    with the local backend, 1 with Ray); a shard runs with ``cpus_per_shard`` torch
    threads (also its Ray CPU request) and, with Ray, ``gpus_per_shard`` GPUs.
    batch_runs: train the runs of a shard as one ensemble (module docstring); False
    trains every run alone with ``fit``. deterministic:
    ``torch.use_deterministic_algorithms`` while training, so that reruns match bit for
    bit on GPUs too.

    Ray only: address: an existing cluster (``host:port``, ``ray://host:port`` or
    ``auto``); with none, a Ray instance already initialised in this process is used,
    else one is started here with ``num_cpus`` CPUs (default: all). An address that does
    not connect raises ConnectionError within about ``2 * connect_timeout`` seconds.
    ``root`` must then be a folder every worker reaches (a shared file system).

    stale_after: seconds after which an untouched claim is stale (module docstring).
    keep_going: record a failing run in the report and go on, instead of raising.
    Returns a :class:`SweepReport`.
    """
    from tqdm.auto import tqdm

    if backend not in BACKENDS:
        raise ValueError(
            f"unknown backend {_short(backend)}; valid are {', '.join(BACKENDS)}"
        )
    for name, flag in (
        ("deterministic", deterministic),
        ("batch_runs", batch_runs),
        ("keep_going", keep_going),
        ("progress", progress),
    ):
        check_flag(name, flag)
    if backend == "ray":
        _import_ray()  # fail before any work
    grid = grid if isinstance(grid, Grid) else get_grid(grid)
    if shard_size is None and backend == "ray":
        shard_size = 1  # one task per run, so that the runs spread over the workers
    if shard_size is not None:
        _check_int("shard_size", shard_size, 1)
    _check_int("cpus_per_shard", cpus_per_shard, 1, 4096)
    _check_number("gpus_per_shard", gpus_per_shard, high=4096)
    if not (
        isinstance(stale_after, numbers.Real)
        and not isinstance(stale_after, bool)
        and MIN_STALE_AFTER <= stale_after < math.inf
    ):
        raise ValueError(
            f"stale_after must be at least {MIN_STALE_AFTER:g} s, got "
            f"{_short(stale_after)}: a live worker touches its claim every "
            f"stale_after / 4 s, and a shared file system may show that a minute "
            f"late, so a shorter time would let another worker break a live claim "
            f"and train the run twice"
        )
    _check_connect_timeout(connect_timeout)
    if num_cpus is not None:
        _check_int("num_cpus", num_cpus, 1)
    if address is not None and backend != "ray":
        raise ValueError('address is for backend="ray"')
    if backend == "local":
        pick_device(device)  # an unknown or missing device fails before any work
    if str(root).strip() == "":
        raise ValueError("root must name a folder for the sweep's runs, got ''")
    root = _prepare_root(root, grid)
    indices = _check_indices(grid, indices)
    t0 = time.perf_counter()
    pending = [i for i in indices if not _is_finished(run_dir(root, i), grid[i])]
    report = SweepReport(grid.name, str(root), backend)
    report.finished_before = sorted(set(indices) - set(pending))
    shards = _make_shards(grid, pending, shard_size)
    options = {
        "device": device,
        "threads": cpus_per_shard,
        "deterministic": deterministic,
        "stale_after": stale_after,
        "keep_going": keep_going,
        "batch_runs": batch_runs,
    }
    with tqdm(
        total=len(pending), desc=grid.name, unit="run", disable=not progress
    ) as bar:
        if backend == "local":
            outcomes = _run_local(shards, root, options, bar)
        else:
            outcomes = _run_ray(
                shards,
                root,
                options,
                bar,
                address=address,
                num_cpus=num_cpus,
                cpus=cpus_per_shard,
                gpus=gpus_per_shard,
                connect_timeout=connect_timeout,
            )
    for outcome in sorted(outcomes, key=lambda o: o["index"]):
        status, i = outcome["status"], outcome["index"]
        if status == "failed":
            report.failed[i] = outcome["error"]
        else:
            {
                "trained": report.trained,
                "finished": report.finished_before,
                "busy": report.busy,
            }[status].append(i)
    report.finished_before.sort()
    report.wall_seconds = time.perf_counter() - t0
    return report


def _row(record: dict) -> dict:
    """A record as one flat row: configuration, coefficients, scalar scores, timing."""
    config = dict(record["config"])
    coefficients = config.pop("coefficients")
    metrics = dict(record["metrics"])
    per_factor = metrics.pop("mig_per_factor")
    metrics.pop("kl_per_dim")
    row = {"index": record["index"], **config, **coefficients, "steps": record["steps"]}
    row["trainer"] = record.get("trainer", "fit")  # records from before ensembles
    row.update(metrics)
    row.update({f"mig_{name}": value for name, value in per_factor.items()})
    for key in (
        "train_seconds",
        "eval_seconds",
        "resumed_from_epoch",
        "device",
        "device_name",
        "threads",
        "deterministic",
        "dataset_source",
        "host",
        "pid",
    ):
        row[key] = record[key]
    return row


def collect(root: str | os.PathLike):
    """All finished runs under ``root`` as one pandas DataFrame, a row per run.

    Columns: ``index``, the configuration (objective, seed, …), one column per
    coefficient (NaN where an objective lacks it), the scores (``mig``, ``factor_vae``,
    ``kl``, ``recon`` in nats per image, ``active_units``, ``mig_<factor>``, …),
    ``trainer`` (``"fit"`` or ``"ensemble"``), ``train_seconds`` (for an ensemble, its
    time divided by its runs), ``eval_seconds``, ``device``.
    """
    import pandas as pd

    runs = Path(root) / "runs"
    if not runs.is_dir():
        raise FileNotFoundError(f"no sweep at {root} (no runs/ folder)")
    rows = []
    for path in sorted(runs.glob("*/record.json")):
        try:
            rows.append(_row(_read_json(path, "a run's record")))
        except (DamagedFileError, KeyError, TypeError, AttributeError) as e:
            reason = str(e) if isinstance(e, DamagedFileError) else f"{path}: {e!r}"
            warnings.warn(
                f"skipped a damaged record: {reason}; `run` trains that run again",
                SweepWarning,
                stacklevel=2,
            )
    if not rows:
        return pd.DataFrame({"index": pd.Series(dtype=int)})
    return pd.DataFrame(rows).sort_values("index", ignore_index=True)


def load_run(root: str | os.PathLike, index: int):
    """The trained model of run ``index`` (in eval mode) and its record.

    The checkpoint is ``fit``'s training state for a run trained alone and a model
    checkpoint for one trained in an ensemble; ``checkpoints.load`` reads both."""
    directory = run_dir(root, index)
    record = _read_record(directory)
    if record is None:
        raise FileNotFoundError(
            f"run {index} is not finished under {root} (no {directory / 'record.json'})"
        )
    model, _ = checkpoints.load(directory / "checkpoint.pt")
    return model, record


# ------------------------------------------------------------------ command line


def _parse_indices(text: str) -> list[range]:
    """``"0-9,12"`` -> [range(0, 10), range(12, 13)]: ranges, not yet expanded (the
    grid's size bounds them first, :func:`_expand_indices`)."""
    ranges = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            start, stop = int(first), int(last if dash else first)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"indices are like 0-9,12 (integers >= 0); got {text!r}"
            ) from None
        if start < 0 or stop < start:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r}: a range of indices runs from a first to a last "
                f"index at least as large, like 0-9; got {text!r}"
            )
        ranges.append(range(start, stop + 1))
    return ranges


def _expand_indices(grid: Grid, ranges: list[range]) -> list[int]:
    """The indices of ``ranges``, each range checked against the grid before it is
    expanded."""
    for r in ranges:
        if r[-1] >= len(grid):
            raise IndexError(
                f"grid {grid.name!r} has {len(grid)} runs (indices 0 to "
                f"{len(grid) - 1}); --indices asks for {r[0]}-{r[-1]}"
            )
    return sorted({i for r in ranges for i in r})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m betavae_lib.sweep",
        description="Train every unfinished run of a grid, here or on a Ray cluster.",
        epilog="Objectives and their coefficients:\n" + OBJECTIVES_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--grid",
        required=True,
        help=f"a built-in grid ({', '.join(GRIDS)}) or a JSON/YAML spec file",
    )
    p.add_argument(
        "--profile",
        help="size of a built-in grid: smoke, reduced or full "
        "(default: $BETAVAE_PROFILE)",
    )
    p.add_argument(
        "--root", help="folder for checkpoints and records (required unless --list)"
    )
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.add_argument(
        "--address", help="Ray cluster address (host:port, ray://host:port or auto)"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of a Ray instance started here")
    p.add_argument(
        "--indices", type=_parse_indices, help="only these runs, e.g. 0-9,12"
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--shard-size",
        type=int,
        help="runs per shard (default: all that can share an ensemble locally, 1 "
        "with Ray)",
    )
    p.add_argument(
        "--no-batch",
        action="store_true",
        help="train every run alone with fit, not a shard's runs as one ensemble",
    )
    p.add_argument("--cpus-per-shard", type=int, default=1)
    p.add_argument("--gpus-per-shard", type=float, default=0)
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--stale-after", type=float, default=600.0)
    p.add_argument("--keep-going", action="store_true", help="go on after a run fails")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--list", action="store_true", help="print the grid's runs and exit")
    p.add_argument(
        "--csv", help="after running, write all finished runs to this CSV file"
    )
    return p


def _list_grid(grid: Grid) -> None:
    print(grid.summary())
    for i, config in enumerate(grid.runs):
        coefficients = ", ".join(f"{k}={v:g}" for k, v in config.coefficients.items())
        print(
            f"{i:5d}  {config.objective}({coefficients}) seed={config.seed} "
            f"steps={config.steps:,}"
        )


# What the command line reports as one line (no traceback): errors of the input, the
# files, the device or the cluster, and a diverged run.
ORDINARY_ERRORS = (
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OSError,
    ImportError,
    RuntimeError,  # SweepError, a device that is not there
    ArithmeticError,  # NonFiniteLossError
)


def main(argv=None) -> int:
    """The command line: ``python -m betavae_lib.sweep --grid ... --root ...``.

    Exit status: 0 when every run finished, 1 when some failed (with --keep-going), 2
    for an error (one line on stderr, no traceback), 130 when interrupted."""
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except KeyboardInterrupt:
        print(
            "interrupted: finished runs are kept; the next sweep resumes the others",
            file=sys.stderr,
        )
        return 130
    except ORDINARY_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args) -> int:
    grid = get_grid(args.grid, args.profile)
    if args.list:
        _list_grid(grid)
        return 0
    if not args.root:
        raise ValueError("--root is required (a folder for checkpoints and records)")
    indices = None if args.indices is None else _expand_indices(grid, args.indices)
    report = run(
        grid,
        args.root,
        backend=args.backend,
        indices=indices,
        device=args.device,
        shard_size=args.shard_size,
        batch_runs=not args.no_batch,
        cpus_per_shard=args.cpus_per_shard,
        gpus_per_shard=args.gpus_per_shard,
        address=args.address,
        num_cpus=args.num_cpus,
        connect_timeout=args.connect_timeout,
        stale_after=args.stale_after,
        keep_going=args.keep_going,
        progress=not args.no_progress,
    )
    print(report)
    for i, error in report.failed.items():
        print(f"run {i} failed: {error}", file=sys.stderr)
    if args.csv:
        collect(args.root).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

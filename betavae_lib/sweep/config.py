"""A sweep's run configurations: :class:`RunConfig` (one run, checked on creation), the
objectives a run may name (:data:`OBJECTIVES`), the datasets with known factors, the
bounds every grid and command is held to, and the sweep's errors."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
from dataclasses import dataclass

import torch

from .. import checkpoints
from .._common import MAX_SEED, check_flag
from ..models import ConvVAE
from ..objective import Objective
from ..schedules import Linear

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

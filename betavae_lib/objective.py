"""The β-VAE objective and its variants as one family: :class:`Objective`.

Every variant of :func:`betavae_lib.losses.beta_vae_loss` is one objective (nats, batch
means) with different coefficients:

    loss = recon + beta_kl · Σ_d max(KL_d, free_bits) + gamma · |KL − capacity|
                 + mi_dwkl · (MI + dwKL) + beta_tc · TC

where KL_d is the batch-mean KL of latent d, KL = Σ_d KL_d, and MI, TC, dwKL are the
β-TCVAE parts of the KL (:func:`betavae_lib.losses.tc_decomposition`):

============  =======  =========  =====  ========  =======  =======
variant       beta_kl  free_bits  gamma  capacity  mi_dwkl  beta_tc
============  =======  =========  =====  ========  =======  =======
β-VAE         β        0          0      0         0        0
free bits     β        λ          0      0         0        0
capacity      0        0          γ      C         0        0
β-TCVAE       0        0          0      0         1        β
============  =======  =========  =====  ========  =======  =======

So models with different variants can train in one batched step
(:mod:`betavae_lib.ensemble`), each with its own coefficients. ``beta`` and ``capacity``
may be schedules ``step -> value`` (:mod:`betavae_lib.schedules`);
:meth:`Objective.coefficients` evaluates them at a step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ._common import check_flag, real_number
from .losses import (
    DEFAULT_SIGMA,
    Coefficients,
    check_likelihood,
    check_objective_options,
)
from .schedules import as_schedule

DEFAULT_BETA = 1.0
DEFAULT_GAMMA = 1000.0


def _scheduled(name: str, given, schedule, step: int) -> float:
    """The value of ``schedule`` at ``step`` as a float; ValueError (naming the
    schedule and the step) unless it is a finite number >= 0."""
    value = schedule(step)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"the {name} schedule {given!r} gave {value!r} at step {step}; a schedule "
            f"must return a number"
        ) from None
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(
            f"the {name} schedule {given!r} gave {number!r} at step {step}; {name} "
            f"must be a finite number >= 0 at every step"
        )
    return number


def _describe_schedule(value):
    """A number, or a schedule dataclass as ``{"schedule": class name, **fields}``."""
    if not callable(value):
        return float(value)
    if dataclasses.is_dataclass(value):
        return {"schedule": type(value).__qualname__, **dataclasses.asdict(value)}
    raise TypeError(
        f"the schedule {value!r} cannot be described by value (it is not a "
        f"dataclass); use a schedule from betavae_lib.schedules (Constant, Linear, "
        f"Cyclical) or write one as a frozen dataclass"
    )


@dataclass(frozen=True)
class Objective:
    """What one model minimises: a β-VAE, free bits, capacity or a β-TCVAE objective.

    beta: β, a number or a schedule ``step -> β``; it weighs the KL (with ``tc=True``,
    the total correlation only). capacity: ``None``, or the target rate C in nats (a
    number or a schedule) of ``recon + gamma · |KL − C|`` (Burgess et al. 2018).
    free_bits: λ nats per latent (Kingma et al. 2016). tc: β-TCVAE (Chen et al. 2018).
    likelihood, sigma: the reconstruction term (``losses.reconstruction_nll``).

    Combinations that cannot be honoured raise ``ValueError`` naming both options:
    ``tc`` with ``free_bits`` or ``capacity``; ``capacity`` with ``free_bits`` or with
    a β other than 1 (the capacity objective does not use β); ``gamma`` other than its
    default without ``capacity`` (γ only weighs |KL − C|).
    """

    beta: float | object = DEFAULT_BETA
    capacity: float | object | None = None
    gamma: float = DEFAULT_GAMMA
    free_bits: float = 0.0
    tc: bool = False
    likelihood: str = "bernoulli"
    sigma: float = DEFAULT_SIGMA

    def __post_init__(self):
        capacity_at = (
            None if self.capacity is None else as_schedule(self.capacity, "capacity")
        )
        object.__setattr__(self, "_beta_at", as_schedule(self.beta, "beta"))
        object.__setattr__(self, "_capacity_at", capacity_at)
        real_number("free_bits", self.free_bits, unit=" nats")
        real_number("gamma", self.gamma)
        check_likelihood(self.likelihood, self.sigma)
        check_flag("tc", self.tc)
        self._check_combination()

    def _check_combination(self) -> None:
        check_objective_options(
            tc=self.tc, capacity=self.capacity, free_bits=self.free_bits
        )
        capacity = self.capacity is not None
        if capacity and (callable(self.beta) or float(self.beta) != DEFAULT_BETA):
            raise ValueError(
                f"capacity= and beta={self.beta!r} cannot be combined: the capacity "
                f"objective recon + gamma·|KL − C| does not use β; leave beta at 1"
            )
        if not capacity and self.gamma != DEFAULT_GAMMA:
            raise ValueError(
                f"gamma={self.gamma:g} without capacity= would be ignored: gamma "
                f"weighs |KL − C| in the capacity objective; pass capacity= too"
            )

    @property
    def capacity_at(self):
        """The capacity schedule ``step -> C`` (nats), or None without capacity."""
        return self._capacity_at

    @property
    def variant(self) -> str:
        """``"beta"``, ``"free_bits"``, ``"capacity"`` or ``"tc"``."""
        if self.tc:
            return "tc"
        if self.capacity is not None:
            return "capacity"
        return "free_bits" if self.free_bits > 0 else "beta"

    def beta_at(self, step: int) -> float:
        """β at optimiser ``step`` (what ``fit`` records in ``History.beta``); a
        schedule that gives a negative, NaN or infinite β raises ValueError naming the
        step."""
        return _scheduled("beta", self.beta, self._beta_at, step)

    def coefficients(self, step: int = 0) -> Coefficients:
        """The coefficients at optimiser ``step`` (schedules evaluated), as numbers."""
        if self.tc:
            return Coefficients(mi_dwkl=1.0, beta_tc=self.beta_at(step))
        if self.capacity is not None:
            capacity = _scheduled("capacity", self.capacity, self._capacity_at, step)
            return Coefficients(gamma=float(self.gamma), capacity=capacity)
        return Coefficients(beta_kl=self.beta_at(step), free_bits=float(self.free_bits))

    def describe(self) -> dict:
        """Every field as JSON-like values (a schedule as its class and fields).

        Raises ``TypeError`` for a schedule that is not a dataclass (a lambda, say),
        which cannot be described by value.
        """
        capacity = self.capacity
        return {
            "beta": _describe_schedule(self.beta),
            "capacity": None if capacity is None else _describe_schedule(capacity),
            "gamma": float(self.gamma),
            "free_bits": float(self.free_bits),
            "tc": self.tc,
            "likelihood": self.likelihood,
            "sigma": float(self.sigma),
        }


# The options an Objective is built from (the keyword arguments fit shares with it).
OBJECTIVE_OPTIONS = tuple(f.name for f in dataclasses.fields(Objective))


TERMS_OF_VARIANT = {
    "beta": {"beta_kl"},
    "free_bits": {"beta_kl", "free_bits"},
    "capacity": {"gamma", "capacity"},
    "tc": {"mi_dwkl", "beta_tc"},
}


def used_terms(objectives: Sequence[Objective]) -> set[str]:
    """Names of the coefficients that some objective in ``objectives`` uses."""
    return set().union(*(TERMS_OF_VARIANT[o.variant] for o in objectives))


def stack_coefficients(
    objectives: Sequence[Objective], step: int, device=None
) -> Coefficients:
    """The coefficients of K objectives at ``step``: (K,) float32 tensors on ``device``.

    A coefficient that no objective uses (``gamma`` when no member has a capacity, say)
    stays the number 0, so the loss skips its term. Which terms are tensors depends on
    the objectives only, never on the step.
    """
    used = used_terms(objectives)
    columns = zip(*(o.coefficients(step) for o in objectives))
    return Coefficients(
        *(
            torch.tensor(values, dtype=torch.float32, device=device)
            if name in used
            else 0.0
            for name, values in zip(Coefficients._fields, columns)
        )
    )


def shared_likelihood(objectives: Sequence[Objective], names=None) -> str:
    """The likelihood all ``objectives`` use; ``ValueError`` naming them otherwise."""
    kinds = {o.likelihood for o in objectives}
    if len(kinds) != 1:
        names = names or [str(i) for i in range(len(objectives))]
        listed = ", ".join(f"{n}: {o.likelihood}" for n, o in zip(names, objectives))
        raise ValueError(
            f"models trained together must share the likelihood, got {listed}; train "
            f"each likelihood as its own ensemble"
        )
    return kinds.pop()


def log_sigma_of(objective: Objective) -> float:
    """log σ of the fixed-σ Gaussian likelihood (0 for the others, which ignore it)."""
    return math.log(objective.sigma) if objective.likelihood == "gaussian" else 0.0

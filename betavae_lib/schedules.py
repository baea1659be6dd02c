"""Schedules for a weight that changes with the optimiser step: beta (KL annealing) or
the capacity C.

A schedule is any callable ``step -> float``; ``fit`` calls it once per optimiser step
(step 0 first).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._common import SCHEDULE_KINDS, positive_int, real_number, schedule_number


def _check_steps(name: str, steps: int) -> int:
    return positive_int(name, steps, what="a positive integer number of steps")


@dataclass(frozen=True)
class Constant:
    """The same value at every step."""

    value: float

    def __post_init__(self):
        real_number("value", self.value)

    def __call__(self, step: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class Linear:
    """Linear warm-up from ``start`` to ``end`` over ``steps`` steps, then ``end``
    (the linear KL warm-up of Sønderby et al. 2016; Bowman et al. 2016 raised the
    KL weight along a sigmoid).

    value(t) = start + (end - start) * min(t / steps, 1)
    """

    end: float
    steps: int
    start: float = 0.0

    def __post_init__(self):
        (
            real_number("end", self.end),
            real_number("start", self.start),
            _check_steps("steps", self.steps),
        )

    def __call__(self, step: int) -> float:
        return self.start + (self.end - self.start) * min(step / self.steps, 1.0)


@dataclass(frozen=True)
class Cyclical:
    """Cyclical annealing (Fu et al. 2019): ``n_cycles`` cycles over ``total_steps``; in
    each cycle the value rises linearly from 0 to ``end`` over the first ``ratio`` of
    the cycle, then stays at ``end``.

    value(t) = end * min((t mod T) / (ratio * T), 1),  T = total_steps / n_cycles
    """

    end: float
    total_steps: int
    n_cycles: int = 4
    ratio: float = 0.5

    def __post_init__(self):
        real_number("end", self.end), _check_steps("total_steps", self.total_steps)
        _check_steps("n_cycles", self.n_cycles)
        if not 0 < self.ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio!r}")
        if (
            self.total_steps < 2 * self.n_cycles
        ):  # else β would be 0 at (nearly) every step
            raise ValueError(
                f"Cyclical needs at least 2 steps per cycle, got total_steps="
                f"{self.total_steps} for n_cycles={self.n_cycles}; raise total_steps "
                f"or lower n_cycles"
            )

    def __call__(self, step: int) -> float:
        period = self.total_steps / self.n_cycles
        return self.end * min((step % period) / (self.ratio * period), 1.0)


SCHEDULES = {"constant": Constant, "linear": Linear, "cyclical": Cyclical}
assert tuple(SCHEDULES) == SCHEDULE_KINDS  # the names errors list


def as_schedule(value, name: str = "beta"):
    """A number becomes a :class:`Constant`; a callable is returned as it is."""
    if callable(value):
        return value
    return Constant(schedule_number(name, value))

"""One switch, ``BETAVAE_PROFILE``, scales every chapter from a smoke to a full run.

``smoke``   seconds per chapter on a CPU: the tests and CI use it.
``reduced`` minutes per chapter on a laptop CPU: the default without CUDA.
``full``    full datasets, curves run to flat: the default with CUDA; the published run.

The code path is the same in all profiles; only sizes change.

``BETAVAE_STEPS=N`` lengthens a chapter that trains by optimiser steps (chapter 6)
to N steps per model, keeping the profile's other sizes: a CPU can then afford a long
run of the models without the full profile's evaluation and seeds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from ._common import pick_device, positive_int, seed_everything

PROFILES = ("smoke", "reduced", "full")
STEPS_ENV = "BETAVAE_STEPS"


@dataclass(frozen=True)
class Profile:
    """Sizes for one run profile; ``pick`` chooses a chapter-specific value."""

    name: str
    steps: int | None = None  # BETAVAE_STEPS: optimiser steps per model, if set

    def __post_init__(self):
        if self.name not in PROFILES:
            hint = (
                f" (names are lower case: {self.name.strip().lower()!r})"
                if isinstance(self.name, str) and self.name.strip().lower() in PROFILES
                else ""
            )
            raise ValueError(
                f"unknown profile {self.name!r}; valid are {', '.join(PROFILES)}{hint}"
            )
        if self.steps is not None:
            object.__setattr__(
                self,
                "steps",
                positive_int("steps", self.steps, what="a positive integer or None"),
            )

    def pick(self, smoke, reduced, full):
        """This profile's value: ``profile.pick(smoke=2, reduced=10, full=50)``."""
        return {"smoke": smoke, "reduced": reduced, "full": full}[self.name]

    @property
    def train_size(self) -> int | None:
        """Training images per dataset (None: the whole split)."""
        return self.pick(2_000, 20_000, None)

    @property
    def test_size(self) -> int | None:
        """Test images per dataset (None: the whole split)."""
        return self.pick(500, 5_000, None)

    def by_steps(
        self, n_available: int, n_train: int | None, epochs: int, batch_size: int
    ) -> tuple[int | None, int]:
        """``(n_train, epochs)`` for a chapter that trains by steps: unchanged, or,
        with ``steps`` set, one pass over ``steps * batch_size`` distinct images
        (several passes over all ``n_available`` when that is fewer)."""
        if self.steps is None:
            return n_train, epochs
        wanted = self.steps * positive_int("batch_size", batch_size)
        if wanted <= n_available:
            return wanted, 1
        return None, math.ceil(self.steps / math.ceil(n_available / batch_size))

    def __str__(self) -> str:
        if self.steps is None:
            return self.name
        return f"{self.name}, {self.steps:,} steps per model"


def get_profile(name: str | None = None) -> Profile:
    """The active profile: ``name``, else ``$BETAVAE_PROFILE``, else ``full`` on CUDA
    and ``reduced`` otherwise."""
    name = (
        name
        or os.environ.get("BETAVAE_PROFILE")
        or ("full" if torch.cuda.is_available() else "reduced")
    )
    name = name.strip().lower()
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}; BETAVAE_PROFILE must be one of "
            f"{', '.join(PROFILES)}"
        )
    steps = os.environ.get(STEPS_ENV, "").strip()
    return Profile(name, parse_steps(steps)) if steps else Profile(name)


def parse_steps(text: str, name: str = STEPS_ENV) -> int:
    """The positive integer ``text`` gives (``_`` separators allowed); a ValueError
    naming ``name`` otherwise."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {text!r}")
    return value


def start_chapter(seed: int = 0, by_steps: bool = False):
    """What every chapter does first: figure style, profile, device and seed.

    Prints ``profile: … | device: … | seed: … | torch …`` (the book's executor
    reads the device and the seed from this line) and returns ``(profile, device)``.
    by_steps: the chapter trains by optimiser steps and honours ``BETAVAE_STEPS``
    (:meth:`Profile.by_steps`); the line then says ``steps: N`` after the profile.
    Other chapters' profiles ignore the variable.
    """
    from . import plots

    plots.book_style()
    profile, device = get_profile(), pick_device()
    seed_everything(seed)
    if not by_steps:
        profile = Profile(profile.name)
    steps = "" if profile.steps is None else f" | steps: {profile.steps}"
    print(
        f"profile: {profile.name}{steps} | device: {device} | seed: {seed} "
        f"| torch {torch.__version__}"
    )
    return profile, device

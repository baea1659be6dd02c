"""One switch, ``BETAVAE_PROFILE``, scales every chapter from a smoke to a full run.

``smoke``   seconds per chapter on a CPU: the tests and CI use it.
``reduced`` minutes per chapter on a laptop CPU: the default without CUDA.
``full``    full datasets, curves run to flat: the default with CUDA; the published run.

The code path is the same in all profiles; only sizes change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ._common import pick_device, seed_everything

PROFILES = ("smoke", "reduced", "full")


@dataclass(frozen=True)
class Profile:
    """Sizes for one run profile; ``pick`` chooses a chapter-specific value."""

    name: str

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

    def __str__(self) -> str:
        return self.name


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
    return Profile(name)


def start_chapter(seed: int = 0):
    """What every chapter does first: figure style, profile, device and seed.

    Prints ``profile: … | device: … | seed: … | torch …`` (the book's executor
    reads the device and the seed from this line) and returns ``(profile, device)``.
    """
    from . import plots

    plots.book_style()
    profile, device = get_profile(), pick_device()
    seed_everything(seed)
    print(
        f"profile: {profile.name} | device: {device} | seed: {seed} "
        f"| torch {torch.__version__}"
    )
    return profile, device

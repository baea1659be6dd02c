"""dSprites as a dataset: :class:`DSprites`, the 737,280 images indexed by their five
factors (shape, scale, orientation, posX, posY), read from DeepMind's file or rendered
on demand, and :func:`render_dsprites`, the procedural renderer (the same factor grid,
not the same pixels). Finding and checking DeepMind's file is :mod:`betavae_lib.data`'s
work (``load_dataset("dsprites")``); both names are importable from there too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ._common import pick_device, positive_int

# The values of scale, orientation and position, as (start, stop, count) of a linspace:
# the one definition behind DSprites.factor_values_grid (float64) and render_dsprites
# (float32).
_DSPRITES_SCALES = (0.5, 1.0, 6)
_DSPRITES_ORIENTATIONS = (0.0, 2 * math.pi, 40)
_DSPRITES_POSITIONS = (0.0, 1.0, 32)


@dataclass
class DSprites:
    """dSprites: 737,280 binary 64x64 images, one per combination of five factors.

    Factors (in index order, row-major like DeepMind's file): shape (3: square, ellipse,
    heart), scale (6 values in [0.5, 1]), orientation (40 values
    ``np.linspace(0, 2*pi, 40)``, as in the file), posX (32 values in [0, 1]), posY (32
    values in [0, 1]).

    ``source`` is ``"npz"`` (DeepMind's file) or ``"procedural"`` (rendered here on
    demand: the same factor grid, not the same pixels). Images are rendered only for the
    indices asked for, on ``device``; ``to(device)`` gives a copy that renders there
    (e.g. on the GPU that encodes them).
    """

    source: str
    factor_names: tuple = ("shape", "scale", "orientation", "posX", "posY")
    factor_sizes: tuple = (3, 6, 40, 32, 32)
    _imgs: np.ndarray | None = field(default=None, repr=False)
    name: str = "dsprites"
    device: torch.device = field(default=torch.device("cpu"), repr=False)

    def __post_init__(self):
        self.device = pick_device(self.device)

    def to(self, device: str | torch.device) -> DSprites:
        """The same dataset, its images returned (and rendered) on ``device``."""
        return replace(self, device=pick_device(device))

    def __len__(self) -> int:
        return math.prod(self.factor_sizes)

    @property
    def factor_values_grid(self) -> list[np.ndarray]:
        """The value of each class of each factor."""
        return [
            np.arange(1.0, 4.0),
            np.linspace(*_DSPRITES_SCALES),
            np.linspace(*_DSPRITES_ORIENTATIONS),
            np.linspace(*_DSPRITES_POSITIONS),
            np.linspace(*_DSPRITES_POSITIONS),
        ]

    def index_to_factors(self, index) -> np.ndarray:
        """Flat indices (N,) -> factor classes (N, 5)."""
        index = _integer_indices(index)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(
                f"dSprites indices must be in [0, {len(self)}), "
                f"got {index.min()}..{index.max()}"
            )
        return np.stack(np.unravel_index(index, self.factor_sizes), axis=-1)

    def factors_to_index(self, classes) -> np.ndarray:
        """Factor classes (N, 5) -> flat indices (N,)."""
        classes = np.asarray(classes, dtype=np.int64)
        if classes.ndim != 2 or classes.shape[1] != 5:
            raise ValueError(
                f"factor classes must have shape (N, 5), got {classes.shape}"
            )
        if (classes < 0).any() or (classes >= np.array(self.factor_sizes)).any():
            raise ValueError(
                f"factor classes out of range; sizes are {self.factor_sizes}"
            )
        return np.ravel_multi_index(classes.T, self.factor_sizes)

    @property
    def factor_classes(self) -> np.ndarray:
        """(737280, 5) int64 factor classes of every image, in index order."""
        return self.index_to_factors(np.arange(len(self)))

    def factor_values(self, classes) -> np.ndarray:
        """Factor classes (N, 5) -> factor values (N, 5) float64."""
        classes = np.asarray(classes, dtype=np.int64)
        return np.stack(
            [g[classes[:, k]] for k, g in enumerate(self.factor_values_grid)], axis=-1
        )

    def images(self, index) -> torch.Tensor:
        """Images at flat indices (N,) as (N, 1, 64, 64) float32 in {0, 1}."""
        index = np.atleast_1d(_integer_indices(index))
        classes = self.index_to_factors(index)
        if self._imgs is not None:
            images = torch.from_numpy(self._imgs[index].astype(np.float32))
            return images.unsqueeze(1).to(self.device)
        return render_dsprites(classes, device=self.device)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor-class rows drawn uniformly: (n, 5) int64."""
        return np.stack(
            [rng.integers(0, s, size=n) for s in self.factor_sizes], axis=-1
        )

    def sample_observations_from_factors(
        self, classes, rng: np.random.Generator | None = None
    ) -> torch.Tensor:
        """Images for factor classes (N, 5); every factor is observed, so ``rng`` is
        unused."""
        return self.images(self.factors_to_index(classes))


def _integer_indices(index) -> np.ndarray:
    """Indices as int64, refusing fractional values (``astype`` would truncate them)."""
    array = np.asarray(index)
    if array.size and not (
        np.issubdtype(array.dtype, np.integer)
        or (
            np.issubdtype(array.dtype, np.floating) and (array == np.round(array)).all()
        )
    ):
        raise ValueError(f"dSprites indices must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def _heart_mask(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside test of the heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, v pointing
    up."""
    x, y = u * 1.25, v * 1.25 + 0.2
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


_FACTOR_SIZES = DSprites.factor_sizes


def _check_factor_classes(classes) -> torch.Tensor:
    """Factor classes (N, 5) as int64, each within its factor's size; ValueError
    naming the first one out of range (indexing would otherwise wrap negative classes
    around and draw unknown shapes as hearts)."""
    array = np.asarray(classes)
    if array.ndim != 2 or array.shape[1] != len(_FACTOR_SIZES):
        raise ValueError(
            f"factor classes must have shape (N, {len(_FACTOR_SIZES)}) (shape, scale, "
            f"orientation, posX, posY), got {array.shape}"
        )
    integral = np.issubdtype(array.dtype, np.integer) or (
        np.issubdtype(array.dtype, np.floating)
        and np.isfinite(array).all()
        and (array == np.round(array)).all()
    )
    if array.size and not integral:
        raise ValueError(f"factor classes must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    bad = (array < 0) | (array >= np.array(_FACTOR_SIZES))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"factor class {array[row, col]} of {DSprites.factor_names[col]} (row "
            f"{row}) is out of range: {DSprites.factor_names[col]} has classes 0 to "
            f"{_FACTOR_SIZES[col] - 1}"
        )
    return torch.from_numpy(array)


def render_dsprites(
    classes, size: int = 64, chunk: int = 4096, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Render factor classes (N, 5) as binary sprites: (N, 1, size, size) float32 on
    ``device``, every step computed there.

    A sprite of half-size ``0.16 * scale`` (in image widths) is centred at
    ``0.2 + 0.6 * pos``, rotated by the orientation; shapes are a square, an ellipse
    (aspect 2:1) and a heart. Another device can round cos and sin differently in the
    last bit, so a pixel exactly on a shape's edge may differ between devices.
    """
    device = pick_device(device)
    classes = _check_factor_classes(classes).to(device)
    size = positive_int("size", size)
    chunk = positive_int("chunk", chunk)
    scales = torch.linspace(*_DSPRITES_SCALES, device=device)
    angles = torch.linspace(*_DSPRITES_ORIENTATIONS, device=device)
    pos = torch.linspace(*_DSPRITES_POSITIONS, device=device)
    centres = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size
    out = torch.empty(len(classes), 1, size, size, device=device)
    for start in range(0, len(classes), chunk):
        c = classes[start : start + chunk]
        r = (0.16 * scales[c[:, 1]]).view(-1, 1, 1)
        th = angles[c[:, 2]].view(-1, 1, 1)
        cx, cy = (
            (0.2 + 0.6 * pos[c[:, 3]]).view(-1, 1, 1),
            (0.2 + 0.6 * pos[c[:, 4]]).view(-1, 1, 1),
        )
        dx, dy = (
            centres.view(1, 1, -1) - cx,
            centres.view(1, -1, 1) - cy,
        )  # x: columns, y: rows (down)
        u = (torch.cos(th) * dx + torch.sin(th) * dy) / r
        v = (
            torch.sin(th) * dx - torch.cos(th) * dy
        ) / r  # rows grow downwards: flip so v points up
        shape = c[:, 0].view(-1, 1, 1)
        square = (u.abs() <= 0.8) & (v.abs() <= 0.8)
        ellipse = u * u + (2 * v) ** 2 <= 1
        mask = torch.where(
            shape == 0, square, torch.where(shape == 1, ellipse, _heart_mask(u, v))
        )
        out[start : start + len(c), 0] = mask.float()
    return out

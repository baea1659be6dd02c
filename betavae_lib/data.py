"""Datasets: MNIST and Fashion-MNIST from their raw IDX files, and dSprites (real file
or procedural).

Where files are looked for, in order:

1. the ``root`` argument;
2. ``$BETAVAE_DATA_DIR``;
3. the cache folder ``$BETAVAE_CACHE_DIR`` (default ``~/.cache/betavae_lib``), where
   downloads go.

Each root uses torchvision's layout (``MNIST/raw/*.gz``, ``FashionMNIST/raw/*.gz``),
plus ``dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``. Every file is checked
against its published checksum before use; downloads go to a temporary file that is
renamed only once its checksum matches, so an interrupted download never leaves a file
that looks valid. Set ``BETAVAE_OFFLINE=1`` to never try the network.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import time
import urllib.request
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ._common import (
    as_float_images,
    atomic_write,
    binarize_batch,
    check_pixel_range,
    check_seed,
    env_flag,
    pick_device,
    positive_int,
    real_number,
)

DATASETS = ("mnist", "fashion_mnist", "dsprites")
SPLITS = ("train", "test")

# file name -> md5, as torchvision checks them.
_IDX_FILES = {
    "mnist": {
        "folder": "MNIST",
        "mirrors": [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ],
        "files": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "classes": [str(d) for d in range(10)],
    },
    "fashion_mnist": {
        "folder": "FashionMNIST",
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "files": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "classes": [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
    },
}

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_URL = (
    "https://github.com/deepmind/dsprites-dataset/raw/master/" + DSPRITES_FILE
)
# git blob id of DeepMind's file (``git hash-object``), the checksum its repository
# publishes.
DSPRITES_GIT_BLOB = "d98996d3f8ee1550e06b9d4ed78d0beb478910d5"
DSPRITES_N = 3 * 6 * 40 * 32 * 32  # images in DeepMind's file
# The values of scale, orientation and position, as (start, stop, count) of a linspace:
# the one definition behind DSprites.factor_values_grid (float64) and render_dsprites
# (float32).
_DSPRITES_SCALES = (0.5, 1.0, 6)
_DSPRITES_ORIENTATIONS = (0.0, 2 * math.pi, 40)
_DSPRITES_POSITIONS = (0.0, 1.0, 32)


class DataNotFoundError(FileNotFoundError):
    """A dataset file is neither on disk nor downloadable."""


class ChecksumError(ValueError):
    """A dataset file exists but its checksum does not match the published one."""


class IncompleteDownloadError(OSError):
    """A download ended before all the bytes the server announced had arrived."""


# ---------------------------------------------------------------------------- locations


def _folder_from_env(name: str) -> Path | None:
    """The folder ``$name`` names, ``~`` expanded; None when unset or empty (an empty
    value would otherwise mean the current folder)."""
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Folder where downloads are stored: ``$BETAVAE_CACHE_DIR`` (``~`` expanded;
    unset or empty: the default) or ``~/.cache/betavae_lib``."""
    return _folder_from_env("BETAVAE_CACHE_DIR") or (
        Path.home() / ".cache" / "betavae_lib"
    )


def search_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for dataset files, in order."""
    roots = [Path(root).expanduser()] if root is not None else []
    data_dir = _folder_from_env("BETAVAE_DATA_DIR")
    if data_dir is not None:
        roots.append(data_dir)
    roots.append(cache_dir())
    return roots


def offline() -> bool:
    """True when ``$BETAVAE_OFFLINE`` forbids downloads (1, true, yes or on; unset,
    empty, 0, false, no or off allow them; anything else raises ValueError)."""
    return env_flag("BETAVAE_OFFLINE", False)


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file; ``algorithm="git"`` gives its git blob id."""
    h = (
        hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
        if algorithm == "git"
        else hashlib.new(algorithm)
    )
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(
    url: str,
    dest: Path,
    checksum: str,
    algorithm: str = "md5",
    timeout: float = 30.0,
    deadline: float = 600.0,
) -> Path:
    """Download ``url`` to ``dest`` through a temporary file renamed only after its
    checksum matches. timeout: seconds one network read may wait; deadline: seconds the
    whole body may take (a server that trickles bytes is abandoned after it, and the
    next mirror is tried)."""
    with (
        atomic_write(dest, suffix=".part") as (out, tmp),
        urllib.request.urlopen(url, timeout=timeout) as response,
    ):
        expected = response.headers.get("Content-Length")
        _copy_before_deadline(response, out, url, deadline)
        received = out.tell()
        if expected is not None and received != int(expected):
            raise IncompleteDownloadError(
                f"download of {url} stopped after {received} of {expected} bytes "
                f"(the connection closed early); nothing was kept"
            )
        out.flush()
        got = file_digest(tmp, algorithm)
        if got != checksum:
            raise ChecksumError(
                f"download of {url} has {algorithm} {got}, expected {checksum}; "
                f"nothing was kept"
            )
    return dest


def _copy_before_deadline(response, out, url: str, deadline: float) -> None:
    """Copy ``response`` to ``out``, each read returning what has arrived
    (``read1``), and raise IncompleteDownloadError once ``deadline`` seconds have
    passed."""
    deadline = real_number("deadline", deadline, strict=True)
    end = time.monotonic() + deadline
    while block := response.read1(1 << 20):
        out.write(block)
        if time.monotonic() > end:
            raise IncompleteDownloadError(
                f"download of {url} took longer than its deadline of {deadline:g} s "
                f"({out.tell()} bytes received); nothing was kept"
            )


def _locate(
    relpath: str, checksum: str, urls: list[str], root, algorithm: str = "md5"
) -> Path:
    """Find a verified file under the search roots, else download it into the cache,
    else raise."""
    roots = search_roots(root)
    for r in roots:
        path = r / relpath
        if path.is_file():
            got = file_digest(path, algorithm)
            if got != checksum:
                raise ChecksumError(
                    f"{path} is corrupt or truncated "
                    f"({algorithm} {got}, expected {checksum}). "
                    f"Delete it and run again to download a fresh copy, "
                    f"or replace it with the original file."
                )
            return path
    errors = []
    if not offline():
        for url in urls:
            try:
                return download(url, cache_dir() / relpath, checksum, algorithm)
            except ChecksumError:
                raise
            except Exception as e:  # network errors: try the next mirror
                errors.append(f"{url}: {e}")
    looked = "\n  ".join(str(r / relpath) for r in roots)
    why = (
        "downloads are disabled (BETAVAE_OFFLINE=1)"
        if offline()
        else "download failed:\n  " + "\n  ".join(errors)
    )
    raise DataNotFoundError(
        f"{Path(relpath).name} not found. Looked in:\n  {looked}\nand {why}\n"
        f"Put the file in one of those folders "
        f"(for example set BETAVAE_DATA_DIR to a folder holding "
        f"{Path(relpath).parent}/), or run where the internet is reachable."
    )


# --------------------------------------------------------------------------- MNIST-like


@dataclass
class ImageDataset:
    """A whole split in memory.

    images: (N, 1, H, W) float32 in [0, 1]; labels: (N,) int64; label_names: class
    names.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    label_names: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, n: int | None, seed: int = 0) -> ImageDataset:
        """The first ``n`` items of a seeded shuffle (all of them when ``n`` is None or
        too large)."""
        if n is None:
            return self
        n = positive_int("subset size", n, what="a positive integer or None")
        if n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[
            :n
        ]
        return ImageDataset(
            self.name,
            self.split,
            self.images[idx],
            self.labels[idx],
            self.label_names,
            self.source,
        )


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file into a uint8 array, checking its header against its
    size."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(shape):
        raise ValueError(
            f"{path}: header says {shape} but holds {len(data) - offset} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _load_idx_dataset(name: str, split: str, root) -> ImageDataset:
    spec = _IDX_FILES[name]
    prefix = "train" if split == "train" else "t10k"
    paths = {}
    for kind in ("images-idx3", "labels-idx1"):
        fname = f"{prefix}-{kind}-ubyte.gz"
        paths[kind] = _locate(
            f"{spec['folder']}/raw/{fname}",
            spec["files"][fname],
            [m + fname for m in spec["mirrors"]],
            root,
        )
    images = (
        torch.from_numpy(read_idx(paths["images-idx3"]).copy())
        .float()
        .div_(255)
        .unsqueeze(1)
    )
    labels = torch.from_numpy(read_idx(paths["labels-idx1"]).astype(np.int64))
    return ImageDataset(
        name,
        split,
        images,
        labels,
        list(spec["classes"]),
        source=str(paths["images-idx3"].parent),
    )


# ----------------------------------------------------------------------------- dSprites


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


def _load_dsprites(root, source: str) -> DSprites:
    if source == "procedural":
        return DSprites(source="procedural")
    try:
        path = _locate(
            f"dsprites/{DSPRITES_FILE}",
            DSPRITES_GIT_BLOB,
            [DSPRITES_URL],
            root,
            algorithm="git",
        )
    except DataNotFoundError as e:
        if source == "npz":
            raise
        warnings.warn(
            f"dSprites: DeepMind's file is unavailable, "
            f"so the procedural generator is used "
            f"(same factor grid, not the same pixels). {str(e).splitlines()[0]}",
            stacklevel=3,
        )
        return DSprites(source="procedural")
    with np.load(path) as f:
        imgs = f["imgs"]
    if imgs.shape != (DSPRITES_N, 64, 64):
        raise ValueError(
            f"{path} holds images of shape {imgs.shape}, "
            f"expected ({DSPRITES_N}, 64, 64)"
        )
    return DSprites(source="npz", _imgs=imgs)


# ------------------------------------------------------------------------ binarisation


def binarize(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A fixed stochastic binarisation of ``images``: each pixel is 1 with its intensity
    as probability (one Bernoulli draw per pixel), as Burda et al. (2016) binarise the
    MNIST test set once.

    images: a tensor of pixel intensities: float in [0, 1], uint8 (0..255) or bool.
    seed: seeds the draws (a CPU generator of their own, whatever the images' device),
    so the same images and seed always give the same result.

    Returns float 0/1 values of the images' shape and device: float32, or the images'
    own floating dtype. Floats, because a uint8 tensor means 0..255 to the library
    (``fit`` would read a uint8 1 as 1/255), and ``iwae_bound`` and ``model(x)`` take
    floats. Training sets are binarised afresh every batch instead:
    ``fit(binarize=True)``.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    check_seed("seed", seed)
    p = as_float_images(images)
    if not p.is_floating_point():
        raise TypeError(
            f"images must be float in [0, 1], uint8 (0..255) or bool, "
            f"got dtype {images.dtype}"
        )
    if p.numel() == 0:
        raise ValueError(
            f"images is empty (shape {tuple(images.shape)}): nothing to binarise"
        )
    check_pixel_range(p, "images")
    generator = torch.Generator().manual_seed(int(seed))
    return binarize_batch(p.cpu(), generator).to(images.device)


# -------------------------------------------------------------------------- entry point


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    source: str = "auto",
):
    """Load a dataset split.

    name: ``"mnist"``, ``"fashion_mnist"`` or ``"dsprites"``.
    split: ``"train"`` or ``"test"`` (dSprites has one split; both return the whole
    grid).
    root: a folder to look in before ``$BETAVAE_DATA_DIR`` and the cache.
    source: dSprites only: ``"auto"`` (the real file when present or downloadable, else
    procedural, with a warning), ``"npz"`` (the real file or an error) or
    ``"procedural"``.

    Returns an :class:`ImageDataset` (images (N, 1, 28, 28) float32 in [0, 1], labels
    (N,)) or a :class:`DSprites`.
    """
    key = str(name).lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; valid names are {', '.join(DATASETS)}"
        )
    if split not in SPLITS:
        raise ValueError(
            f"unknown split {split!r}; valid splits are {', '.join(SPLITS)}"
        )
    if key == "dsprites":
        if source not in ("auto", "npz", "procedural"):
            raise ValueError(
                f"unknown dSprites source {source!r}; valid are auto, npz, procedural"
            )
        return _load_dsprites(root, source)
    return _load_idx_dataset(key, split, root)

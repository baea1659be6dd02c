"""Datasets: MNIST and Fashion-MNIST from their raw IDX files, and dSprites (real file
or procedural), with the files they are read from. The dSprites dataset class and its
procedural renderer live in :mod:`betavae_lib.dsprites` (``DSprites`` and
``render_dsprites`` stay importable from here).

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
from dataclasses import dataclass
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
    positive_int,
    real_number,
)

# the dSprites dataset and its renderer: importable from here too
from .dsprites import (
    _DSPRITES_ORIENTATIONS,  # noqa: F401
    _DSPRITES_POSITIONS,  # noqa: F401
    _DSPRITES_SCALES,  # noqa: F401
    _FACTOR_SIZES,  # noqa: F401
    DSprites,
    _check_factor_classes,  # noqa: F401
    _heart_mask,  # noqa: F401
    _integer_indices,  # noqa: F401
    render_dsprites,  # noqa: F401
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

"""Shared fixtures: real datasets from $BETAVAE_DATA_DIR (skipped with a reason when absent)."""

import os
from pathlib import Path

import pytest
import torch

DATA_DIR = os.environ.get("BETAVAE_DATA_DIR")


def _has(folder: str) -> bool:
    return bool(DATA_DIR) and (Path(DATA_DIR) / folder / "raw").is_dir()


needs_mnist = pytest.mark.skipif(
    not _has("MNIST"), reason="MNIST raw files not found under $BETAVAE_DATA_DIR"
)
needs_fashion = pytest.mark.skipif(
    not _has("FashionMNIST"),
    reason="Fashion-MNIST raw files not found under $BETAVAE_DATA_DIR",
)


def binary_images(n: int = 32, side: int = 28, seed: int = 0) -> torch.Tensor:
    """(n, 1, side, side) seeded random binary images, about 30% of pixels on."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, side, side, generator=g) > 0.7).float()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # One thread: on a small shared machine, thread contention makes tiny models 10-100x slower.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No downloads, an empty cache, and no data dir: only what a test puts in place exists."""
    monkeypatch.setenv("BETAVAE_OFFLINE", "1")
    monkeypatch.setenv("BETAVAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BETAVAE_DATA_DIR", raising=False)
    return tmp_path

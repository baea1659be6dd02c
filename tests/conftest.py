"""Shared fixtures: real datasets from $BETAVAE_DATA_DIR (skipped with a reason when
absent), and headless Chromium for the tests that open pages in a browser."""

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

DATA_DIR = os.environ.get("BETAVAE_DATA_DIR")
ROOT = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    """The script ``tools/<name>.py`` imported as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    # One thread: on a small shared machine, thread contention makes tiny models 10-100x
    # slower.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No downloads, an empty cache, and no data dir: only what a test puts in place
    exists."""
    monkeypatch.setenv("BETAVAE_OFFLINE", "1")
    monkeypatch.setenv("BETAVAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BETAVAE_DATA_DIR", raising=False)
    return tmp_path


# ------------------------------------------------------------------- headless Chromium
CHROMIUM = next(
    (
        shutil.which(n)
        for n in ("chromium", "chromium-browser", "google-chrome")
        if shutil.which(n)
    ),
    None,
)
VIRTUAL_TIME_MS = (
    20_000  # virtual time: timers fast-forward, so this is not a wall-clock wait
)


def chromium_args(user_dir: Path) -> list[str]:
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--disable-extensions",
        f"--user-data-dir={user_dir}",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
    ]


def console_messages(log: str) -> list[str]:
    """Console messages in Chromium's stderr log (``INFO:CONSOLE:12] "message", …``)."""
    return re.findall(r':CONSOLE(?:\(\d+\)|:\d+)\] "(.*)", source: ', log)


def page_requests(netlog: Path) -> list[str]:
    """URLs other than file: and data: that the page asked for (Chromium's network log).

    The browser's own requests (component updates, accounts) carry the initiator "not an
    origin"; a file:// page's carry "null".
    """
    if not netlog.is_file():
        return []
    events = json.loads(netlog.read_text(encoding="utf-8", errors="replace"))["events"]
    return sorted(
        {
            e["params"]["url"]
            for e in events
            if "initiator" in e.get("params", {})
            and e["params"]["initiator"] != "not an origin"
            and not e["params"].get("url", "file:").startswith(("file:", "data:"))
        }
    )

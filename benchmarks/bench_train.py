"""Training throughput: ``betavae_lib.fit`` against the seeds' per-item DataLoader
pipeline.

The reference ("seeds' pipeline") is the common tutorial recipe: a per-item
``torch.utils.data.Dataset`` converting each uint8 image as torchvision's ``ToTensor``
does, a ``DataLoader(shuffle=True)``, the same model,
:func:`betavae_lib.losses.beta_vae_loss`, Adam, and a ``loss.item()`` per step for the
running loss. Both see the same images, the same number of them, from the same initial
weights. Each timing is the best of ``repeats`` runs, reference and ``fit`` interleaved,
so that a busy machine (which only ever adds time) affects both alike.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from betavae_lib import MLPVAE, ConvVAE, fit, load_dataset
from betavae_lib.losses import beta_vae_loss


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """torchvision's ``ToTensor`` on a uint8 (H, W) or (H, W, C) array: (C, H, W)
    float32 in [0, 1]."""
    img = torch.from_numpy(np.array(image, copy=True))
    if img.ndim == 2:
        img = img[:, :, None]
    img = img.permute(2, 0, 1).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


class PerItemImages(Dataset):
    """One uint8 image (H, W) per ``__getitem__``, converted by :func:`to_tensor`."""

    def __init__(self, images_uint8: np.ndarray):
        self.images = images_uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_tensor(self.images[i])


CPU_CLOCK = time.perf_counter


def use_cpu_time(enabled: bool = True) -> None:
    """Time CPU rows by this process's CPU time instead of the wall clock.

    On a shared machine with one torch thread, CPU time is the work done, unaffected by
    other processes; the DataLoader runs in this process (no workers), so both pipelines
    are fully counted.
    """
    global CPU_CLOCK
    CPU_CLOCK = time.process_time if enabled else time.perf_counter


def cpu_bf16_support() -> str:
    """Which bfloat16 matrix instructions this CPU has (what ``amp=True`` can use):
    AMX-BF16, AVX512-BF16, or none (then bfloat16 is converted in software)."""
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        return "instructions unknown"
    found = [name for flag, name in _BF16_FLAGS if flag in flags]
    best = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    return ", ".join(found) if found else f"no bf16 instructions ({best} only)"


_BF16_FLAGS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"))


def _clock(device: torch.device) -> float:
    return time.perf_counter() if device.type == "cuda" else CPU_CLOCK()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seeds_epoch(
    make_model,
    images_uint8: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    lr: float = 1e-3,
) -> tuple[float, float]:
    """One epoch of the seeds' pipeline: (seconds, mean training loss in nats per
    image)."""
    torch.manual_seed(seed)
    model = make_model().to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(
        PerItemImages(images_uint8), batch_size=batch_size, shuffle=True
    )
    _sync(device)
    t0 = _clock(device)
    total = 0.0
    for x in loader:
        x = x.to(device)
        out = model(x)
        loss = beta_vae_loss(x, out.logits, out.mu, out.logvar).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(x)
    _sync(device)
    return _clock(device) - t0, total / len(images_uint8)


def loader_epoch(
    images_uint8: np.ndarray, *, batch_size: int, device: torch.device
) -> float:
    """Seconds for the seeds' DataLoader alone to produce one epoch of batches on
    ``device`` (no model)."""
    loader = DataLoader(
        PerItemImages(images_uint8), batch_size=batch_size, shuffle=True
    )
    _sync(device)
    t0 = _clock(device)
    for x in loader:
        x = x.to(device)
    _sync(device)
    return _clock(device) - t0


def fit_epoch(
    make_model,
    images: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    lr: float = 1e-3,
    **fit_kwargs,
) -> tuple[float, float]:
    """One epoch of :func:`betavae_lib.fit`: (seconds, mean training loss in nats per
    image)."""
    torch.manual_seed(seed)
    model = make_model()
    _sync(device)
    t0 = _clock(device)
    history = fit(
        model,
        images,
        epochs=1,
        batch_size=batch_size,
        lr=lr,
        device=device,
        seed=seed,
        progress=False,
        **fit_kwargs,
    )
    _sync(device)
    return _clock(device) - t0, history.train_loss[-1]


@dataclass
class Row:
    """One line of the results table; times in seconds, losses in nats per image."""

    name: str
    device: str
    reference: str
    ref_seconds: float | None = None
    seconds: float | None = None
    ref_loss: float | None = None
    loss: float | None = None
    note: str = ""

    @property
    def speedup(self) -> float | None:
        if self.ref_seconds is None or self.seconds is None:
            return None
        return self.ref_seconds / self.seconds


def _done(row: Row) -> Row:
    """Report a finished row on stderr (the table itself is printed at the end)."""
    print(
        f"  {row.name} [{row.device}]: {row.ref_seconds:.2f} s -> "
        f"{row.seconds:.2f} s ({row.speedup:.2f}x)",
        file=sys.stderr,
        flush=True,
    )
    return row


def interleaved_row(name, device, reference, ref, ours, note="") -> Row:
    """The finished row for interleaved repeats: ``ref`` and ``ours`` are lists of
    ``(seconds, final loss)``; the best time of each, the last run's loss."""
    return _done(
        Row(
            name,
            str(device),
            reference,
            min(t for t, _ in ref),
            min(t for t, _ in ours),
            ref[-1][1],
            ours[-1][1],
            note,
        )
    )


def compare(
    name: str,
    device: torch.device,
    make_model,
    images: torch.Tensor,
    *,
    batch_size: int,
    repeats: int,
    note: str = "",
    **fit_kwargs,
) -> Row:
    """Best time of the seeds' pipeline and of ``fit`` on the same images, interleaved,
    after a warm-up."""
    images_uint8 = (images[:, 0] * 255).round().to(torch.uint8).numpy()
    warm = max(1, min(len(images), 8 * batch_size))
    seeds_epoch(make_model, images_uint8[:warm], batch_size=batch_size, device=device)
    fit_epoch(
        make_model, images[:warm], batch_size=batch_size, device=device, **fit_kwargs
    )
    ref, ours, loader = [], [], []
    for _ in range(repeats):
        ref.append(
            seeds_epoch(make_model, images_uint8, batch_size=batch_size, device=device)
        )
        ours.append(
            fit_epoch(
                make_model, images, batch_size=batch_size, device=device, **fit_kwargs
            )
        )
        loader.append(loader_epoch(images_uint8, batch_size=batch_size, device=device))
    note = f"{note}; the reference's DataLoader alone takes {min(loader):.2f} s"
    return interleaved_row(name, device, "seeds' pipeline", ref, ours, note)


def fit_variant(
    name: str,
    device: torch.device,
    make_model,
    images: torch.Tensor,
    *,
    batch_size: int,
    repeats: int,
    note: str = "",
    **fit_kwargs,
) -> Row:
    """``fit`` with ``fit_kwargs`` against plain ``fit``, interleaved, after a warm-up
    of each (a whole epoch for ``compile=True``, so that compilation, including the
    smaller last batch, is excluded)."""
    warm = (
        len(images)
        if fit_kwargs.get("compile")
        else max(1, min(len(images), 8 * batch_size))
    )
    fit_epoch(make_model, images[:warm], batch_size=batch_size, device=device)
    fit_epoch(
        make_model, images[:warm], batch_size=batch_size, device=device, **fit_kwargs
    )
    ref, ours = [], []
    for _ in range(repeats):
        ref.append(fit_epoch(make_model, images, batch_size=batch_size, device=device))
        ours.append(
            fit_epoch(
                make_model, images, batch_size=batch_size, device=device, **fit_kwargs
            )
        )
    return interleaved_row(name, device, "fit (defaults)", ref, ours, note)


def checkpoint_overhead(
    device: torch.device,
    make_model,
    images: torch.Tensor,
    *,
    batch_size: int,
    repeats: int,
    tmp_dir,
) -> Row:
    """``fit`` saving its full training state after the epoch, against ``fit``
    without."""
    path = f"{tmp_dir}/bench_state.pt"
    return fit_variant(
        "MNIST MLPVAE epoch, checkpoint_path set",
        device,
        make_model,
        images,
        batch_size=batch_size,
        repeats=repeats,
        note="atomic save of the training state, fsync'd",
        checkpoint_path=path,
        overwrite=True,  # each repeat replaces the previous repeat's file
    )


def mnist_images() -> torch.Tensor:
    """MNIST train images (60000, 1, 28, 28) float32 in [0, 1]."""
    return load_dataset("mnist", "train").images


def dsprites_images(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` procedural dSprites images (n, 1, 64, 64) float32 in {0, 1}, a seeded
    uniform subset."""
    ds = load_dataset("dsprites", source="procedural")
    index = np.random.default_rng(seed).choice(len(ds), size=n, replace=False)
    return ds.images(np.sort(index))


def rows(
    device: torch.device,
    *,
    repeats: int = 3,
    dsprites_n: int | None = None,
    variants: bool = True,
    tmp_dir: str = "/tmp",
) -> list[Row]:
    """All training rows for one device."""
    cuda = device.type == "cuda"
    mnist = mnist_images()
    sprites = dsprites_images(dsprites_n or (32768 if cuda else 4096))
    out = [
        compare(
            "MNIST MLPVAE epoch, batch 128",
            device,
            MLPVAE,
            mnist,
            batch_size=128,
            repeats=repeats,
            note="60000 images",
        ),
        compare(
            "dSprites ConvVAE epoch, batch 64",
            device,
            ConvVAE,
            sprites,
            batch_size=64,
            repeats=repeats,
            note=f"{len(sprites)}-image procedural subset",
        ),
        checkpoint_overhead(
            device, MLPVAE, mnist, batch_size=128, repeats=repeats, tmp_dir=tmp_dir
        ),
    ]
    if variants:
        for kw in ({"amp": True}, {"compile": True}):
            label = ", ".join(f"{k}=True" for k in kw)
            out.append(
                fit_variant(
                    f"MNIST MLPVAE epoch, {label}",
                    device,
                    MLPVAE,
                    mnist,
                    batch_size=128,
                    repeats=repeats,
                    note="opt-in; changes the arithmetic",
                    **kw,
                )
            )
            out.append(
                fit_variant(
                    f"dSprites ConvVAE epoch, {label}",
                    device,
                    ConvVAE,
                    sprites,
                    batch_size=64,
                    repeats=repeats,
                    note="opt-in; changes the arithmetic",
                    **kw,
                )
            )
    return out

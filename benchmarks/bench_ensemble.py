"""Grids of models and the arithmetic limit: rows for ``python -m benchmarks.run``.

* **Ensemble vs one by one**: K models trained as one ensemble
  (:func:`betavae_lib.ensemble.fit_ensemble`) against K sequential ``fit`` calls, the
  same steps on the same images (CPU: the six MNIST MLPVAEs of the β sweep; CUDA: the
  fifteen dSprites ConvVAEs of chapter 6, eager and with ``cuda_graph=True``). The loss
  columns give the members' mean final training loss for each: on the CPU the
  ensemble's members are ``fit``'s models bit for bit, so the two columns agree.
* **fit vs its matrix products**: one MNIST ``fit`` epoch against the same epoch's
  matrix products alone (each linear layer's forward ``addmm`` and backward ``mm``s,
  same shapes and layouts, no other work). The ratio is how far ``fit`` is from the
  arithmetic it cannot avoid; ``python -m benchmarks.profile_fit`` shows where the rest
  goes.
* **Chapters, full profile**: each chapter's wall time from ``book/execution.json``
  when that run was a full-profile run on CUDA.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks import bench_train
from benchmarks.bench_train import Row, _clock, _done, _sync, interleaved_row
from betavae_lib import MLPVAE, ConvVAE, fit, seed_everything
from betavae_lib.ensemble import fit_ensemble
from betavae_lib.objective import OBJECTIVE_OPTIONS, Objective
from betavae_lib.schedules import Linear

ROOT = Path(__file__).resolve().parents[1]
BETAS = (0.1, 0.5, 1.0, 2.0, 4.0, 10.0)
CPU_ENSEMBLE_ROW = "6 MNIST MLPVAEs (β sweep), batch 128"
AMP_ENSEMBLE_ROW = "15 dSprites ConvVAEs (chapter 6), batch 64, amp=True"
CUDA_ENSEMBLE_ROWS = (
    "15 dSprites ConvVAEs, batch 64",
    "15 dSprites ConvVAEs, batch 64, cuda_graph=True",
)
GEMM_ROW = "MNIST MLPVAE epoch vs its matrix products"
CUDA_EPOCH_ROW = "MNIST MLPVAE epoch, cuda_graph=True"
CHAPTER_ROW = "chapter {name}, full profile"
CHAPTERS = (
    "01_first_vae",
    "02_elbo",
    "03_beta_tradeoff",
    "04_posterior_collapse",
    "05_fid",
    "06_disentanglement",
)


def chapter6_objectives(steps: int) -> dict[str, Objective]:
    """Chapter 6's five objectives (β warm-up over a quarter of the steps)."""
    warmup = max(1, steps // 4)
    return {
        "β = 1": Objective(beta=Linear(1.0, warmup)),
        "β = 4": Objective(beta=Linear(4.0, warmup)),
        "β = 10": Objective(beta=Linear(10.0, warmup)),
        "capacity": Objective(capacity=Linear(25.0, steps), gamma=1000.0),
        "β-TCVAE": Objective(tc=True, beta=Linear(6.0, warmup)),
    }


def _fit_options(objective: Objective) -> dict:
    """The ``fit`` keywords that build ``objective``."""
    return {name: getattr(objective, name) for name in OBJECTIVE_OPTIONS}


def _members(make_model, objectives: dict, seeds: dict) -> dict[str, nn.Module]:
    models = {}
    for name in objectives:
        seed_everything(seeds[name])
        models[name] = make_model()
    return models


def sequential_fits(
    make_model, images, objectives, seeds, *, batch_size, device
) -> tuple[float, float]:
    """Seconds for one ``fit`` per member, and their mean final training loss."""
    models = _members(make_model, objectives, seeds)
    _sync(device)
    t0, losses = _clock(device), []
    for name, model in models.items():
        history = fit(
            model,
            images,
            epochs=1,
            batch_size=batch_size,
            seed=seeds[name],
            device=device,
            progress=False,
            **_fit_options(objectives[name]),
        )
        losses.append(history.train_loss[-1])
    _sync(device)
    return _clock(device) - t0, sum(losses) / len(losses)


def one_ensemble(
    make_model, images, objectives, seeds, *, batch_size, device, **options
) -> tuple[float, float]:
    """Seconds for the same members trained as one ensemble, and their mean loss
    (options: ``fit_ensemble``'s, e.g. ``cuda_graph=True`` or ``amp=True``)."""
    models = _members(make_model, objectives, seeds)
    _sync(device)
    t0 = _clock(device)
    result = fit_ensemble(
        models,
        images,
        objectives=objectives,
        seeds=seeds,
        epochs=1,
        batch_size=batch_size,
        device=device,
        progress=False,
        **options,
    )
    _sync(device)
    seconds = _clock(device) - t0
    losses = [h.train_loss[-1] for h in result.histories.values()]
    return seconds, sum(losses) / len(losses)


def ensemble_row(
    name, device, make_model, images, objectives, seeds, *, batch_size, repeats, **kw
) -> Row:
    """Best of ``repeats`` interleaved runs of both, after a short warm-up of each."""
    warm = images[: 4 * batch_size]
    sequential_fits(
        make_model, warm, objectives, seeds, batch_size=batch_size, device=device
    )
    one_ensemble(
        make_model, warm, objectives, seeds, batch_size=batch_size, device=device, **kw
    )
    ref, ours = [], []
    for _ in range(repeats):
        ref.append(
            sequential_fits(
                make_model,
                images,
                objectives,
                seeds,
                batch_size=batch_size,
                device=device,
            )
        )
        ours.append(
            one_ensemble(
                make_model,
                images,
                objectives,
                seeds,
                batch_size=batch_size,
                device=device,
                **kw,
            )
        )
    steps = math.ceil(len(images) / batch_size)
    return interleaved_row(
        name,
        device,
        f"{len(objectives)} x fit, one by one",
        ref,
        ours,
        f"{steps} steps per model; loss: members' mean final training loss",
    )


def amp_ensemble_row(device, *, steps: int, repeats: int) -> Row:
    """Chapter 6's fifteen members (five objectives × three seeds) trained as one
    ensemble with ``amp=True`` (bfloat16 autocast) against the same ensemble in
    float32, interleaved after a warm-up of each."""
    sprites = bench_train.dsprites_images(steps * 64)
    objectives, seeds = chapter6_grid(steps)
    run = dict(batch_size=64, device=device)
    for amp in (False, True):
        one_ensemble(ConvVAE, sprites[:128], objectives, seeds, amp=amp, **run)
    ref, ours = [], []
    for _ in range(repeats):
        ref.append(one_ensemble(ConvVAE, sprites, objectives, seeds, **run))
        ours.append(one_ensemble(ConvVAE, sprites, objectives, seeds, amp=True, **run))
    return interleaved_row(
        AMP_ENSEMBLE_ROW,
        device,
        "the ensemble in float32",
        ref,
        ours,
        f"{steps} steps per model; opt-in, changes the arithmetic; "
        f"CPU: {bench_train.cpu_bf16_support()}",
    )


def chapter6_grid(steps: int) -> tuple[dict[str, Objective], dict[str, int]]:
    """Chapter 6's five objectives × seeds 0, 1, 2, keyed ``"<objective> / seed s"``:
    ``(objectives, seeds)``."""
    objectives, seeds = {}, {}
    for name, objective in chapter6_objectives(steps).items():
        for s in (0, 1, 2):
            objectives[f"{name} / seed {s}"], seeds[f"{name} / seed {s}"] = objective, s
    return objectives, seeds


# ------------------------------------------------------------------ the GEMM limit


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def matrix_products_epoch(model, n: int, batch_size: int, device) -> float:
    """Seconds for one epoch's matrix products alone: per step and linear layer the
    forward ``addmm`` and the backward ``mm``s (input gradient, except for the first
    layer, whose input needs none; weight gradient), with ``fit``'s shapes."""
    layers = linear_layers(model.to(device))
    sizes = [batch_size] * (n // batch_size) + (
        [n % batch_size] if n % batch_size else []
    )
    operands = {}
    for b in set(sizes):
        for lin in layers:
            operands[b, lin] = (
                torch.rand(b, lin.in_features, device=device),
                torch.rand(b, lin.out_features, device=device),
            )
    _sync(device)
    t0 = _clock(device)
    with torch.no_grad():
        for b in sizes:
            for lin in layers:
                x, g = operands[b, lin]
                weight = lin.weight
                torch.addmm(lin.bias, x, weight.t())
                if lin is not layers[0]:
                    g.mm(weight)
                g.t().mm(x)
    _sync(device)
    return _clock(device) - t0


def fit_epoch_seconds(images, batch_size, device) -> tuple[float, float]:
    torch.manual_seed(0)
    model = MLPVAE()
    _sync(device)
    t0 = _clock(device)
    history = fit(
        model, images, epochs=1, batch_size=batch_size, device=device, progress=False
    )
    _sync(device)
    return _clock(device) - t0, history.train_loss[-1]


def gemm_row(device, images, *, batch_size: int, repeats: int) -> Row:
    """``fit``'s epoch against the same epoch's matrix products, interleaved."""
    fit_epoch_seconds(images[: 8 * batch_size], batch_size, device)
    matrix_products_epoch(MLPVAE(), 8 * batch_size, batch_size, device)
    limit, ours = [], []
    for _ in range(repeats):
        limit.append(matrix_products_epoch(MLPVAE(), len(images), batch_size, device))
        ours.append(fit_epoch_seconds(images, batch_size, device))
    best_limit, best = min(limit), min(t for t, _ in ours)
    return _done(
        Row(
            GEMM_ROW,
            str(device),
            "its matrix products alone",
            best_limit,
            best,
            None,
            ours[-1][1],
            f"{len(images)} images, batch {batch_size}; fit takes "
            f"{best / best_limit:.2f}x its matrix products (speed-up column)",
        )
    )


def cuda_epoch_row(device, images, *, batch_size: int, repeats: int) -> Row:
    """One MNIST MLPVAE epoch: ``fit`` against a one-member ensemble in a CUDA graph."""

    def graphed():
        return one_ensemble(
            MLPVAE,
            images,
            {"m": Objective()},
            {"m": 0},
            batch_size=batch_size,
            device=device,
            cuda_graph=True,
        )

    fit_epoch_seconds(images[: 8 * batch_size], batch_size, device)
    graphed()
    ref, ours = [], []
    for _ in range(repeats):
        ref.append(fit_epoch_seconds(images, batch_size, device))
        ours.append(graphed())
    limit = matrix_products_epoch(MLPVAE(), len(images), batch_size, device)
    return interleaved_row(
        CUDA_EPOCH_ROW,
        device,
        "fit (eager)",
        ref,
        ours,
        f"{len(images)} images; the epoch's matrix products alone take {limit:.2f} s",
    )


# ------------------------------------------------------------------ chapters


def chapter_rows(manifest: Path = ROOT / "book" / "execution.json") -> list[Row]:
    """Each chapter's wall time from its full-profile CUDA run in the manifest
    (``book/execution.json``: one entry per notebook, each saying how it last ran)."""
    try:
        run = json.loads(manifest.read_text())
    except (OSError, ValueError):
        run = {}
    entries = run.get("notebooks", []) if isinstance(run, dict) else []
    on_cuda = {
        Path(e["path"]).stem: e
        for e in entries
        if isinstance(e, dict)
        and "path" in e
        and e.get("device_kind") == "cuda"
        and e.get("profile") == "full"
    }
    rows = []
    for name in CHAPTERS:
        entry = on_cuda.get(name)
        if entry is None:
            why = (
                "no CUDA device"
                if not torch.cuda.is_available()
                else f"{manifest.name} holds no full-profile CUDA run of it; run "
                "tools/execute_book.py --profile full"
            )
            rows.append(
                Row(
                    CHAPTER_ROW.format(name=name),
                    "cuda",
                    "-",
                    note=f"not measured ({why})",
                )
            )
            continue
        rows.append(
            Row(
                CHAPTER_ROW.format(name=name),
                "cuda",
                "-",
                None,
                entry.get("wall_s"),
                note=f"{entry.get('device')}, {entry.get('status')}, from "
                f"{manifest.name} ({entry.get('started_utc', '?')})",
            )
        )
    return rows


# ------------------------------------------------------------------ all rows


def rows(device: torch.device, *, repeats: int = 2, quick: bool = False) -> list[Row]:
    """The rows for ``device``; short runs (a few hundred steps per model)."""
    mnist = bench_train.mnist_images()
    if device.type == "cpu":
        steps = 60 if quick else 200
        grid = {f"β = {b:g}": Objective(beta=b) for b in BETAS}
        out = [
            ensemble_row(
                CPU_ENSEMBLE_ROW,
                device,
                MLPVAE,
                mnist[: steps * 128],
                grid,
                dict.fromkeys(grid, 0),
                batch_size=128,
                repeats=repeats,
            ),
            gemm_row(device, mnist, batch_size=128, repeats=repeats),
            amp_ensemble_row(device, steps=20 if quick else 60, repeats=repeats),
        ]
        return out
    steps = 100 if quick else 300
    sprites = bench_train.dsprites_images(steps * 64)
    objectives, seeds = chapter6_grid(steps)
    out = []
    for name, graph in zip(CUDA_ENSEMBLE_ROWS, (False, True)):
        out.append(
            ensemble_row(
                name,
                device,
                ConvVAE,
                sprites,
                objectives,
                seeds,
                batch_size=64,
                repeats=repeats,
                cuda_graph=graph,
            )
        )
    out.append(cuda_epoch_row(device, mnist, batch_size=128, repeats=repeats))
    return out


def not_measured_cuda() -> list[Row]:
    why = "not measured (no CUDA device)"
    names = (*CUDA_ENSEMBLE_ROWS, CUDA_EPOCH_ROW)
    return [Row(n, "cuda", "-", note=why) for n in names]


if __name__ == "__main__":  # a quick look: python -m benchmarks.bench_ensemble
    start = time.perf_counter()
    for row in rows(torch.device("cpu"), repeats=1, quick=True):
        print(row)
    print(f"{time.perf_counter() - start:.0f} s")

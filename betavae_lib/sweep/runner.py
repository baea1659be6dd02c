"""The sweep's entry points: :func:`run` (train every run of a grid that is not
finished), :func:`collect` (every record as one DataFrame) and :func:`load_run`."""

from __future__ import annotations

import math
import numbers
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .. import checkpoints
from .._common import check_flag, pick_device
from .backends import (
    _check_connect_timeout,
    _import_ray,
    _make_shards,
    _run_local,
    _run_ray,
)
from .config import (
    MIN_STALE_AFTER,
    SweepWarning,
    _check_int,
    _check_number,
    _is_int,
    _short,
)
from .grid import Grid, get_grid
from .store import (
    DamagedFileError,
    _is_finished,
    _prepare_root,
    _read_json,
    _read_record,
    run_dir,
)

BACKENDS = ("local", "ray")


@dataclass
class SweepReport:
    """What :func:`run` did: runs trained, finished before, busy elsewhere, failed."""

    grid: str
    root: str
    backend: str
    trained: list[int] = field(default_factory=list)
    finished_before: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def __str__(self) -> str:
        text = (
            f"{self.grid}: trained {len(self.trained)} run(s), "
            f"{len(self.finished_before)} finished before, {len(self.busy)} claimed by "
            f"other workers"
        )
        if self.failed:
            text += f", {len(self.failed)} failed"
        return text + f" ({self.backend}, {self.wall_seconds:.1f} s)"


def _check_indices(grid: Grid, indices) -> list[int]:
    """The distinct indices, sorted; each is checked as it comes (a huge range fails at
    its first index out of the grid, before anything is expanded)."""
    if indices is None:
        return list(range(len(grid)))
    if isinstance(indices, (str, bytes)) or _is_int(indices):
        raise TypeError(
            f"indices must be a list of run indices (e.g. [0, 3] or range(10)), got "
            f"{_short(indices)}"
        )
    if isinstance(indices, range) and len(indices):
        grid[indices[0]], grid[indices[-1]]  # both ends within the grid
    checked = set()
    for i in indices:
        grid[i]  # raises IndexError / TypeError with the grid's size
        checked.add(int(i))
    return sorted(checked)


def run(
    grid: Grid | str,
    root: str | os.PathLike,
    *,
    backend: str = "local",
    indices=None,
    device: str = "auto",
    shard_size: int | None = None,
    cpus_per_shard: int = 1,
    gpus_per_shard: float = 0,
    deterministic: bool = True,
    batch_runs: bool = True,
    address: str | None = None,
    num_cpus: int | None = None,
    connect_timeout: float = 30.0,
    stale_after: float = 600.0,
    keep_going: bool = False,
    progress: bool = True,
) -> SweepReport:
    """Train the runs of ``grid`` (or its ``indices``) not finished in ``root``.

    grid: a :class:`Grid`, or a name or spec file for :func:`get_grid`. backend:
    ``"local"`` (this process) or ``"ray"``. Runs are cut into shards of ``shard_size``
    runs sharing data, architecture, length and learning rate (default: all such runs
    with the local backend, 1 with Ray); a shard runs with ``cpus_per_shard`` torch
    threads (also its Ray CPU request) and, with Ray, ``gpus_per_shard`` GPUs.
    batch_runs: train the runs of a shard as one ensemble (module docstring); False
    trains every run alone with ``fit``. deterministic:
    ``torch.use_deterministic_algorithms`` while training, so that reruns match bit for
    bit on GPUs too.

    Ray only: address: an existing cluster (``host:port``, ``ray://host:port`` or
    ``auto``); with none, a Ray instance already initialised in this process is used,
    else one is started here with ``num_cpus`` CPUs (default: all). An address that does
    not connect raises ConnectionError within about ``2 * connect_timeout`` seconds.
    ``root`` must then be a folder every worker reaches (a shared file system).

    stale_after: seconds after which an untouched claim is stale (module docstring).
    keep_going: record a failing run in the report and go on, instead of raising.
    Returns a :class:`SweepReport`.
    """
    from tqdm.auto import tqdm

    _check_backend(backend, deterministic, batch_runs, keep_going, progress)
    grid = grid if isinstance(grid, Grid) else get_grid(grid)
    if shard_size is None and backend == "ray":
        shard_size = 1  # one task per run, so that the runs spread over the workers
    if shard_size is not None:
        _check_int("shard_size", shard_size, 1)
    _check_int("cpus_per_shard", cpus_per_shard, 1, 4096)
    _check_number("gpus_per_shard", gpus_per_shard, high=4096)
    _check_stale_after(stale_after)
    _check_ray_options(backend, address, num_cpus, connect_timeout)
    if backend == "local":
        pick_device(device)  # an unknown or missing device fails before any work
    if str(root).strip() == "":
        raise ValueError("root must name a folder for the sweep's runs, got ''")
    root = _prepare_root(root, grid)
    indices = _check_indices(grid, indices)
    t0 = time.perf_counter()
    pending = [i for i in indices if not _is_finished(run_dir(root, i), grid[i])]
    report = SweepReport(grid.name, str(root), backend)
    report.finished_before = sorted(set(indices) - set(pending))
    shards = _make_shards(grid, pending, shard_size)
    options = {
        "device": device,
        "threads": cpus_per_shard,
        "deterministic": deterministic,
        "stale_after": stale_after,
        "keep_going": keep_going,
        "batch_runs": batch_runs,
    }
    with tqdm(
        total=len(pending), desc=grid.name, unit="run", disable=not progress
    ) as bar:
        if backend == "local":
            outcomes = _run_local(shards, root, options, bar)
        else:
            outcomes = _run_ray(
                shards,
                root,
                options,
                bar,
                address=address,
                num_cpus=num_cpus,
                cpus=cpus_per_shard,
                gpus=gpus_per_shard,
                connect_timeout=connect_timeout,
            )
    _file_outcomes(report, outcomes)
    report.wall_seconds = time.perf_counter() - t0
    return report


def _check_backend(backend, deterministic, batch_runs, keep_going, progress) -> None:
    """Raise on an unknown backend or a flag that is not a bool; with the Ray backend,
    import Ray, so that a missing Ray fails before any work."""
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown backend {_short(backend)}; valid are {', '.join(BACKENDS)}"
        )
    for name, flag in (
        ("deterministic", deterministic),
        ("batch_runs", batch_runs),
        ("keep_going", keep_going),
        ("progress", progress),
    ):
        check_flag(name, flag)
    if backend == "ray":
        _import_ray()  # fail before any work


def _check_stale_after(stale_after) -> None:
    """Raise unless ``stale_after`` is a finite number of seconds, at least
    :data:`MIN_STALE_AFTER`."""
    if not (
        isinstance(stale_after, numbers.Real)
        and not isinstance(stale_after, bool)
        and MIN_STALE_AFTER <= stale_after < math.inf
    ):
        raise ValueError(
            f"stale_after must be at least {MIN_STALE_AFTER:g} s, got "
            f"{_short(stale_after)}: a live worker touches its claim every "
            f"stale_after / 4 s, and a shared file system may show that a minute "
            f"late, so a shorter time would let another worker break a live claim "
            f"and train the run twice"
        )


def _check_ray_options(backend: str, address, num_cpus, connect_timeout) -> None:
    """Raise on a bad option of the Ray backend, or an address without it."""
    _check_connect_timeout(connect_timeout)
    if num_cpus is not None:
        _check_int("num_cpus", num_cpus, 1)
    if address is not None and backend != "ray":
        raise ValueError('address is for backend="ray"')


def _file_outcomes(report: SweepReport, outcomes: list[dict]) -> None:
    """File each run's outcome in ``report``: trained, finished before, busy (claimed
    by another worker) or failed (with its error), in index order."""
    for outcome in sorted(outcomes, key=lambda o: o["index"]):
        status, i = outcome["status"], outcome["index"]
        if status == "failed":
            report.failed[i] = outcome["error"]
        else:
            {
                "trained": report.trained,
                "finished": report.finished_before,
                "busy": report.busy,
            }[status].append(i)
    report.finished_before.sort()


def _row(record: dict) -> dict:
    """A record as one flat row: configuration, coefficients, scalar scores, timing."""
    config = dict(record["config"])
    coefficients = config.pop("coefficients")
    metrics = dict(record["metrics"])
    per_factor = metrics.pop("mig_per_factor")
    metrics.pop("kl_per_dim")
    row = {"index": record["index"], **config, **coefficients, "steps": record["steps"]}
    row["trainer"] = record.get("trainer", "fit")  # records from before ensembles
    row.update(metrics)
    row.update({f"mig_{name}": value for name, value in per_factor.items()})
    for key in (
        "train_seconds",
        "eval_seconds",
        "resumed_from_epoch",
        "device",
        "device_name",
        "threads",
        "deterministic",
        "dataset_source",
        "host",
        "pid",
    ):
        row[key] = record[key]
    return row


def collect(root: str | os.PathLike):
    """All finished runs under ``root`` as one pandas DataFrame, a row per run.

    Columns: ``index``, the configuration (objective, seed, …), one column per
    coefficient (NaN where an objective lacks it), the scores (``mig``, ``factor_vae``,
    ``kl``, ``recon`` in nats per image, ``active_units``, ``mig_<factor>``, …),
    ``trainer`` (``"fit"`` or ``"ensemble"``), ``train_seconds`` (for an ensemble, its
    time divided by its runs), ``eval_seconds``, ``device``.
    """
    import pandas as pd

    runs = Path(root) / "runs"
    if not runs.is_dir():
        raise FileNotFoundError(f"no sweep at {root} (no runs/ folder)")
    rows = []
    for path in sorted(runs.glob("*/record.json")):
        try:
            rows.append(_row(_read_json(path, "a run's record")))
        except (DamagedFileError, KeyError, TypeError, AttributeError) as e:
            reason = str(e) if isinstance(e, DamagedFileError) else f"{path}: {e!r}"
            warnings.warn(
                f"skipped a damaged record: {reason}; `run` trains that run again",
                SweepWarning,
                stacklevel=2,
            )
    if not rows:
        return pd.DataFrame({"index": pd.Series(dtype=int)})
    return pd.DataFrame(rows).sort_values("index", ignore_index=True)


def load_run(root: str | os.PathLike, index: int):
    """The trained model of run ``index`` (in eval mode) and its record.

    The checkpoint is ``fit``'s training state for a run trained alone and a model
    checkpoint for one trained in an ensemble; ``checkpoints.load`` reads both."""
    directory = run_dir(root, index)
    record = _read_record(directory)
    if record is None:
        raise FileNotFoundError(
            f"run {index} is not finished under {root} (no {directory / 'record.json'})"
        )
    model, _ = checkpoints.load(directory / "checkpoint.pt")
    return model, record

"""Sweeps: train a grid of runs here or on a Ray cluster, then collect their scores.

A **grid** (:class:`Grid`) is a deterministic, index-addressable list of run
configurations (:class:`RunConfig`): the same index always means the same run, as
disentanglement_lib's ``--model_num``. :func:`run` trains every run of a grid that is
not finished and writes, per run, into ``root/runs/NNNNN/`` (NNNNN: the run's index):

- ``checkpoint.pt``: for a run trained alone, the training state written by
  :func:`~betavae_lib.train.fit` after every epoch (weights, optimiser, RNG states),
  from which an interrupted run resumes; for a run trained in an ensemble, a model
  checkpoint (:func:`betavae_lib.checkpoints.save`, with its History in ``meta``)
  written once training ended. ``betavae_lib.load`` and :func:`load_run` rebuild the
  model from either;
- ``record.json``: the configuration and the scores (MIG, FactorVAE score, KL,
  reconstruction, active units), wall times and the device. It is written atomically (a
  temporary file renamed into place) and a run is finished exactly when its record
  exists. ``trainer`` says how the run was trained: ``"fit"`` or ``"ensemble"``;
- ``claim``: present while a worker trains the run.

**Ensembles.** A shard's runs share data, architecture, length and learning rate
(:func:`~betavae_lib.sweep.shard._shard_key`), so the runs of a shard that are not
finished and have no training state to resume train as one batched model,
:func:`~betavae_lib.ensemble.fit_ensemble`, each with its own seed and
:class:`~betavae_lib.objective.Objective`; then each is scored and recorded as a run
trained alone would be. A member takes the batches and noise ``fit`` gives the run
alone; on the CPU its weights, History and scores are ``fit``'s bit for bit (on any
CPU: the ensemble makes ``fit``'s kernel calls, see :mod:`betavae_lib.ensemble`), on
CUDA (the "grouped" layout) to float32 rounding. So on CUDA a run's numbers depend, to
that rounding, on the ensemble it trained in; the same shards give the same numbers
bit for bit. A member whose
loss stops being finite is frozen by the ensemble and recorded as failed, naming the
step; the other members train on. An ensemble keeps no training state: interrupted
mid-training, its runs have no checkpoint and the next sweep trains them again from the
start (to the same numbers). A run that has a training state (a run trained alone and
interrupted) resumes alone with ``fit(resume=True)``, and a lone run (a shard of one)
trains alone with ``fit``, checkpointing every epoch. ``batch_runs=False`` trains every
run alone.

``root/grid.json`` holds the grid's configurations; a root accepts only the grid that
created it or one that extends it (runs appended at the end), so an index never changes
meaning in a root. :func:`collect` reads every record into one pandas DataFrame; a
damaged record is skipped with a :class:`SweepWarning` naming it, and :func:`run`
trains that run again. A grid holds every run once (a run listed twice is refused)
and at most :data:`MAX_GRID_RUNS` runs, a bound checked before any axis is expanded.

**Claims.** A worker claims a run by creating ``claim`` with ``os.open(O_CREAT |
O_EXCL)``, which succeeds for exactly one worker (also on NFS v3 and later), and removes
it when the run ends or fails. While a run trains, a thread touches the claim every
``stale_after / 4`` seconds. A claim is *stale* when its holder ran on this host and is
no longer running, or when nobody has touched it for ``stale_after`` seconds (a holder
on another machine that died); a stale claim is removed and the run claimed anew,
resuming from its checkpoint. Breaking a claim is serialised by a second lock file,
``claim.break``, so two workers never break the same claim and then both train.
``stale_after`` must exceed any pause of a live worker (a suspended laptop, a frozen NFS
mount), and is at least :data:`MIN_STALE_AFTER` seconds. A checkpoint that cannot be
read fails its run (naming the file), never the claims of the others.

**Backends.** ``"local"`` trains in this process; ``"ray"`` sends each shard of runs to
a Ray task with its CPU/GPU request, on an existing cluster (``address``) or on a Ray
instance started here. Both call the same function,
:func:`~betavae_lib.sweep.shard._train_shard`, with the same seeds, thread count and
deterministic-algorithm setting, so a run's numbers do not depend on the backend (on
the same device type, for the same shards).
By default the local backend makes one shard of all runs that can share an ensemble, and
the Ray backend one shard per run (one task per CPU); give Ray ``shard_size`` > 1 and a
GPU per shard to train ensembles on a cluster. A shard's request that no node of the
cluster can meet raises :class:`SweepError` after ``connect_timeout`` seconds (nodes may
join meanwhile), instead of waiting forever. Ray is optional: ``pip install
"betavae_lib[ray]"``.

The parts, one module each: :mod:`~betavae_lib.sweep.config` (a run's configuration),
:mod:`~betavae_lib.sweep.grid` (grids and their specs), :mod:`~betavae_lib.sweep.store`
(the root folder, records and claims), :mod:`~betavae_lib.sweep.score` (scores and
records), :mod:`~betavae_lib.sweep.shard` (training a shard of runs),
:mod:`~betavae_lib.sweep.backends` (local and Ray), :mod:`~betavae_lib.sweep.runner`
(:func:`run`, :func:`collect`, :func:`load_run`) and :mod:`~betavae_lib.sweep.cli` (the
command line).
"""

from __future__ import annotations

from .backends import RAY_RECHECK
from .cli import ORDINARY_ERRORS, main
from .config import (
    CONFIG_FIELDS,
    DATASET_SIZES,
    MAX_CONNECT_TIMEOUT,
    MAX_GRID_RUNS,
    MAX_NAME_LENGTH,
    MAX_SPEC_NODES,
    MIN_STALE_AFTER,
    OBJECTIVES,
    OBJECTIVES_DOC,
    RunConfig,
    SweepError,
    SweepWarning,
)
from .grid import GRIDS, Grid, chapter6_seeds, get_grid
from .runner import BACKENDS, SweepReport, collect, load_run, run
from .score import RECORD_FORMAT
from .store import DamagedFileError, run_dir

__all__ = [
    "BACKENDS",
    "CONFIG_FIELDS",
    "DATASET_SIZES",
    "DamagedFileError",
    "GRIDS",
    "Grid",
    "MAX_CONNECT_TIMEOUT",
    "MAX_GRID_RUNS",
    "MAX_NAME_LENGTH",
    "MAX_SPEC_NODES",
    "MIN_STALE_AFTER",
    "OBJECTIVES",
    "OBJECTIVES_DOC",
    "ORDINARY_ERRORS",
    "RAY_RECHECK",
    "RECORD_FORMAT",
    "RunConfig",
    "SweepError",
    "SweepReport",
    "SweepWarning",
    "chapter6_seeds",
    "collect",
    "get_grid",
    "load_run",
    "main",
    "run",
    "run_dir",
]

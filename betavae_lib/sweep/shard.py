"""Training one shard of runs, the function both backends call
(:func:`_train_shard`): runs that can share a batched model (:func:`_shard_key`) train
as one ensemble, a run with a training state resumes alone with ``fit``, and each
run is scored and recorded under its claim."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from pathlib import Path

import torch

from .. import checkpoints
from .._common import pick_device, seed_everything
from ..ensemble import fit_ensemble
from ..models import ConvVAE
from ..train import NonFiniteLossError, fit
from .config import RunConfig
from .score import (
    _check_evaluation_set,
    _record,
    _resumable_epoch,
    _scores,
    _training_images,
)
from .store import (
    _heartbeat,
    _is_finished,
    _release_claim,
    _try_claim,
    _write_json_atomic,
    run_dir,
)


def _build_model(config: RunConfig) -> ConvVAE:
    """The run's model with its initial weights (seeded by the run's seed)."""
    seed_everything(config.seed)
    return ConvVAE(**config.model_config())


def _train_and_score(index: int, config: RunConfig, directory: Path, device) -> dict:
    """Train run ``index`` alone with ``fit`` (resuming from its training state if any)
    and score it; its record."""
    device = pick_device(device)
    _check_evaluation_set(config)
    images = _training_images(config.dataset, config.train_size, config.data_seed)
    checkpoint = directory / "checkpoint.pt"
    resumed_from = _resumable_epoch(checkpoint)
    model = _build_model(config)
    history = fit(
        model,
        images,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        device=device,
        seed=config.seed,
        progress=False,
        checkpoint_path=checkpoint,
        resume=resumed_from is not None,
        overwrite=resumed_from is None,  # a model checkpoint without a record
        amp=config.amp,
        **config.fit_options(),
    )
    t0 = time.perf_counter()
    metrics = _scores(model, config, device)
    return _record(
        index,
        config,
        history,
        metrics,
        device,
        trainer="fit",
        train_seconds=float(sum(history.seconds)),
        eval_seconds=time.perf_counter() - t0,
        resumed_from=resumed_from or 0,
    )


def _train_claimed(
    index: int, config: RunConfig, root: Path, device, stale_after
) -> dict:
    """Claim run ``index``, train it alone and score it, write its record; its
    outcome."""
    directory = run_dir(root, index)
    directory.mkdir(parents=True, exist_ok=True)
    if _is_finished(directory, config):
        return {"index": index, "status": "finished"}
    claim = directory / "claim"
    token = _try_claim(claim, stale_after)
    if token is None:
        return {"index": index, "status": "busy"}
    try:
        if _is_finished(directory, config):  # finished between the check and the claim
            return {"index": index, "status": "finished"}
        with _heartbeat(claim, stale_after / 4):
            record = _train_and_score(index, config, directory, device)
        _write_json_atomic(directory / "record.json", record)
        return {"index": index, "status": "trained"}
    finally:
        _release_claim(claim, token)


def _failed(index: int, error: BaseException | str) -> dict:
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    return {"index": index, "status": "failed", "error": error}


def _claim_members(
    jobs, root: Path, stale_after, keep_going: bool = False
) -> tuple[list, list, dict]:
    """Claim the runs of ``jobs`` for an ensemble: ``(members, alone, outcomes)``.

    members: ``(index, config, claim, token)`` of runs claimed, unfinished and without
    a training state; alone: jobs with a training state to resume (not claimed, they
    train alone); outcomes: index -> outcome of runs finished or busy (or, with
    ``keep_going``, failed: a checkpoint that cannot be read). A failure releases every
    claim taken.
    """
    members, alone, outcomes = [], [], {}
    try:
        for index, config in jobs:
            directory = run_dir(root, index)
            directory.mkdir(parents=True, exist_ok=True)
            if _is_finished(directory, config):
                outcomes[index] = {"index": index, "status": "finished"}
                continue
            claim = directory / "claim"
            token = _try_claim(claim, stale_after)
            if token is None:
                outcomes[index] = {"index": index, "status": "busy"}
                continue
            try:
                finished = _is_finished(directory, config)
                resumable = (
                    not finished
                    and _resumable_epoch(directory / "checkpoint.pt") is not None
                )
            except Exception as e:
                _release_claim(claim, token)
                if not keep_going:
                    raise
                outcomes[index] = _failed(index, e)
                continue
            if finished:
                _release_claim(claim, token)
                outcomes[index] = {"index": index, "status": "finished"}
            elif resumable:
                _release_claim(claim, token)
                alone.append((index, config))
            else:
                members.append((index, config, claim, token))
    except BaseException:  # no claim may outlive a failure (or an interrupt)
        for _, _, claim, token in members:
            _release_claim(claim, token)
        raise
    return members, alone, outcomes


def _train_ensemble(members: list, root: Path, device, keep_going: bool):
    """Train the claimed ``members`` as one ensemble, then score, checkpoint and record
    each; yields each member's outcome as it is written. The caller releases the
    claims."""
    device = pick_device(device)
    for _, config, *_ in members:
        _check_evaluation_set(config)
    first = members[0][1]
    images = _training_images(first.dataset, first.train_size, first.data_seed)
    models = {index: _build_model(config) for index, config, *_ in members}
    configs = {index: config for index, config, *_ in members}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # failed: recorded
        result = fit_ensemble(
            models,
            images,
            objectives={i: c.to_objective() for i, c in configs.items()},
            seeds={i: c.seed for i, c in configs.items()},
            epochs=first.epochs,
            batch_size=first.batch_size,
            lr=first.lr,
            device=device,
            progress=False,
            on_failure="warn",
            amp=first.amp,
        )
    indices = list(configs)
    seconds = None
    diverged = []
    for index, config in configs.items():
        if index in result.failed:
            step = result.failed[index]
            error = NonFiniteLossError(
                f"run {index}: the loss became NaN or infinite at step {step} (trained "
                f"in an ensemble with runs {indices}, which trained on); lower the "
                f"learning rate or β"
            )
            if not keep_going:
                diverged.append(error)
                continue
            yield _failed(index, error)
            continue
        history = result.histories[index]
        seconds = float(sum(history.seconds)) if seconds is None else seconds
        try:
            _save_member(
                root, index, config, models[index], history, device, indices, seconds
            )
        except Exception as e:
            if not keep_going:
                raise
            yield _failed(index, e)
            continue
        yield {"index": index, "status": "trained"}
    if diverged:
        raise (
            diverged[0]
            if len(diverged) == 1
            else NonFiniteLossError("; ".join(map(str, diverged)))
        )


def _save_member(
    root: Path, index, config, model, history, device, indices: list, seconds: float
) -> None:
    """Score a member trained in the ensemble of runs ``indices``, then write its
    checkpoint and record (its share of the ensemble's ``seconds`` as its training
    time)."""
    t0 = time.perf_counter()
    metrics = _scores(model, config, device)
    record = _record(
        index,
        config,
        history,
        metrics,
        device,
        trainer="ensemble",
        train_seconds=seconds / len(indices),
        eval_seconds=time.perf_counter() - t0,
        resumed_from=0,
        ensemble={"runs": indices, "train_seconds": seconds},
    )
    directory = run_dir(root, index)
    checkpoints.save(
        model,
        directory / "checkpoint.pt",
        trainer="ensemble",
        index=index,
        config=config.as_dict(),
        epoch=config.epochs,
        step=history.steps,
        history=history.as_dict(),
    )
    _write_json_atomic(directory / "record.json", record)


@contextlib.contextmanager
def _torch_settings(threads: int, deterministic: bool):
    """Torch's thread count and deterministic mode for a shard, restored afterwards."""
    old_threads = torch.get_num_threads()
    old_mode = torch.are_deterministic_algorithms_enabled()
    if deterministic and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_mode)


def _train_shard(
    jobs: list,
    root: str,
    *,
    device="auto",
    threads: int = 1,
    deterministic: bool = True,
    stale_after: float = 600.0,
    keep_going: bool = False,
    batch_runs: bool = True,
    report=None,
) -> list[dict]:
    """Train one shard of runs; returns one outcome dict per run.

    jobs: ``(index, RunConfig.as_dict())`` pairs. Every backend calls this function, so
    that a run's numbers do not depend on the backend. With ``batch_runs``, the runs
    that are unfinished, free and without a training state train as one ensemble per
    :func:`_shard_key` (when there are two or more); the others (a run resuming its
    training state, a lone run) train alone with ``fit``, one after another. Outcomes:
    ``{"index", "status"}`` with status ``trained``, ``finished`` (already), ``busy``
    (claimed by another live worker) or ``failed`` (with ``error``; only with
    ``keep_going``). report: called with each outcome as it comes (the local backend's
    progress bar).
    """
    root = Path(root)
    outcomes = []

    def done(outcome):
        outcomes.append(outcome)
        if report is not None:
            report(outcome)

    jobs = [(index, RunConfig.from_dict(config)) for index, config in jobs]
    with _torch_settings(threads, deterministic):
        alone = []
        groups: dict[tuple, list] = {}
        for job in jobs:
            groups.setdefault(_shard_key(job[1]), []).append(job)
        for group in groups.values():
            if not batch_runs or len(group) == 1:
                alone += group
                continue
            members, resume, found = _claim_members(
                group, root, stale_after, keep_going
            )
            for outcome in found.values():
                done(outcome)
            alone += resume
            if len(members) == 1:  # alone after all: fit, with its checkpoints
                index, config, claim, token = members[0]
                _release_claim(claim, token)
                alone.append((index, config))
                continue
            if not members:
                continue
            claims = [claim for _, _, claim, _ in members]
            try:
                with _heartbeat(claims, stale_after / 4):
                    for outcome in _train_ensemble(members, root, device, keep_going):
                        done(outcome)
            except Exception as e:
                if not keep_going:
                    raise
                finished = {o["index"] for o in outcomes}
                for index, *_ in members:
                    if index not in finished:
                        done(_failed(index, e))
            finally:
                for _, _, claim, token in members:
                    _release_claim(claim, token)
        for index, config in sorted(alone, key=lambda job: job[0]):
            try:
                outcome = _train_claimed(index, config, root, device, stale_after)
            except Exception as e:
                if not keep_going:
                    raise
                outcome = _failed(index, e)
            done(outcome)
    return outcomes


def _shard_key(config: RunConfig) -> tuple:
    """Runs sharing data, architecture, length and learning rate: what one batched
    trainer (:func:`~betavae_lib.ensemble.fit_ensemble`) can hold."""
    return (
        config.dataset,
        config.train_size,
        config.data_seed,
        config.epochs,
        config.batch_size,
        config.lr,
        config.latent_dim,
        config.width,
        config.hidden,
        config.amp,
    )

"""What a finished run is scored on and what its record holds: the training and
evaluation subsets of the dataset, the scores (MIG, FactorVAE score, KL,
reconstruction, active units) and the ``record.json`` dictionary."""

from __future__ import annotations

import functools
import os
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import _version, checkpoints
from .._common import seed_everything
from ..data import load_dataset
from ..evaluation import evaluate
from ..metrics import active_units, factor_vae_score, mig
from .config import DATASET_SIZES, RunConfig, SweepError

RECORD_FORMAT = "betavae_lib.sweep.record/1"


@functools.lru_cache(maxsize=2)
def _dataset(name: str):
    """The dataset (cached per process); records say whether dSprites is procedural."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(name)


@functools.lru_cache(maxsize=2)
def _training_images(name: str, train_size: int | None, data_seed: int) -> torch.Tensor:
    """(N, 1, 64, 64) bool training images: a sorted, seeded subset of the grid."""
    ds = _dataset(name)
    rng = np.random.default_rng(data_seed)
    index = (
        np.arange(len(ds))
        if train_size is None
        else np.sort(rng.choice(len(ds), train_size, replace=False))
    )
    chunks = np.array_split(index, -(-len(index) // 65_536))
    return torch.cat([ds.images(chunk).bool() for chunk in chunks])


@functools.lru_cache(maxsize=2)
def _evaluation_set(name: str, eval_size: int, data_seed: int):
    """(images (N, 1, 64, 64) bool, factor classes (N, K)), seeded ``data_seed + 1``."""
    ds = _dataset(name)
    index = _evaluation_index(name, eval_size, data_seed)
    return ds.images(index).bool(), ds.index_to_factors(index)


def _evaluation_index(name: str, eval_size: int, data_seed: int) -> np.ndarray:
    return np.random.default_rng(data_seed + 1).choice(
        DATASET_SIZES[name], eval_size, replace=False
    )


def _check_evaluation_set(config: RunConfig) -> None:
    """Before training: MIG needs every factor to take two values or more among the
    evaluation images; ValueError naming eval_size otherwise (the scores would fail
    only after the training)."""
    factors = _dataset(config.dataset).index_to_factors(
        _evaluation_index(config.dataset, config.eval_size, config.data_seed)
    )
    single = [i for i in range(factors.shape[1]) if len(np.unique(factors[:, i])) < 2]
    if single:
        names = [_dataset(config.dataset).factor_names[i] for i in single]
        raise ValueError(
            f"eval_size={config.eval_size}: among these evaluation images the "
            f"factor(s) {', '.join(names)} take a single value, so MIG is undefined; "
            f"raise eval_size"
        )


@torch.no_grad()
def _posterior_means(
    model, images: torch.Tensor, device, batch: int = 1_000
) -> np.ndarray:
    """Posterior means (N, D) of ``images``, a batch at a time."""
    parts = [
        model.encode(images[i : i + batch].to(device).float())[0].cpu()
        for i in range(0, len(images), batch)
    ]
    return torch.cat(parts).double().numpy()


def _scores(model, config: RunConfig, device) -> dict:
    """MIG, FactorVAE score, KL, reconstruction and active units of a trained model."""
    ds = _dataset(config.dataset)
    images, factors = _evaluation_set(
        config.dataset, config.eval_size, config.data_seed
    )
    seed_everything(config.seed)
    terms = evaluate(model, images)
    mu = _posterior_means(model, images, device)
    m = mig(mu, factors)
    fv = factor_vae_score(
        lambda x: model.encode(x.to(device))[0].cpu(),
        ds,
        seed=config.seed,
        num_train=config.factor_vae_train,
        num_eval=config.factor_vae_eval,
        num_variance_estimate=config.factor_vae_variance,
        batch_size=config.factor_vae_batch,
    )
    return {
        "mig": m.score,
        "mig_per_factor": dict(zip(ds.factor_names, m.per_factor.tolist())),
        "factor_vae": fv.score,
        "factor_vae_active_dims": fv.num_active_dims,
        "kl": terms["kl"],
        "kl_per_dim": terms["kl_per_dim"],
        "recon": terms["recon"],
        "neg_elbo": terms["neg_elbo"],
        "active_units": active_units(mu).count,
    }


def _resumable_epoch(path: Path) -> int | None:
    """The epoch the training state at ``path`` was saved after; None when there is no
    training state to resume (no file, or the model checkpoint of an ensemble-trained
    run whose record was not written). A file that is not a valid checkpoint raises
    SweepError naming it."""
    if not path.is_file():
        return None
    try:
        ckpt = checkpoints.read(path)
        if ckpt["format"] != checkpoints.TRAINING_FORMAT:
            return None
        return int(checkpoints.read_training_state(path)["epoch"])
    except checkpoints.CheckpointError as e:
        raise SweepError(
            f"{e}. Delete {path} to train run {path.parent.name} from the start"
        ) from None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _record(
    index: int,
    config: RunConfig,
    history,
    metrics: dict,
    device: torch.device,
    *,
    trainer: str,
    train_seconds: float,
    eval_seconds: float,
    resumed_from: int,
    ensemble: dict | None = None,
) -> dict:
    """The record of a trained and scored run (module docstring)."""
    metrics["train_recon"], metrics["train_kl"] = (
        history.train_recon[-1],
        history.train_kl[-1],
    )
    return {
        "format": RECORD_FORMAT,
        "index": index,
        "config": config.as_dict(),
        "steps": history.steps,
        "metrics": metrics,
        "trainer": trainer,
        "ensemble": ensemble,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "resumed_from_epoch": resumed_from,
        "device": device.type,
        "device_name": _device_name(device),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "dataset_source": _dataset(config.dataset).source,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "torch": torch.__version__,
        "betavae_lib": _version.__version__,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

"""The FactorVAE score (Kim & Mnih 2018) and the β-VAE score (Higgins et al. 2017),
exactly as disentanglement_lib computes them
(``evaluation/metrics/{factor_vae,beta_vae}.py``), with the sampling protocol they
share: factor classes drawn from a ground-truth dataset, rendered and encoded through an
``encode_fn``, with seeded generators for the factor draws and the observation noise.
Every name is importable from :mod:`betavae_lib.metrics` too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ._common import positive_int, to_numpy

# ------------------------------------------------------------------- sampling protocols


def _codes_from(output) -> np.ndarray:
    """What an encoder returned -> (B, D) float64 NumPy codes; a (mu, logvar) tuple
    gives mu."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    codes = to_numpy(output, "encode_fn output")
    if codes.ndim != 2:
        raise ValueError(
            f"encode_fn must return codes of shape (B, D) "
            f"(or a tuple whose first item is), "
            f"got shape {codes.shape}"
        )
    return codes.astype(np.float64, copy=False)


def _encode_factors(
    encode_fn: Callable,
    dataset,
    classes: np.ndarray,
    rng: np.random.Generator,
    chunk: int,
) -> np.ndarray:
    """Render factor classes (N, K) with ``dataset`` and encode them, ``chunk`` images a
    call: (N, D)."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(classes), chunk):
            obs = dataset.sample_observations_from_factors(
                classes[start : start + chunk], rng
            )
            parts.append(_codes_from(encode_fn(obs)))
    codes = np.concatenate(parts)
    if len(codes) != len(classes):
        raise ValueError(
            f"encode_fn returned {len(codes)} codes for {len(classes)} images"
        )
    if not np.isfinite(codes).all():
        raise ValueError("encode_fn returned NaN or Inf codes")
    return codes


def _check_protocol(dataset, **sizes) -> int:
    """Validate the protocol sizes and the dataset interface; returns the number of
    factors."""
    for name in ("factor_sizes", "sample_factors", "sample_observations_from_factors"):
        if not hasattr(dataset, name):
            raise TypeError(
                f"dataset must provide factor_sizes, sample_factors(n, rng) and "
                f"sample_observations_from_factors(classes, rng) (like data.DSprites); "
                f"{type(dataset).__name__} has no {name}"
            )
    for name, value in sizes.items():
        minimum = 2 if name == "batch_size" else 1
        positive_int(name, value, minimum=minimum, what=f"an integer >= {minimum}")
    return len(dataset.factor_sizes)


def _votes_per_call(batch_size: int, images_per_call: int) -> int:
    return max(1, images_per_call // batch_size)


def _sample_classes(dataset, num_votes: int, batch_size: int, rng) -> np.ndarray:
    """Factor classes for every vote at once, (num_votes, batch_size, K) int64, so that
    the draws do not depend on how many votes are encoded together."""
    classes = np.asarray(
        dataset.sample_factors(num_votes * batch_size, rng), dtype=np.int64
    )
    return classes.reshape(num_votes, batch_size, len(dataset.factor_sizes)).copy()


def _protocol_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for factor draws and for observation noise (datasets that
    have any)."""
    factor_seq, observation_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(factor_seq), np.random.default_rng(observation_seq)


@dataclass
class FactorVAEResult:
    """FactorVAE score: ``score`` (majority-vote accuracy on the evaluation votes),
    ``train_accuracy``, ``num_active_dims`` (latents with std ≥ the pruning threshold),
    ``active`` (D,) bool mask and ``train_votes`` (K, D): how often fixing factor k made
    latent d the least variable."""

    score: float
    train_accuracy: float
    num_active_dims: int
    active: np.ndarray
    train_votes: np.ndarray
    num_eval: int = 0  # evaluation votes behind ``score``

    def __float__(self) -> float:
        return float(self.score)

    @property
    def stderr(self) -> float:
        """Binomial standard error of ``score`` over its evaluation votes,
        √(p(1 − p)/n): how far another draw of votes could move it (0.07 for p = 0.5
        on 50 votes, 0.01 on 2,500)."""
        if self.num_eval == 0:
            return math.nan
        return math.sqrt(self.score * (1 - self.score) / self.num_eval)


def _factor_vae_votes(
    encode_fn,
    dataset,
    num_votes: int,
    batch_size: int,
    rng,
    global_variances,
    active,
    images_per_call: int,
) -> np.ndarray:
    """Votes (K, D): per vote, fix one random factor over a batch; vote for the latent
    whose variance, divided by its global variance, is smallest among the active ones.
    rng: (factor stream, observation stream), from :func:`_protocol_rngs`."""
    factor_rng, observation_rng = rng
    k_factors = len(dataset.factor_sizes)
    fixed = factor_rng.integers(k_factors, size=num_votes)
    classes = _sample_classes(dataset, num_votes, batch_size, factor_rng)
    votes_idx = np.arange(num_votes)
    classes[votes_idx, :, fixed] = classes[votes_idx, 0, fixed][:, None]
    active_idx = np.flatnonzero(active)
    least = np.empty(num_votes, dtype=np.int64)
    per_call = _votes_per_call(batch_size, images_per_call)
    for start in range(0, num_votes, per_call):
        block = classes[start : start + per_call]
        codes = _encode_factors(
            encode_fn,
            dataset,
            block.reshape(-1, k_factors),
            observation_rng,
            chunk=block.shape[0] * batch_size,
        ).reshape(block.shape[0], batch_size, -1)
        local = codes.var(axis=1, ddof=1)
        least[start : start + per_call] = active_idx[
            np.argmin(local[:, active] / global_variances[active], axis=1)
        ]
    votes = np.zeros((k_factors, len(global_variances)), dtype=np.int64)
    np.add.at(votes, (fixed, least), 1)
    return votes


# Latents whose standard deviation is below this are inactive in the FactorVAE score
# (disentanglement_lib's gin default for ``prune_dims.threshold``).
FACTOR_VAE_PRUNE_THRESHOLD = 0.05


def factor_vae_score(
    encode_fn: Callable,
    dataset,
    *,
    seed: int = 0,
    batch_size: int = 64,
    prune_threshold: float = FACTOR_VAE_PRUNE_THRESHOLD,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    images_per_call: int = 1024,
) -> FactorVAEResult:
    """FactorVAE disentanglement score (Kim & Mnih 2018), as disentanglement_lib's
    ``factor_vae.py``.

    encode_fn: images -> codes (B, D), NumPy or tensor (a ``(mu, logvar)`` tuple uses
    mu, so ``model.encode`` works); it is called under ``torch.no_grad()``.
    dataset: ground-truth data with ``factor_sizes``, ``sample_factors(n, rng)`` and
    ``sample_observations_from_factors(classes, rng)``, e.g. ``data.DSprites``.

    Protocol: global variances from ``num_variance_estimate`` samples; latents whose std
    is below ``prune_threshold`` are inactive (disentanglement_lib's gin default 0.05).
    Each vote fixes one random factor across ``batch_size`` samples and votes (factor,
    argmin over active latents of local variance / global variance). The classifier maps
    each latent to its majority factor; ``score`` is its accuracy on ``num_eval`` fresh
    votes. Up to ``images_per_call`` images go through ``encode_fn`` at once (whole
    votes; the result does not depend on it).
    """
    _check_protocol(
        dataset,
        batch_size=batch_size,
        num_train=num_train,
        num_eval=num_eval,
        num_variance_estimate=num_variance_estimate,
    )
    if num_variance_estimate < 2:
        raise ValueError("num_variance_estimate must be >= 2 to estimate a variance")
    rng = _protocol_rngs(seed)
    classes = np.asarray(dataset.sample_factors(num_variance_estimate, rng[0]))
    global_variances = _encode_factors(
        encode_fn, dataset, classes, rng[1], images_per_call
    ).var(axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        empty = np.zeros(
            (len(dataset.factor_sizes), len(global_variances)), dtype=np.int64
        )
        return FactorVAEResult(0.0, 0.0, 0, active, empty, num_eval)
    votes = functools.partial(  # votes(n): n votes, (K, D) counts
        _factor_vae_votes,
        encode_fn,
        dataset,
        batch_size=batch_size,
        rng=rng,
        global_variances=global_variances,
        active=active,
        images_per_call=images_per_call,
    )
    train = votes(num_train)
    classifier = np.argmax(train, axis=0)  # (D,): the factor each latent votes for most
    dims = np.arange(train.shape[1])
    train_accuracy = train[classifier, dims].sum() / train.sum()
    evaluation = votes(num_eval)
    eval_accuracy = evaluation[classifier, dims].sum() / evaluation.sum()
    return FactorVAEResult(
        float(eval_accuracy),
        float(train_accuracy),
        int(active.sum()),
        active,
        train,
        num_eval,
    )


@dataclass
class BetaVAEResult:
    """β-VAE score: ``score`` (linear classifier accuracy on the evaluation points),
    ``train_accuracy``."""

    score: float
    train_accuracy: float

    def __float__(self) -> float:
        return float(self.score)


def _beta_vae_points(
    encode_fn, dataset, num_points: int, batch_size: int, rng, images_per_call: int
) -> tuple[np.ndarray, np.ndarray]:
    """Points (num_points, D) and labels (num_points,): per point, fix one random factor
    across ``batch_size`` pairs; the feature is the mean |z1 − z2| over the pairs.
    rng: (factor stream, observation stream), from :func:`_protocol_rngs`."""
    factor_rng, observation_rng = rng
    k_factors = len(dataset.factor_sizes)
    fixed = factor_rng.integers(k_factors, size=num_points)
    first = _sample_classes(dataset, num_points, batch_size, factor_rng)
    second = _sample_classes(dataset, num_points, batch_size, factor_rng)
    rows = np.arange(num_points)
    second[rows, :, fixed] = first[rows, :, fixed]
    points = []
    per_call = _votes_per_call(2 * batch_size, images_per_call)
    for start in range(0, num_points, per_call):
        points_here = len(first[start : start + per_call])
        both = np.concatenate(
            [first[start : start + points_here], second[start : start + points_here]]
        ).reshape(-1, k_factors)
        codes = _encode_factors(
            encode_fn, dataset, both, observation_rng, chunk=len(both)
        )
        codes = codes.reshape(2, points_here, batch_size, -1)
        points.append(np.abs(codes[0] - codes[1]).mean(axis=1))
    return np.concatenate(points), fixed


def beta_vae_score(
    encode_fn: Callable,
    dataset,
    *,
    seed: int = 0,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    images_per_call: int = 1024,
) -> BetaVAEResult:
    """β-VAE disentanglement score (Higgins et al. 2017), as in disentanglement_lib.

    The protocol of disentanglement_lib's ``beta_vae.py``. encode_fn, dataset: as in
    :func:`factor_vae_score`. Each training point fixes one random factor across
    ``batch_size`` pairs of samples; its feature is mean |z1 − z2| over the pairs (D,)
    and its label the fixed factor. A scikit-learn ``LogisticRegression`` is fitted on
    ``num_train`` points; ``score`` is its accuracy on ``num_eval`` fresh points.
    """
    _check_protocol(
        dataset, batch_size=batch_size, num_train=num_train, num_eval=num_eval
    )
    from sklearn.linear_model import LogisticRegression  # slow to import: only here

    rng = _protocol_rngs(seed)
    train_x, train_y = _beta_vae_points(
        encode_fn, dataset, num_train, batch_size, rng, images_per_call
    )
    # disentanglement_lib uses sklearn's defaults; more iterations only avoid a
    # convergence warning.
    model = LogisticRegression(random_state=seed, max_iter=2000)
    model.fit(train_x, train_y)
    train_accuracy = float(np.mean(model.predict(train_x) == train_y))
    eval_x, eval_y = _beta_vae_points(
        encode_fn, dataset, num_eval, batch_size, rng, images_per_call
    )
    return BetaVAEResult(float(model.score(eval_x, eval_y)), train_accuracy)

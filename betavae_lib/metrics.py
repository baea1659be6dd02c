"""Metrics of latents: disentanglement (MIG, FactorVAE, β-VAE scores), active units, KL
summaries and the IWAE bound. The Fréchet distance and FID live in
:mod:`betavae_lib.fid` (``frechet_distance`` and ``feature_statistics`` stay importable
from here).

Every metric follows a published reference implementation, named in its docstring:

* :func:`mig`, :func:`factor_vae_score`, :func:`beta_vae_score`: disentanglement_lib
  (Locatello et al. 2019), ``evaluation/metrics/{mig,factor_vae,beta_vae,utils}.py``.
* :func:`active_units`: Burda et al. (2016), "Importance Weighted Autoencoders", section
  5.2.
* :func:`iwae_bound`: Burda et al. (2016), equation 8.
* :func:`kl_decomposition`: the estimator of the β-TCVAE authors'
  ``elbo_decomposition.py`` (Chen et al. 2018, rtqichen/beta-tcvae): the aggregate
  posterior is the mixture of all the posteriors given, not a minibatch's.
* :func:`mig_interval`: the bootstrap standard deviation of :func:`mig` over images.

Information is in nats (natural logarithm) throughout.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ._common import finite_matrix, positive_int, to_numpy

# importable from here too
from .fid import feature_statistics, frechet_distance  # noqa: F401
from .losses import gaussian_log_density, reconstruction_nll

# ------------------------------------------------------------------------- input checks


def _check_factors(factors, n: int | None = None, name: str = "factors") -> np.ndarray:
    """Integer factor classes (N, K) as int64; raises ValueError naming the problem."""
    arr = to_numpy(factors, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must have shape (N, K): "
            f"one row per sample, one column per factor; "
            f"got shape {arr.shape}"
        )
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.int64, copy=False)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
            raise ValueError(
                f"{name} must be integer classes "
                f"(for dSprites: dataset.factor_classes), "
                f"got non-integer values of dtype {arr.dtype}"
            )
        arr = arr.astype(np.int64)
    else:
        raise TypeError(f"{name} must be integer classes, got dtype {arr.dtype}")
    if len(arr) == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}, need at least one row")
    if n is not None and len(arr) != n:
        raise ValueError(
            f"codes and {name} must have the same number of rows (one per sample): "
            f"got {n} codes and {len(arr)} factor rows"
        )
    return arr


# ----------------------------------------------------------------------------- MIG


def _bins_by_row(codes: np.ndarray, n_bins: int) -> np.ndarray:
    """Histogram bins of checked codes (N, D), laid out by latent: (D, N) int64 in
    1..n_bins."""
    columns = np.ascontiguousarray(codes.T)
    out = np.empty(columns.shape, dtype=np.int64)
    for d, x in enumerate(columns):
        edges = np.histogram(x, n_bins)[1][:-1]
        out[d] = np.digitize(x, edges)
    return out


# np.histogram allocates two arrays of n_bins per latent: 10**8 bins would be 1.6 GB.
MAX_BINS = 100_000


def _check_bins(n_bins) -> int:
    return positive_int("n_bins", n_bins, maximum=MAX_BINS)


def histogram_discretize(codes, n_bins: int = 20) -> np.ndarray:
    """Bin each code dimension into ``n_bins`` equal-width bins over its own range.

    codes: (N, D). Returns (N, D) int64 bin numbers in 1..n_bins, exactly
    disentanglement_lib's ``_histogram_discretize``:
    ``np.digitize(x, np.histogram(x, n_bins)[1][:-1])`` per dimension (bin edges in the
    codes' own precision, as NumPy computes them).
    """
    return _bins_by_row(finite_matrix(codes, "codes"), _check_bins(n_bins)).T


def _dense_labels(labels: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Integer labels (N,) as (labels shifted to start at 0, table size, number of
    distinct values).

    Small ranges are only shifted (empty classes are harmless: the mutual information
    sums over non-empty cells only); wide ranges are relabelled 0..m-1 with
    ``np.unique``.
    """
    lo, hi = int(labels.min()), int(labels.max())
    if hi - lo < 4 * len(labels) + 64:
        shifted = labels - lo if lo else labels
        distinct = int(np.count_nonzero(np.bincount(shifted, minlength=hi - lo + 1)))
        return shifted, hi - lo + 1, distinct
    uniq, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(-1), len(uniq), len(uniq)


def _mutual_info_cells(
    counts: np.ndarray, row_totals: np.ndarray, col_totals: np.ndarray, total: int
) -> float:
    """Mutual information (nats) from the non-empty cells of a contingency table: their
    counts and their row and column totals, with the same arithmetic as
    ``sklearn.metrics.mutual_info_score``."""
    nz = counts.astype(np.float64)
    p = nz / total
    log_outer = -np.log(
        row_totals.astype(np.int64) * col_totals.astype(np.int64)
    ) + 2 * math.log(total)
    mi = p * (np.log(nz) - math.log(total)) + p * log_outer
    mi = np.where(np.abs(mi) < np.finfo(mi.dtype).eps, 0.0, mi)
    return float(max(mi.sum(), 0.0))


def _mutual_info_pair(
    f: np.ndarray, nf: int, c: np.ndarray, nc: int, offset: np.ndarray
) -> float:
    """MI of labels f in 0..nf-1 and c in 0..nc-1 (``offset`` = f * nc): a dense
    ``np.bincount`` contingency table, or its non-empty cells from ``np.unique`` when
    the table would be huge."""
    total = len(c)
    if nf * nc <= 8 * total + 100_000:
        joint = np.bincount(offset + c, minlength=nf * nc).reshape(nf, nc)
        rows, cols = np.nonzero(joint)
        return _mutual_info_cells(
            joint[rows, cols], joint.sum(1)[rows], joint.sum(0)[cols], total
        )
    cells, counts = np.unique(offset + c, return_counts=True)
    rows, cols = np.divmod(cells, nc)
    return _mutual_info_cells(
        counts,
        np.bincount(f, minlength=nf)[rows],
        np.bincount(c, minlength=nc)[cols],
        total,
    )


def _mutual_info_rows(codes_rows: np.ndarray, factor_rows: np.ndarray) -> np.ndarray:
    """MI (D, K) between rows of integer labels: codes (D, N) and factors (K, N).

    Each pair's contingency table is one ``np.bincount`` of ``factor * width + code``.
    """
    codes = [_dense_labels(c) for c in codes_rows]
    factors = [_dense_labels(f) for f in factor_rows]
    width = max(nc for _, nc, _ in codes)
    mi = np.zeros((len(codes), len(factors)))
    for k, (f, nf, f_distinct) in enumerate(factors):
        if f_distinct < 2:  # a constant shares no information
            continue
        offset = f * width
        for d, (c, _, c_distinct) in enumerate(codes):
            if c_distinct > 1:
                mi[d, k] = _mutual_info_pair(f, nf, c, width, offset)
    return mi


def discrete_mutual_info(codes_discrete, factors) -> np.ndarray:
    """Mutual information (nats) between every discrete code and every factor: (D, K).

    codes_discrete: (N, D) integer bins; factors: (N, K) integer classes. Equal (to
    rounding) to disentanglement_lib's loop of
    ``sklearn.metrics.mutual_info_score(factor, code)``.
    """
    codes_discrete = _check_factors(codes_discrete, name="codes_discrete")
    factors = _check_factors(factors, len(codes_discrete))
    return _mutual_info_rows(
        np.ascontiguousarray(codes_discrete.T), np.ascontiguousarray(factors.T)
    )


def _entropy_rows(factor_rows: np.ndarray) -> np.ndarray:
    h = np.zeros(len(factor_rows))
    for k, row in enumerate(factor_rows):
        labels, table_size, _ = _dense_labels(row)
        p = np.bincount(labels, minlength=table_size) / len(labels)
        p = p[p > 0]
        h[k] = max(float(-(p * np.log(p)).sum()), 0.0)
    return h


def discrete_entropy(factors) -> np.ndarray:
    """Entropy (nats) of each factor's empirical distribution: (K,). factors: (N, K)
    integer classes."""
    return _entropy_rows(np.ascontiguousarray(_check_factors(factors).T))


@dataclass
class MIGResult:
    """MIG and what it is made of: ``score`` (mean over factors), ``per_factor`` (K,),
    ``mi`` (D, K) mutual information in nats between each latent and each factor,
    ``entropy`` (K,) factor entropies in nats."""

    score: float
    per_factor: np.ndarray
    mi: np.ndarray
    entropy: np.ndarray

    def __float__(self) -> float:
        return float(self.score)


def mig(codes, factors, n_bins: int = 20) -> MIGResult:
    """Mutual Information Gap (Chen et al. 2018), exactly as disentanglement_lib
    computes it.

    codes: (N, D) latent means (array or tensor), D ≥ 2; factors: (N, K) integer factor
    classes. Each code dimension is binned into ``n_bins`` equal-width bins
    (:func:`histogram_discretize`); for each factor k, MIG_k = (largest − second largest
    MI(z_d; v_k) over d) / H(v_k). Returns :class:`MIGResult`; ``score`` is the mean of
    MIG_k over factors.
    """
    codes = finite_matrix(codes, "codes")
    factors = _check_factors(factors, len(codes))
    if codes.shape[1] < 2:
        raise ValueError(
            f"MIG compares the two most informative latents, so codes need at least 2 "
            f"dimensions (shape (N, D), D >= 2); got shape {codes.shape}"
        )
    if factors.shape[1] < 1:
        raise ValueError("factors must have at least one column (shape (N, K), K >= 1)")
    n_bins = _check_bins(n_bins)
    factor_rows = np.ascontiguousarray(factors.T)
    entropy = _entropy_rows(factor_rows)
    constant = np.flatnonzero(entropy == 0)
    if constant.size:
        raise ValueError(
            f"factor column(s) {constant.tolist()} take a single value, "
            f"so their entropy is 0 "
            f"and MIG (which divides by it) is undefined; drop those columns"
        )
    mi = _mutual_info_rows(_bins_by_row(codes, n_bins), factor_rows)
    top2 = np.sort(mi, axis=0)[::-1][:2]
    per_factor = (top2[0] - top2[1]) / entropy
    return MIGResult(float(per_factor.mean()), per_factor, mi, entropy)


@dataclass
class MIGInterval:
    """A bootstrap interval of MIG (:func:`mig_interval`): ``score`` (MIG of all the
    codes), ``sd`` (its bootstrap standard deviation), ``low``, ``high`` (the interval
    of the mean over factors), ``per_factor_low``, ``per_factor_high`` (K,), at
    confidence ``level`` from ``n_boot`` resamples."""

    score: float
    sd: float
    low: float
    high: float
    per_factor_low: np.ndarray
    per_factor_high: np.ndarray
    level: float
    n_boot: int


def mig_interval(
    codes, factors, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
    n_bins: int = 20,
) -> MIGInterval:  # fmt: skip
    """How much MIG depends on which images were scored: the standard deviation of
    :func:`mig` over ``n_boot`` resamples of the rows (images drawn with replacement,
    seeded by ``seed``), and the normal interval MIG ± z·sd at confidence ``level``.
    codes (N, D), factors (N, K), n_bins: as for :func:`mig`. It measures the
    evaluation set's noise, not the training seed's.

    Only the spread of the resamples is used, not where they lie: a resample repeats
    images, which inflates the runner-up latent's plug-in MI more than the best one's,
    so resampled MIGs sit below the score (by up to their own spread on 1,000 codes),
    and percentile intervals inherit that shift. Their spread matches the spread of MIG
    over fresh evaluation sets (``tests/test_kl_decomposition.py`` checks it).
    """
    codes = finite_matrix(codes, "codes")
    factors = _check_factors(factors, len(codes))
    n_boot = positive_int("n_boot", n_boot, minimum=2)
    if not (isinstance(level, float | int) and 0 < level < 1):
        raise ValueError(f"level must be a number in (0, 1), e.g. 0.95; got {level!r}")
    full = mig(codes, factors, n_bins)
    rng = np.random.default_rng(positive_int("seed", seed, minimum=0))
    boot = np.empty((n_boot, len(full.per_factor)))
    for b in range(n_boot):
        rows = rng.integers(len(codes), size=len(codes))
        boot[b] = mig(codes[rows], factors[rows], n_bins).per_factor
    z = statistics.NormalDist().inv_cdf((1 + level) / 2)
    sd, per_sd = float(boot.mean(1).std(ddof=1)), boot.std(axis=0, ddof=1)
    return MIGInterval(
        full.score,
        sd,
        full.score - z * sd,
        full.score + z * sd,
        full.per_factor - z * per_sd,
        full.per_factor + z * per_sd,
        level,
        n_boot,
    )


@dataclass
class PairedDifference:
    """``mean`` of a − b over ``n`` paired items (images, seeds) and its standard error
    ``se`` = sd(a − b)/√n: a difference within about 2·se of 0 is a tie."""

    mean: float
    se: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:+.3g} ± {self.se:.2g}"


def paired_difference(a, b) -> PairedDifference:
    """The mean and standard error of ``a - b``, item by item (a, b: (n,) numbers
    measured on the same n items, e.g. two models' −ELBO on the same test images from
    :func:`betavae_lib.train.per_image_terms`). Pairing removes what the items share:
    the spread of the difference, not of each model's values, decides a tie."""
    a = np.asarray(to_numpy(a, "a"), dtype=np.float64).ravel()
    b = np.asarray(to_numpy(b, "b"), dtype=np.float64).ravel()
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(
            f"a and b must hold the same number (at least 2) of paired values; got "
            f"{len(a)} and {len(b)}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be finite")
    d = a - b
    return PairedDifference(
        float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), len(d)
    )


@dataclass
class KLDecomposition:
    """The KL term split as in β-TCVAE (nats, means over the samples): ``mi``
    (index-code mutual information I(x; z)), ``tc`` (total correlation), ``dwkl``
    (dimension-wise KL); ``n`` posteriors in the aggregate posterior and ``mi_cap`` =
    log n, the most information the estimator can see (every posterior apart from every
    other)."""

    mi: float
    tc: float
    dwkl: float
    n: int
    mi_cap: float

    @property
    def kl(self) -> float:
        """mi + tc + dwkl: a Monte-Carlo estimate of the mean KL(q(z|x) ‖ p(z))."""
        return self.mi + self.tc + self.dwkl


@torch.no_grad()
def kl_decomposition(
    mu, logvar, *, n_samples: int | None = None, seed: int = 0, chunk: int = 128
) -> KLDecomposition:
    """Index-code MI, total correlation and dimension-wise KL of the posteriors
    N(mu_n, exp(logvar_n)) of n images, with the aggregate posterior
    q(z) = (1/n) Σ_n q(z | x_n) over all of them (the β-TCVAE authors' estimator):

        log q(z) = logsumexp_n log q(z | x_n) − log n,  and the same per latent,

    at one sample z_i ~ q(z | x_i) for each of ``n_samples`` images (all n by default,
    drawn with a generator seeded by ``seed``). MI cannot exceed log n: score on as many
    images as the information you expect to see (10,000 images: 9.2 nats).

    mu, logvar: (n, D) arrays or tensors; computed in float64, ``chunk`` samples at a
    time ((chunk, n, D) doubles in memory, capped at 1 GiB).
    """
    mu = torch.as_tensor(finite_matrix(mu, "mu"), dtype=torch.float64)
    logvar = torch.as_tensor(finite_matrix(logvar, "logvar"), dtype=torch.float64)
    if mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar must have the same shape (n, D); got {tuple(mu.shape)} "
            f"and {tuple(logvar.shape)}"
        )
    n = len(mu)
    if n < 2:
        raise ValueError(f"an aggregate posterior needs at least 2 posteriors; got {n}")
    n_samples = positive_int(
        "n_samples", n if n_samples is None else n_samples, maximum=n
    )
    # at most 2^27 doubles (1 GiB) of pairwise densities at a time, whatever chunk says
    chunk = min(positive_int("chunk", chunk), max(1, 2**27 // (n * mu.shape[1])))
    g = torch.Generator().manual_seed(positive_int("seed", seed, minimum=0))
    rows = torch.randperm(n, generator=g)[:n_samples]
    mu_s, logvar_s = mu[rows], logvar[rows]
    z = mu_s + torch.exp(0.5 * logvar_s) * torch.randn(
        mu_s.shape, generator=g, dtype=torch.float64
    )
    log_n = math.log(n)
    sums = torch.zeros(3, dtype=torch.float64)  # mi, tc, dwkl
    for start in range(0, n_samples, chunk):
        zc = z[start : start + chunk]
        pairwise = gaussian_log_density(zc[:, None], mu[None], logvar[None])  # (c,n,D)
        log_qz = torch.logsumexp(pairwise.sum(2), dim=1) - log_n
        log_prod = (torch.logsumexp(pairwise, dim=1) - log_n).sum(1)
        own = gaussian_log_density(
            zc, mu_s[start : start + chunk], logvar_s[start : start + chunk]
        ).sum(1)
        prior = gaussian_log_density(zc, torch.zeros_like(zc), torch.zeros_like(zc))
        sums += torch.stack(
            [
                (own - log_qz).sum(),
                (log_qz - log_prod).sum(),
                (log_prod - prior.sum(1)).sum(),
            ]
        )
    mi, tc, dwkl = (sums / n_samples).tolist()
    return KLDecomposition(mi, tc, dwkl, n, log_n)


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


# --------------------------------------------------------------------- active units, KL


@dataclass
class ActiveUnits:
    """Active units: ``count``, ``mask`` (D,) bool, ``variance`` (D,) of the posterior
    means over the data, and the ``threshold`` used."""

    count: int
    mask: np.ndarray
    variance: np.ndarray
    threshold: float


def active_units(mu, threshold: float = 0.01) -> ActiveUnits:
    """Latents whose posterior mean varies with the input (Burda et al. 2016, section
    5.2).

    mu: (N, D) posterior means over a dataset. Unit d is active when
    Var_x(E_q[z_d | x]) > threshold (population variance over the N rows; Burda et al.
    use 0.01).
    """
    mu = finite_matrix(mu, "mu").astype(np.float64, copy=False)
    if len(mu) < 2:
        raise ValueError(
            f"need at least 2 rows of posterior means to estimate a variance, "
            f"got {len(mu)}"
        )
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    variance = mu.var(axis=0)
    mask = variance > threshold
    return ActiveUnits(int(mask.sum()), mask, variance, float(threshold))


@dataclass
class KLSummary:
    """Per-dimension KL in nats: ``per_dim`` (D,) in latent order, ``order`` (D,) latent
    indices by decreasing KL, ``sorted`` (D,) the KLs in that order, ``total`` their
    sum, and ``cumulative_share`` (D,) the fraction of the total carried by the top 1,
    2, ... latents."""

    per_dim: np.ndarray
    order: np.ndarray
    sorted: np.ndarray
    total: float
    cumulative_share: np.ndarray

    def active(self, threshold: float = 0.01) -> np.ndarray:
        """Latent indices (in decreasing-KL order) whose KL exceeds ``threshold``
        nats."""
        return self.order[self.sorted > threshold]


def kl_summary(kl_per_dim) -> KLSummary:
    """Sort a KL-per-dimension vector: kl_per_dim (D,) or (B, D) (averaged over the
    batch), nats."""
    kl = to_numpy(kl_per_dim, "kl_per_dim").astype(np.float64)
    if kl.ndim == 2:
        kl = kl.mean(axis=0)
    if kl.ndim != 1 or kl.size == 0:
        raise ValueError(
            f"kl_per_dim must have shape (D,) or (B, D), got {np.shape(kl_per_dim)}"
        )
    if not np.isfinite(kl).all():
        raise ValueError("kl_per_dim contains NaN or Inf")
    if (kl < -1e-6).any():
        raise ValueError(
            f"KL is never negative; got {kl.min():.3g} (is this the KL per dimension?)"
        )
    order = np.argsort(-kl, kind="stable")
    total = float(kl.sum())
    ranked = kl[order]
    share = np.cumsum(ranked) / total if total > 0 else np.zeros_like(ranked)
    return KLSummary(kl, order, ranked, total, share)


# --------------------------------------------------------------------------- IWAE bound

_IWAE_IMAGES_PER_DECODE = 2048


@torch.no_grad()
def iwae_bound(
    model,
    x: torch.Tensor,
    k: int,
    *,
    chunk_size: int | None = None,
    likelihood: str | Callable = "bernoulli",
    sigma: float = 0.1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Importance-weighted lower bound on log p(x) (Burda et al. 2016, eq. 8): (B,)
    nats.

        log p(x) ≥ log (1/k) Σ_i p(x | z_i) p(z_i) / q(z_i | x),   z_i ~ q(z | x)

    model: has ``encode(x) -> (mu, logvar)`` (B, D) and ``decode(z) -> logits``.
    x: (B, ...) images.
    k: importance samples; k = 1 is a one-sample ELBO estimate, the bound tightens as k
    grows.
    chunk_size: samples decoded together (default: about 2,048 images per decode), so
    k = 5,000 fits in memory; the result does not depend on it beyond sampling noise.
    likelihood: ``"bernoulli"``, ``"gaussian"`` (fixed ``sigma``),
    ``"gaussian_learned"`` (``model.log_sigma``), as :func:`losses.reconstruction_nll`;
    or a callable ``(decoder_output, x) -> −log p(x|z)`` (B,).
    seed / generator: make the samples reproducible.
    The model is put in eval mode for the call and restored after.
    """
    k = positive_int("k", k, what="a positive integer number of importance samples")
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(
            f"x must be a batch tensor (B, ...), got {type(x).__name__} "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}"
        )
    if len(x) == 0:
        raise ValueError(f"x is empty: shape {tuple(x.shape)}, need at least one image")
    if chunk_size is not None:
        chunk_size = positive_int("chunk_size", chunk_size)
    if callable(likelihood):
        nll_fn = likelihood
    else:
        log_sigma = getattr(model, "log_sigma", None)

        def nll_fn(out, target):  # noqa: E306
            return reconstruction_nll(out, target, likelihood, sigma, log_sigma)

    was_training = model.training
    model.eval()
    try:
        mu, logvar = model.encode(x)
        batch, dim = mu.shape
        if batch != x.shape[0]:
            raise ValueError(
                f"encode returned {batch} rows for a batch of {x.shape[0]}"
            )
        if seed is not None and generator is None:
            generator = torch.Generator(device=mu.device).manual_seed(int(seed))
        chunk = min(
            k,
            int(chunk_size) if chunk_size else max(1, _IWAE_IMAGES_PER_DECODE // batch),
        )
        std = torch.exp(0.5 * logvar)
        chunk_lse = []
        done = 0
        while done < k:
            c = min(chunk, k - done)
            eps = torch.randn(
                (c, batch, dim), generator=generator, device=mu.device, dtype=mu.dtype
            )
            z = mu + std * eps  # (c, B, D)
            out = model.decode(z.reshape(c * batch, dim))
            target = x.unsqueeze(0).expand(c, *x.shape).reshape(c * batch, *x.shape[1:])
            log_px_z = -nll_fn(out, target).reshape(c, batch)
            log_pz = gaussian_log_density(
                z, torch.zeros_like(z), torch.zeros_like(z)
            ).sum(-1)
            log_qz = gaussian_log_density(z, mu, logvar).sum(-1)
            log_w = (log_px_z + log_pz - log_qz).double()
            chunk_lse.append(torch.logsumexp(log_w, dim=0))
            done += c
        bound = torch.logsumexp(torch.stack(chunk_lse), dim=0) - math.log(k)
        return bound.to(mu.dtype)
    finally:
        model.train(was_training)


__all__ = [
    "ActiveUnits",
    "BetaVAEResult",
    "FactorVAEResult",
    "KLSummary",
    "MIGResult",
    "active_units",
    "beta_vae_score",
    "discrete_entropy",
    "discrete_mutual_info",
    "factor_vae_score",
    "feature_statistics",
    "frechet_distance",
    "histogram_discretize",
    "iwae_bound",
    "kl_summary",
    "mig",
]

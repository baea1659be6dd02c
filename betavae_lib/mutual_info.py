"""MIG (Chen et al. 2018) exactly as disentanglement_lib computes it
(``evaluation/metrics/{mig,utils}.py``), with what it is made of: the equal-width
discretisation of codes (:func:`histogram_discretize`), the discrete mutual information
between each latent and each factor (:func:`discrete_mutual_info`) and the factors'
entropies (:func:`discrete_entropy`); and :func:`mig_interval`, the bootstrap standard
deviation of :func:`mig` over images. Every name is importable from
:mod:`betavae_lib.metrics` too.

Information is in nats (natural logarithm) throughout.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from ._common import finite_matrix, positive_int, to_numpy

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

"""Metrics of latents: disentanglement (MIG, FactorVAE, β-VAE scores), active units, KL
summaries and the IWAE bound, all importable from here. This module holds the KL's
β-TCVAE decomposition, paired differences, active units, KL summaries and the IWAE
bound; MIG and its bootstrap interval live in :mod:`betavae_lib.mutual_info`, the
FactorVAE and β-VAE scores in :mod:`betavae_lib.factor_scores`, the Fréchet distance and
FID in :mod:`betavae_lib.fid` (``frechet_distance`` and ``feature_statistics`` stay
importable from here).

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

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ._common import finite_matrix, positive_int, to_numpy

# the disentanglement scores and the Fréchet distance: importable from here too
from .factor_scores import (
    FACTOR_VAE_PRUNE_THRESHOLD,  # noqa: F401
    BetaVAEResult,
    FactorVAEResult,
    _beta_vae_points,  # noqa: F401
    _check_protocol,  # noqa: F401
    _codes_from,  # noqa: F401
    _encode_factors,  # noqa: F401
    _factor_vae_votes,  # noqa: F401
    _protocol_rngs,  # noqa: F401
    _sample_classes,  # noqa: F401
    _votes_per_call,  # noqa: F401
    beta_vae_score,
    factor_vae_score,
)
from .fid import feature_statistics, frechet_distance  # noqa: F401
from .losses import gaussian_log_density, reconstruction_nll
from .mutual_info import (
    MAX_BINS,  # noqa: F401
    MIGInterval,  # noqa: F401
    MIGResult,
    _bins_by_row,  # noqa: F401
    _check_bins,  # noqa: F401
    _check_factors,  # noqa: F401
    _dense_labels,  # noqa: F401
    _entropy_rows,  # noqa: F401
    _mutual_info_cells,  # noqa: F401
    _mutual_info_pair,  # noqa: F401
    _mutual_info_rows,  # noqa: F401
    discrete_entropy,
    discrete_mutual_info,
    histogram_discretize,
    mig,
    mig_interval,  # noqa: F401
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

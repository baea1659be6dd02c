"""The evaluation-time estimators of chapter 6: the KL's β-TCVAE parts over a whole
evaluation set, MIG's bootstrap interval and the FactorVAE score's standard error,
each checked against a closed form, scipy or a port of the authors' code."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from betavae_lib.metrics import (
    FactorVAEResult,
    kl_decomposition,
    mig,
    mig_interval,
)


def shared_latent(n, seed, s=1.0):
    """Two latents that both copy one standard normal x: mu_n = (x_n, x_n), variance
    s². The aggregate posterior is N(0, [[1+s², 1], [1, 1+s²]]), so
    I(x; z) = ½ log(det Σ / s⁴), TC = −½ log(1 − ρ²) with ρ = 1/(1+s²), and each
    marginal is N(0, 1+s²)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return torch.cat([x, x], 1), torch.full((n, 2), math.log(s**2), dtype=torch.float64)


def test_the_parts_match_the_closed_forms_of_a_shared_gaussian_latent():
    s2 = 1.0
    mi = 0.5 * math.log(((1 + s2) ** 2 - 1) / s2**2)  # ½ log 3
    rho = 1 / (1 + s2)
    tc = -0.5 * math.log(1 - rho**2)
    dwkl = 2 * 0.5 * ((1 + s2) - 1 - math.log(1 + s2))
    kl = 2 * 0.5 * (1 + s2 - 1 - math.log(s2))  # E_x KL(N(x, s²) ‖ N(0, 1)) per dim
    # With n = 4,000 samples the Monte-Carlo sd of each part is ~0.005 nats and the
    # mixture-of-n bias of log q(z) below 0.005 (measured over seeds); allow 0.03.
    for seed in (0, 1):
        got = kl_decomposition(*shared_latent(4_000, seed), seed=seed)
        assert got.mi == pytest.approx(mi, abs=0.03)
        assert got.tc == pytest.approx(tc, abs=0.03)
        assert got.dwkl == pytest.approx(dwkl, abs=0.05)
        assert got.kl == pytest.approx(kl, abs=0.1)
        assert got.n == 4_000 and got.mi_cap == pytest.approx(math.log(4_000))


def test_identical_posteriors_carry_no_information_and_no_correlation():
    n = 500
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64).expand(n, 3)
    logvar = torch.tensor([[-1.0, 0.0, 0.3]], dtype=torch.float64).expand(n, 3)
    got = kl_decomposition(mu, logvar, seed=3)
    assert got.mi == pytest.approx(0, abs=1e-9)  # q(z) = q(z|x) exactly
    assert got.tc == pytest.approx(0, abs=1e-9)  # and factorial
    closed = 0.5 * (torch.exp(logvar[0]) + mu[0] ** 2 - 1 - logvar[0]).sum().item()
    # dwkl is then a 500-sample Monte-Carlo estimate of the closed-form KL (sd ≈ 0.09)
    assert got.dwkl == pytest.approx(closed, abs=0.35)


def test_information_is_capped_at_log_n():
    """Posteriors far apart and narrow: each sample belongs to its own image only, so
    the estimator sees log n nats of information and no more; the minibatch estimator
    of training would see log(batch) at most."""
    n = 300
    mu = torch.arange(n, dtype=torch.float64)[:, None].repeat(1, 2) * 10
    got = kl_decomposition(mu, torch.full((n, 2), -6.0, dtype=torch.float64))
    assert got.mi == pytest.approx(math.log(n), abs=1e-6)
    assert got.mi <= got.mi_cap + 1e-9


def authors_estimate(mu, logvar, z):
    """A port of rtqichen/beta-tcvae's ``elbo_decomposition`` arithmetic in NumPy/SciPy:
    joint and marginal entropies by logsumexp over all n posteriors
    (``estimate_entropies``), then MI = −H(z|x) + H(z), TC = ΣH(z_j) − H(z),
    dwKL = −ΣH(z_j) − E log p(z) (``elbo_decomposition``'s last lines)."""
    mu, logvar, z = (np.asarray(t, dtype=float) for t in (mu, logvar, z))
    n = len(mu)
    logq = stats.norm.logpdf(z[:, None, :], mu[None], np.exp(0.5 * logvar)[None])
    marginal_entropies = (math.log(n) - logsumexp(logq, axis=1)).mean(0)
    joint_entropy = (math.log(n) - logsumexp(logq.sum(2), axis=1)).mean()
    nlogqz_condx = -stats.norm.logpdf(z, mu, np.exp(0.5 * logvar)).sum(1).mean()
    nlogpz = -stats.norm.logpdf(z).sum(1).mean()
    mi = -nlogqz_condx + joint_entropy
    tc = marginal_entropies.sum() - joint_entropy
    dwkl = -marginal_entropies.sum() + nlogpz
    return mi, tc, dwkl


def test_equals_a_port_of_the_authors_estimator():
    g = torch.Generator().manual_seed(5)
    n, d = 400, 4
    mu = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(
        d, d, generator=g, dtype=torch.float64
    )
    logvar = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5 - 1
    got = kl_decomposition(mu, logvar, seed=2, chunk=64)
    # the same samples: the generator draws the permutation, then the noise
    g2 = torch.Generator().manual_seed(2)
    rows = torch.randperm(n, generator=g2)
    z = mu[rows] + torch.exp(0.5 * logvar[rows]) * torch.randn(
        n, d, generator=g2, dtype=torch.float64
    )
    # the port pairs each sample with its own posterior, so reorder the posteriors
    mi, tc, dwkl = authors_estimate(mu[rows], logvar[rows], z)
    assert (got.mi, got.tc, got.dwkl) == pytest.approx((mi, tc, dwkl), abs=1e-9)


def test_kl_decomposition_rejects_bad_input():
    mu = torch.zeros(10, 2)
    with pytest.raises(ValueError, match="same shape"):
        kl_decomposition(mu, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="at least 2 posteriors"):
        kl_decomposition(mu[:1], mu[:1])
    with pytest.raises(ValueError, match="n_samples"):
        kl_decomposition(mu, mu, n_samples=11)
    with pytest.raises(ValueError, match="finite"):
        kl_decomposition(mu.fill_(math.nan), torch.zeros(10, 2))


def factor_codes(n, noise, seed=0):
    """Codes that copy two factors (8 and 5 classes) with Gaussian noise."""
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(8, size=n), rng.integers(5, size=n)], 1)
    return factors + noise * rng.standard_normal(factors.shape), factors


def test_mig_interval_spread_is_scipys_bootstrap_standard_error():
    codes, factors = factor_codes(1_000, 0.6)
    got = mig_interval(codes, factors, n_boot=300, seed=1)
    assert got.score == mig(codes, factors).score
    z = stats.norm.ppf(0.975)
    assert (got.low, got.high) == pytest.approx(
        (got.score - z * got.sd, got.score + z * got.sd)
    )

    def statistic(rows):
        rows = rows.astype(int)
        return mig(codes[rows], factors[rows]).score

    ref = stats.bootstrap(
        (np.arange(len(codes)),), statistic, n_resamples=300, vectorized=False,
        rng=np.random.default_rng(7),
    ).standard_error  # fmt: skip
    # two independent 300-resample estimates of one sd: each is off by ~1/√(2·300)
    # ≈ 4 % (relative); allow 25 %
    assert got.sd == pytest.approx(ref, rel=0.25)
    assert np.all(got.per_factor_low < got.per_factor_high)


def test_mig_interval_spread_matches_the_spread_over_fresh_evaluation_sets():
    """What the interval is for: how much MIG would move on another evaluation set.
    40 fresh sets give that sd directly (itself uncertain by ~11 %); the bootstrap of
    one set agrees within a factor 1.5 (measured: 0.0094 vs 0.0105 on 1,000 codes)."""
    fresh = [mig(*factor_codes(1_000, 0.6, seed=s)).score for s in range(100, 140)]
    codes, factors = factor_codes(1_000, 0.6, seed=1)
    got = mig_interval(codes, factors, n_boot=200, seed=0)
    ratio = got.sd / np.std(fresh, ddof=1)
    assert 1 / 1.5 < ratio < 1.5


def test_mig_interval_narrows_like_one_over_root_n():
    widths = []
    for n in (500, 8_000):
        codes, factors = factor_codes(n, 0.6, seed=n)
        got = mig_interval(codes, factors, n_boot=200, seed=0)
        widths.append(got.high - got.low)
    assert widths[1] < widths[0] / 2  # 16× the images: ~4× narrower


def test_mig_interval_rejects_bad_settings():
    codes, factors = factor_codes(50, 0.5)
    with pytest.raises(ValueError, match="level"):
        mig_interval(codes, factors, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        mig_interval(codes, factors, n_boot=1)


def test_factor_vae_standard_error_is_binomial():
    result = FactorVAEResult(0.8, 0.9, 3, np.ones(3, bool), np.zeros((2, 3)), 50)
    assert result.stderr == pytest.approx(math.sqrt(0.8 * 0.2 / 50))  # 0.057
    empty = FactorVAEResult(0.0, 0.0, 0, np.zeros(3, bool), np.zeros((2, 3)))
    assert math.isnan(empty.stderr)


def test_the_chunk_size_changes_the_memory_not_the_result():
    mu, logvar = shared_latent(500, 0)
    small = kl_decomposition(mu, logvar, chunk=7)
    huge = kl_decomposition(mu, logvar, chunk=10**12)  # capped at 1 GiB a chunk
    assert (huge.mi, huge.tc, huge.dwkl) == pytest.approx(
        (small.mi, small.tc, small.dwkl), rel=1e-12
    )

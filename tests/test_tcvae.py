"""β-TCVAE decomposition (``losses.tc_decomposition``), checked against closed forms and
a loop.

What is asserted, and why it must hold:

* **The three terms sum to a Monte Carlo KL.** MI + TC + dwKL telescopes to the batch
  mean of log q(z_i|x_i) − log p(z_i), whatever the estimate of q(z); for many samples
  of one posterior (the single-datapoint case) that mean converges to the closed-form
  KL(q(z|x) ‖ N(0, I)).
* **Single datapoint, exact zeros.** When every row has the same posterior and
  ``dataset_size=1``, the estimated aggregate posterior *is* q(z|x), so MI = 0 and, the
  posterior being diagonal, TC = 0 (to rounding), and dwKL carries the whole KL.
* **TC of a correlated aggregate posterior.** Codes x_i ~ N(0, Σ) with posteriors
  N(x_i, s² I) give the aggregate posterior N(0, Σ + s² I), whose total correlation is
  ½ (Σ_d log C_dd − log det C). With ``dataset_size=1`` the estimator averages over
  the batch's own mixture, a consistent estimate: for B = 2048 it is positive and
  close to the closed form; for independent dimensions it is ≈ 0.
* **The dataset size only shifts the terms.** The minibatch-weighted sampling normaliser
  log(N·B) (Chen et al. 2018, as in their code) makes TC larger by exactly
  (D − 1)·log N, MI by log N and dwKL smaller by D·log N than with N = 1; the shifts
  are constants, so training gradients are unaffected.
* **The formula itself**, against an independent double loop over scipy's normal
  log-density.
"""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from betavae_lib.losses import beta_vae_loss, gaussian_kl, tc_decomposition


def correlated_posteriors(
    seed: int, rho: float, s2: float = 0.25, batch: int = 2048, dim: int = 3
):
    """Posterior means x_i ~ N(0, Σ) (Σ: unit variances, corr(z0, z1) = rho), variances
    s², and one sample z_i per posterior; returns z, mu, logvar (float64) and the
    closed-form TC of N(0, Σ + s² I)."""
    g = torch.Generator().manual_seed(seed)
    cov = torch.eye(dim, dtype=torch.float64)
    cov[0, 1] = cov[1, 0] = rho
    mu = (
        torch.randn(batch, dim, generator=g, dtype=torch.float64)
        @ torch.linalg.cholesky(cov).T
    )
    logvar = torch.full((batch, dim), math.log(s2), dtype=torch.float64)
    z = mu + math.sqrt(s2) * torch.randn(batch, dim, generator=g, dtype=torch.float64)
    agg = cov + s2 * torch.eye(dim, dtype=torch.float64)
    tc_true = 0.5 * (torch.log(torch.diagonal(agg)).sum() - torch.logdet(agg))
    return z, mu, logvar, float(tc_true)


def single_posterior(seed: int, batch: int = 2048, dim: int = 4):
    """``batch`` samples of one diagonal posterior (the same mu, logvar on every
    row)."""
    g = torch.Generator().manual_seed(seed)
    mu0 = torch.tensor([1.5, -0.5, 0.0, 2.0], dtype=torch.float64)[:dim]
    logvar0 = torch.tensor([-1.0, 0.5, -2.0, 0.0], dtype=torch.float64)[:dim]
    mu, logvar = mu0.expand(batch, dim).clone(), logvar0.expand(batch, dim).clone()
    z = mu + torch.exp(0.5 * logvar) * torch.randn(
        batch, dim, generator=g, dtype=torch.float64
    )
    return z, mu, logvar


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_terms_sum_to_the_closed_form_kl_for_one_posterior(seed):
    z, mu, logvar = single_posterior(seed)
    kl = float(gaussian_kl(mu[:1], logvar[:1]).sum())
    # per-sample log q(z|x) − log p(z) has a standard deviation of about 2.5 nats here,
    # so the mean of 2048 samples has a standard error of 0.055 nats: 0.2 nats is more
    # than 3.5 standard errors.
    mi, tc, dwkl = tc_decomposition(z, mu, logvar, dataset_size=60_000)
    assert float(mi + tc + dwkl) == pytest.approx(kl, abs=0.2)


def test_single_posterior_has_no_mi_and_no_tc():
    z, mu, logvar = single_posterior(0)
    mi, tc, dwkl = tc_decomposition(z, mu, logvar, dataset_size=1)
    assert abs(float(mi)) < 1e-9
    assert abs(float(tc)) < 1e-9
    kl = float(gaussian_kl(mu[:1], logvar[:1]).sum())
    assert float(dwkl) == pytest.approx(kl, abs=0.2)


@pytest.mark.parametrize("seed", [0, 1])
def test_tc_of_a_correlated_aggregate_posterior_matches_the_gaussian_closed_form(seed):
    z, mu, logvar, tc_true = correlated_posteriors(seed, rho=0.8)
    _, tc, _ = tc_decomposition(z, mu, logvar, dataset_size=1)
    assert tc_true == pytest.approx(0.2635, abs=1e-3)  # ½ log(1.25² / (1.25² − 0.8²))
    assert float(tc) > 0
    # spread over 20 seeds: sd 0.014 nats, so 0.06 nats is more than 4 sd.
    assert float(tc) == pytest.approx(tc_true, abs=0.06)


@pytest.mark.parametrize("seed", [0, 1])
def test_tc_of_independent_dimensions_is_near_zero(seed):
    z, mu, logvar, tc_true = correlated_posteriors(seed, rho=0.0)
    _, tc, _ = tc_decomposition(z, mu, logvar, dataset_size=1)
    assert tc_true == 0.0
    # a finite mixture is not exactly factorised: over 20 seeds the estimate is 0.010 ±
    # 0.003 nats.
    assert abs(float(tc)) < 0.03


def test_dataset_size_shifts_the_terms_by_log_n():
    z, mu, logvar, _ = correlated_posteriors(3, rho=0.5, batch=256, dim=4)
    n = 737_280
    one = [float(t) for t in tc_decomposition(z, mu, logvar, dataset_size=1)]
    big = [float(t) for t in tc_decomposition(z, mu, logvar, dataset_size=n)]
    d = z.shape[1]
    assert big[0] - one[0] == pytest.approx(math.log(n), abs=1e-9)
    assert big[1] - one[1] == pytest.approx((d - 1) * math.log(n), abs=1e-9)
    assert big[2] - one[2] == pytest.approx(-d * math.log(n), abs=1e-9)
    assert sum(big) == pytest.approx(
        sum(one), abs=1e-9
    )  # the sum never depends on the estimate of q(z)


def test_formula_matches_a_double_loop_over_scipy_densities():
    z, mu, logvar, _ = correlated_posteriors(4, rho=0.6, batch=12, dim=3)
    n = 1000
    z_, mu_, sd_ = z.numpy(), mu.numpy(), np.exp(0.5 * logvar.numpy())
    b, d = z_.shape
    log_q_cond = np.array(
        [
            [
                [norm.logpdf(z_[i, k], mu_[j, k], sd_[j, k]) for k in range(d)]
                for j in range(b)
            ]
            for i in range(b)
        ]
    )  # (i, j, k)
    log_qz = logsumexp(log_q_cond.sum(2), axis=1) - math.log(n * b)
    log_prod = (logsumexp(log_q_cond, axis=1) - math.log(n * b)).sum(1)
    log_q_own = np.array([log_q_cond[i, i].sum() for i in range(b)])
    log_p = norm.logpdf(z_).sum(1)
    expected = [
        np.mean(log_q_own - log_qz),
        np.mean(log_qz - log_prod),
        np.mean(log_prod - log_p),
    ]
    got = [float(t) for t in tc_decomposition(z, mu, logvar, dataset_size=n)]
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_tcvae_loss_weighs_only_the_tc_term():
    z, mu, logvar, _ = correlated_posteriors(5, rho=0.7, batch=64, dim=3)
    x = torch.rand(
        64, 1, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    logits = torch.zeros_like(x)
    t1 = beta_vae_loss(x, logits, mu, logvar, z, beta=1.0, tc=True, dataset_size=500)
    t6 = beta_vae_loss(x, logits, mu, logvar, z, beta=6.0, tc=True, dataset_size=500)
    assert float(t6.total - t1.total) == pytest.approx(5 * float(t1.tc), rel=1e-9)
    assert float(t1.total) == pytest.approx(
        float(t1.recon + t1.mi + t1.tc + t1.dwkl), rel=1e-12
    )

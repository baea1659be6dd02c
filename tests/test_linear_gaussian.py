"""The exact linear-Gaussian model: its densities against torch.distributions, and the
ELBO identities."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from betavae_lib.linear_gaussian import LinearGaussian


@pytest.fixture
def model():
    return LinearGaussian.random(data_dim=7, latent_dim=3, sigma=0.6, seed=1)


@pytest.fixture
def x(model):
    return model.sample(5, generator=torch.Generator().manual_seed(2))[0]


def random_q(batch, dim, seed):
    """Random Gaussians: means (B, D) and full covariances (B, D, D)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    a = torch.randn(batch, dim, dim, generator=g, dtype=torch.float64)
    return mean, a @ a.transpose(-1, -2) + 0.1 * torch.eye(dim, dtype=torch.float64)


def test_log_marginal_matches_multivariate_normal(model, x):
    cov = model.W @ model.W.T + model.sigma**2 * torch.eye(
        model.data_dim, dtype=torch.float64
    )
    expected = MultivariateNormal(model.b, covariance_matrix=cov).log_prob(x)
    torch.testing.assert_close(model.log_marginal(x), expected, rtol=0, atol=1e-10)


def test_posterior_is_the_gaussian_conditional_of_the_joint(model, x):
    # joint of (z, x): cov [[I, Wᵀ], [W, WWᵀ + σ²I]]; condition z on x by the Schur
    # complement
    W, s2 = model.W, model.sigma**2
    cxx = W @ W.T + s2 * torch.eye(model.data_dim, dtype=torch.float64)
    gain = W.T @ torch.linalg.inv(cxx)
    mean, cov = model.posterior(x)
    torch.testing.assert_close(mean, (x - model.b) @ gain.T, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        cov,
        torch.eye(model.latent_dim, dtype=torch.float64) - gain @ W,
        rtol=0,
        atol=1e-10,
    )


def test_bayes_rule_holds_pointwise(model, x):
    # log p(x, z) − log p(z | x) = log p(x) at any z
    mean, cov = model.posterior(x)
    z = torch.randn(
        4, *mean.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    log_post = MultivariateNormal(mean, covariance_matrix=cov).log_prob(z)
    torch.testing.assert_close(
        model.log_joint(x, z) - log_post,
        model.log_marginal(x).expand(4, -1),
        rtol=0,
        atol=1e-9,
    )


def test_elbo_equals_log_marginal_at_the_true_posterior(model, x):
    mean, cov = model.posterior(x)
    torch.testing.assert_close(
        model.elbo(x, mean, cov), model.log_marginal(x), rtol=0, atol=1e-9
    )
    assert model.kl_to_posterior(x, mean, cov).abs().max() < 1e-9


def test_elbo_plus_kl_is_log_marginal_for_any_q(model, x):
    mean, cov = random_q(len(x), model.latent_dim, seed=4)
    elbo, kl = model.elbo(x, mean, cov), model.kl_to_posterior(x, mean, cov)
    torch.testing.assert_close(elbo + kl, model.log_marginal(x), rtol=0, atol=1e-8)
    assert (elbo < model.log_marginal(x)).all() and (kl > 0).all()


def test_kl_to_posterior_matches_torch_distributions(model, x):
    mean, cov = random_q(len(x), model.latent_dim, seed=5)
    post_mean, post_cov = model.posterior(x)
    expected = kl_divergence(
        MultivariateNormal(mean, covariance_matrix=cov),
        MultivariateNormal(post_mean, covariance_matrix=post_cov),
    )
    torch.testing.assert_close(
        model.kl_to_posterior(x, mean, cov), expected, rtol=0, atol=1e-9
    )


def test_elbo_matches_a_monte_carlo_estimate(model, x):
    mean, var = model.mean_field_posterior(x)
    g = torch.Generator().manual_seed(6)
    z = mean + var.sqrt() * torch.randn(
        200_000, *mean.shape, generator=g, dtype=torch.float64
    )
    log_q = (-0.5 * (math.log(2 * math.pi) + var.log() + (z - mean) ** 2 / var)).sum(-1)
    mc = (model.log_joint(x, z) - log_q).mean(0)
    torch.testing.assert_close(mc, model.elbo(x, mean, var), rtol=0, atol=0.05)


def test_mean_field_q_is_the_best_diagonal_gaussian(model, x):
    mean, var = model.mean_field_posterior(x)
    best = model.elbo(x, mean, var)
    for scale in (0.8, 1.25):
        assert (model.elbo(x, mean, var * scale) < best).all()
    assert (model.elbo(x, mean + 0.1, var) < best).all()
    assert (
        best < model.log_marginal(x) - 1e-6
    ).all()  # W has non-orthogonal columns: a real gap


def test_iwae_is_exact_with_the_true_posterior_and_tightens_with_k(model, x):
    mean, cov = model.posterior(x)
    g = torch.Generator().manual_seed(7)
    torch.testing.assert_close(
        model.iwae(x, mean, cov, k=3, generator=g),
        model.log_marginal(x),
        rtol=0,
        atol=1e-9,
    )
    mf_mean, mf_var = model.mean_field_posterior(x)
    k1 = torch.stack(
        [model.iwae(x, mf_mean, mf_var, k=1, generator=g) for _ in range(400)]
    )
    k50 = torch.stack(
        [model.iwae(x, mf_mean, mf_var, k=50, generator=g) for _ in range(400)]
    )
    torch.testing.assert_close(
        k1.mean(0), model.elbo(x, mf_mean, mf_var), rtol=0, atol=0.05
    )
    assert (k1.mean(0) < k50.mean(0)).all()
    # E[IWAE_k] <= log p(x): the average of 400 estimates lies below it up to 3 standard
    # errors
    stderr = k50.std(0) / math.sqrt(len(k50))
    assert (k50.mean(0) <= model.log_marginal(x) + 3 * stderr).all()
    assert (model.log_marginal(x) - k50.mean(0)).mean() < (
        model.log_marginal(x) - k1.mean(0)
    ).mean() / 3


def beta_objective(W, V, log_s2, eigenvalues, sigma, beta):
    """E_x[−ELBO + (β − 1) KL(q ‖ N(0, I))] for x ~ N(0, diag(λ)), computed with
    LinearGaussian's exact ELBO. The expectation over x is exact: the 2D points
    ±√(D λ_i) e_i have mean 0 and covariance diag(λ), and the objective is quadratic
    in x."""
    from betavae_lib.losses import gaussian_kl

    d = len(eigenvalues)
    scale = torch.sqrt(d * eigenvalues)
    x = torch.cat([torch.diag(scale), -torch.diag(scale)])  # (2D, D)
    model = LinearGaussian(W, torch.zeros(d, dtype=torch.float64), sigma)
    m = x @ V.T
    elbo = model.elbo(x, m, log_s2.exp())
    kl = gaussian_kl(m, log_s2.expand_as(m)).sum(-1)
    return (-elbo + (beta - 1) * kl).mean()


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_beta_vae_optimum_matches_numerical_optimisation(beta):
    from betavae_lib.linear_gaussian import beta_vae_optimum

    # variances chosen away from βσ² for every β tested, so the optimum is sharp
    lam = torch.tensor([5.0, 2.2, 0.9, 0.35, 0.13], dtype=torch.float64)
    sigma = 0.8
    exact = beta_vae_optimum(lam, sigma, beta)
    g = torch.Generator().manual_seed(0)
    W = (0.5 * torch.randn(5, 5, generator=g, dtype=torch.float64)).requires_grad_()
    V = (0.5 * torch.randn(5, 5, generator=g, dtype=torch.float64)).requires_grad_()
    log_s2 = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, V, log_s2],
        max_iter=5000,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = beta_objective(W, V, log_s2, lam, sigma, beta)
        loss.backward()
        return loss

    opt.step(closure)
    # the closed form's objective, from its own parameters
    best = beta_objective(
        torch.diag(exact["w"]),
        torch.diag(exact["v"]),
        exact["s2"].log(),
        lam,
        sigma,
        beta,
    )
    found = beta_objective(W, V, log_s2, lam, sigma, beta)
    assert found.item() == pytest.approx(best.item(), abs=1e-6)
    # per-latent rates of the numerical optimum, sorted, against the closed form
    # (a diagonal q aligns each latent with one eigenvector; their order is free)
    from betavae_lib.losses import gaussian_kl

    scale = torch.sqrt(5 * lam)
    x = torch.cat([torch.diag(scale), -torch.diag(scale)])
    with torch.no_grad():
        m = x @ V.T
        rates = gaussian_kl(m, log_s2.expand_as(m)).mean(0)
    torch.testing.assert_close(
        rates.sort(descending=True).values, exact["rate"], atol=1e-4, rtol=0
    )


def test_beta_vae_optimum_switches_a_direction_off_at_beta_sigma2():
    from betavae_lib.linear_gaussian import beta_vae_optimum

    lam = torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64)
    out = beta_vae_optimum(lam, sigma=1.0, beta=1.0)
    # λ = βσ² exactly is the boundary: off, with the prior as posterior
    assert out["rate"].tolist() == pytest.approx([0.5 * math.log(4), 0.0, 0.0])
    assert out["s2"].tolist() == pytest.approx([0.25, 1.0, 1.0])
    assert out["w"].tolist() == pytest.approx([math.sqrt(3), 0.0, 0.0])
    # raising β past λ_1/σ² = 4 switches the last direction off
    assert beta_vae_optimum(lam, 1.0, 3.9)["rate"][0] > 0
    assert beta_vae_optimum(lam, 1.0, 4.0)["rate"][0] == 0
    with pytest.raises(ValueError):
        beta_vae_optimum(torch.tensor([1.0, -1.0]), 1.0, 1.0)

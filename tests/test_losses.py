"""Losses against torch.distributions, torch.nn.functional and hand-computed cases."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence

from betavae_lib.losses import (
    bernoulli_nll,
    beta_vae_loss,
    gaussian_kl,
    gaussian_nll,
    reconstruction_nll,
    tc_decomposition,
)


def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = (
        torch.randn(16, 7, dtype=torch.float64),
        torch.randn(16, 7, dtype=torch.float64),
    )
    ref = kl_divergence(
        Normal(mu, (0.5 * logvar).exp()),
        Normal(torch.zeros_like(mu), torch.ones_like(mu)),
    )
    assert gaussian_kl(mu, logvar).shape == (16, 7)
    torch.testing.assert_close(gaussian_kl(mu, logvar), ref)


def test_gaussian_kl_is_zero_at_the_prior():
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0


def test_bernoulli_nll_matches_bce_and_distribution():
    logits = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    ref = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 5
    torch.testing.assert_close(bernoulli_nll(logits, x).mean(), ref)
    xb = (x > 0.5).double()
    torch.testing.assert_close(
        bernoulli_nll(logits, xb),
        -Bernoulli(logits=logits).log_prob(xb).flatten(1).sum(1),
    )


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0])
def test_gaussian_nll_matches_normal_log_prob(sigma):
    logits, x = (
        torch.randn(4, 1, 3, 3, dtype=torch.float64),
        torch.rand(4, 1, 3, 3, dtype=torch.float64),
    )
    ref = -Normal(torch.sigmoid(logits), sigma).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_nll(logits, x, math.log(sigma)), ref)
    torch.testing.assert_close(
        reconstruction_nll(logits, x, "gaussian", sigma=sigma), ref
    )
    log_sigma = torch.tensor(math.log(sigma), dtype=torch.float64, requires_grad=True)
    learned = reconstruction_nll(logits, x, "gaussian_learned", log_sigma=log_sigma)
    torch.testing.assert_close(learned.detach(), ref)
    learned.sum().backward()
    assert log_sigma.grad is not None and torch.isfinite(log_sigma.grad)


def test_learned_sigma_gradient_vanishes_at_the_optimum():
    """d/dlogσ of Σ[½ r²/σ² + log σ] is zero at σ² = mean r² (the closed-form
    optimum)."""
    logits, x = (
        torch.randn(8, 1, 5, 5, dtype=torch.float64),
        torch.rand(8, 1, 5, 5, dtype=torch.float64),
    )
    r2 = (x - torch.sigmoid(logits)).pow(2).mean()
    log_sigma = (0.5 * r2.log()).clone().requires_grad_(True)
    reconstruction_nll(
        logits, x, "gaussian_learned", log_sigma=log_sigma
    ).sum().backward()
    assert abs(log_sigma.grad.item()) < 1e-9


def test_beta_vae_loss_hand_computed_case():
    """Sum over pixels and latents, mean over the batch, β times the summed KL."""
    x = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])  # (2, 1, 1, 2)
    logits = torch.zeros(2, 1, 1, 2)  # p = 0.5 everywhere: log 2 per pixel
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.zeros(2, 2)
    t = beta_vae_loss(x, logits, mu, logvar, beta=3.0)
    assert t.recon.item() == pytest.approx(
        2 * math.log(2)
    )  # 2 pixels, averaged over 2 images
    # KL per image: ½Σμ² → 0.5 and 2.0; batch mean 1.25; per dim means (0.25, 1.0)
    assert t.kl.item() == pytest.approx(1.25)
    torch.testing.assert_close(t.kl_per_dim, torch.tensor([0.25, 1.0]))
    assert t.total.item() == pytest.approx(2 * math.log(2) + 3.0 * 1.25)


def test_beta_multiplies_the_summed_kl():
    x, logits = torch.rand(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    mu, logvar = torch.randn(8, 6), torch.randn(8, 6)
    t1 = beta_vae_loss(x, logits, mu, logvar, beta=1.0)
    t4 = beta_vae_loss(x, logits, mu, logvar, beta=4.0)
    torch.testing.assert_close(t4.total - t1.total, 3.0 * t1.kl)
    torch.testing.assert_close(t1.kl, gaussian_kl(mu, logvar).sum(1).mean())


def test_tc_terms_add_up_to_the_sampled_kl_estimate():
    """MI + TC + dwKL telescopes to E[log q(z|x) − log p(z)] (a single-sample KL
    estimate)."""
    mu, logvar = (
        torch.randn(64, 3, dtype=torch.float64),
        torch.randn(64, 3, dtype=torch.float64) * 0.3,
    )
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    mi, tc, dwkl = tc_decomposition(z, mu, logvar, dataset_size=1000)
    q = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(1)
    p = Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(mi + tc + dwkl, (q - p).mean())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"beta": -1.0}, "beta must be >= 0"),
        ({"likelihood": "poisson"}, "bernoulli, gaussian, gaussian_learned"),
        ({"likelihood": "gaussian", "sigma": 0.0}, "sigma must be > 0"),
        ({"likelihood": "gaussian_learned"}, "needs log_sigma"),
        ({"free_bits": -0.5}, "free_bits must be >= 0"),
        ({"tc": True}, "needs the posterior samples"),
    ],
)
def test_bad_loss_arguments_raise(kwargs, match):
    x, logits, mu, logvar = (
        torch.rand(2, 1, 2, 2),
        torch.zeros(2, 1, 2, 2),
        torch.zeros(2, 3),
        torch.zeros(2, 3),
    )
    with pytest.raises(ValueError, match=match):
        beta_vae_loss(x, logits, mu, logvar, **kwargs)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        beta_vae_loss(
            torch.rand(2, 1, 2, 2),
            torch.zeros(2, 1, 3, 3),
            torch.zeros(2, 3),
            torch.zeros(2, 3),
        )

"""A latent-variable model whose every quantity is exact: the linear-Gaussian model
(probabilistic PCA).

    z ~ N(0, I_D),    x | z ~ N(W z + b, σ² I_P)

so that (Tipping & Bishop 1999)

    p(x)     = N(x; b, W Wᵀ + σ² I_P)
    p(z | x) = N(z; Λ⁻¹ Wᵀ (x − b) / σ²,  Λ⁻¹),   Λ = I_D + Wᵀ W / σ².

The book uses it to check the ELBO numerically: for a Gaussian q(z) = N(m, S) the ELBO
and the KL to the true posterior have closed forms, so
``ELBO + KL(q ‖ p(z|x)) = log p(x)`` can be verified to rounding error. Everything is
computed in float64. Shapes: x (B, P), z (..., D), m (B, D), S (D, D) or (B, D, D); all
log-densities in nats.
"""

from __future__ import annotations

import math

import torch

from ._common import positive_int

_LOG_2PI = math.log(2 * math.pi)


def _as_cov(cov: torch.Tensor, dim: int) -> torch.Tensor:
    """A covariance given as (D,) variances, (D, D) or (B, D, D) -> a float64
    (..., D, D) matrix."""
    cov = torch.as_tensor(cov, dtype=torch.float64)
    if cov.dim() == 1:
        cov = torch.diag(cov)
    if cov.shape[-2:] != (dim, dim):
        raise ValueError(
            f"a covariance must be (D,), (D, D) or (B, D, D) with D = {dim}, "
            f"got {tuple(cov.shape)}"
        )
    return cov


class LinearGaussian:
    """z ~ N(0, I_D), x | z ~ N(W z + b, σ² I_P), with exact marginal, posterior, ELBO
    and KL.

    W: (P, D) loadings; b: (P,) offset; sigma: observation noise standard deviation
    (> 0).
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor, sigma: float):
        self.W = torch.as_tensor(W, dtype=torch.float64)
        self.b = torch.as_tensor(b, dtype=torch.float64)
        if self.W.dim() != 2 or self.b.shape != (self.W.shape[0],):
            raise ValueError(
                f"W must be (P, D) and b (P,), "
                f"got {tuple(self.W.shape)} and {tuple(self.b.shape)}"
            )
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.data_dim, self.latent_dim = self.W.shape
        eye = torch.eye(self.latent_dim, dtype=torch.float64)
        self.precision = (
            eye + self.W.T @ self.W / self.sigma**2
        )  # Λ, the posterior precision (D, D)
        self._chol = torch.linalg.cholesky(self.precision)

    @classmethod
    def random(
        cls, data_dim: int, latent_dim: int, sigma: float = 0.5, seed: int = 0
    ) -> LinearGaussian:
        """A model with standard-normal W (P, D) and b (P,), seeded."""
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64)
        b = torch.randn(data_dim, generator=g, dtype=torch.float64)
        return cls(W, b, sigma)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n pairs from the joint: x (n, P) and z (n, D)."""
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=torch.float64)
        noise = torch.randn(n, self.data_dim, generator=generator, dtype=torch.float64)
        return z @ self.W.T + self.b + self.sigma * noise, z

    # ------------------------------------------------------------------ exact densities

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = log N(x; b, W Wᵀ + σ² I): (B,) nats (Woodbury identity, D×D
        solves only)."""
        r = torch.as_tensor(x, dtype=torch.float64) - self.b
        s2 = self.sigma**2
        # (W Wᵀ + σ² I)⁻¹ = (I − W Λ⁻¹ Wᵀ / σ²) / σ²;   log det = P log σ² + log det Λ
        wr = r @ self.W  # (B, D)
        solved = torch.cholesky_solve(wr.T, self._chol).T  # Λ⁻¹ Wᵀ r
        mahalanobis = ((r * r).sum(-1) - (wr * solved).sum(-1) / s2) / s2
        logdet = (
            self.data_dim * math.log(s2)
            + 2 * torch.log(torch.diagonal(self._chol)).sum()
        )
        return -0.5 * (self.data_dim * _LOG_2PI + logdet + mahalanobis)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) = log N(x; W z + b, σ² I): x (B, P), z (..., B, D) -> (..., B)
        nats."""
        x = torch.as_tensor(x, dtype=torch.float64)
        resid = x - (torch.as_tensor(z, dtype=torch.float64) @ self.W.T + self.b)
        return -0.5 * (
            self.data_dim * (_LOG_2PI + 2 * math.log(self.sigma))
            + (resid**2).sum(-1) / self.sigma**2
        )

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I): (..., D) -> (...) nats."""
        z = torch.as_tensor(z, dtype=torch.float64)
        return -0.5 * (self.latent_dim * _LOG_2PI + (z**2).sum(-1))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(x | z) + log p(z): x (B, P), z (..., B, D) -> (..., B)
        nats."""
        return self.log_likelihood(x, z) + self.log_prior(z)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact posterior p(z | x) = N(mean, cov): mean (B, D), cov (D, D) (the
        same for every x)."""
        r = torch.as_tensor(x, dtype=torch.float64) - self.b
        cov = torch.cholesky_inverse(self._chol)
        return (r @ self.W) @ cov / self.sigma**2, cov

    def mean_field_posterior(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The factorised q(z) = Π_d N(m_d, v_d) closest to p(z|x) in KL(q ‖ p):
        m = posterior mean, v_d = 1 / Λ_dd. Returns mean (B, D) and variances (D,)."""
        mean, _ = self.posterior(x)
        return mean, 1.0 / torch.diagonal(self.precision)

    # ---------------------------------------------------------- bounds for a Gaussian q

    def elbo(
        self, x: torch.Tensor, q_mean: torch.Tensor, q_cov: torch.Tensor
    ) -> torch.Tensor:
        """Closed-form ELBO for q(z) = N(q_mean, q_cov): (B,) nats.

            E_q[log p(x|z)] = −P/2 log 2πσ² − (‖x − W m − b‖² + tr(W S Wᵀ)) / 2σ²
            KL(q ‖ N(0, I)) = ½ (tr S + ‖m‖² − D − log det S)

        q_mean: (B, D); q_cov: (D,) variances, (D, D) or (B, D, D).
        """
        x = torch.as_tensor(x, dtype=torch.float64)
        m = torch.as_tensor(q_mean, dtype=torch.float64)
        S = _as_cov(q_cov, self.latent_dim)
        s2 = self.sigma**2
        resid = x - m @ self.W.T - self.b
        trace_wsw = torch.einsum("pd,...de,pe->...", self.W, S, self.W)
        expected_loglik = -0.5 * (
            self.data_dim * (_LOG_2PI + math.log(s2))
            + ((resid**2).sum(-1) + trace_wsw) / s2
        )
        kl_prior = 0.5 * (
            torch.diagonal(S, dim1=-2, dim2=-1).sum(-1)
            + (m**2).sum(-1)
            - self.latent_dim
            - torch.logdet(S)
        )
        return expected_loglik - kl_prior

    def kl_to_posterior(
        self, x: torch.Tensor, q_mean: torch.Tensor, q_cov: torch.Tensor
    ) -> torch.Tensor:
        """Exact KL(q ‖ p(z | x)) for q = N(q_mean, q_cov): (B,) nats (the Gaussian KL
        in closed form).

        KL = ½ (tr(Λ S) + (μ − m)ᵀ Λ (μ − m) − D − log det S − log det Λ),
        μ the posterior mean
        """
        m = torch.as_tensor(q_mean, dtype=torch.float64)
        S = _as_cov(q_cov, self.latent_dim)
        mu, _ = self.posterior(x)
        d = mu - m
        logdet_precision = 2 * torch.log(torch.diagonal(self._chol)).sum()
        return 0.5 * (
            torch.einsum("de,...ed->...", self.precision, S)
            + ((d @ self.precision) * d).sum(-1)
            - self.latent_dim
            - torch.logdet(S)
            - logdet_precision
        )

    def iwae(
        self,
        x: torch.Tensor,
        q_mean: torch.Tensor,
        q_cov: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Monte-Carlo importance-weighted bound (Burda et al. 2016) with k samples of
        q: (B,) nats.

        log (1/k) Σ_i p(x, z_i) / q(z_i),   z_i ~ q = N(q_mean, q_cov)
        """
        k = positive_int("k", k)
        m = torch.as_tensor(q_mean, dtype=torch.float64)
        S = _as_cov(q_cov, self.latent_dim)
        q = torch.distributions.MultivariateNormal(m, covariance_matrix=S)
        eps = torch.randn(int(k), *m.shape, generator=generator, dtype=torch.float64)
        z = m + (eps.unsqueeze(-2) @ q.scale_tril.transpose(-1, -2)).squeeze(
            -2
        )  # (k, B, D)
        log_w = self.log_joint(x, z) - q.log_prob(z)
        return torch.logsumexp(log_w, dim=0) - math.log(k)


def beta_vae_optimum(eigenvalues, sigma: float, beta: float) -> dict:
    """The optimum of the β-VAE objective for a linear model of Gaussian data.

    Data x ~ N(0, C), with C's eigenvalues ``eigenvalues`` λ_i (D,); a linear decoder
    x | z ~ N(W z, σ² I) with σ fixed; a linear encoder with a diagonal Gaussian
    q(z | x) = N(V x, diag s²); the objective E_x[−E_q log p(x|z) + β KL(q ‖ N(0, I))].
    Along each eigenvector the problem is one-dimensional, and its optimum is (Lucas
    et al. 2019 for β = 1, with β carried through the same algebra)

        λ_i > βσ²:  w_i² = λ_i − βσ²,  s_i² = βσ²/λ_i,  v_i = w_i/λ_i,
                    rate_i = ½ log(λ_i / βσ²)
        λ_i ≤ βσ²:  w_i = v_i = 0,  s_i² = 1,  rate_i = 0   (the direction collapses)

    so a direction carries information iff its variance exceeds βσ². Returns a dict
    of float64 (D,) tensors: ``w`` (≥ 0; any sign is as good), ``v``, ``s2`` and
    ``rate`` (nats per direction, averaged over the data).
    """
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    if lam.dim() != 1 or not bool((lam > 0).all()):
        raise ValueError("eigenvalues must be a 1-D tensor of positive variances")
    if not sigma > 0 or not beta > 0:
        raise ValueError(f"sigma and beta must be > 0, got {sigma!r} and {beta!r}")
    price = beta * float(sigma) ** 2  # βσ²: the variance a direction must beat
    alive = lam > price
    w = torch.where(alive, (lam - price).clamp(min=0).sqrt(), torch.zeros_like(lam))
    return {
        "w": w,
        "v": w / lam,
        "s2": torch.where(alive, price / lam, torch.ones_like(lam)),
        "rate": torch.where(alive, 0.5 * torch.log(lam / price), torch.zeros_like(lam)),
    }

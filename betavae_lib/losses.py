"""The β-VAE objective and its variants, all through one entry point,
:func:`beta_vae_loss`.

Convention (used everywhere in this library and the book): every loss is in nats,
**summed over pixels and over latent dimensions, then averaged over the batch**; β
multiplies that summed KL:

    loss = E_batch[ -log p(x|z) ] + β · E_batch[ Σ_d KL(q(z_d|x) ‖ N(0, 1)) ]

Variants (each a keyword of :func:`beta_vae_loss`):

* ``free_bits=λ``: Kingma et al. (2016): each dimension's batch-mean KL counts at least
  λ nats.
* ``capacity=C, gamma=γ``: Burgess et al. (2018): recon + γ |KL − C| (β is not used).
* ``tc=True``: β-TCVAE, Chen et al. (2018): the KL is split into index-code MI + total
  correlation + dimension-wise KL, estimated with minibatch-weighted sampling; β weighs
  the TC term only.

All of them are one objective with different coefficients
(:mod:`betavae_lib.objective`), computed by :func:`objective_loss`; that is what lets
models with different variants train in one batched step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._common import check_flag, real_number, schedule_number

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
DEFAULT_SIGMA = 0.1
_LOG_2PI = math.log(2 * math.pi)


class Coefficients(NamedTuple):
    """The weights of the unified objective at one step (:mod:`betavae_lib.objective`).

    Numbers for one model. For an ensemble of K models, (K,) tensors; a term that no
    member uses stays the number 0, and a term whose coefficient is the number 0 is not
    computed at all.
    """

    beta_kl: float | torch.Tensor = 0.0
    free_bits: float | torch.Tensor = 0.0
    gamma: float | torch.Tensor = 0.0
    capacity: float | torch.Tensor = 0.0
    mi_dwkl: float | torch.Tensor = 0.0
    beta_tc: float | torch.Tensor = 0.0


class LossTerms(NamedTuple):
    """Batch means, in nats: ``total`` (what is minimised), ``recon``, ``kl`` (summed
    over latents), ``kl_per_dim`` (D,); ``mi``, ``tc``, ``dwkl`` are set only with
    ``tc=True``."""

    total: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    kl_per_dim: torch.Tensor
    mi: torch.Tensor | None = None
    tc: torch.Tensor | None = None
    dwkl: torch.Tensor | None = None


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) ‖ N(0, 1)) per dimension, in closed form: (B, D) nats.

    KL_d = ½ (mu_d² + σ_d² − 1 − log σ_d²)   (Kingma & Welling 2014, appendix B)
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """−log Bernoulli(x | sigmoid(logits)) summed over pixels: (B,) nats.
    x in [0, 1]."""
    return (
        F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        .flatten(1)
        .sum(1)
    )


def gaussian_nll(
    logits: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor | float
) -> torch.Tensor:
    """−log N(x | sigmoid(logits), σ²) summed over pixels: (B,) nats;
    σ = exp(log_sigma), fixed or learned.

    −log N = ½ ((x − mean) / σ)² + log σ + ½ log 2π   per pixel
    """
    log_sigma = torch.as_tensor(log_sigma, dtype=logits.dtype, device=logits.device)
    mean = torch.sigmoid(logits)
    per_pixel = (
        0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2) + log_sigma + 0.5 * _LOG_2PI
    )
    return per_pixel.flatten(1).sum(1)


def reconstruction_nll(
    logits: torch.Tensor,
    x: torch.Tensor,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
    log_sigma: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reconstruction term −log p(x|z) per image: (B,) nats summed over pixels.

    likelihood: ``"bernoulli"`` (binary or [0, 1] pixels, BCE on logits), ``"gaussian"``
    (fixed ``sigma``), ``"gaussian_learned"`` (σ = exp(``log_sigma``), a learned scalar,
    e.g. ``model.log_sigma``).
    """
    if likelihood == "bernoulli":
        return bernoulli_nll(logits, x)
    if likelihood == "gaussian":
        sigma = real_number("sigma", sigma, strict=True, unit=" (Gaussian likelihood)")
        return gaussian_nll(logits, x, math.log(sigma))
    if likelihood == "gaussian_learned":
        if log_sigma is None:
            raise ValueError(
                "likelihood='gaussian_learned' needs log_sigma "
                "(for example model.log_sigma)"
            )
        return gaussian_nll(logits, x, log_sigma)
    raise ValueError(
        f"unknown likelihood {likelihood!r}; valid are {', '.join(LIKELIHOODS)}"
    )


def gaussian_log_density(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """log N(z | mu, exp(logvar)) elementwise (broadcasting), nats."""
    return -0.5 * (_LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def tc_decomposition(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int
):
    """β-TCVAE terms by minibatch-weighted sampling (Chen et al. 2018, eq. 4 and
    appendix C.1).

    z, mu, logvar: (B, D). Returns batch means (mi, tc, dwkl), whose sum estimates the
    KL term: MI = E[log q(z|x) − log q(z)], TC = E[log q(z) − Σ_d log q(z_d)],
    dwKL = E[Σ_d log q(z_d) − log p(z)], with
    log q(z_i) ≈ logsumexp_j log q(z_i|x_j) − log(N B).
    """
    batch = z.shape[0]
    log_qz_given_x = gaussian_log_density(z, mu, logvar).sum(1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    pairwise = gaussian_log_density(
        z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0)
    )  # (B, B, D)
    log_norm = math.log(batch * dataset_size)
    log_qz = torch.logsumexp(pairwise.sum(2), dim=1) - log_norm
    log_prod_qzd = (torch.logsumexp(pairwise, dim=1) - log_norm).sum(1)
    mi = (log_qz_given_x - log_qz).mean()
    tc = (log_qz - log_prod_qzd).mean()
    dwkl = (log_prod_qzd - log_pz).mean()
    return mi, tc, dwkl


def check_sigma_unused(likelihood: str, sigma) -> None:
    """Raise ValueError when ``sigma`` is set to other than its default (0.1) for a
    likelihood that does not use it (all but ``"gaussian"``): it would be ignored."""
    if likelihood != "gaussian" and not (
        isinstance(sigma, (int, float)) and sigma == DEFAULT_SIGMA
    ):
        learned = " (σ is learned: model.log_sigma)" * (
            likelihood == "gaussian_learned"
        )
        raise ValueError(
            f"sigma={sigma!r} is used only by likelihood='gaussian'; the "
            f"{likelihood!r} likelihood{learned} would ignore it. Pass "
            f"likelihood='gaussian', or leave sigma out"
        )


def check_likelihood(likelihood: str, sigma) -> None:
    """Raise ValueError for a likelihood not in :data:`LIKELIHOODS`, a σ <= 0 for the
    Gaussian one, or a σ that the likelihood would ignore."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"unknown likelihood {likelihood!r}; valid are {', '.join(LIKELIHOODS)}"
        )
    if likelihood == "gaussian":
        real_number("sigma", sigma, strict=True, unit=" (Gaussian likelihood)")
    else:
        check_sigma_unused(likelihood, sigma)


def check_objective_options(*, tc: bool, capacity, free_bits) -> None:
    """Raise ValueError naming both options when two objectives are asked for at once:
    β-TCVAE (``tc=True``), the capacity objective (``capacity``) and free bits
    (``free_bits > 0``) each replace the KL term in their own way, so one loss cannot
    honour two of them."""
    asked = [
        name
        for name, on in (
            ("tc=True", bool(tc)),
            (f"capacity={capacity!r}", capacity is not None),
            (f"free_bits={free_bits!r}", free_bits > 0),
        )
        if on
    ]
    if len(asked) > 1:
        raise ValueError(
            f"{asked[0]} and {asked[1]} cannot be combined: β-TCVAE, the capacity "
            f"objective and free bits are different objectives; choose one"
        )


def beta_vae_loss(
    x: torch.Tensor,
    logits: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    z: torch.Tensor | None = None,
    *,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
    log_sigma: torch.Tensor | None = None,
    free_bits: float = 0.0,
    capacity: float | None = None,
    gamma: float = 1000.0,
    tc: bool = False,
    dataset_size: int | None = None,
) -> LossTerms:
    """The one loss entry point: reconstruction + β · KL, or one of its variants (module
    docstring).

    x: (B, C, H, W) targets in [0, 1]; logits: decoder output, same shape; mu, logvar:
    (B, D); z: (B, D) posterior samples (needed for ``tc=True``); dataset_size: N for
    the β-TCVAE estimator. All returned terms are batch means in nats, summed over
    pixels / latents.

    The options are checked as :class:`betavae_lib.objective.Objective` checks them
    (with the same messages): ``tc=True`` with ``free_bits`` or ``capacity``, and
    ``capacity`` with ``free_bits``, raise ``ValueError``; β with capacity (and γ
    without) is ignored, as described above. The coefficients are the ones of the
    objective's table at step 0.
    """
    if capacity is not None:
        capacity_value = schedule_number("capacity", capacity)
    else:
        beta = schedule_number("beta", beta)
    real_number("free_bits", free_bits, unit=" nats")
    if capacity is not None:
        gamma = real_number("gamma", gamma)
    check_likelihood(likelihood, sigma)
    check_flag("tc", tc)
    check_objective_options(tc=tc, capacity=capacity, free_bits=free_bits)
    if tc:
        coefficients = Coefficients(mi_dwkl=1.0, beta_tc=beta)
    elif capacity is not None:
        coefficients = Coefficients(gamma=gamma, capacity=capacity_value)
    else:
        coefficients = Coefficients(beta_kl=beta, free_bits=float(free_bits))
    return objective_loss(
        x,
        logits,
        mu,
        logvar,
        z,
        coefficients,
        likelihood=likelihood,
        sigma=sigma,
        log_sigma=log_sigma,
        dataset_size=dataset_size,
    )


def _used(coefficient) -> bool:
    """A term is computed unless its coefficient is the number 0 (a tensor counts)."""
    return isinstance(coefficient, torch.Tensor) or coefficient != 0


def objective_loss(
    x: torch.Tensor,
    logits: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    z: torch.Tensor | None,
    coefficients,
    *,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
    log_sigma: torch.Tensor | None = None,
    dataset_size: int | None = None,
) -> LossTerms:
    """The unified objective of :mod:`betavae_lib.objective` with ``coefficients``.

    recon + beta_kl · Σ_d max(KL_d, free_bits) + gamma · |KL − capacity|
    + mi_dwkl · (MI + dwKL) + beta_tc · TC, in nats (batch means).

    coefficients: a :class:`Coefficients` of numbers, or of 0-dim
    tensors when this runs for every member of an ensemble under ``torch.vmap``; a
    term whose coefficient is the number 0 is skipped. Shapes and returned terms as for
    :func:`beta_vae_loss`, which is this function with an Objective's coefficients.
    """
    c = coefficients
    if logits.shape != x.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and images {tuple(x.shape)} "
            f"must have the same shape"
        )
    recon = reconstruction_nll(logits, x, likelihood, sigma, log_sigma).mean()
    kl_per_dim = gaussian_kl(mu, logvar).mean(0)
    kl = kl_per_dim.sum()
    total, parts = recon, (None, None, None)
    if _used(c.beta_kl):
        if isinstance(c.free_bits, torch.Tensor):
            floored = kl_per_dim.clamp(min=c.free_bits).sum()
            kl_term = torch.where(c.free_bits > 0, floored, kl)
        else:
            kl_term = kl_per_dim.clamp(min=c.free_bits).sum() if c.free_bits > 0 else kl
        total = total + c.beta_kl * kl_term
    if _used(c.gamma):
        total = total + c.gamma * (kl - c.capacity).abs()
    if _used(c.mi_dwkl) or _used(c.beta_tc):
        if z is None or dataset_size is None:
            raise ValueError(
                "tc=True needs the posterior samples z and the dataset_size"
            )
        parts = tc_decomposition(z, mu, logvar, dataset_size)
        mi, tcv, dwkl = parts
        total = total + c.mi_dwkl * mi + c.beta_tc * tcv + c.mi_dwkl * dwkl
    return LossTerms(total, recon, kl, kl_per_dim, *parts)

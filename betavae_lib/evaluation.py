"""The negative ELBO's terms on held-out images: :func:`evaluate` (means over the
images) and :func:`per_image_terms` (image by image), each from one posterior sample per
image drawn by a generator of its own, seeded from ``seed`` as a run with that seed
draws them. Both are importable from :mod:`betavae_lib.train` too, whose ``fit``
evaluates its test images with them.
"""

from __future__ import annotations

import torch

from ._common import (
    as_float_images,
    check_dataset_images,
    check_vae,
    evaluation_seed,
    model_device,
    positive_int,
    seeded_noise,
)
from .losses import (
    LIKELIHOODS,
    beta_vae_loss,
    check_sigma_unused,
    gaussian_kl,
    reconstruction_nll,
)


@torch.no_grad()
def evaluate(
    model,
    images: torch.Tensor,
    *,
    batch_size: int = 1000,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
    seed: int = 0,
) -> dict:
    """Negative-ELBO terms on ``images`` with one posterior sample per image.

    The samples are drawn from a generator of their own, seeded from ``seed`` (as a run
    with that seed evaluates its test images): the same call gives the same numbers,
    and the caller's random stream is left where it was. Returns
    ``{"recon": float, "kl": float, "kl_per_dim": (D,) list, "neg_elbo": float}`` in
    nats per image (means over images, sums over pixels / latents).
    """
    seed = _check_evaluation_args(model, images, batch_size, likelihood, sigma, seed)
    return _evaluate(
        model,
        images,
        batch_size=batch_size,
        likelihood=likelihood,
        sigma=sigma,
        seed=seed,
    )


def _check_evaluation_args(model, images, batch_size, likelihood, sigma, seed) -> int:
    """Raise on a bad argument of :func:`evaluate` or :func:`per_image_terms`; returns
    the seed as an int."""
    check_vae(model)
    check_dataset_images(model, images, "images")
    positive_int("batch_size", batch_size)
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"unknown likelihood {likelihood!r}; valid are {', '.join(LIKELIHOODS)}"
        )
    check_sigma_unused(likelihood, sigma)
    return positive_int("seed", seed, minimum=0, what="a non-negative integer")


@torch.no_grad()
def _evaluate(
    model,
    images: torch.Tensor,
    *,
    batch_size: int,
    likelihood: str,
    sigma: float,
    seed: int,
) -> dict:
    """:func:`evaluate` without the argument checks (``fit`` checks once, before the
    first epoch)."""
    with seeded_noise(evaluation_seed(seed), model_device(model)):
        sums, kl_dims = _evaluation_sums(model, images, batch_size, likelihood, sigma)
    recon, kl = (sums / len(images)).tolist()
    return {
        "recon": recon,
        "kl": kl,
        "kl_per_dim": (kl_dims / len(images)).tolist(),
        "neg_elbo": recon + kl,
    }


def _evaluation_sums(model, images, batch_size: int, likelihood: str, sigma: float):
    """(recon, kl) and kl per dim summed over ``images``, in eval mode."""
    was_training = model.training
    model.eval()
    device, dtype = model_device(model), model.log_sigma.dtype
    sums = torch.zeros(2, device=device, dtype=dtype)
    kl_dims = torch.zeros(model.latent_dim, device=device, dtype=dtype)
    for start in range(0, len(images), batch_size):
        x = as_float_images(
            images[start : start + batch_size].to(device, non_blocking=True)
        ).to(dtype)
        out = model(x)
        t = beta_vae_loss(
            x,
            out.logits,
            out.mu,
            out.logvar,
            likelihood=likelihood,
            sigma=sigma,
            log_sigma=model.log_sigma,
        )
        sums += torch.stack([t.recon, t.kl]) * len(x)
        kl_dims += t.kl_per_dim * len(x)
    model.train(was_training)
    return sums, kl_dims


@torch.no_grad()
def per_image_terms(
    model,
    images: torch.Tensor,
    *,
    batch_size: int = 1000,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
    seed: int = 0,
) -> dict:
    """:func:`evaluate`'s terms image by image, from the same posterior samples (the
    generator of ``seed``, drawn batch by batch: the same ``batch_size`` gives the
    same samples): ``{"recon", "kl", "neg_elbo"}``, each an (N,) float64 NumPy array
    in nats. Their means are ``evaluate``'s numbers (to float32 rounding); two
    models scored on the same images give paired differences
    (:func:`betavae_lib.metrics.paired_difference`)."""
    seed = _check_evaluation_args(model, images, batch_size, likelihood, sigma, seed)
    was_training = model.training
    model.eval()
    device, dtype = model_device(model), model.log_sigma.dtype
    recon, kl = [], []
    with seeded_noise(evaluation_seed(seed), device):
        for start in range(0, len(images), batch_size):
            x = as_float_images(images[start : start + batch_size].to(device)).to(dtype)
            out = model(x)
            recon.append(
                reconstruction_nll(
                    out.logits, x, likelihood, sigma, log_sigma=model.log_sigma
                )
            )
            kl.append(gaussian_kl(out.mu, out.logvar).sum(1))
    model.train(was_training)
    recon, kl = (torch.cat(t).double().cpu().numpy() for t in (recon, kl))
    return {"recon": recon, "kl": kl, "neg_elbo": recon + kl}

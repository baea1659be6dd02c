# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. The β trade-off on MNIST and Fashion-MNIST
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/betavae-book/betavae-book/blob/main/notebooks/03_beta_tradeoff.ipynb)
#
# **The question.** β is the one number that turns a VAE into a β-VAE. What does each value of β buy, and
# what does it cost? We sweep β ∈ {0.1, 0.5, 1, 2, 4, 10} on two datasets and measure, on the test set, the
# two terms of the objective, the quality of samples (FID), what reconstructions, samples and
# interpolations look like, and finally check the folk guideline "small β is sharp but chaotic, large β is
# blurry but structured" against the numbers.

# %%
# Setup: in Colab, install the book's library first (a no-op where it is
# already installed). BOOK_REPO is the book's home, as in _config.yml.
BOOK_REPO = "https://github.com/betavae-book/betavae-book"
try:
    import betavae_lib  # noqa: F401
except ImportError:
    # %pip install -q "betavae_lib @ git+{BOOK_REPO}"
    import betavae_lib  # noqa: F401

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from betavae_lib import (
    MLPVAE,
    evaluate,
    fit,
    load_dataset,
    plots,
    seed_everything,
    start_chapter,
    train_grid,
)

# BETAVAE_PROFILE=smoke|reduced|full scales every run in the book
profile, device = start_chapter(seed=0)

# %% [markdown]
# (beta-rate-distortion)=
# ## Two terms, one knob
#
# Name the two terms of the objective by what they measure (Alemi et al. 2018, "Fixing a broken ELBO"):
#
# $$
# \begin{aligned}
# D &= \mathbb E_{x}\,\mathbb E_{q(z\mid x)}\big[-\log p(x \mid z)\big]
#   && \text{(distortion: reconstruction, nats)}, \\
# R &= \mathbb E_{x}\,\mathrm{KL}\big(q(z\mid x)\,\|\,p(z)\big)
#   && \text{(rate: nats of information in } z\text{)}.
# \end{aligned}
# $$
#
# The negative ELBO is $D + R$; the β-VAE minimises $D + \beta R$. Every model sits at some point $(R, D)$,
# and the achievable points form a curve: to reconstruct better, the code must carry more information. At the
# optimum of $D + \beta R$ the curve's slope is $dD/dR = -\beta$, so **β picks the point on the rate–distortion
# curve**: small β buys low distortion with a high rate, large β the reverse. β = 1 is the only value whose
# objective is the (negative) ELBO, the one tied to $\log p(x)$.
#
# ## The sweep
#
# One `MLPVAE` (784-400-400-20) per β and per dataset, trained identically with the Bernoulli likelihood; the
# only difference is `beta=`. `train_grid` trains the six models of a dataset as one batched model (each exactly
# as `fit` would train it alone) and keeps them in the book's model cache, where chapter 5 finds them. For each
# model we measure on test images the distortion and rate (`evaluate`),
# and the FID between decoded prior samples and test images in the feature space of a small classifier trained
# on that dataset (`betavae_lib.fid`, `features="domain"`; lower is better; comparable within this book, not
# with published Inception FIDs).

# %%
from betavae_lib.fid import fid, get_extractor

betas = [0.1, 0.5, 1.0, 2.0, 4.0, 10.0]
datasets = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
epochs = profile.pick(smoke=1, reduced=3, full=30)
n_fid = profile.pick(smoke=500, reduced=5000, full=10000)
print(
    f"{len(betas)} β values × {len(datasets)} datasets, {epochs} epochs "
    "each, "
    f"{profile.train_size or 'all'} training images, FID on {n_fid} samples"
)

data, models, metrics, extractors = {}, {}, {}, {}
for key in datasets:
    train = load_dataset(key, "train").subset(profile.train_size)
    test_full = load_dataset(key, "test")
    test = test_full.subset(profile.test_size)
    data[key] = test
    extractors[key] = get_extractor("domain", dataset=key)
    fid_reference = test_full.subset(n_fid, seed=1).images
    trained, _ = train_grid(
        MLPVAE,
        dict(latent_dim=20),
        train.images,
        {beta: dict(beta=beta) for beta in betas},
        epochs=epochs,
        seed=0,
        device=device,
    )
    for beta, model in trained.items():
        ev = evaluate(model, test.images)
        samples = model.sample(
            n_fid, generator=torch.Generator().manual_seed(0)
        )
        fid_value = fid(
            fid_reference, samples, dataset=key, extractor=extractors[key]
        ).value
        models[key, beta] = model
        metrics[key, beta] = {
            "recon": ev["recon"],
            "kl": ev["kl"],
            "fid": fid_value,
        }
    print(f"{datasets[key]}: done")

# %% [markdown]
# (beta-tables)=
# ## The measured trade-off
#
# One table per dataset. The "best for" column is filled by the code from the numbers: the lowest
# reconstruction term is best for "reconstruction", the lowest FID for "samples", the lowest
# reconstruction + KL (the negative ELBO) for "likelihood (ELBO)".

# %%
def best_for(rows):
    """Label each β with the criteria on which it is best: {β: [labels]}."""
    criteria = {
        "reconstruction": lambda m: m["recon"],
        "samples": lambda m: m["fid"],
        "likelihood (ELBO)": lambda m: m["recon"] + m["kl"],
    }
    labels = {beta: [] for beta in rows}
    for label, value in criteria.items():
        labels[min(rows, key=lambda b: value(rows[b]))].append(label)
    return labels


for key, name in datasets.items():
    rows = {beta: metrics[key, beta] for beta in betas}
    best = best_for(rows)
    table = [
        f"**{name}** (test set, nats per image)",
        "",
        "| β | reconstruction (nats) | KL (nats) | FID (domain) | best for "
        "|",
        "|---|---|---|---|---|",
    ]
    for beta, m in rows.items():
        table.append(
            f"| {beta:g} | {m['recon']:.1f} | {m['kl']:.1f} | "
            f"{m['fid']:.2f} | {', '.join(best[beta]) or '—'} |"
        )
    display(Markdown("\n".join(table)))

# %% [markdown]
# Reading down a table, the reconstruction term rises and the KL falls with β, as the objective says it must.
# The FID column is the interesting one: it is *not* monotone in β in general, because samples fail in two
# different ways at the two ends, as the pictures below show.
#
# The "likelihood (ELBO)" label deserves a second look. β = 1 is the only setting that optimises the ELBO
# directly, so at the optimum it should hold that label. In the run stored here, 30 epochs on all the training
# images, it does not: β = 0.5 has the lower test −ELBO on both datasets, by about half a nat on MNIST and a
# third of a nat on Fashion-MNIST. Two explanations fit, and this run does not separate them. Training has not
# converged (chapter 1 prints how much its β = 1 model still gained over its last epochs). And the path
# matters: a smaller β charges less for information early on, so more latents switch on while the decoder is
# still learning to use them, and the model can end in a better optimum of the ELBO than the one β = 1 finds
# by itself; that is the idea behind KL warm-up in chapter 4.
#
# How do these numbers compare with other people's? We know of no public run of this sweep that reports
# test-set terms; for β = 1, chapter 1 compares the same model and recipe with the closest public runs.
#
# The rate–distortion plot puts each model at its $(R, D)$. The grey lines are lines of equal $D + R$ (equal
# negative ELBO): the model closest to the lower-left is the best density model, and the others trade one term
# for the other.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, (key, name) in zip(axes, datasets.items()):
    rate = np.array([metrics[key, b]["kl"] for b in betas])
    dist = np.array([metrics[key, b]["recon"] for b in betas])
    ax.plot(rate, dist, "o-", color="tab:blue")
    for b, r, d in zip(betas, rate, dist):
        ax.annotate(
            f"β={b:g}",
            (r, d),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=9,
        )
    lo, hi = (rate + dist).min(), (rate + dist).max()
    for level in np.linspace(lo, hi, 4):
        r = np.linspace(0, rate.max() * 1.1, 2)
        ax.plot(r, level - r, color="0.8", lw=0.8, zorder=0)
    ax.set_ylim(
        dist.min() - 0.1 * np.ptp(dist) - 1,
        dist.max() + 0.1 * np.ptp(dist) + 1,
    )
    ax.set(
        xlabel="rate R = KL(q(z|x) ‖ p(z)) [nats]",
        ylabel="distortion D = −log p(x|z) [nats]",
        title=f"{name}: rate–distortion, one point per β",
    )
fig.tight_layout();

# %% [markdown]
# (beta-pictures)=
# ## What each β looks like
#
# For each dataset: eight test images and their reconstructions by each model (left; top row the originals),
# and eight samples $z \sim \mathcal N(0, I)$ decoded by each model (right). Look for two failure modes: at small
# β, crisp reconstructions but samples with broken strokes, because the codes spread away from the prior and
# prior draws land in regions no training image was encoded to; at large β, samples and reconstructions that
# are smooth class averages, because the code carries too little information to say more.

# %%
for key, name in datasets.items():
    x = data[key].images[:8]
    recon = torch.cat([x] + [models[key, b].reconstruct(x) for b in betas])
    samples = torch.cat(
        [
            models[key, b].sample(
                8, generator=torch.Generator().manual_seed(3)
            )
            for b in betas
        ]
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    plots.image_grid(
        recon,
        nrow=8,
        ax=axes[0],
        row_labels=["test"] + [f"β={b:g}" for b in betas],
        title=f"{name}: reconstructions",
    )
    plots.image_grid(
        samples,
        nrow=8,
        ax=axes[1],
        row_labels=[f"β={b:g}" for b in betas],
        title=f"{name}: samples z ~ N(0, I)",
    )
    fig.tight_layout()

# %% [markdown]
# (beta-sampling-std)=
# ## Sampling closer to the mean
#
# Samples need not come from the prior itself. Decoding $z \sim \mathcal N(0, \sigma^2 I)$ with σ < 1 stays near the
# centre of the latent space, where the codes are densest: samples get cleaner and more alike (the same idea as
# the "truncation trick" of GANs and the "temperature" of language models). We measure diversity two ways for the
# β = 1 model on each dataset: the mean pairwise RMS distance between 500 samples in pixel space, and the spread
# of their classifier features (the square root of the trace of the feature covariance), alongside the FID.

# %%
def pixel_spread(images):
    """Mean pairwise RMS pixel distance between images (N, 1, H, W)."""
    return (
        (torch.pdist(images.flatten(1)).pow(2).mean() / images[0].numel())
        .sqrt()
        .item()
    )


def feature_spread(images, extractor):
    """sqrt(trace of the covariance) of the classifier features.

    images: (N, 1, H, W).
    """
    return float(np.sqrt(np.trace(np.cov(extractor(images), rowvar=False))))


stds = [0.1, 0.5, 1.0]
n_div = min(500, n_fid)
rows = [
    "| dataset | σ | pixel spread (RMS) | feature spread | FID (domain) |",
    "|---|---|---|---|---|",
]
std_samples = {}
for key, name in datasets.items():
    model, ext = models[key, 1.0], extractors[key]
    reference = load_dataset(key, "test").subset(n_fid, seed=1).images
    for std in stds + ["test"]:
        imgs = (
            reference[:n_div]
            if std == "test"
            else model.sample(
                n_fid, std=std, generator=torch.Generator().manual_seed(4)
            )
        )
        if std == "test":
            value = "—"
        else:
            result = fid(reference, imgs, dataset=key, extractor=ext)
            value = f"{result.value:.2f}"
        label = "*test images*" if std == "test" else f"{std:g}"
        rows.append(
            f"| {name} | {label} | {pixel_spread(imgs[:n_div]):.3f} | "
            f"{feature_spread(imgs[:n_div], ext):.2f} | {value} |"
        )
        if key == "mnist" and std != "test":
            std_samples[std] = imgs[:24]
display(Markdown("\n".join(rows)))

fig, axes = plt.subplots(1, 3, figsize=(12, 2.9))
for ax, (std, imgs) in zip(axes, std_samples.items()):
    plots.image_grid(
        imgs, nrow=8, ax=ax, title=f"MNIST, β = 1: z ~ N(0, {std:g}²I)"
    )
fig.tight_layout();

# %% [markdown]
# Both diversity measures fall as σ shrinks; at σ = 0.1 every sample is nearly the same "average digit". The FID
# penalises the loss of diversity as well as bad images, so it is usually best near σ = 1 or a little below, not
# at the smallest σ; the table says where it is for these models.
#
# (beta-interpolation)=
# ## Interpolating between two images
#
# Encode two test images, walk in a straight line between their posterior means, and decode each point. A latent
# space that is "organised" gives a smooth morph with plausible images all the way; a disorganised one passes
# through images that are neither.

# %%
labels = data["mnist"].labels
start, end = [
    int((labels == digit).nonzero()[0]) for digit in (2, 6)
]  # the first test 2 and 6
x_a, x_b = (
    data["mnist"].images[start : start + 1],
    data["mnist"].images[end : end + 1],
)
steps = torch.linspace(0, 1, 10).unsqueeze(1)
rows_img = []
for b in betas:
    model = models["mnist", b]
    with torch.no_grad():
        mu_a, _ = model.encode(x_a)
        mu_b, _ = model.encode(x_b)
        rows_img.append(
            torch.sigmoid(model.decode((1 - steps) * mu_a + steps * mu_b))
        )
plots.image_grid(
    torch.cat(rows_img),
    nrow=10,
    row_labels=[f"β={b:g}" for b in betas],
    title="MNIST: interpolating between the posterior means of a 2 and a 6",
);

# %% [markdown]
# Small-β paths stay sharp but can pass through broken intermediate shapes; large-β paths are smooth but blurry,
# and at β = 10 the two ends themselves are already blurred versions of the inputs.
#
# (beta-explorer)=
# ## Moving through the latent space yourself
#
# An interpolation is one straight line through a 20-dimensional space; the explorer below lets you go anywhere in
# it. It holds three of the MNIST models (β = 0.1, 1 and 10; the menu switches between them), each starting from its
# code for the same test 2. There is one slider per latent, ordered by the KL that latent carries on the test set
# (printed beside it, in nats); latents below 0.05 nats are switched off and folded away at the bottom. The pad drives
# the two highest-KL latents at once. The decoder runs in this page, from each model's own weights, so the image
# follows the sliders here in the book as well as in Jupyter or Colab.
#
# What to look for:
#
# - **How many sliders are alive.** At β = 0.1 nearly every latent carries information; at β = 10 most are folded
#   away, because each nat of rate costs ten times as much.
# - **How much one slider does.** At β = 0.1 a single latent usually changes the digit a little, in a way that is
#   hard to name; at β = 10 each remaining latent moves the image a lot (thickness, slant, or one digit turning into
#   another), since a few latents must carry all the information there is.
# - **Where the prior is.** Press "random z ~ N(0, I)" a few times for each model: these are exactly the model's
#   samples. At β = 0.1 many look broken, at β = 10 they are blurry but plausible, as in the sample grids above.

# %%
from betavae_lib.traversal import live_explorer

explored = {f"β = {b:g}": models["mnist", b] for b in (0.1, 1.0, 10.0)}
live_explorer(
    explored,
    z0={name: m.encode(x_a)[0][0] for name, m in explored.items()},
    images=data["mnist"].images,
    title="MNIST, one 20-latent MLP per β",
)

# %% [markdown]
# (beta-animation)=
# ## Watching a latent space organise
#
# With two latent dimensions we can watch the encoder arrange the data during training. `fit` calls a
# `callback(epoch, model, history)` after every epoch; ours draws the test posterior means, coloured by digit, and
# keeps the picture as a frame. `plots.animate` turns the frames into an animation that plays in the page.

# %%
n_anim = profile.pick(smoke=2000, reduced=5000, full=20000)
anim_epochs = profile.pick(smoke=2, reduced=8, full=12)
anim_train = load_dataset("mnist", "train").subset(n_anim)
anim_test = data["mnist"].subset(1000)
frames, titles = [], []


def draw_frame(epoch, model, history):
    with torch.no_grad():
        mu, _ = model.encode(anim_test.images.to(model.log_sigma.device))
    fig, ax = plt.subplots(figsize=(3.2, 3.2), dpi=60)
    ax.scatter(
        *mu.cpu().T,
        c=anim_test.labels,
        cmap="tab10",
        s=3,
        vmin=-0.5,
        vmax=9.5,
    )
    ax.set(
        xlim=(-4, 4),
        ylim=(-4, 4),
        xticks=[-4, 0, 4],
        yticks=[-4, 0, 4],
        xlabel="$z_1$",
        ylabel="$z_2$",
    )
    fig.tight_layout()
    frames.append(plots.figure_to_array(fig))
    titles.append(f"epoch {epoch}")
    plt.close(fig)


seed_everything(0)
model_2d = MLPVAE(latent_dim=2)
draw_frame(0, model_2d, None)
fit(
    model_2d,
    anim_train.images,
    epochs=anim_epochs,
    beta=1.0,
    device=device,
    seed=0,
    progress=False,
    callback=draw_frame,
)
plots.animate(frames, titles, interval=500, figsize=(3.6, 3.6))

# %% [markdown]
# At epoch 0 the untrained encoder maps every image to nearly the same point. Early in training the codes move
# off the origin, at first along a narrow curve (one direction does most of the work); over the following epochs
# they fill out the prior's disc and the digits separate into regions (colours), with visually similar digits
# (4 and 9; 3, 5 and 8) sharing borders, the same map as in chapter 1.
#
# (beta-guideline)=
# ## Checking the β guideline
#
# A common rule of thumb, repeated in many tutorials: **β < 1 gives sharp reconstructions but chaotic samples;
# β ≫ 1 gives blurry reconstructions but a structured latent space and more "typical" samples.** Each part of it
# is a claim we can test with the numbers above. The table states each claim as a comparison with β = 1 and
# prints whether it holds on each dataset.

# %%
def holds(key, claim):
    m = {b: metrics[key, b] for b in betas}
    return "yes" if claim(key, m) else "**no**"


diversity_samples = {
    (key, b): models[key, b].sample(
        n_div, generator=torch.Generator().manual_seed(5)
    )
    for key in datasets
    for b in betas
}
samples_spread = {
    kb: pixel_spread(imgs) for kb, imgs in diversity_samples.items()
}
features_spread = {
    (key, b): feature_spread(imgs, extractors[key])
    for (key, b), imgs in diversity_samples.items()
}
claims = [
    (
        "β < 1 reconstructs better than β = 1",
        lambda key, m: (
            m[0.1]["recon"] < m[1.0]["recon"]
            and m[0.5]["recon"] < m[1.0]["recon"]
        ),
    ),
    (
        "β < 1 samples are worse (higher FID) than β = 1",
        lambda key, m: min(m[0.1]["fid"], m[0.5]["fid"]) > m[1.0]["fid"],
    ),
    (
        "β ≫ 1 reconstructs worse than β = 1",
        lambda key, m: (
            m[4.0]["recon"] > m[1.0]["recon"]
            and m[10.0]["recon"] > m[1.0]["recon"]
        ),
    ),
    (
        "β ≫ 1 samples are better (lower FID) than β = 1",
        lambda key, m: min(m[4.0]["fid"], m[10.0]["fid"]) < m[1.0]["fid"],
    ),
    (
        "β ≫ 1 samples are less diverse (pixel spread) than β = 1",
        lambda key, m: samples_spread[key, 10.0] < samples_spread[key, 1.0],
    ),
    (
        "β ≫ 1 samples are less diverse (feature spread) than β = 1",
        lambda key, m: (
            features_spread[key, 10.0] < features_spread[key, 1.0]
        ),
    ),
    (
        "the best FID is at some β > 1",
        lambda key, m: min(betas, key=lambda b: m[b]["fid"]) > 1,
    ),
]
rows = [
    "| claim | " + " | ".join(datasets.values()) + " |",
    "|---|" + "---|" * len(datasets),
]
for text, claim in claims:
    rows.append(
        f"| {text} | "
        + " | ".join(holds(key, claim) for key in datasets)
        + " |"
    )
display(Markdown("\n".join(rows)))
for key, name in datasets.items():
    fids = {b: metrics[key, b]["fid"] for b in betas}
    print(
        f"{name}: best FID at β = {min(fids, key=fids.get):g}\n  sample "
        "pixel spread by β:   "
        + ", ".join(f"{b:g}: {samples_spread[key, b]:.3f}" for b in betas)
        + "\n  sample feature spread by β: "
        + ", ".join(f"{b:g}: {features_spread[key, b]:.1f}" for b in betas)
    )

# %% [markdown]
# The first and third rows are not really empirical: they follow from the objective (a heavier price on the rate
# can only move a model up the distortion axis), and the sweep confirms them. The sample-quality rows are where
# the guideline is a tendency, not a law.
#
# * A very small β does hurt samples, for the reason the pictures showed: an encoder that is barely charged for its
#   rate spreads the codes away from $\mathcal N(0, I)$, so the prior is a poor description of where the codes are.
#   In the recorded run β = 0.1 has by far the worst FID but one on both datasets. A moderately small β need not:
#   on Fashion-MNIST β = 0.5 has the best FID of the sweep, which is why that row reads **no** there.
# * "Large β gives better samples" holds only up to a point, if at all. FID, which rewards diversity as well as
#   fidelity, is worse at β = 4 than at β = 1 on both datasets and far worse at β = 10, where samples are blurred
#   prototypes. The best β for samples is near 1 on both datasets (the printed line names it): a little above on
#   MNIST, a little below on Fashion-MNIST.
# * "Less diverse" is not universal either. In the recorded run, on MNIST both diversity measures are highest at
#   β = 0.5 to 1 and fall on either side, most at β = 10; on Fashion-MNIST they barely move from β = 0.5 to
#   β = 10 (the feature spread is even highest at β = 4). Blurred garments still vary in silhouette and
#   brightness, which is most of what varies in clothing images, while the β = 0.1 clothing samples are the least
#   varied of all. A single dial from "chaotic" to "structured" is too simple a picture of β.
#
# When a row reads **no**, the guideline over-promises on these data. Under the smoke profile the models are
# barely trained and the rows are noise; read the recorded run.
#
# What the guideline leaves out: "structured" is not measured by any of these numbers. Whether large β gives
# *disentangled* factors needs data with known factors and a metric for it, which is the subject of the
# disentanglement chapters.
#
# ## What to try
#
# - Add β = 0.02 and β = 50 to `betas`: where do they land on the rate–distortion plot, and what do their samples
#   look like?
# - Repeat the sweep with `likelihood="gaussian", sigma=0.1`; by the argument of chapter 2 it should behave like a
#   Bernoulli sweep at a much smaller β.
# - Fit a Gaussian to the posterior means of the β = 0.1 model and sample from it instead of $\mathcal N(0, I)$:
#   how much of the FID gap to β = 1 does that close?
# - Give the explorer the Fashion-MNIST models (`models["fashion_mnist", b]`, with a test garment as `z0`): which
#   latents stay alive at β = 10 there, and what do they change?
#
# Chapter 4 looks at the far end of the β axis: what happens when the KL term wins completely.

# %%
from betavae_lib.report import headline

best = {
    key: min(betas, key=lambda b: metrics[key, b]["fid"])
    for key in datasets
}
headline(
    **{
        f"{key}_beta{b:g}_{k}": metrics[key, b][k]
        for key in datasets
        for b in (0.1, 1.0, 10.0)
        for k in ("recon", "kl", "fid")
    },
    mnist_best_fid_beta=best["mnist"],
    fashion_mnist_best_fid_beta=best["fashion_mnist"],
);

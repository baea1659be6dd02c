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
# # 4. Posterior collapse and its cures
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/betavae-book/betavae-book/blob/main/notebooks/04_posterior_collapse.ipynb)
#
# **The question.** Sometimes a VAE's code goes quiet: some latent dimensions, or all of them, carry no
# information about the input, the KL term sits near zero, and the decoder produces the same few images
# whatever $z$ it is given. Why does that happen, how do you see it, and which of the published cures
# (KL annealing, cyclical annealing, free bits, a capacity target) actually bring the code back?

# %%
# Setup: in Colab, install the book's library first (a no-op where it is
# already installed). BOOK_REPO is the book's home, as in _config.yml.
BOOK_REPO = "https://github.com/betavae-book/betavae-book"
try:
    import betavae_lib  # noqa: F401
except ImportError:
    # %pip install -q "betavae_lib @ git+{BOOK_REPO}"
    import betavae_lib  # noqa: F401

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from betavae_lib import (
    MLPVAE,
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
# (collapse-what)=
# ## What collapse is, and how to see it
#
# The rate is a sum over latent dimensions, $R = \sum_d R_d$ with
# $R_d = \mathbb E_x\,\mathrm{KL}\big(q(z_d \mid x)\,\|\,\mathcal N(0, 1)\big)$. A dimension whose posterior is the
# prior for every input, $q(z_d\mid x) = \mathcal N(0, 1)$, costs nothing ($R_d = 0$) and tells the decoder nothing:
# it is pure noise, and the decoder learns to ignore it. That dimension has **collapsed**. When every dimension
# does it, $R \approx 0$, the code is independent of the input, and the decoder can only output its best guess for
# *all* images at once.
#
# Why would training choose that? Every nat in $z_d$ costs β nats of objective, so a dimension survives only if it
# saves more than that in reconstruction. Three situations tip the balance:
#
# * **β is large**: the price of information exceeds what most dimensions can earn back.
# * **There are more dimensions than the data needs**: the surplus ones earn nothing, and switching them off is
#   the optimum (this is the VAE's built-in pruning, not a bug).
# * **The decoder is strong enough to model $x$ without $z$** (an autoregressive PixelCNN or LSTM decoder, Bowman
#   et al. 2016; Chen et al. 2017): then even β = 1 can end with $R = 0$. Early in training the decoder cannot
#   yet use $z$, the KL term pulls $q$ to the prior, and by the time the decoder could listen there is nothing to
#   hear. The MLP decoders of this book output independent pixels given $z$, so they cannot do this; the cures
#   below were designed for it, which is worth remembering when reading their results here.
#
# Two diagnostics, both cheap:
#
# * **KL per dimension**, $R_d$ on test data (`history.test_kl_per_dim`, or `evaluate(...)["kl_per_dim"]`), drawn with
#   `plots.plot_kl_per_dim`.
# * **Active units** (Burda et al. 2016): dimension $d$ is active if its posterior mean moves with the input,
#   $\operatorname{Var}_x\big(\mathbb E_{q}[z_d \mid x]\big) > 0.01$ (`betavae_lib.metrics.active_units`).
#
# (collapse-provoke)=
# ## Provoking it
#
# Four runs that differ in one setting each: the chapter-1 model (β = 1, 20 latents) as the reference, a large β
# (8), a very large β (30), and the reference with 64 latents instead of 20.

# %%
from betavae_lib.metrics import active_units, kl_summary

train = load_dataset("mnist", "train").subset(profile.train_size)
test = load_dataset("mnist", "test").subset(profile.test_size)
epochs = profile.pick(smoke=1, reduced=4, full=30)
steps = epochs * math.ceil(
    len(train.images) / 128
)  # optimiser steps per run (batch size 128)


def train_and_diagnose(runs):
    """Train one MLPVAE per entry of runs; return, per name, the model, its
    history and its diagnostics.

    runs: name -> fit's options (or latent_dim=).
    """
    models, histories = train_grid(
        MLPVAE,
        dict(latent_dim=20),
        train.images,
        runs,
        epochs=epochs,
        seed=0,
        test_images=test.images,
        device=device,
    )
    diagnosed = {}
    for name, model in models.items():
        with torch.no_grad():
            mu, _ = model.encode(test.images)
        diagnosed[name] = {
            "model": model,
            "history": histories[name],
            "active": active_units(mu),
            "kl": kl_summary(histories[name].test_kl_per_dim[-1]),
        }
    return diagnosed


provoke = {
    "β = 1, 20 latents": dict(beta=1.0),
    "β = 8, 20 latents": dict(beta=8.0),
    "β = 30, 20 latents": dict(beta=30.0),
    "β = 1, 64 latents": dict(beta=1.0, latent_dim=64),
}
runs = train_and_diagnose(
    provoke
)  # the 20-latent runs train as one batched model


def diagnosis_row(name, run):
    h, kl = run["history"], run["kl"]
    top = min(5, len(kl.per_dim))
    return (
        f"| {name} | {run['active'].count} / {len(kl.per_dim)} | "
        f"{int((kl.per_dim > 0.1).sum())} | "
        f"{h.test_kl[-1]:.2f} | {100 * kl.cumulative_share[top - 1]:.0f}% "
        f"| {h.test_recon[-1]:.1f} |"
    )


rows = [
    "| run | active units | latents with KL > 0.1 nats | KL (nats) | KL "
    "share of the top 5 latents | "
    "reconstruction (nats) |",
    "|---|---|---|---|---|---|",
]
display(
    Markdown(
        "\n".join(
            rows + [diagnosis_row(name, run) for name, run in runs.items()]
        )
    )
)

# %% [markdown]
# The KL per dimension shows where the information goes (test set; the red line marks 0.1 nats):

# %%
fig, axes = plt.subplots(
    2, 2, figsize=(12, 6), gridspec_kw={"width_ratios": [1, 1]}
)
for ax, (name, run) in zip(axes.ravel(), runs.items()):
    plots.plot_kl_per_dim(
        run["kl"].per_dim,
        ax=ax,
        threshold=0.1,
        title=f"{name}: {run['active'].count} active units",
    )
    if len(run["kl"].per_dim) > 20:
        ax.set_xticks(np.arange(0, len(run["kl"].per_dim), 8))
fig.suptitle("KL per latent dimension on test images")
fig.tight_layout();

# %% [markdown]
# And the samples, one row per run:

# %%
gen_seed = 3
samples = torch.cat(
    [
        run["model"].sample(
            12, generator=torch.Generator().manual_seed(gen_seed)
        )
        for run in runs.values()
    ]
)
plots.image_grid(
    samples, nrow=12, row_labels=list(runs), title="Samples z ~ N(0, I)"
);

# %% [markdown]
# What the three views say together:
#
# * **β = 30** is total collapse: the KL is near zero, no dimension is active, and every sample is the same blurred
#   "average digit". This is the *KL ≈ 0* symptom: the decoder has learned $p(x)$ as well as it can without any
#   information about which digit it is drawing.
# * **β = 8** is partial collapse: most dimensions sit at or near zero KL, a few carry what is left, and samples
#   are blurry prototypes of a few digit shapes. The two diagnostics agree here, but they need not: a posterior
#   mean that wobbles a little across inputs passes the 0.01-variance test while carrying a hundredth of a nat
#   (the capacity run below has many more active units than latents above 0.1 nats). Read them together.
# * **64 latents** do not make a bigger code. In the recorded run about as many latents carry information as in
#   the 20-latent model (the table's third column), the surplus switch off, and the total rate and the
#   reconstruction are within a fraction of a nat of the 20-latent model's: the extra dimensions buy nothing,
#   and the VAE prunes them, as the second situation above predicts.
#
# (collapse-cures)=
# ## The cures
#
# Each cure is one option of the same training call (`fit`) and loss (`beta_vae_loss`):
#
# | cure | reference | what it does | `fit` option |
# |---|---|---|---|
# | KL warm-up | Bowman et al. 2016 | β rises linearly from 0 to its target over the first $T$ steps, so the encoder can start to use $z$ before the KL price is charged | `beta=Linear(β, T)` |
# | cyclical annealing | Fu et al. 2019 | the warm-up is repeated $M$ times; each restart at β = 0 lets the encoder re-learn informative codes for a decoder that has already learned to read them | `beta=Cyclical(β, total_steps, n_cycles=4, ratio=0.5)` |
# | free bits | Kingma et al. 2016 | each dimension's batch-mean KL is counted as at least λ nats, $\sum_d \max(\lambda, R_d)$: below λ a dimension's information is free, so nothing pushes it to zero | `free_bits=λ` |
# | capacity | Burgess et al. 2018 | minimise $D + \gamma\,\lvert R - C\rvert$ with a target rate $C$ that grows linearly to $C_{\max}$: the rate is pinned to the target instead of priced | `capacity=Linear(C_max, T), gamma=γ` |
#
# We apply each to the partially collapsed β = 8 model. Warm-up and the capacity ramp use the first half of
# training ($T$ = half the steps); free bits use λ = 0.5 nats per dimension; the capacity target ends at 15 nats,
# about the rate of the β = 1 model, with γ = 10 (Burgess et al. use γ = 1000 with far longer training; a large γ
# slows the reconstruction term's learning in short runs).

# %%
from betavae_lib.schedules import Cyclical, Linear

cures = {
    "constant β = 8": dict(beta=8.0),
    "warm-up to β = 8": dict(beta=Linear(8.0, steps // 2)),
    "cyclical, β = 8": dict(
        beta=Cyclical(8.0, steps, n_cycles=4, ratio=0.5)
    ),
    "free bits λ = 0.5, β = 8": dict(beta=8.0, free_bits=0.5),
    "capacity C → 15, γ = 10": dict(
        capacity=Linear(15.0, steps // 2), gamma=10.0
    ),
}
cured = {"constant β = 8": runs["β = 8, 20 latents"]}
cured.update(
    train_and_diagnose(
        {
            name: options
            for name, options in cures.items()
            if name not in cured
        }
    )
)
reference = runs["β = 1, 20 latents"]


def cure_row(name, run):
    h = run["history"]
    return (
        f"| {name} | {run['active'].count} / 20 | "
        f"{int((run['kl'].per_dim > 0.1).sum())} | {h.test_kl[-1]:.2f} | "
        f"{h.test_recon[-1]:.1f} | {h.test_recon[-1] + h.test_kl[-1]:.1f} |"
    )


rows = [
    "| training | active units | latents with KL > 0.1 nats | KL (nats) | "
    "reconstruction (nats) | −ELBO (nats) |",
    "|---|---|---|---|---|---|",
]
rows += [cure_row(name, run) for name, run in cured.items()]
rows.append(cure_row("*reference: β = 1*", reference))
display(Markdown("\n".join(rows)))

# %% [markdown]
# The figure puts the runs side by side. Left: each run's KL per dimension, sorted from largest to smallest (a
# collapsed code is a curve that drops to zero after a few dimensions). Right: each run's test rate and distortion,
# as in chapter 3; lines of equal −ELBO are grey.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for name, run in cured.items():
    axes[0].plot(np.arange(1, 21), run["kl"].sorted, "o-", ms=3, label=name)
    axes[1].plot(
        run["history"].test_kl[-1],
        run["history"].test_recon[-1],
        "o",
        ms=8,
        label=name,
    )
axes[0].plot(
    np.arange(1, 21),
    reference["kl"].sorted,
    "k--",
    lw=1,
    label="reference: β = 1",
)
axes[1].plot(
    reference["history"].test_kl[-1],
    reference["history"].test_recon[-1],
    "k*",
    ms=10,
    label="reference: β = 1",
)
axes[0].set(
    xlabel="latent dimensions, sorted by KL",
    ylabel="KL on test images [nats]",
    title="KL per dimension (sorted)",
    xticks=[1, 5, 10, 15, 20],
)
axes[0].set_ylim(0, None)
axes[0].legend(fontsize=8)
points = [
    (r["history"].test_kl[-1], r["history"].test_recon[-1])
    for r in [*cured.values(), reference]
]
total = [k + d for k, d in points]
for level in np.linspace(min(total), max(total), 4):
    r = np.linspace(0, max(k for k, _ in points) * 1.1, 2)
    axes[1].plot(r, level - r, color="0.85", lw=0.8, zorder=0)
axes[1].set_ylim(
    min(d for _, d in points) - 10, max(d for _, d in points) + 10
)
axes[1].set(
    xlabel="rate: KL [nats]",
    ylabel="distortion: reconstruction [nats]",
    title="Where each cure ends up",
)
fig.suptitle("Cures for the partially collapsed β = 8 model")
fig.tight_layout();

# %%
samples = torch.cat(
    [
        run["model"].sample(
            12, generator=torch.Generator().manual_seed(gen_seed)
        )
        for run in cured.values()
    ]
)
plots.image_grid(
    samples,
    nrow=12,
    row_labels=list(cured),
    title="Samples z ~ N(0, I) after each cure",
);

# %% [markdown]
# How to read the result, which the table quantifies:
#
# * **Warm-up and cyclical annealing** change the *path* of training, not the objective it converges to. Here the
#   collapse is caused by the objective itself (β = 8 really does price most dimensions out), so the annealed runs
#   end far nearer the constant-β run than the β = 1 reference: a little more KL and a somewhat better
#   reconstruction, with most dimensions still collapsed. These schedules earn their reputation with strong
#   decoders, where collapse is an optimisation accident that a better path avoids.
# * **Free bits** change the objective: the first λ nats of every dimension are free, so dimensions stop being pushed
#   to zero. In the recorded run every latent is active, the rate doubles and the reconstruction improves by about
#   20 nats, yet the samples are not clearly better: several are blotchy strokes. The catch is visible in the
#   sorted-KL panel: the dimensions sit near λ, because that is exactly what is free (20 × 0.5 = 10 nats, about
#   the run's whole rate); such a floor keeps dimensions "alive" that carry little useful structure.
# * **Capacity** sets the rate directly: the KL ends near the target $C_{\max}$, whatever β would have chosen. It
#   gives control over *how much* information the code carries, not over how useful that information is: in chapter
#   3's recorded sweep, the β = 2 model has a slightly smaller rate (13.6 nats) and a better reconstruction (91.1
#   nats) than this run's.
#
# The practical rule: if collapse comes from the objective (β too large for the data), lower β, or use free bits or a
# capacity target to buy back the rate you want; if it comes from the optimisation (a strong decoder, KL ≈ 0 from
# the first epochs), anneal. Under the smoke profile the runs are a fraction of an epoch and these differences are
# noise; the recorded run is the one to read.
#
# (collapse-nan)=
# ## A different failure: the loss becomes NaN
#
# Collapse is quiet; divergence is loud. A learning rate that is far too large sends the encoder's log-variance or
# the decoder's logits to infinity within a few steps. `fit` checks every step's loss and stops with a
# `NonFiniteLossError` that names the step, instead of training on NaN:

# %%
from betavae_lib.train import NonFiniteLossError

few = train.images[:512]
seed_everything(0)  # the initial weights; fit seeds its own noise
try:
    fit(
        MLPVAE(latent_dim=20),
        few,
        epochs=1,
        lr=1.0,
        device=device,
        progress=False,
    )
    print("lr = 1.0: the loss stayed finite in this run")
except NonFiniteLossError as error:
    print("lr = 1.0:", error)
history_ok = fit(
    MLPVAE(latent_dim=20),
    few,
    epochs=1,
    lr=1e-3,
    device=device,
    progress=False,
)
print(f"lr = 1e-3: finite loss {history_ok.train_loss[-1]:.1f} nats")

# %% [markdown]
# The other common causes are inputs outside [0, 1] (which `fit` rejects with a message before training) and a
# learned Gaussian σ shrinking towards zero on data it can fit almost exactly ({ref}`elbo-likelihoods` in chapter 2).
# {doc}`../book/troubleshooting` collects these symptoms and their cures.
#
# ## What to try
#
# - Push β to 4 and to 16 and watch how many dimensions survive: is the drop gradual or sudden?
# - Combine cures: warm-up *and* free bits; cyclical annealing with a smaller λ.
# - Train the 64-latent model for the full profile and count how many dimensions end with KL below 0.01 nats.
# - Sweep λ for free bits (0.1, 0.25, 1) and plot the rate and reconstruction of each: where does free bits stop
#   helping reconstruction and start paying for useless rate?

# %%
from betavae_lib.report import headline

headline(
    **{
        f"active_units_{key}": run["active"].count
        for key, run in zip(
            ["beta1", "beta8", "beta30", "latent64"], runs.values()
        )
    },
    kl_beta30=runs["β = 30, 20 latents"]["history"].test_kl[-1],
    **{
        f"kl_{key}": run["history"].test_kl[-1]
        for key, run in zip(
            ["constant", "warmup", "cyclical", "free_bits", "capacity"],
            cured.values(),
        )
    },
    **{
        f"recon_{key}": run["history"].test_recon[-1]
        for key, run in zip(
            ["constant", "warmup", "cyclical", "free_bits", "capacity"],
            cured.values(),
        )
    },
);

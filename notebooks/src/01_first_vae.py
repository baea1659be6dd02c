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
# # 1. A first VAE on MNIST
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/betavae-book/betavae-book/blob/main/notebooks/01_first_vae.ipynb)
#
# **The question.** Can a network squeeze a 28×28 handwritten digit through 20 numbers, rebuild it, and
# then *invent* new digits from random numbers? A variational autoencoder (VAE) does both with one
# objective. This chapter trains one end to end, looks at what it learned, and sets up the tools every
# later chapter uses.
#
# The code you see is the code that matters for the idea; everything else comes from the book's library,
# `betavae_lib`, which you can read alongside.

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
import torch

from betavae_lib import (
    MLPVAE,
    fit,
    load_dataset,
    plots,
    seed_everything,
    start_chapter,
)
from betavae_lib.losses import beta_vae_loss

# BETAVAE_PROFILE=smoke|reduced|full scales every run in the book
profile, device = start_chapter(seed=0)

# %% [markdown]
# ## The data
#
# MNIST: 60,000 training and 10,000 test images of digits, each pixel a grey level in [0, 1].
# `load_dataset` reads the original files (checked against their published checksums) from
# `$BETAVAE_DATA_DIR`, or downloads them once. The run profile decides how many images we use.

# %%
train = load_dataset("mnist", "train").subset(profile.train_size)
test = load_dataset("mnist", "test").subset(profile.test_size)
print(
    f"train {tuple(train.images.shape)}, test {tuple(test.images.shape)}, "
    f"pixel range [{train.images.min():.0f}, {train.images.max():.0f}]"
)
plots.image_grid(test.images[:32], nrow=16, title="MNIST test images");

# %% [markdown]
# ## The model in one paragraph
#
# The **encoder** maps an image $x$ to a Gaussian over a latent code, $q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x))$.
# The **decoder** maps a code $z$ to the 784 pixel probabilities of a Bernoulli, $p_\theta(x\mid z)$.
# The prior is $p(z) = \mathcal N(0, I)$. Training maximises the evidence lower bound (ELBO),
# or equivalently minimises
#
# $$
# \mathcal L(x) = \underbrace{-\,\mathbb E_{q_\phi(z\mid x)}\big[\log p_\theta(x\mid z)\big]}_{\text{reconstruction}}
#   \;+\; \beta\,\underbrace{\mathrm{KL}\big(q_\phi(z\mid x)\,\|\,p(z)\big)}_{\text{rate}}
# $$
#
# with $\beta = 1$ for the plain VAE.
# Chapter 2 derives this; here we use it. **Convention used throughout the book:** both terms are in
# nats, *summed* over the 784 pixels and over the latent dimensions, then *averaged* over the batch; β
# multiplies that summed KL. Numbers in other sources are often per pixel or per batch: multiply or divide
# before you compare.
#
# The model is the classic 784-400-400-20 multilayer perceptron:

# %%
model = MLPVAE(latent_dim=20)
print(model)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# One forward pass returns the decoder's logits, the posterior parameters and a sample $z$; the loss
# turns them into the two terms. Before training, the reconstruction term is about $784 \log 2 \approx 543$
# nats (every pixel a coin flip) and the KL is near zero:

# %%
x = test.images[:128]
out = model(x)
terms = beta_vae_loss(x, out.logits, out.mu, out.logvar, beta=1.0)
print(
    f"reconstruction {terms.recon.item():.1f} nats, "
    f"KL {terms.kl.item():.2f} nats, "
    f"loss {terms.total.item():.1f} nats per image"
)

# %% [markdown]
# ## Training
#
# `fit` is the book's one training loop: Adam, the whole dataset on the device, batches drawn by index,
# a progress bar, and a history of both terms on the training and test data after every epoch.

# %%
epochs = profile.pick(smoke=2, reduced=10, full=30)
history = fit(
    model,
    train.images,
    test_images=test.images,
    epochs=epochs,
    batch_size=128,
    beta=1.0,
    lr=1e-3,
    device=device,
    seed=0,
)
neg_elbo = history.test_recon[-1] + history.test_kl[-1]
print(
    f"after {epochs} epochs: test reconstruction "
    f"{history.test_recon[-1]:.1f}, test KL {history.test_kl[-1]:.1f}, "
    f"test −ELBO {neg_elbo:.1f} nats"
)
plots.plot_history(
    history, title=f"MLPVAE on MNIST, β = 1 ({profile.name} profile)"
);

# %% [markdown]
# The reconstruction term falls quickly while the KL *rises*: the encoder learns to put information into
# $z$, and each nat of information costs one nat of KL. The gap between the train and test curves shows
# how much the model overfits (little, at this size).
#
# **How good is this?** The closest public runs we know of are of a smaller cousin, the 784-400-20 VAE
# in PyTorch's own examples (`pytorch/examples`, `vae/main.py`: the same loss, batches of 128, Adam at
# 10⁻³, 10 epochs). Logs of it published by others report a test loss of about **105.6 nats** after
# those 10 epochs (105.56 and 105.59 in two independent runs). The next cell reads our model's test
# −ELBO after 10 epochs from its history, for a comparison at equal training, and how much the last
# five epochs still gained. The book's recipe is the training cell's: under the full profile, 30 epochs
# at a constant learning rate, no schedule.

# %%
at10, last = min(10, epochs), min(5, epochs - 1)
curve = [r + kl for r, kl in zip(history.test_recon, history.test_kl)]
print(
    f"test −ELBO after {at10} epochs: {curve[at10 - 1]:.1f} nats "
    "(pytorch/examples' 784-400-20 VAE: 105.6 after 10); "
    f"the last {last} epochs gained {curve[-1 - last] - curve[-1]:.2f} nats"
)

# %% [markdown]
# ## Reconstructions
#
# Top row: test images. Bottom row: the decoder's mean image for each posterior mean $\mu(x)$.

# %%
model.cpu()
originals = test.images[:12]
recon = model.reconstruct(originals)
plots.image_grid(
    torch.cat([originals, recon]),
    nrow=12,
    title="Test images (top) and reconstructions (bottom)",
);

# %% [markdown]
# ## New digits from the prior
#
# Because the KL term keeps the codes close to $\mathcal N(0, I)$, decoding random draws from that prior
# gives digit-like images, most of them recognisable, some between two classes.

# %%
samples = model.sample(48, generator=torch.Generator().manual_seed(1))
plots.image_grid(samples, nrow=12, title="Decoded samples z ~ N(0, I)");

# %% [markdown]
# ## What the latent space looks like
#
# With 20 dimensions we cannot look at the codes directly, so we train a second model with only **two**
# latent dimensions and plot each test image's posterior mean, coloured by its digit. Digits form
# regions; similar digits (4 and 9, 3 and 5 and 8) border each other. Decoding a grid of points shows
# the same map from the decoder's side.

# %%
seed_everything(0)
model2 = MLPVAE(latent_dim=2)
history2 = fit(
    model2,
    train.images,
    test_images=test.images,
    epochs=epochs,
    beta=1.0,
    device=device,
    seed=0,
    progress=False,
)
model2.cpu()
with torch.no_grad():
    mu2, _ = model2.encode(test.images)
fig, axes = plt.subplots(1, 2, figsize=(11, 5))
plots.plot_latent_scatter(
    mu2, test.labels, title="Test posterior means, 2-latent VAE", ax=axes[0]
)
plots.latent_manifold(
    model2,
    n=15,
    span=2.5,
    ax=axes[1],
    title="Decoded grid z ∈ [−2.5, 2.5]²",
)
fig.tight_layout()
print(
    "2-latent model: test −ELBO "
    f"{history2.test_recon[-1] + history2.test_kl[-1]:.1f} nats "
    f"vs {neg_elbo:.1f} with 20 latents"
)

# %% [markdown]
# Two numbers are enough to sort digits into neighbourhoods, but the −ELBO is worse than with 20: two
# dimensions cannot hold the stroke width, slant and style that the larger model keeps.
#
# ## What to try
#
# - Change `latent_dim` to 5 or 50 and compare the test −ELBO and the samples.
# - Train longer (`BETAVAE_PROFILE=full`) and watch the train/test gap.
# - Swap `"mnist"` for `"fashion_mnist"`: the same code learns clothes.
#
# Next, chapter 2 derives the objective we just minimised and checks every step of the derivation
# numerically.

# %% [markdown]
# The numbers this chapter reports (recorded in the book's run manifest):

# %%
from betavae_lib.report import headline

headline(
    profile=profile.name,
    epochs=epochs,
    test_recon_20d=history.test_recon[-1],
    test_kl_20d=history.test_kl[-1],
    test_neg_elbo_20d=history.test_recon[-1] + history.test_kl[-1],
    test_neg_elbo_2d=history2.test_recon[-1] + history2.test_kl[-1],
);

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
# then *invent* new digits from random numbers? A variational autoencoder (VAE; Kingma & Welling 2014,
# Rezende et al. 2014) does both with one objective. This chapter writes one in about 40 lines, checks it
# against the book's library, trains it, looks at what it learned, and shows what goes wrong without the
# term that makes it a *variational* autoencoder.
#
# Short code that shows an idea is written out here; longer machinery comes from the book's library,
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

import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

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
# MNIST (LeCun et al. 1998): 60,000 training and 10,000 test images of digits, each pixel a grey level
# in [0, 1]. `load_dataset` reads the original files (checked against their published checksums) from
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
# ## The model in one picture
#
# The **encoder** maps an image $x$ to a Gaussian over a latent code,
# $q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x))$: it outputs a mean $\mu$
# and a log-variance $\log\sigma^2$ per latent dimension. A code is drawn from it as
# $z = \mu + \sigma \odot \varepsilon$ with $\varepsilon \sim \mathcal N(0, I)$. The noise enters *from
# outside* the network, so $z$ is a differentiable function of $\mu$ and $\sigma$ and gradients flow back
# into the encoder: this is the **reparameterisation trick**, and
# {ref}`chapter 2 measures why it matters <elbo-reparameterisation>`. The **decoder** maps $z$ to 784
# logits; their sigmoids are the pixel probabilities of a Bernoulli, $p_\theta(x\mid z)$, and together
# they are the decoder's *mean image*. The prior is $p(z) = \mathcal N(0, I)$.

# %% tags=["remove-input"]
# The diagram: boxes are networks, ovals tensors; ε comes from outside.
fig, ax = plt.subplots(figsize=(10, 3))
ax.set(xlim=(0, 10), ylim=(0, 3))
ax.axis("off")
box = dict(boxstyle="round,pad=0.4", fc="#dbe8f5", ec="tab:blue")
tensor = dict(boxstyle="round4,pad=0.35", fc="white", ec="0.3")
noise = dict(boxstyle="round,pad=0.35", fc="#fde9d9", ec="tab:orange")
nodes = {
    "x": (0.45, 1.9, "image $x$", tensor),
    "enc": (1.95, 1.9, "encoder\n$q_\\phi(z\\mid x)$", box),
    "ms": (3.65, 1.9, "$\\mu$, $\\log\\sigma^2$", tensor),
    "z": (5.4, 1.9, "$z = \\mu + \\sigma\\odot\\varepsilon$", tensor),
    "eps": (5.4, 0.45, "$\\varepsilon \\sim \\mathcal{N}(0, I)$", noise),
    "dec": (7.15, 1.9, "decoder\n$p_\\theta(x\\mid z)$", box),
    "out": (9.05, 1.9, "logits\n(mean image)", tensor),
}
text = {
    k: ax.text(x0, y0, s, ha="center", va="center", bbox=b)
    for k, (x0, y0, s, b) in nodes.items()
}
arrow = dict(arrowstyle="-|>", color="0.2", shrinkA=9, shrinkB=9)
for a, b in [
    ("x", "enc"),
    ("enc", "ms"),
    ("ms", "z"),
    ("z", "dec"),
    ("dec", "out"),
]:
    ax.annotate(
        "",
        xy=(0, 0.5),
        xycoords=text[b],
        xytext=(1, 0.5),
        textcoords=text[a],
        arrowprops=arrow,
    )
ax.annotate(
    "",
    xy=(0.5, 0),
    xycoords=text["z"],
    xytext=(0.5, 1),
    textcoords=text["eps"],
    arrowprops=arrow,
)
loss = dict(arrowstyle="-", color="tab:red", ls="--", shrinkA=2, shrinkB=9)
ax.annotate(
    "rate: KL$(q_\\phi(z\\mid x)\\,\\|\\,\\mathcal{N}(0, I))$",
    xy=(0.5, 1),
    xycoords=text["ms"],
    xytext=(3.65, 2.85),
    textcoords="data",
    ha="center",
    va="top",
    color="tab:red",
    arrowprops=loss,
)
ax.annotate(
    "reconstruction: $-\\log p_\\theta(x\\mid z)$\n"
    "(the logits scored against $x$)",
    xy=(0.5, 0),
    xycoords=text["out"],
    xytext=(8.4, 0.45),
    textcoords="data",
    ha="center",
    va="center",
    color="tab:red",
    arrowprops=loss,
)
ax.set_title(
    "A VAE: the noise ε enters from outside, so gradients reach μ and σ"
)
fig.tight_layout()

# %% [markdown]
# Training maximises the evidence lower bound (ELBO), or equivalently minimises
#
# $$
# \mathcal L(x) = \underbrace{-\,\mathbb E_{q_\phi(z\mid x)}\big[\log p_\theta(x\mid z)\big]}_{\text{reconstruction}}
#   \;+\; \beta\,\underbrace{\mathrm{KL}\big(q_\phi(z\mid x)\,\|\,p(z)\big)}_{\text{rate}}
# $$
#
# with $\beta = 1$ for the plain VAE (the β-VAE of Higgins et al. 2017 changes β; chapter 3 measures what
# that buys). Chapter 2 derives this objective; here we use it. For a diagonal Gaussian and the standard
# normal prior the KL has a closed form, $\tfrac12\sum_d(\mu_d^2 + \sigma_d^2 - 1 - \log\sigma_d^2)$
# (Kingma & Welling 2014, appendix B), and the expectation is estimated with one sample $z$ per image.
#
# **Convention used throughout the book:** both terms are in nats, *summed* over the 784 pixels and over
# the latent dimensions, then *averaged* over the batch; β multiplies that summed KL. Numbers in other
# sources are often per pixel or per batch: multiply or divide before you compare.
#
# One caveat, flagged now and settled in {ref}`chapter 2 <elbo-burda>`: MNIST's pixels are grey levels,
# not coin flips, so the Bernoulli "likelihood" of a grey image is a cross-entropy, a good *training loss*
# but not the probability of anything. The −ELBO values in this chapter compare models trained and scored
# the same way; they are not the log-likelihoods that papers on binarised MNIST report.
#
# ## A VAE in about 40 lines
#
# Here is the whole model and its loss, written out with nothing but PyTorch. The architecture is a
# common one for MNIST, 784-400-400-20 with ReLU units: Kingma & Welling (2014) used a single hidden layer
# (500 units on MNIST), and PyTorch's own example (`pytorch/examples`, `vae/main.py`) uses 784-400-20.

# %%
def mlp(*sizes):
    """Linear layers of the given sizes with ReLU between them."""
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers[:-1]  # no ReLU after the last layer


class VAE(nn.Module):
    """Images (B, 1, 28, 28) -> logits (B, 1, 28, 28), mu, logvar (B, D)."""

    def __init__(self, latent_dim=20, hidden=400):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Flatten(), *mlp(784, hidden, hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            *mlp(latent_dim, hidden, hidden, 784),
            nn.Unflatten(1, (1, 28, 28)),
        )

    def encode(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def reparameterize(self, mu, logvar):
        eps = torch.randn_like(mu)  # the noise, from outside the network
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z):
        return self.decoder(z)  # logits; sigmoid(logits) = mean image

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def neg_elbo(x, logits, mu, logvar):
    """The β = 1 loss of each image, in nats: (B,)."""
    recon = F.binary_cross_entropy_with_logits(
        logits, x, reduction="none"
    ).sum((1, 2, 3))  # −log p(x|z), summed over pixels
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    return recon + kl


# %% [markdown]
# **Write it, then check it.** Before trusting these lines, compare them with the library on the same
# batch and the same weights. Two checks: our loss must equal `beta_vae_loss`, the loss every later
# chapter uses; and our weights, loaded into the library's `MLPVAE`, must give the same encoder and
# decoder outputs, so the model `fit` trains below *is* this network. Before training the decoder's
# logits are near zero, every pixel a coin flip, so the reconstruction term should be about
# $784 \log 2 \approx 543$ nats and the KL near zero: a check worth making on every new model.

# %%
seed_everything(0)
vae = VAE(latent_dim=20)
x = train.images[:128]
logits, mu, logvar = vae(x)
ours = neg_elbo(x, logits, mu, logvar).mean()
terms = beta_vae_loss(x, logits, mu, logvar, beta=1.0)
print(
    f"ours {ours:.4f} nats, beta_vae_loss {terms.total:.4f} nats "
    f"(reconstruction {terms.recon:.1f}, KL {terms.kl:.2f}; "
    f"784 log 2 = {784 * math.log(2):.1f})"
)
assert torch.allclose(ours, terms.total)

twin = MLPVAE(latent_dim=20)
missing, unexpected = twin.load_state_dict(vae.state_dict(), strict=False)
assert missing == ["log_sigma"] and not unexpected  # σ of other likelihoods
z = torch.randn(8, 20)
assert torch.equal(twin.encode(x)[0], vae.encode(x)[0])
assert torch.equal(twin.decode(z), vae.decode(z))
print("MLPVAE with these weights: the same encoder and decoder outputs")

# %% [markdown]
# **One epoch of training.** The training step is four lines: a forward pass, the loss averaged over the
# batch, the gradient, an Adam step (Kingma & Ba 2015) at the usual learning rate of $10^{-3}$. One pass
# over the training images in a random order, 128 images per batch:

# %%
vae.to(device)
optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
losses = []
for batch in torch.randperm(len(train.images)).split(128):
    x = train.images[batch].to(device)
    loss = neg_elbo(x, *vae(x)).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())

with torch.no_grad():
    x = test.images.to(device)
    loop_test = neg_elbo(x, *vae(x)).mean().item()
print(
    f"{len(losses)} steps: batch loss {losses[0]:.0f} → "
    f"{sum(losses[-20:]) / 20:.1f} (mean of the last 20); "
    f"test −ELBO after one epoch {loop_test:.1f} nats"
)

# %% [markdown]
# ## Training with `fit`
#
# That loop is all a VAE needs. `fit` is the book's one training loop, the same steps with the chores
# done: the whole dataset on the device, batches drawn by index from a seeded generator, a progress bar,
# checks that the loss stays finite, and a history of both terms on the training and test data after
# every epoch. We hand it a fresh `MLPVAE`, which starts from the same weights as our `vae` did (same
# seed), and train for longer.

# %%
seed_everything(0)
model = MLPVAE(latent_dim=20)
same_start = zip(model.state_dict().values(), twin.state_dict().values())
assert all(torch.equal(a, b) for a, b in same_start)
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
curve = [r + kl for r, kl in zip(history.test_recon, history.test_kl)]
print(
    f"test −ELBO after 1 epoch: {curve[0]:.1f} nats "
    f"(our loop: {loop_test:.1f}); after {epochs} epochs: "
    f"reconstruction {history.test_recon[-1]:.1f} + "
    f"KL {history.test_kl[-1]:.1f} = {curve[-1]:.1f} nats"
)
fig = plots.plot_history(
    history, title=f"MLPVAE on MNIST, β = 1 ({profile.name} profile)"
)
recon_ax = fig.axes[0]
later = history.train_recon[1:] + history.test_recon[1:]
recon_ax.set_ylim(min(later) - 2, max(later) + 4)
recon_ax.text(
    0.97,
    0.95,
    f"epoch 1 is off the scale: train {history.train_recon[0]:.0f}, "
    f"test {history.test_recon[0]:.0f}",
    transform=recon_ax.transAxes,
    ha="right",
    va="top",
    fontsize=9,
);

# %% [markdown]
# What to see in the two panels:
#
# - The reconstruction term falls quickly while the KL *rises*: the encoder learns to put information into
#   $z$, and that information is paid for in KL. Averaged over the data, the KL term equals the mutual
#   information between images and codes plus how far the codes' overall distribution is from the prior,
#   $\mathbb E_x \mathrm{KL}(q(z\mid x)\,\|\,p(z)) = I_q(x; z) + \mathrm{KL}(q(z)\,\|\,p(z))$ (Hoffman &
#   Johnson 2016): each nat of information costs *at least* one nat of KL.
# - In the first epoch the training reconstruction lies far *above* the test one (170 against 125 nats)
#   and the training KL below it. That is not negative overfitting: a training value is the average over
#   the epoch's steps, during which the weights were still improving from their random start, while the
#   test value is measured once the epoch is over. In the later epochs the training reconstruction
#   drops below the test one (the right end of the left panel: about 79 against 80.9 nats), and that gap,
#   small at this size, is the overfitting.
# - Our four-line loop reached a test −ELBO of 137.3 nats after its one epoch, and `fit` 137.9 after its
#   first: the same recipe, with a different batch order and different noise.
# - The reconstruction axis starts at epoch 2 (the epoch-1 values are printed on the panel), and the KL
#   axis does not start at zero: both are zoomed on the range where the later epochs move.
#
# **How precise is that number?** The test −ELBO is a mean over the 10,000 test images (one posterior
# sample each), so it has a standard error. We compute the loss of every test image with the function we
# wrote, on fresh noise:

# %%
@torch.no_grad()
def per_image_neg_elbo(model, images, seed=0):
    """−ELBO of each image with one posterior sample: (N,) nats."""
    model.cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        logits, mu, logvar, _ = model(images)
    return neg_elbo(images, logits, mu, logvar)


def mean_se(values):
    """Mean and its standard error over the entries of values."""
    return values.mean().item(), (values.std() / len(values) ** 0.5).item()


losses_20d = per_image_neg_elbo(model, test.images)
m20, se20 = mean_se(losses_20d)
print(
    f"test −ELBO {m20:.2f} ± {se20:.2f} nats (mean ± standard error over "
    f"{len(losses_20d):,} test images; fit's history: {curve[-1]:.2f})"
)

# %% [markdown]
# **How good is this?** The closest public runs we know of are of a smaller cousin, the 784-400-20 VAE in
# PyTorch's own examples (`pytorch/examples`, `vae/main.py`: the same summed loss, batches of 128, Adam at
# $10^{-3}$, 10 epochs by default). A log of it posted in pytorch/examples pull request #1416 shows a test
# loss of **106.66 nats after 7 epochs**. The next cell reads our model's test −ELBO after 7 and 10 epochs
# from its history, for a comparison at equal training, and how much the last five epochs still gained. The
# book's recipe is the training cell's: under the full profile, 30 epochs at a constant learning rate, no
# schedule.

# %%
at7, at10 = min(7, epochs), min(10, epochs)
last = min(5, epochs - 1)
print(
    f"test −ELBO after {at7} epochs: {curve[at7 - 1]:.1f} nats "
    f"(pytorch/examples' 784-400-20 VAE: 106.66 after 7), "
    f"after {at10}: {curve[at10 - 1]:.1f}; "
    f"the last {last} epochs gained {curve[-1 - last] - curve[-1]:.2f} nats"
)

# %% [markdown]
# Our model, with one more hidden layer, is at 105.9 nats after 7 epochs, 0.8 below that published
# 106.66, and at 103.6 after 10. One log of one run is no spread, so read that as "comparable", not "better".
# The last five of our 30 epochs gained nothing (0.00 nats): the test −ELBO has flattened while the training
# reconstruction still falls. Whether longer training helps is one of the things to try at the end.
#
# ## Reconstructions
#
# Top row: test images. Bottom row: the decoder's mean image, $\operatorname{sigmoid}$ of the logits,
# for each posterior mean $\mu(x)$ (no noise added).

# %%
originals = test.images[:12]
with torch.no_grad():
    mu, _ = model.encode(originals)
    recon = torch.sigmoid(model.decode(mu))  # model.reconstruct(originals)
plots.image_grid(
    torch.cat([originals, recon]),
    nrow=12,
    row_labels=["test image", "reconstruction"],
    title="Test images and their reconstructions (mean images)",
);

# %% [markdown]
# ## New digits from the prior
#
# Because the KL term keeps the codes close to $\mathcal N(0, I)$, decoding random draws from that prior
# should give digit-like images. What the grid shows are **mean images** $\operatorname{sigmoid}(\text{logits})$
# of $p_\theta(x\mid z)$, not samples of $x$: a sample would flip a coin for every pixel. The second figure
# puts twelve mean images above one Bernoulli draw from each, which is why nobody displays the draws.

# %%
generator = torch.Generator().manual_seed(1)
z_prior = torch.randn(48, 20, generator=generator)
with torch.no_grad():
    means = torch.sigmoid(model.decode(z_prior))  # model.sample(48)
plots.image_grid(
    means, nrow=12, title="Mean images decoded from z ~ N(0, I), β = 1"
)
draws = torch.bernoulli(means[:12], generator=generator)
plots.image_grid(
    torch.cat([means[:12], draws]),
    nrow=12,
    row_labels=["mean image", "one draw of x"],
    title="The mean of p(x | z) and a sample from it",
);

# %% [markdown]
# Most of the mean images are recognisable digits; some sit between two classes. The draws are the same
# digits with ragged, speckled strokes: every grey pixel of the mean, most of them along the edges of the
# strokes, becomes a coin flip.
#
# ## Why the KL term? An autoencoder beside the VAE
#
# Drop the KL term (β = 0) and the same network becomes a plain autoencoder with a little noise in its
# code: nothing asks its codes to look like $\mathcal N(0, I)$. We train one from the same initial
# weights, on the same batches, changing only `beta`, for fewer epochs to keep the chapter short, and
# decode **the same** prior draws with both models.

# %%
seed_everything(0)
autoencoder = MLPVAE(latent_dim=20)
ae_epochs = profile.pick(smoke=2, reduced=5, full=10)
history_ae = fit(
    autoencoder,
    train.images,
    test_images=test.images,
    epochs=ae_epochs,
    beta=0.0,
    device=device,
    seed=0,
    progress=False,
)
autoencoder.cpu()
with torch.no_grad():
    ae_means = torch.sigmoid(autoencoder.decode(z_prior))
    mu_ae, _ = autoencoder.encode(test.images)
    mu_vae, _ = model.encode(test.images)
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
plots.image_grid(
    ae_means[:24], nrow=6, ax=axes[0], title="β = 0 (autoencoder)"
)
plots.image_grid(means[:24], nrow=6, ax=axes[1], title="β = 1 (VAE)")
fig.suptitle("Mean images decoded from the same z ~ N(0, I)")
fig.tight_layout()
print(
    f"after {ae_epochs} epochs, test reconstruction: autoencoder "
    f"{history_ae.test_recon[-1]:.1f}, VAE "
    f"{history.test_recon[ae_epochs - 1]:.1f} nats; KL the autoencoder's "
    f"codes would pay: {history_ae.test_kl[-1]:.0f} nats (VAE "
    f"{history.test_kl[ae_epochs - 1]:.1f})"
)
for name, codes in [("autoencoder", mu_ae), ("VAE", mu_vae)]:
    spread = codes.std(0)
    print(
        f"{name}: spread of the posterior means per latent dimension "
        f"(sd over test images) {spread.min():.2f} to {spread.max():.2f}, "
        f"their centre {codes.mean(0).abs().max():.2f} from 0 at most"
    )

# %% [markdown]
# The autoencoder reconstructs *better*, 65.4 against the VAE's 84.7 nats after the same 10 epochs: it
# pays nothing for information. But its codes live wherever the encoder found convenient: their spread
# over the test images is 2.7 to 4.6 per dimension (the prior's is 1), their centre is up to 3.9 away from 0,
# and read as Gaussians they would cost 348 nats of KL against the VAE's 19. Draws from $\mathcal N(0, I)$
# fall in a small central part of that cloud, which nothing in training asked the encoder to fill, and the
# decoder turns them into the faint fragments of strokes on the left. The VAE's codes have a spread of at
# most 1.03 per dimension and centres within 0.10 of 0: the KL term ties the codes to the prior, and that is
# what makes the prior a way to generate. (A dimension with a spread near 0, of which the VAE has some,
# carries almost no information; chapter 4 is about them.)
#
# ## What the latent space looks like
#
# With 20 dimensions we cannot look at the codes directly, so we train a second model with only **two**
# latent dimensions and plot every test image's posterior mean, coloured by its digit. Digits form
# regions; similar digits (4 and 9; 3, 5 and 8) border each other. Decoding a grid of points shows the same
# map from the decoder's side; the dashed square on the left is the region the right panel decodes.

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
span = math.ceil(2 * mu2.abs().quantile(0.99).item()) / 2  # in steps of ½
n = 15
fig, axes = plt.subplots(1, 2, figsize=(11, 5))
plots.plot_latent_scatter(
    mu2,
    test.labels,
    title=f"Test posterior means ({len(mu2):,}), 2-latent VAE",
    ax=axes[0],
    max_points=len(mu2),
)
axes[0].add_patch(
    plt.Rectangle((-span, -span), 2 * span, 2 * span, fill=False, ls="--")
)
plots.latent_manifold(
    model2,
    n=n,
    span=span,
    ax=axes[1],
    title=f"Decoded grid z ∈ [−{span:g}, {span:g}]²",
)
cell = test.images.shape[-1] + 2  # image_grid puts 2 pixels between images
ticks = [cell * i + cell / 2 - 1 for i in (0, n // 2, n - 1)]
labels = [f"−{span:g}", "0", f"{span:g}"]
axes[1].set_xticks(ticks, labels)
axes[1].set_yticks(ticks, labels[::-1])
axes[1].set(xlabel="$z_1$", ylabel="$z_2$")
fig.tight_layout()

losses_2d = per_image_neg_elbo(model2, test.images)
m2, se2 = mean_se(losses_2d)
gap, gap_se = mean_se(losses_2d - losses_20d)
print(
    f"test −ELBO: 2 latents {m2:.1f} ± {se2:.1f}, 20 latents "
    f"{m20:.1f} ± {se20:.1f} nats; paired difference {gap:.1f} ± "
    f"{gap_se:.1f} nats"
)

# %% [markdown]
# Two numbers are enough to sort digits into neighbourhoods (0 at the top, 1 at the bottom, 7 on the left,
# 4 and 9 overlapping, 3, 5 and 8 in the middle), but the −ELBO is much worse than with 20: 139.5 ± 0.5
# against 100.6 ± 0.3 nats, a paired difference of 38.9 ± 0.3 nats over the same test images. Two
# dimensions cannot hold the digit's class, stroke width, slant and style all at once: the grid does keep
# some slant (the 1s at the bottom lean further right as $z_1$ grows), but not everything else the larger
# model keeps.
#
# ## What you should now know
#
# - A VAE is an encoder to $(\mu, \log\sigma^2)$, a sample $z = \mu + \sigma\odot\varepsilon$ with the
#   noise from outside, and a decoder to pixel logits, trained on reconstruction + β·KL. You have written
#   one in about 40 lines, and its loss equals the library's `beta_vae_loss`.
# - Check a new model at initialisation: reconstruction ≈ 784 log 2 ≈ 543 nats, KL ≈ 0.
# - The stored run (full profile, 30 epochs): test −ELBO **100.6 ± 0.3 nats** (mean ± standard error over
#   the 10,000 test images, one posterior sample each), of which 80.9 is reconstruction and 19.8 KL; 2 latents
#   give 139.5 ± 0.5, a paired difference of 38.9 ± 0.3 nats. The test −ELBO stopped improving in the last
#   five epochs.
# - What a VAE "generates" on display is the decoder's mean image; a sample of $x$ is a noisy coin flip
#   per pixel.
# - Without the KL term (β = 0) the codes drift away from $\mathcal N(0, I)$ (spread 2.7 to 4.6 per
#   dimension, 348 nats of KL) and decoded prior draws stop looking like digits, even though the
#   reconstructions are better (65.4 against 84.7 nats after 10 epochs); the KL is what makes the prior
#   usable for generation.
#
# ## Exercises
#
# Each has a check you can run; the answers are in the collapsed blocks.
#
# 1. **KL by hand.** An encoder outputs, for one image, $\mu = 2$ and $\sigma = 0.5$ in one latent
#    dimension and exactly the prior ($\mu = 0$, $\sigma = 1$) in the other 19. How many nats of KL does
#    the image pay? Work it out from the closed form, then check it with `neg_elbo`'s KL line.
# 2. **Why the noise comes from outside.** For $z = \mu + \sigma\varepsilon$, what are $\partial z/\partial\mu$
#    and $\partial z/\partial\sigma$? Check your answer with autograd on a single draw.
# 3. **The coin-flip floor.** Show that a decoder whose logits are all zero pays exactly $784\log 2$ nats
#    of reconstruction on *every* image in [0, 1], grey or not.
#
# :::{admonition} Answers
# :class: dropdown
#
# 1. $\tfrac12(\mu^2 + \sigma^2 - 1 - \log\sigma^2) = \tfrac12(4 + 0.25 - 1 + \log 4) \approx 2.318$
#    nats; the 19 prior-like dimensions pay 0.
# 2. $\partial z/\partial\mu = 1$ and $\partial z/\partial\sigma = \varepsilon$: both are defined for a
#    fixed draw of $\varepsilon$, which is why the draw is made outside the network.
# 3. With logit 0 the predicted probability is ½, and the binary cross-entropy is
#    $-x\log\tfrac12 - (1-x)\log\tfrac12 = \log 2$ for every $x$ in [0, 1]; times 784 pixels.
# :::

# %% tags=["hide-input"]
# Exercise 1
mu1, logvar1 = torch.zeros(1, 20), torch.zeros(1, 20)
mu1[0, 0], logvar1[0, 0] = 2.0, math.log(0.5**2)
kl1 = 0.5 * (mu1**2 + logvar1.exp() - 1 - logvar1).sum().item()
print(f"exercise 1: KL = {kl1:.3f} nats")
assert abs(kl1 - 2.318) < 1e-3

# Exercise 2
mu_, sigma_ = (
    torch.tensor(0.3, requires_grad=True),
    torch.tensor(0.7, requires_grad=True),
)
eps_ = torch.randn(())
(mu_ + sigma_ * eps_).backward()
dmu, dsigma = mu_.grad.item(), sigma_.grad.item()
print(f"exercise 2: dz/dmu = {dmu:.3f}, dz/dsigma = {dsigma:.3f}")
assert mu_.grad == 1 and sigma_.grad == eps_

# Exercise 3
x3 = test.images[:64]
floor = F.binary_cross_entropy_with_logits(
    torch.zeros_like(x3), x3, reduction="none"
).sum((1, 2, 3))
print(f"exercise 3: {floor.min():.4f} to {floor.max():.4f} nats per image")
assert torch.allclose(floor, torch.full_like(floor, 784 * math.log(2)))

# %% [markdown]
# ## What to try
#
# - Change `latent_dim` to 5 or 50 in the `fit` cell and compare the test −ELBO and the samples. With 50,
#   look at `history.test_kl_per_dim[-1]`: how many dimensions carry more than 0.1 nats? (Chapter 4 is
#   about the ones that carry none.)
# - Train for `epochs=100` instead of 30: does the gap between the train and test curves widen, and does
#   the test −ELBO move by more than its standard error (about 0.3 nats)?
# - Give the autoencoder as many epochs as the VAE (`ae_epochs = epochs`): do its prior samples improve?
# - Swap `"mnist"` for `"fashion_mnist"`: the same code learns clothes.
#
# Next, chapter 2 derives the objective we just minimised and checks every step of the derivation
# numerically.
#
# ## References
#
# - Kingma, D. P. & Welling, M. (2014). Auto-encoding variational Bayes. *ICLR*. [arXiv:1312.6114](https://arxiv.org/abs/1312.6114)
# - Rezende, D. J., Mohamed, S. & Wierstra, D. (2014). Stochastic backpropagation and approximate
#   inference in deep generative models. *ICML*. [arXiv:1401.4082](https://arxiv.org/abs/1401.4082)
# - Kingma, D. P. & Ba, J. (2015). Adam: a method for stochastic optimization. *ICLR*. [arXiv:1412.6980](https://arxiv.org/abs/1412.6980)
# - Hoffman, M. D. & Johnson, M. J. (2016). ELBO surgery: yet another way to carve up the variational
#   evidence lower bound. *NIPS Workshop on Advances in Approximate Bayesian Inference*. [PDF](http://approximateinference.org/2016/accepted/HoffmanJohnson2016.pdf)
# - Higgins, I. et al. (2017). β-VAE: learning basic visual concepts with a constrained variational
#   framework. *ICLR*. [OpenReview](https://openreview.net/forum?id=Sy2fzU9gl)
# - LeCun, Y., Bottou, L., Bengio, Y. & Haffner, P. (1998). Gradient-based learning applied to document
#   recognition. *Proceedings of the IEEE* 86(11). (The MNIST dataset.)
# - Doersch, C. (2016). Tutorial on variational autoencoders. [arXiv:1606.05908](https://arxiv.org/abs/1606.05908)
# - Kingma, D. P. & Welling, M. (2019). An introduction to variational autoencoders. *Foundations and
#   Trends in Machine Learning* 12(4). [arXiv:1906.02691](https://arxiv.org/abs/1906.02691)
# - PyTorch examples, variational autoencoder: [`vae/main.py`](https://github.com/pytorch/examples/tree/main/vae);
#   the training log cited above: [pull request #1416](https://github.com/pytorch/examples/pull/1416).

# %% tags=["remove-cell"]
# The numbers this chapter reports, for the book's run manifest.
from betavae_lib.report import headline

headline(
    profile=profile.name,
    epochs=epochs,
    test_recon_20d=history.test_recon[-1],
    test_kl_20d=history.test_kl[-1],
    test_neg_elbo_20d=curve[-1],
    test_neg_elbo_20d_per_image=m20,
    test_neg_elbo_20d_se=se20,
    test_neg_elbo_2d=history2.test_recon[-1] + history2.test_kl[-1],
    neg_elbo_gap_2d_20d=gap,
    neg_elbo_gap_2d_20d_se=gap_se,
    one_epoch_loop_test_neg_elbo=loop_test,
    ae_epochs=ae_epochs,
    ae_test_recon=history_ae.test_recon[-1],
    ae_test_kl=history_ae.test_kl[-1],
);

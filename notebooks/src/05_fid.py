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
# # 5. Measuring sample quality: FID done right
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/betavae-book/betavae-book/blob/main/notebooks/05_fid.ipynb)
#
# **The question.** Which of two VAEs makes better samples? Looking at grids is subjective, so papers
# report one number, the **Fréchet Inception Distance** (FID; Heusel et al. 2017). This chapter writes FID
# out, computes it, and then shows, one experiment at a time, the ways it misleads on MNIST-like data: a
# feature network trained on photographs, a value that depends on how many samples you draw and on which
# samples you happened to draw, a reference set that is not one population, and reconstructions passed off
# as samples. It ends with FID for chapter 3's six values of β on MNIST and Fashion-MNIST, each with its
# spread over fresh sample sets, and with what those numbers say about the claim that a larger β gives
# better samples.

# %%
# Setup: in Colab, install the book's library first (a no-op where it is
# already installed). BOOK_REPO is the book's home, as in _config.yml.
BOOK_REPO = "https://github.com/betavae-book/betavae-book"
try:
    import betavae_lib  # noqa: F401
except ImportError:
    # %pip install -q "betavae_lib @ git+{BOOK_REPO}"
    import betavae_lib  # noqa: F401

import time

import matplotlib.pyplot as plt
import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from betavae_lib import (
    MLPVAE,
    evaluate,
    load_dataset,
    plots,
    start_chapter,
    train_grid,
)
from betavae_lib.fid import (
    DomainFeatures,
    InceptionFeatures,
    feature_statistics,
    fid,
    frechet_distance,
    frechet_terms,
    inception_available,
    kernel_distance,
)

# BETAVAE_PROFILE=smoke|reduced|full scales every run in the book
profile, device = start_chapter(seed=0)


def check(claim, what):
    """The text states `what`. On the full profile (the run the book
    shows) a run that contradicts it stops here; shorter runs say so."""
    if profile.name == "full":
        assert claim, f"the text says {what}, but this run does not"
    elif not claim:
        print(f"({profile.name} profile: not the case here: {what})")


# %% [markdown]
# ## A model to score
#
# We need generated images. The model is chapter 1's 784-400-400-20 MLP VAE trained with β = 1 on
# MNIST; later sections use the same model at other values of β. The `train_grid` calls below have the
# settings of chapter 3's β sweep (the same training images, architecture, epochs, batch size, learning
# rate and seed), and the model cache keeps each model of a grid under its own settings, so when the
# chapters run in order `train_grid` loads chapter 3's models instead of training them again (it says
# which it did), and the two chapters score the very same models.

# %%
epochs = profile.pick(smoke=1, reduced=3, full=30)  # as in chapter 3
n_max = profile.pick(
    smoke=2_000, reduced=10_000, full=10_000
)  # the most images any FID below uses
train = load_dataset("mnist", "train").subset(profile.train_size)
full_test = load_dataset("mnist", "test")
test = full_test.subset(n_max)

model = train_grid(
    MLPVAE,
    dict(latent_dim=20),
    train.images,
    {1.0: dict(beta=1.0)},
    epochs=epochs,
    seed=0,
    device=device,
)[0][1.0]
draw = torch.Generator().manual_seed(1)  # each call: fresh samples
samples = model.sample(n_max, generator=draw)
print(
    f"{len(train):,} training images, {epochs} epochs; {len(samples):,} "
    "samples z ~ N(0, I) decoded"
)
plots.image_grid(
    samples[:32],
    nrow=16,
    title="Decoded prior samples, MLP VAE with β = 1 (mean images)",
);

# %% [markdown]
# ## What FID measures
#
# Pass real images and generated images through a fixed feature network $\varphi$ and fit one Gaussian
# to each set of feature vectors: $\mathcal N(\mu_r, \Sigma_r)$ for the real ones, $\mathcal N(\mu_g, \Sigma_g)$
# for the generated ones. FID is the **squared** Fréchet (2-Wasserstein) distance $d^2$ between those two
# Gaussians (Dowson & Landau 1982; Heusel et al. 2017 write it the same way):
#
# $$
# \mathrm{FID} = d^2 = \underbrace{\lVert \mu_r - \mu_g \rVert^2}_{\text{mean term}} + \underbrace{\operatorname{Tr}\!\Big(\Sigma_r + \Sigma_g - 2\,\big(\Sigma_r \Sigma_g\big)^{1/2}\Big)}_{\text{covariance term}}.
# $$
#
# The mean term compares where the two clouds of features sit, the covariance term how they spread.
# Lower is better; FID is zero only when both means and covariances match, and it sees nothing beyond
# those two moments. Being a square, it is in squared feature units: scale every feature by 2 and FID
# grows 4-fold, and a FID of 100 is a 2-Wasserstein distance $d$ of 10 feature units. Written out in
# NumPy and SciPy:

# %%
def frechet_distance_by_hand(mu1, sigma1, mu2, sigma2):
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu: (F,), sigma: (F, F).
    """
    covmean = scipy.linalg.sqrtm(
        sigma1 @ sigma2
    ).real  # (Σ1 Σ2)^½; tiny imaginary parts are rounding
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean)
    )


domain = DomainFeatures("mnist")
real_features, fake_features = domain(test.images), domain(samples)
mu_r, sigma_r = real_features.mean(0), np.cov(real_features, rowvar=False)
mu_g, sigma_g = fake_features.mean(0), np.cov(fake_features, rowvar=False)
by_hand = frechet_distance_by_hand(mu_r, sigma_r, mu_g, sigma_g)
stats_r = feature_statistics(real_features)
stats_g = feature_statistics(fake_features)
library = frechet_distance(*stats_r, *stats_g)
mean_term, cov_term = frechet_terms(*stats_r, *stats_g)
print(
    f"features {real_features.shape}; FID by hand {by_hand:.4f}, "
    f"betavae_lib.fid.frechet_distance {library:.4f}\n"
    f"  = mean term {mean_term:.2f} + covariance term {cov_term:.2f}"
)
assert abs(by_hand - library) < 1e-6 * max(1.0, library)
assert abs(mean_term + cov_term - library) < 1e-9 * max(1.0, library)


def fid_from_features(a, b):
    """FID between two sets of precomputed features (N, F)."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


# %% [markdown]
# The two agree, so from here on we use the library: `frechet_distance` computes the same quantity as
# pytorch-fid's `calculate_frechet_distance`, but by another route. Instead of the matrix square root of
# the non-symmetric product $\Sigma_r\Sigma_g$ (which pytorch-fid retries with a small ε added to the
# diagonals when it fails), it takes the eigenvalues of the symmetric matrix
# $\Sigma_r^{1/2}\Sigma_g\Sigma_r^{1/2}$, which has the same trace of square root, so it needs no
# ε-regularisation. `frechet_terms` returns the two terms apart, and `fid` extracts the features and fits
# the Gaussians in one call. A helper, `fid_from_features`, does the same from features already computed,
# which keeps the experiments below cheap.
#
# ## Which features? A domain classifier and Inception
#
# Standard FID uses the 2048-dimensional pool3 layer of an Inception-v3 network (Szegedy et al. 2016)
# trained on ImageNet photographs (pytorch-fid's weights). For digits and clothes the book also uses a
# **domain classifier**: a small CNN trained to classify MNIST (or Fashion-MNIST), whose 128-dimensional
# penultimate layer responds to strokes and garment shapes. Its values are not comparable with published
# Inception FIDs, but they are cheap, and they measure differences that matter for these images.
# Inception needs pytorch-fid and torchvision beside the book's library, and a weights file; where they
# are missing, the Inception cells below say so and skip. Where it runs, it runs on fewer images (2,500
# under the full profile, just above its 2,048 features; on a CPU each image costs about half a second),
# and the cell prints the domain FID of the same images beside it. The two scales are unrelated: one
# 2048-d, one 128-d.

# %%
print(
    f"domain classifier for MNIST: {domain.dim}-d features, test accuracy "
    f"{domain.meta['test_accuracy']:.4f}"
)
print(
    f"FID, domain features: {library:.2f} ({len(real_features):,} real "
    f"vs {len(fake_features):,} generated)"
)
# Inception on a CPU costs about half a second per image per core, so its
# experiments use fewer images than the domain ones: just above the 2,048
# features, so that the covariances are not singular.
n_inception = profile.pick(smoke=50, reduced=500, full=2_500)
inception_ok, why_not = inception_available()
if inception_ok:
    inception = InceptionFeatures(device=device)
    start = time.perf_counter()
    inception_real = inception(test.images[:n_inception])
    inception_fake = inception(samples[:n_inception])
    seconds = time.perf_counter() - start
    fid_inception = fid_from_features(inception_real, inception_fake)
    fid_domain_small = fid_from_features(
        real_features[:n_inception], fake_features[:n_inception]
    )
    print(
        f"N = {n_inception:,}: Inception FID {fid_inception:.2f}, domain "
        f"FID {fid_domain_small:.2f} on the same images "
        f"({2 * n_inception:,} Inception passes in {seconds:.0f} s on "
        f"{device})"
    )
else:
    inception = None
    print(
        "This run uses domain features only: Inception cannot be built "
        f"here ({why_not.split(';')[0]})."
    )

# %% [markdown]
# ### What Inception sees
#
# Inception expects 299×299 colour photographs. pytorch-fid feeds it an MNIST digit by repeating the grey
# channel three times (R = G = B), resizing bilinearly from 28×28 to 299×299 and rescaling [0, 1] to
# [−1, 1]. Here is that input, built with the same operations, beside the same digit resized by nearest
# neighbour:

# %%
digit = test.images[:1]  # (1, 1, 28, 28)
rgb = digit.expand(-1, 3, -1, -1)  # grey -> three identical channels
seen = F.interpolate(
    rgb, size=(299, 299), mode="bilinear", align_corners=False
)
blocky_one = F.interpolate(rgb, size=(299, 299), mode="nearest")
fig, axes = plt.subplots(1, 4, figsize=(14, 3.9))
axes[0].imshow(
    digit[0, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest"
)
axes[0].set_title("what we have: 28×28, one channel")
axes[1].imshow(rgb[0].permute(1, 2, 0), interpolation="nearest")
axes[1].set_title("repeated to RGB (R = G = B)")
axes[2].imshow(
    seen[0].permute(1, 2, 0).clamp(0, 1), interpolation="nearest"
)
axes[2].set_title("what Inception sees: bilinear")
axes[3].imshow(blocky_one[0].permute(1, 2, 0), interpolation="nearest")
axes[3].set_title("the same, nearest neighbour")
for ax in axes:
    ax.set_xlabel("x [pixels]")
    ax.set_ylabel("y [pixels]")
fig.tight_layout()
grey_edges = ((seen > 0.05) & (seen < 0.95)).float().mean().item()
print(
    f"{28 * 28} pixels become {299 * 299:,} per channel; {grey_edges:.1%} "
    "of them are blurred edge values after the bilinear resize"
)

# %% [markdown]
# Each original pixel becomes a soft 10×10 patch: a thick, blurred, colourless stroke on a flat background,
# nothing like the textures of the ImageNet photos the features were trained on. Two consequences. First,
# Inception FIDs on MNIST are not comparable with FIDs on photographs, nor between codebases that resize
# differently: TensorFlow's original FID code and pytorch-fid both resize bilinearly, but TensorFlow 1's
# `resize_bilinear` samples the input on a shifted grid (no half-pixel centres), and where images are
# shrunk rather than enlarged, whether the resize antialiases matters too; Parmar et al. (2022,
# "clean-fid") measure how much such details move FID. Second,
# most of the 2048 features carry little about what distinguishes one digit from another. When Inception
# runs, the next cell measures the resizing effect as a number: the same real digits, resized by nearest
# neighbour instead of bilinearly, are a measurable FID away from themselves.

# %%
if inception is not None:
    blocky = F.interpolate(
        test.images[:n_inception], size=(299, 299), mode="nearest"
    )
    shift = fid_from_features(inception_real, inception(blocky))
    print(
        f"Inception FID between {n_inception:,} real digits and the same "
        f"digits resized by nearest neighbour: {shift:.2f} (against "
        f"{fid_inception:.2f} for the model's samples at the same N)"
    )
else:
    print("Skipped: this comparison needs the Inception network.")

# %% [markdown]
# ## FID depends on the number of samples, and on which samples
#
# FID is estimated from finite samples, and the estimate is **biased upwards**: a covariance fitted to N
# points is noisy, and the noise adds to the trace term whatever the two distributions are. Even two sets
# of *real* digits are a positive FID apart. Chong & Forsyth (2020) showed the bias shrinks like 1/N:
# $\mathrm{FID}_N \approx \mathrm{FID}_\infty + k/N$. The estimate also varies from one set of N images
# to the next, and that spread is what decides whether two models differ.
#
# We measure both, with N from 500 up to the profile's maximum and several repeats per N. Each repeat
# draws **fresh** samples from the model (the model can generate as many as we like) and a fresh random
# subset of the test digits as the real set; at N = 10,000 the real set is the whole test split, so
# there the spread comes from the samples alone. For real against real, each repeat splits all 70,000
# MNIST images (train and test together, one population) at random into two disjoint sets of N.

# %%
all_mnist = torch.cat(
    [load_dataset("mnist", "train").images, full_test.images]
)
all_features = domain(all_mnist)
sizes = [n for n in (500, 1_000, 2_000, 5_000, 10_000) if n <= n_max]
repeats = profile.pick(smoke=3, reduced=5, full=10)
rng = np.random.default_rng(0)
results = {
    "model samples vs real": np.zeros((len(sizes), repeats)),
    "real vs real": np.zeros((len(sizes), repeats)),
}
for i, n in enumerate(sizes):
    for r in range(repeats):
        reference = real_features[rng.choice(n_max, n, replace=False)]
        fresh = domain(model.sample(n, generator=draw))
        results["model samples vs real"][i, r] = fid_from_features(
            reference, fresh
        )
        split = rng.permutation(len(all_features))[: 2 * n]
        results["real vs real"][i, r] = fid_from_features(
            all_features[split[:n]], all_features[split[n:]]
        )

fig, (ax, ax_bias) = plt.subplots(1, 2, figsize=(11, 4))
extrapolated, slopes = {}, {}
for (label, values), marker in zip(results.items(), "os"):
    slope, intercept = np.polyfit(
        1.0 / np.array(sizes), values.mean(1), 1
    )  # FID_N = FID_inf + k / N
    extrapolated[label], slopes[label] = intercept, slope
    ax.errorbar(
        sizes,
        values.mean(1),
        yerr=values.std(1, ddof=1),
        marker=marker,
        capsize=3,
        label=label,
    )
    (line,) = ax_bias.plot(
        sizes,
        values.mean(1) - intercept,
        marker=marker,
        ls="none",
        label=f"{label}: measured",
    )
    n_grid = np.geomspace(sizes[0], sizes[-1], 50)
    ax_bias.plot(
        n_grid,
        slope / n_grid,
        color=line.get_color(),
        ls="--",
        label=f"k/N, k = {slope:,.0f}",
    )
ax.set_ylim(bottom=0)
ax.set_ylabel("FID (domain features)")
ax.set_title(f"FID vs N (mean ± sd of {repeats} fresh draws)")
ax_bias.set_yscale("log")
ax_bias.set_ylabel("FID$_N$ − FID$_\\infty$ (fitted)")
ax_bias.set_title("The excess over the extrapolated value shrinks like 1/N")
for a in (ax, ax_bias):
    a.set_xscale("log")
    a.set_xticks(sizes, [f"{n:,}" for n in sizes])
    a.minorticks_off()
    a.set_xlabel("N: images per set")
    a.grid(alpha=0.3)
    a.legend()
fig.tight_layout()


def mean_sd(values):
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


rows = "\n".join(
    f"| {n:,} | {mean_sd(results['model samples vs real'][i])} | "
    f"{mean_sd(results['real vs real'][i])} |"
    for i, n in enumerate(sizes)
)
display(
    Markdown(
        "| N | FID model vs real | FID real vs real |\n|---|---|---|\n"
        + rows
        + "\n| ∞ (fit in 1/N) "
        f"| {extrapolated['model samples vs real']:.2f} "
        f"| {extrapolated['real vs real']:.2f} |"
        f"\n\n*mean ± sd over {repeats} draws of fresh images per N.*"
    )
)
rr_inf = extrapolated["real vs real"]
model_inf = extrapolated["model samples vs real"]
sd_model = results["model samples vs real"].std(1, ddof=1)
sd_real = results["real vs real"].std(1, ddof=1)
check(abs(rr_inf) < 0.1 * model_inf, "real vs real extrapolates near 0")
check(
    (sd_model > sd_real).all(),
    "the model's FID varies more from draw to draw than real vs real",
)

# %% [markdown]
# Real against real, one population split in two, falls like 1/N towards zero (the last row): that curve
# is the bias itself, and the right panel shows how well $k/N$ describes it. The model's curve carries a
# bias of the same kind (compare the fitted $k$ in the legend) on top of the distance that does not go
# away, and its error bars are wider than real against real at every N: the noise of a FID estimate grows
# with the FID itself. Two lessons. A FID is only comparable with another FID computed at the **same N**
# (10,000 or 50,000 in papers), or after extrapolating to N → ∞. And a single FID has an error bar even
# at N = 10,000, so a difference between two models smaller than that spread says nothing.
#
# ### An unbiased alternative: KID
#
# The kernel inception distance (KID; Bińkowski et al. 2018) compares the same two feature sets with a
# polynomial-kernel MMD², $k(x, y) = (x^\top y / F + 1)^3$. Its estimator is unbiased, so real against
# real averages to zero at every N, and small sets can be compared with large ones. `kernel_distance`
# computes it (`betavae_lib.fid`; on large sets it averages over random subsets of 1,000, as Bińkowski et
# al. do). Here each N gets the same fresh draws as the FID experiment, and each KID uses the whole sets:

# %%
kid_sizes = [n for n in (500, 2_000) if n <= n_max]
kid = {"model": np.zeros((2, repeats)), "real": np.zeros((2, repeats))}
for i, n in enumerate(kid_sizes):
    for r in range(repeats):
        reference = real_features[rng.choice(n_max, n, replace=False)]
        fresh = domain(model.sample(n, generator=draw))
        kid["model"][i, r] = kernel_distance(
            reference, fresh, subsets=1
        ).value
        split = rng.permutation(len(all_features))[: 2 * n]
        kid["real"][i, r] = kernel_distance(
            all_features[split[:n]], all_features[split[n:]], subsets=1
        ).value
display(
    Markdown(
        "| N | KID model vs real | KID real vs real |\n|---|---|---|\n"
        + "\n".join(
            f"| {n:,} | {mean_sd(kid['model'][i])} | "
            f"{mean_sd(kid['real'][i])} |"
            for i, n in enumerate(kid_sizes)
        )
        + f"\n\n*mean ± sd over {repeats} draws of fresh images per N.*"
    )
)
check(
    all(
        abs(kid["real"][i].mean()) < 3 * kid["real"][i].std(ddof=1)
        for i in range(len(kid_sizes))
    ),
    "KID real vs real is zero within its spread at every N",
)
if len(kid_sizes) == 2:
    check(
        abs(kid["model"][0].mean() - kid["model"][1].mean())
        < 2 * np.hypot(*kid["model"].std(1, ddof=1)),
        "the model's KID does not depend on N beyond its spread",
    )

# %% [markdown]
# Unlike FID, KID's real-against-real value does not shrink with N: it is zero within its spread (a single
# value can even come out negative) at every size, and the model's value does not depend on N beyond its
# spread. KID's scale is not FID's: it is a squared distance in the kernel's feature space, and the values
# are not comparable across feature networks either.
#
# ### … and on which real images
#
# The reference set matters as much as its size. MNIST's test split is stored in two halves written by
# different people: the first 5,000 digits come from NIST's SD-3 (Census Bureau employees), the last
# 5,000 from SD-1 (high-school students), and LeCun et al. note that the first half is cleaner. Two
# sets of 5,000 *real* digits, split in file order and split at random:

# %%
half = len(full_test) // 2
shuffled = torch.randperm(
    len(full_test), generator=torch.Generator().manual_seed(0)
)
test_features = domain(full_test.images)
fid_file_order = fid_from_features(
    test_features[:half], test_features[half:]
)
fid_shuffled = fid_from_features(
    test_features[shuffled[:half].numpy()],
    test_features[shuffled[half:].numpy()],
)
print(
    f"FID between two halves of the MNIST test split ({half:,} real "
    f"digits each): in file order {fid_file_order:.2f}, after shuffling "
    f"{fid_shuffled:.2f}; the k/N fit predicts a bias of "
    f"{slopes['real vs real'] / half:.2f} at N = {half:,}"
)
check(
    fid_file_order > 5 * fid_shuffled,
    "the file-order halves are much further apart than shuffled halves",
)
check(
    0.5 < fid_shuffled / (rr_inf + slopes["real vs real"] / half) < 2,
    "the shuffled halves are about as far apart as the bias predicts",
)

# %% [markdown]
# The shuffled halves are about as far apart as the sample-size bias at N = 5,000 predicts; the file-order
# halves differ by much more, with no model involved. A FID is only meaningful together with the real set
# it was computed against; every FID in this book uses a random subset of the test split.
#
# ## Reconstructions are not samples
#
# A reconstruction decodes the posterior mean of a *real* image, so it inherits that image's digit, slant
# and thickness; a sample decodes a code drawn from the prior, which must invent all of them. Papers
# sometimes report the FID of reconstructions; it says how well the decoder copies, not how well the model
# generates. We split the test split at random into a reference half and a held-out half, reconstruct
# held-out digits (none of them in the reference set, and none seen in training), and compare at the same
# N with the same reference set:

# %%
n_cmp = profile.pick(smoke=1_000, reduced=5_000, full=5_000)
order = torch.randperm(
    len(full_test), generator=torch.Generator().manual_seed(2)
).numpy()
ref_idx, held_idx = order[:n_cmp], order[n_cmp : 2 * n_cmp]
held_out = full_test.images[held_idx]
recon = model.reconstruct(held_out)
prior_samples = model.sample(n_cmp, generator=draw)
fid_recon = fid_from_features(test_features[ref_idx], domain(recon))
fid_prior = fid_from_features(test_features[ref_idx], domain(prior_samples))
print(
    f"N = {n_cmp:,}: FID of reconstructions {fid_recon:.2f}, FID of prior "
    f"samples {fid_prior:.2f}"
)
plots.image_grid(
    torch.cat([held_out[:12], recon[:12], prior_samples[:12]]),
    nrow=12,
    row_labels=["held-out real", "reconstructed", "prior sample"],
    title="Held-out digits, their reconstructions, and prior samples",
)
check(fid_recon < fid_prior / 2, "reconstructions score far better")

# %% [markdown]
# The reconstructions sit much closer to the real digits than the samples do. Reporting the first number
# as "sample quality" hides the gap between the aggregate posterior (where the encoder puts real data) and
# the prior (where samples come from), which is exactly what β changes.
#
# ## FID for each β
#
# Now the question this chapter set out to answer, on the models of chapter 3's sweep: β ∈ {0.1, 0.5, 1,
# 2, 4, 10}, on MNIST and Fashion-MNIST (each dataset scored with its own domain classifier). For each
# model we measure on test images the reconstruction term and KL (nats per image), and then, over
# several **fresh** sets of prior samples:
#
# - the sample FID at N = 10,000 against the same real set as chapter 3 (the whole test split under the
#   full profile), as mean ± sd over the sets, split into its mean and covariance terms;
# - the sample FID of one more draw, with generator seed 0 (chapter 3's sweep draws its samples with
#   this seed), to see where a single draw, as a paper reports it, lands;
# - the reconstruction FID and the sample FID at half that N, against a random half of that real set,
#   with the other half reconstructed, so reconstructions and samples are compared at the same N and
#   never on images in the reference set (a new random split for each set).

# %%
betas = [0.1, 0.5, 1.0, 2.0, 4.0, 10.0]  # chapter 3's sweep
datasets = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
n_fid = profile.pick(smoke=1_000, reduced=5_000, full=10_000)
n_sets = profile.pick(smoke=3, reduced=5, full=5)
n_half = n_fid // 2
split_rng = np.random.default_rng(3)
table, by_model, sample_rows, extractors = {}, {}, {}, {}
class_share, real_share, class_names = {}, {}, {}


def predicted_class(features, feats):
    """The domain classifier's class for each image, from its features."""
    logits = features.model.head(F.relu(torch.as_tensor(feats).float()))
    return logits.argmax(1).numpy()


for name in datasets:
    ds_train = load_dataset(name, "train").subset(profile.train_size)
    ds_test_full = load_dataset(name, "test")
    ds_test = ds_test_full.subset(profile.test_size)  # as in chapter 3
    reference = ds_test_full.subset(n_fid, seed=1).images  # as in ch. 3
    class_names[name] = ds_test_full.label_names
    features = extractors[name] = DomainFeatures(name)
    real = features(reference)
    real_stats = feature_statistics(real)
    n_classes = features.model.config["num_classes"]
    real_share[name] = np.bincount(
        predicted_class(features, real), minlength=n_classes
    ) / len(real)
    trained, _ = train_grid(
        MLPVAE,
        dict(latent_dim=20),
        ds_train.images,
        {beta: dict(beta=beta) for beta in betas},
        epochs=epochs,
        seed=0,
        device=device,
    )
    for beta, m in trained.items():
        ev = evaluate(m, ds_test.images)
        recon_feats = features(m.reconstruct(reference))
        chapter3 = fid_from_features(
            real,
            features(
                m.sample(n_fid, generator=torch.Generator().manual_seed(0))
            ),
        )
        terms, half_sample, half_recon, counts = [], [], [], 0
        for _ in range(n_sets):
            gen = features(m.sample(n_fid, generator=draw))
            terms.append(
                frechet_terms(*real_stats, *feature_statistics(gen))
            )
            perm = split_rng.permutation(n_fid)
            a, b = perm[:n_half], perm[n_half : 2 * n_half]
            half_sample.append(fid_from_features(real[a], gen[:n_half]))
            half_recon.append(fid_from_features(real[a], recon_feats[b]))
            counts = counts + np.bincount(
                predicted_class(features, gen), minlength=n_classes
            )
        terms = np.array(terms)
        table[name, beta] = dict(
            recon=ev["recon"],
            kl=ev["kl"],
            fid=terms.sum(1),
            mean_term=terms[:, 0],
            cov_term=terms[:, 1],
            chapter3=chapter3,
            half_sample=np.array(half_sample),
            half_recon=np.array(half_recon),
        )
        class_share[name, beta] = counts / counts.sum()
        sample_rows[name, beta] = m.sample(10, generator=draw)
        by_model[name, beta] = m


def mean_sd_of(name, beta, key):
    return mean_sd(table[name, beta][key])


for name, label in datasets.items():
    lines = [
        f"| {b:g} | {table[name, b]['recon']:.1f} | "
        f"{table[name, b]['kl']:.1f} | "
        f"**{mean_sd_of(name, b, 'fid')}** | "
        f"{table[name, b]['chapter3']:.2f} | "
        f"{table[name, b]['mean_term'].mean():.1f} | "
        f"{table[name, b]['cov_term'].mean():.1f} | "
        f"{mean_sd_of(name, b, 'half_sample')} | "
        f"{mean_sd_of(name, b, 'half_recon')} |"
        for b in betas
    ]
    display(
        Markdown(
            f"**{label}**\n\n"
            f"| β | test recon [nats] | test KL [nats] | sample FID, "
            f"N = {n_fid:,} | seed-0 draw | mean term | covariance "
            f"term | sample FID, N = {n_half:,} | reconstruction FID, "
            f"N = {n_half:,} |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines)
        )
    )
display(
    Markdown(
        f"*{profile.name} profile: "
        f"{profile.train_size or 60_000:,} training images, "
        f"{epochs} epoch(s); FID with domain features, mean ± sd over "
        f"{n_sets} fresh sets of prior samples; the two terms are the "
        "means over those sets of the N = "
        f"{n_fid:,} FID's parts.*"
    )
)

# %% [markdown]
# The figure shows the same numbers. Left: sample and reconstruction FID at the same N against β; the
# error bars are the standard deviations over the sets (fresh samples and a new random split of the real
# set each time). Right: the sample FID at N = 10,000 split into its two terms.

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
for (ax, ax_terms), (name, label) in zip(axes, datasets.items()):
    for key, text, marker in (
        ("half_sample", "prior samples", "o"),
        ("half_recon", "reconstructions", "s"),
    ):
        values = np.array([table[name, b][key] for b in betas])
        ax.errorbar(
            betas,
            values.mean(1),
            yerr=values.std(1, ddof=1),
            marker=marker,
            capsize=3,
            label=text,
        )
    ax.set(
        xscale="log",
        ylim=(0, None),
        xlabel="β",
        ylabel=f"FID (domain), N = {n_half:,}",
        title=f"{label}: samples vs reconstructions",
    )
    means = np.array([table[name, b]["mean_term"].mean() for b in betas])
    covs = np.array([table[name, b]["cov_term"].mean() for b in betas])
    x = np.arange(len(betas))
    ax_terms.bar(x, means, label=r"mean term $\|\mu_r - \mu_g\|^2$")
    ax_terms.bar(x, covs, bottom=means, label="covariance term")
    ax_terms.set_xticks(x, [f"{b:g}" for b in betas])
    ax_terms.set_ylim(0, 1.3 * (means + covs).max())  # room for the legend
    ax_terms.set(
        xlabel="β",
        ylabel=f"sample FID (domain), N = {n_fid:,}",
        title=f"{label}: the two terms of the sample FID",
    )
    for a in (ax, ax_terms):
        a.grid(alpha=0.3)
        a.legend()
    ax.set_xticks(betas, [f"{b:g}" for b in betas])
    ax.minorticks_off()
fig.tight_layout()

# %% [markdown]
# **Which β gives the best samples, and which differences are real?** We call two β's a **tie** when their
# mean sample FIDs (N = 10,000) differ by less than twice the standard deviation of the difference between
# two single-set FIDs, $2\sqrt{s_a^2 + s_b^2}$: a paper that draws one sample set per model, as most do,
# could then have ranked them either way. This spread covers the sample draw only. Retraining with another
# seed would add a spread of its own, so a difference that passes this rule may still not survive a new
# training run.

# %%
def tied_with_best(name):
    """The β with the lowest mean sample FID, and the β's tied with it."""
    fid_of = {b: table[name, b]["fid"] for b in betas}
    best = min(betas, key=lambda b: fid_of[b].mean())
    tied = [
        b
        for b in betas
        if b != best
        and fid_of[b].mean() - fid_of[best].mean()
        < 2 * np.hypot(fid_of[b].std(ddof=1), fid_of[best].std(ddof=1))
    ]
    return best, tied


best_beta, ties = {}, {}
lines = [
    "| dataset | lowest mean sample FID | tied with it |",
    "|---|---|---|",
]
for name, label in datasets.items():
    best_beta[name], ties[name] = tied_with_best(name)
    lines.append(
        f"| {label} | β = {best_beta[name]:g} "
        f"({mean_sd_of(name, best_beta[name], 'fid')}) | "
        + (", ".join(f"β = {b:g}" for b in ties[name]) or "none")
        + " |"
    )
display(Markdown("\n".join(lines)))
spread = {
    name: max(
        abs(table[name, b]["chapter3"] - table[name, b]["fid"].mean())
        / table[name, b]["fid"].std(ddof=1)
        for b in betas
    )
    for name in datasets
}
print(
    "largest distance of the seed-0 draw from the mean of the fresh "
    "sets, in sd: "
    + ", ".join(f"{datasets[k]} {v:.1f}" for k, v in spread.items())
)
for name in datasets:
    contenders = {best_beta[name], *ties[name]}
    check(
        not contenders & {0.1, 10.0},
        f"β = 0.1 and β = 10 are not among the best on {name}",
    )
    check(
        all(
            table[name, b]["half_recon"].mean()
            < table[name, b]["half_sample"].mean()
            for b in betas
        ),
        f"reconstructions beat samples at every β on {name}",
    )
check(best_beta["mnist"] in (1.0, 2.0), "MNIST's best β is 1 or 2")


def worse_away_from_best(name):
    """Each step away from the best β raises the mean FID, or ties."""
    i = betas.index(best_beta[name])
    for path in (betas[i:], betas[i::-1]):
        for near, far in zip(path, path[1:]):
            f_near, f_far = (
                table[name, near]["fid"],
                table[name, far]["fid"],
            )
            gap = f_far.mean() - f_near.mean()
            noise = 2 * np.hypot(f_near.std(ddof=1), f_far.std(ddof=1))
            if gap < -noise:
                return False
    return True


for name in datasets:
    check(
        worse_away_from_best(name),
        f"on {name}, each step away from the best β is worse or a tie",
    )
    rows = [table[name, b] for b in betas]
    check(
        all(a["kl"] > b["kl"] for a, b in zip(rows, rows[1:]))
        and all(a["recon"] < b["recon"] for a, b in zip(rows, rows[1:])),
        f"on {name} the KL falls and the reconstruction term rises with β",
    )
    recon_fid = [r["half_recon"] for r in rows]
    check(
        all(
            b.mean() - a.mean()
            > -2 * np.hypot(a.std(ddof=1), b.std(ddof=1))
            for a, b in zip(recon_fid, recon_fid[1:])
        ),
        f"on {name} the reconstruction FID rises with β (or ties)",
    )
check(
    best_beta["fashion_mnist"] in (0.5, 1.0),
    "Fashion-MNIST's best β is 0.5 or 1",
)

# %%
fig, axes = plt.subplots(2, 1, figsize=(9, 9))
for ax, (name, label) in zip(axes, datasets.items()):
    plots.image_grid(
        torch.cat([sample_rows[name, b] for b in betas]),
        nrow=10,
        ax=ax,
        row_labels=[f"β = {b:g}" for b in betas],
        title=f"{label}: prior samples for each β",
    )
fig.tight_layout()

# %% [markdown]
# **Does a larger β give better samples?** Two effects pull in opposite directions. A larger β pushes
# every posterior towards the prior, so the aggregate posterior covers the prior better and fewer prior
# draws land in regions the decoder never saw: samples become more *typical*. But the same pressure lets
# less information through the code (the KL column falls), so the decoder can only draw the average of
# many images, and the reconstruction term and the reconstruction FID rise (at each step, or the FID
# ties). The sample FID is where the
# two meet. With chapter 3's six β the result has the same shape on both datasets: the best samples come
# from a middle β (on MNIST β = 1 or 2, on Fashion-MNIST β = 0.5 or 1; the verdict table says which, and
# which neighbours tie with it), and both ends of the range, β = 0.1 and β = 10, are clearly worse. Each
# step away from the best β, in either direction, makes the samples worse or ties. "Higher β, better
# samples" therefore holds only from β = 0.1 up to the best value, and fails beyond it.
#
# The same model scored on another set of 10,000 samples moves by the spread in the table. The "seed-0
# draw" column is one such draw per model; the line under the verdict table says how many standard
# deviations from the mean of the fresh sets it lands, at most. A ranking that rests on one draw per model
# can flip between neighbours that tie here.
#
# What goes wrong at β = 10? In the sample grid its digits are smooth rather than blurred, and the two
# terms say which moment of the features is off (their shares are printed below). A second measurement is the classes the samples fall in: the domain
# classifier's predicted class for every sample, against the same shares for the real test images. A model
# that drops or over-produces some classes moves the mean term even when every single sample looks fine.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
tv = {}
for ax, (name, label) in zip(axes, datasets.items()):
    shares = np.array(
        [real_share[name]] + [class_share[name, b] for b in betas]
    )
    image = ax.imshow(100 * shares, cmap="viridis", aspect="auto")
    n_classes = shares.shape[1]
    for (row, col), value in np.ndenumerate(100 * shares):
        dark = value < 60 * shares.max()  # white text on dark cells
        ax.text(
            col,
            row,
            f"{value:.0f}",
            ha="center",
            va="center",
            color="white" if dark else "black",
            fontsize=7,
        )
    ax.set_yticks(
        range(len(betas) + 1), ["test"] + [f"β = {b:g}" for b in betas]
    )
    ax.set_xticks(
        range(n_classes), class_names[name], rotation=45, ha="right"
    )
    ax.set(xlabel="predicted class", title=f"{label}: class shares [%]")
    fig.colorbar(image, ax=ax, label="share of images [%]")
    for b in betas:
        tv[name, b] = (
            0.5 * np.abs(class_share[name, b] - real_share[name]).sum()
        )
fig.tight_layout()
print(
    "total-variation distance between the samples' and the test images' "
    "class shares:\n"
    + "\n".join(
        f"  {datasets[name]}: "
        + ", ".join(f"β={b:g}: {tv[name, b]:.2f}" for b in betas)
        for name in datasets
    )
)
check(
    tv["mnist", 10.0] > tv["mnist", best_beta["mnist"]],
    "MNIST's β = 10 samples cover the classes worse than the best β's",
)

# %% [markdown]
# On MNIST, the β = 10 samples spread over the ten digits less evenly than the best β's do (the
# total-variation distance above, 0 for identical shares, 1 for disjoint ones), so part of its large FID
# can come from class coverage rather than from the quality of single images. Read the two terms with it:
# the mean term measures where the feature cloud sits, and an over-produced class pulls it; the covariance
# term measures how the cloud spreads, and samples that all look alike shrink it. At large β the sample
# and reconstruction FIDs draw close (their ratio is printed below), because the decoder then produces
# nearly the same image whether its code came from the encoder or from the prior.

# %%
share = {
    key: row["mean_term"].mean() / row["fid"].mean()
    for key, row in table.items()
}
ratio = {
    (name, b): table[name, b]["half_sample"].mean()
    / table[name, b]["half_recon"].mean()
    for name in datasets
    for b in betas
}
for name, label in datasets.items():
    print(
        f"{label}, mean term / sample FID (N = {n_fid:,}): "
        + ", ".join(f"β={b:g}: {share[name, b]:.0%}" for b in betas)
    )
    print(
        f"{label}, sample FID / reconstruction FID (N = {n_half:,}): "
        + ", ".join(f"β={b:g}: {ratio[name, b]:.1f}" for b in betas)
    )
    check(
        ratio[name, 10.0] < ratio[name, 0.5],
        f"on {name} the two FIDs are closer at β = 10 than at β = 0.5",
    )
    check(
        all(ratio[name, b] > 2 for b in betas if b <= 1),
        f"on {name} reconstructions score far better than samples at β ≤ 1",
    )

# %% [markdown]
# ### A ruler for the domain-FID scale
#
# What is a "large" domain FID? Here are the values this chapter measured on MNIST, on one axis. Each is
# labelled with its N, since N shifts every value by its bias.

# %%
best_mnist = best_beta["mnist"]
ruler = {
    "real vs real, extrapolated to N = ∞": rr_inf,
    f"shuffled test halves (N = {half:,})": fid_shuffled,
    f"β = 1 reconstructions (N = {n_cmp:,})": fid_recon,
    f"test halves in file order (N = {half:,})": fid_file_order,
}
for b in sorted({best_mnist, 0.1, 10.0}):
    name = "best β" if b == best_mnist else "β"
    ruler[f"{name} = {b:g} samples (N = {n_fid:,})"] = table["mnist", b][
        "fid"
    ].mean()
ordered = sorted(ruler.items(), key=lambda kv: kv[1])
floor = 0.1  # a log axis cannot show 0 or a negative extrapolation
fig, ax = plt.subplots(figsize=(9, 3.6))
y = np.arange(len(ordered))
values = np.array([v for _, v in ordered])
ax.barh(y, np.maximum(values, floor), color="C0")
for yi, value in zip(y, values):
    ax.text(max(value, floor) * 1.1, yi, f"{value:.1f}", va="center")
ax.set_yticks(y, [label for label, _ in ordered])
ax.set_xscale("log")
ax.set_xlim(floor, values.max() * 3)
ax.set_xlabel("FID with MNIST domain features (log scale)")
ax.set_title("A ruler for the domain-FID scale on MNIST")
ax.grid(alpha=0.3, axis="x")
fig.tight_layout()
best_fid = table["mnist", best_mnist]["fid"].mean()
check(
    fid_file_order > 0.5 * best_fid,
    "the file-order halves are more than half as far apart as the best "
    "model is from the data",
)
check(
    table["mnist", 10.0]["fid"].mean() - best_fid > fid_file_order,
    "the step from the best β to β = 10 exceeds the file-order distance",
)

# %% [markdown]
# The two halves of MNIST's own test split, written by two groups of people, are more than half as far
# apart as the best model's samples are from the test digits. Differences of a few units between the β's
# near the best are small next to that distance between two groups of writers of the same digits; the
# step from the best β to β = 10 is larger than it.
#
# ### Beside a published Inception FID
#
# Lucic et al. (2018, "Are GANs Created Equal?") trained a VAE on Fashion-MNIST as a baseline for their
# GANs and scored its samples with Inception FID: 10,000 samples against 10,000 test images, grey images
# repeated to three channels, TensorFlow's Inception. Their best VAE is reported as 58.7 ± 1.2 (we could not
# check this figure against the paper's table, so read it as a citation, not a measurement). Their VAE is
# convolutional; ours is the MLP above, and pytorch-fid's Inception is a port of theirs that resizes on
# another grid, so expect the same order of magnitude rather than the same digits. Where Inception runs,
# the cell scores the β = 1 Fashion-MNIST model the same way, beside its domain FID from the table.

# %%
n_lucic = profile.pick(smoke=50, reduced=1_000, full=10_000)
if inception is None:
    print(
        "Skipped: Inception FID needs pytorch-fid, torchvision and the "
        f"Inception weights ({why_not.split(';')[0]}). At roughly half a "
        f"second per image per CPU core, its {2 * n_lucic:,} passes take "
        f"about {n_lucic / 60:.0f} core-minutes; a GPU does them in "
        "seconds."
    )
else:
    start = time.perf_counter()
    fm_test = load_dataset("fashion_mnist", "test").subset(n_lucic)
    fm_samples = by_model["fashion_mnist", 1.0].sample(
        n_lucic, generator=draw
    )
    fm_fid = fid(fm_test.images, fm_samples, extractor=inception)
    print(
        f"Fashion-MNIST, β = 1, N = {n_lucic:,}: Inception FID "
        f"{fm_fid.value:.1f} (mean term {fm_fid.mean_term:.1f}, "
        f"covariance term {fm_fid.covariance_term:.1f}); Lucic et al.'s "
        "VAE: reported as 58.7 ± 1.2; domain FID (N = "
        f"{n_fid:,}) {mean_sd_of('fashion_mnist', 1.0, 'fid')}; "
        f"{time.perf_counter() - start:.0f} s on {device}"
    )

# %% [markdown]
# ## What you should now know
#
# - FID is the **squared** Fréchet (2-Wasserstein) distance between Gaussians fitted to two sets of
#   features: a mean term plus a covariance term, in squared feature units. The library computes pytorch-fid's
#   value through a symmetric eigendecomposition.
# - Its value depends on the feature network (domain classifier or Inception, and how images are resized
#   for it), on N (a bias that shrinks like $k/N$), on the draw (a spread that does not vanish at
#   N = 10,000), and on the real set (two halves of MNIST's test split, in file order, are far apart).
#   Compare FIDs only at the same N, on the same real set, with an error bar from fresh sample sets.
# - Reconstruction FID is below sample FID at every β, and far below it for β ≤ 1: it measures copying,
#   not generating.
# - On both datasets the best sample FID is at a middle β, and β = 0.1 and β = 10 are clearly worse;
#   neighbouring β's near the best can tie, which the verdict table above says for this run.
#
# ## Exercises
#
# Each has a check you can run; the answers are in the collapsed block.
#
# 1. **FID by hand in one dimension.** Real features $\mathcal N(0, 1)$, generated $\mathcal N(1, 4)$ (mean 1,
#    variance 4). What is the FID? Work it out from the formula, then check it with `frechet_distance`.
# 2. **Units.** Multiply every feature of both sets by 3. By what factor does the FID change, and the
#    mean and covariance terms each?
# 3. **How many images for a small bias?** Using the real-vs-real fit above, $\mathrm{FID}_N \approx
#    \mathrm{FID}_\infty + k/N$, how many images per set does it take for the bias of a real-vs-real
#    FID to fall below 1?
#
# :::{admonition} Answers
# :class: dropdown
#
# 1. Mean term $(0 - 1)^2 = 1$; covariance term $1 + 4 - 2\sqrt{1 \cdot 4} = 1$; FID = 2. (The
#    2-Wasserstein distance itself is $\sqrt 2$.)
# 2. Both terms are quadratic in the features, so each grows 9-fold, and so does the FID.
# 3. $k/N < 1$ means $N > k$: the fitted $k$ printed in the legend of the FID-vs-N figure (of the order of
#    10,000 for the 128-d domain features under the full profile).
# :::

# %% tags=["hide-input"]
# Exercise 1
ex1 = frechet_distance(
    np.array([0.0]), np.array([[1.0]]), np.array([1.0]), np.array([[4.0]])
)
print(f"exercise 1: FID = {ex1:.6f}")
assert abs(ex1 - 2.0) < 1e-12

# Exercise 2
a_feats, b_feats = real_features[:2_000], fake_features[:2_000]
terms1 = frechet_terms(
    *feature_statistics(a_feats), *feature_statistics(b_feats)
)
terms3 = frechet_terms(
    *feature_statistics(3 * a_feats), *feature_statistics(3 * b_feats)
)
ratios = [t3 / t1 for t1, t3 in zip(terms1, terms3)]
print(
    "exercise 2: mean term × {:.4f}, covariance term × {:.4f}".format(
        *ratios
    )
)
assert np.allclose(ratios, 9.0, rtol=1e-6)

# Exercise 3
k_real = slopes["real vs real"]
print(
    f"exercise 3: k = {k_real:,.0f}, so N > {k_real:,.0f} images per set "
    f"gives a bias below 1 (at N = {sizes[-1]:,}: "
    f"{k_real / sizes[-1]:.2f})"
)
check(5_000 < k_real < 50_000, "k is of the order of 10,000")

# %% [markdown]
# ## What to try
#
# - Score with `features="inception"` where pytorch-fid and torchvision are installed, and compare the
#   ranking of the β rows with the domain-feature ranking.
# - Sample with a smaller prior scale, `model.sample(n, std=0.8)` (the "truncation trick"): typical samples
#   get better FID at the price of diversity. Which term of the formula moves?
# - Repeat the sample-size experiment for the β = 10 model: is the bias the same?
# - Improved precision and recall (Kynkäänniemi et al. 2019) split "quality" from "coverage" with
#   k-nearest-neighbour balls in feature space. Compute them on the domain features for β = 1 and β = 10:
#   which of the two does β = 10 lose?
#
# ## References
#
# - Heusel, M., Ramsauer, H., Unterthiner, T., Nessler, B. & Hochreiter, S. (2017). GANs trained by a two
#   time-scale update rule converge to a local Nash equilibrium. *NeurIPS*. [arXiv:1706.08500](https://arxiv.org/abs/1706.08500)
# - Dowson, D. C. & Landau, B. V. (1982). The Fréchet distance between multivariate normal distributions.
#   *Journal of Multivariate Analysis* 12(3).
# - Szegedy, C., Vanhoucke, V., Ioffe, S., Shlens, J. & Wojna, Z. (2016). Rethinking the Inception
#   architecture for computer vision. *CVPR*. [arXiv:1512.00567](https://arxiv.org/abs/1512.00567)
# - Seitzer, M. (2020). pytorch-fid: FID score for PyTorch. [github.com/mseitzer/pytorch-fid](https://github.com/mseitzer/pytorch-fid)
# - Parmar, G., Zhang, R. & Zhu, J.-Y. (2022). On aliased resizing and surprising subtleties in GAN
#   evaluation. *CVPR*. [arXiv:2104.11222](https://arxiv.org/abs/2104.11222)
# - Chong, M. J. & Forsyth, D. (2020). Effectively unbiased FID and Inception Score and where to find
#   them. *CVPR*. [arXiv:1911.07023](https://arxiv.org/abs/1911.07023)
# - Bińkowski, M., Sutherland, D. J., Arbel, M. & Gretton, A. (2018). Demystifying MMD GANs. *ICLR*.
#   [arXiv:1801.01401](https://arxiv.org/abs/1801.01401)
# - Kynkäänniemi, T., Karras, T., Laine, S., Lehtinen, J. & Aila, T. (2019). Improved precision and recall
#   metric for assessing generative models. *NeurIPS*. [arXiv:1904.06991](https://arxiv.org/abs/1904.06991)
# - Lucic, M., Kurach, K., Michalski, M., Gelly, S. & Bousquet, O. (2018). Are GANs created equal? A
#   large-scale study. *NeurIPS*. [arXiv:1711.10337](https://arxiv.org/abs/1711.10337)
# - LeCun, Y., Bottou, L., Bengio, Y. & Haffner, P. (1998). Gradient-based learning applied to document
#   recognition. *Proceedings of the IEEE* 86(11). (The MNIST dataset.)
# - Xiao, H., Rasul, K. & Vollgraf, R. (2017). Fashion-MNIST: a novel image dataset for benchmarking
#   machine learning algorithms. [arXiv:1708.07747](https://arxiv.org/abs/1708.07747)

# %% tags=["remove-cell"]
# The numbers this chapter reports, for the book's run manifest.
from betavae_lib.report import headline

per_beta = {}
for (d, b), row in table.items():
    key = f"fid_{d}_beta{b:g}".replace(".", "_")
    per_beta[key] = row["fid"].mean()
    per_beta[key + "_sd"] = row["fid"].std(ddof=1)
    per_beta[key.replace("fid_", "fid_recon_")] = row["half_recon"].mean()
headline(
    profile=profile.name,
    fid_domain_beta1_mnist=library,
    fid_real_vs_real_inf=rr_inf,
    fid_model_inf=model_inf,
    fid_halves_file_order=fid_file_order,
    fid_halves_shuffled=fid_shuffled,
    fid_recon_mnist=fid_recon,
    fid_prior_mnist=fid_prior,
    fid_sets_per_beta=n_sets,
    mnist_best_fid_beta=best_beta["mnist"],
    fashion_mnist_best_fid_beta=best_beta["fashion_mnist"],
    mnist_tied_betas=", ".join(f"{b:g}" for b in ties["mnist"]),
    fashion_mnist_tied_betas=", ".join(
        f"{b:g}" for b in ties["fashion_mnist"]
    ),
    **per_beta,
    **(
        {}
        if inception is None
        else dict(
            fid_inception_mnist_beta1=fid_inception,
            fid_inception_resize_shift=shift,
            fid_inception_fashion_beta1=fm_fid.value,
        )
    ),
);

"""Metrics checked against independent references: scikit-learn's mutual_info_score,
SciPy's sqrtm, closed forms (diagonal Fréchet distance, linear-Gaussian log-likelihood),
torch.distributions, and disentanglement_lib's own sanity cases."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from betavae_lib import metrics
from betavae_lib.data import DSprites
from betavae_lib.losses import gaussian_kl
from betavae_lib.models import MLPVAE

sklearn_metrics = pytest.importorskip(
    "sklearn.metrics", reason="the MIG reference needs scikit-learn"
)


# ----------------------------------------------------------------------------- helpers


def reference_mig(codes, factors, n_bins=20):
    """disentanglement_lib's MIG written plainly: per-dimension histogram bins, sklearn
    MI loops."""
    mus, ys = np.asarray(codes).T, np.asarray(factors).T
    discretized = np.zeros_like(mus)
    for i in range(mus.shape[0]):
        discretized[i, :] = np.digitize(
            mus[i, :], np.histogram(mus[i, :], n_bins)[1][:-1]
        )
    m = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            m[i, j] = sklearn_metrics.mutual_info_score(ys[j, :], discretized[i, :])
    h = np.array([sklearn_metrics.mutual_info_score(y, y) for y in ys])
    sorted_m = np.sort(m, axis=0)[::-1]
    return np.mean((sorted_m[0] - sorted_m[1]) / h), m, h


class FactorsAsObservations:
    """Ground-truth data whose observations are the factor classes themselves (like
    disentanglement_lib's IdentityObservationsData), so an identity encoder is a perfect
    one."""

    def __init__(self, factor_sizes=(10,) * 10):
        self.factor_sizes = tuple(factor_sizes)

    def sample_factors(self, n, rng):
        return np.stack(
            [rng.integers(0, s, size=n) for s in self.factor_sizes], axis=-1
        )

    def sample_observations_from_factors(self, classes, rng):
        return np.asarray(classes, dtype=np.float64)


def identity(x):
    return x


def random_encoder(dim, seed=0):
    """An encoder that ignores its input: codes are fresh Gaussian noise."""
    rng = np.random.default_rng(seed)
    return lambda x: rng.normal(size=(len(x), dim))


# ----------------------------------------------------------------------------- MIG


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mig_equals_sklearn_reference_on_random_data(dtype):
    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, s, size=4000) for s in (3, 6, 8)], axis=-1)
    codes = rng.normal(size=(4000, 5))
    codes[:, 0] += factors[:, 0]
    codes[:, 1] += 0.3 * factors[:, 2]
    codes = codes.astype(dtype)
    got = metrics.mig(codes, factors)
    want, want_mi, want_h = reference_mig(codes, factors)
    assert abs(got.score - want) < 1e-10
    np.testing.assert_allclose(got.mi, want_mi, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.entropy, want_h, rtol=0, atol=1e-10)
    assert got.mi.shape == (5, 3) and got.per_factor.shape == (3,)
    assert got.score == pytest.approx(got.per_factor.mean())


def test_mig_accepts_tensors_and_other_bin_counts():
    rng = np.random.default_rng(1)
    factors = rng.integers(0, 5, size=(2000, 2))
    codes = rng.normal(size=(2000, 3)) + factors[:, [0, 1, 0]]
    want, _, _ = reference_mig(codes, factors, n_bins=7)
    got = metrics.mig(torch.from_numpy(codes), torch.from_numpy(factors), n_bins=7)
    assert abs(got.score - want) < 1e-10


def test_histogram_discretize_matches_numpy_definition():
    x = np.random.default_rng(2).normal(size=(500, 3)).astype(np.float32)
    got = metrics.histogram_discretize(x, 20)
    for d in range(3):
        want = np.digitize(x[:, d], np.histogram(x[:, d], 20)[1][:-1])
        np.testing.assert_array_equal(got[:, d], want)
    assert got.min() >= 1 and got.max() <= 20


def test_discrete_mutual_info_and_entropy_match_sklearn():
    rng = np.random.default_rng(3)
    a = rng.integers(-3, 4, size=(1000, 2))  # negative labels too
    b = np.stack([rng.integers(0, 3, size=1000), rng.integers(5, 9, size=1000)], -1)
    b[:, 0] = (a[:, 0] > 0) + b[:, 0] % 2
    mi = metrics.discrete_mutual_info(a, b)
    for i in range(2):
        for j in range(2):
            assert mi[i, j] == pytest.approx(
                sklearn_metrics.mutual_info_score(b[:, j], a[:, i]), abs=1e-12
            )
    h = metrics.discrete_entropy(b)
    assert h == pytest.approx(
        [sklearn_metrics.mutual_info_score(y, y) for y in b.T], abs=1e-12
    )


def test_discrete_mutual_info_with_wide_label_ranges_matches_sklearn():
    rng = np.random.default_rng(4)
    factor = rng.integers(0, 50, size=3000)
    codes = np.stack(
        [
            rng.integers(0, 10**9, size=3000),
            factor * 10**6 + rng.integers(0, 3, size=3000),
        ],
        -1,
    )
    mi = metrics.discrete_mutual_info(codes, factor[:, None])
    want = [sklearn_metrics.mutual_info_score(factor, c) for c in codes.T]
    np.testing.assert_allclose(mi[:, 0], want, rtol=0, atol=1e-12)


def identity_observations(n=3000, seed=0):
    return FactorsAsObservations().sample_factors(n, np.random.default_rng(seed))


def test_mig_ground_truth_codes_score_high():
    factors = identity_observations()
    assert 0.9 <= metrics.mig(factors.astype(float), factors).score <= 1.0


def test_mig_constant_codes_score_low():
    factors = identity_observations()
    assert 0.0 <= metrics.mig(np.zeros(factors.shape), factors).score <= 0.2


def test_mig_duplicated_codes_score_low():
    factors = identity_observations()
    codes = np.hstack([factors, factors]).astype(float)
    assert 0.0 <= metrics.mig(codes, factors).score <= 0.1


@pytest.mark.parametrize(
    "codes, factors, match",
    [
        (np.zeros((10, 3)), np.zeros((9, 2), dtype=int), "same number of rows"),
        (np.full((10, 3), np.nan), np.tile(np.arange(10), (2, 1)).T, "NaN or Inf"),
        (np.zeros((10, 3)), np.full((10, 2), 0.5), "integer classes"),
        (np.zeros(10), np.zeros((10, 2), dtype=int), r"shape \(N, D\)"),
        (np.zeros((10, 3)), np.zeros(10, dtype=int), r"shape \(N, K\)"),
        (np.zeros((10, 1)), np.tile(np.arange(10), (2, 1)).T, "at least 2"),
        (
            np.zeros((10, 3)),
            np.stack([np.arange(10), np.zeros(10, int)], -1),
            "single value",
        ),
    ],
)
def test_mig_rejects_bad_inputs(codes, factors, match):
    with pytest.raises(ValueError, match=match):
        metrics.mig(codes, factors)


def test_mig_accepts_float_factors_with_whole_values():
    factors = identity_observations(500)
    assert (
        metrics.mig(factors, factors.astype(np.float32)).score
        == metrics.mig(factors, factors).score
    )


# ----------------------------------------------------------- FactorVAE and β-VAE scores

SMALL = dict(batch_size=32, num_train=400, num_eval=200)


def test_factor_vae_score_ground_truth_is_perfect():
    result = metrics.factor_vae_score(
        identity, FactorsAsObservations(), num_variance_estimate=1000, **SMALL
    )
    assert result.score == 1.0 and result.train_accuracy == 1.0
    assert result.num_active_dims == 10 and result.active.all()
    assert result.train_votes.sum() == SMALL["num_train"]


def test_factor_vae_score_random_codes_near_chance():
    result = metrics.factor_vae_score(
        random_encoder(10), FactorsAsObservations(), num_variance_estimate=1000, **SMALL
    )
    assert result.score < 0.25  # chance is 0.1


def test_factor_vae_score_constant_codes_have_no_active_dims():
    result = metrics.factor_vae_score(
        np.zeros_like, FactorsAsObservations(), num_variance_estimate=100, **SMALL
    )
    assert result.score == 0.0 and result.num_active_dims == 0


def test_factor_vae_score_prunes_collapsed_latents():
    def encode(x):  # the ten factors plus two collapsed latents (std 0.01 < 0.05)
        return np.hstack([x, 0.01 * np.random.default_rng(0).normal(size=(len(x), 2))])

    result = metrics.factor_vae_score(
        encode, FactorsAsObservations(), num_variance_estimate=1000, **SMALL
    )
    assert result.num_active_dims == 10 and not result.active[10:].any()
    assert result.score == 1.0


def test_factor_vae_score_is_seeded_and_independent_of_call_size():
    # deterministic, imperfect
    encode = lambda x: x + np.sin(x.sum(1, keepdims=True))  # noqa: E731
    data = FactorsAsObservations((3, 4, 5))
    a = metrics.factor_vae_score(
        encode, data, seed=3, num_variance_estimate=500, **SMALL
    )
    b = metrics.factor_vae_score(
        encode, data, seed=3, num_variance_estimate=500, images_per_call=32, **SMALL
    )
    assert a.score == b.score and a.train_accuracy == b.train_accuracy
    np.testing.assert_array_equal(a.train_votes, b.train_votes)


def test_beta_vae_score_ground_truth_is_perfect():
    result = metrics.beta_vae_score(identity, FactorsAsObservations(), **SMALL)
    assert result.score == 1.0 and result.train_accuracy == 1.0


def test_beta_vae_score_random_codes_near_chance():
    result = metrics.beta_vae_score(
        random_encoder(10), FactorsAsObservations(), **SMALL
    )
    assert result.score < 0.3  # chance is 0.1


def test_scores_accept_model_style_encoders_returning_tensor_tuples():
    def encode(x):  # like model.encode: (mu, logvar) tensors
        t = torch.as_tensor(x, dtype=torch.float32)
        return t, torch.zeros_like(t)

    assert metrics.beta_vae_score(encode, FactorsAsObservations(), **SMALL).score == 1.0


def test_scores_on_procedural_dsprites_with_a_factor_reading_encoder():
    """A tiny run on rendered dSprites: the encoder reads position from the image
    centroid (a code that follows posX and posY only), so FactorVAE votes those two
    right, not the rest."""
    data = DSprites(source="procedural")

    def centroid(images):
        img = torch.as_tensor(images)[:, 0]
        mass = img.sum((1, 2)).clamp(min=1)
        grid = torch.arange(img.shape[-1], dtype=img.dtype)
        x = (img.sum(1) * grid).sum(1) / mass
        y = (img.sum(2) * grid).sum(1) / mass
        return torch.stack([x, y, mass / 100], 1)

    result = metrics.factor_vae_score(
        centroid,
        data,
        batch_size=16,
        num_train=60,
        num_eval=60,
        num_variance_estimate=200,
    )
    assert result.num_active_dims == 3
    assert (
        np.argmax(result.train_votes[:, 0]) == 3
        and np.argmax(result.train_votes[:, 1]) == 4
    )
    assert (
        0.3 < result.score < 0.9
    )  # posX and posY (2 of 5 factors) plus scale, not the rest


def test_scores_reject_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        metrics.factor_vae_score(identity, FactorsAsObservations(), batch_size=1)
    with pytest.raises(TypeError, match="factor_sizes"):
        metrics.beta_vae_score(identity, object())
    with pytest.raises(ValueError, match=r"shape \(B, D\)"):
        metrics.beta_vae_score(lambda x: x[:, 0], FactorsAsObservations(), **SMALL)


# --------------------------------------------------------------------- Fréchet distance


def random_covariance(rng, dim, rank=None):
    a = rng.normal(size=(dim, rank or dim + 3))
    return a @ a.T / a.shape[1]


def reference_frechet(mu1, s1, mu2, s2):
    """‖Δμ‖² + tr S1 + tr S2 − 2 tr (S1^½ S2 S1^½)^½: the symmetric form, through
    SciPy's sqrtm."""
    r1 = np.real(scipy.linalg.sqrtm(s1))
    cross = np.real(scipy.linalg.sqrtm(r1 @ s2 @ r1))
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross)
    )


def test_frechet_distance_matches_scipy_reference_on_random_covariances():
    rng = np.random.default_rng(0)
    for dim in (1, 4, 16):
        mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
        s1, s2 = random_covariance(rng, dim), random_covariance(rng, dim)
        got = metrics.frechet_distance(mu1, s1, mu2, s2)
        assert got == pytest.approx(
            reference_frechet(mu1, s1, mu2, s2), rel=1e-8, abs=1e-8
        )


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(
        want, rel=1e-10
    )


def test_frechet_distance_identical_inputs_is_zero_and_tensors_work():
    rng = np.random.default_rng(2)
    mu, s = rng.normal(size=8), random_covariance(rng, 8)
    assert abs(metrics.frechet_distance(mu, s, mu, s)) < 1e-8
    assert (
        abs(metrics.frechet_distance(torch.tensor(mu), torch.tensor(s), mu, s)) < 1e-8
    )


def test_frechet_distance_rank_deficient_covariances_are_finite():
    rng = np.random.default_rng(3)
    s1, s2 = random_covariance(rng, 12, rank=3), random_covariance(rng, 12, rank=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = metrics.frechet_distance(np.zeros(12), s1, np.ones(12), s2)
    assert np.isfinite(d) and d >= 12 - 1e-6


def test_frechet_distance_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(
        ValueError, match="imaginary"
    ):  # not a covariance: negative variance
        metrics.frechet_distance(
            np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2)
        )


def test_feature_statistics_like_numpy_and_warns_when_singular():
    x = np.random.default_rng(4).normal(size=(50, 5)).astype(np.float32)
    mu, sigma = metrics.feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(
        sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12
    )
    with pytest.warns(UserWarning, match="singular"):
        metrics.feature_statistics(x[:4])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.feature_statistics(x[:1])


# ------------------------------------------------------------- active units, KL summary


def test_active_units_on_constructed_data():
    rng = np.random.default_rng(5)
    mu = rng.normal(size=(20000, 4)) * np.array(
        [1.0, 0.2, 0.05, 0.0]
    )  # variances 1, 0.04, 0.0025, 0
    result = metrics.active_units(torch.from_numpy(mu))
    assert result.count == 2
    np.testing.assert_array_equal(result.mask, [True, True, False, False])
    np.testing.assert_allclose(result.variance, mu.var(0), rtol=1e-12)
    assert metrics.active_units(mu, threshold=0.001).count == 3
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        metrics.active_units(np.zeros(5))


def test_kl_summary_sorts_and_totals():
    mu, logvar = torch.tensor([[2.0, 0.0, 0.5]] * 4), torch.zeros(4, 3)
    kl = gaussian_kl(mu, logvar)  # (B, D): 2, 0, 0.125 nats
    summary = metrics.kl_summary(kl)
    np.testing.assert_array_equal(summary.order, [0, 2, 1])
    np.testing.assert_allclose(summary.sorted, [2.0, 0.125, 0.0])
    assert summary.total == pytest.approx(2.125)
    np.testing.assert_allclose(summary.cumulative_share, [2 / 2.125, 1.0, 1.0])
    np.testing.assert_array_equal(summary.active(0.1), [0, 2])
    with pytest.raises(ValueError, match="never negative"):
        metrics.kl_summary(np.array([1.0, -0.5]))


# --------------------------------------------------------------------------- IWAE bound


class OrthogonalLinearGaussian(nn.Module):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s² I) with orthogonal columns in W, so the
    exact posterior is diagonal: precision 1 + ‖w_d‖²/s², mean Wᵀ(x − b)/s² / precision.
    ``shift``/``widen`` perturb the encoder away from it.
    log p(x) = log N(x; b, WWᵀ + s² I) exactly."""

    def __init__(self, pixels=16, dim=3, s=0.3, shift=0.0, widen=1.0, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(
            torch.randn(pixels, dim, generator=g, dtype=torch.float64)
        )
        self.W = q * torch.linspace(0.5, 2.0, dim, dtype=torch.float64)
        self.b = 0.1 * torch.randn(pixels, generator=g, dtype=torch.float64)
        self.s, self.shift, self.widen, self.side = (
            s,
            shift,
            widen,
            int(math.isqrt(pixels)),
        )

    def encode(self, x):
        x = x.flatten(1)
        precision = 1 + (self.W**2).sum(0) / self.s**2
        mean = (x - self.b) @ self.W / self.s**2 / precision
        return mean + self.shift, (
            -torch.log(precision) + 2 * math.log(self.widen)
        ).expand_as(mean)

    def decode(self, z):
        return (z @ self.W.T + self.b).view(-1, 1, self.side, self.side)

    def nll(self, mean, x):
        return -torch.distributions.Normal(mean, self.s).log_prob(x).flatten(1).sum(1)

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(
            len(self.b), dtype=torch.float64
        )
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(
            x.flatten(1)
        )

    def sample(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g, dtype=torch.float64)
        return self.decode(z) + self.s * torch.randn(
            n, 1, self.side, self.side, generator=g, dtype=torch.float64
        )


def test_iwae_bound_is_exact_with_the_true_posterior():
    model = OrthogonalLinearGaussian()
    x = model.sample(6)
    exact = model.log_px(x)
    for k, chunk in ((1, None), (5000, 64)):  # 79 chunks, the last one partial
        got = metrics.iwae_bound(
            model, x, k, chunk_size=chunk, likelihood=model.nll, seed=0
        )
        assert got.shape == (6,)
        torch.testing.assert_close(got, exact, rtol=0, atol=1e-8)


def test_iwae_bound_is_numerically_stable_for_large_log_weights():
    model = OrthogonalLinearGaussian(
        pixels=1024, dim=4, s=0.01
    )  # log p(x) ≈ +3,000 nats: exp() would overflow
    x = model.sample(3)
    exact = model.log_px(x)
    assert (exact > 1000).all()
    got = metrics.iwae_bound(model, x, 100, chunk_size=7, likelihood=model.nll, seed=0)
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-6)


def test_iwae_bound_tightens_with_k_and_stays_below_log_px():
    model = OrthogonalLinearGaussian(shift=0.4, widen=1.6)
    x = model.sample(64)
    exact = model.log_px(x)
    means = []
    for k in (1, 10, 100, 1000):
        bound = metrics.iwae_bound(model, x, k, likelihood=model.nll, seed=k)
        means.append(float((bound - exact).mean()))
    assert means[0] < means[1] < means[2] < means[3] < 0
    assert means[3] > -0.1 and means[0] < -1.0


def test_iwae_bound_of_a_vae_exceeds_its_elbo():
    torch.manual_seed(0)
    model = MLPVAE(latent_dim=4, hidden=(64,))
    x = (
        torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.7
    ).float()
    n = 500
    with (
        torch.no_grad()
    ):  # ELBO with the exact KL and a 500-sample reconstruction average
        mu, logvar = model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(
            n, *mu.shape, generator=torch.Generator().manual_seed(2)
        )
        recon = torch.distributions.Bernoulli(
            logits=model.decode(z.flatten(0, 1))
        ).log_prob(x.repeat(n, 1, 1, 1))
        elbo = recon.flatten(1).sum(1).view(n, 16).mean(0) - gaussian_kl(
            mu, logvar
        ).sum(1)
    single = torch.stack(
        [metrics.iwae_bound(model, x, 1, seed=s) for s in range(100)]
    ).mean(0)
    torch.testing.assert_close(
        single.mean(), elbo.mean(), rtol=0, atol=0.5
    )  # k = 1 is an ELBO estimate
    bound3 = metrics.iwae_bound(model, x, 3, seed=0)
    bound100 = metrics.iwae_bound(model, x, 100, chunk_size=7, seed=1)
    assert elbo.mean() + 1.0 < bound3.mean() < bound100.mean()
    assert (bound100 >= elbo).all()
    assert model.training  # mode restored


def test_iwae_bound_gaussian_likelihoods_match_torch_distributions():
    torch.manual_seed(0)
    model = MLPVAE(latent_dim=2, hidden=(16,))
    x = torch.rand(4, 1, 28, 28)

    def normal_nll(sigma):
        return lambda logits, t: (
            -torch.distributions.Normal(torch.sigmoid(logits), sigma)
            .log_prob(t)
            .flatten(1)
            .sum(1)
        )

    got = metrics.iwae_bound(model, x, 50, likelihood="gaussian", sigma=0.2, seed=0)
    want = metrics.iwae_bound(model, x, 50, likelihood=normal_nll(0.2), seed=0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)
    with torch.no_grad():
        model.log_sigma.fill_(math.log(0.5))
    got = metrics.iwae_bound(model, x, 50, likelihood="gaussian_learned", seed=0)
    want = metrics.iwae_bound(model, x, 50, likelihood=normal_nll(0.5), seed=0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)


def test_iwae_bound_rejects_bad_arguments():
    model = OrthogonalLinearGaussian()
    x = model.sample(2)
    for k in (0, 2.5):
        with pytest.raises(ValueError, match="k must be"):
            metrics.iwae_bound(model, x, k, likelihood=model.nll)
    with pytest.raises(ValueError, match="chunk_size"):
        metrics.iwae_bound(model, x, 10, chunk_size=0, likelihood=model.nll)

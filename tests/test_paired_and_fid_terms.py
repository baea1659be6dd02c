"""Differences with their noise: per-image ELBO terms, paired differences, and FID's
two terms, each checked against a closed form, scipy or the library's own totals."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from test_train import prototypes

from betavae_lib import MLPVAE, evaluate
from betavae_lib.fid import FIDResult, frechet_distance, frechet_terms
from betavae_lib.metrics import paired_difference
from betavae_lib.train import per_image_terms


def model(seed):
    torch.manual_seed(seed)
    return MLPVAE(latent_dim=3, hidden=(16,))


def test_per_image_terms_average_to_evaluate_from_the_same_samples():
    x = prototypes(300)
    m = model(0)
    terms = per_image_terms(m, x, batch_size=128, seed=4)
    ev = evaluate(m, x, batch_size=128, seed=4)
    assert terms["recon"].shape == terms["kl"].shape == (300,)
    # float32 sums of ~500-nat terms over 300 images: agree to ~1e-5 relative
    assert terms["recon"].mean() == pytest.approx(ev["recon"], rel=1e-5)
    assert terms["kl"].mean() == pytest.approx(ev["kl"], rel=1e-5)
    np.testing.assert_allclose(terms["neg_elbo"], terms["recon"] + terms["kl"])
    again = per_image_terms(m, x, batch_size=128, seed=4)  # the same samples again
    np.testing.assert_array_equal(again["neg_elbo"], terms["neg_elbo"])


def test_paired_difference_is_scipys_paired_t():
    rng = np.random.default_rng(0)
    shared = rng.normal(100, 20, size=500)  # what the images share: large
    a = shared + rng.normal(0, 1, size=500)
    b = shared + 0.3 + rng.normal(0, 1, size=500)
    d = paired_difference(a, b)
    t = stats.ttest_rel(a, b).statistic
    assert d.mean / d.se == pytest.approx(t)
    assert d.mean == pytest.approx(np.mean(a - b))
    # unpaired, the images' own spread (sd 20) would hide the 0.3-nat difference
    assert d.se < 0.1 < np.std(a, ddof=1) / math.sqrt(500)
    assert str(d).startswith("-0.") and "±" in str(d)


def test_paired_difference_of_two_models_on_the_same_images():
    x = prototypes(200)
    a = per_image_terms(model(0), x)["neg_elbo"]
    b = per_image_terms(model(1), x)["neg_elbo"]
    d = paired_difference(a, b)
    assert d.n == 200 and d.mean == pytest.approx(a.mean() - b.mean())


@pytest.mark.parametrize(
    "a, b, match",
    [([1.0], [2.0], "at least 2"), ([1, 2], [1, 2, 3], "same number"),
     ([1, float("nan")], [1, 2], "finite")],
)  # fmt: skip
def test_paired_difference_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(a, b)


def test_frechet_terms_closed_forms():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    # commuting (diagonal) covariances: the covariance term is Σ (√a − √b)²
    a, b = rng.uniform(0.5, 2, size=4), rng.uniform(0.5, 2, size=4)
    mean, cov = frechet_terms(mu1, np.diag(a), mu2, np.diag(b))
    assert mean == pytest.approx(np.sum((mu1 - mu2) ** 2))
    assert cov == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    # a full covariance against itself: no covariance term
    m = rng.normal(size=(4, 4))
    s = m @ m.T + np.eye(4)
    assert frechet_terms(mu1, s, mu2, s)[1] == pytest.approx(0, abs=1e-9)
    assert sum(frechet_terms(mu1, s, mu2, np.eye(4))) == pytest.approx(
        frechet_distance(mu1, s, mu2, np.eye(4))
    )


def test_fid_result_keeps_its_terms():
    r = FIDResult(3.0, 10, 10, "domain:mnist", 1.0, 2.0)
    assert r.mean_term + r.covariance_term == r.value
    assert math.isnan(FIDResult(1.0, 2, 2, "x").mean_term)

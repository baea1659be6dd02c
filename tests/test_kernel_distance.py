"""The kernel inception distance (KID) of ``betavae_lib.fid``, checked against a
pair-by-pair sum with scikit-learn's polynomial kernel, a closed form for the linear
kernel, and the unbiasedness that distinguishes it from FID."""

import numpy as np
import pytest
from sklearn.metrics.pairwise import polynomial_kernel

from betavae_lib.fid import KIDResult, kernel_distance, polynomial_mmd2


def mmd2_pair_by_pair(x, y, degree=3, coef0=1.0):
    """Unbiased MMD², Bińkowski et al. 2018 eq. 4, one explicit sum per term."""
    m = len(x)
    kernel = lambda a, b: polynomial_kernel(  # noqa: E731
        a, b, degree=degree, gamma=1.0 / x.shape[1], coef0=coef0
    )
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    xx = sum(k_xx[i, j] for i in range(m) for j in range(m) if i != j)
    yy = sum(k_yy[i, j] for i in range(m) for j in range(m) if i != j)
    xy = sum(k_xy[i, j] for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / m**2


def test_polynomial_mmd2_equals_the_pair_by_pair_sum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.normal(0.3, 1.2, size=(30, 5))
    for degree, coef0 in ((3, 1.0), (2, 0.5), (1, 0.0)):
        assert polynomial_mmd2(x, y, degree, coef0) == pytest.approx(
            mmd2_pair_by_pair(x, y, degree, coef0), rel=1e-10
        )


def test_one_subset_of_everything_is_the_statistic_of_the_whole_sets():
    # the statistic does not depend on the order of the rows, so subsets that take
    # every row give the pair-by-pair value, with no spread
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 6)), rng.normal(0.5, 1.0, size=(40, 6))
    result = kernel_distance(x, y, subsets=4, subset_size=1000)
    assert isinstance(result, KIDResult)
    assert result.subset_size == 40 and result.subsets == 4
    assert result.value == pytest.approx(mmd2_pair_by_pair(x, y), rel=1e-10)
    assert result.sd == pytest.approx(0.0, abs=1e-12)
    assert float(result) == result.value


def test_linear_kernel_estimates_the_squared_mean_distance():
    # with k(a, b) = a·b / F, MMD² = ‖μx − μy‖² / F exactly; the unbiased estimate
    # of it from m = 2000 rows has a standard deviation of about 0.01 here, so 0.05
    # is five of them
    rng = np.random.default_rng(2)
    shift = np.array([1.0, 0.0, 0.0, 0.0])
    x = rng.normal(size=(2000, 4))
    y = rng.normal(size=(2000, 4)) + shift
    value = kernel_distance(x, y, subsets=1, subset_size=2000, degree=1, coef0=0.0)
    assert value.value == pytest.approx(shift @ shift / 4, abs=0.05)


def test_same_distribution_averages_to_zero_where_the_biased_estimate_does_not():
    # 400 independent pairs of sets of 20 rows from one Gaussian: the unbiased KID
    # averages to 0 within 4 standard errors; the V-statistic, which keeps the
    # diagonal k(a, a), sits far above it
    rng = np.random.default_rng(3)
    unbiased, biased = [], []
    for _ in range(400):
        x, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
        unbiased.append(kernel_distance(x, y, subsets=1).value)
        k = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    unbiased, biased = np.array(unbiased), np.array(biased)
    se = unbiased.std(ddof=1) / np.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 4 * se
    assert biased.mean() > unbiased.mean() + 10 * se
    assert (unbiased < 0).any()  # an unbiased estimate of 0 goes below it


def test_subsets_are_seeded_and_smaller_than_the_sets():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(250, 8))
    a = kernel_distance(x, y, subsets=5, subset_size=100, seed=7)
    b = kernel_distance(x, y, subsets=5, subset_size=100, seed=7)
    c = kernel_distance(x, y, subsets=5, subset_size=100, seed=8)
    assert a == b and a.value != c.value
    assert a.subset_size == 100 and a.sd > 0


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((10, 3)), np.zeros((10, 4)), "same number of features"),
        (np.zeros((1, 3)), np.zeros((10, 3)), "at least 2 rows"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), "NaN"),
    ],
)
def test_bad_inputs_are_named(x, y, message):
    with pytest.raises(ValueError, match=message):
        kernel_distance(x, y)

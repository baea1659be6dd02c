"""Fréchet distances between image sets, with two feature extractors.

* ``features="domain"``: the 128-d penultimate layer (pre-activation) of a small CNN
  classifier trained on MNIST or Fashion-MNIST (:class:`DomainClassifier`, in
  :mod:`betavae_lib.domain_classifier`; checkpoints ship in ``betavae_lib/assets``). It
  runs anywhere in seconds and is the FID to compare models within this book. Its
  values are not comparable with published (Inception) FIDs.
* ``features="inception"``: pytorch-fid's ``InceptionV3`` pool3 features (2048-d), the
  standard FID. Grayscale is repeated to three channels and the network resizes to
  299x299 bilinearly and maps [0, 1] to [-1, 1], exactly as pytorch-fid does. Needs
  ``pytorch-fid`` and ``torchvision`` (imported only when asked for) and the weights
  file, looked for in this order: the ``weights`` argument; pytorch-fid's cache
  ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``;
  ``weights/pt_inception-2015-12-05-fc-zeroed.pth`` under each data root
  (``$BETAVAE_DATA_DIR``, the cache; pool3 features are exact, logits are not); else
  pytorch-fid downloads it.

The distance itself is :func:`frechet_distance` on the :func:`feature_statistics` of
each set, the values pytorch-fid computes (the distance through eigenvalues, which also
holds for singular covariances). :func:`kernel_distance` gives the kernel inception
distance (KID), an unbiased alternative, on the same features.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from ._common import (
    as_float_images,
    check_pixel_range,
    finite_matrix,
    positive_int,
    to_numpy,
)
from .data import offline, search_roots
from .domain_classifier import (  # noqa: F401 (the constants, re-exported)
    ASSETS_DIR,
    DOMAIN_DATASETS,
    DOMAIN_FORMAT,
    DomainClassifier,
    _device_or_auto,
    _domain_name,
    classifier_accuracy,
    domain_checkpoint_path,
    load_domain_classifier,
    train_domain_classifier,
)

INCEPTION_CACHE_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SHARED_FILE = "pt_inception-2015-12-05-fc-zeroed.pth"


class FIDUnavailableError(ImportError):
    """The Inception feature extractor cannot be built here (missing package or
    weights)."""


@dataclass
class FIDResult:
    """A Fréchet distance: ``value``, the sizes ``n_real`` and ``n_fake``, the
    ``features`` used (``"domain:mnist"``, ``"domain:fashion_mnist"`` or
    ``"inception"``), and its two terms (:func:`frechet_terms`): ``mean_term`` and
    ``covariance_term``, which add to ``value``."""

    value: float
    n_real: int
    n_fake: int
    features: str
    mean_term: float = math.nan
    covariance_term: float = math.nan

    def __float__(self) -> float:
        return float(self.value)


# ----------------------------------------------------------------------------- images


def grayscale_float_images(images, name: str = "images") -> torch.Tensor:
    """Images (N, 1, H, W), tensor or array, as float32 in [0, 1]: uint8 is divided by
    255, bool becomes 0/1. Raises TypeError or ValueError naming the problem."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"{name} must be a tensor or array (N, 1, H, W), "
            f"got {type(images).__name__}"
        )
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(
            f"{name} must have shape (N, 1, H, W) (grayscale), "
            f"got {tuple(images.shape)}"
        )
    if images.dtype not in (torch.uint8, torch.bool) and not images.is_floating_point():
        raise TypeError(
            f"{name} must be float in [0, 1] or uint8, got dtype {images.dtype}"
        )
    images = as_float_images(images).float()
    if len(images) == 0:
        raise ValueError(f"{name} is empty")
    check_pixel_range(images, name, tolerance=1e-6)
    return images


# --------------------------------------------------------------------------- extractors


def _batched_features(
    fn, images: torch.Tensor, batch_size: int, device: torch.device
) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out.append(
                fn(images[start : start + batch_size].to(device)).double().cpu().numpy()
            )
    return np.concatenate(out)


class DomainFeatures:
    """Penultimate-layer features (N, 128) of the domain classifier for ``dataset``.

    Call it on images (N, 1, H, W) in [0, 1]; sizes other than 28x28 are resized
    bilinearly (antialiased) to 28x28 first. ``path``: a checkpoint other than the
    shipped one.
    """

    def __init__(
        self,
        dataset: str = "mnist",
        path: str | os.PathLike | None = None,
        device=None,
        batch_size: int = 1000,
    ):
        self.dataset = _domain_name(dataset)
        self.device = _device_or_auto(device)
        self.model, self.meta = load_domain_classifier(self.dataset, path)
        self.model.to(self.device)
        self.batch_size = positive_int("batch_size", batch_size)
        self.dim = self.model.config["feature_dim"]
        self.name = f"domain:{self.dataset}"

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (28, 28):
            x = F.interpolate(
                x, size=(28, 28), mode="bilinear", align_corners=False, antialias=True
            )
        return self.model.features(x)

    def __call__(self, images) -> np.ndarray:
        return _batched_features(
            self._features, grayscale_float_images(images), self.batch_size, self.device
        )


def inception_weights_path(weights: str | os.PathLike | None = None) -> Path | None:
    """The Inception weights file to use (module docstring for the order), or None when
    only a download could provide it. An explicit ``weights`` path must exist."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"no Inception weights file at {path}")
        return path
    candidates = [Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_CACHE_FILE]
    candidates += [root / "weights" / INCEPTION_SHARED_FILE for root in search_roots()]
    return next((p for p in candidates if p.is_file()), None)


def _import_pytorch_fid_inception():
    try:
        import pytorch_fid.inception as fid_inception
    except Exception as e:  # ImportError, or a torchvision that fails while importing
        raise FIDUnavailableError(
            f"Inception FID needs the pytorch-fid and torchvision packages, "
            f"which cannot be imported here "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            f"install them (pip install pytorch-fid "
            f"torchvision) or use features='domain'."
        ) from None
    return fid_inception


def inception_available(weights: str | os.PathLike | None = None) -> tuple[bool, str]:
    """Whether :class:`InceptionFeatures` can be built here without a download:
    ``(ok, reason)``."""
    try:
        _import_pytorch_fid_inception()
    except FIDUnavailableError as e:
        return False, str(e)
    try:
        path = inception_weights_path(weights)
    except FileNotFoundError as e:
        return False, str(e)
    if path is None:
        return False, (
            f"no Inception weights file in pytorch-fid's cache "
            f"({INCEPTION_CACHE_FILE}) or under "
            f"a data root (weights/{INCEPTION_SHARED_FILE}); "
            f"pytorch-fid would download it"
        )
    return True, str(path)


class InceptionFeatures:
    """pytorch-fid's ``InceptionV3([3])`` pool3 features (N, 2048) of grayscale images.

    Call it on images (N, 1, H, W) in [0, 1]: channels are repeated to RGB and the
    network resizes to 299x299 and rescales to [-1, 1] itself. Raises
    :class:`FIDUnavailableError` when pytorch-fid or torchvision cannot be imported, or
    when no weights file is found and downloading is impossible.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device=None,
        batch_size: int = 50,
    ):
        fid_inception = _import_pytorch_fid_inception()
        path = inception_weights_path(weights)
        if path is None:
            if offline():
                raise FIDUnavailableError(
                    f"no Inception weights file was found and downloads are disabled "
                    f"(BETAVAE_OFFLINE=1); put "
                    f"{INCEPTION_CACHE_FILE} in "
                    f"{Path(torch.hub.get_dir()) / 'checkpoints'} "
                    f"or use features='domain'."
                )
            try:
                # pytorch-fid downloads into the torch hub cache
                model = fid_inception.InceptionV3([3])
            except Exception as e:
                raise FIDUnavailableError(
                    f"the Inception weights could not be downloaded "
                    f"({type(e).__name__}); "
                    f"use features='domain'."
                ) from e
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            with mock.patch.object(
                fid_inception, "load_state_dict_from_url", lambda *args, **kwargs: state
            ):
                model = fid_inception.InceptionV3([3])
        self.weights = path
        self.device = _device_or_auto(device)
        self.model = model.eval().to(self.device)
        self.batch_size = positive_int("batch_size", batch_size)
        self.dim = 2048
        self.name = "inception"

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.expand(-1, 3, -1, -1))[0].flatten(1)

    def __call__(self, images) -> np.ndarray:
        return _batched_features(
            self._features, grayscale_float_images(images), self.batch_size, self.device
        )


def get_extractor(
    features: str = "domain",
    *,
    dataset: str = "mnist",
    device=None,
    batch_size: int | None = None,
):
    """A feature extractor by name: ``"domain"`` (:class:`DomainFeatures` for
    ``dataset``) or ``"inception"`` (:class:`InceptionFeatures`)."""
    if features == "domain":
        return DomainFeatures(
            dataset,
            device=device,
            batch_size=1000 if batch_size is None else batch_size,
        )
    if features == "inception":
        return InceptionFeatures(
            device=device, batch_size=50 if batch_size is None else batch_size
        )
    raise ValueError(
        f"unknown features {features!r}; valid are 'domain' and 'inception'"
    )


# ----------------------------------------------------------------- the Fréchet distance


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of features (N, F), float64, as pytorch-fid
    computes them.

    The covariance is ``np.cov(features, rowvar=False)`` (divides by N − 1). With N < F
    it is singular and the FID biased; a warning says so.
    """
    features = finite_matrix(features, "features", columns="feature").astype(
        np.float64, copy=False
    )
    n, dim = features.shape
    if n < 2:
        raise ValueError(
            f"need at least 2 feature vectors to estimate a covariance, got {n}"
        )
    if n < dim:
        warnings.warn(
            f"only {n} samples for {dim}-dimensional features: "
            f"the covariance is singular "
            f"(rank <= {n - 1}) and the Fréchet distance is biased; "
            f"use at least {dim} samples "
            f"(10,000 or more is the usual choice for FID)",
            stacklevel=2,
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _symmetric_eigen(sigma: np.ndarray, name: str, vectors: bool):
    """Eigenvalues (and eigenvectors when ``vectors``) of a covariance matrix (F, F).

    Raises ValueError unless ``sigma`` is symmetric and positive semi-definite up to
    rounding; eigenvalues that rounding made slightly negative are returned as 0.
    """
    scale = max(float(np.abs(sigma).max()), np.finfo(np.float64).tiny)
    if np.abs(sigma - sigma.T).max() > 1e-5 * scale:
        raise ValueError(f"{name} is not a covariance matrix: it is not symmetric")
    symmetric = (sigma + sigma.T) / 2
    values, basis = (
        np.linalg.eigh(symmetric) if vectors else (np.linalg.eigvalsh(symmetric), None)
    )
    if values.min() < -1e-6 * max(values.max(), 0.0) - 1e-12 * scale:
        raise ValueError(
            f"{name} is not a covariance matrix: it has the negative eigenvalue "
            f"{values.min():.3g}, so its square root would be imaginary"
        )
    return np.clip(values, 0.0, None), basis


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr (sigma1 sigma2)^½ for covariance matrices (F, F), singular ones included.

    sigma1 sigma2 is similar to the symmetric PSD matrix M = sigma1^½ sigma2 sigma1^½,
    so the eigenvalues of the product are those of M (real and >= 0) and the trace of
    its root is Σ √λ(M). Unlike ``scipy.linalg.sqrtm`` of the product, this needs no
    retry with a regularised diagonal and gives the same value on every CPU, also with
    rank-deficient covariances (fewer samples than features); on well-conditioned inputs
    it equals pytorch-fid's ``np.trace(sqrtm(sigma1 @ sigma2))`` to rounding (about
    1e-14 relative).
    """
    values, vectors = _symmetric_eigen(sigma1, "sigma1", vectors=True)
    _symmetric_eigen(sigma2, "sigma2", vectors=False)
    root1 = (vectors * np.sqrt(values)) @ vectors.T
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_terms(mu1, sigma1, mu2, sigma2) -> tuple[float, float]:
    """The two terms of :func:`frechet_distance`: ``(mean, covariance)`` =
    (‖mu1 − mu2‖², Tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^½)). The first says how far
    the feature means are apart, the second how differently the features spread (the
    squared Bures distance of the covariances); both are ≥ 0 and they add to the
    distance."""
    mu1 = np.atleast_1d(to_numpy(mu1, "mu1")).astype(np.float64)
    mu2 = np.atleast_1d(to_numpy(mu2, "mu2")).astype(np.float64)
    sigma1 = np.atleast_2d(to_numpy(sigma1, "sigma1")).astype(np.float64)
    sigma2 = np.atleast_2d(to_numpy(sigma2, "sigma2")).astype(np.float64)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(
            f"mu1 and mu2 must be vectors of the same length, got {mu1.shape} and "
            f"{mu2.shape}"
        )
    if sigma1.shape != (len(mu1), len(mu1)) or sigma2.shape != sigma1.shape:
        raise ValueError(
            f"sigma1 and sigma2 must both be ({len(mu1)}, {len(mu1)}), "
            f"got {sigma1.shape} and {sigma2.shape}"
        )
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or Inf")
    diff = mu1 - mu2
    covariance = (
        np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    )
    return float(diff.dot(diff)), float(covariance)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), the value of
    pytorch-fid's ``calculate_frechet_distance``: the *squared* 2-Wasserstein distance
    of the two Gaussians,

        d² = ‖mu1 − mu2‖² + Tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^½)

    mu: (F,); sigma: (F, F) covariance matrices (symmetric, positive semi-definite;
    others raise ValueError). Tr (sigma1 sigma2)^½ comes from
    :func:`trace_sqrt_product`, so singular covariances (fewer samples than features,
    where pytorch-fid may fail) give the exact distance of the two Gaussians, which is a
    biased FID (:func:`feature_statistics` warns). :func:`frechet_terms` gives the two
    terms apart.
    """
    mean, covariance = frechet_terms(mu1, sigma1, mu2, sigma2)
    return mean + covariance


@dataclass
class KIDResult:
    """A kernel distance (KID): ``value``, the mean over ``subsets`` random subsets of
    ``subset_size`` rows per set of the unbiased polynomial-kernel MMD², and ``sd``,
    the standard deviation of those subset values (0 for one subset)."""

    value: float
    sd: float
    subsets: int
    subset_size: int

    def __float__(self) -> float:
        return float(self.value)


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0):
    """Unbiased MMD² between feature sets x (m, F) and y (m, F) under the kernel
    k(a, b) = (a·b / F + coef0) ** degree: the within-set means leave out the diagonal
    (k(a, a)), the cross mean keeps every pair (Bińkowski et al. 2018, eq. 4)."""
    m, dim = x.shape
    k_xx = (x @ x.T / dim + coef0) ** degree
    k_yy = (y @ y.T / dim + coef0) ** degree
    k_xy = (x @ y.T / dim + coef0) ** degree
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kernel_distance(
    real_features,
    fake_features,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    seed: int = 0,
) -> KIDResult:
    """Kernel inception distance between two feature sets (N, F) and (M, F).

    Each of ``subsets`` draws takes min(``subset_size``, N, M) rows of each set
    without replacement and computes :func:`polynomial_mmd2` with the kernel
    (a·b / F + ``coef0``) ** ``degree`` (the KID of Bińkowski et al. 2018 with the
    defaults). The estimate is unbiased: two sets from one distribution average 0 at
    any size, and a single value may be negative. Features from :class:`DomainFeatures`
    or :class:`InceptionFeatures`; ``seed`` fixes the subsets.
    """
    x = finite_matrix(real_features, "real_features", columns="feature").astype(
        np.float64, copy=False
    )
    y = finite_matrix(fake_features, "fake_features", columns="feature").astype(
        np.float64, copy=False
    )
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"real_features and fake_features must have the same number of "
            f"features, got {x.shape[1]} and {y.shape[1]}"
        )
    subsets = positive_int("subsets", subsets)
    size = min(positive_int("subset_size", subset_size), len(x), len(y))
    if size < 2:
        raise ValueError(
            f"need at least 2 rows in each set for an unbiased MMD², got {len(x)} "
            f"and {len(y)}"
        )
    degree = positive_int("degree", degree)
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            polynomial_mmd2(
                x[rng.choice(len(x), size, replace=False)],
                y[rng.choice(len(y), size, replace=False)],
                degree,
                float(coef0),
            )
            for _ in range(subsets)
        ]
    )
    sd = float(values.std(ddof=1)) if subsets > 1 else 0.0
    return KIDResult(float(values.mean()), sd, subsets, size)


def fid(
    real_images,
    fake_images,
    features: str = "domain",
    *,
    dataset: str = "mnist",
    batch_size: int | None = None,
    device=None,
    extractor=None,
) -> FIDResult:
    """Fréchet distance between two image sets in a feature space.

    real_images, fake_images: (N, 1, H, W) in [0, 1] (tensors or arrays; uint8 is
    scaled).
    features: ``"domain"`` (classifier for ``dataset``: ``"mnist"`` or
    ``"fashion_mnist"``) or ``"inception"``. extractor: an already built extractor (e.g.
    from :func:`get_extractor`) to reuse.
    Fewer images than feature dimensions (128 or 2048) give a biased value, with a
    warning.
    """
    real, fake = (
        grayscale_float_images(real_images, "real_images"),
        grayscale_float_images(fake_images, "fake_images"),
    )
    extractor = extractor or get_extractor(
        features, dataset=dataset, device=device, batch_size=batch_size
    )
    mu1, sigma1 = feature_statistics(extractor(real))
    mu2, sigma2 = feature_statistics(extractor(fake))
    mean, covariance = frechet_terms(mu1, sigma1, mu2, sigma2)
    return FIDResult(
        mean + covariance, len(real), len(fake), extractor.name, mean, covariance
    )


__all__ = [
    "DomainClassifier",
    "DomainFeatures",
    "FIDResult",
    "FIDUnavailableError",
    "InceptionFeatures",
    "KIDResult",
    "classifier_accuracy",
    "domain_checkpoint_path",
    "feature_statistics",
    "fid",
    "frechet_distance",
    "frechet_terms",
    "get_extractor",
    "grayscale_float_images",
    "inception_available",
    "inception_weights_path",
    "kernel_distance",
    "load_domain_classifier",
    "polynomial_mmd2",
    "train_domain_classifier",
]

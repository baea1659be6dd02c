"""Benchmark the metrics: MIG on the whole dSprites grid against a plain scikit-learn
loop, and the throughput of the FID feature extractors.

    python benchmarks/bench_metrics.py  # everything (about a minute on 2 CPU cores)
    python benchmarks/bench_metrics.py --quick  # smaller sizes

MIG codes: the five dSprites factor values, five pure-noise latents, Gaussian noise on
all ten.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from betavae_lib import fid as fidlib
from betavae_lib import metrics
from betavae_lib.data import DataNotFoundError, DSprites, load_dataset


def reference_mig(codes, factors, n_bins=20):
    """disentanglement_lib's MIG as written there: a Python loop of
    sklearn.metrics.mutual_info_score."""
    from sklearn.metrics import mutual_info_score

    mus, ys = codes.T, factors.T
    discretized = np.zeros_like(mus)
    for i in range(mus.shape[0]):
        discretized[i, :] = np.digitize(
            mus[i, :], np.histogram(mus[i, :], n_bins)[1][:-1]
        )
    m = np.array([[mutual_info_score(y, d) for y in ys] for d in discretized])
    h = np.array([mutual_info_score(y, y) for y in ys])
    sorted_m = np.sort(m, axis=0)[::-1]
    return float(np.mean((sorted_m[0] - sorted_m[1]) / h))


def best_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def bench_mig(quick: bool):
    data = DSprites(source="procedural")
    factors = data.factor_classes
    if quick:
        factors = factors[::8]
    rng = np.random.default_rng(0)
    codes = np.hstack([data.factor_values(factors), rng.normal(size=(len(factors), 5))])
    codes = (codes + 0.05 * rng.normal(size=codes.shape)).astype(np.float32)
    ours_s, ours = best_time(lambda: metrics.mig(codes, factors), 3)
    ref_s, ref = best_time(lambda: reference_mig(codes, factors), 1)
    print(
        f"MIG, {len(codes):,} codes x {codes.shape[1]} latents x "
        f"{factors.shape[1]} factors:"
    )
    print(f"  betavae_lib.metrics.mig   {ours_s:7.2f} s  score {ours.score:.12f}")
    print(f"  sklearn loop (reference)  {ref_s:7.2f} s  score {ref:.12f}")
    print(f"  |difference| {abs(ours.score - ref):.1e}, speed-up {ref_s / ours_s:.1f}x")


def bench_scores():
    class FactorsAsObservations:
        factor_sizes = (3, 6, 40, 32, 32)

        def sample_factors(self, n, rng):
            return np.stack(
                [rng.integers(0, s, size=n) for s in self.factor_sizes], axis=-1
            )

        def sample_observations_from_factors(self, classes, rng):
            return classes.astype(np.float64)

    data = FactorsAsObservations()
    seconds, result = best_time(lambda: metrics.factor_vae_score(lambda x: x, data), 1)
    print(
        f"FactorVAE score, default protocol, ground-truth codes: {result.score:.3f} "
        f"in {seconds:.2f} s "
        f"(protocol overhead; encoding dominates with a real model)"
    )
    seconds, result = best_time(lambda: metrics.beta_vae_score(lambda x: x, data), 1)
    print(
        f"beta-VAE score,  default protocol, ground-truth codes: {result.score:.3f} "
        f"in {seconds:.2f} s"
    )


def mnist_images(n):
    try:
        return load_dataset("mnist", "test").images[:n], "MNIST test"
    except DataNotFoundError:
        return torch.rand(
            n, 1, 28, 28, generator=torch.Generator().manual_seed(0)
        ), "random"


def bench_fid(quick: bool):
    n = 2000 if quick else 10000
    images, source = mnist_images(n)
    extractor = fidlib.DomainFeatures("mnist", device="cpu")
    extractor(images[:100])  # warm-up
    seconds, _ = best_time(lambda: extractor(images), 2)
    print(
        f"domain features ({source}, {len(images):,} images 28x28, CPU, "
        f"{torch.get_num_threads()} threads): "
        f"{len(images) / seconds:,.0f} images/s"
    )
    half = len(images) // 2
    shuffled = images[
        torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    ]
    seconds, result = best_time(
        lambda: fidlib.fid(shuffled[:half], shuffled[half:], extractor=extractor), 1
    )
    print(
        f"domain FID between two random halves ({half:,} vs {half:,} {source} images): "
        f"{result.value:.3f} "
        f"in {seconds:.2f} s"
    )

    ok, why = fidlib.inception_available()
    if not ok:
        print(f"Inception features: skipped ({why.split(';')[0]})")
        return
    inception = fidlib.InceptionFeatures(device="cpu", batch_size=16)
    m = 16 if quick else 64
    inception(images[:4])  # warm-up
    seconds, _ = best_time(lambda: inception(images[:m]), 1)
    print(
        f"Inception features ({m} images resized to 299x299, CPU): "
        f"{m / seconds:,.1f} images/s"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    bench_mig(args.quick)
    bench_scores()
    bench_fid(args.quick)


if __name__ == "__main__":
    main()

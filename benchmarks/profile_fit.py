"""Where ``fit``'s time goes beside its matrix products: ``benchmarks.profile_fit``.

Profiles ``steps`` optimiser steps of the MNIST MLPVAE (batch 128) with
``torch.profiler`` and sums the operators' self CPU time by kind: the matrix products
(the arithmetic limit, see ``bench_ensemble.GEMM_ROW``), the optimiser, the loss, the
sampling, the activations, the batch gather and bookkeeping. "Python and autograd" is
the rest of the wall time: the interpreter, dispatch and the autograd engine between
operators. The profiler adds a little to every operator, so small operators look
somewhat dearer here than they are.

    python -m benchmarks.profile_fit [--steps 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_train import mnist_images
from betavae_lib import MLPVAE, fit

KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "optimiser (fused Adam kernel)": ("aten::_fused_adam_",),
    "optimiser (step count, other)": ("aten::_foreach_add_",),
    "loss: reconstruction (BCE)": (
        "aten::log_sigmoid_forward",
        "aten::log_sigmoid_backward",
        "aten::binary_cross_entropy_with_logits",
        "aten::sigmoid",
    ),
    "activations (ReLU)": ("aten::clamp_min", "aten::threshold_backward", "aten::relu"),
    "sampling (noise, exp)": ("aten::normal_", "aten::exp"),
    "batch gather": ("aten::index", "aten::index_select"),
    "input check (aminmax)": ("aten::aminmax",),
}


def kind_of(name: str) -> str:
    for kind, names in KINDS.items():
        if name in names:
            return kind
    return "other operators (sums, KL, copies, bookkeeping)"


def profile_fit(steps: int = 200, batch_size: int = 128) -> dict[str, float]:
    """Seconds per kind (plus "Python and autograd" and "total") for ``steps`` steps."""
    images = mnist_images()[: steps * batch_size]
    torch.manual_seed(0)
    model = MLPVAE()
    fit(
        model,
        images[: 10 * batch_size],
        epochs=1,
        batch_size=batch_size,
        progress=False,
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fit(model, images, epochs=1, batch_size=batch_size, progress=False)
        wall = time.perf_counter() - t0
    seconds = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            seconds[kind_of(event.key)] += event.self_cpu_time_total / 1e6
    seconds["Python and autograd (the rest)"] = wall - sum(seconds.values())
    seconds["total"] = wall
    return dict(seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seconds = profile_fit(args.steps)
    total = seconds.pop("total")
    print(f"fit, MNIST MLPVAE, batch 128: {args.steps} steps, {args.threads} thread(s)")
    print("| kind | ms per step | share |\n|---|---|---|")
    for kind, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {1e3 * value / args.steps:.2f} | {value / total:.0%} |")
    print(f"| total | {1e3 * total / args.steps:.2f} | 100% |")


if __name__ == "__main__":
    main()

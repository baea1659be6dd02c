"""Run every benchmark and print one table: ``python -m benchmarks.run`` (or
``python benchmarks/run.py``).

Every timing is a ratio against a reference measured in the same run, on the same
machine: ``speed-up = reference seconds / betavae_lib seconds``. Options: ``--nbmake``
adds the wall time of ``pytest --nbmake notebooks`` (smoke profile; slow), ``--quick``
runs one repeat on a smaller dSprites subset without the opt-in variants,
``--repeats N`` sets the repeats per timing. GPU rows are measured when CUDA is present
and say "not measured" otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (
    None,
    "",
):  # run as a script: make ``benchmarks`` and ``betavae_lib`` importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import bench_train  # noqa: E402
from benchmarks.bench_train import Row  # noqa: E402
from betavae_lib.data import DataNotFoundError  # noqa: E402

TRAIN_ROWS = (
    "MNIST MLPVAE epoch, batch 128",
    "dSprites ConvVAE epoch, batch 64",
    "MNIST MLPVAE epoch, checkpoint_path set",
)


def machine() -> str:
    """CPU model, cores, GPU (if any), torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    )
    return (
        f"{cpu} ({bench_train.cpu_bf16_support()}), {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), "
        f"{gpu}, Python {platform.python_version()}"
    )


def not_measured(names, device: str, why: str) -> list[Row]:
    return [Row(name, device, "-", note=f"not measured ({why})") for name in names]


def training_rows(device: torch.device, args, tmp_dir: str) -> list[Row]:
    try:
        dsprites_n = args.dsprites or (1024 if args.quick else None)
        return bench_train.rows(
            device,
            repeats=args.repeats,
            dsprites_n=dsprites_n,
            variants=not args.quick,
            tmp_dir=tmp_dir,
        )
    except DataNotFoundError as e:
        return not_measured(
            TRAIN_ROWS, str(device), f"{str(e).splitlines()[0]}; set BETAVAE_DATA_DIR"
        )


def _as_row(item) -> Row:
    if isinstance(item, Row):
        return item
    fields = Row.__dataclass_fields__
    values = (
        item
        if isinstance(item, dict)
        else {k: getattr(item, k) for k in fields if hasattr(item, k)}
    )
    return Row(**{k: v for k, v in values.items() if k in fields})


METRIC_ROWS = ("MIG, dSprites codes", "FID features, 28x28 images")


def ensemble_rows(args) -> list[Row]:
    """Grids of models as one ensemble, fit against its matrix products, chapters."""
    from benchmarks import bench_ensemble

    repeats = 1 if args.quick else min(args.repeats, 2)
    try:
        out = bench_ensemble.rows(
            torch.device("cpu"), repeats=repeats, quick=args.quick
        )
        if torch.cuda.is_available():
            out += bench_ensemble.rows(
                torch.device("cuda"), repeats=repeats, quick=args.quick
            )
        else:
            out += bench_ensemble.not_measured_cuda()
    except DataNotFoundError as e:
        names = (bench_ensemble.CPU_ENSEMBLE_ROW, bench_ensemble.GEMM_ROW)
        out = not_measured(
            names, "cpu", f"{str(e).splitlines()[0]}; set BETAVAE_DATA_DIR"
        )
    return out + bench_ensemble.chapter_rows()


def _mig_row(bench_metrics, args) -> Row:
    """betavae_lib.metrics.mig against disentanglement_lib's sklearn loop, on the same
    codes."""
    import numpy as np

    from betavae_lib import metrics
    from betavae_lib.data import DSprites

    data = DSprites(source="procedural")
    factors = data.factor_classes[:: 8 if args.quick else 2]
    rng = np.random.default_rng(0)
    codes = np.hstack([data.factor_values(factors), rng.normal(size=(len(factors), 5))])
    codes = (codes + 0.05 * rng.normal(size=codes.shape)).astype(np.float32)
    ours_s, ours = bench_metrics.best_time(
        lambda: metrics.mig(codes, factors), args.repeats
    )
    ref_s, ref = bench_metrics.best_time(
        lambda: bench_metrics.reference_mig(codes, factors), 1
    )
    return Row(
        METRIC_ROWS[0],
        "cpu",
        "sklearn loop (disentanglement_lib)",
        ref_s,
        ours_s,
        note=f"{len(codes):,} codes x {codes.shape[1]} latents; "
        f"MIG {ours.score:.6f} vs {ref:.6f}",
    )


def _fid_row(bench_metrics, device: torch.device, args) -> Row:
    """Seconds per 1000 images: the book's domain features against pytorch-fid's
    Inception features."""
    from betavae_lib import fid as fidlib

    images, source = bench_metrics.mnist_images(2000 if args.quick else 10000)
    domain = fidlib.DomainFeatures("mnist", device=str(device))
    domain(images[:100])
    ours_s, _ = bench_metrics.best_time(lambda: domain(images), args.repeats)
    ours_s *= 1000 / len(images)
    ok, why = fidlib.inception_available()
    if not ok:
        return Row(
            METRIC_ROWS[1],
            str(device),
            "Inception features",
            None,
            ours_s,
            note=f"s per 1000 {source} images; "
            f"Inception not measured ({why.split(';')[0].split(' (')[0]})",
        )
    m = 64 if device.type == "cpu" else 1024
    inception = fidlib.InceptionFeatures(
        device=str(device), batch_size=16 if device.type == "cpu" else 128
    )
    inception(images[:4])
    ref_s, _ = bench_metrics.best_time(lambda: inception(images[:m]), 1)
    ref_s *= 1000 / m
    return Row(
        METRIC_ROWS[1],
        str(device),
        "Inception features (pytorch-fid)",
        ref_s,
        ours_s,
        note=f"s per 1000 {source} images "
        f"({len(images):,} domain, {m} Inception at 299x299)",
    )


def metric_rows(device: torch.device, args) -> list[Row]:
    """MIG and FID throughput, built on ``benchmarks/bench_metrics.py`` when it is
    there."""
    if not (ROOT / "benchmarks" / "bench_metrics.py").is_file():
        return not_measured(
            METRIC_ROWS, str(device), "benchmarks/bench_metrics.py not found"
        )
    from benchmarks import bench_metrics

    if callable(getattr(bench_metrics, "rows", None)):
        return [_as_row(r) for r in bench_metrics.rows(device, repeats=args.repeats)]
    out = []
    for name, make in (
        (
            METRIC_ROWS[0],
            lambda: _mig_row(bench_metrics, args) if device.type == "cpu" else None,
        ),
        (METRIC_ROWS[1], lambda: _fid_row(bench_metrics, device, args)),
    ):
        try:
            row = make()
        except (
            Exception
        ) as e:  # a benchmark that breaks says so in its row instead of ending the run
            row = not_measured(
                [name], str(device), f"{type(e).__name__}: {str(e)[:120]}"
            )[0]
        if row is not None:
            out.append(row)
    return out


def nbmake_row(reference: Row | None) -> Row:
    """Wall time of ``pytest --nbmake notebooks`` in the smoke profile, against one
    seeds' MNIST epoch."""
    env = {**os.environ, "BETAVAE_PROFILE": "smoke"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbmake",
            "notebooks",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    summary = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    ref = reference.ref_seconds if reference is not None else None
    units = "" if ref is None else f"{seconds / ref:.0f}x one seeds' MNIST CPU epoch; "
    return Row(
        "pytest --nbmake notebooks (smoke)",
        "cpu" if not torch.cuda.is_available() else "cuda",
        "-",
        None,
        seconds,
        note=f"wall clock, {units}exit {proc.returncode}: {summary}",
    )


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    head = (
        "benchmark",
        "device",
        "reference",
        "reference s",
        "betavae_lib s",
        "speed-up",
        "loss ref",
        "loss ours",
        "note",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        speed = "-" if r.speedup is None else f"{r.speedup:.2f}x"
        cells = (
            r.name,
            r.device,
            r.reference,
            _fmt(r.ref_seconds),
            _fmt(r.seconds),
            speed,
            _fmt(r.ref_loss, 1),
            _fmt(r.loss, 1),
            r.note,
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--nbmake",
        action="store_true",
        help="also time pytest --nbmake notebooks (slow)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one repeat, no opt-in variants"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeats per timing (default 3, 1 with --quick)",
    )
    parser.add_argument(
        "--dsprites",
        type=int,
        default=None,
        help="dSprites subset size (default 4096 on CPU, 32768 on CUDA)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time CPU training rows by process CPU time "
        "(for a shared machine; use with --threads 1)",
    )
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_train.use_cpu_time(args.cpu_time)

    print(f"# betavae_lib benchmarks, {datetime.date.today().isoformat()}")
    print(f"machine: {machine()}")
    print(
        "command: python -m benchmarks.run "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()
    )
    clock = (
        "process CPU time for CPU training rows, wall clock otherwise"
        if args.cpu_time
        else "wall clock"
    )
    print(
        f"timing: {clock}; best of {args.repeats} interleaved repeats after a warm-up"
    )
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp_dir:
        rows = training_rows(cpu, args, tmp_dir)
        if torch.cuda.is_available():
            rows += training_rows(torch.device("cuda"), args, tmp_dir)
        else:
            rows += not_measured(TRAIN_ROWS, "cuda", "no CUDA device")
    rows += ensemble_rows(args)
    rows += metric_rows(cpu, args)
    if torch.cuda.is_available():
        rows += metric_rows(torch.device("cuda"), args)
    else:
        rows += not_measured(METRIC_ROWS[1:], "cuda", "no CUDA device")
    if args.nbmake:
        reference = next(
            (r for r in rows if r.name == TRAIN_ROWS[0] and r.device == "cpu"), None
        )
        rows.append(nbmake_row(reference))
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The command line, ``python -m betavae_lib.sweep --grid ... --root ...``
(:func:`main`)."""

from __future__ import annotations

import argparse
import sys

from .config import OBJECTIVES_DOC
from .grid import GRIDS, Grid, get_grid
from .runner import BACKENDS, collect, run


def _parse_indices(text: str) -> list[range]:
    """``"0-9,12"`` -> [range(0, 10), range(12, 13)]: ranges, not yet expanded (the
    grid's size bounds them first, :func:`_expand_indices`)."""
    ranges = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            start, stop = int(first), int(last if dash else first)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"indices are like 0-9,12 (integers >= 0); got {text!r}"
            ) from None
        if start < 0 or stop < start:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r}: a range of indices runs from a first to a last "
                f"index at least as large, like 0-9; got {text!r}"
            )
        ranges.append(range(start, stop + 1))
    return ranges


def _expand_indices(grid: Grid, ranges: list[range]) -> list[int]:
    """The indices of ``ranges``, each range checked against the grid before it is
    expanded."""
    for r in ranges:
        if r[-1] >= len(grid):
            raise IndexError(
                f"grid {grid.name!r} has {len(grid)} runs (indices 0 to "
                f"{len(grid) - 1}); --indices asks for {r[0]}-{r[-1]}"
            )
    return sorted({i for r in ranges for i in r})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m betavae_lib.sweep",
        description="Train every unfinished run of a grid, here or on a Ray cluster.",
        epilog="Objectives and their coefficients:\n" + OBJECTIVES_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--grid",
        required=True,
        help=f"a built-in grid ({', '.join(GRIDS)}) or a JSON/YAML spec file",
    )
    p.add_argument(
        "--profile",
        help="size of a built-in grid: smoke, reduced or full "
        "(default: $BETAVAE_PROFILE)",
    )
    p.add_argument(
        "--root", help="folder for checkpoints and records (required unless --list)"
    )
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.add_argument(
        "--address", help="Ray cluster address (host:port, ray://host:port or auto)"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of a Ray instance started here")
    p.add_argument(
        "--indices", type=_parse_indices, help="only these runs, e.g. 0-9,12"
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--shard-size",
        type=int,
        help="runs per shard (default: all that can share an ensemble locally, 1 "
        "with Ray)",
    )
    p.add_argument(
        "--no-batch",
        action="store_true",
        help="train every run alone with fit, not a shard's runs as one ensemble",
    )
    p.add_argument("--cpus-per-shard", type=int, default=1)
    p.add_argument("--gpus-per-shard", type=float, default=0)
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--stale-after", type=float, default=600.0)
    p.add_argument("--keep-going", action="store_true", help="go on after a run fails")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--list", action="store_true", help="print the grid's runs and exit")
    p.add_argument(
        "--csv", help="after running, write all finished runs to this CSV file"
    )
    return p


def _list_grid(grid: Grid) -> None:
    print(grid.summary())
    for i, config in enumerate(grid.runs):
        coefficients = ", ".join(f"{k}={v:g}" for k, v in config.coefficients.items())
        print(
            f"{i:5d}  {config.objective}({coefficients}) seed={config.seed} "
            f"steps={config.steps:,}"
        )


# What the command line reports as one line (no traceback): errors of the input, the
# files, the device or the cluster, and a diverged run.
ORDINARY_ERRORS = (
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OSError,
    ImportError,
    RuntimeError,  # SweepError, a device that is not there
    ArithmeticError,  # NonFiniteLossError
)


def main(argv=None) -> int:
    """The command line: ``python -m betavae_lib.sweep --grid ... --root ...``.

    Exit status: 0 when every run finished, 1 when some failed (with --keep-going), 2
    for an error (one line on stderr, no traceback), 130 when interrupted."""
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except KeyboardInterrupt:
        print(
            "interrupted: finished runs are kept; the next sweep resumes the others",
            file=sys.stderr,
        )
        return 130
    except ORDINARY_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args) -> int:
    grid = get_grid(args.grid, args.profile)
    if args.list:
        _list_grid(grid)
        return 0
    if not args.root:
        raise ValueError("--root is required (a folder for checkpoints and records)")
    indices = None if args.indices is None else _expand_indices(grid, args.indices)
    report = run(
        grid,
        args.root,
        backend=args.backend,
        indices=indices,
        device=args.device,
        shard_size=args.shard_size,
        batch_runs=not args.no_batch,
        cpus_per_shard=args.cpus_per_shard,
        gpus_per_shard=args.gpus_per_shard,
        address=args.address,
        num_cpus=args.num_cpus,
        connect_timeout=args.connect_timeout,
        stale_after=args.stale_after,
        keep_going=args.keep_going,
        progress=not args.no_progress,
    )
    print(report)
    for i, error in report.failed.items():
        print(f"run {i} failed: {error}", file=sys.stderr)
    if args.csv:
        collect(args.root).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 1 if report.failed else 0

"""Execute the book's chapters in place and record how: the run manifest and its page.

Usage (from the repository root):

    python tools/execute_book.py                 # every notebook in _toc.yml
    python tools/execute_book.py --profile full  # the published run (a CUDA GPU)
    python tools/execute_book.py --only 03       # one chapter (stem, path or number)
    python tools/execute_book.py --page-only     # rewrite book/execution.md only

Each notebook listed in ``_toc.yml`` (read with ``sphinx_external_toc``, as Jupyter Book
reads it) runs in a fresh Jupyter kernel (nbclient) whose environment is this process's,
with ``BETAVAE_PROFILE`` set. Outputs and ipywidgets state are stored in the notebook. A
notebook that fails is left as it was; its partial run is written to
``_build/execution/failed/``. A notebook whose cells differ from its jupytext source
(``jupytext.toml``) is not run: sync it first.

``book/execution.json`` lists the runs (the machine: CUDA device name, or the CPU
model and core count, a CPU run is never labelled as a GPU run; profile; Python, torch
and CUDA versions; start time (UTC); git commit; command) and, per notebook, the run
that made its outputs, with wall time, status, profile, device, seed and the headline
metrics the chapter printed with ``betavae_lib.report.headline``. ``--only`` replaces
the entries of the notebooks it runs and keeps the others with the runs that made them.
The page ``book/execution.md`` is rendered from the manifest by
``tools/execution_page.py``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from execution_page import fmt_seconds, render_page  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = Path("book/execution.json")
PAGE = Path("book/execution.md")
FAILED_DIR = Path("_build/execution/failed")
SCHEMA = 2
HEADLINE_MARKER = (
    "headline metrics:"  # betavae_lib.report.MARKER, without importing torch
)
RUN_KEYS = (
    "started_utc",
    "profile",
    "device",
    "versions",
    "platform",
    "git",
    "command",
)
DOC_SUFFIXES = (".ipynb", ".md", ".rst")
SEEDED = ("start_chapter", "seed_everything")  # calls whose ``seed`` is recorded


# --------------------------------------------------------------------------- the book
def toc_documents(root: Path) -> list[str]:
    """The documents of ``root/_toc.yml`` in reading order, without suffix
    (``notebooks/01_first_vae``), parsed by ``sphinx_external_toc`` as Jupyter Book
    parses it. Globs become the matching files, sorted; URLs are skipped."""
    from sphinx_external_toc.api import FileItem, GlobItem
    from sphinx_external_toc.parsing import parse_toc_yaml

    site_map = parse_toc_yaml(root / "_toc.yml")
    order: list[str] = []

    def add(name: str) -> None:
        stem, suffix = os.path.splitext(name)
        name = stem if suffix in DOC_SUFFIXES else name
        if name not in order:
            order.append(name)

    def visit(docname: str) -> None:
        add(docname)
        for subtree in site_map[docname].subtrees:
            for item in subtree.items:
                if isinstance(item, FileItem):
                    visit(item)
                elif isinstance(item, GlobItem):
                    for suffix in DOC_SUFFIXES:
                        for path in sorted(root.glob(f"{item}{suffix}")):
                            add(path.relative_to(root).as_posix())

    visit(site_map.root.docname)
    return order


def toc_notebooks(root: Path) -> list[str]:
    """The notebooks of ``root/_toc.yml`` that exist, in order (``.ipynb`` paths)."""
    docs = toc_documents(root)
    return [f"{d}.ipynb" for d in docs if (root / f"{d}.ipynb").is_file()]


def select(notebooks: list[str], wanted: list[str]) -> list[str]:
    """The notebook matching each of ``wanted``: a path, a stem (``01_first_vae``) or a
    prefix (``01``)."""
    chosen = []
    for name in wanted:
        key = name[:-6] if name.endswith(".ipynb") else name
        matches = [
            nb
            for nb in notebooks
            if nb[:-6] == key or Path(nb).stem == key or Path(nb).stem.startswith(key)
        ]
        exact = [nb for nb in matches if nb[:-6] == key or Path(nb).stem == key]
        matches = exact or matches
        if len(matches) != 1:
            listed = ", ".join(Path(nb).stem for nb in notebooks)
            n = len(matches)
            raise SystemExit(
                f"--only {name!r} matches {n} notebooks in _toc.yml ({listed})"
            )
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def notebook_title(nb) -> str:
    """The first markdown heading of ``nb`` (without the ``#``), or an empty string."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def paired_source(nb_path: Path) -> Path | None:
    """The jupytext source ``jupytext.toml`` pairs with ``nb_path``, if it exists."""
    from jupytext.config import load_jupytext_config
    from jupytext.paired_paths import paired_paths

    config = load_jupytext_config(str(nb_path))
    formats = config.default_formats(str(nb_path)) if config else None
    if not formats:
        return None
    for path, _ in paired_paths(str(nb_path), "ipynb", formats):
        if Path(path) != nb_path and Path(path).is_file():
            return Path(path)
    return None


def behind_sources(root: Path, paths: list[str]) -> list[tuple[str, str]]:
    """``(notebook, source)`` of each of ``paths`` that differs from its source."""
    import jupytext

    def cells(path: Path) -> list[tuple[str, str]]:
        return [(c.cell_type, c.source) for c in jupytext.read(path).cells]

    stale = []
    for path in paths:
        src = paired_source(root / path)
        if src is not None and cells(src) != cells(root / path):
            stale.append((path, src.relative_to(root).as_posix()))
    return stale


# ------------------------------------------------------------------------ the machine
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            key = line.lower()
            if (
                key.startswith(("model name", "hardware", "processor\t: "))
                and ":" in line
            ):
                value = line.split(":", 1)[1].strip()
                if value and not value.isdigit():
                    return value
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def describe_device() -> dict:
    """The device the chapters' ``pick_device()`` chooses: cuda, then mps, else CPU.

    ``{"kind": "cuda"|"mps"|"cpu", "name", "cpu", "cpu_cores", "gpu_count"}``; ``name``
    is the CUDA device name only when CUDA is available to torch.
    """
    import torch

    cpu = f"{cpu_model()} ({cpu_cores()} cores)"
    info = {
        "kind": "cpu",
        "name": cpu,
        "cpu": cpu,
        "cpu_cores": cpu_cores(),
        "gpu_count": 0,
    }
    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            kind="cuda",
            name=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
        )
    elif mps is not None and mps.is_available():
        info.update(kind="mps", name=f"Apple GPU (MPS) on {cpu_model()}")
    return info


def versions() -> dict:
    """Python and the packages whose versions change the numbers."""
    import nbclient
    import numpy
    import torch

    import betavae_lib

    cuda = torch.version.cuda if torch.cuda.is_available() else None
    cudnn_ok = cuda and torch.backends.cudnn.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": cuda,
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cudnn_ok else None,
        "numpy": numpy.__version__,
        "betavae_lib": getattr(betavae_lib, "__version__", None),
        "nbclient": nbclient.__version__,
    }


def git_state(root: Path) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository at ``root``
    (read-only git calls)."""

    def git(*args):
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        status = git("--no-optional-locks", "status", "--porcelain", "-uno")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def utc_now() -> str:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------ the outputs
def stream_text(nb) -> str:
    """All stdout printed by ``nb``'s code cells, in order."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text = out.get("text", "")
                parts.append(text if isinstance(text, str) else "".join(text))
    return "".join(parts)


def parse_headlines(text: str) -> dict:
    """Headline metrics printed in ``text`` (the rule of
    ``betavae_lib.report.parse_headlines``)."""
    found = {}
    for line in text.splitlines():
        if line.startswith(HEADLINE_MARKER):
            found.update(json.loads(line[len(HEADLINE_MARKER) :]))
    return found


def printed_setting(text: str, name: str) -> str | None:
    """The value of ``name: value`` in the setup print
    (``profile: reduced | device: cpu | torch ...``)."""
    match = re.search(rf"(?:^|\|)\s*{name}:\s*([^\s|]+)", text, flags=re.M)
    return match.group(1) if match else None


def code_calls(nb, names: tuple[str, ...]):
    """Calls to functions named ``names`` in ``nb``'s code cells (magics allowed)."""
    from IPython.core.inputtransformer2 import TransformerManager

    transform = TransformerManager().transform_cell
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(transform(cell.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = getattr(func, "id", None) or getattr(func, "attr", None)
                if name in names:
                    yield name, node


def seed_argument(name: str, call: ast.Call) -> int | None:
    """The literal seed a ``start_chapter``/``seed_everything`` call passes (positional
    or ``seed=``), ``start_chapter``'s default when it passes none, else None."""
    args = [kw.value for kw in call.keywords if kw.arg == "seed"] or call.args[:1]
    if not args:
        return start_chapter_default() if name == "start_chapter" else None
    value = args[0]
    if isinstance(value, ast.Constant) and type(value.value) is int:
        return value.value
    return None  # a variable: not known before the code runs


def start_chapter_default() -> int | None:
    import inspect

    from betavae_lib.profile import start_chapter

    default = inspect.signature(start_chapter).parameters["seed"].default
    return default if isinstance(default, int) else None


def seeds_in(nb) -> list[int]:
    """Literal seeds given to ``start_chapter`` and ``seed_everything`` in ``nb``'s
    code, ``start_chapter``'s first, without repeats."""
    calls = sorted(code_calls(nb, SEEDED), key=lambda c: c[0] != "start_chapter")
    seeds = []
    for name, call in calls:
        seed = seed_argument(name, call)
        if seed is not None and seed not in seeds:
            seeds.append(seed)
    return seeds


def chapter_seed(nb, text: str) -> int | None:
    """The chapter's seed: the one ``start_chapter`` printed (``seed: N``), else the one
    its call passes, else the first literal ``seed_everything`` seed."""
    printed = printed_setting(text, "seed")
    if printed is not None and printed.isdigit():
        return int(printed)
    seeds = seeds_in(nb)
    return seeds[0] if seeds else None


def device_used(printed: str | None, device: dict, vers: dict) -> dict:
    """``device_kind``, ``device`` and ``cuda`` of one notebook's run.

    ``printed`` is the device the notebook printed (``cpu``, ``cuda``, ``cuda:0``,
    ``mps``; None if it printed none, then the machine's default is assumed). A GPU is
    named only when the notebook ran on one and this machine has it; everything else is
    labelled with the CPU.
    """
    used = (printed or device["kind"]).lower()
    if used.startswith("cuda") and device["kind"] == "cuda":
        return {
            "device_kind": "cuda",
            "device": device["name"],
            "cuda": vers.get("cuda"),
        }
    if used.startswith("mps") and device["kind"] == "mps":
        return {"device_kind": "mps", "device": device["name"], "cuda": None}
    return {"device_kind": "cpu", "device": device["cpu"], "cuda": None}


def error_line(exc: BaseException) -> str:
    """The first line of what went wrong: ``ename: evalue`` for a failing cell."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


# -------------------------------------------------------------------------- execution
def steps_entry(printed: str | None) -> dict:
    """``{"steps": N}`` when the chapter printed ``steps: N`` (``BETAVAE_STEPS``
    lengthened its training), else nothing."""
    return {} if printed is None else {"steps": int(printed)}


def kernel_env(profile: str, steps: int | None = None) -> dict:
    """The kernels' environment: this process's, with the profile set and figures
    kept inline (a non-inline backend, Agg in CI, would drop every figure), and
    ``BETAVAE_STEPS`` set to ``steps`` (removed when None)."""
    from betavae_lib.profile import STEPS_ENV

    env = dict(os.environ)
    env["BETAVAE_PROFILE"] = profile
    if steps is None:
        env.pop(STEPS_ENV, None)
    else:
        env[STEPS_ENV] = str(steps)
    env.pop("MPLBACKEND", None)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # no debugger warning
    return env


def execute_notebook(
    root: Path,
    path: str,
    *,
    profile: str,
    timeout: int,
    run: dict,
    steps: int | None = None,
):
    """Run ``root/path`` in a fresh kernel; on success store its outputs in place.
    Returns its manifest entry, made by ``run``."""
    from nbclient import NotebookClient

    nb_path = root / path
    original = nb_path.read_bytes()
    nb = nbformat.reads(original.decode("utf-8"), as_version=4)
    nb.metadata.pop("widgets", None)  # state from an earlier run must not outlive it
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(nb_path.parent)}},
        store_widget_state=True,
        record_timing=False,
    )
    started, t0 = utc_now(), time.perf_counter()
    try:
        client.execute(env=kernel_env(profile, steps))
        status, error = "ok", None
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, the run goes on
        status, error = "error", error_line(exc)
    wall = time.perf_counter() - t0
    if status == "ok" and nb_path.read_bytes() != original:
        status, error = (
            "error",
            "the notebook was edited while it ran; execute it again",
        )

    text = stream_text(nb)
    entry = {
        "path": path,
        "title": notebook_title(nb),
        "status": status,
        "error": error,
        "wall_s": round(wall, 1),
        "started_utc": started,
        "run": run["id"],
        "profile": printed_setting(text, "profile") or profile,
        **steps_entry(printed_setting(text, "steps")),
        **device_used(printed_setting(text, "device"), run["device"], run["versions"]),
        "torch": run["versions"]["torch"],
        "git_commit": run["git"]["commit"],
        "seed": chapter_seed(nb, text),
        "seeds": seeds_in(nb),
        "metrics": parse_headlines(text),
    }
    if status == "ok":
        nbformat.write(nb, nb_path)
        size_mb = nb_path.stat().st_size / 2**20
        if size_mb > 2:
            print(f"  note: {path} is {size_mb:.1f} MB with outputs (the aim is 2 MB)")
    else:
        failed = root / FAILED_DIR / Path(path).name
        failed.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, failed)
        print(f"  {path} left unchanged; its failed run: {failed.relative_to(root)}")
    return entry


# --------------------------------------------------------------------------- manifest
def upgrade(manifest: dict) -> dict:
    """A schema-1 manifest (one run, described at the top level) as schema 2."""
    if manifest.get("schema", 1) >= 2:
        return manifest
    run = {"id": 1, **{k: manifest[k] for k in RUN_KEYS if k in manifest}}
    entries = []
    for e in manifest.get("notebooks", []):
        seeds = e.get("seeds") or []
        entries.append({**e, "run": 1, "seed": seeds[0] if seeds else None})
    return build_manifest(runs=[run], entries=entries)


def load_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    return upgrade(json.loads(path.read_text(encoding="utf-8")))


def merge_entries(old: dict | None, new: list[dict], order: list[str]) -> list[dict]:
    """Entries for the notebooks in ``order``: the new ones, else the old ones kept;
    others dropped."""
    by_path = {e["path"]: e for e in (old or {}).get("notebooks", [])}
    by_path.update({e["path"]: e for e in new})
    return [by_path[p] for p in order if p in by_path]


def record(old: dict | None, run: dict, new: list[dict], order: list[str]) -> dict:
    """The manifest after ``run`` made the entries ``new``: other notebooks keep their
    entries and the runs that made them; runs no entry refers to are dropped."""
    entries = merge_entries(old, new, order)
    runs = [r for r in (old or {}).get("runs", []) if r["id"] != run["id"]] + [run]
    used = {e["run"] for e in entries}
    return build_manifest(runs=[r for r in runs if r["id"] in used], entries=entries)


def build_manifest(*, runs: list[dict], entries: list[dict]) -> dict:
    seeds = sorted({e["seed"] for e in entries if e.get("seed") is not None})
    return {
        "schema": SCHEMA,
        "seed": seeds[0] if len(seeds) == 1 else (seeds or None),
        "total_wall_s": round(sum(e["wall_s"] for e in entries), 1),
        "runs": sorted(runs, key=lambda r: r["id"]),
        "notebooks": entries,
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")


def write_page(root: Path, manifest: dict | None) -> None:
    (root / PAGE).write_text(render_page(manifest), encoding="utf-8")


# ------------------------------------------------------------------------------- main
def default_profile() -> str:
    from betavae_lib.profile import get_profile

    return get_profile().name


def positive_steps(text: str) -> int:
    """argparse type for ``--steps``: a positive integer
    (:func:`betavae_lib.profile.parse_steps`)."""
    from betavae_lib.profile import parse_steps

    try:
        return parse_steps(text, "--steps")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        choices=["smoke", "reduced", "full"],
        help="run profile (default: $BETAVAE_PROFILE, else full on CUDA, else reduced)",
    )
    parser.add_argument(
        "--steps",
        type=positive_steps,
        help="optimiser steps per model for the chapters that train by steps "
        "(chapter 6), in place of the profile's (sets $BETAVAE_STEPS; "
        "default: unset)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="execute only this notebook (path, stem or number prefix; repeatable)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=3600,
        metavar="S",
        help="seconds one cell may run before the notebook is stopped (default 3600)",
    )
    parser.add_argument(
        "--page-only",
        action="store_true",
        help="only rewrite book/execution.md from book/execution.json",
    )
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    root = args.root.resolve()
    if args.page_only:
        write_page(root, load_manifest(root))
        print(f"wrote {PAGE}")
        return 0

    order = toc_notebooks(root)
    todo = select(order, args.only) if args.only else order
    stale = behind_sources(root, todo)
    if stale:
        raise SystemExit(
            "these notebooks differ from their sources; sync them first:\n"
            + "\n".join(f"  jupytext --sync {src}   # {nb}" for nb, src in stale)
        )
    profile = args.profile or default_profile()
    device, vers = describe_device(), versions()
    if profile == "full" and device["kind"] == "cpu":
        print(
            "note: on a CPU the full profile takes tens of minutes per MNIST "
            "chapter; chapter 6's is meant for a GPU (--steps lengthens a "
            "reduced run of it instead)"
        )
    argv = argv if argv is not None else sys.argv[1:]
    previous = load_manifest(root)
    run = {
        "id": 1 + max((r["id"] for r in (previous or {}).get("runs", [])), default=0),
        "started_utc": utc_now(),
        "profile": profile,
        **({"steps": args.steps} if args.steps else {}),
        "device": device,
        "versions": vers,
        "platform": platform.platform(),
        "git": git_state(root),
        "command": "python tools/execute_book.py"
        + "".join(f" {shlex.quote(a)}" for a in argv),
    }
    print(
        f"executing {len(todo)} notebook(s) | profile {profile} | {device['name']} "
        f"| a cell is stopped after {fmt_seconds(args.timeout)} (--timeout)"
    )

    entries = []
    for i, path in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {path} ...", flush=True)
        entry = execute_notebook(
            root,
            path,
            profile=profile,
            timeout=args.timeout,
            run=run,
            steps=args.steps,
        )
        entries.append(entry)
        done = f"{entry['status']} in {fmt_seconds(entry['wall_s'])}"
        if entry["error"]:
            print(f"  {done}: {entry['error']}", flush=True)
        else:
            print(f"  {done}; metrics {json.dumps(entry['metrics'])}", flush=True)
        # written after every notebook, so an interrupted run keeps what it finished
        manifest = record(load_manifest(root), run, [entry], order)
        write_json(root / MANIFEST, manifest)
        write_page(root, manifest)

    if not todo:
        write_page(root, load_manifest(root))
    failed = [e["path"] for e in entries if e["status"] != "ok"]
    note = f"; failed: {', '.join(failed)}" if failed else ""
    print(f"wrote {MANIFEST} and {PAGE}{note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

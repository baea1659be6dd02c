"""Execute the book's chapters in place and record how: the run manifest and the page that shows it.

Usage (from the repository root):

    python tools/execute_book.py                      # every notebook in _toc.yml, profile from the machine
    python tools/execute_book.py --profile full       # the published run (a CUDA GPU)
    python tools/execute_book.py --only 03            # one chapter (stem, path or number); others kept
    python tools/execute_book.py --page-only          # rewrite book/execution.md from book/execution.json

Each notebook listed in ``_toc.yml`` runs in a fresh Jupyter kernel (nbclient) whose environment is this
process's, with ``BETAVAE_PROFILE`` set. Outputs and ipywidgets state are stored in the notebook. A notebook
that fails is left as it was; its partial run is written to ``_build/execution/failed/`` for inspection.

``book/execution.json`` records the machine (CUDA device name, or the CPU model and core count: a CPU run
is never labelled as a GPU run), profile, Python / torch / CUDA versions, seed, start time (UTC), git commit,
and per notebook the wall time, status and the headline metrics the chapter printed with
``betavae_lib.report.headline``. ``book/execution.md`` is rendered from it on every run, so the page and
the manifest always agree.
"""

from __future__ import annotations

import argparse
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
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = Path("book/execution.json")
PAGE = Path("book/execution.md")
FAILED_DIR = Path("_build/execution/failed")
SCHEMA = 1
HEADLINE_MARKER = "headline metrics:"  # betavae_lib.report.MARKER (kept here so --page-only needs no torch)


# ----------------------------------------------------------------------------------------------- the book
def toc_notebooks(root: Path) -> list[str]:
    """Notebook paths (relative to ``root``, posix, with ``.ipynb``) listed in ``root/_toc.yml``, in order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8")) or {}
    files: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    files.append(node[key])
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    found = []
    for name in files:
        path = name if name.endswith(".ipynb") else f"{name}.ipynb"
        if (root / path).is_file() and path not in found:
            found.append(path)
    return found


def select(notebooks: list[str], wanted: list[str]) -> list[str]:
    """The notebooks matching each of ``wanted``: a path, a stem (``01_first_vae``) or a prefix (``01``)."""
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
            raise SystemExit(
                f"--only {name!r} matches {len(matches)} notebooks in _toc.yml ({listed})"
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


# --------------------------------------------------------------------------------------------- the machine
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in (
            Path("/proc/cpuinfo")
            .read_text(encoding="utf-8", errors="replace")
            .splitlines()
        ):
            if (
                line.lower().startswith(("model name", "hardware", "processor\t: "))
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
    """The accelerator the chapters' ``pick_device()`` will choose: cuda, then mps, else the CPU.

    ``{"kind": "cuda"|"mps"|"cpu", "name": str, "cpu": str, "cpu_cores": int, "gpu_count": int}``;
    ``name`` is the CUDA device name only when CUDA is available to torch.
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
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            kind="cuda",
            name=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
        )
    elif (
        getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
        info.update(kind="mps", name=f"Apple GPU (MPS) on {cpu_model()}")
    return info


def versions() -> dict:
    """Python and the packages whose versions change the numbers."""
    import numpy
    import torch

    import betavae_lib

    try:
        import nbclient

        nbclient_version = nbclient.__version__
    except ImportError:  # pragma: no cover - nbclient is required to execute anyway
        nbclient_version = None
    cuda = torch.version.cuda if torch.cuda.is_available() else None
    cudnn = (
        torch.backends.cudnn.version()
        if cuda and torch.backends.cudnn.is_available()
        else None
    )
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": cuda,
        "cuda_build": torch.version.cuda,
        "cudnn": cudnn,
        "numpy": numpy.__version__,
        "betavae_lib": getattr(betavae_lib, "__version__", None),
        "nbclient": nbclient_version,
    }


def git_state(root: Path) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository at ``root`` (read-only git calls)."""

    def git(*args):
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        status = git(
            "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def utc_now() -> str:
    return (
        dt.datetime.now(dt.timezone.utc)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )


# ------------------------------------------------------------------------------------------- the outputs
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
    """Headline metrics printed in ``text``; the same rule as ``betavae_lib.report.parse_headlines``."""
    found = {}
    for line in text.splitlines():
        if line.startswith(HEADLINE_MARKER):
            found.update(json.loads(line[len(HEADLINE_MARKER) :]))
    return found


def printed_setting(text: str, name: str) -> str | None:
    """The value of ``name: value`` in the setup print (``profile: reduced | device: cpu | ...``)."""
    match = re.search(rf"(?:^|\|)\s*{name}:\s*([^\s|]+)", text, flags=re.M)
    return match.group(1) if match else None


def seeds_in(nb) -> list[int]:
    """Seeds passed to ``seed_everything(N)`` in ``nb``'s code, in order, without repeats."""
    seeds = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            for value in re.findall(
                r"seed_everything\(\s*(?:seed\s*=\s*)?(\d+)\s*\)", cell.source
            ):
                if int(value) not in seeds:
                    seeds.append(int(value))
    return seeds


def device_used(printed: str | None, device: dict, vers: dict) -> dict:
    """``device_kind``, ``device`` and ``cuda`` of one notebook's run.

    ``printed`` is the device the notebook printed (``cpu``, ``cuda``, ``cuda:0``, ``mps``; None if it
    printed none, then the machine's default is assumed). A GPU is named only when the notebook ran on one
    and this machine has it; everything else is labelled with the CPU.
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
    """The first line of what went wrong: ``ename: evalue`` for a failing cell, else the exception."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


# ------------------------------------------------------------------------------------------- execution
def kernel_env(profile: str) -> dict:
    """Environment for the kernels: this process's, with the profile set and figures kept inline."""
    env = dict(os.environ)
    env["BETAVAE_PROFILE"] = profile
    env.pop(
        "MPLBACKEND", None
    )  # a non-inline backend (Agg in CI) would drop every figure from the outputs
    env.setdefault(
        "PYDEVD_DISABLE_FILE_VALIDATION", "1"
    )  # no debugger warning in the stored outputs
    return env


def execute_notebook(
    root: Path,
    path: str,
    *,
    profile: str,
    timeout: int,
    device: dict,
    vers: dict,
    git: dict,
) -> dict:
    """Run ``root/path`` in a fresh kernel; on success store outputs in place. Returns its manifest entry."""
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
        client.execute(env=kernel_env(profile))
        status, error = "ok", None
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, the run goes on
        status, error = "error", error_line(exc)
    wall = time.perf_counter() - t0

    text = stream_text(nb)
    entry = {
        "path": path,
        "title": notebook_title(nb),
        "status": status,
        "error": error,
        "wall_s": round(wall, 1),
        "started_utc": started,
        "profile": printed_setting(text, "profile") or profile,
        **device_used(printed_setting(text, "device"), device, vers),
        "torch": vers["torch"],
        "git_commit": git["commit"],
        "seeds": seeds_in(nb),
        "metrics": parse_headlines(text),
    }
    if status == "ok" and nb_path.read_bytes() != original:
        status, error = (
            "error",
            "the notebook was edited while it ran; execute it again",
        )
        entry.update(status=status, error=error)
    if status == "ok":
        nbformat.write(nb, nb_path)
        size_mb = nb_path.stat().st_size / 2**20
        if size_mb > 2:
            print(
                f"  note: {path} is {size_mb:.1f} MB with outputs (the book aims at 2 MB at most)"
            )
    else:
        failed = root / FAILED_DIR / Path(path).name
        failed.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, failed)
        print(
            f"  {path} left unchanged; the failed run is in {failed.relative_to(root)}"
        )
    return entry


# ------------------------------------------------------------------------------------------- manifest
def load_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def merge_entries(
    old: dict | None, new_entries: list[dict], order: list[str]
) -> list[dict]:
    """Entries for the notebooks in ``order``: the new ones, else the old ones kept; others dropped."""
    by_path = {e["path"]: e for e in (old or {}).get("notebooks", [])}
    by_path.update({e["path"]: e for e in new_entries})
    return [by_path[p] for p in order if p in by_path]


def build_manifest(*, run: dict, entries: list[dict]) -> dict:
    seeds = sorted({s for e in entries for s in e.get("seeds", [])})
    return {
        "schema": SCHEMA,
        **run,
        "seed": seeds[0] if len(seeds) == 1 else (seeds or None),
        "total_wall_s": round(sum(e["wall_s"] for e in entries), 1),
        "notebooks": entries,
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


# ----------------------------------------------------------------------------------------------- page
PROFILE_MEANING = {
    "smoke": "a few seconds per chapter: tiny subsets and one or two epochs, to test that the code runs; "
    "its numbers are noise",
    "reduced": "minutes per chapter on a CPU: 20,000 training and 5,000 test images per dataset and fewer "
    "epochs than the full run, so curves stop before they flatten and metrics are rougher",
    "full": "full datasets and enough epochs for the curves to flatten (meant for a GPU)",
}
DEVICE_KIND = {
    "cuda": "a CUDA GPU",
    "mps": "an Apple GPU, MPS",
    "cpu": "CPU only, no GPU",
}


def fmt_value(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_seconds(seconds: float) -> str:
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def cell(text) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def doc_link(path: str) -> str:
    """A MyST reference to the chapter from book/execution.md."""
    return f"{{doc}}`../{path[:-6]}`"


def render_page(manifest: dict | None) -> str:
    """The markdown page "How this book was executed": ``manifest`` as tables (and nothing else)."""
    lines = [
        "# How this book was executed",
        "",
        "<!-- Written by tools/execute_book.py from book/execution.json; edit the script, not this page. -->",
        "",
    ]
    if not manifest:
        lines += [
            "The chapters have not been executed with `tools/execute_book.py` yet.",
            "",
        ]
        return "\n".join(lines)
    dev, vers, profile = manifest["device"], manifest["versions"], manifest["profile"]
    kind = DEVICE_KIND.get(dev["kind"], dev["kind"])
    entries = {e["path"]: e for e in manifest["notebooks"]}
    order = list(entries)  # the table of contents' order (see merge_entries)
    lines += [
        f"The outputs you read in this book (figures, tables, printed numbers) are those of the run "
        f"recorded here, made with `tools/execute_book.py`. The run used **{cell(dev['name'])}** "
        f"({kind}) with the **{profile}** profile ({PROFILE_MEANING.get(profile, profile)}).",
        "",
    ]
    if dev["kind"] == "cpu":
        lines += [
            f"This run had no GPU: every chapter ran on the CPU under the `{profile}` profile. "
            "Numbers from a `full` run on a GPU differ; run the command below on a GPU to reproduce "
            "the full-scale results.",
            "",
        ]
    mixed = [
        p
        for p, e in entries.items()
        if (e.get("profile"), e.get("device"))
        != (profile, dev["name"] if e.get("device_kind") != "cpu" else dev["cpu"])
    ]
    if mixed:
        lines += [
            "Some chapters were executed in a different run from the one described below; the chapter "
            "table gives each chapter's own profile and device.",
            "",
        ]

    git = manifest.get("git") or {}
    commit = git.get("commit")
    commit_text = (
        "not a git checkout"
        if not commit
        else f"`{commit[:12]}`"
        + (" with uncommitted changes" if git.get("dirty") else "")
    )
    seed = manifest.get("seed")
    rows = [
        ("device", dev["name"]),
        ("device type", kind),
        *([("CPU", dev["cpu"])] if dev["cpu"] != dev["name"] else []),
        ("profile", f"`{profile}`"),
        ("Python", vers.get("python")),
        ("torch", vers.get("torch")),
        ("CUDA", vers.get("cuda") or "not used"),
        ("cuDNN", vers.get("cudnn") or "not used"),
        ("numpy", vers.get("numpy")),
        ("betavae_lib", vers.get("betavae_lib")),
        (
            "seed",
            ", ".join(map(str, seed)) if isinstance(seed, list) else fmt_value(seed),
        ),
        ("started (UTC)", manifest.get("started_utc")),
        ("total execution time", fmt_seconds(manifest.get("total_wall_s", 0))),
        ("git commit", commit_text),
        ("command", f"`{manifest.get('command', '')}`"),
    ]
    lines += ["## The machine and the software", "", "| what | value |", "|---|---|"]
    lines += [f"| {name} | {cell(fmt_value(value))} |" for name, value in rows]
    lines += [""]

    lines += [
        "## The chapters",
        "",
        "| chapter | status | time | profile | device |",
        "|---|---|---|---|---|",
    ]
    for path in order:
        e = entries[path]
        status = (
            "ok"
            if e["status"] == "ok"
            else f"error: {cell(e.get('error') or '')} (the chapter shows the outputs of its last good run)"
        )
        lines.append(
            f"| {doc_link(path)} | {status} | {fmt_seconds(e['wall_s'])} | `{e.get('profile')}` | "
            f"{cell(e.get('device'))}, {'CPU' if e.get('device_kind') == 'cpu' else 'GPU'} |"
        )
    lines += [""]

    lines += [
        "## Headline metrics",
        "",
        "Each chapter ends by printing its headline numbers; these are the values from this run, "
        "rounded to four significant digits (`book/execution.json` has them in full; losses and ELBOs "
        "are in nats, as everywhere in the book).",
        "",
    ]
    silent = [
        entries[p].get("title") or p for p in order if not entries[p].get("metrics")
    ]
    if silent:
        lines += [
            f"No headline metrics were printed by: {', '.join(cell(t) for t in silent)}.",
            "",
        ]
    for path in order:
        e = entries[path]
        if not e.get("metrics"):
            continue
        title = e.get("title") or path
        lines += [
            f"### {cell(title)}",
            "",
            f"{doc_link(path)}",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [
            f"| `{cell(k)}` | {cell(fmt_value(v))} |" for k, v in e["metrics"].items()
        ]
        lines += [""]

    lines += [
        "## Reproduce it",
        "",
        "```bash",
        "pip install -r requirements.txt",
        f"python tools/execute_book.py --profile {profile}      # every chapter",
        f"python tools/execute_book.py --profile {profile} --only 01   # one chapter, others kept",
        "```",
        "",
        "The executor runs each notebook listed in the table of contents in a fresh Jupyter kernel with "
        "`BETAVAE_PROFILE` set, stores the outputs (and the widgets' state) in the notebook, and writes "
        "`book/execution.json` and this page. The book is then built from the stored outputs without "
        "executing anything.",
        "",
    ]
    return "\n".join(lines)


def write_page(root: Path, manifest: dict | None) -> None:
    (root / PAGE).write_text(render_page(manifest), encoding="utf-8")


# ----------------------------------------------------------------------------------------------- main
def default_profile() -> str:
    from betavae_lib.profile import get_profile

    return get_profile().name


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        choices=["smoke", "reduced", "full"],
        help="run profile (default: $BETAVAE_PROFILE, else full with CUDA and reduced without)",
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
    profile = args.profile or default_profile()
    device, vers, git = describe_device(), versions(), git_state(root)
    if profile == "full" and device["kind"] == "cpu":
        print("note: the full profile on a CPU takes hours per chapter")
    command = "python tools/execute_book.py" + "".join(
        f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])
    )
    run = {
        "started_utc": utc_now(),
        "profile": profile,
        "device": device,
        "versions": vers,
        "platform": platform.platform(),
        "git": git,
        "command": command,
    }
    print(
        f"executing {len(todo)} notebook(s) | profile {profile} | {device['name']} | torch {vers['torch']}"
    )

    entries = []
    for i, path in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {path} ...", flush=True)
        entry = execute_notebook(
            root,
            path,
            profile=profile,
            timeout=args.timeout,
            device=device,
            vers=vers,
            git=git,
        )
        entries.append(entry)
        print(
            f"  {entry['status']} in {fmt_seconds(entry['wall_s'])}"
            + (
                f": {entry['error']}"
                if entry["error"]
                else f"; metrics {json.dumps(entry['metrics'])}"
            ),
            flush=True,
        )
        # written after every notebook, so an interrupted run keeps what it finished
        manifest = build_manifest(
            run=run, entries=merge_entries(load_manifest(root), [entry], order)
        )
        write_json(root / MANIFEST, manifest)
        write_page(root, manifest)

    if not todo:
        write_page(root, load_manifest(root))
    failed = [e["path"] for e in entries if e["status"] != "ok"]
    print(
        f"wrote {MANIFEST} and {PAGE}"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

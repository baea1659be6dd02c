"""Execute the book's chapters in place and record how: the run manifest and its page.

Usage (from the repository root):

    python tools/execute_book.py                 # every notebook in _toc.yml
    python tools/execute_book.py --profile full  # the published run (a CUDA GPU)
    python tools/execute_book.py --only 03       # one chapter (stem, path or number)
    python tools/execute_book.py --page-only     # rewrite book/execution.md only

Each notebook listed in ``_toc.yml`` (read with PyYAML in the order Jupyter Book reads
it) runs in a fresh Jupyter kernel (nbclient) whose environment is this process's, with
``BETAVAE_PROFILE`` set. Outputs and ipywidgets state are stored in the notebook. A
notebook that fails (an error, a cell past ``--timeout`` or past ``--deadline``) is left
as it was; its partial run is written to ``_build/execution/failed/``, and the exit
status is 1. A notebook whose cells differ from its jupytext source (``jupytext.toml``)
is not run: sync it first (where jupytext is not installed, as on the GPU machine, the
check is skipped and the start says so). Nothing here needs sphinx, docutils or
jupytext: the stored ``.ipynb`` files are executed as they are.

``--out DIR`` copies each notebook there after every cell and at the end, and the
manifest after each notebook, so that a run killed from outside still leaves what it
finished; ``--echo`` prints what the cells print as they print it (for a log).

``book/execution.json`` lists the runs (the machine: CUDA device name, or the CPU
model and core count, a CPU run is never labelled as a GPU run; profile; Python, torch
and CUDA versions; start time (UTC); git commit, or the one passed with ``--commit``
where the copy has no ``.git``; command; the sizing protocol given with
``--protocol``) and, per notebook, the run that made its outputs, with wall time,
status, profile, device, seed and the headline metrics the chapter printed with
``betavae_lib.report.headline`` (a line that cannot be read is skipped and listed
under ``warnings``). ``--only`` replaces the entries of the notebooks it runs and keeps
the others with the runs that made them. The page ``book/execution.md`` is rendered
from the manifest by ``tools/execution_page.py``.
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
INTERRUPTED = "KeyboardInterrupt"


# --------------------------------------------------------------------------- the book
TOC_SUBTREES = ("parts", "subtrees")  # a list of subtrees, each holding items
TOC_ITEMS = ("chapters", "sections", "entries")  # a list of items


def toc_documents(root: Path) -> list[str]:
    """The documents of ``root/_toc.yml`` in reading order, without suffix
    (``notebooks/01_first_vae``), in the order ``sphinx_external_toc`` gives Jupyter
    Book: each file, then the files under it, depth first. Globs become the matching
    files, sorted; URLs are skipped.

    Read with PyYAML alone (no sphinx, docutils or sphinx_external_toc), so that the
    GPU machine, which has none of them, can run the book; the tests check that the
    result is the one ``sphinx_external_toc`` gives.
    """
    import yaml

    path = root / "_toc.yml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("root"), str):
        raise SystemExit(f"{path}: not a table of contents (no 'root: <file>')")
    order: list[str] = []

    def add(name: str) -> None:
        stem, suffix = os.path.splitext(name)
        name = stem if suffix in DOC_SUFFIXES else name
        if name not in order:
            order.append(name)

    def items_of(node: dict) -> list:
        found = []
        for key in TOC_SUBTREES:
            for subtree in node.get(key) or []:
                if isinstance(subtree, dict):
                    found += items_of(subtree)
        for key in TOC_ITEMS:
            found += [i for i in node.get(key) or [] if isinstance(i, dict)]
        return found

    def visit(node: dict) -> None:
        for item in items_of(node):
            if isinstance(item.get("file"), str):
                add(item["file"])
                visit(item)
            elif isinstance(item.get("glob"), str):
                for suffix in DOC_SUFFIXES:
                    for match in sorted(root.glob(f"{item['glob']}{suffix}")):
                        add(match.relative_to(root).as_posix())

    add(data["root"])
    visit(data)
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


def behind_sources(root: Path, paths: list[str]) -> list[tuple[str, str]] | None:
    """``(notebook, source)`` of each of ``paths`` that differs from its source; None
    when jupytext is not installed (the GPU machine has none), so nothing was checked.
    """
    try:
        import jupytext
    except ImportError:
        return None

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


COMMIT_ENV = "BETAVAE_GIT_COMMIT"  # the commit of a copy without .git (the GPU machine)
COMMIT_RE = re.compile(r"[0-9a-f]{7,40}")


def git_state(root: Path, commit: str | None = None) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository at ``root``
    (read-only git calls). Where ``root`` is no git checkout (the GPU machine receives
    a copy without ``.git``), the ``commit`` passed in (``--commit``, else
    ``$BETAVAE_GIT_COMMIT``) is recorded, with ``"source": "passed in"``."""

    def git(*args):
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        found = git("rev-parse", "HEAD")
        status = git("--no-optional-locks", "status", "--porcelain", "-uno")
    except (OSError, subprocess.SubprocessError):
        found, status = None, None
    if found:
        return {"commit": found, "dirty": None if status is None else bool(status)}
    given = commit or os.environ.get(COMMIT_ENV, "").strip() or None
    if given is None:
        return {"commit": None, "dirty": None}
    return {"commit": given, "dirty": None, "source": "passed in"}


def commit_id(text: str) -> str:
    """argparse type for ``--commit``: a hexadecimal commit id (7-40 digits)."""
    text = text.strip().lower()
    if not COMMIT_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"--commit must be a git commit id (7 to 40 hex digits), got {text!r}"
        )
    return text


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


def parse_headlines(text: str, warnings: list | None = None) -> dict:
    """Headline metrics printed in ``text`` (the rule of
    ``betavae_lib.report.parse_headlines``). A marked line that is not a JSON object
    is skipped, and said in ``warnings`` (when given), instead of failing the run
    whose outputs are already there."""
    found = {}
    for line in text.splitlines():
        if not line.startswith(HEADLINE_MARKER):
            continue
        try:
            value = json.loads(line[len(HEADLINE_MARKER) :])
        except ValueError:
            value = None
        if isinstance(value, dict):
            found.update(value)
        elif warnings is not None:
            warnings.append(f"a headline line is not a JSON object: {line[:120]!r}")
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
GROUPED_INT = re.compile(r"\d{1,3}(?:([,_\u2009\u202f])\d{3})(?:\1\d{3})*")


def printed_int(text: str) -> int | None:
    """The integer ``text`` writes, plainly or with ``,``, ``_`` or thin spaces between
    groups of three digits (``7,000``); None if it writes none."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if GROUPED_INT.fullmatch(text):
        return int(re.sub(r"\D", "", text))
    return None


def steps_entry(printed: str | None, warnings: list | None = None) -> dict:
    """``{"steps": N}`` when the chapter printed ``steps: N`` (``BETAVAE_STEPS``
    lengthened its training; ``7,000`` is read as 7000), else nothing; a value that is
    no number is left out and said in ``warnings``."""
    if printed is None:
        return {}
    value = printed_int(printed)
    if value is None:
        if warnings is not None:
            warnings.append(f"the printed 'steps: {printed}' is not a number")
        return {}
    return {"steps": value}


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


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it (a reader, or a
    copy made when the process is killed, sees the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def notebook_bytes(nb) -> bytes:
    return nbformat.writes(nb).encode("utf-8")


class OutDir:
    """Where a run's pieces are copied as they are finished (``--out``): per notebook,
    ``NAME.partial.ipynb`` after every cell, then ``NAME.ipynb`` (it ran) or
    ``NAME.failed.ipynb`` (it did not) in its place; and the manifest. One file per
    notebook at any time, so a folder with a file-count limit stays within it."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    def _notebook(self, path: str, kind: str) -> Path:
        stem = Path(path).stem
        return self.folder / (
            f"{stem}.ipynb" if kind == "ok" else f"{stem}.{kind}.ipynb"
        )

    def notebook(self, path: str, nb, kind: str) -> None:
        """Store ``nb`` as ``kind`` ("partial", "ok", "failed"); drop the others."""
        if self.folder is None:
            return
        write_atomic(self._notebook(path, kind), notebook_bytes(nb))
        for other in ("partial", "ok", "failed"):
            if other != kind:
                self._notebook(path, other).unlink(missing_ok=True)

    def manifest(self, manifest: dict) -> None:
        if self.folder is not None:
            text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
            write_atomic(self.folder / MANIFEST.name, text.encode("utf-8"))


def make_client(nb, nb_path: Path, timeout: int, deadline: float | None, echo: bool):
    """An nbclient ``NotebookClient`` for ``nb``: a cell may run ``timeout`` seconds
    (0: no limit), and none past the monotonic ``deadline`` (None: none); with
    ``echo``, what the cells print is copied to this process's stdout as it comes."""
    from nbclient import NotebookClient

    class Client(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):
            if echo and msg.get("msg_type") == "stream":
                text = msg.get("content", {}).get("text", "")
                sys.stdout.write("".join(f"  | {line}\n" for line in text.splitlines()))
                sys.stdout.flush()
            return super().output(outs, msg, display_id, cell_index)

    def cell_timeout(cell):
        limits = [timeout] if timeout > 0 else []
        if deadline is not None:
            limits.append(max(1.0, deadline - time.monotonic()))
        return min(limits) if limits else None

    return Client(
        nb,
        timeout=timeout if timeout > 0 else None,
        timeout_func=cell_timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(nb_path.parent)}},
        store_widget_state=True,
        record_timing=False,
    )


def describe_outputs(nb, profile: str, run: dict) -> tuple[dict, list[str]]:
    """The manifest fields read from ``nb``'s outputs and code, and warnings for what
    could not be read. Never raises: the outputs are stored whatever is printed."""
    warnings: list[str] = []
    text = stream_text(nb)
    fields: dict = {}

    def guarded(what: str, fn, default):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a record, not a reason to lose a run
            warnings.append(f"{what} could not be read: {error_line(exc)}")
            return default

    fields["title"] = guarded("the title", lambda: notebook_title(nb), "")
    fields["profile"] = printed_setting(text, "profile") or profile
    fields.update(
        guarded(
            "the steps",
            lambda: steps_entry(printed_setting(text, "steps"), warnings),
            {},
        )
    )
    fields.update(
        device_used(printed_setting(text, "device"), run["device"], run["versions"])
    )
    fields["seed"] = guarded("the seed", lambda: chapter_seed(nb, text), None)
    fields["seeds"] = guarded("the seeds", lambda: seeds_in(nb), [])
    fields["metrics"] = guarded(
        "the headline metrics", lambda: parse_headlines(text, warnings), {}
    )
    return fields, warnings


def execute_notebook(
    root: Path,
    path: str,
    *,
    profile: str,
    timeout: int,
    run: dict,
    steps: int | None = None,
    deadline: float | None = None,
    out: OutDir | None = None,
    echo: bool = False,
):
    """Run ``root/path`` in a fresh kernel; on success store its outputs in place.
    Returns its manifest entry, made by ``run``. timeout: seconds per cell (0: none);
    deadline: a ``time.monotonic()`` no cell may run past; out: where the notebook is
    copied after every cell and at the end (:class:`OutDir`); echo: print what the
    cells print, as they print it."""
    out = out or OutDir(None)
    nb_path = root / path
    original = nb_path.read_bytes()
    nb = nbformat.reads(original.decode("utf-8"), as_version=4)
    nb.metadata.pop("widgets", None)  # state from an earlier run must not outlive it
    client = make_client(nb, nb_path, timeout, deadline, echo)
    client.on_cell_executed = lambda **_: out.notebook(path, nb, "partial")
    started, t0 = utc_now(), time.perf_counter()
    try:
        client.execute(env=kernel_env(profile, steps))
        status, error = "ok", None
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, the run goes on
        status, error = "error", error_line(exc)
    except KeyboardInterrupt:  # SIGINT from outside: keep what ran, then stop
        status, error = "error", f"{INTERRUPTED}: stopped from outside (SIGINT)"
    wall = time.perf_counter() - t0
    if status == "ok" and nb_path.read_bytes() != original:
        status, error = (
            "error",
            "the notebook was edited while it ran; execute it again",
        )

    fields, warnings = describe_outputs(nb, profile, run)
    entry = {
        "path": path,
        "title": fields.pop("title"),
        "status": status,
        "error": error,
        "wall_s": round(wall, 1),
        "started_utc": started,
        "run": run["id"],
        "profile": fields.pop("profile"),
        **{k: fields.pop(k) for k in ("steps",) if k in fields},
        **{k: fields.pop(k) for k in ("device_kind", "device", "cuda")},
        "torch": run["versions"]["torch"],
        "git_commit": run["git"]["commit"],
        **fields,
    }
    if warnings:
        entry["warnings"] = warnings
        for w in warnings:
            print(f"  warning: {path}: {w}")
    if status == "ok":
        nbformat.write(nb, nb_path)
        out.notebook(path, nb, "ok")
        size_mb = nb_path.stat().st_size / 2**20
        if size_mb > 2:
            print(f"  note: {path} is {size_mb:.1f} MB with outputs (the aim is 2 MB)")
    else:
        failed = root / FAILED_DIR / Path(path).name
        failed.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, failed)
        out.notebook(path, nb, "failed")
        print(f"  {path} left unchanged; its failed run: {failed.relative_to(root)}")
    return entry


def not_run(root: Path, path: str, run: dict, why: str) -> dict:
    """The entry of a notebook that was not started (it counts as failed)."""
    nb = nbformat.read(root / path, as_version=4)
    return {
        "path": path,
        "title": notebook_title(nb),
        "status": "error",
        "error": f"not run: {why}",
        "wall_s": 0.0,
        "started_utc": utc_now(),
        "run": run["id"],
        "profile": run["profile"],
        **device_used(None, run["device"], run["versions"]),
        "torch": run["versions"]["torch"],
        "git_commit": run["git"]["commit"],
        "seed": None,
        "seeds": [],
        "metrics": {},
    }


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
    (root / PAGE).parent.mkdir(parents=True, exist_ok=True)
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


def timeout_seconds(text: str) -> int:
    """argparse type for ``--timeout``: whole seconds, 0 for no limit."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"--timeout must be a whole number of seconds (0: no limit), got {text!r}"
        )
    return value


def deadline_seconds(text: str) -> float:
    """argparse type for ``--deadline``: seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"--deadline must be a number of seconds > 0, got {text!r}"
        )
    return value


def limits_text(timeout: int, deadline: float | None) -> str:
    """What the start line says about when a cell is stopped."""
    per_cell = (
        f"a cell is stopped after {fmt_seconds(timeout)} (--timeout)"
        if timeout > 0
        else "cells run without a time limit (--timeout 0)"
    )
    if deadline is None:
        return per_cell
    after = fmt_seconds(deadline)
    return f"{per_cell}; the run stops {after} after its start (--deadline)"


def read_protocol(path: Path | None) -> dict | None:
    """The JSON object in ``path`` (``--protocol``), recorded with the run."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"--protocol {path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise SystemExit(f"--protocol {path}: a JSON object is needed")
    return data


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
        type=timeout_seconds,
        default=3600,
        metavar="S",
        help="seconds one cell may run before the notebook is stopped; 0: no limit "
        "(default 3600)",
    )
    parser.add_argument(
        "--deadline",
        type=deadline_seconds,
        metavar="S",
        help="stop whatever cell runs S seconds after the start (the notebook then "
        "counts as failed and its partial run is kept); default: none",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="copy each notebook there after every cell (NAME.partial.ipynb), then "
        "as NAME.ipynb or NAME.failed.ipynb, and the manifest after each notebook",
    )
    parser.add_argument(
        "--echo",
        action="store_true",
        help="print what the cells print as they run (for a log)",
    )
    parser.add_argument(
        "--commit",
        type=commit_id,
        help="the git commit of this copy, recorded when it has no .git (default "
        f"${COMMIT_ENV})",
    )
    parser.add_argument(
        "--protocol",
        type=Path,
        metavar="FILE",
        help="a JSON file that says how the run was sized (the GPU launcher's "
        "plan.json), recorded with the run",
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

    t_start = time.monotonic()
    deadline = None if args.deadline is None else t_start + args.deadline
    order = toc_notebooks(root)
    todo = select(order, args.only) if args.only else order
    stale = behind_sources(root, todo)
    if stale is None:
        print(
            "note: jupytext is not installed here, so it was not checked that the "
            "notebooks match their sources in notebooks/src (CI checks it)"
        )
    elif stale:
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
    protocol = read_protocol(args.protocol)
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
        "git": git_state(root, args.commit),
        "command": "python tools/execute_book.py"
        + "".join(f" {shlex.quote(a)}" for a in argv),
        **({"protocol": protocol} if protocol else {}),
    }
    out = OutDir(args.out.resolve() if args.out else None)
    print(
        f"executing {len(todo)} notebook(s) | profile {profile} | {device['name']} "
        f"| {limits_text(args.timeout, args.deadline)}",
        flush=True,
    )

    entries = []
    for i, path in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {path} ...", flush=True)
        if deadline is not None and time.monotonic() >= deadline:
            entry = not_run(root, path, run, "the run's --deadline had passed")
        elif entries and (entries[-1]["error"] or "").startswith(INTERRUPTED):
            entry = not_run(root, path, run, "the run was stopped from outside")
        else:
            entry = execute_notebook(
                root,
                path,
                profile=profile,
                timeout=args.timeout,
                run=run,
                steps=args.steps,
                deadline=deadline,
                out=out,
                echo=args.echo,
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
        out.manifest(manifest)

    if not todo:
        write_page(root, load_manifest(root))
    failed = [e["path"] for e in entries if e["status"] != "ok"]
    note = f"; failed: {', '.join(failed)}" if failed else ""
    print(f"wrote {MANIFEST} and {PAGE}{note}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

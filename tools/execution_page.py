"""The page "How this book was executed" (``book/execution.md``), rendered from the run
manifest ``book/execution.json`` that ``tools/execute_book.py`` writes.

The page shows the manifest and nothing else: the runs (machine, software, profile),
each chapter's status, time, profile and device, and the headline metrics. Only the
standard library is used, so ``python tools/execute_book.py --page-only`` needs no
torch.
"""

from __future__ import annotations

import re
from pathlib import Path

PROFILE_MEANING = {
    "smoke": "a few seconds per chapter: tiny subsets and one or two epochs, to test "
    "that the code runs; its numbers are noise",
    "reduced": "minutes per chapter on a CPU: 20,000 training and 5,000 test images "
    "per dataset and fewer epochs than the full run, so curves stop before they "
    "flatten and metrics are rougher",
    "full": "full datasets and enough epochs for the curves to flatten, meant for a "
    "GPU",
}
DEVICE_KIND = {
    "cuda": "a CUDA GPU",
    "mps": "an Apple GPU, MPS",
    "cpu": "CPU only, no GPU",
}
COMMAND_WIDTH = (
    70  # longer commands are continued on the next line (the page is narrow)
)

INTRO = (
    "The outputs you read in this book (figures, tables, printed numbers) are those of "
    "the {runs} recorded here, made with `tools/execute_book.py`."
)
NO_GPU = (
    "{lead}: {which} ran on the CPU under the {profiles}. A `full` run on a GPU "
    "gives numbers of its own (other arithmetic, and for the shorter profiles more "
    "training); run the command below on a GPU to reproduce the full-scale results."
)
METRICS_INTRO = (
    "Each chapter ends by printing its headline numbers; these are the values "
    "recorded for it, rounded to four significant digits (`book/execution.json` has "
    "them in full; losses and ELBOs are in nats, as everywhere in the book)."
)
REPRODUCE_OUTRO = (
    "The executor runs each notebook listed in the table of contents in a fresh "
    "Jupyter kernel with `BETAVAE_PROFILE` set, stores the outputs (and the widgets' "
    "state) in the notebook, and writes `book/execution.json` and this page. "
    "`--only 03` re-runs one chapter and keeps the others' records. The book is then "
    "built from the stored outputs without executing anything."
)


# --------------------------------------------------------------------------- formatting
def fmt_value(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "–"
    return str(value)


def fmt_seconds(seconds: float) -> str:
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# Characters that start markup in MyST markdown (CommonMark, GFM tables, dollarmath,
# roles): text from the manifest is shown with each of them backslash-escaped, so that
# ``<lambda>`` is shown and ``<img onerror=...>`` in an error line stays text.
MARKUP = frozenset("\\`*_[]<>&|${}~")


class Code(str):
    """A value shown as inline code (:func:`code`) rather than as text."""


class Markdown(str):
    """A value already written as markdown (escaped where it came from the manifest)."""


def text(value) -> str:
    """``value`` as literal text inside markdown, a table cell included: every
    character that could start markup is escaped, and line breaks become spaces."""
    flat = re.sub(r"[\r\n]+", " ", str(value))
    return "".join("\\" + c if c in MARKUP else c for c in flat)


def code(value, table: bool = True) -> str:
    """``value`` as an inline code span, whatever backticks it holds; ``table``: it
    sits in a table cell, whose ``|`` must be escaped even inside code."""
    flat = re.sub(r"[\r\n]+", " ", str(value))
    if table:
        flat = flat.replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or not flat.strip() else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def shown(value) -> str:
    """A table value: :class:`Code` as code, anything else as text."""
    if isinstance(value, Markdown):
        return str(value)
    return code(value) if isinstance(value, Code) else text(fmt_value(value))


def doc_link(path: str) -> str:
    """A MyST reference to the chapter from book/execution.md."""
    return f"{{doc}}`../{path[:-6]}`"


def only_name(path: str, paths: list[str]) -> str:
    """The shortest ``--only`` name of ``path``: its number prefix if that is unique."""
    stem = Path(path).stem
    prefix = stem.split("_")[0]
    others = [Path(p).stem for p in paths if p != path]
    return prefix if not any(s.startswith(prefix) for s in others) else stem


def command_lines(args: list[str]) -> list[str]:
    """``args`` as shell lines of at most about ``COMMAND_WIDTH`` characters."""
    lines, line = [], ""
    for arg in args:
        if line and len(line) + len(arg) + 3 > COMMAND_WIDTH:
            lines.append(line + " \\")
            line = "    "
        line += ("" if not line.strip() else " ") + arg
    return lines + [line]


def chapter_seeds(entries: list[dict]) -> list[int]:
    """The chapters' seeds (``start_chapter``'s), sorted, without repeats."""
    return sorted({e["seed"] for e in entries if e.get("seed") is not None})


# ---------------------------------------------------------------------------- the page
def describe(run: dict) -> str:
    dev = run["device"]
    kind = DEVICE_KIND.get(dev["kind"], dev["kind"])
    profile = run["profile"]
    steps = (
        f", lengthened to {run['steps']:,} optimiser steps per model where a "
        "chapter trains by steps"
        if run.get("steps")
        else ""
    )
    meaning = text(PROFILE_MEANING.get(profile, profile))
    return (
        f"**{text(dev['name'])}** ({kind}) with the **{text(profile)}** profile "
        f"({meaning}){steps}{protocol_note(run)}"
    )


def protocol_summary(run: dict) -> str | None:
    """How the run was sized (``--protocol``): its ``summary``, else its settings."""
    protocol = run.get("protocol")
    if not isinstance(protocol, dict) or not protocol:
        return None
    if protocol.get("summary"):
        return str(protocol["summary"])
    return ", ".join(f"{k} {fmt_value(v)}" for k, v in protocol.items())


def protocol_note(run: dict) -> str:
    summary = protocol_summary(run)
    return f"; sized by the GPU launcher: {text(summary)}" if summary else ""


def intro(runs: list[dict], by_run: dict[int, list[dict]], entries: list[dict]):
    if len(runs) == 1:
        lines = [INTRO.format(runs="run") + f" The run used {describe(runs[0])}.", ""]
    else:
        lines = [
            INTRO.format(runs=f"{len(runs)} runs")
            + " The chapters were not all executed in one run: the chapter table gives "
            "each chapter's run, profile and device.",
            "",
        ]
        for i, run in enumerate(runs, 1):
            links = ", ".join(doc_link(e["path"]) for e in by_run[run["id"]])
            lines.append(f"- Run {i} used {describe(run)}: {links}.")
        lines.append("")
    on_cpu = [e for e in entries if e.get("device_kind") == "cpu"]
    if on_cpu:
        every = len(on_cpu) == len(entries)
        if every:
            lead = "This run had no GPU" if len(runs) == 1 else "No run had a GPU"
            which = "every chapter"
        else:
            lead = "Part of the book ran without a GPU"
            which = ", ".join(doc_link(e["path"]) for e in on_cpu)
        names = sorted({code(e.get("profile"), table=False) for e in on_cpu})
        profiles = " and ".join(names) + (" profiles" if len(names) > 1 else " profile")
        lines += [NO_GPU.format(lead=lead, which=which, profiles=profiles), ""]
    return lines


def machine_table(runs: list[dict], by_run: dict[int, list[dict]], manifest: dict):
    def git_text(git: dict) -> str:
        commit = (git or {}).get("commit")
        if not commit:
            return "not a git checkout"
        dirty = " with uncommitted changes" if git.get("dirty") else ""
        given = " (passed in: the copy had no .git)" if git.get("source") else ""
        return f"{code(commit[:12])}{text(dirty + given)}"

    def rows(run: dict) -> dict:
        dev, vers, mine = run["device"], run.get("versions", {}), by_run[run["id"]]
        return {
            "device": dev["name"],
            "device type": DEVICE_KIND.get(dev["kind"], dev["kind"]),
            "CPU": dev.get("cpu"),
            "profile": Code(run["profile"]),
            "Python": vers.get("python"),
            "torch": vers.get("torch"),
            "CUDA": vers.get("cuda") or "not used",
            "cuDNN": vers.get("cudnn") or "not used",
            "numpy": vers.get("numpy"),
            "betavae_lib": vers.get("betavae_lib"),
            "seed": chapter_seeds(mine),
            "started (UTC)": run.get("started_utc"),
            "execution time": fmt_seconds(sum(e["wall_s"] for e in mine)),
            "git commit": Markdown(git_text(run.get("git"))),
            "command": Code(run.get("command", "")),
            "sizing": protocol_summary(run),
        }

    columns = [rows(run) for run in runs]
    if all(run["device"].get("cpu") == run["device"]["name"] for run in runs):
        for column in columns:
            column.pop("CPU")
    if not any(column["sizing"] for column in columns):
        for column in columns:
            column.pop("sizing")
    if len(runs) == 1:
        header = ["| what | value |", "|---|---|"]
    else:
        names = " | ".join(f"run {i}" for i in range(1, len(runs) + 1))
        header = [f"| what | {names} |", "|---" * (len(runs) + 1) + "|"]
    lines = ["## The machine and the software", "", *header]
    for name in columns[0]:
        values = " | ".join(shown(c[name]) for c in columns)
        lines.append(f"| {name} | {values} |")
    if len(runs) > 1:
        total = fmt_seconds(manifest.get("total_wall_s", 0))
        lines += ["", f"Total execution time of the chapters: {total}."]
    return lines + [""]


def steps_note(entry: dict) -> str:
    """The profile cell's suffix for a chapter that ran with ``--steps``."""
    return f", {entry['steps']:,} steps per model" if entry.get("steps") else ""


def chapter_table(entries: list[dict], run_number: dict[int, int]) -> list[str]:
    several = len(run_number) > 1
    lines = [
        "## The chapters",
        "",
        "| chapter | status | time | profile | device |"
        + (" run |" if several else ""),
        "|---|---|---|---|---|" + ("---|" if several else ""),
    ]
    for e in entries:
        status = (
            "ok"
            if e["status"] == "ok"
            else f"error: {text(e.get('error') or '')} "
            "(the chapter shows the outputs of its last good run)"
        )
        kind = "CPU" if e.get("device_kind") == "cpu" else "GPU"
        run = f" {run_number[e['run']]} |" if several else ""
        lines.append(
            f"| {doc_link(e['path'])} | {status} | {fmt_seconds(e['wall_s'])} | "
            f"{code(e.get('profile'))}{steps_note(e)} | {text(e.get('device'))}, "
            f"{kind} |{run}"
        )
    return lines + [""]


def metrics_section(entries: list[dict]) -> list[str]:
    lines = ["## Headline metrics", "", METRICS_INTRO, ""]
    silent = [e.get("title") or e["path"] for e in entries if not e.get("metrics")]
    if silent:
        names = ", ".join(text(t) for t in silent)
        lines += [f"No headline metrics were printed by: {names}.", ""]
    for e in entries:
        if e.get("warnings"):
            said = "; ".join(text(w) for w in e["warnings"])
            title = text(e.get("title") or e["path"])
            lines += [f"While reading the outputs of {title}: {said}.", ""]
    for e in entries:
        if not e.get("metrics"):
            continue
        lines += [
            f"### {text(e.get('title') or e['path'])}",
            "",
            doc_link(e["path"]),
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [
            f"| {code(k)} | {text(fmt_value(v))} |" for k, v in e["metrics"].items()
        ]
        lines += [""]
    return lines


def reproduce_section(runs: list[dict], by_run: dict[int, list[dict]], entries):
    paths = [e["path"] for e in entries]
    lines = ["## Reproduce it", "", "```bash", "pip install -r requirements.txt"]
    for i, run in enumerate(runs, 1):
        args = ["python", "tools/execute_book.py", "--profile", run["profile"]]
        if run.get("steps"):
            args += ["--steps", str(run["steps"])]
        mine = [e["path"] for e in by_run[run["id"]]]
        if len(runs) > 1:
            kind = DEVICE_KIND.get(run["device"]["kind"], run["device"]["kind"])
            lines.append(f"# run {i}: {kind}")
            for path in mine:
                args += ["--only", only_name(path, paths)]
        lines += command_lines(args)
    return lines + ["```", "", REPRODUCE_OUTRO, ""]


def render_page(manifest: dict | None) -> str:
    """The markdown page "How this book was executed": ``manifest`` as tables."""
    lines = [
        "# How this book was executed",
        "",
        "<!-- Written by tools/execute_book.py from book/execution.json; "
        "edit tools/execution_page.py, not this page. -->",
        "",
    ]
    if not manifest:
        lines += [
            "The chapters have not been executed with `tools/execute_book.py` yet."
        ]
        return "\n".join(lines + [""])
    entries = manifest["notebooks"]  # in the table of contents' order
    runs = sorted(manifest["runs"], key=lambda r: r.get("started_utc") or "")
    by_run = {r["id"]: [e for e in entries if e["run"] == r["id"]] for r in runs}
    run_number = {r["id"]: i for i, r in enumerate(runs, 1)}
    lines += intro(runs, by_run, entries)
    lines += machine_table(runs, by_run, manifest)
    lines += chapter_table(entries, run_number)
    lines += metrics_section(entries)
    lines += reproduce_section(runs, by_run, entries)
    return "\n".join(lines)

"""tools/execute_book.py: which notebooks it runs, what it records, and that the
committed manifest, page and notebooks agree with each other."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import load_tool
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from betavae_lib import report

ROOT = Path(__file__).resolve().parents[1]
eb = load_tool("execute_book")

KERNELSPEC = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
}


def write_toc(root: Path, files: list[str]) -> None:
    chapters = "\n".join(f"      - file: {f}" for f in files)
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: Chapters\n"
        f"    chapters:\n{chapters}\n",
        encoding="utf-8",
    )


def write_nb(path: Path, *sources: str, title: str = "# 1. A chapter") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = [new_markdown_cell(title)] + [new_code_cell(s) for s in sources]
    nbformat.write(new_notebook(cells=cells, metadata=KERNELSPEC), path)
    return path


def stdout_nb(*texts: str):
    cell = new_code_cell("")
    cell.outputs = [new_output("stream", name="stdout", text=t) for t in texts]
    return new_notebook(cells=[cell])


# ------------------------------------------------------------------------- unit tests
def test_toc_notebooks_in_order_and_only_existing(tmp_path):
    for name in (
        "notebooks/02_b",
        "notebooks/01_a",
        "appendix/03_c",
        "extra/x2",
        "extra/x1",
    ):
        write_nb(tmp_path / f"{name}.ipynb")
    (tmp_path / "book").mkdir()
    (tmp_path / "book/intro.md").write_text("# intro\n")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: Chapters\n    chapters:\n      - file: notebooks/02_b\n"
        "        sections:\n          - file: appendix/03_c.ipynb\n"
        "          - url: https://example.org\n            title: elsewhere\n"
        "      - file: notebooks/01_a\n"
        "      - file: notebooks/99_not_written_yet\n      - glob: extra/*\n"
        "  - caption: About\n    chapters:\n      - file: book/about.md\n",
        encoding="utf-8",
    )
    assert eb.toc_documents(tmp_path) == [
        "book/intro",
        "notebooks/02_b",
        "appendix/03_c",
        "notebooks/01_a",
        "notebooks/99_not_written_yet",
        "extra/x1",
        "extra/x2",
        "book/about",
    ]
    assert eb.toc_notebooks(tmp_path) == [
        "notebooks/02_b.ipynb",
        "appendix/03_c.ipynb",
        "notebooks/01_a.ipynb",
        "extra/x1.ipynb",
        "extra/x2.ipynb",
    ]


def test_toc_of_this_book_is_read_as_jupyter_book_reads_it():
    from sphinx_external_toc.parsing import parse_toc_yaml

    docs = eb.toc_documents(ROOT)
    assert sorted(docs) == sorted(parse_toc_yaml(ROOT / "_toc.yml"))
    assert docs[0] == "book/intro" and "notebooks/01_first_vae" in docs


def test_select_by_stem_prefix_or_path():
    nbs = [
        "notebooks/01_first_vae.ipynb",
        "notebooks/02_elbo.ipynb",
        "notebooks/10_extra.ipynb",
    ]
    assert eb.select(nbs, ["02"]) == ["notebooks/02_elbo.ipynb"]
    assert eb.select(nbs, ["01_first_vae", "notebooks/10_extra.ipynb"]) == [
        nbs[0],
        nbs[2],
    ]
    with pytest.raises(SystemExit, match="matches 2"):
        eb.select(nbs, ["0"])
    with pytest.raises(SystemExit, match="matches 0"):
        eb.select(nbs, ["07"])


def test_headlines_read_from_stdout_match_what_the_library_printed(capsys):
    import numpy as np

    first = report.headline(elbo=-101.25, active_units=np.int64(12))
    second = report.headline(elbo=-99.5, fid=np.float32(31.25))
    printed = capsys.readouterr().out
    nb = stdout_nb(
        "profile: reduced | device: cpu | torch 2\n",
        printed[: len(printed) // 3],
        printed[len(printed) // 3 :],
    )
    nb.cells[0].outputs.append(
        new_output("stream", name="stderr", text='headline metrics: {"elbo": 0}\n')
    )
    expected = {**first, **second}
    assert (
        eb.parse_headlines(eb.stream_text(nb))
        == expected
        == {"elbo": -99.5, "active_units": 12, "fid": 31.25}
    )
    assert eb.parse_headlines(eb.stream_text(nb)) == report.parse_headlines(
        eb.stream_text(nb)
    )


def test_printed_setting_and_seeds():
    text = "train (20000,)\nprofile: reduced | device: cuda:0 | torch 2.13.0\n"
    assert eb.printed_setting(text, "profile") == "reduced"
    assert eb.printed_setting(text, "device") == "cuda:0"
    assert eb.printed_setting("nothing here", "device") is None
    nb = new_notebook(
        cells=[
            new_code_cell("seed_everything(0)"),
            new_code_cell("seed_everything(seed=7)\nseed_everything(0)"),
        ]
    )
    assert eb.seeds_in(nb) == [0, 7]
    assert eb.chapter_seed(nb, text) == 0


def test_steps_override_reaches_the_kernel_and_the_record(monkeypatch):
    monkeypatch.setenv("BETAVAE_STEPS", "99")
    assert "BETAVAE_STEPS" not in eb.kernel_env("reduced")  # not inherited
    assert eb.kernel_env("reduced", 15_000)["BETAVAE_STEPS"] == "15000"
    text = "profile: reduced | steps: 15000 | device: cpu | seed: 0 | torch 2\n"
    assert eb.printed_setting(text, "profile") == "reduced"
    assert eb.steps_entry(eb.printed_setting(text, "steps")) == {"steps": 15_000}
    plain = "profile: full | device: cpu"
    assert eb.steps_entry(eb.printed_setting(plain, "steps")) == {}
    assert eb.parse_args(["--steps", "15_000"]).steps == 15_000
    for bad in ("0", "x"):
        with pytest.raises(SystemExit):
            eb.parse_args(["--steps", bad])

    order = ["notebooks/01_a.ipynb", "notebooks/06_b.ipynb"]
    run = {**fake_run(1, "cpu"), "steps": 15_000}
    entries = [
        fake_entry(order[0], run),
        {**fake_entry(order[1], run), "steps": 15_000},
    ]
    text = eb.render_page(eb.record(None, run, entries, order))
    assert "`reduced` | " + f"{CPU}, CPU |" in text  # chapter 1 did not use it
    assert "`reduced`, 15,000 steps per model | " + f"{CPU}, CPU |" in text
    assert "lengthened to 15,000 optimiser steps per model" in text
    assert "--profile reduced --steps 15000" in text


def test_chapter_seed_from_start_chapter_by_name_position_or_default():
    setup = (
        "try:\n    import betavae_lib\nexcept ImportError:\n    %pip install x\n"
        "    import betavae_lib\n"
        "profile, device = betavae_lib.start_chapter({})   # the book's first cell"
    )
    loop = "for seed in seeds:\n    seed_everything(seed)\nseed_everything(5)"
    for args, seed in (("seed=3", 3), ("4", 4), ("", 0)):
        nb = new_notebook(
            cells=[new_code_cell(setup.format(args)), new_code_cell(loop)]
        )
        assert eb.seeds_in(nb) == [seed, 5]
        assert eb.chapter_seed(nb, "profile: smoke | device: cpu | torch 2\n") == seed
    # what start_chapter prints wins (if it prints ``seed: N``)
    printed = "profile: smoke | device: cpu | seed: 11 | torch 2\n"
    assert eb.chapter_seed(nb, printed) == 11
    unknown = new_notebook(cells=[new_code_cell("start_chapter(seed=choose())")])
    assert eb.seeds_in(unknown) == [] and eb.chapter_seed(unknown, "") is None


def test_cpu_is_never_labelled_as_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    cpu = eb.describe_device()
    assert cpu["kind"] == "cpu" and cpu["gpu_count"] == 0
    assert cpu["name"] == cpu["cpu"] == f"{eb.cpu_model()} ({eb.cpu_cores()} cores)"
    vers = {"cuda": None}
    # whatever the notebook printed, a machine without CUDA gets the CPU label
    for printed in ("cuda", "cuda:0", "cpu", None):
        assert eb.device_used(printed, cpu, vers) == {
            "device_kind": "cpu",
            "device": cpu["name"],
            "cuda": None,
        }


def test_gpu_named_only_where_the_notebook_used_it(monkeypatch):
    import torch

    class Props:
        total_memory = 80 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "get_device_name", lambda i=0: "NVIDIA H100 80GB HBM3"
    )
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: Props())
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gpu = eb.describe_device()
    assert (
        gpu["kind"] == "cuda"
        and gpu["name"] == "NVIDIA H100 80GB HBM3"
        and gpu["gpu_memory_gib"] == 80.0
    )
    assert gpu["cpu"].endswith("cores)")
    vers = {"cuda": "12.8"}
    assert eb.device_used("cuda", gpu, vers) == {
        "device_kind": "cuda",
        "device": "NVIDIA H100 80GB HBM3",
        "cuda": "12.8",
    }
    assert eb.device_used("cpu", gpu, vers) == {
        "device_kind": "cpu",
        "device": gpu["cpu"],
        "cuda": None,
    }


def test_merge_keeps_others_replaces_updated_and_follows_the_toc():
    old = {
        "notebooks": [
            {"path": "a.ipynb", "v": 1},
            {"path": "b.ipynb", "v": 1},
            {"path": "gone.ipynb"},
        ]
    }
    merged = eb.merge_entries(
        old,
        [{"path": "b.ipynb", "v": 2}, {"path": "c.ipynb", "v": 2}],
        ["c.ipynb", "b.ipynb", "a.ipynb"],
    )
    assert merged == [
        {"path": "c.ipynb", "v": 2},
        {"path": "b.ipynb", "v": 2},
        {"path": "a.ipynb", "v": 1},
    ]


CPU = "AMD EPYC 7763 (2 cores)"
GPU = "NVIDIA H100 80GB HBM3"


def fake_run(run_id: int, kind: str, started: str = "2026-01-01T00:00:00Z") -> dict:
    return {
        "id": run_id,
        "started_utc": started,
        "profile": "reduced" if kind == "cpu" else "full",
        "device": {
            "kind": kind,
            "name": CPU if kind == "cpu" else GPU,
            "cpu": CPU,
            "cpu_cores": 2,
        },
        "versions": {
            "python": "3.11.7",
            "torch": "2.13.0",
            "cuda": None if kind == "cpu" else "12.8",
        },
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "command": "x",
    }


def fake_entry(path: str, run: dict, **metrics) -> dict:
    kind = run["device"]["kind"]
    return {
        "path": path,
        "title": Path(path).stem,
        "status": "ok",
        "error": None,
        "wall_s": 300.0,
        "run": run["id"],
        "profile": run["profile"],
        "device_kind": kind,
        "device": run["device"]["name"],
        "cuda": run["versions"]["cuda"],
        "seed": 0,
        "seeds": [0],
        "metrics": metrics or {"test_elbo": -98.765432, "active_units": 14},
    }


def fake_manifest(kind: str) -> dict:
    run = fake_run(1, kind)
    return eb.record(
        None, run, [fake_entry("notebooks/01_a.ipynb", run)], ["notebooks/01_a.ipynb"]
    )


def test_page_says_plainly_what_ran_where():
    text = eb.render_page(fake_manifest("cpu"))
    assert "**AMD EPYC 7763 (2 cores)** (CPU only, no GPU)" in text
    assert "**reduced** profile" in text and "This run had no GPU" in text
    assert "| `test_elbo` | -98.77 |" in text and "| `active_units` | 14 |" in text
    row = "| {doc}`../notebooks/01_a` | ok | 5.0 min | `reduced` | " + f"{CPU}, CPU |"
    assert row in text
    gpu = eb.render_page(fake_manifest("cuda"))
    assert "**NVIDIA H100 80GB HBM3** (a CUDA GPU)" in gpu
    assert "no GPU" not in gpu and "| CUDA | 12.8 |" in gpu
    assert "| CPU | AMD EPYC 7763 (2 cores) |" in gpu


def test_only_rerun_on_a_gpu_replaces_only_its_entry_and_keeps_the_cpu_run():
    """Chapters 1-5 on a CPU, then chapter 6 again with --only on a GPU: each chapter
    keeps the device, profile and software of the run that made its outputs."""
    order = [f"notebooks/0{i}_c.ipynb" for i in range(1, 7)]
    cpu_run = fake_run(1, "cpu")
    first = eb.record(None, cpu_run, [fake_entry(p, cpu_run) for p in order], order)
    gpu_run = fake_run(2, "cuda", started="2026-01-02T00:00:00Z")
    redo = fake_entry(order[5], gpu_run, mig=0.25)
    second = eb.record(json.loads(json.dumps(first)), gpu_run, [redo], order)

    assert second["notebooks"][:5] == first["notebooks"][:5]
    assert second["notebooks"][5] == redo
    assert second["runs"] == [cpu_run, gpu_run]
    assert [e["device_kind"] for e in second["notebooks"]] == ["cpu"] * 5 + ["cuda"]
    assert [e["profile"] for e in second["notebooks"]] == ["reduced"] * 5 + ["full"]

    text = eb.render_page(second)
    assert "2 runs recorded here" in text
    assert "- Run 1 used **AMD EPYC 7763 (2 cores)** (CPU only, no GPU)" in text
    assert "- Run 2 used **NVIDIA H100 80GB HBM3** (a CUDA GPU)" in text
    assert "Part of the book ran without a GPU" in text and "This run had" not in text
    assert "| device | AMD EPYC 7763 (2 cores) | NVIDIA H100 80GB HBM3 |" in text
    assert "| CUDA | not used | 12.8 |" in text
    assert "| `full` | NVIDIA H100 80GB HBM3, GPU | 2 |" in text
    assert "| `reduced` | AMD EPYC 7763 (2 cores), CPU | 1 |" in text
    assert "python tools/execute_book.py --profile full --only 06" in text
    assert "--profile reduced --only 01 --only 02 \\\n    --only 03 --only 04" in text

    # re-running chapter 6 on the CPU drops the GPU run: no entry refers to it
    back = fake_entry(order[5], fake_run(3, "cpu"))
    third = eb.record(second, fake_run(3, "cpu"), [back], order)
    assert [r["id"] for r in third["runs"]] == [1, 3]


def test_schema_1_manifest_is_read_as_one_run():
    old = {
        "schema": 1,
        **{k: v for k, v in fake_run(1, "cpu").items() if k != "id"},
        "seed": 0,
        "total_wall_s": 300.0,
        "notebooks": [
            {
                k: v
                for k, v in fake_entry("a.ipynb", fake_run(1, "cpu")).items()
                if k not in ("run", "seed")
            }
        ],
    }
    new = eb.upgrade(old)
    assert new["schema"] == eb.SCHEMA and new["runs"] == [fake_run(1, "cpu")]
    assert new["notebooks"][0]["run"] == 1 and new["notebooks"][0]["seed"] == 0
    assert eb.render_page(new) == eb.render_page(eb.upgrade(new))


def test_refuses_to_run_a_notebook_behind_its_source(tmp_path):
    import jupytext

    (tmp_path / "jupytext.toml").write_text(
        (ROOT / "jupytext.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    write_toc(tmp_path, ["notebooks/01_a"])
    nb_path = write_nb(tmp_path / "notebooks/01_a.ipynb", "x = 1")
    src = tmp_path / "notebooks/src/01_a.py"
    src.parent.mkdir()
    jupytext.write(jupytext.read(nb_path), src, fmt="py:percent")
    assert eb.behind_sources(tmp_path, ["notebooks/01_a.ipynb"]) == []
    src.write_text(src.read_text().replace("x = 1", "x = 2"))
    assert eb.behind_sources(tmp_path, ["notebooks/01_a.ipynb"]) == [
        ("notebooks/01_a.ipynb", "notebooks/src/01_a.py")
    ]
    with pytest.raises(SystemExit, match="jupytext --sync notebooks/src/01_a.py"):
        eb.main(["--root", str(tmp_path), "--profile", "smoke"])
    assert not (tmp_path / "book/execution.json").exists()


# ------------------------------------------------------------------------- end to end
def test_executes_stores_outputs_and_records_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "MPLBACKEND", "Agg"
    )  # as in CI: the kernel must still keep its figures inline
    monkeypatch.delenv("BETAVAE_PROFILE", raising=False)
    write_toc(
        tmp_path, ["notebooks/01_ok", "notebooks/02_fails", "notebooks/03_edited"]
    )
    write_nb(
        tmp_path / "notebooks/01_ok.ipynb",
        "import os\nfrom betavae_lib import seed_everything\nseed_everything(3)\n"
        "cwd = os.path.basename(os.getcwd())\n"
        "profile = os.environ['BETAVAE_PROFILE']\n"
        "print(f'profile: {profile} | device: cpu | cwd {cwd}')",
        "import matplotlib.pyplot as plt\nplt.plot([0, 1]);",
        "import ipywidgets\nipywidgets.IntSlider(value=3, description='k')",
        "from betavae_lib.report import headline\nheadline(loss=1.25, n=3);",
    )
    failing = write_nb(
        tmp_path / "notebooks/02_fails.ipynb",
        "print('headline metrics: {\"partial\": 1}')\n"
        "raise ValueError('broken on purpose\\nmore')",
        title="# 2. Fails",
    )
    before = failing.read_bytes()
    write_nb(  # as if its author saved it while it ran
        tmp_path / "notebooks/03_edited.ipynb",
        "from pathlib import Path\np = Path('03_edited.ipynb')\n"
        "p.write_text(p.read_text() + '\\n')",
    )

    assert (
        eb.main(["--root", str(tmp_path), "--profile", "smoke", "--timeout", "120"])
        == 1
    )
    manifest = json.loads((tmp_path / "book/execution.json").read_text())
    ok, bad, edited = manifest["notebooks"]
    assert (ok["path"], ok["status"], ok["error"], ok["metrics"]) == (
        "notebooks/01_ok.ipynb",
        "ok",
        None,
        {"loss": 1.25, "n": 3},
    )
    assert (bad["status"], bad["error"]) == ("error", "ValueError: broken on purpose")
    assert (edited["status"], edited["error"]) == (
        "error",
        "the notebook was edited while it ran; execute it again",
    )
    (run,) = manifest["runs"]
    assert run["profile"] == ok["profile"] == "smoke" and ok["run"] == run["id"]
    assert manifest["seed"] == ok["seed"] == 3 and ok["seeds"] == [3]
    # this test machine runs torch on the CPU
    assert run["device"]["kind"] == ok["device_kind"] == "cpu"
    python = ".".join(map(str, sys.version_info[:3]))
    assert ok["wall_s"] > 0 and run["versions"]["python"] == python
    assert failing.read_bytes() == before  # a failed run leaves the notebook as it was
    assert (tmp_path / "_build/execution/failed/02_fails.ipynb").is_file()

    nb = nbformat.read(tmp_path / "notebooks/01_ok.ipynb", as_version=4)
    assert "profile: smoke | device: cpu | cwd notebooks" in eb.stream_text(nb)
    assert any("image/png" in o.get("data", {}) for o in nb.cells[2].outputs), (
        "figure lost"
    )
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    view = nb.cells[3].outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]
    assert state[view["model_id"]]["state"]["value"] == 3
    assert (tmp_path / "book/execution.md").read_text() == eb.render_page(manifest)

    # --only reruns one notebook and keeps the other's entry as it was
    write_nb(
        failing,
        "print('profile: smoke | device: cpu')\n"
        "from betavae_lib.report import headline\nheadline(fixed=True);",
        title="# 2. Fixed",
    )
    assert eb.main(["--root", str(tmp_path), "--profile", "smoke", "--only", "02"]) == 0
    again = json.loads((tmp_path / "book/execution.json").read_text())
    assert again["notebooks"][0] == ok and again["notebooks"][2] == edited
    assert again["runs"][0] == run and again["runs"][1]["id"] == run["id"] + 1
    assert again["notebooks"][1]["run"] == again["runs"][1]["id"]
    assert (again["notebooks"][1]["status"], again["notebooks"][1]["metrics"]) == (
        "ok",
        {"fixed": True},
    )
    assert again["runs"][1]["command"].endswith("--only 02")
    assert run["command"].endswith("--timeout 120")


# ------------------------------------------------------------------ the committed run
MANIFEST = eb.load_manifest(ROOT)


@pytest.mark.skipif(MANIFEST is None, reason="book/execution.json not written yet")
def test_committed_page_is_rendered_from_the_committed_manifest():
    assert (ROOT / eb.PAGE).read_text(encoding="utf-8") == eb.render_page(MANIFEST), (
        "book/execution.md is stale: run `python tools/execute_book.py --page-only`"
    )


@pytest.mark.skipif(MANIFEST is None, reason="book/execution.json not written yet")
def test_every_chapter_has_a_recorded_run():
    recorded = {e["path"] for e in MANIFEST["notebooks"]}
    missing = [p for p in eb.toc_notebooks(ROOT) if p not in recorded]
    assert not missing, f"not executed with tools/execute_book.py yet: {missing}"


@pytest.mark.skipif(MANIFEST is None, reason="book/execution.json not written yet")
@pytest.mark.parametrize(
    "entry", (MANIFEST or {}).get("notebooks", []), ids=lambda e: Path(e["path"]).stem
)
def test_recorded_metrics_are_those_stored_in_the_notebook(entry):
    """The manifest describes the outputs the book shows (re-executing outside the
    executor breaks this)."""
    assert entry["status"] == "ok", (
        f"{entry['path']} failed in the recorded run: {entry['error']}"
    )
    nb = nbformat.read(ROOT / entry["path"], as_version=4)
    text = eb.stream_text(nb)
    assert eb.parse_headlines(text) == entry["metrics"]
    assert eb.printed_setting(text, "profile") in (None, entry["profile"])
    assert entry["device_kind"] in ("cpu", "cuda", "mps")
    (run,) = [r for r in MANIFEST["runs"] if r["id"] == entry["run"]]
    if run["device"]["kind"] == "cpu":
        assert entry["device_kind"] == "cpu" and entry["cuda"] is None


# ------------------------------------------------ on the GPU machine, and hostile input
def test_the_book_is_read_and_run_without_sphinx_or_jupytext(tmp_path, monkeypatch):
    """The GPU machine has neither: the table of contents is read with PyYAML and the
    pairing check is skipped, saying so."""
    for name in ("sphinx_external_toc", "jupytext", "sphinx", "docutils"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    write_toc(tmp_path, ["notebooks/01_a"])
    write_nb(tmp_path / "notebooks/01_a.ipynb", "x = 1")
    assert eb.toc_notebooks(tmp_path) == ["notebooks/01_a.ipynb"]
    assert eb.toc_documents(ROOT)[1:7] == [
        f"notebooks/{p.stem}" for p in sorted((ROOT / "notebooks").glob("0*.ipynb"))
    ]
    assert eb.behind_sources(tmp_path, ["notebooks/01_a.ipynb"]) is None


def test_a_step_count_with_commas_or_a_bad_headline_line_loses_nothing(
    tmp_path, capsys
):
    """issue 21: `steps: 7,000` and a malformed headline line crashed the executor
    after the kernel had run: the outputs were not stored and the other chapters not
    run. Now the outputs are stored, the steps read, the bad line skipped and said."""
    write_toc(tmp_path, ["notebooks/01_a", "notebooks/02_b"])
    write_nb(
        tmp_path / "notebooks/01_a.ipynb",
        "print('profile: reduced | steps: 7,000 | device: cpu | seed: 0 | torch 2')",
        "print('headline metrics: {not json')\n"
        "print('headline metrics: [1, 2]')\n"
        "print('headline metrics: {\"mig\": 0.25}')",
    )
    write_nb(
        tmp_path / "notebooks/02_b.ipynb", "print('profile: smoke | steps: 7000x')"
    )
    assert eb.main(["--root", str(tmp_path), "--profile", "smoke"]) == 0
    first, second = json.loads((tmp_path / "book/execution.json").read_text())[
        "notebooks"
    ]
    assert (first["status"], first["steps"], first["metrics"]) == (
        "ok",
        7000,
        {"mig": 0.25},
    )
    assert len(first["warnings"]) == 2 and "not a JSON object" in first["warnings"][0]
    assert second["status"] == "ok" and "steps" not in second
    assert "not a number" in second["warnings"][0]
    nb = nbformat.read(tmp_path / "notebooks/01_a.ipynb", as_version=4)
    assert nb.cells[2].outputs, "the outputs were not stored"
    page = (tmp_path / "book/execution.md").read_text()
    assert "While reading the outputs of" in page
    assert "warning: notebooks/01_a.ipynb" in capsys.readouterr().out


def test_printed_numbers_are_read_with_their_group_separators():
    assert eb.printed_int("7,000") == 7000 == eb.printed_int("7_000")
    assert eb.printed_int("57600") == 57600
    for bad in ("7,00", "7.5", "x", "", "1,2345"):
        assert eb.printed_int(bad) is None, bad


def test_timeout_zero_means_no_limit_and_the_start_line_says_so(tmp_path, capsys):
    """issue 21: `--timeout 0` was printed as "stopped after 0 s" but meant no limit."""
    write_toc(tmp_path, ["notebooks/01_a"])
    write_nb(tmp_path / "notebooks/01_a.ipynb", "x = 1")
    assert (
        eb.main(["--root", str(tmp_path), "--profile", "smoke", "--timeout", "0"]) == 0
    )
    said = capsys.readouterr().out
    assert "without a time limit (--timeout 0)" in said and "after 0 s" not in said
    assert "stopped after 2.0 min" in eb.limits_text(120, None)
    assert "stops 30 s after its start (--deadline)" in eb.limits_text(0, 30)
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(SystemExit):
            eb.parse_args(["--timeout", bad])
    with pytest.raises(SystemExit):
        eb.parse_args(["--deadline", "0"])


def test_a_cell_past_the_deadline_fails_the_notebook_and_keeps_what_it_printed(
    tmp_path,
):
    write_toc(tmp_path, ["notebooks/01_a"])
    write_nb(
        tmp_path / "notebooks/01_a.ipynb",
        "print('started', flush=True)",
        "import time\ntime.sleep(60)",
    )
    out = tmp_path / "out"
    argv = ["--root", str(tmp_path), "--profile", "smoke", "--deadline", "4"]
    assert eb.main([*argv, "--out", str(out)]) == 1
    (entry,) = json.loads((out / "execution.json").read_text())["notebooks"]
    assert entry["status"] == "error" and "timed out" in entry["error"]
    assert sorted(p.name for p in out.iterdir()) == [
        "01_a.failed.ipynb",
        "execution.json",
    ]
    failed = nbformat.read(out / "01_a.failed.ipynb", as_version=4)
    assert failed.cells[1].outputs[0]["text"] == "started\n"


def test_the_commit_passed_in_is_recorded_where_there_is_no_git(tmp_path, monkeypatch):
    monkeypatch.delenv(eb.COMMIT_ENV, raising=False)
    assert eb.git_state(tmp_path) == {"commit": None, "dirty": None}
    assert eb.git_state(tmp_path, "abc1234") == {
        "commit": "abc1234",
        "dirty": None,
        "source": "passed in",
    }
    monkeypatch.setenv(eb.COMMIT_ENV, "def5678")
    assert eb.git_state(tmp_path)["commit"] == "def5678"
    assert eb.git_state(ROOT, "abc1234")["commit"] != "abc1234"  # git's own wins
    with pytest.raises(SystemExit):
        eb.parse_args(["--commit", "not a commit"])
    run = {**fake_run(1, "cuda"), "git": eb.git_state(tmp_path, "abc1234")}
    page = eb.render_page(
        eb.record(None, run, [fake_entry("a.ipynb", run)], ["a.ipynb"])
    )
    assert "`abc1234` (passed in: the copy had no .git)" in page


def test_the_page_shows_manifest_text_as_text():
    """issue 21: the execution page did not escape what it shows: `<lambda>`
    vanished and markup in an error line would be live."""
    from markdown_it import MarkdownIt

    run = fake_run(1, "cpu")
    run["device"]["name"] = "CPU <b>fast</b> & *bold*"
    run["command"] = "python x.py --only `06` | tee log"
    bad = {
        **fake_entry("notebooks/01_a.ipynb", run, **{"m`x": 1}),
        "status": "error",
        "error": "TypeError: <lambda>() missing <img src=x onerror=alert(1)>",
        "title": "A [link](javascript:alert(1)) $x$ {doc}`y`",
    }
    page = eb.render_page(eb.record(None, run, [bad], ["notebooks/01_a.ipynb"]))
    html = MarkdownIt("commonmark").enable("table").render(page)
    assert "&lt;lambda&gt;()" in html
    assert "<img" not in html and "<b>" not in html and "<a href" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "CPU &lt;b&gt;fast&lt;/b&gt; &amp; *bold*" in html
    assert "<code>python x.py --only `06` | tee log</code>" in html
    assert "<code>m`x</code>" in html
    assert "$" not in html.replace("\\$", "") or "\\$x\\$" in page

"""The GPU launcher (tools/gpu_bundle.py, gpu_device.py, gpu_dryrun.py): the plan fits
the machine's limits, the device side saves what it finishes and fails loudly, and the
CPU dry run runs every call's exact command."""

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import needs_fashion, needs_mnist
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import gpu_bundle as gb  # noqa: E402
import gpu_device as gd  # noqa: E402
import gpu_dryrun as gdr  # noqa: E402

MIB = gb.MIB
KERNELSPEC = {"kernelspec": {"name": "python3", "display_name": "Python 3"}}


# ------------------------------------------------------------------ Inception parts
def fake_inception(seed: int = 0) -> dict:
    """A small state dict laid out like pytorch-fid's: float32 convs and BN, int64
    counters, and an all-zero fc layer."""
    g = torch.Generator().manual_seed(seed)
    return {
        "Conv2d_1a_3x3.conv.weight": torch.randn(8, 3, 3, 3, generator=g),
        "Conv2d_1a_3x3.bn.running_var": torch.rand(8, generator=g) + 0.5,
        "Conv2d_1a_3x3.bn.num_batches_tracked": torch.tensor(0),
        "Mixed_5b.branch1x1.conv.weight": torch.randn(16, 8, 1, 1, generator=g),
        "fc.weight": torch.zeros(10, 16),
        "fc.bias": torch.zeros(10),
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key, value in a.items():
        assert b[key].dtype == value.dtype and torch.equal(b[key], value), key


def test_weights_round_trip_bit_for_bit_through_small_parts():
    state = fake_inception()
    index, parts = gb.pack_state_dict(state, part_bytes=500)
    assert len(parts) > 2 and max(map(len, parts)) <= 500
    assert "fc.weight" not in {e["name"] for e in index["tensors"]}  # not carried
    assert_same_state(state, gb.unpack_state_dict(index, parts))
    # sizes per part: the first part as large as its call has room for
    index, parts = gb.pack_state_dict(state, part_bytes=[700])
    assert len(parts) == 2 and len(parts[0]) == 700
    assert_same_state(state, gb.unpack_state_dict(index, parts))


def test_a_corrupt_part_and_a_non_zero_fc_are_refused():
    state = fake_inception()
    index, parts = gb.pack_state_dict(state, part_bytes=500)
    parts[1] = bytes([parts[1][0] ^ 1]) + parts[1][1:]
    with pytest.raises(ValueError, match="part 2 is corrupt"):
        gb.unpack_state_dict(index, parts)
    state["fc.bias"][3] = 1.0
    with pytest.raises(ValueError, match="fc.bias is not all zeros"):
        gb.pack_state_dict(state, part_bytes=500)


def test_split_and_join_files(tmp_path):
    state = fake_inception(seed=1)
    torch.save(state, tmp_path / "weights.pth")
    folders = gb.split_weights(tmp_path / "weights.pth", tmp_path / "parts", 700)
    joined = gb.join_weights(folders, tmp_path / "out" / "weights.pth")
    assert_same_state(state, torch.load(joined, weights_only=True))
    with pytest.raises(FileNotFoundError, match=r"parts \[2\]"):
        gb.join_weights([folders[0], *folders[2:]], tmp_path / "again.pth")


# ------------------------------------------------------------------------- the plan
def test_the_plan_fits_every_limit_and_14_estimated_minutes():
    plan = gb.make_plan(ROOT)
    assert plan["problems"] == []
    assert [c["name"] for c in plan["calls"]][:1] == ["gpu-ch6"]
    assert [c["name"] for c in plan["calls"]][-2:] == ["gpu-inception", "gpu-ch5"]
    assert plan["total_est_min"] <= 14 and plan["total_est_s"] <= gb.PLAN_BUDGET_S
    for c in plan["calls"]:
        assert c["chars"] == len(c["command"]) <= gb.MAX_COMMAND
        assert len(c["carry"]) <= gb.MAX_CARRY and c["mib"] <= 64
        assert 0 < c["timeout_s"] <= gb.MAX_CALL_S
        assert len(c["out_files"]) <= gb.OUT_MAX_FILES - 1  # room for one temporary
    ch6 = plan["calls"][0]
    assert ch6["box_s"] >= gb.CH6_BOX_MIN_S
    assert ch6["timeout_s"] >= ch6["box_s"] + gb.est("preflight_s")
    # every number of the time model is labelled as an estimate, with its basis
    assert all(v["estimate"] and v["basis"] for v in plan["time_model"].values())


def test_plan_json_from_the_command_line():
    out = subprocess.run(
        [sys.executable, "tools/gpu_bundle.py", "plan", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    plan = json.loads(out)
    assert plan["format"] == "betavae_lib.gpu_plan/1" and plan["problems"] == []
    assert plan["commit"] == gb.head_commit(ROOT)


def test_no_command_can_fail_silently():
    """The old plan's `nbbuild.py ...; cp ...` returned 0 after a missing script:
    each command now is one pipeline, launcher | tee, under pipefail, and names only
    files that exist."""
    for c in (
        gb.make_plan(ROOT)["calls"]
        + gb.make_plan(ROOT, gb.Settings(set="chapters-1-4"))["calls"]
    ):
        cmd = c["command"]
        assert cmd.startswith("set -o pipefail; ")
        body = cmd.split("export PYTHONUNBUFFERED=1; ", 1)[1]
        assert ";" not in body and "&&" not in body and "||" not in body
        launcher, tee = body.split(" | ")
        assert launcher.startswith("python3 tools/gpu_bundle.py device " + c["name"])
        assert tee == f'tee "$OUT/{c["name"]}.log"'
        assert (ROOT / "tools/gpu_bundle.py").is_file()
        assert "nbbuild" not in cmd


def test_the_commit_is_passed_in():
    plan = gb.make_plan(ROOT, gb.Settings(commit="abc1234"))
    assert all("--commit abc1234" in c["command"] for c in plan["calls"])


def sized_tree(root: Path, sizes: dict) -> Path:
    """A checkout without .git whose files have the given sizes (MiB), sparse."""
    for rel, mib in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(int(mib * MIB))
    return root


def test_a_resume_carries_the_pieces_and_stages_part_1_on_its_own(tmp_path):
    root = sized_tree(
        tmp_path,
        {
            "notebooks/big.ipynb": 15.0,
            ".whl/a-1-py3-none-any.whl": 6.1,
            ".gpu/inception/part-1/weights.1.bin": 38.5,
            ".gpu/inception/part-2/weights.2.bin": 44.5,
            "data/MNIST/raw/x.gz": 11.1,
            "data/FashionMNIST/raw/x.gz": 29.5,
            ".gpu/resume/plan.json": 0.01,
            ".gpu/resume/ch6-models-1.tar": 15.4,  # 8 models of 2.02 MB
            ".gpu/resume/ch6-models-2.tar": 15.4,
            ".gpu/resume/ch6-models-3.tar": 11.6,  # 6
        },
    )
    plan = gb.make_plan(root, gb.Settings(commit="abc1234"))
    names = [c["name"] for c in plan["calls"]]
    assert names == ["gpu-ch6", "gpu-stage-1", "gpu-inception", "gpu-ch5"]
    carried = {c["name"]: [x["path"] for x in c["carry"]] for c in plan["calls"]}
    # 64 - 4 (headroom) - 15.0 - 6.1 - 0.01 = 38.89 MiB: archives 1 and 2 (30.8),
    # not 3 (11.6 > 8.09): its models are trained again, which the plan says
    assert carried["gpu-ch6"] == [
        ".whl",
        ".gpu/resume/plan.json",
        ".gpu/resume/ch6-models-1.tar",
        ".gpu/resume/ch6-models-2.tar",
    ]
    assert any("ch6-models-3.tar (11.6 MiB)" in w for w in plan["warnings"])
    assert carried["gpu-stage-1"] == [".gpu/inception/part-1"]
    assert all(c["mib"] <= 64 for c in plan["calls"])
    assert plan["problems"] == [] and plan["total_est_min"] <= 14
    # a call a collected run finished is not planned again
    (root / ".gpu/resume/done.json").write_text('{"calls": ["gpu-inception"]}')
    names = [
        c["name"] for c in gb.make_plan(root, gb.Settings(commit="a" * 7))["calls"]
    ]
    assert "gpu-inception" not in names


def test_over_the_limits_is_a_problem(tmp_path):
    root = sized_tree(
        tmp_path,
        {
            "notebooks/big.ipynb": 30.0,
            ".whl/a-1-py3-none-any.whl": 6.1,
            ".gpu/inception/part-1/weights.1.bin": 30,
            ".gpu/inception/part-2/weights.2.bin": 40,
            "data/MNIST/raw/x.gz": 11.1,
            "data/FashionMNIST/raw/x.gz": 29.5,
        },
    )
    plan = gb.make_plan(root, gb.Settings(commit="abc1234"))
    assert any("gpu-ch5" in p and "> 64 MiB" in p for p in plan["problems"])
    assert any("gpu-inception" in p and "> 64 MiB" in p for p in plan["problems"])
    calls = [gb.Call("long", "", [], "x" * 2001, 700, 1.0, ["a b"])]
    problems, _ = gb.check_calls(calls, 0)
    assert any("2001 characters" in p for p in problems)
    assert any("timeout 700" in p for p in problems)
    assert any("cannot return" in p for p in problems)


def test_a_smaller_budget_shrinks_chapter_6_box_and_too_small_is_a_problem():
    full = gb.make_plan(ROOT)["calls"][0]["box_s"]
    less = gb.make_plan(ROOT, gb.Settings(budget_s=gb.PLAN_BUDGET_S - 60))
    assert less["calls"][0]["box_s"] == full - 60 and less["problems"] == []
    little = gb.make_plan(ROOT, gb.Settings(budget_s=500))
    assert any("box of" in p for p in little["problems"])
    warm = gb.make_plan(ROOT, gb.Settings(warm=True))
    assert warm["calls"][0]["box_s"] > full  # no start to pay for


def test_the_second_plan_runs_chapters_1_to_4_in_two_calls():
    plan = gb.make_plan(ROOT, gb.Settings(set="chapters-1-4"))
    assert [c["name"] for c in plan["calls"]] == ["gpu-ch1-2", "gpu-ch3-4"]
    assert plan["problems"] == [] and plan["total_est_min"] <= 14


# ------------------------------------------------------------- the protocol chosen
def timings(table_step_s: float, study_step_s: float, **over) -> dict:
    """Measured at the chapter's shapes (a GPU): 15 and 7 members at batch 64."""
    t = {
        "kernel_s": 8.0,
        "render_s_per_image": 2e-6,
        "table_step_s": table_step_s,
        "table_members": 15,
        "table_batch": 64,
        "study_step_s": study_step_s,
        "study_members": 7,
        "study_batch": 64,
        "table_model_s": 1.0,
        "study_model_s": 0.5,
    }
    return {**t, **over}


def test_the_prediction_part_by_part():
    # full profile, 57,600 steps: the whole grid (737,280) and 10,000 test images
    # rendered at 2 us; the study three eighths as long, 21,600 steps (10 passes over
    # 138,240 images)
    assert gd.predict(timings(0.0025, 0.0015), "full", 57_600) == {
        "kernel_and_imports": 8.0,
        "render_images": 1.5,  # 747,280 x 2e-6 = 1.49
        "train_table": 144.0,  # 57,600 x 2.5 ms
        "train_study": 32.4,  # 21,600 x 1.5 ms
        "score_table": 15.0,  # 15 x 1 s
        "score_study": 3.5,  # 7 x 0.5 s
        "figures_and_rest": 30.0,
        "total": 234.4,
    }
    # a CPU times 2 members at batch 8: a step is scaled by members x batch, 15/2 x 8
    # for the table, 7/2 x 8 for the study; smoke: 16 table steps, a study of
    # 3 passes over 2 batches (6 steps, three eighths of 16)
    cpu = timings(
        0.01, 0.01, table_members=2, table_batch=8, study_members=2, study_batch=8
    )
    parts = gd.predict(cpu, "smoke", 16)
    assert parts["train_table"] == 9.6 and parts["train_study"] == 1.7  # 1.68


def test_table_and_study_shapes_by_hand():
    assert gd.MENU == [57_600, 46_080, 34_560, 23_040, 11_520]
    assert gd.table_shape("full") == (737_280, 5, 57_600)
    assert gd.table_shape("full", 11_520) == (737_280, 1, 11_520)
    assert gd.table_shape("full", 40_000) == (737_280, 4, 46_080)  # whole epochs
    assert gd.table_shape("full", 5_000) == (320_000, 1, 5_000)
    assert gd.table_shape("smoke") == (1_024, 1, 16)
    assert gd.study_shape("full", 57_600) == (138_240, 10, 21_600)
    assert gd.study_shape("full", 23_040) == (55_296, 10, 8_640)
    assert gd.study_shape("smoke", 16) == (128, 3, 6)
    assert gd.menu("smoke") == [16, 13, 10, 6, 3]


def test_the_protocol_steps_down_the_menu_as_the_measured_speed_falls():
    # target 342 s; every entry costs 58 s + steps x table step + 3/8 steps x study step
    box = 380
    fast = gd.choose_protocol(timings(0.0025, 0.0015), "full", box)
    assert (fast["name"], fast["table_steps"], fast["study_steps"]) == (
        "5 epochs",
        57_600,
        21_600,
    )
    assert fast["fits"] and fast["predicted_s"] == 234.4
    # 4.5 ms a table step: 57,600 x 4.5 ms + 21,600 x 2.25 ms + 58 = 365.8 s > 342,
    # 46,080 x 4.5 ms + 17,280 x 2.25 ms + 58 = 304.3 s
    central = gd.choose_protocol(timings(0.0045, 0.00225), "full", box)
    assert (central["name"], central["table_steps"], central["study_steps"]) == (
        "4 epochs",
        46_080,
        17_280,
    )
    assert central["study_images"] == 110_592 and central["predicted_s"] == 304.3
    slow = gd.choose_protocol(timings(0.007, 0.0035), "full", box)
    assert (slow["table_steps"], slow["fits"]) == (23_040, True)  # 249.5; 3: 345.3
    hopeless = gd.choose_protocol(timings(0.1, 0.1), "full", box)
    assert not hopeless["fits"] and hopeless["name"] == "1 epoch"
    assert hopeless["fallback"] == "nothing fits"
    assert [t["table_steps"] for t in hopeless["tried"]] == gd.MENU
    # scoring on the CPU (16 s a table model, 5 s a study model): 314.5 s before
    # any training, so even one epoch (349.8 s) misses 342; the table is trained at
    # its best length and saved, and a resume scores it
    cpu_scoring = timings(0.0025, 0.0015, table_model_s=16.0, study_model_s=5.0)
    saved = gd.choose_protocol(cpu_scoring, "full", box)
    assert not saved["fits"] and "longest table" in saved["fallback"]
    assert saved["table_steps"] == 57_600


def chapter_6_statements():
    """Chapter 6's top-level assignments, as (targets, statement)."""
    src = (ROOT / "notebooks/src/06_disentanglement.py").read_text(encoding="utf-8")
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign):
            names = set()
            for t in node.targets:
                elts = t.elts if isinstance(t, ast.Tuple) else [t]
                names |= {e.id for e in elts if isinstance(e, ast.Name)}
            yield names, node


def literal(node):
    """A literal, or ``dict(key=literal, ...)``."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict":
        return {kw.arg: literal(kw.value) for kw in node.keywords}
    return ast.literal_eval(node)


def test_chapter_6_sizes_the_launcher_assumes_are_the_chapter_s():
    """gpu_device.CH6_TABLE and CH6_SCORING mirror chapter 6's training and scoring
    cells; a change there must change them too (the prediction and the --steps path
    depend on them)."""
    picks, literals = {}, {}
    for names, node in chapter_6_statements():
        (name,) = names if len(names) == 1 else (None,)
        if getattr(node.value, "func", None) is not None and (
            getattr(node.value.func, "attr", None) == "pick"
        ):
            picks[name] = {kw.arg: literal(kw.value) for kw in node.value.keywords}
        elif name in ("batch_size", "seeds"):
            literals[name] = ast.literal_eval(node.value)
    assert literals["batch_size"] == gd.CH6_BATCH
    assert len(literals["seeds"]) == gd.CH6_SEEDS
    for profile, t in gd.CH6_TABLE.items():
        assert picks["n_train"][profile] == t["n_train"]
        assert picks["epochs"][profile] == t["epochs"]
        assert picks["study_passes"][profile] == t["study_passes"]
        s = gd.CH6_SCORING[profile]
        assert picks["n_eval"][profile] == s["n_eval"]
        assert picks["n_boot"][profile] == s["n_boot"]
        fv = picks["fv"][profile]
        assert (
            fv["num_train"],
            fv["num_eval"],
            fv["num_variance_estimate"],
        ) == s["factor_vae"]


@pytest.mark.parametrize(
    "profile,steps",
    [
        ("smoke", None),
        ("smoke", 12),
        ("reduced", None),
        ("full", None),
        ("full", 34_560),
        ("full", 40_000),
        ("full", 5_000),
    ],
)
def test_table_and_study_shapes_are_what_the_chapter_computes(profile, steps):
    """The chapter's own statements (profile, steps, the study's images and passes),
    run with ``BETAVAE_STEPS=steps``, against gpu_device.table_shape/study_shape."""
    import math

    import numpy as np

    from betavae_lib.profile import Profile

    wanted = {"batch_size", "n_train", "epochs", "seeds", "rng", "train_idx", "steps"}
    wanted |= {f"study_{k}" for k in ("passes", "steps", "n", "epochs", "len")}
    ns = {"profile": Profile(profile, steps), "ds": range(gd.DSPRITES)}
    ns.update(np=np, math=math)
    for names, node in chapter_6_statements():
        if names and names <= wanted:
            exec(compile(ast.Module([node], []), "06", "exec"), ns)
            ns["train_images"] = ns.get("train_idx")
    assert (len(ns["train_idx"]), ns["epochs"], ns["steps"]) == gd.table_shape(
        profile, steps
    )
    assert (ns["study_n"], ns["study_epochs"], ns["study_len"]) == gd.study_shape(
        profile, ns["steps"]
    )


# ------------------------------------------------------------------- $OUT, pieces
def test_out_writer_keeps_one_temporary_and_refuses_names_out_cannot_return(tmp_path):
    out = gd.OutWriter(tmp_path / "out")
    out.json("plan.json", {"a": 1})
    out.copy(tmp_path / "out" / "plan.json", "copy.json")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "copy.json",
        "plan.json",
    ]
    with pytest.raises(ValueError, match="cannot come back"):
        out.json("a b.json", {})


def test_22_trained_models_fit_three_archives_the_table_s_first(tmp_path):
    files = []
    for i in range(22):  # the table's 15, then the study's 7, named against that order
        f = tmp_path / (f"z{i:02d}.pt" if i < 15 else f"a{i:02d}.pt")
        with open(f, "wb") as h:
            h.truncate(2_020_000)  # 502,006 fp32 weights and a History
        os.utime(f, ns=(10**9 * (i + 1), 10**9 * (i + 1)))
        files.append(f)
    groups = gd.model_tar_groups(files)
    # 8 x (2,020,000 + 2,048) = 16,176,384 <= 15.75 MiB = 16,515,072 < 9 x ...
    assert [len(g) for g in groups] == [8, 8, 6] and len(groups) == gd.MODEL_TARS
    assert groups[0] + groups[1][:7] == files[:15]  # the table's, oldest first
    for g in groups:
        assert sum(f.stat().st_size + 2048 for f in g) <= gd.TAR_LIMIT < 16 * MIB


@pytest.fixture
def device_dirs(tmp_path, monkeypatch):
    """gpu_device's folders under tmp_path."""
    gpu = tmp_path / ".gpu"
    for name, path in {
        "GPU": gpu,
        "CACHE": gpu / "cache",
        "STAGING": gpu / "stage-out",
        "RESUME": gpu / "resume",
        "SITE": gpu / "site",
    }.items():
        monkeypatch.setattr(gd, name, path)
    (gpu / "cache" / "models").mkdir(parents=True)
    (gpu / "stage-out").mkdir(parents=True)
    return gpu


def test_pieces_are_copied_as_they_finish_and_a_resume_unpacks_them(
    tmp_path, device_dirs
):
    out_dir = tmp_path / "out"
    watcher = gd.Watcher(gd.OutWriter(out_dir), ("models",))
    watcher.sync()
    assert list(out_dir.iterdir()) == []  # nothing finished yet
    (device_dirs / "stage-out" / "06_x.partial.ipynb").write_text("{}")
    (device_dirs / "cache/models/aa.pt").write_bytes(b"weights")
    watcher.sync()
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "06_x.partial.ipynb",
        "ch6-models-1.tar",
    ]
    with tarfile.open(out_dir / "ch6-models-1.tar") as t:
        assert t.getnames() == ["models/aa.pt"]
    # the executor replaces the partial notebook by the finished one
    (device_dirs / "stage-out" / "06_x.partial.ipynb").unlink()
    (device_dirs / "stage-out" / "06_x.ipynb").write_text("{}")
    watcher.sync()
    assert "06_x.partial.ipynb" not in {p.name for p in out_dir.iterdir()}
    assert (out_dir / "06_x.ipynb").is_file()

    # a later call carries the archives back in: the next machine has them
    resume = device_dirs / "resume"
    resume.mkdir()
    shutil.copy2(out_dir / "ch6-models-1.tar", resume / "ch6-models-1.tar")
    (resume / "plan.json").write_text('{"protocol": {"name": "4 epochs"}}')
    shutil.rmtree(device_dirs / "cache")
    (device_dirs / "cache" / "models").mkdir(parents=True)
    info = gd.extract_resume()
    assert info == {"carried": True, "models_in": 1, "protocol": {"name": "4 epochs"}}
    assert (device_dirs / "cache/models/aa.pt").read_bytes() == b"weights"


def test_install_unpacks_each_wheel_once(tmp_path, monkeypatch):
    monkeypatch.setattr(gd, "ROOT", tmp_path)
    monkeypatch.setattr(gd, "SITE", tmp_path / ".gpu/site")
    monkeypatch.setattr(gd, "DRY", False)
    monkeypatch.setattr(gb, "WHEELS", {"demo": "1.0"})
    (tmp_path / gb.WHEEL_DIR).mkdir()
    with zipfile.ZipFile(
        tmp_path / gb.WHEEL_DIR / "demo-1.0-py3-none-any.whl", "w"
    ) as z:
        z.writestr("demo/__init__.py", "VALUE = 1\n")
    assert gd.install() == {"wheels": 1, "installed_before": False}
    module = tmp_path / ".gpu/site" / "demo" / "__init__.py"
    assert module.read_text() == "VALUE = 1\n"
    module.write_text("changed")
    assert gd.install()["installed_before"]  # the same wheels: not unpacked again
    assert module.read_text() == "changed"
    monkeypatch.setattr(gb, "WHEELS", {"demo": "1.0", "other": "2.0"})
    with pytest.raises(gd.Failure, match="lacks wheels for: other"):
        gd.install()


# ------------------------------------------------- the machine's view of packages
def device_view_env(root: Path, **extra) -> dict:
    env = gdr.clean_env(root, root / "out", gdr.python_shim(root / "bin"))
    env.update(extra)
    return env


def run_python(code: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True
    )


def test_the_dry_run_refuses_what_the_gpu_machine_lacks(tmp_path):
    absent, stack = gdr.import_views()
    for name in ("jupytext", "sphinx", "docutils", "nbmake", "ray", "ruff"):
        assert name in absent
    assert {"nbclient", "nbformat", "ipykernel", "jupyter_client", "zmq"} <= set(stack)
    assert "torch" not in absent + stack and "yaml" not in absent + stack
    env = device_view_env(tmp_path)
    for name in ("jupytext", "sphinx_external_toc", "docutils", "nbclient"):
        r = run_python(f"import {name}", env, tmp_path)
        assert r.returncode != 0 and "on the GPU machine" in r.stderr, name
    (tmp_path / ".gpu/site").mkdir(parents=True)
    (tmp_path / ".gpu/site/.installed").write_text("x")
    assert run_python("import nbclient, torch, yaml", env, tmp_path).returncode == 0
    # the grouped layout, the CUDA default, on the CPU
    code = (
        "from betavae_lib import ConvVAE\n"
        "from betavae_lib.ensemble import VAEEnsemble\n"
        "print(VAEEnsemble([ConvVAE(), ConvVAE()], device='cpu').layout)"
    )
    r = run_python(code, {**env, "PYTHONPATH": f"{env['PYTHONPATH']}:{ROOT}"}, ROOT)
    assert r.stdout.strip() == "grouped", r.stderr


# --------------------------------------- the device side on a synthetic book
def synthetic_root(tmp_path: Path, notebooks: dict) -> Path:
    """A checkout with this project's tools and library and the given notebooks as
    its book (stand-in wheels: the dry run's view)."""
    root = tmp_path / "repo"
    shutil.copytree(
        ROOT / "tools", root / "tools", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        ROOT / "betavae_lib",
        root / "betavae_lib",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    chapters = "\n".join(f"      - file: notebooks/{stem}" for stem in notebooks)
    (root / "_toc.yml").write_text(
        f"format: jb-book\nroot: intro\nparts:\n  - chapters:\n{chapters}\n"
    )
    (root / "intro.md").write_text("# intro\n")
    for stem, sources in notebooks.items():
        path = root / "notebooks" / f"{stem}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        cells = [new_markdown_cell(f"# {stem}")] + [new_code_cell(s) for s in sources]
        nbformat.write(new_notebook(cells=cells, metadata=KERNELSPEC), path)
    gb.stand_in_wheels(root / gb.WHEEL_DIR)
    return root


def launch(root: Path, call: str, box: int, out: Path, **popen):
    """The call's command as the plan writes it, under the dry run's view."""
    command = gb.device_command(call, "--commit", "abc1234", "--box", str(box))
    env = gdr.clean_env(root, out, gdr.python_shim(root.parent / "bin"))
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["bash", "-c", command], cwd=root, env=env, start_new_session=True, **popen
    )


def out_names(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def test_a_failing_cell_fails_the_call_and_returns_the_failed_notebook(tmp_path):
    root = synthetic_root(
        tmp_path,
        {
            "01_ok": ["print('profile: smoke | device: cpu')"],
            "02_fails": ["print('before')", "raise ValueError('broken <on purpose>')"],
        },
    )
    out = tmp_path / "out"
    proc = launch(root, "gpu-ch1-2", 120, out)
    assert proc.wait(timeout=300) != 0
    assert out_names(out) == [
        "01_ok.ipynb",
        "02_fails.failed.ipynb",
        "execution.json",
        "gpu-ch1-2.log",
        "plan.json",
    ]
    report = json.loads((out / "plan.json").read_text())
    assert report["status"] == "error" and "02_fails" in report["error"]
    assert report["commit"] == "abc1234"
    manifest = json.loads((out / "execution.json").read_text())
    assert [e["status"] for e in manifest["notebooks"]] == ["ok", "error"]
    assert manifest["runs"][-1]["git"] == {
        "commit": "abc1234",
        "dirty": None,
        "source": "passed in",
    }
    failed = nbformat.read(out / "02_fails.failed.ipynb", as_version=4)
    assert failed.cells[1].outputs[0]["text"] == "before\n"
    log = (out / "gpu-ch1-2.log").read_text()
    assert log.strip().splitlines()[-1].startswith("RESULT gpu-ch1-2: FAILED")


def test_a_call_past_its_box_stops_and_returns_what_it_finished(tmp_path):
    root = synthetic_root(
        tmp_path,
        {
            "01_slow": [
                "print('step 1 done', flush=True)",
                "import time\ntime.sleep(120)",
            ],
            "02_never": ["print('not reached')"],
        },
    )
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = launch(root, "gpu-ch1-2", 12, out)
    assert proc.wait(timeout=200) != 0
    assert time.monotonic() - t0 < 100
    assert "01_slow.failed.ipynb" in out_names(out)
    assert "02_never.failed.ipynb" not in out_names(out)
    manifest = json.loads((out / "execution.json").read_text())
    assert [e["status"] for e in manifest["notebooks"]] == ["error", "error"]
    assert manifest["notebooks"][1]["error"].startswith("not run: the run's --deadline")
    failed = nbformat.read(out / "01_slow.failed.ipynb", as_version=4)
    assert failed.cells[1].outputs[0]["text"] == "step 1 done\n"
    assert "step 1 done" in (out / "gpu-ch1-2.log").read_text()  # echoed as it ran


def test_a_killed_call_still_returns_its_log_and_the_cells_it_ran(tmp_path):
    """The device kills the whole command at its timeout_s: what was copied to $OUT
    before stays (the log through tee, the notebook after each cell)."""
    root = synthetic_root(
        tmp_path,
        {
            "01_long": [
                "print('first cell done', flush=True)",
                "import time\nfor i in range(600):\n    time.sleep(0.2)",
            ],
            "02_never": ["print('not reached')"],
        },
    )
    out = tmp_path / "out"
    proc = launch(root, "gpu-ch1-2", 500, out)
    deadline = time.monotonic() + 200
    while not (out / "01_long.partial.ipynb").is_file():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.5)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    names = out_names(out)
    assert "gpu-ch1-2.log" in names and "plan.json" in names
    partial = nbformat.read(out / "01_long.partial.ipynb", as_version=4)
    assert partial.cells[1].outputs[0]["text"] == "first cell done\n"
    assert len(names) <= gb.OUT_MAX_FILES


# ------------------------------------------------------------- the whole dry run
@needs_mnist
@needs_fashion
def test_dry_run_of_every_call_and_a_resume_that_trains_nothing(tmp_path, capsys):
    """Every call of the plan, its exact command, at the smoke profile on the CPU in
    the GPU machine's view; then chapter 6 again on a fresh machine with the first
    call's pieces carried back in: nothing is trained and the table is the same."""
    rc = gdr.main(keep=tmp_path / "dry")
    printed = capsys.readouterr().out
    assert rc == 0, printed[-6000:]
    assert "every call passed" in printed

"""The CPU dry run of the GPU plan: every call's exact command string, run as the GPU
machine would run it, at the smoke profile, with every limit checked.

``python tools/gpu_bundle.py dry-run``:

1. copies the working tree (tracked and untracked, not ignored: what the device tool
   sends) into a scratch "local" checkout and prepares it there: the wheels of ``.whl``
   (this checkout's, or empty stand-ins named like them), ``data/`` from
   ``$BETAVAE_DATA_DIR``, the Inception weights split into parts sized for this tree
   (the real weights when ``$BETAVAE_DATA_DIR/weights`` has them);
2. makes the plan there (``gpu_bundle.make_plan``), checks it has no problem and that
   its command strings are the ones ``plan`` prints for this checkout;
3. emulates one held machine: a scratch "device" folder that receives the working tree
   and each call's carried paths and keeps its ignored folders between calls; no
   ``.git``; ``python3`` is this Python with ``tools/gpu_dryrun_site/sitecustomize.py``
   refusing what the machine lacks (jupytext, sphinx, docutils, nbmake, ray, ruff and
   the rest of this machine's packages that the GPU image does not list; the Jupyter
   stack until the call installs ``.whl``) and forcing the grouped ensemble layout;
4. runs each call's command with ``bash -c`` in that folder, ``$OUT`` a fresh folder,
   killed with its process group like the device, at 4 times the call's ``timeout_s``
   (the launcher's deadlines are scaled alike: a CPU is not the GPU the boxes are
   sized for); checks its exit status, its
   ``$OUT`` (at most 8 files of at most 16 MiB, 64 MiB in all, 2 folders deep, names
   the device returns, only the planned names), its report (status, commit, protocol,
   the library imported from the device's copy), that the notebooks hold no error
   and that the log ends with ``RESULT NAME: ok``;
5. resumes: ``collect`` takes the first call's files into the local checkout as the
   operator would, the plan is made again (now carrying the protocol and the model
   archives of ``.gpu/resume`` that fit), and chapter 6's call runs on a fresh
   machine: it must train none of the models carried back nor any of the table's, and
   print the same table.

Exit status 0 only if every step passed. The preflight's timings are the CPU's, so the
protocol it picks says nothing about the GPU; the choice itself runs (``--box`` is the
plan's).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
import gpu_bundle as gb  # noqa: E402
import gpu_device as gd  # noqa: E402

SITE_DIR = TOOLS / "gpu_dryrun_site"

# Python packages of the GPU image ("cuda"), as the device tool's KINDS.md lists them
# (read on a machine on 2026-11-17). Installed packages not listed here are absent
# there, unless a call installs them from .whl.
DEVICE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio
attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama
contourpy coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x
cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader
lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
xarray xxhash yarl zipp
""".split()
# Named by issue 24 as absent there; checked to be blocked whatever this machine has.
MUST_BE_ABSENT = ("jupytext", "sphinx", "docutils", "nbmake", "ray", "ruff")
PROJECT_DISTS = ("betavae-lib",)


TIME_SCALE = 4  # the dry run's deadlines and kill times: the plan's, times 4


def import_views() -> tuple[list[str], list[str]]:
    """(absent, stack): import names of installed packages the machine lacks, and of
    those the calls install from .whl."""
    device = {gb.normalize(n) for n in DEVICE_PACKAGES}
    wheels = {gb.normalize(n) for n in gb.WHEELS}
    absent, stack = set(MUST_BE_ABSENT), set()
    for module, dists in md.packages_distributions().items():
        if module.startswith("_") or not module.isidentifier():
            continue
        names = {gb.normalize(d) for d in dists}
        if names & device or names & {gb.normalize(p) for p in PROJECT_DISTS}:
            continue
        if names & wheels:
            stack.add(module)
        else:
            absent.add(module)
    return sorted(absent - stack), sorted(stack)


def clean_env(device_root: Path, out: Path, bin_dir: Path) -> dict:
    """The environment a call's command starts with: this one without the project's
    settings, plus the dry run's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BETAVAE_")}
    for k in ("PYTHONPATH", "VIRTUAL_ENV_PROMPT", "JUPYTER_PATH", "IPYTHONDIR"):
        env.pop(k, None)
    absent, stack = import_views()
    env.update(
        {
            "OUT": str(out),
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(SITE_DIR),
            "HOME": str(device_root.parent / "home"),
            "BETAVAE_DRY_RUN": "1",
            "BETAVAE_DRY_RUN_ROOT": str(device_root),
            "BETAVAE_DRY_RUN_ABSENT": ",".join(absent),
            "BETAVAE_DRY_RUN_STACK": ",".join(stack),
            "BETAVAE_DRY_RUN_LAYOUT": "grouped",
            # chapter 6's protocol is chosen for a 90-s box (its deadline stays the
            # plan's), so that the step choice steps down and --steps runs
            "BETAVAE_DRY_RUN_CHOICE_BOX": "90",
            # this CPU's deadlines: the plan's times TIME_SCALE (the commands stay
            # the plan's; a shared 2-core machine runs the smoke chapters in minutes)
            "BETAVAE_DRY_RUN_TIME_SCALE": str(TIME_SCALE),
        }
    )
    (device_root.parent / "home").mkdir(exist_ok=True)
    return env


def python_shim(folder: Path) -> Path:
    """A ``python3`` that is this Python (the commands call ``python3``)."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "python3"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    return folder


def copy_tree(src_root: Path, dest_root: Path) -> int:
    """Copy the working tree of ``src_root`` (what the device tool sends); bytes."""
    total = 0
    for name in gb.tree_files(src_root):
        src, dest = src_root / name, dest_root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        total += src.stat().st_size
    return total


def copy_path(src_root: Path, dest_root: Path, rel: str) -> None:
    """A carried path replaces the machine's; one absent here is removed there."""
    src, dest = src_root / rel, dest_root / rel
    if dest.is_dir():
        shutil.rmtree(dest)
    elif dest.exists():
        dest.unlink()
    if src.is_dir():
        shutil.copytree(src, dest)
    elif src.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def prepare_local(local: Path, log) -> dict:
    """The scratch checkout, prepared as ``prepare`` would prepare this one."""
    copy_tree(ROOT, local)
    made = {}
    real = ROOT / gb.WHEEL_DIR
    if (
        real.is_dir()
        and not gb.missing_wheels(real)
        and not (real / gb.STAND_IN).exists()
    ):
        shutil.copytree(real, local / gb.WHEEL_DIR)
        made["wheels"] = "this checkout's .whl"
    else:
        gb.stand_in_wheels(local / gb.WHEEL_DIR)
        made["wheels"] = "stand-ins (size taken as expected)"
    data = os.environ.get("BETAVAE_DATA_DIR")
    source = Path(data) if data else None
    if source is not None and (source / "MNIST" / "raw").is_dir():
        gb.copy_data(source, local / gb.DATA_DIR)
        made["data"] = str(source)
    weights = source / "weights" / gb.WEIGHTS_NAME if source else None
    if weights is not None and weights.is_file():
        state = gb.LocalState(local)
        gb.split_weights(
            weights, local / gb.PARTS_DIR, lambda total: [state.part_room(total)]
        )
        made["inception"] = "the real weights"
    else:
        stand_in_weights(local)
        made["inception"] = "a small stand-in (sizes taken as expected)"
    log(f"local checkout prepared: {made}")
    return made


def stand_in_weights(local: Path) -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    state = {
        "Conv2d_1a_3x3.conv.weight": torch.randn(32, 3, 3, 3, generator=g),
        "fc.weight": torch.zeros(4, 8),
    }
    path = local / ".gpu" / "stand-in.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    gb.split_weights(path, local / gb.PARTS_DIR, [1000])


def run_command(
    command: str, cwd: Path, env: dict, timeout_s: int
) -> tuple[int, float]:
    """``bash -c command`` as the device runs it: killed, with its whole process
    group, at ``timeout_s``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-c", command], cwd=cwd, env=env, start_new_session=True
    )
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = 137
    return rc, time.monotonic() - t0


def out_problems(out: Path, planned: list[str]) -> list[str]:
    """What the device would refuse to return, or what was not planned."""
    problems = []
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > gb.OUT_MAX_FILES:
        problems.append(f"{len(files)} files in $OUT > {gb.OUT_MAX_FILES}")
    total = sum(p.stat().st_size for p in files)
    if total > gb.OUT_TOTAL_MAX:
        problems.append(f"$OUT holds {total / gb.MIB:.1f} MiB > 64")
    for p in files:
        rel = p.relative_to(out)
        if p.stat().st_size > gb.OUT_FILE_MAX:
            problems.append(f"{rel}: {p.stat().st_size / gb.MIB:.1f} MiB > 16")
        if len(rel.parts) > gb.OUT_MAX_DEPTH + 1:
            problems.append(f"{rel}: deeper than {gb.OUT_MAX_DEPTH} folders")
        if not all(gb.OUT_NAME.fullmatch(part) for part in rel.parts):
            problems.append(f"{rel}: a name the device does not return")
        planned_as = rel.name.replace(".failed.", ".").replace(".partial.", ".")
        if len(rel.parts) == 1 and planned_as not in planned:
            problems.append(f"{rel}: not among the planned files {planned}")
    return problems


def notebook_errors(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    found = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"{out.get('ename')}: {out.get('evalue')}"[:200])
    return found


REQUIRED = {
    "gpu-ch6": [
        "gpu-ch6.log",
        "plan.json",
        "execution.json",
        "06_disentanglement.ipynb",
        "ch6-models-1.tar",
    ],
    "gpu-inception": ["gpu-inception.log", "inception.json"],
    "gpu-ch5": ["gpu-ch5.log", "plan.json", "execution.json", "05_fid.ipynb"],
}


def check_call(call: dict, rc: int, out: Path, device: Path, commit: str) -> list:
    problems = []
    if rc != 0:
        problems.append(f"exit status {rc}")
    problems += out_problems(out, call["out_files"])
    required = REQUIRED.get(call["name"], [f"{call['name']}.log"])
    problems += [f"{n} missing from $OUT" for n in required if not (out / n).is_file()]
    log = out / f"{call['name']}.log"
    if log.is_file():
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
        if not lines or not lines[-1].startswith(f"RESULT {call['name']}: ok"):
            last = lines[-1] if lines else "(empty)"
            problems.append(f"the log does not end with the RESULT ok line: {last}")
    report = next(
        (
            out / n
            for n in ("plan.json", "inception.json", "stage.json")
            if (out / n).is_file()
        ),
        None,
    )
    if report is not None:
        r = json.loads(report.read_text(encoding="utf-8"))
        if r.get("status") != "ok":
            problems.append(
                f"{report.name}: status {r.get('status')}: {r.get('error')}"
            )
        if r.get("commit") != commit:
            problems.append(f"{report.name}: commit {r.get('commit')} != {commit}")
        if call["name"] == "gpu-ch6":
            if not r.get("protocol", {}).get("summary"):
                problems.append("plan.json records no protocol")
            lib = r.get("preflight", {}).get("betavae_lib", "")
            if not lib.startswith(str(device)):
                problems.append(
                    f"betavae_lib was imported from {lib}, not the device copy"
                )
    for nb in out.glob("*.ipynb"):
        errors = notebook_errors(nb)
        if errors:
            problems.append(f"{nb.name} holds errors: {errors}")
    manifest = out / "execution.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text(encoding="utf-8"))
        run = max(m["runs"], key=lambda r: r["id"])
        if run["git"].get("commit") != commit:
            problems.append(f"execution.json: commit {run['git'].get('commit')}")
        if run["device"]["kind"] != "cpu":
            problems.append("execution.json labels a CPU run as a GPU run")
    return problems


def main(keep: Path | None = None, only=None, resume: bool = True) -> int:
    scratch = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="betavae-gpu-dry-"))
    scratch.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()

    def log(text: str) -> None:
        print(f"dry-run: {text}", flush=True)

    failures: list[str] = []
    try:
        failures = dry_run(scratch, only, resume, log)
    finally:
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    took = time.monotonic() - t_all
    if failures:
        for f in failures:
            log(f"FAILED: {f}")
        log(f"{len(failures)} problem(s) in {took:.0f} s")
        return 1
    log(f"every call passed in {took:.0f} s")
    return 0


def dry_run(scratch: Path, only, resume: bool, log) -> list[str]:
    local, device = scratch / "local", scratch / "device"
    for folder in (local, device):
        shutil.rmtree(folder, ignore_errors=True)
    made = prepare_local(local, log)
    commit = gb.head_commit(ROOT) or "0" * 40
    settings = gb.Settings(commit=commit)
    plan = gb.make_plan(local, settings)
    failures = [f"plan: {p}" for p in plan["problems"]]
    here = gb.make_plan(ROOT, gb.Settings(commit=commit))
    if not (ROOT / gb.RESUME_DIR).exists():
        mine = {c["name"]: c["command"] for c in here["calls"]}
        theirs = {c["name"]: c["command"] for c in plan["calls"]}
        if mine != theirs:
            failures.append("the dry run's commands differ from `plan`'s")
    log(
        f"plan: {len(plan['calls'])} calls, {plan['total_est_min']} estimated device "
        f"minutes; {len(failures)} problem(s)"
    )
    bin_dir = python_shim(scratch / "bin")
    calls = [c for c in plan["calls"] if only is None or c["name"] in only]
    if "data" not in made and any(c["name"] == "gpu-ch5" for c in calls):
        failures.append("gpu-ch5 needs $BETAVAE_DATA_DIR (MNIST, Fashion-MNIST)")
        calls = [c for c in calls if c["name"] != "gpu-ch5"]
    outs = {}
    for call in calls:
        out = scratch / f"out-{call['name']}"
        failures += run_call(call, local, device, out, bin_dir, commit, log)
        outs[call["name"]] = out
    if resume and "gpu-ch6" in outs and not failures:
        failures += resume_check(scratch, local, outs["gpu-ch6"], bin_dir, commit, log)
    return failures


def run_call(call, local, device, out, bin_dir, commit, log) -> list[str]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    copy_tree(local, device)
    for carry in call["carry"]:
        copy_path(local, device, carry["path"])
    env = clean_env(device, out, bin_dir)
    log(
        f"{call['name']}: running its command ({call['chars']} characters, "
        f"{call['mib']:.1f} MiB, timeout {call['timeout_s']} s)"
    )
    rc, took = run_command(
        call["command"], device, env, int(call["timeout_s"] * TIME_SCALE)
    )
    problems = check_call(call, rc, out, device, commit)
    log(f"{call['name']}: exit {rc} in {took:.0f} s; {len(problems)} problem(s)")
    return [f"{call['name']}: {p}" for p in problems]


def resume_check(scratch, local, first_out, bin_dir, commit, log) -> list[str]:
    """Chapter 6 again on a fresh machine with the first run's pieces carried back:
    no model carried back may be trained again, nor any of the table's (only the
    capacity study's models of an archive the call had no room for), and the table
    must be the same."""
    log("resume: collecting gpu-ch6's files as the operator would")
    gb.collect(local, first_out)
    (local / gb.RESUME_DIR / "done.json").unlink(
        missing_ok=True
    )  # as if it was stopped
    plan = gb.make_plan(local, gb.Settings(commit=commit))
    problems = [f"resume plan: {p}" for p in plan["problems"]]
    call = next((c for c in plan["calls"] if c["name"] == "gpu-ch6"), None)
    if call is None:
        return problems + ["resume plan has no gpu-ch6"]
    if not any(x["path"].startswith(gb.RESUME_DIR) for x in call["carry"]):
        problems.append(f"gpu-ch6 carries nothing from {gb.RESUME_DIR}")
    device = scratch / "device-2"  # a fresh machine
    shutil.rmtree(device, ignore_errors=True)
    out = scratch / "out-resume"
    problems += [
        p.replace("gpu-ch6:", "resume:", 1)
        for p in run_call(call, local, device, out, bin_dir, commit, log)
    ]
    report = (
        json.loads((out / "plan.json").read_text())
        if (out / "plan.json").is_file()
        else {}
    )
    resumed = report.get("resume", {})
    if not resumed.get("models_in"):
        problems.append(f"resume: nothing was carried back in: {resumed}")
    if resumed.get("retrained") != 0:
        retrained = resumed.get("retrained")
        problems.append(f"resume: {retrained} carried model(s) trained again")
    study = gd.CH6_STUDY_MODELS
    if not 0 <= resumed.get("trained_now", -1) <= study:
        problems.append(
            f"resume: {resumed.get('trained_now')} model(s) trained, more than the "
            f"capacity study's {study}"
        )
    if not report.get("protocol", {}).get("resumed"):
        problems.append("resume: the protocol was chosen again instead of reused")
    before = metrics_of(first_out / "execution.json", "06_disentanglement")
    after = metrics_of(out / "execution.json", "06_disentanglement")
    if not before or before != after:
        changed = sorted(
            k for k in set(before) | set(after) if before.get(k) != after.get(k)
        )
        problems.append(f"resume: the headline numbers changed: {changed}")
    brief = {k: resumed.get(k) for k in ("models_in", "trained_now", "retrained")}
    reused = bool(report.get("protocol", {}).get("resumed"))
    log(f"resume: {brief}; protocol reused: {reused}")
    return problems


def metrics_of(manifest: Path, stem: str) -> dict:
    if not manifest.is_file():
        return {}
    m = json.loads(manifest.read_text(encoding="utf-8"))
    run = max(r["id"] for r in m["runs"])
    for e in m["notebooks"]:
        if Path(e["path"]).stem == stem and e["run"] == run:
            return e.get("metrics", {})
    return {}


if __name__ == "__main__":
    raise SystemExit(main())

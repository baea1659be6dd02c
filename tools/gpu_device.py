"""The GPU machine's side of ``tools/gpu_bundle.py``: one call, from install to $OUT.

``python3 tools/gpu_bundle.py device NAME --out "$OUT" ...`` runs call NAME:

1. installs the Jupyter stack from the carried ``.whl`` into ``.gpu/site`` (once);
2. keeps any carried Inception part in ``.gpu/staged`` and joins the weights into
   ``data/weights`` once every part is on the machine (SHA-256 checked);
3. unpacks what a resume carries (``.gpu/resume``: trained models and the protocol
   of the run they come from);
4. for chapter 6, runs the preflight (at most 60 s: CUDA visible, a Jupyter kernel
   starts, one step of the table's 15-model ensemble and of the capacity study's
   7-model ensemble timed through ``fit_ensemble``, the scoring and the rendering
   timed) and chooses the table's steps (whole epochs) that fit the chapter's box
   (:func:`choose_protocol`), or takes the resumed run's protocol;
5. executes the call's chapters with ``tools/execute_book.py`` (``--deadline`` = the
   box) while a watcher copies every finished piece to ``$OUT``: the notebook after
   every cell, the manifest and the trained models (``ch6-models-N.tar``), at most
   7 files and one temporary;
6. writes ``plan.json`` (device, versions, commit, preflight, protocol, what ran, what
   was resumed) and prints ``RESULT NAME: ok`` or ``RESULT NAME: FAILED ...`` last.

The exit status is 0 only if every step and every chapter succeeded. Nothing here needs
the Jupyter stack before step 1: it is imported by the subprocesses.

``BETAVAE_DRY_RUN=1`` (set by ``tools/gpu_dryrun.py``, never on the machine) allows a
CPU, uses the smoke profile and small preflight sizes; everything else is the same
code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
import gpu_bundle as gb  # noqa: E402

GPU = ROOT / gb.GPU_DIR
SITE = GPU / "site"
STAGED = GPU / "staged"
CACHE = GPU / "cache"
STAGING = GPU / "stage-out"
RESUME = ROOT / gb.RESUME_DIR
WEIGHTS = ROOT / gb.DATA_DIR / "weights" / gb.WEIGHTS_NAME
MODEL_TARS = 3  # ch6-models-1.tar .. -3.tar: 22 trained models of 2.02 MB
TAR_LIMIT = int(15.75 * gb.MIB)  # below $OUT's 16 MiB per file
PREFLIGHT_CAP_S = 60
SAFETY = 0.9  # a protocol is chosen if its prediction fits 90% of the box
FIXED_CH6_S = 30  # figures, traversals, animation, explorer: ESTIMATE (audit: ~0.5 min)

DRY = os.environ.get("BETAVAE_DRY_RUN") == "1"
# the dry run's CPU is far slower than the GPU the boxes are sized for: its deadlines
# are the plan's times this factor (the command strings stay the plan's)
TIME_SCALE = float(os.environ.get("BETAVAE_DRY_RUN_TIME_SCALE", 1)) if DRY else 1.0


@dataclass(frozen=True)
class Spec:
    chapters: tuple = ()
    stack: bool = False  # needs the Jupyter stack
    preflight: bool = False
    pieces: tuple = ()  # "models": copied to $OUT as they are finished
    inception_check: bool = False
    needs_inception: bool = False
    cudnn_tf32: bool = True
    report: str = "plan.json"


SPECS = {
    "gpu-ch6": Spec(("06",), True, True, ("models",)),
    "gpu-inception": Spec(inception_check=True, report="inception.json"),
    "gpu-ch5": Spec(("05",), True, needs_inception=True, cudnn_tf32=False),
    "gpu-ch1-2": Spec(("01", "02"), True),
    "gpu-ch3-4": Spec(("03", "04"), True),
}


def spec_of(name: str) -> Spec:
    if name.startswith("gpu-stage-"):
        return Spec(report="stage.json")
    if name not in SPECS:
        raise SystemExit(f"unknown call {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]


class Failure(Exception):
    """A step failed; the call stops with exit status ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------ $OUT
class OutWriter:
    """The one writer of ``$OUT`` (besides ``tee``'s log): each file is written to one
    temporary and renamed into place, one at a time, so $OUT never holds more than its
    planned files and one temporary."""

    TMP = ".tmp-out"

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def _put(self, name: str, write) -> None:
        if not gb.OUT_NAME.fullmatch(name):
            raise ValueError(f"{name!r} cannot come back from $OUT")
        with self.lock:
            tmp = self.folder / self.TMP
            write(tmp)
            os.replace(tmp, self.folder / name)

    def json(self, name: str, data: dict) -> None:
        text = json.dumps(data, indent=1, default=str) + "\n"
        self._put(name, lambda p: p.write_text(text, encoding="utf-8"))

    def copy(self, src: Path, name: str) -> None:
        self._put(name, lambda p: shutil.copyfile(src, p))

    def tar(self, name: str, members: list[tuple[Path, str]]) -> None:
        def write(p: Path) -> None:
            with tarfile.open(p, "w") as t:
                for path, arcname in members:
                    t.add(path, arcname=arcname)

        self._put(name, write)

    def remove(self, name: str) -> None:
        with self.lock:
            (self.folder / name).unlink(missing_ok=True)


def model_tar_groups(files: list[Path], limit: int = TAR_LIMIT) -> list[list[Path]]:
    """Cache entries in archives of at most ``limit`` bytes each, in the order they
    were written (then by name): the table's models, trained first, fill the first
    archives, which a resume carries first."""
    groups: list[list[Path]] = []
    size = 0
    for f in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name)):
        n = f.stat().st_size + 2048  # the tar header and padding
        if not groups or size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += n
    return groups


class Watcher:
    """Copies finished pieces to ``$OUT`` every few seconds, and once at the end."""

    def __init__(self, out: OutWriter, pieces: tuple, every: float = 3.0):
        self.out, self.pieces, self.every = out, pieces, every
        self.seen: dict[str, object] = {}
        self.mirrored: set[str] = set()
        self.notes: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.sync()

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.sync()
            except Exception as e:  # noqa: BLE001 - the next round tries again
                print(f"watcher: {type(e).__name__}: {e}", flush=True)

    @staticmethod
    def signature(files: list[Path]) -> tuple:
        out = []
        for f in files:
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            out.append((str(f), st.st_size, st.st_mtime_ns))
        return tuple(out)

    def changed(self, key: str, files: list[Path]) -> bool:
        sig = self.signature(files)
        if self.seen.get(key) == sig:
            return False
        self.seen[key] = sig
        return True

    def sync(self) -> None:
        # the executor's copies (notebooks, manifest): mirrored, removals included
        present = sorted(p for p in STAGING.glob("*") if p.is_file())
        present = [p for p in present if not p.name.startswith(".")]
        for p in present:
            if self.changed(f"staged:{p.name}", [p]):
                self.out.copy(p, p.name)
                self.mirrored.add(p.name)
        for gone in self.mirrored - {p.name for p in present}:
            self.out.remove(gone)
            self.mirrored.discard(gone)
            self.seen.pop(f"staged:{gone}", None)
        if "models" in self.pieces:
            files = sorted((CACHE / "models").glob("*.pt"))
            if files and self.changed("models", files):
                groups = model_tar_groups(files)
                if len(groups) > MODEL_TARS:
                    left = sum(len(g) for g in groups[MODEL_TARS:])
                    note = (
                        f"{left} trained model(s) not copied to $OUT: over the "
                        f"{MODEL_TARS} archives planned"
                    )
                    if note not in self.notes:
                        self.notes.append(note)
                        print(f"warning: {note}", flush=True)
                for i, group in enumerate(groups[:MODEL_TARS], 1):
                    members = [(f, f"models/{f.name}") for f in group]
                    self.out.tar(f"ch6-models-{i}.tar", members)
                print(f"$OUT: {len(files)} trained model(s) archived", flush=True)


# --------------------------------------------------------------------- the steps
def device_env(call: str, commit: str | None) -> dict:
    """The environment of every process the call starts (the kernels included)."""
    existing = os.environ.get("PYTHONPATH", "")
    path = os.pathsep.join(p for p in (str(SITE), str(ROOT), existing) if p)
    env = {
        "PYTHONPATH": path,
        "PYTHONUNBUFFERED": "1",
        "BETAVAE_DATA_DIR": str(ROOT / gb.DATA_DIR),
        "BETAVAE_CACHE_DIR": str(CACHE),
        "BETAVAE_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "JUPYTER_RUNTIME_DIR": str(GPU / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": str(GPU / "ipython"),
        "BETAVAE_PROFILE": "smoke" if DRY else "full",
    }
    if commit:
        env["BETAVAE_GIT_COMMIT"] = commit
    return env


def install() -> dict:
    """Unpack every wheel in .whl into .gpu/site (once per set of wheels). In the dry
    run the wheels (cp312) cannot load on this Python: their presence is checked and the
    install recorded, which lets the import blocker pass the Jupyter stack."""
    wheels_dir = ROOT / gb.WHEEL_DIR
    wheels = sorted(wheels_dir.glob("*.whl"))
    marker = SITE / ".installed"
    listed = "\n".join(w.name for w in wheels)
    if not wheels:
        if marker.is_file():
            return {"wheels": 0, "installed_before": True}
        raise Failure(
            f"no {gb.WHEEL_DIR} carried and no Jupyter stack installed on this machine "
            "(a fresh machine: run the plan's first call again)",
            code=3,
        )
    absent = gb.missing_wheels(wheels_dir)
    if absent:
        raise Failure(f"{gb.WHEEL_DIR} lacks wheels for: {', '.join(absent)}", code=3)
    if marker.is_file() and marker.read_text() == listed:
        return {"wheels": len(wheels), "installed_before": True}
    SITE.mkdir(parents=True, exist_ok=True)
    if not DRY:  # cp312 wheels: this Python in the dry run has the stack already
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(SITE)
    marker.write_text(listed)
    return {"wheels": len(wheels), "installed_before": False}


def carried_parts() -> list[Path]:
    folder = ROOT / gb.PARTS_DIR
    return sorted(p for p in folder.glob("part-*") if p.is_dir())


def stage_and_join() -> dict:
    """Keep the Inception parts this call brought; join the weights once all are
    here (and not yet joined)."""
    staged = []
    STAGED.mkdir(parents=True, exist_ok=True)
    for part in carried_parts():
        target = STAGED / part.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(part, target)
        staged.append(part.name)
    have = sorted(p.name for p in STAGED.glob("part-*"))
    info = {"staged_now": staged, "staged": have, "joined": WEIGHTS.is_file()}
    if have and not WEIGHTS.is_file():
        try:
            gb.join_weights(sorted(STAGED.glob("part-*")), WEIGHTS)
        except FileNotFoundError as e:
            info["missing"] = str(e)
        else:
            info["joined"] = True
            info["joined_now"] = True
            info["weights_mib"] = round(WEIGHTS.stat().st_size / gb.MIB, 1)
    return info


def extract_resume() -> dict:
    """Unpack what a resume carried (.gpu/resume) into the model cache."""
    if not RESUME.is_dir():
        return {"carried": False}
    info = {"carried": True, "models_in": 0, "protocol": None}
    for piece in sorted(RESUME.glob("ch6-*.tar")):
        with tarfile.open(piece) as t:
            for member in t.getmembers():
                top, _, rest = member.name.partition("/")
                dest = {"models": CACHE / "models"}.get(top)
                if dest is None or not member.isfile() or not rest:
                    continue
                target = (dest / rest).resolve()
                if not str(target).startswith(str(dest.resolve())):
                    raise Failure(f"{piece.name}: {member.name} points outside")
                target.parent.mkdir(parents=True, exist_ok=True)
                with t.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    info["models_in"] = len(list((CACHE / "models").glob("*.pt")))
    plan = RESUME / "plan.json"
    if plan.is_file():
        info["protocol"] = json.loads(plan.read_text(encoding="utf-8")).get("protocol")
    return info


def snapshot() -> dict:
    """Name -> mtime of the cache entries (what training writes)."""
    return {str(f): f.stat().st_mtime_ns for f in (CACHE / "models").glob("*.pt")}


# ------------------------------------------------------------------ the protocol
# Chapter 6 per profile, as its training and scoring cells set it (a test reads the
# chapter to keep these equal): training images (None: the whole grid of 737,280),
# epochs, the capacity study's passes over its images, and the scoring sizes (MIG's
# codes and bootstrap resamples, the FactorVAE score's votes of 64 images and its
# variance images). Every profile trains 5 objectives x seeds 0, 1, 2 at batch 64,
# then the capacity study's 7 one-seed models for as many steps as the table.
CH6_BATCH = 64
CH6_SEEDS = 3
CH6_OBJECTIVES = 5
CH6_STUDY_MODELS = 7
CH6_TABLE = {
    "smoke": {"n_train": 1_024, "epochs": 1, "study_passes": 3},
    "reduced": {"n_train": 12_800, "epochs": 1, "study_passes": 10},
    "full": {"n_train": None, "epochs": 5, "study_passes": 10},
}
CH6_SCORING = {
    "smoke": {"n_eval": 1_000, "n_boot": 20, "factor_vae": (30, 20, 500)},
    "reduced": {"n_eval": 10_000, "n_boot": 200, "factor_vae": (1_000, 500, 5_000)},
    "full": {"n_eval": 10_000, "n_boot": 200, "factor_vae": (10_000, 5_000, 10_000)},
}
DSPRITES = 737_280
EPOCH_STEPS = math.ceil(DSPRITES / CH6_BATCH)  # 11,520 steps: one pass over the grid
# The table's steps, best first, in whole epochs of the full profile (57,600 = its 5
# epochs); the capacity study follows the table (as many steps, its own images).
MENU = [epochs * EPOCH_STEPS for epochs in (5, 4, 3, 2, 1)]


def table_steps(profile: str) -> int:
    """The table's steps per model at ``profile`` without ``BETAVAE_STEPS``."""
    return table_shape(profile)[2]


def table_shape(profile: str, steps: int | None = None) -> tuple[int, int, int]:
    """(training images, epochs, steps per model) of chapter 6's table, as
    ``Profile.by_steps`` makes them for ``BETAVAE_STEPS=steps`` (None: unset)."""
    t = CH6_TABLE[profile]
    n, epochs = (DSPRITES if t["n_train"] is None else t["n_train"]), t["epochs"]
    if steps is not None:
        if steps * CH6_BATCH <= DSPRITES:
            n, epochs = steps * CH6_BATCH, 1
        else:
            n, epochs = DSPRITES, math.ceil(steps / EPOCH_STEPS)
    return n, epochs, epochs * math.ceil(n / CH6_BATCH)


def study_shape(profile: str, steps: int) -> tuple[int, int, int]:
    """(images, passes, steps per model) of the capacity study after a table of
    ``steps`` steps: it aims at three eighths of them, on its first
    ``study_steps // study_passes`` batches of the table's images, passed over until
    it has (at most) that many steps."""
    aim = max(1, steps * 3 // 8)
    n = max(CH6_BATCH, aim // CH6_TABLE[profile]["study_passes"] * CH6_BATCH)
    per_pass = math.ceil(n / CH6_BATCH)
    epochs = max(1, aim // per_pass)
    return n, epochs, epochs * per_pass


def menu(profile: str) -> list[int]:
    """The table steps to try at ``profile``: :data:`MENU` at the full profile, the
    same fractions of the profile's own steps elsewhere (the dry run)."""
    default = table_steps(profile)
    if profile == "full":
        return list(MENU)
    return [max(1, round(default * s / MENU[0])) for s in MENU]


def predict(timings: dict, profile: str, steps: int) -> dict:
    """Seconds chapter 6 is predicted to take, part by part, with ``steps`` table
    steps (the capacity study three eighths as long). The ensembles are timed at the
    chapter's sizes on a GPU; a CPU (the dry run) times smaller ones, scaled here by
    members and batch (the work of a step)."""
    t = timings
    n_images, _, s_table = table_shape(profile, steps)
    _, _, s_study = study_shape(profile, s_table)
    members = CH6_SEEDS * CH6_OBJECTIVES

    def train(step_s, timed_members, timed_batch, wanted):
        return step_s * (wanted / timed_members) * (CH6_BATCH / timed_batch)

    parts = {
        "kernel_and_imports": t["kernel_s"],
        "render_images": (n_images + CH6_SCORING[profile]["n_eval"])
        * t["render_s_per_image"],
        "train_table": s_table
        * train(t["table_step_s"], t["table_members"], t["table_batch"], members),
        "train_study": s_study
        * train(
            t["study_step_s"], t["study_members"], t["study_batch"], CH6_STUDY_MODELS
        ),
        "score_table": members * t["table_model_s"],
        "score_study": CH6_STUDY_MODELS * t["study_model_s"],
        "figures_and_rest": FIXED_CH6_S if profile == "full" else FIXED_CH6_S / 3,
    }
    parts = {k: round(v, 1) for k, v in parts.items()}
    parts["total"] = round(sum(parts.values()), 1)
    return parts


def choose_protocol(timings: dict, profile: str, box_s: float) -> dict:
    """The longest table of :func:`menu` whose chapter is predicted to fit
    ``SAFETY * box_s``.

    If none fits (scoring on the CPU would do that), the table is what matters most:
    the longest table whose own training (with the kernel's start and the rendering)
    fits; ``fits`` is then false and ``fallback`` says so (the chapter will likely be
    stopped after its trained models were copied to $OUT, and a resume scores them
    without training again)."""
    target = SAFETY * box_s
    tried = []
    for steps in dict.fromkeys(menu(profile)):
        pred = predict(timings, profile, steps)
        s_table = table_shape(profile, steps)[2]
        n_study, _, s_study = study_shape(profile, s_table)
        if profile == "full":
            epochs = s_table // EPOCH_STEPS
            name = f"{epochs} epoch{'s' if epochs > 1 else ''}"
        else:
            share = steps / table_steps(profile)
            name = f"{share:.0%} of the {profile} profile's steps"
        tried.append(
            {
                "name": name,
                "table_steps": s_table,
                "study_steps": s_study,
                "study_images": n_study,
                "predicted_s": pred["total"],
                "target_s": round(target, 1),
                "prediction": pred,
            }
        )
        if pred["total"] <= target:
            return {**tried[-1], "fits": True, "tried": tried}
    for t in tried:
        p = t["prediction"]
        training = p["kernel_and_imports"] + p["render_images"] + p["train_table"]
        if training <= target:
            return {
                **t,
                "fits": False,
                "fallback": "no protocol fits: the longest table whose training fits, "
                "to be saved and scored by a resume",
                "tried": tried,
            }
    return {**tried[-1], "fits": False, "fallback": "nothing fits", "tried": tried}


def describe_protocol(p: dict, settings: dict) -> str:
    arith = "bf16 autocast" if settings["amp"] else "fp32 (TF32 convolutions)"
    graph = "CUDA graphs" if settings["cuda_graph"] else "eager"
    fits = "" if p.get("fits", True) else " (over its target: it may be stopped)"
    return (
        f"{p['name']}: table {p['table_steps']:,} steps x "
        f"{CH6_SEEDS * CH6_OBJECTIVES} models, capacity study "
        f"{p['study_steps']:,} steps x {CH6_STUDY_MODELS} models on "
        f"{p['study_images']:,} images, batch {CH6_BATCH}, {arith}, {graph}; "
        f"predicted {p.get('predicted_s', 0):.0f} s, target {p.get('target_s', 0):.0f} "
        f"s of a {settings['box_s']}-s box{fits}"
    )


# ------------------------------------------------------------------- preflight
def run_preflight(args, report: dict, quick: bool = False) -> dict:
    """The preflight in a subprocess of its own (a clean CUDA context for the
    chapter), stopped at 60 s (75 in the dry run). quick: the checks without the
    timings (a resumed run keeps its protocol)."""
    result = GPU / "preflight.json"
    result.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(TOOLS / "gpu_device.py"),
        "preflight",
        "--json",
        str(result),
        "--amp",
        args.amp,
        "--graph",
        args.graph,
    ] + (["--quick"] if quick else [])
    cap = int(PREFLIGHT_CAP_S * TIME_SCALE)
    try:
        rc = subprocess.run(cmd, timeout=cap).returncode
    except subprocess.TimeoutExpired:
        raise Failure(f"the preflight took over {cap} s; stopped", code=2) from None
    if not result.is_file():
        raise Failure(f"the preflight failed (exit status {rc}) before a result", 2)
    pre = json.loads(result.read_text(encoding="utf-8"))
    report["preflight"] = pre
    if rc != 0 or pre.get("status") != "ok":
        raise Failure(f"the preflight failed: {pre.get('error')}", code=2)
    return pre


def preflight_main(argv) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--amp", default="off")
    p.add_argument("--graph", default="off")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    rec: dict = {"status": "running", "quick": a.quick}
    t0 = time.monotonic()

    def save():
        rec["seconds"] = round(time.monotonic() - t0, 1)
        a.json.write_text(json.dumps(rec, indent=1, default=str), encoding="utf-8")

    try:
        preflight(rec, a, t0, save)
        rec["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - recorded and the call stops
        rec["status"] = "error"
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["traceback"] = traceback.format_exc()[-3000:]
        print(rec["traceback"], flush=True)
    save()
    return 0 if rec["status"] == "ok" else 1


def say(text: str) -> None:
    print(f"preflight: {text}", flush=True)


def preflight(rec: dict, a, t0: float, save) -> None:
    import platform

    import torch

    import betavae_lib

    cuda = torch.cuda.is_available()
    rec["python"] = platform.python_version()
    rec["torch"] = torch.__version__
    rec["cuda"] = torch.version.cuda
    rec["betavae_lib"] = str(Path(betavae_lib.__file__).parent)
    rec["cuda_available"] = cuda
    if cuda:
        props = torch.cuda.get_device_properties(0)
        rec["gpu"] = torch.cuda.get_device_name(0)
        rec["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        rec["capability"] = list(torch.cuda.get_device_capability(0))
        rec["cudnn"] = torch.backends.cudnn.version()
    elif not DRY:
        raise RuntimeError("CUDA is not visible to torch on this machine")
    else:
        rec["gpu"] = None
    device = torch.device("cuda" if cuda else "cpu")
    say(f"{rec.get('gpu') or 'CPU (dry run)'}, torch {torch.__version__}")
    save()

    t = time.monotonic()
    rec["kernel"] = kernel_check()
    rec["kernel_s"] = round(time.monotonic() - t, 1)
    say(
        f"a Jupyter kernel started and printed {rec['kernel']!r} in {rec['kernel_s']} s"
    )
    save()

    profile = os.environ.get("BETAVAE_PROFILE", "full")
    timings = {"kernel_s": rec["kernel_s"] + 5.0}
    rec["timings"] = timings
    if a.quick:
        return
    # one ensemble step of each shape, through the public API
    small = DRY or not cuda
    kinds = {"table": {}, "study": {}}
    if a.amp == "on":
        kinds["table_amp"] = dict(amp=True)
    if a.graph == "try" and cuda:
        kinds["table_graph"] = dict(graph=True)
    steps = {}
    for kind, options in kinds.items():
        shape = kind.split("_")[0]
        if time.monotonic() - t0 > PREFLIGHT_CAP_S - 15 and kind != shape:
            steps[kind] = {"skipped": "the preflight's 60 s were nearly spent"}
            continue
        try:
            steps[kind] = time_steps(device, small=small, shape=shape, **options)
        except Exception as e:  # noqa: BLE001
            if kind == "table":  # the chapter cannot train: stop the call here
                raise
            # the table can still train and be saved; the capacity study will likely
            # fail the same way, after the table's pieces are in $OUT
            steps[kind] = {"error": f"{type(e).__name__}: {e}"[:500]}
            rec.setdefault("warnings", []).append(f"{kind} step failed: {e}"[:500])
        say(f"{kind} step: {steps[kind]}")
        rec["steps"] = steps
        save()
    table = steps["table"]
    study = steps["study"] if "step_s" in steps["study"] else table  # as the table
    timings.update(
        table_step_s=table["step_s"],
        table_members=table["members"],
        table_batch=table["batch"],
        study_step_s=study["step_s"],
        study_members=study["members"],
        study_batch=study["batch"],
    )
    rec["eval"] = time_scoring(device, small=small, sizes=CH6_SCORING[profile])
    say(f"scoring: {rec['eval']}")
    timings.update(
        {k: rec["eval"][k] for k in ("table_model_s", "study_model_s")},
        render_s_per_image=rec["eval"]["render_s_per_image"],
    )
    rec["timings"] = timings
    save()


def kernel_check() -> str:
    """A Jupyter kernel starts here and runs the library: what it printed."""
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    code = (
        "import torch, betavae_lib\n"
        "print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
    )
    nb = new_notebook(cells=[new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    out = [o for o in nb.cells[0].outputs if o.get("output_type") == "stream"]
    text = "".join(o.get("text", "") for o in out).strip()
    if not text:
        raise RuntimeError(f"the kernel printed nothing: {nbformat.writes(nb)[:500]}")
    return text


def objectives_of(shape: str, steps: int) -> list:
    """Chapter 6's objectives for ``steps`` steps: the table's five, each for seeds
    0, 1, 2 (15), or the capacity study's seven (gamma x C_max, C raised over two
    thirds of the run, and C raised over the whole run at gamma 1000)."""
    from betavae_lib.objective import Objective
    from betavae_lib.schedules import Linear

    warm, ramp = max(1, steps // 4), max(1, 2 * steps // 3)
    if shape == "table":
        gamma = 1000.0 if steps >= 100_000 else 10.0
        five = [
            Objective(beta=Linear(1.0, warm)),
            Objective(beta=Linear(4.0, warm)),
            Objective(beta=Linear(10.0, warm)),
            Objective(capacity=Linear(25.0, ramp), gamma=gamma),
            Objective(tc=True, beta=Linear(6.0, warm)),
        ]
        return [o for o in five for _ in range(CH6_SEEDS)]
    return [
        Objective(capacity=Linear(float(c), ramp), gamma=float(g))
        for g in (10, 100, 1000)
        for c in (15, 25)
    ] + [Objective(capacity=Linear(25.0, steps), gamma=1000.0)]


def time_steps(
    device, *, small: bool, shape: str, amp: bool = False, graph: bool = False
) -> dict:
    """Seconds per optimiser step of chapter 6's ConvVAE ensemble of ``shape``: the
    table's 15 members or the capacity study's 7, at batch 64 (2 members at batch 8
    on the CPU), from two runs of ``fit_ensemble``: the difference of their training
    times over the difference of their steps, after a warm-up run."""
    import inspect

    import torch

    from betavae_lib import ConvVAE
    from betavae_lib.ensemble import fit_ensemble

    objs = objectives_of(shape, MENU[0])
    members = 2 if small else len(objs)
    batch = 8 if small else CH6_BATCH
    n1, n2 = (1, 3) if small else (10, 40)
    extra = {}
    if amp:
        if "amp" not in inspect.signature(fit_ensemble).parameters:
            return {"skipped": "fit_ensemble has no amp option in this library"}
        extra["amp"] = True
    if graph:
        extra["cuda_graph"] = True
    times, losses = {}, {}
    for n in (n1, n1, n2):  # the first run warms up (CUDA, cuDNN's autotuner)
        g = torch.Generator().manual_seed(n)
        images = torch.rand(n * batch, 1, 64, 64, generator=g) > 0.7
        models = {}
        for i in range(members):
            torch.manual_seed(i)
            models[i] = ConvVAE(latent_dim=10, image_size=64)
        result = fit_ensemble(
            models,
            images,
            objectives={i: objs[i] for i in range(members)},
            seeds={i: i % CH6_SEEDS for i in range(members)},
            epochs=1,
            batch_size=batch,
            lr=5e-4,
            device=device,
            progress=False,
            layout="grouped" if device.type == "cuda" else "auto",
            **extra,
        )
        times[n] = result.histories[0].seconds[-1]
        losses[n] = [h.train_loss[-1] for h in result.histories.values()]
    step = max(1e-6, (times[n2] - times[n1]) / (n2 - n1))
    if not all(math.isfinite(v) for v in losses[n2]):
        raise RuntimeError(f"non-finite losses in the timed {shape} ensemble")
    return {
        "step_s": round(step, 5),
        "members": members,
        "batch": batch,
        "steps_timed": [n1, n2],
        **{k: True for k in extra},
    }


def time_scoring(device, *, small: bool, sizes: dict) -> dict:
    """Seconds to score one model as chapter 6 does, and to render one dSprites image
    on the CPU (as the chapter renders its training and test images). A table model:
    its test codes encoded, MIG with its bootstrap, the FactorVAE score, the KL
    decomposition over all test codes and ``evaluate``; a study model: the same
    without the bootstrap and the FactorVAE score. Each is run smaller and scaled:
    the bootstrap by its resamples, the FactorVAE score by its images (1/50 of the
    votes, rendered on this device, 16,384 images a call), the KL decomposition by
    the square of the codes, encoding and ``evaluate`` by the images."""
    import numpy as np
    import torch

    from betavae_lib import ConvVAE, load_dataset
    from betavae_lib.metrics import (
        factor_vae_score,
        kl_decomposition,
        mig,
        mig_interval,
    )
    from betavae_lib.train import evaluate

    ds = load_dataset("dsprites")
    n = 1_024 if small else 8_192
    idx = np.random.default_rng(0).choice(len(ds), n, replace=False)
    factors = ds.index_to_factors(idx)
    t = time.perf_counter()
    images = ds.images(idx)
    render = (time.perf_counter() - t) / n

    torch.manual_seed(0)
    model = ConvVAE(latent_dim=10, image_size=64).to(device).eval()
    t = time.perf_counter()
    with torch.no_grad():
        codes = [
            model.encode(images[i : i + 1_000].to(device)) for i in range(0, n, 1_000)
        ]
    mu = torch.cat([c[0] for c in codes]).cpu() * 10.0  # spread: every latent counts
    logvar = torch.cat([c[1] for c in codes]).cpu()
    encode = (time.perf_counter() - t) / n

    t = time.perf_counter()
    mig(mu, factors)
    mig_s = time.perf_counter() - t
    boots = 4
    t = time.perf_counter()
    mig_interval(mu, factors, n_boot=boots, seed=0)
    boot_s = max(0.0, time.perf_counter() - t - mig_s) / boots

    m = min(n, 500 if small else 2_000)
    t = time.perf_counter()
    kl_decomposition(mu[:m], logvar[:m], seed=0)
    kl_s = (time.perf_counter() - t) * (sizes["n_eval"] / m) ** 2

    t = time.perf_counter()
    evaluate(model, images.to(device), seed=0)
    evaluate_s = (time.perf_counter() - t) / n

    train, evals, var = sizes["factor_vae"]
    small_sizes = dict(
        num_train=max(2, train // 50),
        num_eval=max(2, evals // 50),
        num_variance_estimate=max(64, var // 50),
    )

    def spread(x):  # an untrained model's codes, spread so every latent counts
        return model.encode(x)[0] * 10.0

    t = time.perf_counter()
    factor_vae_score(
        spread,
        ds.to(device),
        seed=0,
        batch_size=CH6_BATCH,
        images_per_call=16_384,
        **small_sizes,
    )
    fv = time.perf_counter() - t
    fv_images = CH6_BATCH * (small_sizes["num_train"] + small_sizes["num_eval"])
    fv_images += small_sizes["num_variance_estimate"]
    full_images = CH6_BATCH * (train + evals) + var

    n_eval = sizes["n_eval"]
    common = n_eval * (encode + evaluate_s) + mig_s * n_eval / n + kl_s
    table = common + sizes["n_boot"] * boot_s * n_eval / n
    table += fv * full_images / fv_images
    return {
        "render_s_per_image": round(render, 7),
        "encode_s_per_image": round(encode, 7),
        "evaluate_s_per_image": round(evaluate_s, 7),
        "mig_s": round(mig_s, 4),
        "mig_bootstrap_s_per_resample": round(boot_s, 4),
        "kl_decomposition_s": round(kl_s, 2),
        "factor_vae_s_small": round(fv, 2),
        "factor_vae_images": [fv_images, full_images],
        "table_model_s": round(table, 2),
        "study_model_s": round(common, 2),
        "model_device": str(device),
        "basis": "each part run smaller on this machine and scaled (bootstrap by "
        "resamples, FactorVAE by images, KL decomposition by codes squared, the rest "
        "by images); assumes the chapter scores with its models on this device and "
        "renders the FactorVAE images there",
    }


# ---------------------------------------------------------------- the chapters
def protocol_for(args, pre: dict | None, resumed: dict | None, profile: str) -> dict:
    """The chapter-6 protocol: the resumed run's (so that the cache keys match what
    was carried back), else the preflight's choice."""
    settings = {"amp": args.amp == "on", "cuda_graph": False, "box_s": args.box}
    if pre and args.graph == "try":
        g = pre.get("steps", {}).get("table_graph", {})
        settings["cuda_graph"] = (
            "step_s" in g and g["step_s"] < pre["timings"]["table_step_s"]
        )
    if resumed:
        chosen = {**resumed, "resumed": True}
        settings.update(
            {k: resumed[k] for k in settings if k in resumed and k != "box_s"}
        )
    else:
        # the dry run may aim lower than its deadline, so that a smaller protocol is
        # chosen and its path (--steps) runs; the deadline stays the box
        target = float(os.environ.get("BETAVAE_DRY_RUN_CHOICE_BOX", 0)) if DRY else 0
        chosen = choose_protocol(pre["timings"], profile, target or args.box)
    chosen.update(settings)
    chosen["profile"] = profile
    chosen["table_default_steps"] = table_steps(profile)
    chosen["summary"] = describe_protocol(chosen, chosen)
    return chosen


def chapter_env(protocol: dict | None, spec: Spec) -> dict:
    env = {}
    if not spec.cudnn_tf32:
        env["BETAVAE_CUDNN_TF32"] = "0"
    if protocol:
        if protocol["amp"]:
            env["BETAVAE_AMP"] = "bf16"
        if protocol["cuda_graph"]:
            env["BETAVAE_CUDA_GRAPH"] = "1"
        # for the chapter to say what was cut (its footnote), and for anyone reading
        env["BETAVAE_GPU_PROTOCOL"] = protocol["summary"]
    return env


STARTUP = '''"""Written by tools/gpu_device.py: run first by a GPU call's kernels."""
import os

if os.environ.get("BETAVAE_CUDNN_TF32") == "0":
    # cuDNN convolutions in full fp32, as the CPU's pytorch-fid computes Inception
    import torch

    torch.backends.cudnn.allow_tf32 = False
    print("cuDNN TF32 off (BETAVAE_CUDNN_TF32=0)")
'''


def write_startup() -> None:
    folder = GPU / "ipython" / "profile_default" / "startup"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "00-betavae-gpu.py").write_text(STARTUP, encoding="utf-8")


def run_chapters(args, spec: Spec, protocol: dict | None, watcher: Watcher) -> dict:
    """Execute the call's chapters (``execute_book.py``, stopped at the box); returns
    what ran and how."""
    shutil.rmtree(STAGING, ignore_errors=True)
    STAGING.mkdir(parents=True)
    write_startup()
    profile = os.environ["BETAVAE_PROFILE"]
    cmd = [sys.executable, str(TOOLS / "execute_book.py"), "--profile", profile]
    box = int(args.box * TIME_SCALE)
    cmd += ["--timeout", "0", "--deadline", str(box), "--out", str(STAGING)]
    cmd += ["--echo"] + (["--commit", args.commit] if args.commit else [])
    for chapter in spec.chapters:
        cmd += ["--only", chapter]
    if protocol:
        if protocol["table_steps"] != protocol["table_default_steps"]:
            cmd += ["--steps", str(protocol["table_steps"])]
        record = GPU / "protocol.json"
        record.write_text(json.dumps(protocol, indent=1), encoding="utf-8")
        cmd += ["--protocol", str(record)]
    env = {**os.environ, **chapter_env(protocol, spec)}
    print(f"running: {' '.join(cmd[1:])}", flush=True)
    watcher.start()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    hard = box + 20
    try:
        rc = proc.wait(timeout=hard)
    except subprocess.TimeoutExpired:
        print(
            f"the executor is still running {hard} s after its start: stopped",
            flush=True,
        )
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    watcher.finish()
    manifest = STAGING / "execution.json"
    entries = []
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        run_id = max((r["id"] for r in data.get("runs", [])), default=None)
        entries = [e for e in data["notebooks"] if e.get("run") == run_id]
    return {"rc": rc, "entries": entries, "env": chapter_env(protocol, spec)}


def observed_steps(protocol: dict, entries: list[dict]) -> dict:
    """The steps per model chapter 6 reports having trained (its headline
    ``steps_per_model``), against the protocol's."""
    seen = [
        (e.get("metrics") or {}).get("steps_per_model")
        for e in entries
        if Path(e["path"]).stem.startswith("06")
    ]
    seen = [s for s in seen if s is not None]
    notes = [
        f"chapter 6 trained {s:,} steps per model, not the protocol's "
        f"{protocol['table_steps']:,}"
        for s in seen
        if s != protocol["table_steps"]
    ]
    return {"table_steps": seen, "notes": notes}


def inception_check() -> dict:
    """16 images made by a formula through the joined Inception weights on this
    device, with cuDNN's TF32 off and on; features compared with the CPU's stored
    ones where the repository has them (tests/data/inception_reference.npz)."""
    import numpy as np
    import torch

    from betavae_lib import fid

    ok, why = fid.inception_available(WEIGHTS)
    if not ok:
        if DRY:
            return {"checked": False, "why": f"dry run: {why}"}
        raise Failure(f"Inception cannot run here: {why}", code=4)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = formula_images()
    out = {"checked": True, "device": str(device)}
    feats = {}
    for tf32 in (False, True):
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            t = time.perf_counter()
            extractor = fid.InceptionFeatures(weights=WEIGHTS, device=device)
            feats[tf32] = np.asarray(extractor(images), dtype=np.float64)
            out[f"seconds_tf32_{'on' if tf32 else 'off'}"] = round(
                time.perf_counter() - t, 2
            )
        finally:
            torch.backends.cudnn.allow_tf32 = old
    out["max_abs_diff_tf32_on_vs_off"] = float(np.abs(feats[True] - feats[False]).max())
    ref = ROOT / "tests" / "data" / "inception_reference.npz"
    if ref.is_file():
        cpu = np.load(ref)["features"].astype(np.float64)
        diff = float(np.abs(feats[False] - cpu).max())
        out["max_abs_diff_vs_cpu"] = diff
        out["matches_cpu"] = diff < 1e-3 * max(1.0, float(np.abs(cpu).max()))
        if not out["matches_cpu"]:
            raise Failure(f"Inception features differ from the CPU's by {diff:.3g}", 4)
    return out


def formula_images():
    """16 grey 28x28 images from a formula (no data needed): rings and stripes."""
    import torch

    y, x = torch.meshgrid(
        torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="ij"
    )
    out = []
    for k in range(16):
        r = torch.sqrt(x**2 + y**2)
        img = 0.5 + 0.5 * torch.sin((k + 2) * 3.0 * r + k * 0.4 * x)
        out.append(img.clamp(0, 1))
    return torch.stack(out).unsqueeze(1)


# ------------------------------------------------------------------------- main
def write_inception_reference(weights: Path, dest: Path) -> dict:
    """The CPU's Inception features of :func:`formula_images` (the reference the GPU
    check compares with): ``python tools/gpu_device.py inception-reference WEIGHTS``
    in the environment of the Inception tests (requirements-fid.txt)."""
    import platform

    import numpy as np
    import torch

    from betavae_lib import fid

    extractor = fid.InceptionFeatures(weights=weights, device="cpu")
    features = np.asarray(extractor(formula_images()), dtype=np.float32)
    about = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "weights_sha256": gb.sha256_of(Path(weights).read_bytes()),
        "images": "gpu_device.formula_images(): 16 grey 28x28 rings and stripes",
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dest, features=features, about=json.dumps(about))
    return about


def main(argv=None) -> int:
    if argv and argv[0] == "preflight":
        return preflight_main(argv[1:])
    if argv and argv[0] == "inception-reference":
        ref = ROOT / "tests" / "data" / "inception_reference.npz"
        print(write_inception_reference(Path(argv[1]), ref))
        return 0
    p = argparse.ArgumentParser(prog="gpu_bundle.py device")
    p.add_argument("call")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--commit")
    p.add_argument("--box", type=int, default=300)
    p.add_argument("--amp", choices=["off", "on"], default="off")
    p.add_argument("--graph", choices=["off", "try"], default="off")
    args = p.parse_args(argv)
    spec = spec_of(args.call)
    out = OutWriter(args.out)
    t0 = time.monotonic()
    report: dict = {
        "format": "betavae_lib.gpu_call/1",
        "call": args.call,
        "commit": args.commit,
        "dry_run": DRY,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "box_s": args.box,
        "steps": [],
        "status": "running",
    }
    watcher = Watcher(out, spec.pieces)

    def step(name: str, fn, *a):
        print(f"== {name}", flush=True)
        t = time.monotonic()
        try:
            value = fn(*a)
        finally:
            report["steps"].append(
                {"step": name, "seconds": round(time.monotonic() - t, 1)}
            )
        return value

    rc = 0
    try:
        os.environ.update(device_env(args.call, args.commit))
        sys.path[:0] = [str(SITE), str(ROOT)]  # this process too, after the install
        if DRY:
            print("DRY RUN (BETAVAE_DRY_RUN=1): a CPU, the smoke profile", flush=True)
        report["machine"] = machine()
        if spec.stack or (ROOT / gb.WHEEL_DIR).is_dir():
            report["install"] = step("install the Jupyter stack", install)
        report["inception_parts"] = step("Inception parts", stage_and_join)
        if spec.inception_check and not report["inception_parts"]["joined"]:
            raise Failure(
                "the Inception weights are not complete on this machine: "
                f"{report['inception_parts'].get('missing')} (was the machine lost "
                "between the calls?)",
                code=3,
            )
        resume = step("resume", extract_resume) if spec.pieces else {"carried": False}
        report["resume"] = resume
        before = snapshot()
        protocol = None
        if spec.preflight:
            profile = os.environ["BETAVAE_PROFILE"]
            resumed = resume.get("protocol") if resume.get("carried") else None
            if resumed and resumed.get("profile") != profile:
                print(f"the resumed protocol is for {resumed.get('profile')}: not used")
                resumed = None
            pre = step("preflight", run_preflight, args, report, bool(resumed))
            report["gpu"] = pre.get("gpu")
            protocol = protocol_for(args, pre, resumed, profile)
            report["protocol"] = protocol
            print(f"protocol: {protocol['summary']}", flush=True)
        out.json(spec.report, report)
        if spec.needs_inception:
            if not WEIGHTS.is_file():
                raise Failure(
                    "the Inception weights are not on this machine (gpu-inception "
                    "must run just before this call, on the same machine)",
                    code=3,
                )
            from_lib = step("Inception available", inception_ready)
            report["inception"] = from_lib
        if spec.inception_check:
            report["inception"] = step("Inception check", inception_check)
        if spec.chapters:
            result = step("chapters", run_chapters, args, spec, protocol, watcher)
            report["chapters_run"] = [e["path"] for e in result["entries"]]
            report["chapters"] = [
                {
                    k: e.get(k)
                    for k in (
                        "path",
                        "status",
                        "error",
                        "wall_s",
                        "device",
                        "device_kind",
                        "steps",
                        "warnings",
                    )
                }
                for e in result["entries"]
            ]
            report["chapter_env"] = result["env"]
            report["executor_rc"] = result["rc"]
            if protocol:
                report["observed"] = observed_steps(protocol, result["entries"])
                for note in report["observed"]["notes"]:
                    print(f"warning: {note}", flush=True)
            if resume.get("carried"):
                after = snapshot()
                new = [f for f in after if f not in before]
                rewritten = [f for f in before if f in after and after[f] != before[f]]
                resume["trained_now"] = len(new) + len(rewritten)
                resume["retrained"] = len(rewritten)
                resume["models_after"] = sum(f.endswith(".pt") for f in after)
            failed = [e["path"] for e in result["entries"] if e["status"] != "ok"]
            if result["rc"] != 0 or failed or not result["entries"]:
                errors = "; ".join(
                    f"{e['path']}: {e['error']}"
                    for e in result["entries"]
                    if e["error"]
                )
                raise Failure(
                    f"the chapters did not all run (executor exit {result['rc']}"
                    + (f"; {errors}" if errors else "")
                    + ")"
                )
        report["status"] = "ok"
    except Failure as e:
        report["status"], report["error"] = "error", str(e)
        rc = e.code
    except Exception as e:  # noqa: BLE001 - reported, and the call fails
        report["status"], report["error"] = "error", f"{type(e).__name__}: {e}"
        print(traceback.format_exc(), flush=True)
        rc = 1
    finally:
        if watcher.thread.is_alive():
            watcher.finish()
        report["wall_s"] = round(time.monotonic() - t0, 1)
        report["out_files"] = sorted(p.name for p in args.out.glob("*") if p.is_file())
        if watcher.notes:
            report["notes"] = watcher.notes
        try:
            out.json(spec.report, report)
        except Exception as e:  # noqa: BLE001
            print(f"could not write {spec.report}: {e}", flush=True)
            rc = rc or 1
    summary = f"RESULT {args.call}: " + (
        "ok" if rc == 0 else f"FAILED (exit {rc}): {report.get('error')}"
    )
    if report.get("protocol"):
        summary += f" | {report['protocol']['summary']}"
    summary += f" | {report['wall_s']} s"
    print(summary, flush=True)
    return rc


def inception_ready() -> dict:
    from betavae_lib import fid

    ok, why = fid.inception_available(WEIGHTS)
    if not ok and not DRY:
        raise Failure(f"Inception cannot run here: {why}", code=4)
    return {"available": ok, "why": why}


def machine() -> dict:
    import platform

    return {
        "python": platform.python_version(),
        "host_cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

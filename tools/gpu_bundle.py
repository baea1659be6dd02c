"""The GPU run as one prepared shot: the calls, what they carry, and a CPU dry run.

A GPU machine is lent, when it is lent at all, for 15 minutes of device time in all
(its start, 1-2 min, and every idle second count), at most 10 minutes per command, a
command line of at most 2,000 characters, at most 64 MiB of working tree per call
(tracked files plus at most 8 named ignored paths), at most 8 files of at most 16 MiB
coming back from ``$OUT`` (64 MiB together, at most 2 folders deep), no network, and a
Python 3.12 with torch but without the Jupyter stack, jupytext, sphinx or docutils. The
machine goes back 30 s after a call returns. This script is the one source of truth for
what runs there:

    python tools/gpu_bundle.py prepare           # here: .whl, data/, Inception parts
    python tools/gpu_bundle.py plan [--json]     # here: the calls, checked and timed
    python tools/gpu_bundle.py dry-run           # here, on the CPU: every call, run
    python tools/gpu_bundle.py collect DIR       # here: what a call returned

``plan`` prints the calls in order: each one's command string, carried paths with their
sizes, the seconds it is given (``timeout_s``) and its estimated device minutes, and the
total with the machine's start. Run them back to back with the device tool (a gap over
30 s loses the machine and what earlier calls left on it), fetch each call's files, and
``collect`` them. The default set holds what has never run at full size: chapter 6 and
chapter 5's Inception FID. ``--set chapters-1-4`` is the second, optional plan.

On the machine every call runs ``python3 tools/gpu_bundle.py device NAME ...`` (see
``tools/gpu_device.py``) under ``set -o pipefail``, with its log written to ``$OUT`` as
it goes and each finished piece copied there when it is done. ``dry-run`` runs exactly
those command strings on the CPU (``tools/gpu_dryrun.py``) in a scratch tree that holds
what the machine would receive, with the packages the machine lacks blocked, at the
smoke profile, and exits non-zero if any call fails or breaks a limit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20

# ---------------------------------------------------------------- the machine's limits
# From the device tool's README (/work/.library/device/README.md) and issue 24.
TREE_LIMIT = 64 * MIB  # working tree + carried paths, per call
HEADROOM = 4 * MIB  # kept free in every call, for the tree to grow between plan and run
MAX_CARRY = 8  # named ignored paths per call
MAX_COMMAND = 2000  # characters of one command line
MAX_CALL_S = 600  # one command's run
OUT_MAX_FILES = 8
OUT_FILE_MAX = 16 * MIB
OUT_TOTAL_MAX = 64 * MIB
OUT_MAX_DEPTH = 2  # $OUT/a/b/file comes back, $OUT/a/b/c/file does not
OUT_NAME = re.compile(r"[A-Za-z0-9._-]+")
DEVICE_BUDGET_S = 900  # 15 minutes of device time per task, all calls together
PLAN_BUDGET_S = 840  # what a plan may use: 14 minutes, one minute kept in reserve

# --------------------------------------------------------------------- the time model
# Seconds of device time, each an ESTIMATE: nothing here was measured on a GPU (none has
# been lent to this project yet). The basis of each is given; the first call measures
# the chapter's own speed (``device gpu-ch6`` preflight) and sizes chapter 6 to its box.
TIME_MODEL = {
    "start_s": (90, "a machine's start takes 1-2 minutes (device README)"),
    "transfer_s": (
        15,
        "sending up to 60 MiB and fetching up to 40 MiB per call; unmeasured",
    ),
    "gap_s": (
        15,
        "the time between a call's reply and the next call; must stay under the "
        "30-s idle release",
    ),
    "give_back_s": (5, "give_back right after the last call"),
    "install_s": (5, "unzipping 35 wheels (3 s in the readiness audit, Python 3.12)"),
    "preflight_s": (60, "capped: the preflight stops itself at 60 s"),
    "pack_s": (15, "the last copies and archives into $OUT"),
    "inception_s": (
        30,
        "stage and join 84 MiB of Inception weights with SHA-256 checks, then 16 "
        "images through Inception twice (audit: ~0.5 min)",
    ),
    "ch5_s": (
        180,
        "audit section 2.3: chapter 5 on an H100, 3 MLP ensembles x 14,070 steps "
        "(~1 min, launch-bound), Inception on 44,000 images (~0.5 min), the rest "
        "(~1 min)",
    ),
    "ch1_4_s": (
        240,
        "audit section 1: 3-5 min per pair of chapters 1-2 and 3-4 on an H100",
    ),
}
CH5_BOX_S = 270  # chapter 5 is stopped after this (its estimate is 180 s)
CH6_BOX_MIN_S = 240  # below this chapter 6 cannot fit even its smallest protocol

# ------------------------------------------------------------------- what is carried
WHEEL_DIR = ".whl"
DATA_DIR = "data"
GPU_DIR = ".gpu"
PARTS_DIR = f"{GPU_DIR}/inception"
RESUME_DIR = f"{GPU_DIR}/resume"
WEIGHTS_NAME = "pt_inception-2015-12-05-fc-zeroed.pth"
DATASETS = {"MNIST": "MNIST/raw", "FashionMNIST": "FashionMNIST/raw"}
STAND_IN = "STAND-IN"  # marks a .whl of empty stand-ins (dry run without downloads)

# Sizes of what ``prepare`` makes, used by ``plan`` where it has not been made here
# (labelled as such): measured by the readiness audit (reviews/gpu-readiness.md).
EXPECTED_MIB = {
    WHEEL_DIR: 6.1,
    f"{DATA_DIR}/MNIST": 11.1,
    f"{DATA_DIR}/FashionMNIST": 29.5,
    "inception": 83.3,  # the weights without their all-zero fc layer
}

# The Jupyter stack, pinned as in requirements.txt, with the dependencies these
# versions need at run time (the closure of their requirements for Python 3.12 on
# Linux, less what the GPU machine has: numpy, scipy, pillow, packaging, dateutil, six,
# typing_extensions, ..., and less jedi/parso, debugpy, widgetsnbextension and
# jupyterlab_widgets, which IPython and ipykernel import only if present).
WHEELS = {
    "anywidget": "0.11.0",  # the chapters' latent explorer (betavae_lib.explorer)
    "asttokens": "3.0.1",
    "attrs": "26.1.0",
    "backcall": "0.2.0",
    "comm": "0.2.3",
    "decorator": "5.2.1",
    "executing": "2.2.1",
    "fastjsonschema": "2.22.3",
    "ipykernel": "7.4.0",
    "ipython": "8.12.3",
    "ipywidgets": "8.1.9",
    "jsonschema": "4.26.0",
    "jsonschema-specifications": "2025.9.1",
    "jupyter-client": "8.10.0",
    "jupyter-core": "5.9.1",
    "matplotlib-inline": "0.2.2",
    "nbclient": "0.11.0",
    "nbformat": "5.11.1",
    "nest-asyncio2": "1.7.4",
    "pexpect": "4.8.0",
    "pickleshare": "0.7.5",
    "platformdirs": "4.14.7",
    "prompt-toolkit": "3.0.52",
    "psygnal": "0.16.1",  # anywidget's
    "ptyprocess": "0.7.0",
    "pure-eval": "0.2.3",
    "pygments": "2.20.0",
    "pytorch-fid": "0.3.0",
    "pyyaml": "6.0.3",
    "pyzmq": "27.3.0",
    "referencing": "0.37.0",
    "rpds-py": "0.30.0",
    "stack-data": "0.6.3",
    "tornado": "6.6.1",
    "tqdm": "4.70.1",
    "traitlets": "5.15.0",
    "wcwidth": "0.7.0",
}
PIP_PLATFORM = [
    "--only-binary=:all:",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--platform",
    "manylinux_2_28_x86_64",
    "--platform",
    "manylinux_2_17_x86_64",
    "--platform",
    "manylinux2014_x86_64",
]


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(filename: str) -> str:
    """The normalized distribution name of a wheel file."""
    return normalize(filename.split("-")[0])


# ------------------------------------------------------------------------- the calls
@dataclass
class Carry:
    path: str
    bytes: int
    estimated: bool = False  # not prepared here: the expected size is used
    optional: bool = False  # carried only while the call keeps its headroom

    @property
    def mib(self) -> float:
        return self.bytes / MIB


@dataclass
class Call:
    """One command on the GPU machine."""

    name: str
    purpose: str
    carry: list[Carry]
    command: str
    timeout_s: int
    est_s: float
    out_files: list[str]  # what $OUT holds when the call ends well
    needs: list[str] = field(default_factory=list)  # state left by earlier calls
    box_s: int | None = None  # the seconds its chapters may run

    def carried_bytes(self) -> int:
        return sum(c.bytes for c in self.carry)


def est(key: str) -> float:
    return TIME_MODEL[key][0]


def device_command(name: str, *args: str) -> str:
    """The command line of call ``name``: the device side of this script, its output
    through ``tee`` into ``$OUT`` from the first second, under ``set -o pipefail`` so
    that the call's exit status is the launcher's."""
    quoted = " ".join(shlex.quote(a) for a in args)
    return (
        'set -o pipefail; mkdir -p "$OUT"; export PYTHONUNBUFFERED=1; '
        f'python3 tools/gpu_bundle.py device {name} {quoted} --out "$OUT" 2>&1 '
        f'| tee "$OUT/{name}.log"'
    )


@dataclass
class Settings:
    """What a plan is made with (``plan``'s options)."""

    set: str = "essential"
    budget_s: int = PLAN_BUDGET_S
    warm: bool = False  # a machine is held already: no start
    commit: str | None = None
    amp: str = "off"  # chapter 6: bf16 autocast in the ensembles (off, on)
    graph: str = "off"  # chapter 6: CUDA graphs (off, try: on if the preflight passes)
    start_at: str | None = None  # plan from this call on (the earlier ones are done)


class LocalState:
    """What ``prepare`` and ``collect`` left here: sizes of the carried paths (or their
    expected sizes), the Inception parts, and what a resume carries."""

    def __init__(self, root: Path = ROOT):
        self.root = root
        self.tree = working_tree_bytes(root)

    def carry(self, path: str, optional: bool = False) -> Carry:
        size = tree_size(self.root / path)
        if size:
            if path == WHEEL_DIR and (self.root / WHEEL_DIR / STAND_IN).is_file():
                return Carry(path, int(EXPECTED_MIB[path] * MIB), True, optional)
            return Carry(path, size, False, optional)
        return Carry(path, int(EXPECTED_MIB.get(path, 0) * MIB), True, optional)

    def inception_parts(self) -> list[Carry]:
        found = sorted(
            (p for p in (self.root / PARTS_DIR).glob("part-*") if p.is_dir()),
            key=lambda p: int(p.name.split("-")[1]),
        )
        if found:
            return [Carry(f"{PARTS_DIR}/{p.name}", tree_size(p)) for p in found]
        # not prepared here: the split prepare would make for this tree
        total = int(EXPECTED_MIB["inception"] * MIB)
        first = self.part_room(total)
        return [
            Carry(f"{PARTS_DIR}/part-1", min(first, total), True),
            Carry(f"{PARTS_DIR}/part-2", max(0, total - first), True),
        ]

    def part_room(self, total: int | None = None) -> int:
        """Bytes of Inception part 1 (of ``total``, default the expected size): the two
        calls that carry the parts (chapter 6's with the wheels, then the join) keep
        the same headroom (256 KiB of each part is left for its index.json)."""
        total = total or int(EXPECTED_MIB["inception"] * MIB)
        index = 256 * 1024
        wheels = self.carry(WHEEL_DIR).bytes
        room1 = TREE_LIMIT - self.tree - wheels - self.resume_bytes() - index
        room2 = TREE_LIMIT - self.tree - index
        spare = room1 + room2 - total
        return max(1, min(total, room1 - spare // 2))

    def resume_bytes(self) -> int:
        return sum(c.bytes for c in self.resume()[0])

    def resume(self) -> tuple[list[Carry], list[Carry]]:
        """(carried, left): what chapter 6's call carries back in from a collected
        run, its protocol (plan.json) and its model archives in order (the first
        hold the models trained first, the table's), as long as the call keeps its
        headroom beside the wheels; the models of an archive left out are trained
        again."""
        folder = self.root / RESUME_DIR
        tars = sorted(
            folder.glob("ch6-models-*.tar"),
            key=lambda p: int(p.stem.rsplit("-", 1)[1]),
        )
        plan = folder / "plan.json"
        carried = []
        if plan.is_file():
            carried.append(Carry(f"{RESUME_DIR}/plan.json", tree_size(plan)))
        room = TREE_LIMIT - HEADROOM - self.tree - self.carry(WHEEL_DIR).bytes
        room -= sum(c.bytes for c in carried)
        left: list[Carry] = []
        for tar in tars:
            piece = Carry(f"{RESUME_DIR}/{tar.name}", tree_size(tar))
            if not left and piece.bytes <= room:
                carried.append(piece)
                room -= piece.bytes
            else:
                left.append(piece)
        return carried, left

    def done(self) -> set[str]:
        """Calls whose chapters a collected run finished (``collect``)."""
        path = self.root / RESUME_DIR / "done.json"
        if not path.is_file():
            return set()
        return set(json.loads(path.read_text(encoding="utf-8")).get("calls", []))


def ch6_box(settings: Settings, others_s: float) -> int:
    """Chapter 6's box: the seconds the budget leaves after everything else."""
    return int(settings.budget_s - others_s)


def essential_calls(state: LocalState, settings: Settings) -> list[Call]:
    """Chapter 6 with a preflight, the Inception weights, chapter 5: in that order."""
    commit = ["--commit", settings.commit] if settings.commit else []
    wheels = state.carry(WHEEL_DIR)
    data = [state.carry(f"{DATA_DIR}/{name}") for name in DATASETS]
    parts = state.inception_parts()
    resume, _ = state.resume()
    done = state.done()

    ch6_carry = [wheels] + resume
    calls_before_join: list[Call] = []
    # Inception parts: each in the first call with room for it, the last one in the
    # call that joins them; a part with no room elsewhere gets a call of its own.
    join_parts = [parts[-1]]
    staged: list[Carry] = []
    for part in parts[:-1]:
        used = state.tree + sum(c.bytes for c in ch6_carry) + part.bytes
        if "gpu-ch6" not in done and used <= TREE_LIMIT - HEADROOM:
            ch6_carry.append(part)
        else:
            staged.append(part)

    calls: list[Call] = []
    if "gpu-ch6" not in done:
        calls.append(
            Call(
                "gpu-ch6",
                "install the Jupyter stack; preflight (CUDA, a kernel, one step of "
                "the table's 15-model and the capacity study's 7-model ensemble "
                "timed) chooses chapter 6's steps for its box; chapter 6 at the full "
                "profile, its 22 trained models copied to $OUT as they are finished; "
                "Inception part 1 staged",
                ch6_carry,
                "",  # made below, once the box is known
                0,
                0.0,
                [
                    "gpu-ch6.log",
                    "plan.json",
                    "execution.json",
                    "06_disentanglement.ipynb",
                    "ch6-models-1.tar",
                    "ch6-models-2.tar",
                    "ch6-models-3.tar",
                ],
                box_s=0,
            )
        )
    for i, part in enumerate(staged, 1):
        calls.append(
            Call(
                f"gpu-stage-{i}",
                f"stage Inception {Path(part.path).name} for the join",
                [part],
                device_command(f"gpu-stage-{i}", *commit),
                60,
                est("transfer_s") + 5,
                [f"gpu-stage-{i}.log", "stage.json"],
            )
        )
        calls_before_join.append(calls[-1])
    if "gpu-inception" not in done:
        calls.append(
            Call(
                "gpu-inception",
                "join the Inception weights (SHA-256 checked) from the staged parts "
                "and this call's; 16 formula images through Inception on the GPU "
                "with TF32 off and on",
                join_parts,
                device_command("gpu-inception", *commit),
                120,
                est("transfer_s") + est("inception_s"),
                ["gpu-inception.log", "inception.json"],
                needs=["Inception parts staged by the earlier calls"],
            )
        )
    if "gpu-ch5" not in done:
        room = TREE_LIMIT - HEADROOM - state.tree - sum(c.bytes for c in data)
        extra = [Carry(wheels.path, wheels.bytes, wheels.estimated, True)]
        extra = extra if wheels.bytes <= room else []
        calls.append(
            Call(
                "gpu-ch5",
                "chapter 5 at the full profile with Inception FID (TF32 off for "
                "cuDNN, as the CPU's pytorch-fid computes it)",
                data + extra,
                device_command("gpu-ch5", *commit, "--box", str(CH5_BOX_S)),
                CH5_BOX_S + 60,
                est("transfer_s") + est("ch5_s") + (est("install_s") if extra else 0),
                ["gpu-ch5.log", "plan.json", "execution.json", "05_fid.ipynb"],
                needs=["the Inception weights joined by gpu-inception"]
                + ([] if extra else ["the wheels installed by gpu-ch6"]),
                box_s=CH5_BOX_S,
            )
        )
    calls = start_at(calls, settings.start_at)
    # chapter 6's box: what the budget leaves after everything else
    ch6 = next((c for c in calls if c.name == "gpu-ch6"), None)
    if ch6 is not None:
        fixed = (
            est("transfer_s") + est("install_s") + est("preflight_s") + est("pack_s")
        )
        others = overhead_s(calls, settings) + sum(
            c.est_s for c in calls if c is not ch6
        )
        margin = 45  # the launcher's own cap is the box + 30 s, then the last copies
        box = min(
            ch6_box(settings, others + fixed),
            MAX_CALL_S - int(est("install_s") + est("preflight_s")) - margin,
        )
        ch6.box_s = box
        ch6.est_s = fixed + box
        ch6.timeout_s = int(est("install_s") + est("preflight_s") + box + margin)
        ch6.command = device_command(
            "gpu-ch6",
            *commit,
            "--box",
            str(box),
            "--amp",
            settings.amp,
            "--graph",
            settings.graph,
        )
    return calls


def chapters_1_4_calls(state: LocalState, settings: Settings) -> list[Call]:
    """The optional second plan: chapters 1-4 again on a GPU (they ran at the full
    profile on a CPU), in two calls."""
    commit = ["--commit", settings.commit] if settings.commit else []
    wheels = state.carry(WHEEL_DIR)
    mnist = state.carry(f"{DATA_DIR}/MNIST")
    fashion = state.carry(f"{DATA_DIR}/FashionMNIST")
    calls = [
        Call(
            "gpu-ch1-2",
            "install the Jupyter stack; chapters 1 and 2 at the full profile",
            [wheels, mnist],
            "",
            0,
            0.0,
            ["gpu-ch1-2.log", "plan.json", "execution.json"]
            + ["01_first_vae.ipynb", "02_elbo.ipynb"],
        ),
        Call(
            "gpu-ch3-4",
            "chapters 3 and 4 at the full profile",
            [mnist, fashion],
            "",
            0,
            0.0,
            ["gpu-ch3-4.log", "plan.json", "execution.json"]
            + ["03_beta_tradeoff.ipynb", "04_posterior_collapse.ipynb"],
            needs=["the wheels installed by gpu-ch1-2"],
        ),
    ]
    room = TREE_LIMIT - HEADROOM - state.tree - mnist.bytes - fashion.bytes
    if wheels.bytes <= room:
        calls[1].carry.append(Carry(wheels.path, wheels.bytes, wheels.estimated, True))
        calls[1].needs = []
    calls = start_at(calls, settings.start_at)
    per_call = est("transfer_s") + est("install_s") + est("pack_s")
    spare = settings.budget_s - overhead_s(calls, settings) - per_call * len(calls)
    box = int(min(spare / max(1, len(calls)), MAX_CALL_S - 60))
    for c in calls:
        c.box_s = box
        c.est_s = per_call + box
        c.timeout_s = box + 45
        c.command = device_command(c.name, *commit, "--box", str(box))
    return calls


def start_at(calls: list[Call], name: str | None) -> list[Call]:
    if name is None:
        return calls
    names = [c.name for c in calls]
    if name not in names:
        raise SystemExit(f"--start-at {name!r}: the plan's calls are {names}")
    return calls[names.index(name) :]


def overhead_s(calls: list[Call], settings: Settings) -> float:
    """Device time outside the calls: the start, the gaps between calls, give_back."""
    start = 0 if settings.warm else est("start_s")
    return start + est("gap_s") * max(0, len(calls) - 1) + est("give_back_s")


PLANS = {"essential": essential_calls, "chapters-1-4": chapters_1_4_calls}


def make_plan(root: Path = ROOT, settings: Settings | None = None) -> dict:
    """The plan as a dict (``plan --json``): calls, sizes, times, problems."""
    settings = settings or Settings()
    if settings.commit is None:
        settings.commit = head_commit(root)
    state = LocalState(root)
    calls = PLANS[settings.set](state, settings)
    problems, warnings = check_calls(calls, state.tree)
    total = overhead_s(calls, settings) + sum(c.est_s for c in calls)
    if total > settings.budget_s + 1e-6:
        problems.append(
            f"the plan needs {total / 60:.1f} estimated device minutes, over the "
            f"{settings.budget_s / 60:.0f} it may use"
        )
    ch6 = next((c for c in calls if c.name == "gpu-ch6"), None)
    if ch6 is not None and ch6.box_s < CH6_BOX_MIN_S:
        problems.append(
            f"gpu-ch6 would get a box of {ch6.box_s} s, under the {CH6_BOX_MIN_S} s "
            "its smallest protocol needs; plan chapter 6 alone (--start-at) or on a "
            "fresh budget"
        )
    left = state.resume()[1] if ch6 is not None else []
    if left:
        names = ", ".join(Path(c.path).name for c in left)
        warnings.append(
            f"gpu-ch6 has no room for {names} ({sum(c.bytes for c in left) / MIB:.1f} "
            "MiB): the models in it are trained again"
        )
    if dirty(root):
        warnings.append(
            "the working tree has uncommitted changes: the machine runs them, and the "
            f"manifest will name commit {settings.commit}"
        )
    return {
        "format": "betavae_lib.gpu_plan/1",
        "set": settings.set,
        "commit": settings.commit,
        "settings": asdict(settings),
        "tree_mib": round(state.tree / MIB, 2),
        "limits": {
            "tree_and_carry_mib": TREE_LIMIT // MIB,
            "headroom_mib": HEADROOM // MIB,
            "carried_paths": MAX_CARRY,
            "command_chars": MAX_COMMAND,
            "call_s": MAX_CALL_S,
            "out_files": OUT_MAX_FILES,
            "out_file_mib": OUT_FILE_MAX // MIB,
            "out_total_mib": OUT_TOTAL_MAX // MIB,
            "device_budget_s": DEVICE_BUDGET_S,
            "plan_budget_s": settings.budget_s,
        },
        "time_model": {
            k: {"seconds": v, "basis": b, "estimate": True}
            for k, (v, b) in TIME_MODEL.items()
        },
        "calls": [call_record(c, state.tree) for c in calls],
        "start_s": 0 if settings.warm else est("start_s"),
        "gaps_s": est("gap_s") * max(0, len(calls) - 1),
        "give_back_s": est("give_back_s"),
        "total_est_s": round(total),
        "total_est_min": round(total / 60, 1),
        "problems": problems,
        "warnings": warnings,
    }


def call_record(c: Call, tree: int) -> dict:
    total = tree + c.carried_bytes()
    return {
        "name": c.name,
        "purpose": c.purpose,
        "command": c.command,
        "chars": len(c.command),
        "carry": [
            {
                "path": x.path,
                "mib": round(x.mib, 2),
                "estimated": x.estimated,
                "optional": x.optional,
            }
            for x in c.carry
        ],
        "mib": round(total / MIB, 2),
        "headroom_mib": round((TREE_LIMIT - total) / MIB, 2),
        "timeout_s": c.timeout_s,
        "box_s": c.box_s,
        "est_s": round(c.est_s),
        "est_min": round(c.est_s / 60, 2),
        "out_files": c.out_files,
        "needs": c.needs,
    }


def check_calls(calls: list[Call], tree: int) -> tuple[list[str], list[str]]:
    """Problems (a limit broken) and warnings (headroom, sizes not measured here)."""
    problems, warnings = [], []
    for c in calls:
        total = tree + c.carried_bytes()
        if total > TREE_LIMIT:
            problems.append(
                f"{c.name}: {total / MIB:.1f} MiB > {TREE_LIMIT // MIB} MiB (working "
                f"tree {tree / MIB:.1f} MiB + carried paths)"
            )
        elif total > TREE_LIMIT - HEADROOM:
            warnings.append(
                f"{c.name}: {(TREE_LIMIT - total) / MIB:.1f} MiB of headroom, under "
                f"the {HEADROOM // MIB} MiB kept for the tree to grow"
            )
        if len(c.carry) > MAX_CARRY:
            problems.append(f"{c.name}: {len(c.carry)} carried paths > {MAX_CARRY}")
        if len(c.command) > MAX_COMMAND:
            problems.append(
                f"{c.name}: its command is {len(c.command)} characters > {MAX_COMMAND}"
            )
        if not 0 < c.timeout_s <= MAX_CALL_S:
            problems.append(f"{c.name}: timeout {c.timeout_s} s not in 1..{MAX_CALL_S}")
        if len(c.out_files) > OUT_MAX_FILES - 1:  # one place kept for a temporary
            problems.append(f"{c.name}: {len(c.out_files)} files planned in $OUT")
        bad = [n for n in c.out_files if not OUT_NAME.fullmatch(n)]
        if bad:
            problems.append(f"{c.name}: names $OUT cannot return: {bad}")
        missing = [x.path for x in c.carry if x.bytes == 0]
        if missing:
            problems.append(f"{c.name}: {', '.join(missing)} missing; run prepare")
        guessed = [x.path for x in c.carry if x.estimated]
        if guessed:
            warnings.append(
                f"{c.name}: {', '.join(guessed)} not prepared here; its expected size "
                "is used (run prepare)"
            )
    return problems, warnings


def print_plan(plan: dict) -> None:
    print(
        f"GPU plan '{plan['set']}' at commit {plan['commit']}: "
        f"{len(plan['calls'])} call(s); working tree {plan['tree_mib']:.1f} MiB "
        "(copied by every call)"
    )
    print(
        "All times are ESTIMATES (no GPU has been lent to this project yet); see "
        "--json for the basis of each."
    )
    for c in plan["calls"]:
        carried = ", ".join(
            f"{x['path']} {x['mib']:.1f} MiB"
            + (" (expected size)" if x["estimated"] else "")
            + (" (optional)" if x["optional"] else "")
            for x in c["carry"]
        )
        box = f", chapter box {c['box_s']} s" if c["box_s"] else ""
        print(
            f"\n[{c['name']}] {c['purpose']}\n"
            f"  carry: {carried}\n"
            f"  size: {c['mib']:.1f} of 64 MiB ({c['headroom_mib']:.1f} MiB free); "
            f"command {c['chars']} of {MAX_COMMAND} characters\n"
            f"  timeout_s: {c['timeout_s']}{box}; estimated {c['est_min']:.1f} min\n"
            f"  $OUT: {', '.join(c['out_files'])}"
        )
        if c["needs"]:
            print(f"  needs: {'; '.join(c['needs'])} (run the calls back to back)")
        print(f"  command: {c['command']}")
    print(
        f"\ntotal: {plan['total_est_min']:.1f} estimated device minutes (start "
        f"{plan['start_s'] / 60:.1f}, gaps {plan['gaps_s'] / 60:.1f}, give_back "
        f"{plan['give_back_s'] / 60:.1f}) of {plan['limits']['plan_budget_s'] / 60:.0f}"
    )
    for w in plan["warnings"]:
        print(f"warning: {w}")
    for p in plan["problems"]:
        print(f"PROBLEM: {p}")


# ------------------------------------------------------------------ sizes and git
def tree_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 if absent)."""
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_files(root: Path = ROOT) -> list[str]:
    """The files every call copies: tracked and untracked, not ignored (as the device
    tool sends them); a copy without ``.git`` (the dry run's) lists its files."""
    if not (root / ".git").exists():
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not is_ignored_here(p.relative_to(root))
        )
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    return [n for n in out.decode().split("\0") if n and (root / n).is_file()]


def is_ignored_here(rel: Path) -> bool:
    """Paths a copy without .git treats as ignored (this repository's .gitignore)."""
    first = rel.parts[0]
    return first in (GPU_DIR, WHEEL_DIR, DATA_DIR, "_build", ".git") or any(
        part in ("__pycache__", ".ipynb_checkpoints", ".pytest_cache")
        for part in rel.parts
    )


def working_tree_bytes(root: Path = ROOT) -> int:
    return sum(tree_size(root / n) for n in tree_files(root))


def git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def head_commit(root: Path = ROOT) -> str | None:
    return git(root, "rev-parse", "HEAD") or os.environ.get("BETAVAE_GIT_COMMIT")


def dirty(root: Path = ROOT) -> bool:
    status = git(root, "status", "--porcelain", "-uno")
    return bool(status)


# ------------------------------------------------------------------ Inception parts
def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_state_dict(state: dict, part_bytes) -> tuple[dict, list[bytes]]:
    """A state dict -> (index, parts): every tensor's raw bytes, the fc layer dropped
    (it must be all zeros), concatenated and cut into parts. ``part_bytes``: the size
    of every part, or a list of the sizes of all parts but the last.
    The index records names, dtypes, shapes and offsets, and SHA-256 sums."""
    import torch

    entries, chunks, offset = [], [], 0
    dropped = {}
    for name, tensor in state.items():
        if name.startswith("fc."):
            if bool(tensor.any()):
                raise ValueError(f"{name} is not all zeros; it cannot be dropped")
            dropped[name] = {"dtype": str(tensor.dtype), "shape": list(tensor.shape)}
            continue
        data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
        raw = data.numpy().tobytes()
        entries.append(
            {
                "name": name,
                "dtype": str(tensor.dtype),
                "shape": list(tensor.shape),
                "offset": offset,
                "bytes": len(raw),
            }
        )
        chunks.append(raw)
        offset += len(raw)
    blob = b"".join(chunks)
    parts = split_blob(blob, part_bytes)
    index = {
        "format": "betavae_lib.inception_parts/1",
        "tensors": entries,
        "zeros": dropped,
        "sha256": sha256_of(blob),
        "parts": [sha256_of(p) for p in parts],
    }
    return index, parts


def split_blob(blob: bytes, part_bytes) -> list[bytes]:
    if isinstance(part_bytes, int):
        return [blob[i : i + part_bytes] for i in range(0, len(blob), part_bytes)]
    parts, start = [], 0
    for size in part_bytes:
        if start >= len(blob):
            break
        parts.append(blob[start : start + int(size)])
        start += int(size)
    if start < len(blob):
        parts.append(blob[start:])
    return parts


def unpack_state_dict(index: dict, parts: list[bytes]) -> dict:
    """The inverse of :func:`pack_state_dict` (fc rebuilt as zeros); checks the sums."""
    import torch

    for i, (part, want) in enumerate(zip(parts, index["parts"], strict=True)):
        if sha256_of(part) != want:
            raise ValueError(f"Inception part {i + 1} is corrupt (SHA-256 differs)")
    blob = b"".join(parts)
    if sha256_of(blob) != index["sha256"]:
        raise ValueError("the joined Inception weights do not match their SHA-256")
    state = {}
    for e in index["tensors"]:
        dtype = getattr(torch, e["dtype"].removeprefix("torch."))
        raw = bytearray(blob[e["offset"] : e["offset"] + e["bytes"]])
        state[e["name"]] = torch.frombuffer(raw, dtype=dtype).reshape(e["shape"])
    for name, e in index["zeros"].items():
        dtype = getattr(torch, e["dtype"].removeprefix("torch."))
        state[name] = torch.zeros(e["shape"], dtype=dtype)
    return state


def split_weights(weights: Path, out_dir: Path, part_bytes) -> list[Path]:
    """Write ``out_dir/part-N/`` folders (each also holds index.json). part_bytes: as
    for :func:`pack_state_dict`, or a function of the total bytes giving that."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    if callable(part_bytes):
        total = sum(
            t.numel() * t.element_size()
            for name, t in state.items()
            if not name.startswith("fc.")
        )
        part_bytes = part_bytes(total)
    index, parts = pack_state_dict(state, part_bytes)
    shutil.rmtree(out_dir, ignore_errors=True)
    folders = []
    for i, part in enumerate(parts, 1):
        folder = out_dir / f"part-{i}"
        folder.mkdir(parents=True)
        (folder / f"weights.{i}.bin").write_bytes(part)
        (folder / "index.json").write_text(json.dumps(index))
        folders.append(folder)
    return folders


def read_parts(folders: list[Path]) -> tuple[dict, list[bytes]]:
    index = json.loads((folders[0] / "index.json").read_text())
    found = {}
    for folder in folders:
        for f in folder.glob("weights.*.bin"):
            found[int(f.name.split(".")[1])] = f.read_bytes()
    missing = [i for i in range(1, len(index["parts"]) + 1) if i not in found]
    if missing:
        raise FileNotFoundError(
            f"Inception parts {missing} are not on this machine; the calls that carry "
            f"them must run first, back to back with this one"
        )
    return index, [found[i] for i in sorted(found)]


def join_weights(folders: list[Path], weights: Path) -> Path:
    import torch

    index, parts = read_parts(folders)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".tmp")
    torch.save(unpack_state_dict(index, parts), tmp)
    os.replace(tmp, weights)
    return weights


# ------------------------------------------------------------------------- prepare
def download_wheels(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version}" for name, version in WHEELS.items()]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *PIP_PLATFORM]
    subprocess.run([*cmd, "-d", str(dest), *pins], check=True)
    (dest / STAND_IN).unlink(missing_ok=True)


def stand_in_wheels(dest: Path) -> None:
    """Empty wheels named like the pinned ones (the dry run without downloads: the
    machine's install is emulated, their size is taken as expected)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, version in WHEELS.items():
        dist = name.replace("-", "_")
        path = dest / f"{dist}-{version}-py3-none-any.whl"
        if not path.exists():
            with zipfile.ZipFile(path, "w") as z:
                z.writestr(f"{dist}-{version}.dist-info/METADATA", f"Name: {name}\n")
    (dest / STAND_IN).write_text("stand-in wheels for the dry run\n")


def missing_wheels(folder: Path) -> list[str]:
    have = {wheel_name(p.name) for p in folder.glob("*.whl")}
    return [n for n in WHEELS if normalize(n) not in have]


def copy_data(source: Path, dest: Path) -> None:
    for sub in DATASETS.values():
        target = dest / sub
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted((source / sub).glob("*.gz")):
            shutil.copy2(f, target / f.name)


def prepare(
    root: Path,
    source: Path | None,
    weights: Path | None,
    wheels: str = "download",
) -> int:
    """Wheels (downloaded, kept, or stand-ins), data and the Inception parts sized for
    this tree; returns how many of them could not be made."""
    missing = 0
    if wheels == "download":
        download_wheels(root / WHEEL_DIR)
    elif wheels == "stand-in":
        stand_in_wheels(root / WHEEL_DIR)
    absent = missing_wheels(root / WHEEL_DIR)
    if absent:
        print(f"wheels missing from {WHEEL_DIR}: {', '.join(absent)}")
        missing += 1
    if source is not None and (source / "MNIST" / "raw").is_dir():
        copy_data(source, root / DATA_DIR)
    else:
        print("no datasets folder (BETAVAE_DATA_DIR or --data-dir): data/ not made")
        missing += 1
    weights = weights or (source / "weights" / WEIGHTS_NAME if source else None)
    if weights is not None and weights.is_file():
        state = LocalState(root)
        folders = split_weights(
            weights, root / PARTS_DIR, lambda total: [state.part_room(total)]
        )
        sizes = ", ".join(f"{tree_size(f) / MIB:.1f}" for f in folders)
        print(f"Inception weights split into {len(folders)} parts ({sizes} MiB)")
    else:
        print(f"no Inception weights at {weights}: {PARTS_DIR} not made")
        missing += 1
    return missing


# ------------------------------------------------------------------------- collect
def collect(root: Path, folder: Path) -> int:
    """Take in what a call returned (its $OUT, fetched here): executed notebooks that
    ran into notebooks/ and their manifest entries into book/execution.json (a new run
    number), failed ones into _build/execution/failed/, and the pieces a later call
    resumes from (trained models, the protocol) into
    .gpu/resume/. Returns 1 if the call did not end well."""
    sys.path.insert(0, str(root / "tools"))
    import execute_book as eb

    reports = [folder / n for n in ("plan.json", "inception.json", "stage.json")]
    plan_file = next((p for p in reports if p.is_file()), folder / "plan.json")
    report = (
        json.loads(plan_file.read_text(encoding="utf-8")) if plan_file.is_file() else {}
    )
    if not report:
        print(
            f"no report of a call in {folder} (plan.json, inception.json, stage.json)"
        )
    else:
        print(
            f"{report.get('call')}: {report.get('status')} {report.get('error') or ''}"
        )

    returned = folder / "execution.json"
    status = 0 if report.get("status") == "ok" else 1
    resume = root / RESUME_DIR
    resume.mkdir(parents=True, exist_ok=True)
    for piece in sorted(folder.glob("ch6-*.tar")):
        shutil.copy2(piece, resume / piece.name)
        print(f"kept {piece.name} in {RESUME_DIR} (a later call resumes from it)")
    if report.get("protocol"):
        shutil.copy2(plan_file, resume / "plan.json")
        print(f"kept the protocol in {RESUME_DIR}/plan.json")
    if returned.is_file():
        theirs = json.loads(returned.read_text(encoding="utf-8"))
        ran = report.get("chapters_run") or []
        mine = eb.load_manifest(root)
        merged, taken = merge_returned(mine, theirs, ran, eb.toc_notebooks(root))
        for path in taken:
            src = folder / Path(path).name
            if src.is_file():
                shutil.copy2(src, root / path)
                where = [e["device"] for e in theirs["notebooks"] if e["path"] == path]
                print(f"took {path} (executed on {where[0]})")
        for failed in folder.glob("*.failed.ipynb"):
            dest = root / eb.FAILED_DIR / failed.name.replace(".failed", "")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(failed, dest)
            print(f"kept the failed run of {failed.name} in {dest.relative_to(root)}")
        if taken:
            eb.write_json(root / eb.MANIFEST, merged)
            eb.write_page(root, merged)
            print(f"recorded {len(taken)} chapter(s) in {eb.MANIFEST} and {eb.PAGE}")
    if status == 0 and report.get("call"):
        done_file = resume / "done.json"
        done = json.loads(done_file.read_text()) if done_file.is_file() else {}
        calls = sorted(set(done.get("calls", [])) | {report["call"]})
        done_file.write_text(json.dumps({"calls": calls}, indent=1) + "\n")
    return status


def merge_returned(
    mine: dict | None, theirs: dict, paths: list[str], order: list[str]
) -> tuple[dict | None, list[str]]:
    """``mine`` with the entries ``theirs`` made for ``paths`` (those that ran well),
    under a new run number (the machine numbered its run from its own copy)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import execute_book as eb

    entries = [
        e
        for e in theirs.get("notebooks", [])
        if e["path"] in paths and e["status"] == "ok"
    ]
    if not entries:
        return mine, []
    run_ids = {e["run"] for e in entries}
    if len(run_ids) != 1:
        raise SystemExit(f"the returned entries come from {len(run_ids)} runs")
    (run,) = [r for r in theirs["runs"] if r["id"] in run_ids]
    new_id = 1 + max((r["id"] for r in (mine or {}).get("runs", [])), default=0)
    run = {**run, "id": new_id}
    entries = [{**e, "run": new_id} for e in entries]
    return eb.record(mine, run, entries, order), [e["path"] for e in entries]


# ------------------------------------------------------------------------------ main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("plan", help="the calls in order, checked against the limits")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--set", choices=sorted(PLANS), default="essential")
    p.add_argument(
        "--budget-left",
        type=int,
        metavar="S",
        help="device seconds left (status's budget_left_s); the plan keeps 60 s of "
        f"it in reserve (default: {PLAN_BUDGET_S} of {DEVICE_BUDGET_S})",
    )
    p.add_argument("--warm", action="store_true", help="a machine is held: no start")
    p.add_argument("--start-at", metavar="CALL", help="plan from this call on")
    p.add_argument("--commit", help="the commit to record (default: HEAD)")
    p.add_argument("--amp", choices=["off", "on"], default="off")
    p.add_argument("--graph", choices=["off", "try"], default="off")

    p = sub.add_parser("prepare", help="wheels, data and Inception parts; the plan")
    p.add_argument("--data-dir", help="datasets folder (default $BETAVAE_DATA_DIR)")
    p.add_argument("--weights", help="Inception weights (default DATA/weights/...)")
    p.add_argument(
        "--wheels",
        choices=["download", "keep", "stand-in"],
        default="download",
        help="download the pinned cp312 wheels (default), keep .whl as it is, or "
        "write empty stand-ins (the dry run)",
    )

    p = sub.add_parser("dry-run", help="every call's command, on the CPU")
    p.add_argument("--keep", type=Path, help="keep the scratch folders here")
    p.add_argument(
        "--calls",
        help="comma-separated calls to run (default: all, then the resume check)",
    )
    p.add_argument("--no-resume", action="store_true", help="skip the resume check")

    p = sub.add_parser("collect", help="take in what a call returned")
    p.add_argument("folder", type=Path, help="the call's files (its $OUT)")

    p = sub.add_parser("device", help="on the GPU machine: run one call")
    p.add_argument("call")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.action == "device":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import gpu_device

        return gpu_device.main([args.call, *args.rest])
    if args.action == "dry-run":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import gpu_dryrun

        calls = args.calls.split(",") if args.calls else None
        return gpu_dryrun.main(
            keep=args.keep, only=calls, resume=not args.no_resume and not calls
        )
    if args.action == "collect":
        return collect(ROOT, args.folder)
    if args.action == "prepare":
        source = args.data_dir or os.environ.get("BETAVAE_DATA_DIR")
        missing = prepare(
            ROOT,
            Path(source) if source else None,
            Path(args.weights) if args.weights else None,
            args.wheels,
        )
        plan = make_plan(ROOT)
        print_plan(plan)
        return 1 if missing or plan["problems"] else 0
    budget = PLAN_BUDGET_S
    if args.budget_left is not None:
        budget = args.budget_left - (DEVICE_BUDGET_S - PLAN_BUDGET_S)
    settings = Settings(
        set=args.set,
        budget_s=budget,
        warm=args.warm,
        commit=args.commit,
        amp=args.amp,
        graph=args.graph,
        start_at=args.start_at,
    )
    plan = make_plan(ROOT, settings)
    if args.json:
        print(json.dumps(plan, indent=1))
    else:
        print_plan(plan)
    return 1 if plan["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

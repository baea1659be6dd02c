"""Prepare what the GPU machine needs, within its limits, and print the commands to run.

The GPU machine has no network. Each command gets a copy of the working tree (tracked
and untracked, not ignored, files) plus at most 8 named git-ignored paths, 64 MiB in
all, and runs for at most 10 minutes; ignored files it leaves behind stay there while
the machine is held. Its Python 3.12 has torch, torchvision, matplotlib, seaborn and
scikit-learn, but not the Jupyter stack the book runs with, nor pytorch-fid. So:

    python tools/gpu_bundle.py prepare   # here: wheels, data, Inception parts; plan
    python tools/gpu_bundle.py plan      # here: the plan again, sizes checked

``prepare`` puts into git-ignored folders:

* ``.whl/``: Python 3.12 manylinux wheels of the Jupyter stack (nbclient, ipykernel and
  what they import), ipywidgets, pytorch-fid, tqdm and PyYAML, pinned to the versions
  the book is built with (``pip download``). Optional packages that only a frontend or
  a debugger uses (jedi, debugpy, the widget frontends) are left out to save space.
* ``data/``: the MNIST and Fashion-MNIST ``.gz`` files from ``$BETAVAE_DATA_DIR``.
* ``.gpu/inception/part-N``: pytorch-fid's Inception weights (95.6 MB) without their
  fc layer, which is all zeros in the shared file and unused by FID, as raw tensor bytes
  with a JSON index (no pickle), split into parts that each fit one command. On the
  device ``join-inception`` rebuilds the file, every tensor bit for bit (fc as zeros).

On the GPU machine the commands printed by ``plan`` call this script again:
``install`` unpacks the wheels into ``.gpu/site``; ``stage-inception`` keeps the parts
a command brought; ``join-inception`` rebuilds the weights file under ``data/weights``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
LIMIT = 64 * MIB  # tracked files plus carried paths, per command
MAX_CARRY = 8  # named ignored paths per command
WHEEL_DIR = ".whl"
DATA_DIR = "data"
GPU_DIR = ".gpu"
PARTS_DIR = f"{GPU_DIR}/inception"
STAGED_DIR = f"{GPU_DIR}/staged"
SITE_DIR = f"{GPU_DIR}/site"
WEIGHTS_NAME = "pt_inception-2015-12-05-fc-zeroed.pth"
DATASETS = {"MNIST": "MNIST/raw", "FashionMNIST": "FashionMNIST/raw"}

# The Jupyter stack, pinned as in requirements.txt, with the dependencies these
# versions need at run time (the closure of their requirements for Python 3.12 on
# Linux, less what the GPU machine has: numpy, scipy, pillow, packaging, dateutil, six,
# typing_extensions, ..., and less jedi/parso, debugpy, widgetsnbextension and
# jupyterlab_widgets, which IPython and ipykernel import only if present).
WHEELS = {
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

DEVICE_ENV = (
    "export PYTHONPATH=$PWD/.gpu/site:$PWD BETAVAE_DATA_DIR=$PWD/data "
    "BETAVAE_CACHE_DIR=$PWD/.gpu/cache BETAVAE_OFFLINE=1 MPLBACKEND=Agg "
    "JUPYTER_RUNTIME_DIR=$PWD/.gpu/runtime JUPYTER_PLATFORM_DIRS=1 && "
    "python3 tools/gpu_bundle.py install"
)


def book(*stems: str) -> str:
    """The device command that rebuilds ``stems`` from their sources, executes them
    (full profile) and returns the executed notebooks and the run manifest."""
    rebuild = " && ".join(
        f"python3 tools/nbbuild.py notebooks/src/{s}.py notebooks/{s}.ipynb"
        for s in stems
    )
    only = " ".join(f"--only {s}" for s in stems)
    notebooks = " ".join(f"notebooks/{s}.ipynb" for s in stems)
    return (
        f"{rebuild} && python3 tools/execute_book.py --profile full {only}; "
        f"mkdir -p $OUT/notebooks $OUT/book && cp {notebooks} $OUT/notebooks/ && "
        f"cp book/execution.json book/execution.md $OUT/book/"
    )


@dataclass
class Command:
    """One command on the GPU machine: what it carries and what it runs there."""

    name: str
    purpose: str
    carry: list[str]
    run: str
    parts: list[str] = field(default_factory=list)  # Inception parts it brings


def inception_parts(root: Path = ROOT) -> list[str]:
    folder = root / PARTS_DIR
    return sorted(f"{PARTS_DIR}/{p.name}" for p in folder.glob("part-*") if p.is_dir())


def planned_commands(parts: list[str]) -> list[Command]:
    """The commands, in order. The Inception parts travel in commands of their own right
    before chapter 5, which joins them (the machine must stay held in between)."""
    data = [f"{DATA_DIR}/{name}" for name in DATASETS]
    mnist = [f"{DATA_DIR}/MNIST"]
    commands = [
        Command(
            "bench",
            "benchmarks (CPU and CUDA rows)",
            [WHEEL_DIR, *mnist],
            f"{DEVICE_ENV} && python3 -m benchmarks.run --quick | tee "
            f"$OUT/benchmarks.txt",
        ),
        Command(
            "book-1-2",
            "chapters 1-2, full profile",
            [WHEEL_DIR, *mnist],
            f"{DEVICE_ENV} && {book('01_first_vae', '02_elbo')}",
        ),
        Command(
            "book-3-4",
            "chapters 3-4, full profile (chapter 3's models stay in the cache)",
            [WHEEL_DIR, *data],
            f"{DEVICE_ENV} && {book('03_beta_tradeoff', '04_posterior_collapse')}",
        ),
        Command(
            "book-6",
            "chapter 6, full profile (dSprites is rendered, no data to carry)",
            [WHEEL_DIR],
            f"{DEVICE_ENV} && {book('06_disentanglement')}",
        ),
    ]
    for i, part in enumerate(parts, 1):
        commands.append(
            Command(
                f"inception-{i}",
                f"stage Inception part {i} of {len(parts)}",
                [part],
                "python3 tools/gpu_bundle.py stage-inception",
                [part],
            )
        )
    commands.append(
        Command(
            "book-5",
            "chapter 5, full profile (joins the staged Inception parts; reuses chapter "
            "3's models when the machine was held since book-3-4)",
            [WHEEL_DIR, *data],
            f"{DEVICE_ENV} && python3 tools/gpu_bundle.py join-inception && "
            f"{book('05_fid')}",
        )
    )
    return commands


# ------------------------------------------------------------------ sizes


def tree_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 if absent)."""
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def working_tree_bytes(root: Path = ROOT) -> int:
    """Bytes of the files every command copies: tracked and untracked, not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    names = [n for n in out.decode().split("\0") if n]
    return sum(tree_size(root / n) for n in names)


def check_commands(commands, sizes: dict[str, int], tree: int) -> list[str]:
    """Problems with the plan: a command over the limit, too many carried paths, or a
    carried path that is missing (size 0)."""
    problems = []
    for c in commands:
        total = tree + sum(sizes.get(p, 0) for p in c.carry)
        if total > LIMIT:
            problems.append(
                f"{c.name}: {total / MIB:.1f} MiB > {LIMIT / MIB:.0f} MiB "
                f"(working tree {tree / MIB:.1f} MiB + carried paths)"
            )
        if len(c.carry) > MAX_CARRY:
            problems.append(f"{c.name}: {len(c.carry)} carried paths > {MAX_CARRY}")
        missing = [p for p in c.carry if not sizes.get(p)]
        if missing:
            problems.append(
                f"{c.name}: {', '.join(missing)} missing; run prepare first"
            )
    return problems


def print_plan(root: Path = ROOT) -> int:
    commands = planned_commands(inception_parts(root))
    paths = {p for c in commands for p in c.carry}
    sizes = {p: tree_size(root / p) for p in paths}
    tree = working_tree_bytes(root)
    print(f"working tree (copied by every command): {tree / MIB:.1f} MiB")
    for c in commands:
        total = tree + sum(sizes[p] for p in c.carry)
        carried = ", ".join(f"{p} ({sizes[p] / MIB:.1f} MiB)" for p in c.carry)
        print(f"\n[{c.name}] {c.purpose}: {total / MIB:.1f} MiB of {LIMIT // MIB}")
        print(f"  carry: {carried}")
        print(f"  command: {c.run}")
    problems = check_commands(commands, sizes, tree)
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


# ------------------------------------------------------------------ Inception parts


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_state_dict(state: dict, part_bytes: int) -> tuple[dict, list[bytes]]:
    """A state dict -> (index, parts): every tensor's raw bytes, the fc layer dropped
    (it must be all zeros), concatenated and cut into parts of at most ``part_bytes``.
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
    parts = [blob[i : i + part_bytes] for i in range(0, len(blob), part_bytes)]
    index = {
        "format": "betavae_lib.inception_parts/1",
        "tensors": entries,
        "zeros": dropped,
        "sha256": sha256_of(blob),
        "parts": [sha256_of(p) for p in parts],
    }
    return index, parts


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


def split_weights(weights: Path, out_dir: Path, part_bytes: int) -> list[Path]:
    """Write ``out_dir/part-N/`` folders (the first also holds index.json)."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
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
            f"Inception parts {missing} are not on this machine; run the inception-N "
            f"commands again just before this one"
        )
    return index, [found[i] for i in sorted(found)]


def join_weights(folders: list[Path], weights: Path) -> Path:
    import torch

    index, parts = read_parts(folders)
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(unpack_state_dict(index, parts), weights)
    return weights


# ------------------------------------------------------------------ prepare / device


def download_wheels(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version}" for name, version in WHEELS.items()]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *PIP_PLATFORM]
    subprocess.run([*cmd, "-d", str(dest), *pins], check=True)


def copy_data(source: Path, dest: Path) -> None:
    for sub in DATASETS.values():
        target = dest / sub
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted((source / sub).glob("*.gz")):
            shutil.copy2(f, target / f.name)


def prepare(args) -> int:
    source = Path(args.data_dir or os.environ.get("BETAVAE_DATA_DIR", ""))
    if not (source / "MNIST" / "raw").is_dir():
        raise SystemExit("set BETAVAE_DATA_DIR (or --data-dir) to the datasets folder")
    if not args.no_download:
        download_wheels(ROOT / WHEEL_DIR)
    copy_data(source, ROOT / DATA_DIR)
    weights = Path(args.weights or source / "weights" / WEIGHTS_NAME)
    if weights.is_file():
        split_weights(weights, ROOT / PARTS_DIR, int(args.part_mib * MIB))
    else:
        print(f"no Inception weights at {weights}; chapter 5 will use domain features")
    return print_plan()


def install() -> int:
    """Unpack every wheel in .whl into .gpu/site (once per set of wheels)."""
    site, wheels = ROOT / SITE_DIR, sorted((ROOT / WHEEL_DIR).glob("*.whl"))
    marker = site / ".installed"
    listed = "\n".join(w.name for w in wheels)
    if marker.is_file() and marker.read_text() == listed:
        return 0
    site.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    marker.write_text(listed)
    print(f"installed {len(wheels)} wheels into {SITE_DIR}")
    return 0


def stage_inception() -> int:
    """Keep the Inception parts this command brought for a later join-inception."""
    staged = ROOT / STAGED_DIR
    staged.mkdir(parents=True, exist_ok=True)
    for part in inception_parts():
        target = staged / Path(part).name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ROOT / part, target)
        print(f"staged {part}")
    return 0


def join_inception() -> int:
    """Rebuild data/weights/<file> from the staged and carried parts, if all here."""
    folders = sorted((ROOT / STAGED_DIR).glob("part-*")) + [
        ROOT / p for p in inception_parts()
    ]
    if not folders:
        print("no Inception parts here; chapter 5 will use domain features only")
        return 0
    try:
        path = join_weights(folders, ROOT / DATA_DIR / "weights" / WEIGHTS_NAME)
    except (FileNotFoundError, ValueError) as e:
        print(f"Inception weights not rebuilt ({e}); chapter 5 uses domain features")
        return 0
    print(f"rebuilt {path.relative_to(ROOT)} ({path.stat().st_size / MIB:.1f} MiB)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("prepare", help="wheels, data and Inception parts; the plan")
    p.add_argument("--data-dir", help="datasets folder (default $BETAVAE_DATA_DIR)")
    p.add_argument("--weights", help="Inception weights (default DATA/weights/...)")
    p.add_argument("--part-mib", type=float, default=42.0, help="Inception part size")
    p.add_argument("--no-download", action="store_true", help="keep .whl as it is")
    sub.add_parser("plan", help="print the commands and check their sizes")
    sub.add_parser("install", help="device: unpack the wheels into .gpu/site")
    sub.add_parser("stage-inception", help="device: keep the parts brought here")
    sub.add_parser("join-inception", help="device: rebuild the Inception weights")
    args = parser.parse_args(argv)
    if args.action == "prepare":
        return prepare(args)
    if args.action == "plan":
        return print_plan()
    return {
        "install": install,
        "stage-inception": stage_inception,
        "join-inception": join_inception,
    }[args.action]()


if __name__ == "__main__":
    raise SystemExit(main())

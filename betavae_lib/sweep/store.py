"""The root folder of a sweep: ``grid.json``, one folder per run with its record, and
the claims through which workers share runs (``O_EXCL`` creation, stale-claim
takeover serialised by ``claim.break``, a heartbeat while a run trains)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

from .config import RunConfig, SweepError, SweepWarning, _is_int, _short
from .grid import Grid


def run_dir(root: str | os.PathLike, index: int) -> Path:
    """The folder of run ``index``: ``root/runs/NNNNN``."""
    if not _is_int(index) or index < 0:
        raise TypeError(f"a run index is an integer >= 0, got {_short(index)}")
    return Path(root) / "runs" / f"{index:05d}"


def _write_json_atomic(path: Path, data) -> None:
    """Write JSON to a temporary file beside ``path``, flush, rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; records are for everyone
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class DamagedFileError(SweepError):
    """A file of a sweep root cannot be read: not JSON, or not what it should hold."""


def _read_json(path: Path, what: str, keys: tuple = ()) -> dict:
    """The dict in ``path``; DamagedFileError naming the file when it is not readable
    JSON, not a dict, or lacks one of ``keys``."""
    if path.exists() and not path.is_file():
        raise DamagedFileError(
            f"{path} is damaged: a folder where {what} belongs; remove it"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DamagedFileError(f"{path} is damaged: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DamagedFileError(
            f"{path} is damaged: it holds a {type(data).__name__}, not {what}"
        )
    missing = [k for k in keys if k not in data]
    if missing:
        raise DamagedFileError(
            f"{path} is damaged: {what} without {', '.join(missing)}"
        )
    return data


def _read_record(directory: Path) -> dict | None:
    path = directory / "record.json"
    if not path.exists():
        return None
    if not path.is_file():  # a record could never be written there: not a retrain
        raise SweepError(
            f"{path} is a folder where the run's record belongs; remove it"
        )
    return _read_json(path, "a run's record", ("config",))


def _is_finished(directory: Path, config: RunConfig) -> bool:
    """True when the run's record exists; raises if it records another configuration.
    A damaged record is reported (:class:`SweepWarning`) and the run counts as not
    finished: it is trained again (to the same numbers), and the record rewritten."""
    try:
        record = _read_record(directory)
    except DamagedFileError as e:
        warnings.warn(
            f"{e}; run {directory.name} is trained again and its record rewritten",
            SweepWarning,
            stacklevel=2,
        )
        return False
    if record is None:
        return False
    if record.get("config") != config.as_dict():
        raise SweepError(
            f"{directory / 'record.json'} records another configuration than the "
            f"grid's run {directory.name}; this root belongs to another grid: use "
            f"another root"
        )
    return True


def _prepare_root(root, grid: Grid) -> Path:
    """Make ``root`` and ``root/runs``; check it is writable and holds this grid."""
    root = Path(root).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"the sweep root {root} exists and is not a folder")
    try:
        (root / "runs").mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-test.")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise PermissionError(
            f"cannot write to the sweep root {root} ({e.strerror or e}); choose a "
            f"folder you can write to (on a cluster: one that every worker can reach)"
        ) from None
    _check_grid_file(root / "grid.json", grid)
    return root


def _check_grid_file(path: Path, grid: Grid) -> None:
    """Store the grid's runs in ``grid.json``, or check that the stored ones agree."""
    runs = [r.as_dict() for r in grid.runs]
    if path.exists() and not path.is_file():
        raise SweepError(f"{path} is a folder where the grid's file belongs; remove it")
    if path.is_file():
        try:
            stored = _read_json(path, "a grid's runs", ("runs",))["runs"]
            if not isinstance(stored, list):
                raise DamagedFileError(f"{path} is damaged: its runs are not a list")
        except DamagedFileError as e:
            raise DamagedFileError(
                f"{e}. It records which grid this root holds; restore it, or delete "
                f"it if this root holds the runs of this grid (every record is also "
                f"checked against the grid)"
            ) from None
        for index, (old, new) in enumerate(zip(stored, runs)):
            if old != new:
                raise SweepError(
                    f"{path.parent} holds another grid: its run {index} is {old}, "
                    f"this grid's is {new}. A root accepts only its own grid, or one "
                    f"that appends runs at the end; use another root"
                )
        if len(stored) >= len(runs):
            return
    _write_json_atomic(path, {"name": grid.name, "runs": runs})


def _claim_owner() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "claimed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _create_claim(path: Path) -> str | None:
    """Create the claim atomically (``O_CREAT | O_EXCL``): its token, or None."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    owner = _claim_owner()
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(owner, f)
        f.flush()
        os.fsync(f.fileno())
    return owner["token"]


def _read_claim(path: Path) -> dict:
    """The claim's owner; ``{}`` while it is being written, after it is removed, or
    when it is damaged (a damaged claim is then stale once untouched for
    ``stale_after``)."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (ValueError, FileNotFoundError, IsADirectoryError):  # being written, gone
        return {}
    return owner if isinstance(owner, dict) else {}


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _claim_is_stale(path: Path, stale_after: float) -> bool:
    """Held by a gone process of this host, or untouched for ``stale_after`` seconds."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    owner = _read_claim(path)
    here = owner.get("host") == socket.gethostname() and _is_int(owner.get("pid"))
    if here and owner["pid"] != os.getpid() and not _pid_running(owner["pid"]):
        return True
    return age > stale_after


def _take_over_stale_claim(path: Path, stale_after: float) -> str | None:
    """Replace a stale claim by ours while holding ``claim.break``: our token, or None.

    The check, the removal and the new claim all happen under the lock, so that no
    other worker can judge our fresh claim stale in between.
    """
    lock = path.with_name(path.name + ".break")
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - lock.stat().st_mtime > 60:  # its breaker died mid-way
                lock.unlink()
        return None
    try:
        if not _claim_is_stale(path, stale_after):
            return None
        path.unlink(missing_ok=True)
        return _create_claim(path)
    finally:
        lock.unlink(missing_ok=True)


def _try_claim(path: Path, stale_after: float) -> str | None:
    """Claim a run: its token, or None when another live worker holds it."""
    if path.is_dir():
        raise SweepError(
            f"{path} is a folder where the run's claim file belongs (no worker makes "
            f"one); remove it"
        )
    token = _create_claim(path)
    if token is None and _claim_is_stale(path, stale_after):
        token = _take_over_stale_claim(path, stale_after)
    return token


def _release_claim(path: Path, token: str) -> None:
    """Remove the claim if it is still ours (a claim broken as stale is another's)."""
    if _read_claim(path).get("token") == token:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _heartbeat(paths, every: float):
    """Touch every file of ``paths`` every ``every`` seconds from a thread while the
    block runs (the claims of the runs being trained)."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    stop = threading.Event()

    def beat():
        while not stop.wait(every):
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)

    thread = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

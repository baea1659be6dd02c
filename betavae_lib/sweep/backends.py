"""Where shards train: in this process (``"local"``) or as Ray tasks (``"ray"``, on a
cluster at ``address`` or on a Ray instance started here), both through
:func:`betavae_lib.sweep.shard._train_shard`."""

from __future__ import annotations

import numbers
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from .config import MAX_CONNECT_TIMEOUT, SweepError
from .grid import Grid
from .shard import _shard_key, _train_shard


def _make_shards(grid: Grid, indices: list[int], shard_size: int | None) -> list[list]:
    """Group runs by :func:`_shard_key` (index order), then cut groups into shards of
    ``shard_size`` runs (None: a group is one shard)."""
    groups: dict[tuple, list] = {}
    for i in indices:
        groups.setdefault(_shard_key(grid[i]), []).append((i, grid[i].as_dict()))
    return [
        jobs[start : start + (shard_size or len(jobs))]
        for jobs in groups.values()
        for start in range(0, len(jobs), shard_size or len(jobs))
    ]


def _run_local(shards, root: Path, options: dict, bar) -> list[dict]:
    outcomes = []
    for shard in shards:
        outcomes += _train_shard(
            shard, str(root), **options, report=lambda o: bar.update(1)
        )
    return outcomes


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(
            'the "ray" backend needs Ray: pip install "betavae_lib[ray]" (or pip '
            'install ray); backend="local" needs nothing more'
        ) from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``ray://host:port`` -> (host, port), default port 6379/10001."""
    text, default = address, 6379
    if text.startswith("ray://"):
        text, default = text[len("ray://") :], 10001
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default))
    if not host or not port.isdigit():
        raise ValueError(
            f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379, "
            f"ray://10.0.0.5:10001 or auto)"
        )
    return host, int(port)


_PROBE = (
    "import sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
    "ray.shutdown()"
)


def _check_connect_timeout(timeout) -> float:
    """A number of seconds in (0, MAX_CONNECT_TIMEOUT]: what a socket can wait."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"connect_timeout must be a number of seconds, got {timeout!r}")
    if not (0 < timeout <= MAX_CONNECT_TIMEOUT):  # NaN fails too
        raise ValueError(
            f"connect_timeout must be a number of seconds in (0, "
            f"{MAX_CONNECT_TIMEOUT:g}], got {timeout!r}"
        )
    return float(timeout)


def _check_ray_address(address: str, timeout: float) -> None:
    """Raise ConnectionError, within about ``2 * timeout`` s, unless Ray connects.

    ``ray.init(address=...)`` retries for many minutes when nothing (or no Ray) answers,
    so the address is first tried with a TCP connection, then by ``ray.init`` in a child
    process that is killed after ``timeout`` seconds.
    """
    if address == "auto":
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({e.strerror or e}, {timeout:g} s "
            f"allowed). Start one with `ray start --head` and pass the address it "
            f"prints, or leave address unset to start a Ray instance on this machine"
        ) from None
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, address],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ConnectionError(
            f"{host}:{port} answers, but Ray did not connect to it within {timeout:g} "
            f"s: is it the head node's GCS address (printed by `ray start --head`, "
            f"port 6379 by default)?"
        ) from None
    if probe.returncode != 0:
        raise ConnectionError(
            f"Ray could not connect to {address}: {_exception_lines(probe.stderr)}"
        )


def _exception_lines(traceback_text: str) -> str:
    """The ``SomeError: message`` lines of a traceback, first (the cause) to last."""
    lines = [
        line.strip()
        for line in traceback_text.splitlines()
        if re.match(r"^[\w.]*(Error|Exception): ", line.strip())
    ]
    unique = list(dict.fromkeys(line[:400] for line in lines))
    return " <- ".join(reversed(unique)) if unique else "no message"


def _start_ray(ray, address, num_cpus, connect_timeout) -> bool:
    """Connect to ``address`` or start a local instance; True if this started Ray."""
    if ray.is_initialized():
        if address is not None:
            raise ValueError(
                "Ray is already initialised in this process; leave address unset to "
                "use it"
            )
        return False
    if address is not None:
        _check_ray_address(address, connect_timeout)
        package = str(Path(__file__).resolve().parent)  # the workers run this library
        ray.init(
            address=address,
            runtime_env={"py_modules": [package]},
            log_to_driver=False,
        )
    else:
        ray.init(
            address="local",  # a new instance, not one found on this machine
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
        )
    return True


def _run_ray(
    shards,
    root: Path,
    options: dict,
    bar,
    *,
    address,
    num_cpus,
    cpus,
    gpus,
    connect_timeout,
) -> list[dict]:
    ray = _import_ray()
    if gpus == 0 and options["device"] == "auto":
        options = {**options, "device": "cpu"}  # the task holds no GPU
    started = _start_ray(ray, address, num_cpus, connect_timeout)
    try:
        # a request no node can meet would wait forever: wait for a node that can
        # (nodes may join a cluster) at most connect_timeout, then say so
        _wait_for_fitting_node(ray, cpus, gpus, 0 if started else connect_timeout)
        task_options = {"num_cpus": cpus, "num_gpus": gpus}
        task = ray.remote(_train_shard).options(**task_options)
        pending = {
            task.remote(shard, str(root), **options): len(shard) for shard in shards
        }
        outcomes = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=RAY_RECHECK)
            if not done:  # nothing finished for a while: can the shards still run?
                try:
                    _wait_for_fitting_node(ray, cpus, gpus, connect_timeout)
                except SweepError:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise
            for ref in done:
                bar.update(pending.pop(ref))
                outcomes += ray.get(ref)
        return outcomes
    finally:
        if started:
            ray.shutdown()


RAY_RECHECK = 60.0  # seconds without a finished shard before the nodes are checked


def _fitting_nodes(ray, cpus: float, gpus: float) -> tuple[bool, str]:
    """Whether an alive node of the Ray cluster has ``cpus`` CPUs and ``gpus`` GPUs,
    and what the nodes have (for the message)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    have = [
        (n.get("Resources", {}).get("CPU", 0), n.get("Resources", {}).get("GPU", 0))
        for n in nodes
    ]
    fits = any(c >= cpus and g >= gpus for c, g in have)
    listed = "; ".join(f"{c:g} CPUs, {g:g} GPUs" for c, g in have) or "no alive node"
    return fits, listed


def _wait_for_fitting_node(ray, cpus: float, gpus: float, timeout: float) -> None:
    """Return once a node can run a shard (``cpus`` CPUs, ``gpus`` GPUs); SweepError
    after ``timeout`` seconds without one."""
    deadline = time.monotonic() + timeout
    while True:
        fits, listed = _fitting_nodes(ray, cpus, gpus)
        if fits:
            return
        if time.monotonic() >= deadline:
            raise SweepError(
                f"no node of the Ray cluster can run a shard: each asks for {cpus:g} "
                f"CPUs and {gpus:g} GPUs, the nodes have {listed} (waited "
                f"{timeout:g} s). Lower cpus_per_shard / gpus_per_shard, or start "
                f"Ray with more (num_cpus=, or nodes with GPUs)"
            )
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

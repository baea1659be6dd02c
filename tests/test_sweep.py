"""Sweeps: grids address runs by index; runs are trained once (a shard's runs as one
ensemble), resumed after an interruption, recorded and collected; the Ray backend and
the one-by-one trainer give the local backend's numbers."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from betavae_lib import checkpoints, ensemble, objective, sweep
from betavae_lib.metrics import mig
from betavae_lib.train import NonFiniteLossError

ROOT = Path(__file__).resolve().parents[1]

# Four runs of a tiny ConvVAE on 64 dSprites images: seconds on one CPU thread.
TINY = {
    "name": "tiny",
    "base": {
        "train_size": 64,
        "batch_size": 32,
        "epochs": 2,
        "lr": 2e-3,
        "latent_dim": 4,
        "width": 4,
        "hidden": 16,
        "eval_size": 200,
        "factor_vae_train": 10,
        "factor_vae_eval": 10,
        "factor_vae_variance": 64,
        "factor_vae_batch": 8,
    },
    "blocks": [{"objective": "beta_vae", "beta": [1, 4], "seed": [0, 1]}],
}
SCORES = ["mig", "factor_vae", "kl", "recon", "neg_elbo", "active_units", "train_kl"]


def tiny_grid(**base) -> sweep.Grid:
    return sweep.Grid.from_spec({**TINY, "base": {**TINY["base"], **base}})


@pytest.fixture(scope="module", autouse=True)
def _no_downloads():
    """dSprites from $BETAVAE_DATA_DIR or rendered, never downloaded."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BETAVAE_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The tiny grid trained once with the local backend (one ensemble of the four
    runs): (grid, root, report)."""
    grid, root = tiny_grid(), tmp_path_factory.mktemp("local")
    return grid, root, sweep.run(grid, root, progress=False)


@pytest.fixture(scope="module")
def unbatched_sweep(tmp_path_factory):
    """The tiny grid trained run by run with ``fit``: (root, report)."""
    root = tmp_path_factory.mktemp("unbatched")
    return root, sweep.run(tiny_grid(), root, batch_runs=False, progress=False)


def same_scores(a, b) -> bool:
    """The score columns of two collect() frames hold the same numbers, row for row."""
    return np.array_equal(a[SCORES].to_numpy(), b[SCORES].to_numpy())


# ------------------------------------------------------------------ grids


def test_grid_indices_follow_the_spec_first_axis_slowest():
    grid = tiny_grid()
    assert len(grid) == 4
    expected = [(1.0, 0), (1.0, 1), (4.0, 0), (4.0, 1)]
    assert [(c.coefficients["beta"], c.seed) for c in grid] == expected
    assert grid[2] == tiny_grid()[2]  # the same index is the same run
    assert grid[2].coefficients == {"beta": 4.0, "warmup": 0.25}  # default filled in
    assert grid[0].steps == 2 * 2  # 2 epochs of 64 / 32 batches
    assert grid.fingerprint() == tiny_grid().fingerprint()
    assert grid.fingerprint() != tiny_grid(lr=1e-3).fingerprint()


def test_blocks_concatenate_and_range_expands():
    grid = sweep.Grid.from_spec(
        {
            "base": {"train_size": 64},
            "blocks": [
                {"objective": "beta_vae", "beta": 2, "seed": {"range": [0, 3]}},
                {"objective": "capacity", "capacity": [5, 25], "gamma": 100},
            ],
        }
    )
    assert [c.objective for c in grid] == ["beta_vae"] * 3 + ["capacity"] * 2
    assert [c.seed for c in grid] == [0, 1, 2, 0, 0]
    assert grid[4].coefficients == {"capacity": 25.0, "gamma": 100.0}


def test_objectives_become_fit_options():
    config = sweep.RunConfig(
        "beta_tcvae", {"beta": 6}, train_size=1_000, batch_size=100, epochs=2
    )
    options = config.fit_options()
    assert options["tc"] is True and config.steps == 20
    assert options["beta"](0) == 0 and options["beta"](5) == 6  # warm-up: 1/4 of 20
    free = sweep.RunConfig("free_bits", {"beta": 2, "free_bits": 0.5, "warmup": 0})
    assert free.fit_options() == {"beta": 2.0, "free_bits": 0.5}
    cap = sweep.RunConfig("capacity", {"capacity": 20}, train_size=100, batch_size=10)
    assert (
        cap.fit_options()["capacity"](10) == 20 and cap.fit_options()["gamma"] == 1000
    )


def test_chapter6_grid_sizes_per_profile():
    sizes = {p: len(sweep.get_grid("chapter6-seeds", p)) for p in ("smoke", "full")}
    assert sizes == {"smoke": 4, "full": 6 * 5}
    full = sweep.get_grid("chapter6-seeds", "full")
    assert sorted({c.coefficients["beta"] for c in full}) == [1, 2, 4, 6, 8, 16]


# ------------------------------------------------------------------ local backend


def test_local_run_writes_records_that_collect_returns(local_sweep):
    grid, root, report = local_sweep
    assert report.trained == [0, 1, 2, 3] and not report.busy and not report.failed
    for i in range(4):
        files = sorted(p.name for p in sweep.run_dir(root, i).iterdir())
        assert files == ["checkpoint.pt", "record.json"]  # the claim is gone
    df = sweep.collect(root)
    assert list(df["index"]) == [0, 1, 2, 3]
    assert list(zip(df["beta"], df["seed"])) == [(1, 0), (1, 1), (4, 0), (4, 1)]
    assert df[SCORES].notna().all().all()
    assert ((df["mig"] >= 0) & (df["mig"] <= 1)).all()
    assert (df["device"] == "cpu").all() and (df["threads"] == 1).all()
    assert (df["steps"] == 4).all() and (df["train_seconds"] > 0).all()
    assert (df["trainer"] == "ensemble").all()  # one shard, trained as one ensemble
    record = json.loads((sweep.run_dir(root, 0) / "record.json").read_text())
    assert record["ensemble"]["runs"] == [0, 1, 2, 3]


def test_ensemble_gives_the_records_of_runs_trained_one_by_one(
    local_sweep, unbatched_sweep
):
    """On the CPU an ensemble member is trained as fit trains it alone, so the records,
    Histories and weights are equal bit for bit; the checkpoints differ in kind.

    The bound is zero, on any CPU, because both paths make the same kernel calls on
    operands of the same sizes, strides and alignment: every member's products and
    convolutions are fit's calls on 64-byte-aligned operands (MKL may take another
    code path for another alignment), its loss is computed on its own tensors, and
    Adam steps each member's slice as a tensor of its own (where a vectorised
    kernel's scalar tail begins depends on the tensor's size and on the CPU's vector
    width). A difference here means that the two paths reach different kernels on
    this CPU: a bug of the ensemble, not a tolerance to widen."""
    _, root, _ = local_sweep
    alone_root, report = unbatched_sweep
    assert report.trained == [0, 1, 2, 3]
    batched, alone = sweep.collect(root), sweep.collect(alone_root)
    assert (alone["trainer"] == "fit").all()
    assert same_scores(batched, alone)
    assert list(batched["mig"]) == list(alone["mig"])
    for i in range(4):
        a, b = sweep.run_dir(root, i), sweep.run_dir(alone_root, i)
        model_ckpt = checkpoints.read(a / "checkpoint.pt")
        training_state = checkpoints.read(b / "checkpoint.pt")
        assert model_ckpt["format"] == checkpoints.FORMAT
        assert training_state["format"] == checkpoints.TRAINING_FORMAT
        assert model_ckpt["meta"]["trainer"] == "ensemble"
        got, want = model_ckpt["meta"]["history"], training_state["history"]
        assert got.keys() == want.keys() and got["steps"] == want["steps"]
        for key in want.keys() - {"seconds"}:
            assert got[key] == want[key], key
        for name, weight in training_state["state_dict"].items():
            assert torch.equal(model_ckpt["state_dict"][name], weight), name
        model_a, _ = sweep.load_run(root, i)
        model_b, _ = sweep.load_run(alone_root, i)
        assert type(model_a) is type(model_b) and model_a.config == model_b.config


def test_record_scores_describe_the_stored_checkpoint(local_sweep):
    """MIG recomputed from the checkpoint, on evaluation images drawn as documented."""
    grid, root, _ = local_sweep
    model, record = sweep.load_run(root, 3)
    assert record["config"] == grid[3].as_dict()
    ds = sweep.score._dataset("dsprites")
    index = np.random.default_rng(0 + 1).choice(len(ds), 200, replace=False)
    with torch.no_grad():
        mu = model.encode(ds.images(index))[0]
    assert mig(mu, ds.index_to_factors(index)).score == pytest.approx(
        record["metrics"]["mig"], abs=1e-12
    )


def test_second_run_trains_nothing(local_sweep):
    grid, root, _ = local_sweep
    before = {
        i: sweep.run_dir(root, i).joinpath("record.json").stat().st_mtime_ns
        for i in range(4)
    }
    report = sweep.run(grid, root, progress=False)
    assert report.trained == [] and report.finished_before == [0, 1, 2, 3]
    after = {
        i: sweep.run_dir(root, i).joinpath("record.json").stat().st_mtime_ns
        for i in range(4)
    }
    assert after == before


class _InterruptAfterEpoch1:
    def __call__(self, epoch, model, history):
        if epoch == 1:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    """A lone run trains with fit and checkpoints every epoch; interrupted, it resumes
    alone from its training state while the runs without one train as an ensemble."""
    grid = tiny_grid(epochs=3)
    reference = sweep.run(grid, tmp_path / "whole", batch_runs=False, progress=False)
    assert reference.trained == [0, 1, 2, 3]

    real_fit = sweep.shard.fit
    monkeypatch.setattr(
        sweep.shard,
        "fit",
        lambda *a, **k: real_fit(*a, callback=_InterruptAfterEpoch1(), **k),
    )
    with pytest.raises(KeyboardInterrupt):
        sweep.run(grid, tmp_path / "cut", indices=[2], progress=False)
    directory = sweep.run_dir(tmp_path / "cut", 2)
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint.pt"]  # no claim
    monkeypatch.setattr(sweep.shard, "fit", real_fit)

    assert sweep.run(grid, tmp_path / "cut", progress=False).trained == [0, 1, 2, 3]
    whole, cut = sweep.collect(tmp_path / "whole"), sweep.collect(tmp_path / "cut")
    assert list(cut["resumed_from_epoch"]) == [0, 0, 1, 0]
    assert list(cut["trainer"]) == ["ensemble", "ensemble", "fit", "ensemble"]
    assert same_scores(cut[cut["index"] == 2], whole[whole["index"] == 2])
    assert same_scores(cut, whole)  # 0, 1 and 3 in an ensemble of three, bit for bit


class _InterruptEnsembleAfterEpoch1:
    def __init__(self, record):
        self.record = record

    def __call__(self, histories, trainer, epoch, *args, **kwargs):
        self.record(histories, trainer, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt


def test_interrupted_ensemble_trains_again_to_the_same_numbers(tmp_path, monkeypatch):
    """An ensemble keeps no training state: interrupted mid-training it leaves neither
    claims nor checkpoints, and the next sweep trains its runs from the start, to the
    numbers of an uninterrupted sweep."""
    grid = tiny_grid(epochs=3)
    monkeypatch.setattr(
        ensemble, "_record", _InterruptEnsembleAfterEpoch1(ensemble._record)
    )
    with pytest.raises(KeyboardInterrupt):
        sweep.run(grid, tmp_path / "cut", progress=False)
    for i in range(4):
        assert list(sweep.run_dir(tmp_path / "cut", i).iterdir()) == []
    monkeypatch.undo()

    report = sweep.run(grid, tmp_path / "cut", progress=False)
    assert report.trained == [0, 1, 2, 3] and not report.finished_before
    sweep.run(grid, tmp_path / "whole", progress=False)
    whole, cut = sweep.collect(tmp_path / "whole"), sweep.collect(tmp_path / "cut")
    assert (cut["trainer"] == "ensemble").all() and (
        cut["resumed_from_epoch"] == 0
    ).all()
    assert same_scores(cut, whole)


def _nan_beta_for(beta: float, monkeypatch):
    """RunConfig.fit_options, except that runs with this β get a β schedule that is NaN
    from step 2 on: their loss stops being finite there. (An Objective refuses a
    schedule that gives NaN; that check is lifted here, to make the loss diverge.)"""
    real = sweep.RunConfig.fit_options
    monkeypatch.setattr(
        objective, "_scheduled", lambda name, given, at, step: float(at(step))
    )

    def fit_options(config):
        options = real(config)
        if config.coefficients.get("beta") == beta:
            options["beta"] = lambda step: math.nan if step >= 2 else beta
        return options

    return fit_options


def test_a_diverging_member_fails_alone(tmp_path, monkeypatch, unbatched_sweep):
    """A member whose loss turns NaN is frozen by the ensemble and recorded as failed,
    naming its step; the other members finish with the numbers of runs trained
    alone."""
    monkeypatch.setattr(sweep.RunConfig, "fit_options", _nan_beta_for(4.0, monkeypatch))
    grid, root = tiny_grid(), tmp_path / "root"
    report = sweep.run(grid, root, keep_going=True, progress=False)
    assert report.trained == [0, 1] and sorted(report.failed) == [2, 3]
    for i in (2, 3):
        assert "NonFiniteLossError" in report.failed[i]
        assert f"run {i}: the loss became NaN or infinite at step 2" in report.failed[i]
        assert list(sweep.run_dir(root, i).iterdir()) == []  # no claim, no record
    alone = sweep.collect(unbatched_sweep[0])
    assert same_scores(
        sweep.collect(root), alone[alone["index"] < 2].reset_index(drop=True)
    )

    with pytest.raises(NonFiniteLossError, match="run 2: .* at step 2"):
        sweep.run(grid, tmp_path / "strict", progress=False)  # without keep_going
    assert sorted(sweep.collect(tmp_path / "strict")["index"]) == [0, 1]
    assert not list((tmp_path / "strict" / "runs").glob("*/claim"))


# The command line, pausing after each epoch (in fit's callback, whose RNG is forked, so
# the numbers do not change).
SLOW_CLI = (
    "import sys, time; from betavae_lib.sweep import cli, shard; real = shard.fit; "
    "shard.fit = lambda *a, **k: "
    "real(*a, callback=lambda *_: time.sleep({pause}), **k); "
    "sys.exit(cli.main(sys.argv[1:]))"
)


def pause(epoch, model, history):
    time.sleep(0.3)


def test_killed_worker_is_taken_over_and_resumed(tmp_path):
    """A worker killed (SIGKILL) mid-run leaves its claim; the next sweep breaks it (its
    process is gone) and resumes from the checkpoint to an uninterrupted run's
    numbers."""
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps({**TINY, "base": {**TINY["base"], "epochs": 3}}))
    script = SLOW_CLI.format(pause=30)
    root = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            "--grid",
            str(spec),
            "--root",
            str(root),
            "--indices",
            "0",
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = sweep.run_dir(root, 0) / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 60
        while not checkpoint.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert checkpoint.is_file(), "the worker wrote no checkpoint within 60 s"
    assert (
        sweep.run_dir(root, 0) / "claim"
    ).is_file()  # left behind by the dead worker

    grid = sweep.Grid.from_file(spec)
    assert sweep.run(grid, root, indices=[0], progress=False).trained == [0]
    sweep.run(grid, tmp_path / "whole", indices=[0], progress=False)
    killed, whole = sweep.collect(root), sweep.collect(tmp_path / "whole")
    assert killed["resumed_from_epoch"].item() == 1
    assert same_scores(killed, whole)


def test_a_live_claim_is_left_alone_and_a_stale_one_taken_over(tmp_path):
    grid = tiny_grid()
    root = tmp_path / "root"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim = sweep.run_dir(root, 0) / "claim"
        claim.parent.mkdir(parents=True)
        owner = {"host": socket.gethostname(), "pid": holder.pid, "token": "t"}
        claim.write_text(json.dumps(owner))
        report = sweep.run(grid, root, indices=[0], progress=False)
        assert report.busy == [0] and report.trained == []
        old = time.time() - 3_600  # untouched for an hour: its holder is hung
        os.utime(claim, (old, old))
        report = sweep.run(grid, root, indices=[0], progress=False, stale_after=600)
        assert report.trained == [0] and not claim.exists()
    finally:
        holder.kill()
        holder.wait()


def test_one_claimant_wins(tmp_path):
    """Eight threads claim one run at once: one wins; likewise for a stale claim."""
    claim = tmp_path / "claim"

    def race() -> list:
        with ThreadPoolExecutor(8) as pool:
            tokens = list(
                pool.map(lambda _: sweep.store._try_claim(claim, 600), range(8))
            )
        return [t for t in tokens if t is not None]

    assert len(race()) == 1
    old = time.time() - 3_600
    os.utime(claim, (old, old))  # its holder stopped touching it an hour ago
    winners = race()
    assert len(winners) == 1 and json.loads(claim.read_text())["token"] == winners[0]


def test_two_workers_never_train_the_same_run(tmp_path, monkeypatch):
    """A worker process (run by run) and this process (the runs it can claim as one
    ensemble) sweep one root at once: each run once."""
    spec, root = tmp_path / "tiny.json", tmp_path / "root"
    spec.write_text(json.dumps(TINY))
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SLOW_CLI.format(pause=0.3),
            "--grid",
            str(spec),
            "--root",
            str(root),
            "--no-progress",
            "--no-batch",
        ],  # fmt: skip
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (root / "runs" / "00000" / "claim").exists():
            assert time.monotonic() < deadline and other.poll() is None
            time.sleep(0.02)
        real_fit = sweep.shard.fit
        monkeypatch.setattr(
            sweep.shard, "fit", lambda *a, **k: real_fit(*a, callback=pause, **k)
        )
        mine = sweep.run(sweep.Grid.from_file(spec), root, progress=False)
        out = other.communicate(timeout=120)[0]
    finally:
        other.kill()
        other.wait()
    theirs = int(out.split("trained ")[1].split(" ")[0])
    assert len(mine.trained) + theirs == 4  # a run trained twice would count twice
    assert 0 in mine.busy + mine.finished_before  # the other worker held run 0
    records = sweep.collect(root)
    assert list(records["index"]) == [0, 1, 2, 3]
    assert sorted(records.loc[records["pid"] == os.getpid(), "index"]) == mine.trained


# ------------------------------------------------------------------ Ray backend


@pytest.fixture
def ray_instance():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_backend_gives_the_local_backends_numbers(
    ray_instance, local_sweep, unbatched_sweep, tmp_path
):
    """Shards of one run (Ray's default) give the numbers of runs trained alone here;
    a shard of the four runs, trained as one ensemble in a Ray worker, gives the local
    ensemble's numbers."""
    grid, local_root, _ = local_sweep
    report = sweep.run(grid, tmp_path / "alone", backend="ray", progress=False)
    assert report.trained == [0, 1, 2, 3] and report.backend == "ray"
    remote = sweep.collect(tmp_path / "alone")
    assert same_scores(remote, sweep.collect(unbatched_sweep[0]))
    assert (remote["trainer"] == "fit").all()
    assert (remote["pid"] != os.getpid()).all()  # trained in Ray's worker processes
    again = sweep.run(grid, tmp_path / "alone", backend="ray", progress=False)
    assert again.trained == []

    sweep.run(grid, tmp_path / "one", backend="ray", shard_size=4, progress=False)
    remote = sweep.collect(tmp_path / "one")
    assert (remote["trainer"] == "ensemble").all()
    assert same_scores(remote, sweep.collect(local_root))


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "block, message",
    [
        ({"objective": "beta_vea", "beta": 4}, "unknown objective 'beta_vea'"),
        ({"objective": "beta_vae", "betta": 4}, "unknown coefficient.*'betta'"),
        ({"objective": "capacity", "gamma": 10}, "needs coefficient.*capacity"),
        ({"objective": "beta_vae", "beta": -1}, "'beta' must be a finite number"),
        ({"objective": "beta_vae", "beta": 4, "seed": []}, "axis 'seed' has no values"),
        ({"objective": "beta_vae", "beta": 4, "dataset": "mnist"}, "known factors"),
        ({"beta": 4}, "needs an objective"),
    ],
)
def test_bad_grid_specs_are_rejected(block, message):
    with pytest.raises(ValueError, match=message):
        sweep.Grid.from_spec({"blocks": [block]})


def test_index_out_of_range(tmp_path):
    grid = tiny_grid()
    with pytest.raises(IndexError, match="4 runs .*index 4 is out of range"):
        grid[4]
    with pytest.raises(IndexError, match="index 99 is out of range"):
        sweep.run(grid, tmp_path, indices=[99], progress=False)


def test_root_that_is_not_writable(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(NotADirectoryError, match="sweep root"):
        sweep.run(tiny_grid(), afile, progress=False)
    with pytest.raises(PermissionError, match="cannot write to the sweep root"):
        sweep.run(tiny_grid(), afile / "below", progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_root(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot write to the sweep root"):
            sweep.run(tiny_grid(), tmp_path / "sweep", progress=False)
    finally:
        tmp_path.chmod(0o700)


def test_root_of_another_grid_is_refused(local_sweep):
    _, root, _ = local_sweep
    with pytest.raises(sweep.SweepError, match="holds another grid"):
        sweep.run(tiny_grid(lr=1e-3), root, progress=False)


def test_unknown_backend_and_missing_ray(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'dask'"):
        sweep.run(tiny_grid(), tmp_path, backend="dask")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"pip install \"betavae_lib\[ray\]\""):
        sweep.run(tiny_grid(), tmp_path, backend="ray")


def test_ray_address_that_does_not_answer_fails_fast(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(
        ConnectionError, match=f"no Ray cluster answers at 127.0.0.1:{port}"
    ):
        sweep.run(tiny_grid(), tmp_path, backend="ray", address=f"127.0.0.1:{port}",
                  connect_timeout=3)  # fmt: skip
    assert time.monotonic() - start < 10


def test_ray_address_that_answers_without_ray_fails_in_bounded_time(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")
    with socket.socket() as listener:  # accepts connections, says nothing
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(
            ConnectionError, match="Ray did not connect to it within 3 s"
        ):
            sweep.run(tiny_grid(), tmp_path, backend="ray", address=address,
                      connect_timeout=3)  # fmt: skip
    assert time.monotonic() - start < 20


def test_command_line_errors_and_listing(tmp_path, capsys):
    assert sweep.main(["--grid", "no-such-grid", "--root", str(tmp_path)]) == 2
    assert "unknown grid 'no-such-grid'" in capsys.readouterr().err
    assert sweep.main(["--grid", "chapter6-seeds", "--profile", "smoke", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("chapter6-seeds-smoke: 4 runs")
    assert lines[1].split()[:2] == ["0", "beta_vae(beta=1,"]
    with pytest.raises(SystemExit):
        sweep.main(["--grid", "chapter6-seeds", "--indices", "a-b"])

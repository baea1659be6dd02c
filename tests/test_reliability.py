"""Nothing silent, nothing lost: bad input fails clearly, corrupt or partial files are
never used, and checkpoints can neither run code nor be half-written."""

import gzip
import hashlib
import http.server
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, binary_images, needs_mnist

from betavae_lib import (
    MLPVAE,
    ConvVAE,
    _common,
    checkpoints,
    data,
    evaluate,
    fid,
    fit,
    load,
    load_dataset,
    metrics,
    plots,
    save,
)
from betavae_lib.checkpoints import CheckpointError
from betavae_lib.data import ChecksumError, DataNotFoundError, IncompleteDownloadError
from betavae_lib.losses import beta_vae_loss
from betavae_lib.schedules import Cyclical, Linear, as_schedule
from betavae_lib.train import NonFiniteLossError, NonFiniteWeightsError, pick_device


def small_mlp():
    return MLPVAE(latent_dim=2, hidden=(16,))


# ----------------------------------------------------------------- bad input, the model


@pytest.mark.parametrize(
    "x,err,match",
    [
        (
            torch.rand(4, 28, 28),
            ValueError,
            r"expects images of shape \(B, 1, 28, 28\), got \(4, 28, 28\)",
        ),
        (torch.rand(4, 1, 32, 32), ValueError, r"got \(4, 1, 32, 32\)"),
        (
            torch.zeros(4, 1, 28, 28, dtype=torch.uint8),
            TypeError,
            "got dtype torch.uint8; convert uint8",
        ),
        (
            torch.rand(4, 1, 28, 28, dtype=torch.float64),
            TypeError,
            "float64 but the model's weights are torch.float32",
        ),
        (
            torch.rand(4, 1, 28, 28) * 255,
            ValueError,
            r"\[0, 1\].*divide uint8 pixel values by 255",
        ),
        (
            torch.rand(4, 1, 28, 28) - 0.5,
            ValueError,
            r"must lie in \[0, 1\], got values in \[-0.\d+",
        ),
        (
            torch.full((4, 1, 28, 28), float("nan")),
            ValueError,
            r"got values in \[nan, nan\]",
        ),
        ([[0.0]], TypeError, "must be a torch.Tensor, got list"),
    ],
)
def test_model_refuses_bad_images(x, err, match):
    model = small_mlp()
    with pytest.raises(err, match=match):
        model(x)
    with pytest.raises(err, match=match):
        model.eval().reconstruct(x)


def test_model_refuses_bad_latents_and_sizes():
    with pytest.raises(
        ValueError, match=r"latents must have shape \(B, 2\), got \(3, 5\)"
    ):
        small_mlp().decode(torch.zeros(3, 5))
    with pytest.raises(
        ValueError, match="latent_dim must be a positive integer, got 0"
    ):
        MLPVAE(latent_dim=0)
    with pytest.raises(ValueError, match="image_size 28 or 64, got 32"):
        ConvVAE(image_size=32)


# ---------------------------------------------------------- bad input, fit and evaluate


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"epochs": 0}, ValueError, "epochs must be a positive integer, got 0"),
        ({"epochs": 1.5}, ValueError, "epochs must be a positive integer, got 1.5"),
        ({"epochs": "2"}, ValueError, "epochs must be a positive integer, got '2'"),
        (
            {"batch_size": -8},
            ValueError,
            "batch_size must be a positive integer, got -8",
        ),
        ({"beta": -0.5}, ValueError, "beta must be >= 0, got -0.5"),
        ({"beta": float("nan")}, ValueError, "beta must be >= 0, got nan"),
        (
            {"beta": None},
            TypeError,
            "beta must be a number or a schedule.*got NoneType",
        ),
        ({"beta": "linear"}, ValueError, "constant, linear, cyclical"),
        ({"capacity": -1.0}, ValueError, "capacity must be >= 0"),
        ({"lr": -1e-3}, ValueError, "lr must be > 0, got -0.001"),
        (
            {"likelihood": "poisson"},
            ValueError,
            "unknown likelihood 'poisson'; "
            "valid are bernoulli, gaussian, gaussian_learned",
        ),
        ({"likelihood": "gaussian", "sigma": 0.0}, ValueError, "sigma must be > 0"),
        ({"free_bits": -0.1}, ValueError, "free_bits must be >= 0"),
        ({"gamma": -1.0}, ValueError, "gamma must be >= 0"),
        ({"log_every": 0}, ValueError, "log_every must be a positive integer"),
        (
            {"checkpoint_every": 0, "checkpoint_path": "x.pt"},
            ValueError,
            "checkpoint_every must be a positive integer",
        ),
        ({"resume": True}, ValueError, "resume=True needs checkpoint_path"),
        ({"device": "tpu9"}, RuntimeError, "tpu9"),
    ],
)
def test_fit_refuses_bad_arguments(kwargs, err, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kwargs = {"epochs": 1, **kwargs}
    with pytest.raises(err, match=match):
        fit(small_mlp(), binary_images(), progress=False, **kwargs)
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize(
    "images,err,match",
    [
        (
            torch.rand(8, 1, 32, 32),
            ValueError,
            r"images must have shape \(N, 1, 28, 28\) for this model, "
            r"got \(8, 1, 32, 32\)",
        ),
        (torch.rand(0, 1, 28, 28), ValueError, "images is empty"),
        (
            torch.zeros(8, 1, 28, 28, dtype=torch.int64),
            TypeError,
            "uint8 .0..255. or bool, got dtype torch.int64",
        ),
        (
            torch.rand(8, 1, 28, 28) * 255,
            ValueError,
            r"values in \[\d.*divide uint8 pixel values by 255",
        ),
        (
            torch.full((8, 1, 28, 28), float("nan")),
            ValueError,
            "images contain NaN values",
        ),
        (
            torch.full((8, 1, 28, 28), float("inf")),
            ValueError,
            r"values in \[inf, inf\]",
        ),
        (
            np.zeros((8, 1, 28, 28), np.float32),
            TypeError,
            "must be a torch.Tensor .N, C, H, W., got ndarray",
        ),
    ],
)
def test_fit_refuses_bad_images(images, err, match):
    with pytest.raises(err, match=match):
        fit(small_mlp(), images, epochs=1, progress=False)
    with pytest.raises(
        err,
        match=match.replace("images", "test_images", 1)
        if match.startswith("images")
        else match,
    ):
        fit(small_mlp(), binary_images(), test_images=images, epochs=1, progress=False)


def test_fit_refuses_a_model_that_is_not_a_vae():
    with pytest.raises(TypeError, match="model must be a betavae_lib VAE .*got Linear"):
        fit(torch.nn.Linear(784, 2), binary_images(), epochs=1, progress=False)


def test_evaluate_refuses_bad_images_and_names():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        evaluate(small_mlp(), binary_images() * 2)
    with pytest.raises(
        ValueError, match="valid are bernoulli, gaussian, gaussian_learned"
    ):
        evaluate(small_mlp(), binary_images(), likelihood="laplace")


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(
        ValueError,
        match="unknown dataset 'cifar10'; "
        "valid names are mnist, fashion_mnist, dsprites",
    ):
        load_dataset("cifar10")
    with pytest.raises(
        ValueError, match="unknown split 'validation'; valid splits are train, test"
    ):
        load_dataset("mnist", "validation")
    with pytest.raises(ValueError, match="valid are auto, npz, procedural"):
        load_dataset("dsprites", source="png")
    with pytest.raises(
        ValueError,
        match="schedule .constant, linear, cyclical., got the string 'cosine'",
    ):
        as_schedule("cosine")
    path = save(small_mlp(), tmp_path / "m.pt")
    with pytest.raises(
        CheckpointError,
        match="unknown model 'ResNet' asked for; valid are MLPVAE, ConvVAE",
    ):
        load(path, expect="ResNet")


def test_schedules_validate_their_arguments():
    with pytest.raises(ValueError, match="end must be >= 0, got -1.0"):
        Linear(end=-1.0, steps=10)
    with pytest.raises(
        ValueError, match="steps must be a positive integer number of steps, got 0"
    ):
        Linear(end=1.0, steps=0)
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\], got 1.5"):
        Cyclical(end=1.0, total_steps=100, ratio=1.5)


def test_subset_size_and_cuda_device_are_checked():
    ds = data.ImageDataset(
        "toy", "train", binary_images(10), torch.zeros(10, dtype=torch.long), ["a"]
    )
    with pytest.raises(
        ValueError, match="subset size must be a positive integer or None, got -3"
    ):
        ds.subset(-3)
    assert len(ds.subset(4)) == 4 and len(ds.subset(None)) == 10
    if not torch.cuda.is_available():
        with pytest.raises(
            RuntimeError, match="'cuda' was asked for but CUDA is not available"
        ):
            pick_device("cuda")


# -------------------------------------------------------------------- dataset integrity


def idx_gz(array: np.ndarray) -> bytes:
    """A gzipped unsigned-byte IDX file holding ``array``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


RNG = np.random.default_rng(0)
TOY_IMAGES = RNG.integers(0, 256, size=(40, 28, 28))
TOY_LABELS = RNG.integers(0, 10, size=40)
TOY_FILES = {
    "t10k-images-idx3-ubyte.gz": idx_gz(TOY_IMAGES),
    "t10k-labels-idx1-ubyte.gz": idx_gz(TOY_LABELS),
}


@pytest.fixture
def toy_checksums(offline, monkeypatch):
    """MNIST's loader expects the toy files' md5s (downloads still off, empty cache, no
    data dir)."""
    for name, blob in TOY_FILES.items():
        monkeypatch.setitem(data._IDX_FILES["mnist"]["files"], name, md5(blob))
    return offline


@pytest.fixture
def toy_root(toy_checksums):
    raw = toy_checksums / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, blob in TOY_FILES.items():
        (raw / name).write_bytes(blob)
    return toy_checksums / "root"


def test_intact_files_load(toy_root):
    ds = load_dataset("mnist", "test", root=toy_root)
    assert torch.equal(
        ds.images, torch.from_numpy(TOY_IMAGES).float().div(255).unsqueeze(1)
    )
    assert ds.labels.tolist() == TOY_LABELS.tolist()


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_corrupt_dataset_file_is_reported_with_its_path(toy_root, damage):
    path = toy_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(
        ChecksumError, match=rf"{path}.*corrupt or truncated.*Delete it and run again"
    ):
        load_dataset("mnist", "test", root=toy_root)


@needs_mnist
def test_corrupted_copy_of_the_real_mnist_is_detected(offline):
    source = Path(DATA_DIR) / "MNIST" / "raw"
    raw = offline / "copy" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(source / name, raw / name)
    assert len(load_dataset("mnist", "test", root=offline / "copy")) == 10_000
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-100])
    with pytest.raises(ChecksumError, match=rf"{labels}.*corrupt or truncated"):
        load_dataset("mnist", "test", root=offline / "copy")


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /MODE/NAME serves TOY_FILES[NAME]: MODE good as it is, bad with its bytes
    reversed, cut announcing the full length but closing the connection halfway."""

    def do_GET(self):
        mode, name = self.path.strip("/").split("/")
        body = TOY_FILES[name][::-1] if mode == "bad" else TOY_FILES[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


LABELS = "t10k-labels-idx1-ubyte.gz"
LABELS_SIZE = len(TOY_FILES[LABELS])


def test_download_keeps_only_a_verified_file(server, tmp_path):
    dest = tmp_path / "dl" / LABELS
    data.download(f"{server}/good/{LABELS}", dest, md5(TOY_FILES[LABELS]), timeout=10)
    assert dest.read_bytes() == TOY_FILES[LABELS]
    assert [p.name for p in dest.parent.iterdir()] == [LABELS]


@pytest.mark.parametrize(
    "mode,err,match",
    [
        (
            "bad",
            ChecksumError,
            f"has md5 [0-9a-f]{{32}}, "
            f"expected {md5(TOY_FILES[LABELS])}; nothing was kept",
        ),
        (
            "cut",
            IncompleteDownloadError,
            f"stopped after {LABELS_SIZE // 2} of {LABELS_SIZE} bytes",
        ),
    ],
)
def test_failed_download_leaves_nothing(server, tmp_path, mode, err, match):
    dest = tmp_path / "dl" / LABELS
    with pytest.raises(err, match=match):
        data.download(
            f"{server}/{mode}/{LABELS}", dest, md5(TOY_FILES[LABELS]), timeout=10
        )
    assert list(dest.parent.iterdir()) == []


def test_load_dataset_keeps_only_verified_downloads(server, toy_checksums, monkeypatch):
    monkeypatch.delenv("BETAVAE_OFFLINE")
    cache = toy_checksums / "cache" / "MNIST" / "raw"

    def load_from(mode):
        monkeypatch.setitem(data._IDX_FILES["mnist"], "mirrors", [f"{server}/{mode}/"])
        return load_dataset("mnist", "test")

    with pytest.raises(ChecksumError, match="nothing was kept"):
        load_from("bad")
    assert list(cache.iterdir()) == []
    with pytest.raises(DataNotFoundError, match="stopped after .* bytes"):
        load_from("cut")
    assert list(cache.iterdir()) == []
    ds = load_from("good")
    assert torch.equal(
        ds.images, torch.from_numpy(TOY_IMAGES).float().div(255).unsqueeze(1)
    )
    assert sorted(p.name for p in cache.iterdir()) == sorted(TOY_FILES)


# -------------------------------------------------------------------------- checkpoints


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _OpensFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("payload", [_RunsShell, _OpensFile])
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_loading_never_executes_code(tmp_path, payload, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    evil = {
        "format": checkpoints.FORMAT,
        "model": "MLPVAE",
        "config": {"latent_dim": 2},
        "state_dict": {},
        "meta": payload(marker),
    }
    if writer == "torch":
        torch.save(evil, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(evil, f, protocol=2)
    for attempt in (
        lambda: load(path),
        lambda: checkpoints.read_training_state(path),
        lambda: fit(
            small_mlp(),
            binary_images(),
            epochs=1,
            progress=False,
            checkpoint_path=path,
            resume=True,
        ),
    ):
        with pytest.raises(CheckpointError, match="not a safe betavae_lib checkpoint"):
            attempt()
        assert not marker.exists()
    with open(path, "rb") as f:  # the file really is an exploit: unsafe loading runs it
        torch.load(f, weights_only=False) if writer == "torch" else pickle.load(f)
    assert marker.exists()


def test_wrong_model_or_config_fails_clearly(tmp_path):
    path = save(MLPVAE(latent_dim=4, hidden=(16,)), tmp_path / "m.pt")
    with pytest.raises(
        CheckpointError, match="holds a MLPVAE, not the ConvVAE asked for"
    ):
        load(path, expect=ConvVAE)
    with pytest.raises(CheckpointError, match=r"hidden=\[16\], not \(32,\) as asked"):
        load(path, hidden=(32,))
    with pytest.raises(
        CheckpointError,
        match=r"model checkpoint \(from save\(\)\), not a training state",
    ):
        fit(
            MLPVAE(latent_dim=4, hidden=(16,)),
            binary_images(),
            epochs=1,
            progress=False,
            checkpoint_path=path,
            resume=True,
        )


def test_weights_that_do_not_fit_the_config_fail_clearly(tmp_path):
    path = tmp_path / "m.pt"
    ckpt = checkpoints.read(save(small_mlp(), path))
    ckpt["config"]["latent_dim"] = 3
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="weights do not fit MLPVAE"):
        load(path)


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch, error):
    old_model, new_model = small_mlp(), small_mlp()
    path = save(old_model, tmp_path / "m.pt", note="old")
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(100)
        f.truncate()
        raise error

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(type(error)):
        save(new_model, path, note="new")
    monkeypatch.undo()
    assert path.read_bytes() == before
    loaded, meta = load(path)
    assert meta == {"note": "old"}
    for a, b in zip(loaded.state_dict().values(), old_model.state_dict().values()):
        assert torch.equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_failed_training_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    fit(
        small_mlp(),
        binary_images(),
        epochs=1,
        batch_size=8,
        progress=False,
        checkpoint_path=path,
    )
    before = path.read_bytes()

    def fail(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        fit(
            small_mlp(),
            binary_images(),
            epochs=2,
            batch_size=8,
            progress=False,
            checkpoint_path=path,
            overwrite=True,
        )
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert checkpoints.read_training_state(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


# ------------------------------------------------------------ nothing silent, round two


def test_last_update_that_makes_the_weights_non_finite_is_an_error():
    """One step with a learning rate that overflows float32: the loss of that step was
    finite, the weights after it are not; fit names the step instead of returning
    them."""

    def overflow():
        fit(
            small_mlp(),
            binary_images(32),
            epochs=1,
            batch_size=32,
            lr=1e39,
            progress=False,
        )

    with pytest.raises(NonFiniteWeightsError, match="after optimiser step 0 .epoch 1."):
        overflow()
    with pytest.raises(NonFiniteLossError):  # the subclass is caught as before
        overflow()


INF = float("inf")


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"lr": INF}, "lr"),
        ({"beta": INF}, "beta"),
        ({"likelihood": "gaussian", "sigma": INF}, "sigma"),
        ({"free_bits": INF}, "free_bits"),
        ({"gamma": INF, "capacity": 1.0}, "gamma"),
        ({"capacity": INF}, "capacity"),
    ],
)
def test_infinite_settings_are_refused_before_training(kwargs, name):
    """Not a NonFiniteLossError advising a lower learning rate: the argument is
    named."""
    with pytest.raises(ValueError, match=f"{name} must be finite, got inf"):
        fit(small_mlp(), binary_images(), epochs=1, progress=False, **kwargs)


@pytest.mark.parametrize(
    "options, names",
    [
        ({"tc": True, "capacity": 2.0}, ("tc=True", "capacity=2.0")),
        ({"capacity": 2.0, "free_bits": 0.5}, ("capacity=2.0", "free_bits=0.5")),
        ({"tc": True, "free_bits": 0.5}, ("tc=True", "free_bits=0.5")),
    ],
)
def test_objectives_that_cannot_be_combined_are_refused(options, names):
    match = f"{names[0]} and {names[1]} cannot be combined"
    with pytest.raises(ValueError, match=match):
        fit(small_mlp(), binary_images(), epochs=1, progress=False, **options)
    x = binary_images(4)
    mu = logvar = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=match):
        beta_vae_loss(x, torch.zeros_like(x), mu, logvar, mu, dataset_size=4, **options)


@pytest.mark.parametrize("total_steps, n_cycles", [(4, 4), (3, 4), (5, 4)])
def test_cyclical_schedule_needs_two_steps_per_cycle(total_steps, n_cycles):
    with pytest.raises(ValueError, match="at least 2 steps per cycle"):
        Cyclical(end=1.0, total_steps=total_steps, n_cycles=n_cycles)


def test_schedules_refuse_infinite_and_non_integer_arguments():
    with pytest.raises(ValueError, match="end must be finite, got inf"):
        Cyclical(end=INF, total_steps=100)
    with pytest.raises(ValueError, match="steps must be a positive integer .*got inf"):
        Linear(end=1.0, steps=INF)
    with pytest.raises(ValueError, match="beta must be finite, got inf"):
        as_schedule(INF)


def test_float64_model_trains_and_evaluates_in_float64():
    model = small_mlp().double()
    history = fit(model, binary_images(), epochs=1, batch_size=8, progress=False)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert np.isfinite(history.train_loss[-1])
    assert np.isfinite(evaluate(model, binary_images())["neg_elbo"])


def test_existing_checkpoint_is_not_overwritten_unless_asked(tmp_path):
    path = tmp_path / "run.pt"
    fit(small_mlp(), binary_images(), epochs=1, progress=False, checkpoint_path=path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="resume=True .* overwrite=True"):
        fit(
            small_mlp(), binary_images(), epochs=1, progress=False, checkpoint_path=path
        )
    assert path.read_bytes() == before
    fit(
        small_mlp(),
        binary_images(),
        epochs=2,
        progress=False,
        checkpoint_path=path,
        overwrite=True,
    )
    assert checkpoints.read_training_state(path)["epoch"] == 2


def test_unwritable_checkpoint_path_fails_before_the_first_epoch(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    epochs_done = []
    with pytest.raises(OSError, match="checkpoints cannot be written to"):
        fit(
            small_mlp(),
            binary_images(),
            epochs=1,
            progress=False,
            checkpoint_path=tmp_path / "a_file" / "run.pt",
            callback=lambda epoch, *_: epochs_done.append(epoch),
        )
    assert epochs_done == []


def test_temporary_files_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    """A writer killed with SIGKILL mid-save leaves its temporary file; the next save to
    the same path removes it, but never a temporary whose writer is alive."""
    path = tmp_path / "m.pt"
    script = (
        "import os, signal\n"
        "from betavae_lib._common import atomic_write\n"
        f"with atomic_write({str(path)!r}) as (f, tmp):\n"
        "    f.write(b'x' * 1000); f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, "-c", script], env=env)
    assert killed.returncode == -signal.SIGKILL
    left = list(tmp_path.glob("m.pt.*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size == 1000
    with _common.atomic_write(path) as (f, _):  # a writer that is still alive
        alive = list(tmp_path.glob("m.pt.*.tmp"))
        save(small_mlp(), path)  # another save meanwhile removes only the dead one
        assert list(tmp_path.glob("m.pt.*.tmp")) == [p for p in alive if p != left[0]]
        f.write(b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    old = tmp_path / "m.pt.abcd1234.tmp"  # an earlier version's name, a day old
    old.write_bytes(b"x")
    os.utime(old, (0, 0))
    save(small_mlp(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


@pytest.mark.parametrize(
    "call, err, match",
    [
        (
            lambda: metrics.iwae_bound(small_mlp(), torch.zeros(0, 1, 28, 28), k=5),
            ValueError,
            "x is empty",
        ),
        (
            lambda: metrics.mig(np.zeros((0, 3)), np.zeros((0, 2), int)),
            ValueError,
            "codes is empty",
        ),
        (
            lambda: metrics.discrete_entropy(np.zeros((0, 2), int)),
            ValueError,
            "factors is empty",
        ),
        (
            lambda: metrics.histogram_discretize(np.zeros((10, 2)), n_bins=10**8),
            ValueError,
            r"n_bins must be an integer in \[1, 100000\], got 100000000",
        ),
        (lambda: small_mlp().sample(2.5), ValueError, "n must be a positive integer"),
        (lambda: plots.image_grid(torch.zeros(0, 1, 28, 28)), ValueError, "non-empty"),
        (
            lambda: plots.image_grid(torch.zeros(4, 1, 28, 28), nrow=0),
            ValueError,
            "nrow must be a positive integer",
        ),
        (
            lambda: fid.get_extractor("domain", batch_size=0),
            ValueError,
            "batch_size must be a positive integer, got 0",
        ),
        (
            lambda: data.ImageDataset(
                "toy",
                "train",
                binary_images(10),
                torch.zeros(10, dtype=torch.long),
                ["a"],
            ).subset(2.5),
            ValueError,
            "subset size must be a positive integer or None, got 2.5",
        ),
    ],
    ids=[
        "iwae-empty",
        "mig-empty",
        "entropy-empty",
        "n_bins-huge",
        "sample-2.5",
        "grid-empty",
        "grid-nrow-0",
        "extractor-batch-0",
        "subset-2.5",
    ],
)
def test_degenerate_arguments_are_named_at_the_boundary(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_subset_accepts_a_whole_float():
    ds = data.ImageDataset(
        "toy", "train", binary_images(10), torch.zeros(10, dtype=torch.long), ["a"]
    )
    assert len(ds.subset(3.0)) == 3


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Announces 100 bytes, then sends one every 0.2 s (at most 20 s)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        for _ in range(100):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:  # the client gave up
                return
            time.sleep(0.2)

    def log_message(self, *args):
        pass


def test_a_download_that_trickles_is_abandoned_at_its_deadline(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/slow"
        start = time.monotonic()
        with pytest.raises(IncompleteDownloadError, match="deadline of 1 s"):
            data.download(url, tmp_path / "f.gz", "0" * 32, timeout=5, deadline=1)
        assert time.monotonic() - start < 3
        assert list(tmp_path.iterdir()) == []
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_arguments_found_beyond_the_reported_cases_are_checked():
    """The same pattern elsewhere: arguments that failed late, or were silently
    changed."""
    with pytest.raises(TypeError, match="callback must be callable"):  # after an epoch
        fit(small_mlp(), binary_images(), epochs=1, progress=False, callback=3)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        fit(small_mlp(), binary_images(), epochs=1, progress=False, seed=1.5)
    with pytest.raises(ValueError, match="hidden sizes must be a positive integer"):
        MLPVAE(hidden=(0,))  # a zero-width layer
    with pytest.raises(ValueError, match="width must be a positive integer"):
        ConvVAE(width=0)
    with pytest.raises(ValueError, match="dSprites indices must be integers"):
        data.DSprites(source="procedural").images([2.5])  # was read as index 2
    config = MLPVAE(latent_dim=np.int64(2), hidden=np.array([8])).config
    assert all(type(v) is int for v in [config["latent_dim"], *config["hidden"]])

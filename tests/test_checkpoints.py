"""Checkpoint round trips rebuild the same model from the file alone."""

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from betavae_lib import MLPVAE, ConvVAE, checkpoints, load, save
from betavae_lib.checkpoints import CheckpointError


@pytest.mark.parametrize(
    "model",
    [
        MLPVAE(latent_dim=5, hidden=(32, 16)),
        MLPVAE(latent_dim=5, hidden=(32, 16), activation="tanh"),
        ConvVAE(latent_dim=4, image_size=28),
    ],
    ids=["mlp", "mlp-tanh", "conv"],
)
def test_round_trip_gives_identical_outputs(tmp_path, model):
    model.eval()
    path = save(model, tmp_path / "m.pt", beta=4.0, dataset="mnist", epochs=3)
    loaded, meta = load(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert meta == {"beta": 4.0, "dataset": "mnist", "epochs": 3}
    x = torch.rand(4, *model.image_shape)
    mu_a, lv_a = model.encode(x)
    mu_b, lv_b = loaded.encode(x)
    assert torch.equal(mu_a, mu_b) and torch.equal(lv_a, lv_b)
    z = torch.randn(4, model.latent_dim)
    assert torch.equal(model.decode(z), loaded.decode(z))


def test_expectations_are_checked(tmp_path):
    path = save(MLPVAE(latent_dim=5), tmp_path / "m.pt")
    load(path, expect=MLPVAE, latent_dim=5)
    with pytest.raises(CheckpointError, match="holds a MLPVAE, not the ConvVAE"):
        load(path, expect=ConvVAE)
    with pytest.raises(CheckpointError, match="latent_dim=5, not 10"):
        load(path, latent_dim=10)


def test_non_checkpoint_files_are_refused(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a betavae_lib checkpoint"):
        load(path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "value, stored",
    [
        (np.float64(12.3), 12.3),
        (np.int32(7), 7),
        (np.bool_(True), True),
        (np.array([1.5, 2.5]), torch.tensor([1.5, 2.5], dtype=torch.float64)),
        (Path("runs/beta4.pt"), "runs/beta4.pt"),
        (datetime.datetime(2024, 5, 1, 12, 30), "2024-05-01T12:30:00"),
        (datetime.date(2024, 5, 1), "2024-05-01"),
        ({"fid": [np.float32(1.5), (np.int64(2), "x")]}, {"fid": [1.5, (2, "x")]}),
    ],
    ids=[
        "np.float64",
        "np.int32",
        "np.bool_",
        "array",
        "Path",
        "datetime",
        "date",
        "nested",
    ],
)
def test_meta_a_file_was_saved_with_always_loads(tmp_path, value, stored):
    path = save(MLPVAE(latent_dim=2, hidden=(8,)), tmp_path / "m.pt", value=value)
    _, meta = load(path)
    got = meta["value"]
    if isinstance(stored, torch.Tensor):
        assert torch.equal(got, stored)
    else:
        assert got == stored and type(got) is type(stored)


def test_meta_that_cannot_be_stored_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"meta\['net'\] is a MLPVAE"):
        save(MLPVAE(latent_dim=2), tmp_path / "m.pt", net=MLPVAE(latent_dim=2))
    assert list(tmp_path.iterdir()) == []


def write_checkpoint(path, **changes):
    """A real checkpoint of a small model with some keys changed (None removes one)."""
    ckpt = checkpoints.read(save(MLPVAE(latent_dim=2, hidden=(8,)), path))
    for key, value in changes.items():
        if value is None:
            del ckpt[key]
        else:
            ckpt[key] = value
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"config": [2, 8]}, "config must be a dict, got a list"),
        ({"config": None}, "incomplete: missing config"),
        ({"state_dict": None}, "incomplete: missing state_dict"),
        ({"model": None}, "incomplete: missing model"),
        (
            {"state_dict": {"log_sigma": 1.0}},
            r"state_dict\['log_sigma'\] is not a tensor",
        ),
        ({"meta": [1]}, "meta must be a dict"),
        ({"config": {"latent_dim": 2, "depth": 3}}, "config does not build MLPVAE"),
        ({"config": {"latent_dim": 2, "hidden": [10**9]}}, "asks for more than"),
        ({"config": {"latent_dim": 2, "hidden": [9]}}, r"\(8, 784\), not \(9, 784\)"),
        (
            {"config": {"latent_dim": 2, "hidden": [8], "activation": "gelu"}},
            "config does not build MLPVAE.*activation must be one of",
        ),
        (
            {"config": {"latent_dim": 2, "hidden": [8], "activation": "x" * 10_000}},
            "asks for more than",
        ),
    ],
)
def test_malformed_files_raise_checkpoint_error(tmp_path, changes, match):
    path = write_checkpoint(tmp_path / "m.pt", **changes)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))}.*{match}"):
        load(path)


def test_a_small_file_cannot_make_load_allocate_gigabytes(tmp_path):
    """A 30 KB file whose config asks for two 20,000-unit layers (1.7 GB of weights):
    load must refuse it from the shapes, in a process that stays small."""
    path = write_checkpoint(
        tmp_path / "m.pt", config={"latent_dim": 2, "hidden": [20000, 20000]}
    )
    assert path.stat().st_size < 100_000
    script = (
        "import resource, sys\n"
        "from betavae_lib import load, CheckpointError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    load({str(path)!r})\n"
        "except CheckpointError as e:\n"
        "    print('refused:', e)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print('grew_kb', after - before)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True
    ).stdout
    assert "refused:" in out and "weights do not fit MLPVAE" in out
    assert int(out.split("grew_kb")[1]) < 200_000  # KiB; the weights would be 1.7 GB


def test_domain_classifier_loader_refuses_malformed_files(tmp_path):
    from betavae_lib import fid

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(CheckpointError, match=f"{garbage} is not a safe"):
        fid.load_domain_classifier(path=garbage)
    no_config = tmp_path / "no_config.pt"
    torch.save({"format": fid.DOMAIN_FORMAT, "state_dict": {}, "meta": {}}, no_config)
    with pytest.raises(CheckpointError, match="config is missing or not a dict"):
        fid.load_domain_classifier(path=no_config)


def test_a_tanh_model_loads_as_tanh_and_a_relu_file_as_relu(tmp_path):
    """The activation comes from the file: the tanh model's outputs are not those the
    same weights give with ReLU units, and a ReLU file (no activation in its config)
    still loads as ReLU."""
    torch.manual_seed(0)
    tanh = MLPVAE(latent_dim=3, hidden=(8,), activation="tanh").eval()
    loaded, _ = load(save(tanh, tmp_path / "tanh.pt"), activation="tanh")
    assert isinstance(loaded.decoder[1], torch.nn.Tanh)
    relu = MLPVAE(latent_dim=3, hidden=(8,)).eval()
    relu.load_state_dict(tanh.state_dict())
    relu_loaded, _ = load(save(relu, tmp_path / "relu.pt"))
    assert "activation" not in checkpoints.read(tmp_path / "relu.pt")["config"]
    z = torch.randn(5, 3)
    assert torch.equal(loaded.decode(z), tanh.decode(z))
    assert torch.equal(relu_loaded.decode(z), relu.decode(z))
    assert not torch.allclose(loaded.decode(z), relu_loaded.decode(z))
    with pytest.raises(CheckpointError, match="activation='tanh', not 'relu'"):
        load(tmp_path / "tanh.pt", activation="relu")
    load(tmp_path / "relu.pt", activation="relu")  # the default, left out of the file
    with pytest.raises(CheckpointError, match="activation='relu', not 'tanh'"):
        load(tmp_path / "relu.pt", activation="tanh")

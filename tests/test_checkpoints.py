"""Checkpoint round trips rebuild the same model from the file alone."""

import pytest
import torch

from betavae_lib import MLPVAE, ConvVAE, load, save
from betavae_lib.checkpoints import CheckpointError


@pytest.mark.parametrize(
    "model",
    [MLPVAE(latent_dim=5, hidden=(32, 16)), ConvVAE(latent_dim=4, image_size=28)],
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

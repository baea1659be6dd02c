"""The model cache: a hit loads what training stored, any change of the settings is a
miss, a corrupt or stale entry is retrained with a warning, and it can be turned off."""

import pytest
import torch
from conftest import binary_images

import betavae_lib
from betavae_lib import MLPVAE, fit, seed_everything
from betavae_lib import cache as cache_mod
from betavae_lib.cache import ModelCacheWarning, train_grid
from betavae_lib.checkpoints import data_fingerprint as images_digest
from betavae_lib.schedules import Linear

IMAGES = binary_images(64)
CONFIG = dict(latent_dim=2, hidden=(16,))
GRID = {"β = 1": dict(beta=1.0), "β = 4": dict(beta=Linear(4.0, steps=4))}
SETTINGS = dict(epochs=2, batch_size=32, lr=1e-3, seed=0, device="cpu")


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BETAVAE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BETAVAE_CACHE", raising=False)
    return tmp_path / "models"


@pytest.fixture
def trainings(monkeypatch):
    """Counts the models trained (fit_ensemble calls × members)."""
    count = []
    real = cache_mod.fit_ensemble

    def counting(models, *args, **kwargs):
        count.append(len(models))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(cache_mod, "fit_ensemble", counting)
    return count


def grid(images=IMAGES, grid=GRID, config=CONFIG, **changes):
    return train_grid(MLPVAE, config, images, grid, **{**SETTINGS, **changes})


def test_a_hit_loads_the_stored_models_and_histories(trainings, cache_dir, capsys):
    models, histories = grid()
    assert "β = 1: trained; β = 4: trained" in capsys.readouterr().out
    assert len(list(cache_dir.glob("*.pt"))) == 2 and sum(trainings) == 2
    again, again_histories = grid()
    assert (
        "β = 1: loaded from cache; β = 4: loaded from cache" in capsys.readouterr().out
    )
    assert sum(trainings) == 2  # nothing trained the second time
    for key in GRID:
        assert again_histories[key].as_dict() == histories[key].as_dict()
        for name, value in models[key].state_dict().items():
            assert torch.equal(again[key].state_dict()[name], value)


def test_the_models_are_those_fit_trains():
    models, histories = grid()
    seed_everything(0)
    alone = MLPVAE(**CONFIG)
    history = fit(alone, IMAGES, progress=False, beta=Linear(4.0, steps=4), **SETTINGS)
    assert histories["β = 4"].train_loss == history.train_loss
    for name, value in alone.state_dict().items():
        assert torch.equal(models["β = 4"].state_dict()[name], value)


def test_binarised_tanh_models_are_those_fit_trains():
    """binarize=True and tanh units go through to the ensemble: the models are the
    ones fit trains alone with them."""
    grey = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    config = dict(CONFIG, activation="tanh")
    models, histories = grid(images=grey, config=config, binarize=True)
    seed_everything(0)
    alone = MLPVAE(**config)
    history = fit(
        alone,
        grey,
        progress=False,
        beta=Linear(4.0, steps=4),
        binarize=True,
        **SETTINGS,
    )
    # bit for bit: the ensemble makes fit's kernel calls (test_ensemble.py)
    assert histories["β = 4"].train_loss == history.train_loss
    for name, value in alone.state_dict().items():
        assert torch.equal(models["β = 4"].state_dict()[name], value), name
    unbinarised = grid(images=grey, config=config)[1]
    assert unbinarised["β = 4"].train_loss != history.train_loss


def test_runs_without_binarize_keep_their_cache_keys():
    """binarize enters the key only when it is on: the entries of earlier runs (and
    the ReLU models, whose config has no activation) stay valid."""
    parts = cache_mod.training_parts(IMAGES, None, 2, 32, 1e-3)
    assert "binarize" not in parts
    assert cache_mod.training_parts(IMAGES, None, 2, 32, 1e-3, True) == {
        **parts,
        "binarize": True,
    }
    assert "activation" not in MLPVAE(**CONFIG).config


def _pixel_flipped():
    images = IMAGES.clone()
    images[5, 0, 3, 3] = 1 - images[5, 0, 3, 3]
    return images


@pytest.mark.parametrize(
    "change",
    [
        dict(epochs=3),
        dict(batch_size=16),
        dict(lr=2e-3),
        dict(seed=1),
        dict(config=dict(latent_dim=3, hidden=(16,))),
        dict(grid={"β = 1": dict(beta=1.5)}),
        dict(grid={"β = 1": dict(beta=1.0, free_bits=0.1)}),
        dict(images=_pixel_flipped()),
        dict(test_images=IMAGES[:16]),
        dict(binarize=True),
        dict(config=dict(latent_dim=2, hidden=(16,), activation="tanh")),
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_change_of_the_settings_is_a_miss(trainings, change):
    grid(grid={"β = 1": dict(beta=1.0)})
    grid(**{"grid": {"β = 1": dict(beta=1.0)}, **change})
    assert sum(trainings) == 2


def test_a_new_library_version_is_a_miss(trainings, monkeypatch):
    grid()
    monkeypatch.setattr(betavae_lib._version, "__version__", "999.0")
    grid()
    assert sum(trainings) == 4


def test_a_corrupt_entry_is_retrained_with_a_warning(trainings, cache_dir):
    grid()
    entry = sorted(cache_dir.glob("*.pt"))[0]
    entry.write_bytes(b"not a checkpoint")
    with pytest.warns(ModelCacheWarning, match="cannot be read"):
        grid()
    assert sum(trainings) == 3  # only the corrupt one
    grid()
    assert sum(trainings) == 3  # and it was rewritten


def test_a_stale_entry_is_never_trusted(trainings, cache_dir):
    """An entry whose stored key is not its name (copied over another) is retrained."""
    grid()
    first, second = sorted(cache_dir.glob("*.pt"))
    second.write_bytes(first.read_bytes())
    with pytest.warns(ModelCacheWarning, match="other settings"):
        grid()
    assert sum(trainings) == 3


def test_the_cache_can_be_turned_off(trainings, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("BETAVAE_CACHE", "off")
    grid()
    grid()
    assert sum(trainings) == 4 and not cache_dir.exists()
    assert "(model cache off)" in capsys.readouterr().out


def test_members_with_another_architecture_train_as_their_own_ensemble(trainings):
    models, _ = grid(grid={"a": dict(beta=1.0), "wide": dict(beta=1.0, latent_dim=5)})
    assert sorted(trainings) == [1, 1] and models["wide"].latent_dim == 5


def test_the_content_hash_sees_every_pixel_and_the_dtype():
    assert images_digest(IMAGES) == images_digest(IMAGES.clone())
    assert images_digest(IMAGES) != images_digest(_pixel_flipped())
    assert images_digest(IMAGES) != images_digest(IMAGES.bool())

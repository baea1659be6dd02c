"""Cache keys are pinned: the keys of a few representative settings, written out as
literals, so that moving code can never silently retrain every cached model or make a
sweep folder refuse its own grid. A change of key on purpose updates these values
(and caches retrain)."""

import json

import pytest
import torch

from betavae_lib import cache
from betavae_lib.models import MLPVAE, ConvVAE
from betavae_lib.objective import Objective
from betavae_lib.schedules import Cyclical, Linear
from betavae_lib.sweep import get_grid

OBJECTIVES = {
    "beta": Objective(beta=4.0),
    "capacity": Objective(capacity=Linear(end=25.0, steps=1000), gamma=100.0),
    "tc": Objective(beta=6.0, tc=True, likelihood="gaussian", sigma=0.5),
    "free_bits": Objective(
        beta=Cyclical(end=1.0, total_steps=400, n_cycles=4), free_bits=0.5
    ),
}

DESCRIPTIONS = {
    "beta": '{"beta": 4.0, "capacity": null, "free_bits": 0.0, "gamma": 1000.0, '
    '"likelihood": "bernoulli", "sigma": 0.1, "tc": false}',
    "capacity": '{"beta": 1.0, "capacity": {"end": 25.0, "schedule": "Linear", '
    '"start": 0.0, "steps": 1000}, "free_bits": 0.0, "gamma": 100.0, '
    '"likelihood": "bernoulli", "sigma": 0.1, "tc": false}',
    "tc": '{"beta": 6.0, "capacity": null, "free_bits": 0.0, "gamma": 1000.0, '
    '"likelihood": "gaussian", "sigma": 0.5, "tc": true}',
    "free_bits": '{"beta": {"end": 1.0, "n_cycles": 4, "ratio": 0.5, "schedule": '
    '"Cyclical", "total_steps": 400}, "capacity": null, "free_bits": 0.5, '
    '"gamma": 1000.0, "likelihood": "bernoulli", "sigma": 0.1, "tc": false}',
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_descriptions_are_pinned(name):
    described = json.dumps(OBJECTIVES[name].describe(), sort_keys=True)
    assert described == DESCRIPTIONS[name]


def _images():
    return (torch.arange(64 * 784) % 7 / 6.0).reshape(64, 1, 28, 28)


def _key(name):
    images = _images()
    with_test = cache.training_parts(
        images, images[:16].flip(0), epochs=3, batch_size=16, lr=1e-3
    )
    binarized = cache.training_parts(
        images, None, epochs=2, batch_size=32, lr=5e-4, binarize=True
    )
    model_class, config, objective, seed, training, steps = {
        "mlp_beta": (MLPVAE, dict(latent_dim=10), "beta", 0, with_test, None),
        "conv_capacity": (ConvVAE, dict(latent_dim=6), "capacity", 3, binarized, 4),
        "mlp_free_bits_schedule": (
            MLPVAE,
            dict(latent_dim=2, hidden=64),
            "free_bits",
            1,
            with_test,
            12,
        ),
    }[name]
    parts = cache.key_parts(
        model_class, config, OBJECTIVES[objective], seed, training, steps
    )
    parts["library"] = "PINNED"  # the version enters every key; pinned separately
    return cache.entry_key(parts)


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "mlp_beta",
            "2dc1c302456731931f65203b60eb6278f7982802bee0f3576eec98e6e07a983b",
        ),
        (
            "conv_capacity",
            "8fcb11603952eb8dd7bf79de49e844ece62f32027886d0e5cbeef4f56dce99dc",
        ),
        (
            "mlp_free_bits_schedule",
            "89df83bd1c14f18cab62c94cc594db87ba17211d1299f3804947cdad642e240c",
        ),
    ],
)
def test_model_cache_keys_are_pinned(name, expected):
    assert _key(name) == expected


@pytest.mark.parametrize(
    "profile, fingerprint", [("smoke", "3c1f4f440e8e"), ("full", "ebc243b96752")]
)
def test_sweep_grid_fingerprints_are_pinned(profile, fingerprint):
    assert get_grid("chapter6-seeds", profile).fingerprint() == fingerprint

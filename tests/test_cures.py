"""Cures for posterior collapse: annealing schedules, free bits and the capacity
objective, against hand-computed values."""

import math

import pytest
import torch

from betavae_lib import MLPVAE, fit
from betavae_lib.losses import beta_vae_loss
from betavae_lib.schedules import Constant, Cyclical, Linear, as_schedule

LOG2 = math.log(2)


# ---------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.0), (25, 1.0), (50, 2.0), (99, 3.96), (100, 4.0), (1000, 4.0)],
)
def test_linear_warm_up_values(step, expected):
    assert Linear(end=4.0, steps=100)(step) == pytest.approx(expected, abs=1e-12)


def test_linear_warm_up_from_a_nonzero_start():
    schedule = Linear(end=1.0, steps=10, start=0.5)
    assert [schedule(t) for t in (0, 4, 10, 11)] == pytest.approx(
        [0.5, 0.7, 1.0, 1.0], abs=1e-12
    )


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),
        (5, 0.4),
        (12, 0.96),
        (13, 1.0),
        (24, 1.0),  # first cycle: ramp over 12.5 steps, then flat
        (25, 0.0),
        (30, 0.4),
        (50, 0.0),
        (62, 0.96),
        (99, 1.0),  # it restarts at 0 every 25 steps
    ],
)
def test_cyclical_values(step, expected):
    """Fu et al. (2019) with 4 cycles of 25 steps and ratio 0.5:
    value = min((t mod 25) / 12.5, 1)."""
    assert Cyclical(end=1.0, total_steps=100, n_cycles=4, ratio=0.5)(
        step
    ) == pytest.approx(expected, abs=1e-12)


def test_cyclical_scales_to_end_and_handles_fractional_periods():
    schedule = Cyclical(
        end=4.0, total_steps=10, n_cycles=3, ratio=0.5
    )  # period 10/3, ramp 5/3 steps
    assert [schedule(t) for t in (0, 1, 4, 7)] == pytest.approx(
        [0.0, 2.4, 1.6, 0.8], abs=1e-12
    )


def test_numbers_become_constant_schedules():
    assert as_schedule(2.5)(12345) == 2.5 and isinstance(as_schedule(2.5), Constant)
    with pytest.raises(ValueError, match="beta must be a number or a schedule"):
        as_schedule("linear")


def test_fit_applies_the_schedule_at_every_step():
    """Two steps per epoch: history.beta holds β at each epoch's last step, 1 and 3, of
    Linear(1, 4)."""
    images = (
        torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.5
    ).float()
    model = MLPVAE(latent_dim=2, hidden=(16,))
    history = fit(
        model,
        images,
        epochs=3,
        batch_size=32,
        beta=Linear(1.0, steps=4),
        device="cpu",
        progress=False,
    )
    assert history.beta == pytest.approx([0.25, 0.75, 1.0])
    assert history.steps == 6


# ---------------------------------------------------------------------------- free bits


def _fixed_batch(mu_rows):
    """Two 4-pixel images with p = 0.5 everywhere (recon = 4 log 2 each) and
    unit-variance posteriors."""
    x = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[0.0, 0.0], [1.0, 1.0]]]])
    logits = torch.zeros(2, 1, 2, 2)
    mu = torch.tensor(mu_rows, requires_grad=True)
    logvar = torch.zeros(2, 2, requires_grad=True)
    return x, logits, mu, logvar


def test_free_bits_value_is_hand_computed():
    # KL_d = mu_d² / 2 with unit variances: dim 0 has batch-mean KL (2 + 2)/2 = 2, dim 1
    # (0.1 + 0.1)/2 = 0.1
    x, logits, mu, logvar = _fixed_batch(
        [[2.0, math.sqrt(0.2)], [-2.0, -math.sqrt(0.2)]]
    )
    terms = beta_vae_loss(x, logits, mu, logvar, beta=2.0, free_bits=0.5)
    assert terms.kl_per_dim.tolist() == pytest.approx([2.0, 0.1])
    assert terms.kl.item() == pytest.approx(2.1)  # the reported KL is the true one
    assert terms.total.item() == pytest.approx(4 * LOG2 + 2.0 * (2.0 + 0.5))


def test_free_bits_gradient_is_zero_below_the_floor():
    x, logits, mu, logvar = _fixed_batch(
        [[2.0, math.sqrt(0.2)], [-2.0, -math.sqrt(0.2)]]
    )
    beta_vae_loss(x, logits, mu, logvar, beta=2.0, free_bits=0.5).total.backward()
    assert mu.grad[:, 1].abs().max() == 0 and logvar.grad[:, 1].abs().max() == 0
    # above the floor: d/dmu of β · mean_b(mu²/2) = β mu / B
    torch.testing.assert_close(mu.grad[:, 0], torch.tensor([2.0, -2.0]))


def test_free_bits_floor_is_on_the_batch_mean_not_each_example():
    # dim 1: per-example KL 0.1 and 0.9, batch mean 0.5 < λ = 0.6, so the whole
    # dimension is floored
    x, logits, mu, logvar = _fixed_batch(
        [[2.0, math.sqrt(0.2)], [-2.0, math.sqrt(1.8)]]
    )
    terms = beta_vae_loss(x, logits, mu, logvar, beta=1.0, free_bits=0.6)
    assert terms.total.item() == pytest.approx(
        4 * LOG2 + 2.0 + 0.6
    )  # a per-example floor would give 2.75
    terms.total.backward()
    assert mu.grad[:, 1].abs().max() == 0


def test_without_free_bits_every_dimension_gets_a_gradient():
    x, logits, mu, logvar = _fixed_batch(
        [[2.0, math.sqrt(0.2)], [-2.0, -math.sqrt(0.2)]]
    )
    terms = beta_vae_loss(x, logits, mu, logvar, beta=2.0)
    assert terms.total.item() == pytest.approx(4 * LOG2 + 2.0 * 2.1)
    terms.total.backward()
    torch.testing.assert_close(
        mu.grad[:, 1], 2.0 * torch.tensor([math.sqrt(0.2), -math.sqrt(0.2)]) / 2
    )


# ----------------------------------------------------------------------------- capacity


@pytest.mark.parametrize(
    "capacity, expected_penalty", [(3.0, 0.9), (1.0, 1.1), (2.1, 0.0)]
)
def test_capacity_objective_value(capacity, expected_penalty):
    """recon + γ |KL − C| with KL = 2.1 nats; β plays no part."""
    x, logits, mu, logvar = _fixed_batch(
        [[2.0, math.sqrt(0.2)], [-2.0, -math.sqrt(0.2)]]
    )
    for beta in (1.0, 7.0):
        terms = beta_vae_loss(
            x, logits, mu, logvar, beta=beta, capacity=capacity, gamma=10.0
        )
        assert terms.total.item() == pytest.approx(
            4 * LOG2 + 10.0 * expected_penalty, abs=1e-5
        )


def test_capacity_gradient_pushes_kl_toward_c():
    x, logits, mu, logvar = _fixed_batch(
        [[2.0, math.sqrt(0.2)], [-2.0, -math.sqrt(0.2)]]
    )
    beta_vae_loss(x, logits, mu, logvar, capacity=5.0, gamma=10.0).total.backward()
    # KL < C: the loss falls as |mu| grows, so the gradient points against mu's sign
    assert (mu.grad * mu.detach() < 0).all()


def test_fit_with_capacity_holds_the_kl_near_c():
    """γ |KL − C| with a large γ pins the training KL to C (Burgess et al. 2018)."""
    g = torch.Generator().manual_seed(1)
    images = (
        torch.rand(256, 1, 28, 28, generator=g) < torch.rand(256, 1, 1, 1, generator=g)
    ).float()
    model = MLPVAE(latent_dim=4, hidden=(64,))
    history = fit(
        model,
        images,
        epochs=15,
        batch_size=64,
        capacity=3.0,
        gamma=100.0,
        lr=3e-3,
        device="cpu",
        progress=False,
    )
    assert sum(history.train_kl[-3:]) / 3 == pytest.approx(3.0, abs=0.5)
    plain = fit(
        MLPVAE(latent_dim=4, hidden=(64,)),
        images,
        epochs=15,
        batch_size=64,
        beta=1.0,
        lr=3e-3,
        device="cpu",
        progress=False,
    )
    assert (
        abs(sum(plain.train_kl[-3:]) / 3 - 3.0) > 2.0
    )  # without the capacity term the KL goes elsewhere

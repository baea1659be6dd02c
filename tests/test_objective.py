"""One objective family: the β-VAE variants as coefficients, checked once, and the
unified loss equal to beta_vae_loss for every variant, member by member."""

import json
import math

import pytest
import torch

from betavae_lib import MLPVAE, beta_vae_loss, fit
from betavae_lib.losses import objective_loss
from betavae_lib.objective import Coefficients, Objective, stack_coefficients
from betavae_lib.schedules import Linear


@pytest.mark.parametrize(
    "options, names",
    [
        (dict(tc=True, free_bits=0.5), ("tc=True", "free_bits")),
        (dict(tc=True, capacity=5.0), ("tc=True", "capacity")),
        (dict(capacity=5.0, free_bits=0.5), ("capacity", "free_bits")),
        (dict(capacity=5.0, beta=4.0), ("capacity", "beta")),
        (dict(gamma=10.0), ("gamma", "capacity")),
    ],
)
def test_options_that_cannot_be_combined_raise_naming_both(options, names):
    with pytest.raises(ValueError) as error:
        Objective(**options)
    assert all(name in str(error.value) for name in names)


def test_fit_and_the_loss_refuse_tc_with_free_bits_instead_of_dropping_it():
    x = torch.rand(8, 1, 28, 28)
    with pytest.raises(ValueError, match="tc=True and free_bits"):
        fit(MLPVAE(latent_dim=2), x, epochs=1, tc=True, free_bits=0.5, progress=False)
    logits, mu = torch.zeros(8, 1, 28, 28), torch.zeros(8, 2)
    with pytest.raises(ValueError, match="tc=True and free_bits"):
        beta_vae_loss(x, logits, mu, mu, mu, tc=True, free_bits=0.5, dataset_size=8)


def test_each_variant_is_a_set_of_coefficients():
    assert Objective(beta=4.0).coefficients() == Coefficients(beta_kl=4.0)
    assert Objective(beta=2.0, free_bits=0.5).coefficients() == Coefficients(
        beta_kl=2.0, free_bits=0.5
    )
    assert Objective(capacity=3.0, gamma=10.0).coefficients() == Coefficients(
        gamma=10.0, capacity=3.0
    )
    assert Objective(tc=True, beta=6.0).coefficients() == Coefficients(
        mi_dwkl=1.0, beta_tc=6.0
    )
    assert [Objective(capacity=3.0).variant, Objective(tc=True).variant] == [
        "capacity",
        "tc",
    ]


def test_schedules_are_evaluated_at_the_step():
    warm = Objective(beta=Linear(4.0, steps=10))
    assert [warm.coefficients(s).beta_kl for s in (0, 5, 20)] == [0.0, 2.0, 4.0]
    ramp = Objective(capacity=Linear(25.0, steps=100), gamma=1000.0)
    assert ramp.coefficients(50).capacity == 12.5


def test_describe_is_json_and_refuses_schedules_it_cannot_describe():
    text = json.dumps(Objective(beta=Linear(4.0, 10), free_bits=0.5).describe())
    assert '"schedule": "Linear"' in text and '"free_bits": 0.5' in text
    with pytest.raises(TypeError, match="cannot be described"):
        Objective(beta=lambda step: 1.0).describe()


OBJECTIVES = {
    "β-VAE": Objective(beta=4.0),
    "warm-up": Objective(beta=Linear(8.0, steps=10)),
    "free bits": Objective(beta=2.0, free_bits=0.3),
    "capacity": Objective(capacity=Linear(5.0, steps=10), gamma=10.0),
    "β-TCVAE": Objective(tc=True, beta=6.0),
}


def _reference(objective: Objective, step: int) -> dict:
    """beta_vae_loss's arguments for ``objective`` at ``step``."""
    c = objective.coefficients(step)
    if objective.variant == "capacity":
        return dict(capacity=c.capacity, gamma=c.gamma)
    return dict(beta=objective.beta_at(step), free_bits=c.free_bits, tc=objective.tc)


def _batch(k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(16, 1, 6, 6, generator=g) > 0.5).float()
    logits = torch.randn(k, 16, 1, 6, 6, generator=g).requires_grad_()
    mu = torch.randn(k, 16, 3, generator=g).requires_grad_()
    logvar = (0.5 * torch.randn(k, 16, 3, generator=g)).requires_grad_()
    eps = torch.randn(k, 16, 3, generator=g)
    z = (mu + torch.exp(0.5 * logvar) * eps).detach().requires_grad_()
    return x, logits, mu, logvar, z


@pytest.mark.parametrize("step", [3, 12])
def test_unified_per_member_loss_equals_beta_vae_loss_for_each_variant(step):
    """The five objectives as one set of (K,) coefficients, vmapped over the members:
    each member's terms and gradients are beta_vae_loss's for its own objective."""
    objectives = list(OBJECTIVES.values())
    x, logits, mu, logvar, z = _batch(len(objectives))
    coefficients = stack_coefficients(objectives, step)
    unified = torch.vmap(
        lambda lg, m, lv, zz, c: objective_loss(x, lg, m, lv, zz, c, dataset_size=500)[
            :4
        ],
        in_dims=(0, 0, 0, 0, Coefficients(*(0,) * 6)),
    )(logits, mu, logvar, z, coefficients)
    unified[0].sum().backward()
    leaves = (logits, mu, logvar, z)
    grads = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    for k, objective in enumerate(objectives):
        ref = beta_vae_loss(
            x,
            logits[k],
            mu[k],
            logvar[k],
            z[k],
            dataset_size=500,
            **_reference(objective, step),
        )
        for got, want in zip(unified, ref[:4]):
            torch.testing.assert_close(got[k], want, rtol=1e-6, atol=1e-6)
        ref.total.backward()
        for grad, t in zip(grads, leaves):
            want = torch.zeros_like(grad[k]) if t.grad is None else t.grad[k]
            torch.testing.assert_close(grad[k], want, rtol=1e-6, atol=1e-7)
    assert math.isfinite(unified[0].sum().item())


def test_number_coefficients_give_beta_vae_loss_bit_for_bit():
    """A single model: fit computes objective_loss with its Objective's numbers, which
    is beta_vae_loss exactly, for every variant."""
    x, logits, mu, logvar, z = _batch(1, seed=1)
    for objective in OBJECTIVES.values():
        c = objective.coefficients(4)
        got = objective_loss(x, logits[0], mu[0], logvar[0], z[0], c, dataset_size=50)
        want = beta_vae_loss(
            x,
            logits[0],
            mu[0],
            logvar[0],
            z[0],
            dataset_size=50,
            **_reference(objective, 4),
        )
        assert all(torch.equal(a, b) for a, b in zip(got[:4], want[:4]))

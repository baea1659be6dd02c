"""bfloat16 autocast (``amp=True``) in fit, fit_ensemble, train_grid and the sweep: it
trains to the float32 loss within bf16's error, leaves float32 weights, and is recorded
wherever a run is identified."""

import pytest
import torch
from conftest import binary_images
from test_train import prototypes

from betavae_lib import MLPVAE, ConvVAE, checkpoints, evaluate, fit
from betavae_lib._common import check_amp
from betavae_lib.cache import ModelCache, train_grid, training_parts
from betavae_lib.ensemble import fit_ensemble
from betavae_lib.sweep import RunConfig

# bfloat16 keeps 8 significant bits: each rounded operand is off by at most
# u = 2^-8 ≈ 0.4 % (relative). The loss is computed in float32 from the rounded
# forward pass, so the final losses of the two runs differ by the drift of two training
# trajectories perturbed at that level; we allow 5u ≈ 2 % (measured: ≤ 0.06 % for the
# MLP over 4 seeds, ≤ 0.7 % for the ConvVAE over 2 seeds, on an AMD EPYC).
BF16_LOSS_RTOL = 5 * 2.0**-8


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def mlp(seed=0):
    torch.manual_seed(seed)
    return MLPVAE(latent_dim=4, hidden=(64,))


def conv(seed=0):
    torch.manual_seed(seed)
    return ConvVAE(latent_dim=4)


def test_bf16_training_reaches_the_float32_loss():
    x = prototypes(1024, seed=1)
    losses = {}
    for amp in (False, True):
        h = fit(mlp(1), x, epochs=8, batch_size=64, lr=3e-3, seed=1, amp=amp,
                progress=False)  # fmt: skip
        assert h.amp is amp
        losses[amp] = h.train_loss
    assert losses[True][-1] < 0.5 * losses[True][0]  # it learned
    assert losses[True][-1] == pytest.approx(losses[False][-1], rel=BF16_LOSS_RTOL)
    assert losses[True] != losses[False]  # autocast really ran in bfloat16


def test_an_amp_model_is_float32_saves_loads_and_evaluates_as_usual(tmp_path):
    x = binary_images(64, side=64)
    model = conv()
    fit(model, x, epochs=1, batch_size=32, amp=True, progress=False)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    loaded, _ = checkpoints.load(checkpoints.save(model, tmp_path / "m.pt"))
    assert torch.equal(weights(loaded), weights(model))
    assert evaluate(loaded, x) == evaluate(model, x)


@pytest.mark.parametrize("make, side", [(mlp, 28), (conv, 64)])
def test_an_amp_member_of_an_ensemble_trains_as_fit_amp_trains_it(make, side):
    """The members layout runs fit's calls on each member, under the same autocast,
    so it gives fit(amp=True)'s weights exactly; the grouped layout batches the
    members' products (other bf16 roundings) and agrees to bf16's tolerance."""
    x = binary_images(128, side=side)
    twins = {}
    for seed in (0, 1):
        twin = make(seed)
        history = fit(twin, x, epochs=2, batch_size=32, seed=seed, amp=True,
                      progress=False)  # fmt: skip
        twins[seed] = twin, history
    for layout in ("members", "grouped"):
        members = {seed: make(seed) for seed in (0, 1)}
        result = fit_ensemble(members, x, seeds={0: 0, 1: 1}, epochs=2,
                              batch_size=32, amp=True, layout=layout,
                              progress=False)  # fmt: skip
        for seed, (twin, history) in twins.items():
            got = result.histories[seed]
            assert got.amp
            if layout == "members":
                assert torch.equal(weights(members[seed]), weights(twin))
                assert got.train_loss == history.train_loss
            else:
                assert got.train_loss == pytest.approx(
                    history.train_loss, rel=BF16_LOSS_RTOL
                )


def test_amp_is_part_of_what_identifies_a_run():
    x = binary_images(8)
    plain = training_parts(x, None, 1, 4, 1e-3)
    assert "amp" not in plain  # keys of float32 runs are unchanged
    assert training_parts(x, None, 1, 4, 1e-3, amp=True) == {**plain, "amp": True}
    config = RunConfig(objective="beta_vae", coefficients={"beta": 4})
    assert "amp" not in config.as_dict()
    with_amp = RunConfig(objective="beta_vae", coefficients={"beta": 4}, amp=True)
    assert with_amp.as_dict()["amp"] is True
    assert RunConfig.from_dict(with_amp.as_dict()) == with_amp
    assert RunConfig.from_dict(config.as_dict()) == config


def test_train_grid_trains_with_amp_and_caches_it_apart(tmp_path):
    x = prototypes(128)
    cache = ModelCache(tmp_path)
    grid = {"b1": {"beta": 1.0}}
    options = dict(epochs=1, batch_size=32, cache=cache, verbose=False, device="cpu")
    config = dict(latent_dim=3, hidden=(16,))
    _, plain = train_grid(MLPVAE, config, x, grid, **options)
    _, amp = train_grid(MLPVAE, config, x, grid, amp=True, **options)
    assert not plain["b1"].amp and amp["b1"].amp  # trained anew, not read back
    assert len(list(tmp_path.glob("*.pt"))) == 2


@pytest.mark.parametrize("value", ["false", 1, None])
def test_amp_must_be_true_or_false(value):
    with pytest.raises((TypeError, ValueError), match="amp"):
        fit(mlp(), prototypes(8), epochs=1, amp=value, progress=False)
    with pytest.raises((TypeError, ValueError), match="amp"):
        fit_ensemble({"a": mlp()}, prototypes(8), epochs=1, amp=value, progress=False)


def test_amp_is_refused_on_devices_without_bf16_autocast():
    assert check_amp(True, torch.device("cpu")) is True
    with pytest.raises(ValueError, match="supported on cuda and cpu, not mps"):
        check_amp(True, torch.device("mps"))


@pytest.mark.parametrize(
    "value, expected",
    [("bf16", True), ("1", True), (" TRUE ", True), ("", False), ("0", False),
     ("fp32", False), ("false", False)],
)  # fmt: skip
def test_betavae_amp_sets_train_grids_default(monkeypatch, value, expected):
    from betavae_lib.cache import amp_from_env

    monkeypatch.setenv("BETAVAE_AMP", value)
    assert amp_from_env() is expected


def test_a_misspelt_betavae_amp_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("BETAVAE_AMP", "bf61")
    with pytest.raises(ValueError, match="BETAVAE_AMP='bf61'"):
        train_grid(MLPVAE, dict(latent_dim=2, hidden=(8,)), prototypes(16),
                   {"a": {}}, epochs=1, cache=ModelCache(tmp_path),
                   verbose=False)  # fmt: skip


def test_train_grid_follows_betavae_amp(monkeypatch, tmp_path):
    monkeypatch.setenv("BETAVAE_AMP", "bf16")
    _, h = train_grid(MLPVAE, dict(latent_dim=2, hidden=(8,)), prototypes(32),
                      {"a": {}}, epochs=1, cache=ModelCache(tmp_path),
                      verbose=False)  # fmt: skip
    assert h["a"].amp

"""Many models, one loop: every member of an ensemble ends where `fit` takes the same
model alone (same seed, same batches), for a β grid and for mixed objectives, MLPVAE
and ConvVAE; a diverging member is frozen and named; members are ordinary models."""

import pytest
import torch
from conftest import binary_images

from betavae_lib import (
    MLPVAE,
    ConvVAE,
    checkpoints,
    ensemble_step,
    fit,
    seed_everything,
)
from betavae_lib import ensemble as ens_mod
from betavae_lib.ensemble import (
    EnsembleMemberWarning,
    VAEEnsemble,
    fit_ensemble,
)
from betavae_lib.objective import Objective
from betavae_lib.schedules import Linear
from betavae_lib.train import NonFiniteLossError

IMAGES = binary_images(256)
TEST = binary_images(64, seed=1)
# intensities spread over [0, 1]: what binarize=True draws from
GREY = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(2))


def small_mlp():
    return MLPVAE(latent_dim=4, hidden=(32,))


def small_tanh_mlp():
    return MLPVAE(latent_dim=4, hidden=(32, 24), activation="tanh")


def small_conv():
    return ConvVAE(latent_dim=3, image_size=28, width=4, hidden=16)


MIXED = {  # name: (fit's options, seed)
    "β = 1": (dict(beta=1.0), 0),
    "warm-up to β = 4": (dict(beta=Linear(4.0, steps=40)), 0),
    "free bits": (dict(beta=2.0, free_bits=0.3), 1),
    "capacity": (dict(capacity=Linear(5.0, steps=40), gamma=10.0), 2),
    "β-TCVAE": (dict(tc=True, beta=6.0), 1),
}


def built(make, seed):
    seed_everything(seed)  # each member's own initialisation, as a chapter builds it
    return make()


def assert_same_as_fit(
    make,
    specs,
    *,
    epochs,
    batch_size,
    test_images=None,
    images=IMAGES,
    binarize=False,
    **kw,
):
    """Train ``specs`` as one ensemble, then each alone with fit; compare everything,
    bit for bit: in the members layout (the CPU default) both paths make the same
    kernel calls on operands of the same sizes, strides and alignment (module
    docstring), so no rounding can differ, on any CPU."""
    models = {name: built(make, seed) for name, (_, seed) in specs.items()}
    result = fit_ensemble(
        models,
        images,
        binarize=binarize,
        objectives={name: Objective(**opts) for name, (opts, _) in specs.items()},
        seeds={name: seed for name, (_, seed) in specs.items()},
        epochs=epochs,
        batch_size=batch_size,
        test_images=test_images,
        device="cpu",
        progress=False,
        **kw,
    )
    assert result.failed == {}
    for name, (opts, seed) in specs.items():
        alone = built(make, seed)
        history = fit(
            alone,
            images,
            binarize=binarize,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            test_images=test_images,
            device="cpu",
            progress=False,
            **opts,
        )
        got, want = result.histories[name].as_dict(), history.as_dict()
        got.pop("seconds"), want.pop("seconds")
        assert got.keys() == want.keys()
        for key, values in want.items():
            assert got[key] == values, f"{name}: {key}"
        for key, value in alone.state_dict().items():
            assert torch.equal(models[name].state_dict()[key], value), (name, key)
    return result


def test_beta_grid_matches_fit_one_by_one():
    grid = {f"β = {b:g}": (dict(beta=b), 0) for b in (0.5, 1.0, 4.0)}
    result = assert_same_as_fit(small_mlp, grid, epochs=13, batch_size=16)
    assert result.histories["β = 4"].steps == 13 * 16  # a few hundred steps


def test_sizes_with_vector_tails_and_unaligned_slices_match_fit_bit_for_bit():
    """Odd sizes (37 hidden units, 5 latents): each weight tensor ends in a scalar tail
    of Adam's vectorised kernel, and the members' slices of the stacked tensors start
    off 64-byte boundaries. Stepped as stacked tensors and multiplied in place, 5,653
    weights differed from fit's on an AVX2 CPU (more with AVX-512); member by member,
    on aligned operands, none does."""
    grid = {f"β = {b:g}": (dict(beta=b), s) for b, s in ((1.0, 0), (4.0, 1), (2.0, 0))}
    assert_same_as_fit(
        lambda: MLPVAE(latent_dim=5, hidden=(37,)), grid, epochs=2, batch_size=32
    )


def test_mixed_objectives_and_seeds_match_fit_one_by_one():
    """β-VAE, a β warm-up, free bits, capacity and β-TCVAE in one step, three seeds
    (so three batch orders), with the test evaluation after every epoch."""
    assert_same_as_fit(small_mlp, MIXED, epochs=6, batch_size=16, test_images=TEST)


def test_tanh_models_match_fit_one_by_one():
    """Burda et al.'s tanh units: every member ends with fit's weights and History."""
    assert_same_as_fit(small_tanh_mlp, MIXED, epochs=3, batch_size=24, test_images=TEST)


@pytest.mark.parametrize("make", [small_mlp, small_tanh_mlp], ids=["relu", "tanh"])
def test_binarised_members_draw_what_fit_draws(make):
    """binarize=True on grey images, five members, three seeds (two shared): each
    member draws fit's batches, so it ends with fit's weights and History."""
    assert_same_as_fit(make, MIXED, epochs=3, batch_size=32, images=GREY, binarize=True)


def test_binarised_members_sharing_one_seed_draw_what_fit_draws():
    grid = {f"β = {b:g}": (dict(beta=b), 3) for b in (0.5, 4.0)}
    assert_same_as_fit(
        small_mlp, grid, epochs=2, batch_size=32, images=GREY, binarize=True
    )


def test_conv_models_with_mixed_objectives_match_fit_one_by_one():
    assert_same_as_fit(
        small_conv, MIXED, epochs=2, batch_size=32, test_images=TEST[:32]
    )


def test_grouped_layout_agrees_with_fit_to_float32_rounding():
    """The GPU layout (grouped convolutions, vmapped loss), run on the CPU for a few
    steps: not bit for bit, but to float32 rounding."""
    specs = {k: MIXED[k] for k in ("β = 1", "capacity", "β-TCVAE")}
    models = {name: built(small_conv, seed) for name, (_, seed) in specs.items()}
    grouped = fit_ensemble(
        models,
        IMAGES[:64],
        objectives={n: Objective(**o) for n, (o, _) in specs.items()},
        seeds={n: s for n, (_, s) in specs.items()},
        epochs=1,
        batch_size=16,
        layout="grouped",
        device="cpu",
        progress=False,
    )
    for name, (opts, seed) in specs.items():
        alone = built(small_conv, seed)
        history = fit(
            alone,
            IMAGES[:64],
            epochs=1,
            batch_size=16,
            seed=seed,
            progress=False,
            **opts,
        )
        got = grouped.histories[name]
        assert got.train_loss == pytest.approx(history.train_loss, rel=1e-5)
        assert got.train_kl_per_dim[0] == pytest.approx(
            history.train_kl_per_dim[0], rel=1e-4, abs=1e-6
        )


def test_a_diverging_member_is_frozen_named_and_harms_no_other(monkeypatch):
    """Member "bad" gets a NaN loss at step 8 (the first step of epoch 2): it keeps the
    weights it had after epoch 1, its History stops there, the warning names it, and
    the other members train on exactly as fit trains them."""
    specs = {"good": (dict(beta=1.0), 0), "bad": (dict(beta=4.0), 0)}
    calls = []
    real_loss = ensemble_step.objective_loss

    def poisoned(*args, **kwargs):  # members layout: one call per member and step
        terms = real_loss(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2 * 8 + 2:  # step 8, second member
            terms = terms._replace(total=terms.total * float("nan"))
        return terms

    monkeypatch.setattr(ensemble_step, "objective_loss", poisoned)
    models = {name: built(small_mlp, seed) for name, (_, seed) in specs.items()}
    with pytest.warns(EnsembleMemberWarning, match=r"bad \(step 8\)"):
        result = fit_ensemble(
            models,
            IMAGES[:128],
            objectives={n: Objective(**o) for n, (o, _) in specs.items()},
            epochs=3,
            batch_size=16,
            device="cpu",
            progress=False,
        )
    assert result.failed == {"bad": 8}
    assert result.histories["bad"].epoch == [1] and result.histories["good"].epoch == [
        1,
        2,
        3,
    ]
    for name, epochs in (("bad", 1), ("good", 3)):
        alone = built(small_mlp, 0)
        fit(
            alone,
            IMAGES[:128],
            epochs=epochs,
            batch_size=16,
            progress=False,
            **specs[name][0],
        )
        for key, value in alone.state_dict().items():
            assert torch.equal(models[name].state_dict()[key], value), (name, key)


def test_on_failure_raise_names_the_member():
    models = {"a": small_mlp(), "b": small_mlp()}
    with torch.no_grad():
        models["b"].decoder[-2].bias.fill_(1e38)  # logits overflow: the loss is inf
    with pytest.raises(NonFiniteLossError, match=r"b \(step 0\)"):
        fit_ensemble(
            models,
            IMAGES[:32],
            epochs=1,
            batch_size=16,
            on_failure="raise",
            progress=False,
        )


def test_a_member_is_an_ordinary_model_that_saves_and_loads(tmp_path):
    members = [built(small_conv, s) for s in (0, 1)]
    ensemble = VAEEnsemble(members)
    x = IMAGES[:8]
    mu, _ = ensemble.encode(x)
    for k, model in enumerate(members):
        torch.testing.assert_close(mu[k], model.encode(x)[0])
        extracted = ensemble.member(k)
        assert type(extracted) is ConvVAE and not extracted.training
        loaded, _ = checkpoints.load(checkpoints.save(extracted, tmp_path / f"{k}.pt"))
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value)


def test_models_must_share_architecture_and_likelihood():
    with pytest.raises(ValueError, match="share class and config"):
        VAEEnsemble([small_mlp(), MLPVAE(latent_dim=5, hidden=(32,))])
    with pytest.raises(ValueError, match="share the likelihood"):
        fit_ensemble(
            {"a": small_mlp(), "b": small_mlp()},
            IMAGES[:16],
            objectives={"a": Objective(), "b": Objective(likelihood="gaussian")},
            epochs=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        fit_ensemble(
            {"a": small_mlp()}, IMAGES[:16], epochs=1, device="cpu", cuda_graph=True
        )


class EagerGraph(ens_mod._GraphedStep):
    """The CUDA-graph runner with capture and replay done eagerly, so that its static
    buffers, warm-up and replay bookkeeping run on the CPU. Each "replay" re-runs the
    body with fresh gradients, as a replayed graph overwrites its gradients."""

    def warm_up(self):
        self.trainer.opt.zero_grad(set_to_none=True)
        self.body()

    def capture(self):
        self.graph = "captured"

    def replay(self):
        self.warm_up()


@pytest.mark.parametrize("binarize", [False, True])
def test_graphed_step_logic_matches_the_eager_loop(monkeypatch, binarize):
    """binarize=True: the batch is drawn outside the graph into a static buffer."""
    specs = {k: MIXED[k] for k in ("warm-up to β = 4", "capacity", "β-TCVAE")}
    images = (GREY if binarize else IMAGES)[:120]

    def train(cuda_graph):
        models = {n: built(small_mlp, s) for n, (_, s) in specs.items()}
        result = fit_ensemble(
            models,
            images,  # 7 full batches and a smaller last one per epoch
            binarize=binarize,
            objectives={n: Objective(**o) for n, (o, _) in specs.items()},
            seeds={n: s for n, (_, s) in specs.items()},
            epochs=2,
            batch_size=16,
            layout="grouped",
            cuda_graph=cuda_graph,
            device="cpu",
            progress=False,
        )
        return models, result

    eager_models, eager = train(False)
    monkeypatch.setattr(ens_mod, "_GraphedStep", EagerGraph)
    monkeypatch.setattr(ens_mod, "_check_cuda_graph", lambda device, layout: None)
    graph_models, graphed = train(True)
    for name in specs:
        assert graphed.histories[name].train_loss == eager.histories[name].train_loss
        for key, value in eager_models[name].state_dict().items():
            assert torch.equal(graph_models[name].state_dict()[key], value)

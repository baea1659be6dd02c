"""The training loop: it learns, it records, it is seedable, and it stops loudly on
NaN."""

import pytest
import torch

from betavae_lib import MLPVAE, ConvVAE, evaluate, fit, pick_device
from betavae_lib import train as train_mod
from betavae_lib.schedules import Linear
from betavae_lib.train import NonFiniteLossError, as_float_images


def prototypes(n=512, seed=0):
    """Binary 28×28 images: four fixed random patterns with 5% of pixels flipped."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(4, 1, 28, 28, generator=g) > 0.7).float()
    x = protos[torch.randint(0, 4, (n,), generator=g)]
    flip = torch.rand(x.shape, generator=g) < 0.05
    return torch.where(flip, 1 - x, x)


def test_short_training_lowers_the_loss_and_records_history():
    x = prototypes()
    torch.manual_seed(0)
    model = MLPVAE(latent_dim=4, hidden=(64,))
    before = evaluate(model, x)["neg_elbo"]
    h = fit(
        model, x, test_images=x[:128], epochs=3, batch_size=64, lr=3e-3, progress=False
    )
    after = evaluate(model, x)["neg_elbo"]
    assert after < 0.7 * before
    assert h.epoch == [1, 2, 3] and h.steps == 3 * 8
    assert h.train_loss[-1] < h.train_loss[0]
    assert (
        len(h.test_recon) == 3
        and len(h.train_kl_per_dim[-1]) == len(h.test_kl_per_dim[-1]) == 4
    )
    # KL per dim sums to the KL
    assert sum(h.train_kl_per_dim[-1]) == pytest.approx(h.train_kl[-1], rel=1e-5)


def test_same_seed_same_history_different_seed_different():
    x = prototypes(256)
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(0)
        model = MLPVAE(latent_dim=3, hidden=(32,))
        runs.append(fit(model, x, epochs=2, batch_size=32, seed=seed, progress=False))
    assert (
        runs[0].train_loss == runs[1].train_loss
        and runs[0].train_kl_per_dim == runs[1].train_kl_per_dim
    )
    assert runs[0].train_loss != runs[2].train_loss


def test_beta_schedule_is_applied_per_step():
    x = prototypes(128)
    h = fit(
        MLPVAE(latent_dim=2, hidden=(16,)),
        x,
        epochs=2,
        batch_size=32,
        beta=Linear(4.0, steps=8),
        progress=False,
    )
    # 4 steps per epoch: the value at the last step of each epoch (steps 3 and 7)
    assert h.beta == pytest.approx([4.0 * 3 / 8, 4.0 * 7 / 8])


def test_uint8_and_bool_images_train_like_floats():
    x = prototypes(128)
    runs = []
    for images in (x, (x * 255).to(torch.uint8), x.bool()):
        torch.manual_seed(0)
        runs.append(
            fit(
                MLPVAE(latent_dim=2, hidden=(16,)),
                images,
                epochs=1,
                batch_size=32,
                progress=False,
            )
        )
    assert runs[0].train_loss == pytest.approx(runs[1].train_loss, rel=1e-6)
    assert runs[0].train_loss == runs[2].train_loss
    assert as_float_images(torch.tensor([255], dtype=torch.uint8)).item() == 1.0


def test_nan_loss_stops_with_the_step_named():
    x = prototypes(128)
    model = MLPVAE(latent_dim=2, hidden=(16,))
    calls = []

    def poison(
        module, inputs, output
    ):  # the decoder's 6th call (optimiser step 5) returns NaN
        calls.append(1)
        return output * float("nan") if len(calls) == 6 else output

    model.decoder.register_forward_hook(poison)
    with pytest.raises(NonFiniteLossError, match="step 5 "):
        fit(model, x, epochs=3, batch_size=32, progress=False)


def test_conv_model_trains_on_64px():
    x = (torch.rand(64, 1, 64, 64) > 0.9).float()
    h = fit(ConvVAE(latent_dim=3), x, epochs=1, batch_size=16, progress=False)
    assert len(h.train_kl_per_dim[0]) == 3


def test_evaluate_terms_add_up():
    x = prototypes(100)
    ev = evaluate(MLPVAE(latent_dim=3, hidden=(16,)), x, batch_size=30)
    assert ev["neg_elbo"] == pytest.approx(ev["recon"] + ev["kl"])
    assert sum(ev["kl_per_dim"]) == pytest.approx(ev["kl"], rel=1e-5)


def test_asking_for_test_metrics_leaves_the_trained_weights_unchanged():
    """Evaluation draws its own noise: the same recipe gives the same model, bit for
    bit, whether or not test metrics are recorded (they once shared the training
    stream, which moved the weights by ~5e-3 after two epochs)."""
    x = prototypes(256)
    weights = []
    for test_images in (None, x[:100]):
        torch.manual_seed(0)
        model = MLPVAE(latent_dim=4, hidden=(32,))
        fit(model, x, test_images=test_images, epochs=2, batch_size=64, seed=3,
            progress=False)  # fmt: skip
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_callback_every_also_calls_inside_epochs():
    """8 steps per epoch, callback_every=3: steps 3 and 6 inside epoch 1, then its end
    (step 8); the count runs on across epochs (9, 12, 15, then 16). Inside an epoch
    the history holds the finished epochs only, and the model is the one being
    trained at that step."""
    x = prototypes(256)
    torch.manual_seed(0)
    model = MLPVAE(latent_dim=3, hidden=(32,))
    calls, weights = [], []

    def record(epoch, m, history):
        calls.append((epoch, history.steps, len(history.epoch)))
        weights.append(m.encoder[1].weight.detach().clone())

    fit(model, x, epochs=2, batch_size=32, progress=False, callback=record,
        callback_every=3)  # fmt: skip
    assert calls == [
        (1, 3, 0), (1, 6, 0), (1, 8, 1), (2, 9, 1), (2, 12, 1), (2, 15, 1), (2, 16, 2)
    ]  # fmt: skip
    assert all(not torch.equal(a, b) for a, b in zip(weights, weights[1:]))
    assert torch.equal(weights[-1], model.encoder[1].weight)


def test_callbacks_inside_epochs_cannot_change_the_training():
    x = prototypes(256)
    runs = []
    for every in (None, 1):
        torch.manual_seed(0)
        model = MLPVAE(latent_dim=3, hidden=(32,))

        def draw(epoch, m, history):
            torch.randn(7)  # a plotting callback may draw random numbers

        history = fit(model, x, epochs=2, batch_size=32, seed=4, progress=False,
                      callback=draw, callback_every=every)  # fmt: skip
        weights = torch.cat([p.flatten() for p in model.parameters()])
        runs.append((weights, history.train_loss, history.steps))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1:] == runs[1][1:]


def test_callback_every_is_checked():
    m, x = MLPVAE(latent_dim=2, hidden=(8,)), prototypes(16)
    with pytest.raises(ValueError, match="callback_every must be a positive integer"):
        fit(m, x, epochs=1, progress=False, callback=print, callback_every=0)
    with pytest.raises(ValueError, match="callback_every needs a callback"):
        fit(m, x, epochs=1, progress=False, callback_every=5)


def test_evaluate_is_repeatable_and_leaves_the_callers_stream_alone():
    x = prototypes(100)
    torch.manual_seed(0)
    model = MLPVAE(latent_dim=3, hidden=(16,))
    torch.manual_seed(5)
    first = evaluate(model, x)
    after = torch.randn(3)
    torch.manual_seed(5)
    assert evaluate(model, x) == first  # the same samples: the same numbers
    assert torch.equal(after, torch.randn(3))  # the caller's draws are untouched
    assert evaluate(model, x, seed=1)["recon"] != first["recon"]  # another stream
    # the seed chooses the noise: the recon term is the mean over images of one
    # posterior sample's log-likelihood, recomputed here by hand with that noise
    from betavae_lib._common import evaluation_seed
    from betavae_lib.losses import beta_vae_loss

    mu, logvar = model.encode(x)
    eps = torch.randn(
        mu.shape, generator=torch.Generator().manual_seed(evaluation_seed(0))
    )
    logits = model.decode(mu + torch.exp(0.5 * logvar) * eps)
    by_hand = beta_vae_loss(x, logits, mu, logvar).recon.item()
    assert first["recon"] == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_evaluate_rejects_a_bad_seed(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        evaluate(MLPVAE(latent_dim=2, hidden=(8,)), prototypes(8), seed=seed)


def test_auto_device_is_cpu_without_accelerators():
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"epochs": 0}, ValueError, "epochs must be a positive integer"),
        (
            {"epochs": 1, "batch_size": 0},
            ValueError,
            "batch_size must be a positive integer",
        ),
        ({"epochs": 1, "beta": -1.0}, ValueError, "beta must be >= 0"),
        (
            {"epochs": 1, "likelihood": "laplace"},
            ValueError,
            "bernoulli, gaussian, gaussian_learned",
        ),
        ({"epochs": 1, "lr": 0.0}, ValueError, "lr must be"),
        ({"epochs": 1, "binarize": 1}, TypeError, "binarize must be True or False"),
    ],
)
def test_bad_fit_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        fit(MLPVAE(latent_dim=2), prototypes(16), progress=False, **kwargs)


def test_bad_images_for_fit():
    m = MLPVAE(latent_dim=2)
    with pytest.raises(ValueError, match=r"shape \(N, 1, 28, 28\)"):
        fit(m, torch.rand(8, 28, 28), epochs=1, progress=False)
    with pytest.raises(ValueError, match="divide uint8 pixel values by 255"):
        fit(m, torch.rand(8, 1, 28, 28) * 255, epochs=1, progress=False)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fit(m, [[0.0]], epochs=1, progress=False)


# ---------------------------------------------------------------- dynamic binarisation


def grey_images(n=64, seed=0):
    """(n, 1, 28, 28) intensities spread over [0, 1]."""
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def small_tanh_mlp():
    torch.manual_seed(0)
    return MLPVAE(latent_dim=3, hidden=(16,), activation="tanh")


def batches_fit_trains_on(monkeypatch, images, **kwargs) -> list[torch.Tensor]:
    """The batches every optimiser step of ``fit`` gets."""
    seen, step = [], train_mod._loss

    def recording(run, x, i):
        seen.append(x.clone())
        return step(run, x, i)

    monkeypatch.setattr(train_mod, "_loss", recording)
    fit(small_tanh_mlp(), images, progress=False, device="cpu", **kwargs)
    return seen


def test_binarised_batches_are_fresh_bernoulli_draws_of_the_pixels(monkeypatch):
    """Every image holds the intensities 0..1 in 784 steps: each batch is exactly 0/1,
    each pixel's mean over 40 epochs of 32 images is its intensity within 5 binomial
    standard deviations, intensities 0 and 1 stay 0 and 1, and an image is drawn afresh
    each epoch."""
    p = torch.linspace(0, 1, 28 * 28).reshape(1, 1, 28, 28)
    images = p.expand(32, 1, 28, 28).contiguous()
    batches = batches_fit_trains_on(
        monkeypatch, images, epochs=40, batch_size=16, lr=1e-6, binarize=True
    )
    drawn = torch.cat(batches)
    assert len(drawn) == 40 * 32
    assert set(drawn.unique().tolist()) == {0.0, 1.0}
    mean = drawn.double().mean(0)
    sd = (p.double() * (1 - p.double()) / len(drawn)).sqrt()
    assert ((mean - p).abs() <= 5 * sd).all()
    assert (drawn[:, 0, 0, 0] == 0).all() and (drawn[:, 0, -1, -1] == 1).all()
    assert not torch.equal(batches[0], batches[2])  # epochs 1 and 2, same images


def test_binarize_draws_from_a_stream_of_its_own(monkeypatch):
    """On images that are already 0/1 a Bernoulli draw changes nothing, so a run with
    binarize=True must be the run without it, bit for bit: the batch order and the
    sampling noise are not disturbed by the binarisation draws."""
    binary = prototypes(96)
    runs = []
    for binarize in (False, True):
        model = small_tanh_mlp()
        history = fit(
            model,
            binary,
            epochs=2,
            batch_size=32,
            seed=5,
            progress=False,
            binarize=binarize,
        )
        runs.append((model.state_dict(), history.train_loss))
    assert runs[0][1] == runs[1][1]
    for key, value in runs[0][0].items():
        assert torch.equal(runs[1][0][key], value), key


def test_binarised_runs_are_reproducible_and_differ_from_unbinarised_ones():
    grey = grey_images()

    def run(**kwargs):
        model = small_tanh_mlp()
        settings = dict(epochs=2, batch_size=16, seed=1, progress=False)
        history = fit(model, grey, **{**settings, **kwargs})
        return model.state_dict(), history.train_loss

    first, again = run(binarize=True), run(binarize=True)
    assert first[1] == again[1]
    for key, value in first[0].items():
        assert torch.equal(again[0][key], value), key
    assert run(binarize=False)[1] != first[1]
    assert run(binarize=True, seed=2)[1] != first[1]

"""Determinism and interrupted training: the same seed gives the same run, and a run
resumed from its checkpoint ends bit for bit where an uninterrupted run ends."""

import functools

import numpy as np
import pytest
import torch
from conftest import binary_images

from betavae_lib import MLPVAE, ConvVAE, fit, load
from betavae_lib.schedules import Linear

EPOCHS = 4


TRAIN, TEST = binary_images(96), binary_images(32, seed=1)


def new_mlp():
    torch.manual_seed(123)  # the same initial weights for every run
    return MLPVAE(latent_dim=3, hidden=(32,))


def new_conv():
    torch.manual_seed(123)
    return ConvVAE(latent_dim=2, image_size=28, width=4, hidden=16)


class Interrupt:
    """A callback that draws random numbers (as a plotting callback might) and raises
    KeyboardInterrupt after epoch ``at``; ``at=None`` never raises."""

    def __init__(self, at=None):
        self.at = at

    def __call__(self, epoch, model, history):
        torch.randn(5)
        np.random.rand(3)
        if epoch == self.at:
            raise KeyboardInterrupt


class Beta:
    """β warmed up as Linear(4, 10); raises KeyboardInterrupt at optimiser step
    ``stop_at``."""

    def __init__(self, stop_at=None):
        self.stop_at, self.linear = stop_at, Linear(4.0, steps=10)

    def __call__(self, step):
        if step == self.stop_at:
            raise KeyboardInterrupt
        return self.linear(step)


def run(make=new_mlp, images=TRAIN, **kwargs):
    """Train a fresh model: 4 epochs of 6 steps, a β warm-up, test images, seed 7, on
    the CPU."""
    model = make()
    settings = dict(
        epochs=EPOCHS,
        batch_size=16,
        beta=Beta(),
        test_images=TEST,
        seed=7,
        progress=False,
        log_every=2,
        device="cpu",
    )
    settings.update(kwargs)
    return model, fit(model, images, **settings)


def without_timing(history):
    values = history.as_dict()
    assert len(values.pop("seconds")) == len(values["epoch"])
    return values


def assert_same_run(a, b):
    (model_a, hist_a), (model_b, hist_b) = a, b
    assert without_timing(hist_a) == without_timing(hist_b)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k


@pytest.fixture(scope="module")
def reference():
    """One uninterrupted run with a callback that draws random numbers."""
    return run(callback=Interrupt())


def test_same_seed_same_run_different_seed_different_run(reference):
    assert_same_run(reference, run(callback=Interrupt()))
    other = run(seed=8)
    assert other[1].train_loss != reference[1].train_loss


def test_callbacks_cannot_change_the_training(reference):
    assert_same_run(reference, run())


def test_interrupted_run_resumes_bit_for_bit(reference, tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint_path=path, callback=Interrupt(at=2))
    saved = torch.load(path, weights_only=True)
    assert (saved["epoch"], saved["step"]) == (2, 12)
    assert saved["history"]["epoch"] == [1, 2]
    for name in ("torch", "order"):
        assert saved["rng"][name].dtype == torch.uint8
    resumed = run(checkpoint_path=path, resume=True, callback=Interrupt())
    assert_same_run(reference, resumed)
    assert torch.load(path, weights_only=True)["epoch"] == EPOCHS


def test_interruption_inside_an_epoch_loses_only_that_epoch(reference, tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(
        KeyboardInterrupt
    ):  # steps 12..17 are epoch 3; the last checkpoint is epoch 2's
        run(
            checkpoint_path=path,
            checkpoint_every=2,
            beta=Beta(stop_at=14),
            callback=Interrupt(),
        )
    assert torch.load(path, weights_only=True)["epoch"] == 2
    assert_same_run(
        reference,
        run(
            checkpoint_path=path, checkpoint_every=2, resume=True, callback=Interrupt()
        ),
    )


def test_more_epochs_continue_a_finished_run(reference, tmp_path):
    path = tmp_path / "run.pt"
    run(checkpoint_path=path, epochs=2, callback=Interrupt())
    assert_same_run(
        reference,
        run(checkpoint_path=path, epochs=EPOCHS, resume=True, callback=Interrupt()),
    )
    # resuming a finished run trains nothing and returns its history
    model, history = run(checkpoint_path=path, resume=True)
    assert_same_run(reference, (model, history))


def test_resume_without_a_file_starts_fresh_with_a_warning(reference, tmp_path):
    with pytest.warns(
        UserWarning, match="no checkpoint at .*run.pt yet; training starts from epoch 1"
    ):
        resumed = run(
            checkpoint_path=tmp_path / "run.pt", resume=True, callback=Interrupt()
        )
    assert_same_run(reference, resumed)


def test_training_state_is_plain_data_and_holds_the_model(reference, tmp_path):
    path = tmp_path / "run.pt"
    run(checkpoint_path=path)
    state = torch.load(path, weights_only=True)
    assert state["format"] == "betavae_lib.training/1"
    assert {
        "model",
        "config",
        "state_dict",
        "optimizer",
        "epoch",
        "step",
        "rng",
        "history",
        "settings",
    } <= set(state)
    assert state["rng"]["python"]["internal"].shape == (625,) and state["rng"]["numpy"][
        "keys"
    ].shape == (624,)
    model, meta = load(path)
    assert meta == {"epoch": EPOCHS, "step": 24}
    for k, v in reference[0].state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"batch_size": 8}, "batch_size: 16 in the checkpoint, 8 now"),
        ({"lr": 3e-3}, "lr: 0.001 in the checkpoint, 0.003 now"),
        ({"seed": 8}, "seed: 7 in the checkpoint, 8 now"),
        ({"beta": 2.0}, "beta: 'Beta' in the checkpoint, 2.0 now"),
        ({"binarize": True}, "binarize: False in the checkpoint, True now"),
        (
            {"make": lambda: MLPVAE(latent_dim=4, hidden=(32,))},
            r"config \{'latent_dim': 3.*config \{'latent_dim': 4",
        ),
    ],
)
def test_resume_with_other_settings_is_refused(tmp_path, change, match):
    from betavae_lib.checkpoints import CheckpointError

    path = tmp_path / "run.pt"
    run(checkpoint_path=path, epochs=1)
    with pytest.raises(CheckpointError, match=match):
        run(checkpoint_path=path, resume=True, **change)


def test_resume_with_other_images_is_refused(tmp_path):
    from betavae_lib.checkpoints import CheckpointError

    path = tmp_path / "run.pt"
    run(checkpoint_path=path, epochs=1)
    model = new_mlp()
    with pytest.raises(CheckpointError, match="images_fingerprint"):
        fit(
            model,
            1 - TRAIN,
            epochs=2,
            batch_size=16,
            beta=Beta(),
            seed=7,
            progress=False,
            checkpoint_path=path,
            resume=True,
        )


def test_conv_model_is_deterministic_and_resumes_bit_for_bit(tmp_path):
    reference = run(make=new_conv, callback=Interrupt())
    assert_same_run(reference, run(make=new_conv))
    path = tmp_path / "conv.pt"
    with pytest.raises(KeyboardInterrupt):
        run(make=new_conv, checkpoint_path=path, callback=Interrupt(at=3))
    resumed = run(
        make=new_conv, checkpoint_path=path, resume=True, callback=Interrupt()
    )
    assert_same_run(reference, resumed)
    assert all(
        p.is_contiguous() for p in resumed[0].parameters()
    )  # fit hands back the usual memory format


def resume_with(path, images=TRAIN, **kwargs):
    settings = dict(epochs=2, batch_size=16, beta=Beta(), seed=7, progress=False)
    settings.update(kwargs)
    return fit(new_mlp(), images, checkpoint_path=path, resume=True, **settings)


@pytest.mark.parametrize(
    "images",
    [
        TRAIN[torch.arange(len(TRAIN)).roll(1)],  # the same images in another order
        torch.cat([TRAIN[:1].transpose(2, 3), TRAIN[1:]]),  # another image, same sum
        TRAIN.to(torch.uint8),  # the same pixels, another dtype
    ],
    ids=["order", "selection", "dtype"],
)
def test_resume_refuses_any_change_of_the_images(tmp_path, images):
    from betavae_lib.checkpoints import CheckpointError

    path = tmp_path / "run.pt"
    run(checkpoint_path=path, epochs=1)
    with pytest.raises(CheckpointError, match="images_fingerprint"):
        resume_with(path, images)


def linear_beta(step, end, steps):
    return end * min(step / steps, 1.0)


def closure_beta(end):
    return lambda step: end * min(step / 10, 1.0)


@pytest.mark.parametrize(
    "first, second",
    [
        (
            functools.partial(linear_beta, end=4.0, steps=10),
            functools.partial(linear_beta, end=5.0, steps=10),
        ),
        (closure_beta(4.0), closure_beta(5.0)),
        (Linear(4.0, steps=10), Linear(4.0, steps=20)),
    ],
    ids=["partial", "closure", "dataclass"],
)
def test_resume_refuses_a_schedule_with_other_values(tmp_path, first, second):
    from betavae_lib.checkpoints import CheckpointError

    path = tmp_path / "run.pt"
    run(checkpoint_path=path, epochs=1, beta=first)
    with pytest.raises(CheckpointError, match="beta"):
        resume_with(path, beta=second)


def test_resume_accepts_a_schedule_that_agrees_on_every_trained_step(tmp_path):
    """The checkpoint holds steps 0..11; a schedule that differs only from step 12 on
    gives exactly the run an uninterrupted run with it gives."""

    def warm_then(late):
        return lambda step: Linear(4.0, steps=10)(step) if step < 12 else late

    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint_path=path, beta=warm_then(4.0), callback=Interrupt(at=2))
    resumed = run(checkpoint_path=path, resume=True, beta=warm_then(2.0))
    assert_same_run(run(beta=warm_then(2.0)), resumed)


def test_resume_refuses_other_arithmetic_settings(tmp_path):
    from betavae_lib.checkpoints import CheckpointError

    path = tmp_path / "run.pt"
    run(checkpoint_path=path, epochs=1)
    with pytest.raises(CheckpointError, match="amp: False in the checkpoint, True now"):
        resume_with(path, amp=True, device="cpu")


# ---------------------------------------------------------------- dynamic binarisation

GREY = torch.rand(96, 1, 28, 28, generator=torch.Generator().manual_seed(2))


def test_a_binarised_run_resumes_bit_for_bit(tmp_path):
    """The binarisation generator's state is saved and restored with the others: on
    grey images (where every draw matters) the resumed run is the uninterrupted one."""
    reference = run(images=GREY, binarize=True, callback=Interrupt())
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(images=GREY, binarize=True, checkpoint_path=path, callback=Interrupt(at=2))
    saved = torch.load(path, weights_only=True)
    assert saved["settings"]["binarize"] is True
    assert saved["rng"]["binarize"]["device"] == "cpu"
    resumed = run(images=GREY, binarize=True, checkpoint_path=path, resume=True)
    assert_same_run(reference, resumed)
    assert without_timing(run(images=GREY)[1]) != without_timing(reference[1])


def test_a_checkpoint_from_before_binarize_resumes_as_binarize_false(tmp_path):
    """A training state written before the setting existed has no "binarize": it was
    a run without binarisation, and resumes as one."""
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(images=GREY, checkpoint_path=path, callback=Interrupt(at=2))
    state = torch.load(path, weights_only=True)
    del state["settings"]["binarize"]
    assert "binarize" not in state["rng"]
    torch.save(state, path)
    resumed = run(images=GREY, checkpoint_path=path, resume=True)
    assert_same_run(run(images=GREY), resumed)
    from betavae_lib.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="binarize: False in the checkpoint"):
        run(images=GREY, binarize=True, checkpoint_path=path, resume=True)

"""The one training loop, :func:`fit`, and the :class:`History` it returns
(:func:`evaluate`, importable from here, is in :mod:`betavae_lib.evaluation`).

The whole dataset is moved to the device once; batches are taken by index from a seeded
permutation (no per-item Python, no DataLoader workers). Running sums stay on the device
and are read back only every ``log_every`` steps and at the end of an epoch, so the GPU
is never stalled by the host.

Speed settings that leave the arithmetic unchanged are on by default: Adam's fused
kernel where the device has one, channels-last weights for convolutional models, and
cuDNN autotuning on CUDA (off when ``torch.use_deterministic_algorithms(True)`` is set).
Settings that change the arithmetic are opt-in: ``amp=True`` (bfloat16 autocast) and
``compile=True`` (``torch.compile``).

With ``checkpoint_path`` the full training state (weights, optimiser, RNG states,
history) is saved atomically every ``checkpoint_every`` epochs; ``resume=True``
continues from it and gives the same numbers, bit for bit on the same device, as a run
that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ._common import (
    adam,
    as_float_images,
    backend_settings,
    binarize_batch,
    binarize_generator,
    check_amp,
    check_flag,
    check_seed,
    check_vae,
    pick_device,
    positive_int,
    real_number,
    seed_everything,
)
from ._training import (
    check_data,
    images_at,
    progress_bar,
    record_epoch,
    use_channels_last,
)
from .evaluation import _evaluate, evaluate, per_image_terms
from .losses import (
    objective_loss,
)
from .models import VAEOutput
from .objective import OBJECTIVE_OPTIONS, Objective
from .resume import (
    check_checkpoint_path,
    restore_training_state,
    run_settings,
    save_training_state,
)

__all__ = [
    "History",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "as_float_images",
    "evaluate",
    "fit",
    "per_image_terms",
    "pick_device",
    "seed_everything",
]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite during training."""


class NonFiniteWeightsError(NonFiniteLossError):
    """An optimiser update made the weights NaN or infinite (a
    :class:`NonFiniteLossError`, so one ``except`` clause catches both)."""


@dataclass
class History:
    """Per-epoch curves, in nats (batch means, summed over pixels / latents).

    ``train_loss`` is the objective minimised (β-weighted); ``*_recon`` and ``*_kl`` are
    the two ELBO terms, so ``recon + kl`` is the negative ELBO; ``*_kl_per_dim`` is one
    list of D values per epoch. Train values are averages over the epoch's steps; test
    values are measured after the epoch.
    """

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_recon: list = field(default_factory=list)
    train_kl: list = field(default_factory=list)
    train_kl_per_dim: list = field(default_factory=list)
    test_recon: list = field(default_factory=list)
    test_kl: list = field(default_factory=list)
    test_kl_per_dim: list = field(default_factory=list)
    beta: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    steps: int = 0
    amp: bool = False  # trained under bfloat16 autocast (the loss in float32)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> History:
        """The inverse of :meth:`as_dict` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# ---------------------------------------------------------------------- argument checks

# What defines a run's numbers: checked before training, and recorded in a training
# state so that a resumed run is the run it continues.
ARITHMETIC = (
    "batch_size",
    "beta",
    "lr",
    "likelihood",
    "sigma",
    "free_bits",
    "capacity",
    "gamma",
    "tc",
    "seed",
    "amp",
    "compile",
    "binarize",
)


def _check_fit_args(
    model, images, test_images, arithmetic: dict, loop: dict, saving: dict, device
) -> tuple[Objective, dict | None]:
    """Raise on the first argument of ``fit`` that is wrong, before any work starts;
    returns the run's :class:`~betavae_lib.objective.Objective` (which checks β,
    capacity, γ, free bits, the likelihood and their combination) and, with a
    checkpoint, the settings a training state records.

    arithmetic: the settings that define the run's numbers, by name; loop: epochs,
    log_every, callback, callback_every; saving: the checkpoint's path, every (epochs),
    resume and overwrite.
    """
    lr = arithmetic["lr"]
    check_vae(model)
    check_data(
        model,
        images,
        test_images,
        epochs=loop["epochs"],
        batch_size=arithmetic["batch_size"],
        log_every=loop["log_every"],
        checkpoint_every=saving["every"],
    )
    check_seed("seed", arithmetic["seed"])
    if not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a number, got {type(lr).__name__}")
    real_number("lr", lr, strict=True)
    callback = loop["callback"]
    check_flag("binarize", arithmetic["binarize"])
    if callback is not None and not callable(callback):
        raise TypeError(
            f"callback must be callable as callback(epoch, model, history), got "
            f"{type(callback).__name__}"
        )
    if loop["callback_every"] is not None:
        positive_int("callback_every", loop["callback_every"])
        if callback is None:
            raise ValueError(
                "callback_every needs a callback (the function to call every "
                "callback_every steps)"
            )
    if saving["resume"] and saving["path"] is None:
        raise ValueError("resume=True needs checkpoint_path (the file to resume from)")
    check_amp(arithmetic["amp"], device)
    objective = Objective(**{name: arithmetic[name] for name in OBJECTIVE_OPTIONS})
    if saving["path"] is None:
        return objective, None
    settings = run_settings(images, arithmetic)
    check_checkpoint_path(saving["path"], saving["resume"], saving["overwrite"])
    return objective, settings


# ----------------------------------------------------------------------------- the loop


@dataclass
class _TrainingRun:
    """What every step of one ``fit`` call needs."""

    model: nn.Module
    forward: object  # the model, or its torch.compile'd wrapper
    opt: torch.optim.Optimizer
    data: torch.Tensor
    batch_size: int
    objective: Objective
    amp: bool
    channels_last: bool
    device: torch.device
    dtype: torch.dtype  # the model's: batches are fed in it
    order: torch.Generator  # the batch order
    # The β and capacity used at every step so far (a resumed run checks its schedules
    # against them).
    schedule_values: dict = field(default_factory=lambda: {"beta": [], "capacity": []})
    # binarize=True: the generator of the Bernoulli draw that binarises each batch
    binarizer: torch.Generator | None = None


def _prepare_run(
    model, images, device, arithmetic: dict, objective: Objective
) -> _TrainingRun:
    """Seed every generator, move the model and the data to ``device``, choose the fast
    settings, and build the optimiser."""
    seed = arithmetic["seed"]
    seed_everything(seed)
    has_convolutions = any(
        isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules()
    )
    channels_last = use_channels_last(has_convolutions, device)
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return _TrainingRun(
        model=model,
        forward=torch.compile(model) if arithmetic["compile"] else model,
        opt=adam(model.parameters(), arithmetic["lr"], device),
        data=images.to(device),
        batch_size=int(arithmetic["batch_size"]),
        objective=objective,
        amp=arithmetic["amp"],
        channels_last=channels_last,
        device=device,
        dtype=model.log_sigma.dtype,
        order=torch.Generator().manual_seed(seed),
        binarizer=binarize_generator(seed, device) if arithmetic["binarize"] else None,
    )


def _batch(run: _TrainingRun, index: torch.Tensor) -> torch.Tensor:
    """Images at ``index`` as floats in [0, 1] of the model's dtype (binarised by a
    Bernoulli draw per pixel with ``binarize=True``), in the memory format the model
    runs fastest with."""
    x = images_at(run.data, index, run.dtype)
    if run.binarizer is not None:
        x = binarize_batch(x, run.binarizer)
    return x.contiguous(memory_format=torch.channels_last) if run.channels_last else x


def _loss(run: _TrainingRun, x: torch.Tensor, step: int):
    """The forward pass on batch ``x`` and the objective at ``step``: the loss terms
    (device tensors, no host sync) and β."""
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
        out = run.forward(x)
    if run.amp:
        out = VAEOutput(*(t.float() for t in out))
    objective = run.objective
    beta_now = objective.beta_at(step)
    coefficients = objective.coefficients(step)
    run.schedule_values["beta"].append(beta_now)
    if objective.capacity is not None:
        run.schedule_values["capacity"].append(coefficients.capacity)
    terms = objective_loss(
        x,
        out.logits,
        out.mu,
        out.logvar,
        out.z,
        coefficients,
        likelihood=objective.likelihood,
        sigma=objective.sigma,
        log_sigma=run.model.log_sigma,
        dataset_size=len(run.data),
    )
    return terms, beta_now


class _Tally:
    """One epoch's running sums on the device, weighted by batch size (objective,
    recon, kl, and kl per dim), and the first step whose loss was not finite; read back
    only by :meth:`check`, every ``log_every`` steps and at the end of the epoch."""

    def __init__(self, run: _TrainingRun, epoch: int, step: int):
        self.run, self.epoch, self.seen = run, epoch, 0
        self.sums = torch.zeros(3, device=run.device)  # objective, recon, kl
        self.kl_dims = torch.zeros(run.model.latent_dim, device=run.device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=run.device)
        self.unchecked_from = step  # the first update whose weights are not checked yet

    @torch.no_grad()
    def add(self, terms, size: int, step: int) -> None:
        bad = ~torch.isfinite(terms.total)
        self.first_bad = torch.where(
            bad & (self.first_bad < 0),
            torch.full_like(self.first_bad, step),
            self.first_bad,
        )
        self.sums += torch.stack([terms.total, terms.recon, terms.kl]).detach() * size
        self.kl_dims += terms.kl_per_dim.detach() * size
        self.seen += size

    def check(self, step: int, bar, beta_now) -> None:
        """Raise if the loss or the weights stopped being finite; show the means."""
        run = self.run
        _raise_if_not_finite(run, self.first_bad, self.unchecked_from, step, self.epoch)
        self.unchecked_from = step
        if not bar.disable:
            loss, recon, kl = (self.sums / self.seen).tolist()
            bar.set_postfix(
                epoch=self.epoch,
                loss=f"{loss:.1f}",
                recon=f"{recon:.1f}",
                kl=f"{kl:.2f}",
                beta=f"{beta_now:.3g}",
            )
            bar.update(step - bar.n)

    def means(self) -> tuple:
        """(objective, recon, kl, kl per dim) over the epoch's images."""
        loss, recon, kl = (self.sums / self.seen).tolist()
        return loss, recon, kl, (self.kl_dims / self.seen).tolist()


def _test_terms(model, test_images, objective: Objective, seed: int):
    """(recon, kl, kl per dim) on ``test_images``, drawn as :func:`evaluate` draws."""
    ev = _evaluate(
        model,
        test_images,
        batch_size=1000,
        likelihood=objective.likelihood,
        sigma=objective.sigma,
        seed=seed,
    )
    return ev["recon"], ev["kl"], ev["kl_per_dim"]


def _restore(run: _TrainingRun, path, settings: dict, history: History):
    """(epoch, step, History) of the training state at ``path``, restored into the
    model, the optimiser and the generators; ``(0, 0, history)`` when there is none."""
    objective = run.objective
    restored = restore_training_state(
        path,
        run.model,
        run.opt,
        order=run.order,
        device=run.device,
        settings=settings,
        binarizer=run.binarizer,
        schedules={"beta": objective.beta_at, "capacity": objective.capacity_at},
    )
    if restored is None:
        return 0, 0, history
    epoch, step, saved_history, run.schedule_values = restored
    return epoch, step, History.from_dict(saved_history)


def _save(run: _TrainingRun, path, epoch, step, history: History, settings) -> None:
    save_training_state(
        path,
        run.model,
        run.opt,
        epoch=epoch,
        step=step,
        order=run.order,
        device=run.device,
        history=history.as_dict(),
        settings=settings,
        schedule_values=run.schedule_values,
        binarizer=run.binarizer,
    )


def _run_callback(
    callback, epoch: int, model, history: History, device: torch.device
) -> None:
    """Call ``callback`` with torch's RNG forked, so what it draws never changes the
    training."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=devices):
        callback(epoch, model, history)


def fit(
    model,
    images: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    beta=1.0,
    lr: float = 1e-3,
    device: str | torch.device = "auto",
    test_images: torch.Tensor | None = None,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
    free_bits: float = 0.0,
    capacity=None,
    gamma: float = 1000.0,
    tc: bool = False,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
    callback=None,
    callback_every: int | None = None,
    checkpoint_path=None,
    checkpoint_every: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    amp: bool = False,
    compile: bool = False,
    binarize: bool = False,
) -> History:
    """Train ``model`` on ``images`` with Adam; returns a :class:`History`.

    images: (N, C, H, W), float in [0, 1], uint8 (0..255) or bool; test_images likewise
    (optional).
    beta: a number or a schedule ``step -> β`` (see :mod:`betavae_lib.schedules`);
    capacity: ``None``, a number or a schedule ``step -> C`` (nats) for the capacity
    objective with weight ``gamma``; likelihood, sigma, free_bits, tc: as for
    :func:`betavae_lib.losses.beta_vae_loss`.
    These options make one :class:`betavae_lib.objective.Objective`, which raises
    ``ValueError`` for combinations it cannot honour (``tc`` with ``free_bits`` or
    ``capacity``; ``capacity`` with ``free_bits`` or a β other than 1; ``gamma``
    without ``capacity``).
    seed: seeds the batch order and the sampling noise (and the binarisation).
    binarize: dynamic binarisation (Burda et al. 2016): every training batch, once in
    [0, 1], is replaced by a Bernoulli draw per pixel (1 with the pixel's intensity as
    probability), a fresh draw each time an image is used. The draws come from a
    generator of their own on ``device`` (seeded from ``seed``), so a run is
    reproducible and runs with ``binarize=False`` draw exactly what they drew before the
    option existed. ``test_images`` are evaluated as given: binarise a test set once,
    e.g. with :func:`betavae_lib.data.binarize`.
    callback: ``callback(epoch, model, history)`` after each epoch, run with torch's RNG
    forked so that it cannot change the training. callback_every: also call it every
    this many optimiser steps inside an epoch (e.g. to draw frames during the first
    epoch); there ``epoch`` is the epoch in progress, ``history.steps`` the steps done
    so far, and ``history`` holds the finished epochs only.

    checkpoint_path: save the training state there (atomically) every
    ``checkpoint_every`` epochs and after the last; resume: continue from that file if
    it exists (same model, images in the same order, settings, and β / capacity at every
    step already trained; a larger ``epochs`` trains on). Without ``resume``, an
    existing file is refused unless ``overwrite=True``; the path is checked to be
    writable before the first epoch. amp: bfloat16 autocast (cuda, cpu); compile:
    ``torch.compile`` the model. Both change the arithmetic, so they are off by default.

    Raises :class:`NonFiniteLossError`, naming the step, if the loss stops being finite,
    and :class:`NonFiniteWeightsError` (a subclass) if an update makes the weights
    non-finite.
    """
    given = locals()  # the arguments, before anything else is bound
    device = pick_device(device)
    arithmetic = {name: given[name] for name in ARITHMETIC}
    loop = {
        "epochs": epochs,
        "log_every": log_every,
        "callback": callback,
        "callback_every": callback_every,
    }
    saving = {
        "path": checkpoint_path,
        "every": checkpoint_every,
        "resume": resume,
        "overwrite": overwrite,
    }
    objective, settings = _check_fit_args(
        model, images, test_images, arithmetic, loop, saving, device
    )
    run = _prepare_run(model, images, device, arithmetic, objective)
    start_epoch, step, history = 0, 0, History(amp=bool(amp))
    if resume:
        start_epoch, step, history = _restore(run, checkpoint_path, settings, history)

    steps_per_epoch = math.ceil(len(images) / batch_size)
    total = epochs * steps_per_epoch
    bar = progress_bar(
        total, progress=progress, desc="fit", initial=min(step, total), unit="step"
    )
    try:
        with backend_settings(device):
            for epoch in range(start_epoch + 1, epochs + 1):
                t0, tally = time.perf_counter(), _Tally(run, epoch, step)
                batch_order = torch.randperm(len(images), generator=run.order)
                for i, index in enumerate(batch_order.to(device).split(run.batch_size)):
                    x = _batch(run, index)
                    terms, beta_now = _loss(run, x, step)
                    run.opt.zero_grad(set_to_none=True)
                    terms.total.backward()
                    run.opt.step()
                    tally.add(terms, len(x), step)
                    step += 1
                    if step % log_every == 0 or i == steps_per_epoch - 1:
                        tally.check(step, bar, beta_now)
                    inside = i < steps_per_epoch - 1  # the epoch's end calls it below
                    if callback_every and step % callback_every == 0 and inside:
                        history.steps = step
                        _run_callback(callback, epoch, model, history, device)
                test = None
                if test_images is not None:
                    test = _test_terms(model, test_images, objective, seed)
                seconds = time.perf_counter() - t0
                record_epoch(
                    history, epoch, tally.means(), float(beta_now), test, seconds, step
                )
                if checkpoint_path is not None and (
                    epoch % checkpoint_every == 0 or epoch == epochs
                ):
                    _save(run, checkpoint_path, epoch, step, history, settings)
                if callback is not None:
                    _run_callback(callback, epoch, model, history, device)
    finally:
        bar.close()
        if run.channels_last:  # hand the model back in the usual memory layout
            model.to(memory_format=torch.contiguous_format)
    model.eval()
    return history


def _raise_if_not_finite(
    run: _TrainingRun,
    first_bad: torch.Tensor,
    unchecked_from: int,
    step: int,
    epoch: int,
) -> None:
    """Raise if a loss since the last check, or the weights after the last update, are
    not finite. One read back from the device, at the points where the loss is read
    anyway."""
    weights_ok = torch.stack([p.isfinite().all() for p in run.model.parameters()]).all()
    bad_step, ok = torch.stack([first_bad, weights_ok.long()]).tolist()
    if bad_step >= 0:
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at optimiser step {bad_step} (epoch "
            f"{epoch}); {_divergence_advice(run)}"
        )
    if not ok:
        steps = (
            f"optimiser step {step - 1}"
            if step - 1 == unchecked_from
            else f"one of optimiser steps {unchecked_from}..{step - 1}"
        )
        raise NonFiniteWeightsError(
            f"the weights became NaN or infinite after {steps} (epoch {epoch}) while "
            f"the loss was still finite; {_divergence_advice(run)}"
        )


def _divergence_advice(run: _TrainingRun) -> str:
    """What can help when training diverges with these settings (the inputs, β, σ and
    free bits were checked before training, so they are not suspects)."""
    advice = [f"lower the learning rate (now {run.opt.param_groups[0]['lr']:g})"]
    if run.objective.likelihood != "bernoulli":
        advice.append("use a larger sigma or the Bernoulli likelihood")
    if run.amp:
        advice.append("train without amp")
    return "; or ".join(advice)

"""The one training loop, :func:`fit`, and :func:`evaluate`.

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

from . import checkpoints
from ._common import (
    adam,
    as_float_images,
    backend_settings,
    binarize_batch,
    binarize_generator,
    check_amp,
    check_dataset_images,
    check_flag,
    check_seed,
    check_vae,
    evaluation_seed,
    model_device,
    pick_device,
    positive_int,
    real_number,
    seed_everything,
    seeded_noise,
)
from .losses import (
    LIKELIHOODS,
    beta_vae_loss,
    gaussian_kl,
    objective_loss,
    reconstruction_nll,
)
from .models import VAEOutput
from .objective import OBJECTIVE_OPTIONS, Objective, check_sigma_unused

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


@torch.no_grad()
def evaluate(
    model,
    images: torch.Tensor,
    *,
    batch_size: int = 1000,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
    seed: int = 0,
) -> dict:
    """Negative-ELBO terms on ``images`` with one posterior sample per image.

    The samples are drawn from a generator of their own, seeded from ``seed`` (as a run
    with that seed evaluates its test images): the same call gives the same numbers,
    and the caller's random stream is left where it was. Returns
    ``{"recon": float, "kl": float, "kl_per_dim": (D,) list, "neg_elbo": float}`` in
    nats per image (means over images, sums over pixels / latents).
    """
    seed = _check_evaluation_args(model, images, batch_size, likelihood, sigma, seed)
    return _evaluate(
        model,
        images,
        batch_size=batch_size,
        likelihood=likelihood,
        sigma=sigma,
        seed=seed,
    )


def _check_evaluation_args(model, images, batch_size, likelihood, sigma, seed) -> int:
    """Raise on a bad argument of :func:`evaluate` or :func:`per_image_terms`; returns
    the seed as an int."""
    check_vae(model)
    check_dataset_images(model, images, "images")
    positive_int("batch_size", batch_size)
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"unknown likelihood {likelihood!r}; valid are {', '.join(LIKELIHOODS)}"
        )
    check_sigma_unused(likelihood, sigma)
    return positive_int("seed", seed, minimum=0, what="a non-negative integer")


@torch.no_grad()
def _evaluate(
    model,
    images: torch.Tensor,
    *,
    batch_size: int,
    likelihood: str,
    sigma: float,
    seed: int,
) -> dict:
    """:func:`evaluate` without the argument checks (``fit`` checks once, before the
    first epoch)."""
    with seeded_noise(evaluation_seed(seed), model_device(model)):
        sums, kl_dims = _evaluation_sums(model, images, batch_size, likelihood, sigma)
    recon, kl = (sums / len(images)).tolist()
    return {
        "recon": recon,
        "kl": kl,
        "kl_per_dim": (kl_dims / len(images)).tolist(),
        "neg_elbo": recon + kl,
    }


def _evaluation_sums(model, images, batch_size: int, likelihood: str, sigma: float):
    """(recon, kl) and kl per dim summed over ``images``, in eval mode."""
    was_training = model.training
    model.eval()
    device, dtype = model_device(model), model.log_sigma.dtype
    sums = torch.zeros(2, device=device, dtype=dtype)
    kl_dims = torch.zeros(model.latent_dim, device=device, dtype=dtype)
    for start in range(0, len(images), batch_size):
        x = as_float_images(
            images[start : start + batch_size].to(device, non_blocking=True)
        ).to(dtype)
        out = model(x)
        t = beta_vae_loss(
            x,
            out.logits,
            out.mu,
            out.logvar,
            likelihood=likelihood,
            sigma=sigma,
            log_sigma=model.log_sigma,
        )
        sums += torch.stack([t.recon, t.kl]) * len(x)
        kl_dims += t.kl_per_dim * len(x)
    model.train(was_training)
    return sums, kl_dims


@torch.no_grad()
def per_image_terms(
    model,
    images: torch.Tensor,
    *,
    batch_size: int = 1000,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
    seed: int = 0,
) -> dict:
    """:func:`evaluate`'s terms image by image, from the same posterior samples (the
    generator of ``seed``, drawn batch by batch: the same ``batch_size`` gives the
    same samples): ``{"recon", "kl", "neg_elbo"}``, each an (N,) float64 NumPy array
    in nats. Their means are ``evaluate``'s numbers (to float32 rounding); two
    models scored on the same images give paired differences
    (:func:`betavae_lib.metrics.paired_difference`)."""
    seed = _check_evaluation_args(model, images, batch_size, likelihood, sigma, seed)
    was_training = model.training
    model.eval()
    device, dtype = model_device(model), model.log_sigma.dtype
    recon, kl = [], []
    with seeded_noise(evaluation_seed(seed), device):
        for start in range(0, len(images), batch_size):
            x = as_float_images(images[start : start + batch_size].to(device)).to(dtype)
            out = model(x)
            recon.append(
                reconstruction_nll(
                    out.logits, x, likelihood, sigma, log_sigma=model.log_sigma
                )
            )
            kl.append(gaussian_kl(out.mu, out.logvar).sum(1))
    model.train(was_training)
    recon, kl = (torch.cat(t).double().cpu().numpy() for t in (recon, kl))
    return {"recon": recon, "kl": kl, "neg_elbo": recon + kl}


# ---------------------------------------------------------------------- argument checks


def _check_fit_args(
    model, images, test_images, arithmetic: dict, loop: dict, saving: dict, device
) -> None:
    """Raise on the first argument of ``fit`` that is wrong, before any work starts.

    arithmetic: the settings that define the run's numbers, by name; loop: epochs,
    log_every, callback, callback_every; saving: the checkpoint's path, every (epochs)
    and resume.
    """
    lr = arithmetic["lr"]
    check_vae(model)
    check_dataset_images(model, images, "images")
    if test_images is not None:
        check_dataset_images(model, test_images, "test_images")
    for name, value in (
        ("epochs", loop["epochs"]),
        ("batch_size", arithmetic["batch_size"]),
        ("log_every", loop["log_every"]),
        ("checkpoint_every", saving["every"]),
    ):
        positive_int(name, value)
    check_seed("seed", arithmetic["seed"])
    if not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a number, got {type(lr).__name__}")
    real_number("lr", lr, strict=True)
    # likelihood, sigma, β, capacity, γ, free bits and their combination: Objective
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


# ---------------------------------------------------------------------- device settings


def _has_convolutions(model) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())


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
    # The β and capacity used at every step so far (a resumed run checks its schedules
    # against them).
    schedule_values: dict = field(default_factory=lambda: {"beta": [], "capacity": []})
    # binarize=True: the generator of the Bernoulli draw that binarises each batch
    binarizer: torch.Generator | None = None


def _batch(run: _TrainingRun, index: torch.Tensor) -> torch.Tensor:
    """Images at ``index`` as floats in [0, 1] of the model's dtype (binarised by a
    Bernoulli draw per pixel with ``binarize=True``), in the memory format the model
    runs fastest with."""
    # index_select: the same rows as run.data[index], in about half the time
    x = as_float_images(run.data.index_select(0, index)).to(run.dtype)
    if run.binarizer is not None:
        x = binarize_batch(x, run.binarizer)
    return x.contiguous(memory_format=torch.channels_last) if run.channels_last else x


def _train_step(run: _TrainingRun, x: torch.Tensor, step: int):
    """One Adam step on batch ``x``; returns the loss terms (device tensors, no host
    sync) and β."""
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
        objective.coefficients(step),
        likelihood=objective.likelihood,
        sigma=objective.sigma,
        log_sigma=run.model.log_sigma,
        dataset_size=len(run.data),
    )
    run.opt.zero_grad(set_to_none=True)
    terms.total.backward()
    run.opt.step()
    return terms, beta_now


def _train_epoch(
    run: _TrainingRun,
    perm: torch.Tensor,
    epoch: int,
    step: int,
    log_every: int,
    bar,
    during=None,
):
    """One pass over the data in the order ``perm``; returns (objective, recon, kl sums,
    kl per dim sums, last β, step), the sums weighted by batch size. during: (every,
    call): ``call(step)`` after every ``every``-th step but the epoch's last."""
    n, batch_size = len(run.data), run.batch_size
    steps_per_epoch = math.ceil(n / batch_size)
    sums = torch.zeros(3, device=run.device)  # objective, recon, kl
    kl_dims = torch.zeros(run.model.latent_dim, device=run.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=run.device)
    unchecked_from = step  # the first update whose weights are not checked yet
    for i in range(steps_per_epoch):
        x = _batch(run, perm[i * batch_size : (i + 1) * batch_size])
        terms, beta_now = _train_step(run, x, step)
        with torch.no_grad():
            bad = ~torch.isfinite(terms.total)
            first_bad = torch.where(
                bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad
            )
            sums += torch.stack([terms.total, terms.recon, terms.kl]).detach() * len(x)
            kl_dims += terms.kl_per_dim.detach() * len(x)
        step += 1
        if during is not None and step % during[0] == 0 and i < steps_per_epoch - 1:
            during[1](step)
        if step % log_every == 0 or i == steps_per_epoch - 1:
            _raise_if_not_finite(run, first_bad, unchecked_from, step, epoch)
            unchecked_from = step
            if not bar.disable:
                loss, recon, kl = (sums / min((i + 1) * batch_size, n)).tolist()
                bar.set_postfix(
                    epoch=epoch,
                    loss=f"{loss:.1f}",
                    recon=f"{recon:.1f}",
                    kl=f"{kl:.2f}",
                    beta=f"{beta_now:.3g}",
                )
                bar.update(step - bar.n)
    return sums, kl_dims, beta_now, step


def _record_epoch(
    history: History, epoch: int, sums, kl_dims, n: int, beta_now
) -> None:
    loss, recon, kl = (sums / n).tolist()
    history.epoch.append(epoch)
    history.train_loss.append(loss)
    history.train_recon.append(recon)
    history.train_kl.append(kl)
    history.train_kl_per_dim.append((kl_dims / n).tolist())
    history.beta.append(float(beta_now))


def _record_test(
    history: History, model, test_images, likelihood: str, sigma: float, seed: int
) -> None:
    ev = _evaluate(
        model,
        test_images,
        batch_size=1000,
        likelihood=likelihood,
        sigma=sigma,
        seed=seed,
    )
    history.test_recon.append(ev["recon"])
    history.test_kl.append(ev["kl"])
    history.test_kl_per_dim.append(ev["kl_per_dim"])


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


def _step_callback(callback, epoch: int, model, history: History, device):
    """``call(step)``: ``callback`` inside epoch ``epoch``, with ``history.steps`` set
    to ``step`` (the end of the epoch sets it again)."""

    def call(step: int) -> None:
        history.steps = step
        _run_callback(callback, epoch, model, history, device)

    return call


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
    from tqdm.auto import tqdm

    device = pick_device(device)
    arithmetic = {  # what defines the run's numbers: checked, and recorded for resume
        "batch_size": batch_size,
        "beta": beta,
        "lr": lr,
        "likelihood": likelihood,
        "sigma": sigma,
        "free_bits": free_bits,
        "capacity": capacity,
        "gamma": gamma,
        "tc": tc,
        "seed": seed,
        "amp": amp,
        "compile": compile,
        "binarize": binarize,
    }
    loop = {
        "epochs": epochs,
        "log_every": log_every,
        "callback": callback,
        "callback_every": callback_every,
    }
    saving = {"path": checkpoint_path, "every": checkpoint_every, "resume": resume}
    _check_fit_args(model, images, test_images, arithmetic, loop, saving, device)
    # checks β, capacity, γ, free bits, the likelihood and their combination
    objective = Objective(**{name: arithmetic[name] for name in OBJECTIVE_OPTIONS})
    settings = (
        None
        if checkpoint_path is None
        else checkpoints.run_settings(images, arithmetic)
    )
    if checkpoint_path is not None:
        checkpoints.check_checkpoint_path(checkpoint_path, resume, overwrite)

    seed_everything(seed)
    run = _prepare_run(model, images, device, arithmetic, objective=objective)
    order = torch.Generator().manual_seed(seed)  # the batch order
    if binarize:
        run.binarizer = binarize_generator(seed, device)
    start_epoch, step, history = 0, 0, History(amp=bool(amp))
    if resume:
        restored = checkpoints.restore_training_state(
            checkpoint_path,
            model,
            run.opt,
            order=order,
            device=device,
            settings=settings,
            binarizer=run.binarizer,
            schedules={
                "beta": objective.beta_at,
                "capacity": objective.capacity_at,
            },
        )
        if restored is not None:
            start_epoch, step, saved_history, run.schedule_values = restored
            history = History.from_dict(saved_history)

    total_steps = epochs * math.ceil(len(images) / batch_size)
    bar = tqdm(
        total=total_steps,
        initial=min(step, total_steps),
        disable=not progress,
        desc="fit",
        unit="step",
        leave=False,
    )
    try:
        with backend_settings(device):
            for epoch in range(start_epoch + 1, epochs + 1):
                t0 = time.perf_counter()
                perm = torch.randperm(len(images), generator=order).to(device)
                during = None
                if callback_every is not None:
                    during = (
                        callback_every,
                        _step_callback(callback, epoch, model, history, device),
                    )
                sums, kl_dims, beta_now, step = _train_epoch(
                    run, perm, epoch, step, log_every, bar, during
                )
                _record_epoch(history, epoch, sums, kl_dims, len(images), beta_now)
                if test_images is not None:
                    _record_test(history, model, test_images, likelihood, sigma, seed)
                history.seconds.append(time.perf_counter() - t0)
                history.steps = step
                if checkpoint_path is not None and (
                    epoch % checkpoint_every == 0 or epoch == epochs
                ):
                    checkpoints.save_training_state(
                        checkpoint_path,
                        model,
                        run.opt,
                        epoch=epoch,
                        step=step,
                        order=order,
                        device=device,
                        history=history.as_dict(),
                        settings=settings,
                        schedule_values=run.schedule_values,
                        binarizer=run.binarizer,
                    )
                if callback is not None:
                    _run_callback(callback, epoch, model, history, device)
    finally:
        bar.close()
        if run.channels_last:  # hand the model back in the usual memory layout
            model.to(memory_format=torch.contiguous_format)
    model.eval()
    return history


def _prepare_run(
    model, images, device, arithmetic: dict, *, objective: Objective
) -> _TrainingRun:
    """Move the model and the data to ``device``, choose the fast settings, and build
    the optimiser."""
    channels_last = _has_convolutions(model) and device.type in ("cuda", "cpu")
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
    )


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

"""Many models, one loop: K VAEs of one architecture trained as one batched model.

The book trains grids of small models: a β sweep, the collapse cures, five objectives
× three seeds. One at a time such a model cannot keep a GPU busy (each step is a few
dozen launches of tiny kernels). :class:`~betavae_lib.stacked.VAEEnsemble` stacks the
parameters of K models of one class and config (each tensor gets a leading member
dimension K) and runs the K models in one forward and backward pass;
:func:`fit_ensemble` steps one fused Adam over the stacked tensors, which is exactly K
Adams because Adam is elementwise.

:func:`fit_ensemble` reproduces :func:`betavae_lib.train.fit` member by member. Member k
starts from its model's weights, draws its sampling noise from its own generator seeded
as ``fit(seed=seed_k)`` seeds torch's global one (so the noise, including that of the
test evaluation, is what ``fit`` draws), takes its batches in the order
``fit(seed=seed_k)`` takes them, and minimises its own
:class:`~betavae_lib.objective.Objective`; with ``binarize=True`` its batches are
binarised by the draws ``fit(seed=seed_k, binarize=True)`` makes. The variants are
coefficients of one objective, so β-VAE, capacity, free-bits and β-TCVAE members share
one step (:mod:`betavae_lib.ensemble_step`). In the "members" layout (the CPU
default) each member's products, convolutions and loss are the calls ``fit`` makes, in
its memory layout, on operands aligned as ``fit``'s are, and Adam steps each member's
weights as tensors of their own (:class:`~betavae_lib.ensemble_step._MemberAdam`), so
every member ends with the weights and History ``fit`` gives it alone, bit for bit, on
any CPU (whatever its vector width or BLAS); the tests check it. float64 models train
in float64, as ``fit`` trains them; parameters frozen with ``requires_grad_(False)``
stay as they are. Models whose computation is not their layers in sequence (an
overridden ``encode``/``decode``/``forward``, hooks, subclassed layers) are refused, as
are one model object under two names and members of different dtypes.

Divergence: a member whose loss stops being finite is frozen at the weights it had
before that step (from then on its gradients and Adam's first moment are zeroed, so its
update is exactly zero); the other members train on unaffected, since no computation
mixes members. Its History stops at its last complete epoch, and at the end
:func:`fit_ensemble` warns, or raises :class:`~betavae_lib.train.NonFiniteLossError`
with ``on_failure="raise"``, naming every frozen member and the step it failed at.

``cuda_graph=True`` (CUDA, "grouped" layout) captures the full-batch training step
(forward, backward, freezing, the capturable fused Adam and the running sums) in a CUDA
graph after three eager warm-up steps, and replays it for every other full batch.
Before each replay the batch indices, the coefficients and each member's noise are
written into static buffers (the noise by each member's generator, outside the graph,
which therefore holds no random state). The smaller last batch of an epoch and the test
evaluation run eagerly.
"""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ._common import (
    backend_settings,
    check_amp,
    check_flag,
    check_seed,
    pick_device,
    real_number,
)
from ._training import (
    check_data,
    progress_bar,
    record_epoch,
)
from .ensemble_step import _GraphedStep, _MemberAdam, _Trainer  # noqa: F401
from .objective import (
    Objective,
    shared_likelihood,
)
from .stacked import VAEEnsemble, _check_same_architecture
from .train import History, NonFiniteLossError

DEFAULT_OBJECTIVE = Objective()  # the plain VAE, as fit's defaults
COEFFICIENT_CHUNK = 1024  # steps whose coefficients are computed at a time


class EnsembleMemberWarning(RuntimeWarning):
    """Members of an ensemble diverged and were frozen; the message names them."""


# ------------------------------------------------------------------ training


@dataclass
class EnsembleResult:
    """What :func:`fit_ensemble` returns.

    histories: member name -> :class:`~betavae_lib.train.History`. failed: member name
    -> the optimiser step at which its loss first stopped being finite.
    """

    histories: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)


def _per_member(value, names, what: str, kind) -> list:
    """One value for every member, or a mapping name -> value covering every name."""
    if isinstance(value, Mapping):
        missing = [n for n in names if n not in value]
        if missing:
            raise ValueError(f"{what} has no entry for {', '.join(map(str, missing))}")
        unknown = [n for n in value if n not in names]
        if unknown:  # a misspelt name would otherwise be ignored
            raise ValueError(
                f"{what} has entries for {', '.join(map(repr, unknown))}, which are "
                f"not models; the models are {', '.join(map(repr, names))}"
            )
        values = [value[n] for n in names]
    else:
        values = [value] * len(names)
    accepted = numbers.Integral if kind is int else kind
    for n, v in zip(names, values):
        if not isinstance(v, accepted) or (isinstance(v, bool) and kind is int):
            raise TypeError(
                f"{what} for {n!r} must be a {kind.__name__}, got {type(v).__name__}"
            )
    return values


def _check_distinct(names: list, models: list) -> None:
    """Raise ValueError when one model object is given under several names (trained in
    place, it could hold only one member's weights)."""
    seen: dict[int, object] = {}
    for name, model in zip(names, models):
        if id(model) in seen:
            raise ValueError(
                f"models {seen[id(model)]!r} and {name!r} are the same model object; "
                f"each member is trained in place, so give each its own model (e.g. "
                f"copy.deepcopy(model))"
            )
        seen[id(model)] = name


def _check_cuda_graph(device: torch.device, layout: str) -> None:
    if device.type != "cuda":
        raise ValueError(
            f"cuda_graph=True needs a CUDA device; this run is on {device.type}"
        )
    if layout != "grouped":
        raise ValueError("cuda_graph=True needs layout='grouped' (or 'auto')")


def fit_ensemble(
    models: Mapping[object, nn.Module],
    images: torch.Tensor,
    *,
    objectives: Mapping[object, Objective] | Objective = DEFAULT_OBJECTIVE,
    seeds: Mapping[object, int] | int = 0,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    device: str | torch.device = "auto",
    test_images: torch.Tensor | None = None,
    log_every: int = 50,
    progress: bool = True,
    cuda_graph: bool = False,
    layout: str = "auto",
    on_failure: str = "warn",
    binarize: bool = False,
    amp: bool = False,
) -> EnsembleResult:
    """Train ``models`` (name -> model, one class and config) as one batched model.

    Member ``name`` is trained as ``fit(models[name], images, seed=seeds[name], ...)``
    with its objective's options would train it alone (module docstring). objectives,
    seeds: one value for all members, or a mapping name -> value. images, test_images,
    epochs, batch_size, lr, device, log_every, progress: as for
    :func:`betavae_lib.train.fit`. binarize: as for ``fit``: every training batch is
    binarised by a Bernoulli draw per pixel, member ``name`` drawing what
    ``fit(seed=seeds[name], binarize=True)`` draws. cuda_graph: capture the step in a
    CUDA graph (CUDA, grouped layout). layout: "members" or "grouped"
    (:class:`VAEEnsemble`; ``"auto"`` picks "members" on the CPU, "grouped" elsewhere).
    on_failure: ``"warn"`` or ``"raise"`` when members diverged and were frozen.
    amp: bfloat16 autocast of the forward pass (cuda, cpu), the loss and the weights in
    float32, as ``fit(amp=True)``; recorded in each History.

    The models are trained in place (and, like ``fit``, left on ``device`` in eval
    mode). Returns an :class:`EnsembleResult`: a History per member, whose ``seconds``
    are the ensemble's, and the frozen members.
    """
    names, model_list, objective_list, seed_list = _members(models, objectives, seeds)
    device = pick_device(device)
    check_data(
        model_list[0],
        images,
        test_images,
        epochs=epochs,
        batch_size=batch_size,
        log_every=log_every,
    )
    lr, amp = _check_options(
        lr, binarize, amp, cuda_graph, progress, on_failure, device
    )
    ens = VAEEnsemble(model_list, device=device, layout=layout)
    if cuda_graph:
        _check_cuda_graph(device, ens.layout)

    trainer = _Trainer(
        ens,
        images,
        objective_list,
        seed_list,
        lr=lr,
        batch_size=int(batch_size),
        graph=bool(cuda_graph),
        binarize=binarize,
        amp=amp,
    )
    histories = {n: History(amp=amp) for n in names}
    with backend_settings(device):
        _train_epochs(
            trainer,
            histories,
            epochs=int(epochs),
            test_images=test_images,
            log_every=int(log_every),
            progress=progress,
            cuda_graph=cuda_graph,
        )
    for k, model in enumerate(model_list):
        ens.copy_into(k, model.to(device)).eval()
    failed, broken = _failures(names, model_list, trainer)
    if failed:
        message = _divergence_message(len(names), failed, broken)
        if on_failure == "raise":
            raise NonFiniteLossError(message)
        warnings.warn(message, EnsembleMemberWarning, stacklevel=2)
    return EnsembleResult(histories, failed)


def _members(models, objectives, seeds) -> tuple[list, list, list, list]:
    """The members' names, models, objectives and seeds, checked (``models``: a dict
    name -> model; ``objectives``, ``seeds``: one value for all, or a dict)."""
    if not isinstance(models, Mapping):
        raise TypeError(
            f"models must be a dict name -> model, got a {type(models).__name__}; "
            f"e.g. {{'beta=1': model_a, 'beta=4': model_b}}"
        )
    names = list(models)
    model_list = [models[n] for n in names]
    _check_distinct(names, model_list)
    _check_same_architecture(model_list)
    objective_list = _per_member(objectives, names, "objectives", Objective)
    seed_list = _per_member(seeds, names, "seeds", int)
    seed_list = [check_seed(f"seeds[{n!r}]", s) for n, s in zip(names, seed_list)]
    shared_likelihood(objective_list, names)
    return names, model_list, objective_list, seed_list


def _check_options(lr, binarize, amp, cuda_graph, progress, on_failure, device):
    """Raise on a bad option of :func:`fit_ensemble`; returns lr and amp, checked."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a number, got {lr!r}")
    lr = real_number("lr", lr, strict=True)
    check_flag("binarize", binarize)
    amp = check_amp(amp, device)
    check_flag("cuda_graph", cuda_graph)
    check_flag("progress", progress)
    if on_failure not in ("warn", "raise"):
        raise ValueError(f"on_failure must be 'warn' or 'raise', got {on_failure!r}")
    return lr, amp


def _failures(names, models, trainer) -> tuple[dict, list]:
    """The members that diverged (name -> the step their loss first stopped being
    finite), and those of them whose weights are not finite."""
    failed = {n: s for n, s in zip(names, trainer.first_bad.tolist()) if s >= 0}
    # an update can make the weights non-finite while the loss is still finite (fit
    # raises NonFiniteWeightsError then): such a member cannot be frozen in time
    broken = [n for n, m in zip(names, models) if not _weights_finite(m)]
    last_step = int(trainer.step_t) - 1
    failed.update({n: last_step for n in broken if n not in failed})
    return failed, broken


def _divergence_message(size: int, failed: dict, broken: list) -> str:
    """What :func:`fit_ensemble` says of the members that diverged."""
    listed = ", ".join(f"{n} (step {s})" for n, s in failed.items())
    kept = [n for n in failed if n not in broken]
    what = (
        f"{', '.join(map(str, kept))} kept the (finite) weights they had before "
        f"that step"
        if kept
        else ""
    )
    if broken:
        what += "; " if what else ""
        what += (
            f"the weights of {', '.join(map(str, broken))} are NaN or infinite (an "
            f"update overflowed before the loss did): do not use them"
        )
    return (
        f"{len(failed)} of {size} models diverged (the loss or the weights "
        f"became NaN or infinite) and were frozen: {listed}; {what}. The others "
        f"trained on. Lower the learning rate or β, or check the inputs."
    )


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(p.isfinite().all()) for p in model.parameters())


def _train_epochs(
    t: _Trainer, histories, *, epochs, test_images, log_every, progress, cuda_graph
):
    batch_size, names = t.batch_size, list(histories)
    total_steps = epochs * t.steps_per_epoch
    table, table_first = None, 0  # the coefficients of steps table_first, ...
    graphed, step = None, 0
    label = f"ensemble of {len(names)}"
    bar = progress_bar(total_steps, progress=progress, desc=label)
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            order = t.epoch_order()
            t.sums.zero_()
            t.kl_dims.zero_()
            for i in range(t.steps_per_epoch):
                index = order[..., i * batch_size : (i + 1) * batch_size]
                if table is None or step - table_first >= len(table):
                    count = min(COEFFICIENT_CHUNK, total_steps - step)
                    table, table_first = t.coefficient_table(step, count), step
                row = table[step - table_first]
                if cuda_graph and index.shape[-1] == batch_size:
                    if graphed is None:
                        graphed = _GraphedStep(t, index.shape)
                    graphed.run(index, row)
                else:
                    t.opt.zero_grad(set_to_none=True)
                    shape = (t.size, index.shape[-1], t.ens.latent_dim)
                    eps = torch.empty(shape, device=t.device, dtype=t.dtype)
                    eps = t.draw_noise(eps)
                    coefficients = t.step_coefficients(row, step)
                    t.step(index, eps, coefficients, t.device.type == "cpu")
                step += 1
                if step % log_every == 0 or i == t.steps_per_epoch - 1:
                    _report(bar, t, step, min((i + 1) * batch_size, t.n))
            test = None if test_images is None else t.evaluate(test_images)
            _record(histories, t, epoch, step, test, time.perf_counter() - t0)
    finally:
        bar.close()


def _report(bar, t: _Trainer, step: int, seen: int) -> None:
    if bar.disable:
        return
    alive = t.alive.tolist()
    loss = (t.sums[:, 0] / seen).tolist()
    finite = [v for v, a in zip(loss, alive) if a]
    bar.set_postfix(
        alive=f"{sum(alive)}/{len(alive)}",
        loss=f"{min(finite):.1f}..{max(finite):.1f}" if finite else "-",
    )
    bar.update(step - bar.n)


def _record(histories, t: _Trainer, epoch, step, test, seconds) -> None:
    """Append this epoch to the History of every member still alive, as ``fit``
    records it."""
    alive = t.alive.tolist()
    sums = (t.sums / t.n).tolist()
    kl_dims = (t.kl_dims / t.n).tolist()
    if test is not None:
        test_sums, test_dims = (v.tolist() for v in test)
    for k, h in enumerate(histories.values()):
        if not alive[k]:
            continue
        member_test = None if test is None else (*test_sums[k], test_dims[k])
        beta = t.objectives[k].beta_at(step - 1)
        record_epoch(h, epoch, (*sums[k], kl_dims[k]), beta, member_test, seconds, step)

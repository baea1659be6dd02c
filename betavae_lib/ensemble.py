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
one step. In the
"members" layout (the CPU default) each member's products, convolutions and loss are
the calls ``fit`` makes, in its memory layout, on operands aligned as ``fit``'s are, and
Adam steps each member's weights as tensors of their own (:class:`_MemberAdam`), so
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

import math
import numbers
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

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
    evaluation_seed,
    pick_device,
    real_number,
)
from ._training import (
    check_data,
    images_at,
    progress_bar,
    record_epoch,
    use_channels_last,
)
from .losses import LossTerms, objective_loss
from .objective import (
    Coefficients,
    Objective,
    log_sigma_of,
    shared_likelihood,
    used_terms,
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


class _MemberAdam:
    """Adam stepping each member's slice of the stacked parameters as a tensor of its
    own (the members layout): the optimiser ``fit`` builds (:func:`_common.adam`), over
    K·P tensors.

    Adam's kernels run the first elements of a tensor in vector registers and its last
    few (the tail) one at a time, which can round differently; where the tail begins
    depends on the tensor's size and on the CPU's vector width. Stepped as one stacked
    (K, *shape) tensor, member k's weights would sit at other positions than in
    ``fit``'s own tensor, and on a CPU with wider vectors (AVX-512) some would be
    rounded by the other path. Stepped as its own tensor, each member's update is
    ``fit``'s, on any CPU.
    """

    def __init__(self, params, lr: float, device: torch.device, frozen=()):
        """frozen: per parameter, whether each member froze it (or empty)."""
        self.params = list(params)
        self.views = [list(p.detach().unbind(0)) for p in self.params]
        self.frozen = list(frozen) or [[False] * len(v) for v in self.views]
        self.inner = adam([v for views in self.views for v in views], lr, device)
        self.param_groups = self.inner.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for p, views, frozen in zip(self.params, self.views, self.frozen):
            for k, view in enumerate(views):
                # a frozen member's slice is skipped, as fit's Adam skips the parameter
                view.grad = None if p.grad is None or frozen[k] else p.grad[k]
        self.inner.step()

    def zero_first_moment(self, p: torch.Tensor, dead: list[bool]) -> None:
        """Zero Adam's first moment of the members ``dead`` marks, for parameter p."""
        views = self.views[next(i for i, q in enumerate(self.params) if q is p)]
        for view, is_dead in zip(views, dead):
            exp_avg = self.inner.state.get(view, {}).get("exp_avg")
            if is_dead and exp_avg is not None:
                exp_avg.zero_()


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


class _Trainer:
    """One :func:`fit_ensemble` call: data, optimiser, generators and running sums."""

    def __init__(
        self,
        ensemble,
        images,
        objectives,
        seeds,
        *,
        lr,
        batch_size,
        graph,
        binarize,
        amp=False,
    ):
        ens, device, k = ensemble, ensemble.device, ensemble.size
        self.ens, self.device, self.size = ens, device, k
        self.objectives, self.batch_size = objectives, batch_size
        self.data = images.to(device)
        self.n = len(images)
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self.dtype = ens.dtype  # the members' (fit feeds batches and noise in it)
        frozen = [ens.frozen.get(name, [False] * k) for name in ens.params]
        self.opt = (
            _MemberAdam(ens.parameters(), lr, device, frozen)
            if ens.layout == "members"
            else adam(ens.parameters(), lr, device, capturable=graph)
        )
        # the grouped layout zeroes the gradients of frozen slices (a zero gradient from
        # the first step on is an update of exactly zero)
        self.frozen_masks = [
            (
                ens.params[name],
                torch.tensor(f, device=device).view(
                    -1, *[1] * (ens.params[name].dim() - 1)
                ),
            )
            for name, f in ens.frozen.items()
        ]
        self.likelihood = shared_likelihood(objectives)
        self.used = used_terms(objectives)
        self.seeds = list(seeds)
        self.noise = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.orders = {s: torch.Generator().manual_seed(s) for s in set(seeds)}
        # binarize: one generator per seed, as fit(seed=s, binarize=True) draws
        self.binarizers = (
            {s: binarize_generator(s, device) for s in self.orders}
            if binarize
            else None
        )
        self.channels_last = use_channels_last(bool(ens.conv_weights), device)
        self.amp = amp  # bfloat16 autocast of the forward pass, as fit(amp=True)
        self.log_sigma = None  # the grouped layout's per-member log σ, (K,)
        if self.likelihood == "gaussian":
            log_sigmas = [log_sigma_of(o) for o in objectives]
            self.log_sigma = torch.tensor(log_sigmas, device=device)
        elif self.likelihood == "gaussian_learned":
            self.log_sigma = ens.params["log_sigma"]
        self.step_t = torch.zeros((), dtype=torch.long, device=device)
        self.alive = torch.ones(k, dtype=torch.bool, device=device)
        self.first_bad = torch.full((k,), -1, dtype=torch.long, device=device)
        self.sums = torch.zeros(k, 3, device=device)  # objective, recon, kl; × batch
        self.kl_dims = torch.zeros(k, ens.latent_dim, device=device)

    # -- per-step inputs ---------------------------------------------------------------

    def coefficient_table(self, first: int, count: int) -> torch.Tensor:
        """(count, 6, K) on the device: the coefficients of steps first … first +
        count − 1 (schedules are plain Python), in the members' dtype for float64
        members, else float32. Computed a chunk of steps at a time, so that a long run
        never holds every step's coefficients."""
        rows = [
            list(zip(*(o.coefficients(step) for o in self.objectives)))
            for step in range(first, first + count)
        ]
        dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        return torch.tensor(rows, dtype=dtype).to(self.device)

    def coefficients(self, row: torch.Tensor) -> Coefficients:
        """A (6, K) table row as Coefficients; terms no member uses are the number 0."""
        fields = enumerate(Coefficients._fields)
        return Coefficients(*(row[i] if f in self.used else 0.0 for i, f in fields))

    def step_coefficients(self, row: torch.Tensor, step: int):
        """What :meth:`losses` takes at ``step``: K Coefficients of numbers in the
        members layout, the table's ``row`` for it in the grouped one."""
        if self.ens.layout == "members":
            return [o.coefficients(step) for o in self.objectives]
        return self.coefficients(row)

    def epoch_order(self) -> torch.Tensor:
        """This epoch's batch order: (N,) when all members share a seed, else (K, N)."""
        perms = {
            s: torch.randperm(self.n, generator=g).to(self.device)
            for s, g in self.orders.items()
        }
        if len(perms) == 1:
            return next(iter(perms.values()))
        return torch.stack([perms[s] for s in self.seeds])

    def draw_noise(self, out: torch.Tensor, generators=None) -> torch.Tensor:
        """Fill ``out`` (K, B, D) with each member's N(0, 1) noise (from its training
        generator, or from ``generators``, one per member)."""
        for row, generator in zip(out, generators or self.noise):
            row.normal_(generator=generator)
        return out

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Images at ``index`` ((B,) or (K, B)) as float32 in [0, 1]; with binarize, a
        Bernoulli draw per pixel from the generator of each member's seed (members that
        share a seed share the batch order and so the draw, as fit would draw it)."""
        x = images_at(self.data, index, self.dtype)
        if self.binarizers is None:
            return x
        if index.dim() == 1:  # one order: every member has the same seed
            return binarize_batch(x, self.binarizers[self.seeds[0]])
        drawn = {}
        for k, s in enumerate(self.seeds):
            if s not in drawn:
                drawn[s] = binarize_batch(x[k], self.binarizers[s])
        return torch.stack([drawn[s] for s in self.seeds])

    # -- the step ----------------------------------------------------------------------

    def _member_loss(self, x, logits, mu, logvar, z, coefficients, log_sigma):
        """One member's total, recon, kl and kl per dim (vmapped when grouped)."""
        likelihood = (
            "bernoulli" if self.likelihood == "bernoulli" else "gaussian_learned"
        )
        return objective_loss(  # a fixed σ is passed as its log σ, like a learned one
            x,
            logits,
            mu,
            logvar,
            z,
            coefficients,
            likelihood=likelihood,
            log_sigma=log_sigma,
            dataset_size=self.n,
        )[:4]

    def losses(
        self, x, eps, coefficients, channels_last: bool, amp: bool = False
    ) -> LossTerms:
        """Forward all members on images x ((B, ...) shared, or (K, B, ...)) with noise
        eps (K, B, D); returns total, recon, kl (each (K,)) and kl_per_dim (K, D).
        amp: the forward pass under bfloat16 autocast, the loss in float32 (as
        ``fit(amp=True)``).

        coefficients: in the members layout K :class:`Coefficients` of numbers (each
        member's loss is computed exactly as ``fit`` computes it); in the grouped layout
        one :class:`Coefficients` of (K,) tensors (the loss is vmapped over members).
        """
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            mu, logvar = self.ens.encode(x, channels_last=channels_last)
            z = mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)
            logits = self.ens.decode(z)
        if amp:
            mu, logvar, z, logits = (t.float() for t in (mu, logvar, z, logits))
        if self.ens.layout == "members":
            learned = self.likelihood == "gaussian_learned"
            log_sigmas = (
                self.ens.params["log_sigma"].unbind(0)
                if learned
                else [None] * self.size
            )
            members = zip(
                [x] * self.size if x.dim() == 4 else x.unbind(0),
                logits.unbind(0),
                mu.unbind(0),
                logvar.unbind(0),
                z.unbind(0),
                coefficients,
            )
            terms = [
                objective_loss(
                    *member,
                    likelihood=o.likelihood,
                    sigma=o.sigma,
                    log_sigma=log_sigma,
                    dataset_size=self.n,
                )[:4]
                for member, o, log_sigma in zip(members, self.objectives, log_sigmas)
            ]
            return LossTerms(*(torch.stack(t) for t in zip(*terms)))
        in_dims = (
            None if x.dim() == 4 else 0,
            0,
            0,
            0,
            0,
            Coefficients(*(0 if torch.is_tensor(c) else None for c in coefficients)),
            None if self.log_sigma is None else 0,
        )
        batched = torch.vmap(self._member_loss, in_dims=in_dims)
        return LossTerms(
            *batched(x, logits, mu, logvar, z, coefficients, self.log_sigma)
        )

    def step(
        self, index, eps, coefficients, skip_freeze_if_alive: bool, x=None
    ) -> None:
        """One Adam step of every member on the batch ``index`` (or on the images
        ``x`` already taken from it). Updates in place the running sums, the alive
        flags and each member's first bad step; no host synchronisation unless
        ``skip_freeze_if_alive`` (a cheap check on the CPU)."""
        if x is None:
            x = self.batch(index)
        terms = self.losses(x, eps, coefficients, self.channels_last, self.amp)
        terms.total.sum().backward()  # members share no computation: separate grads
        with torch.no_grad():
            for p, mask in self.frozen_masks:
                if p.grad is not None:
                    p.grad.masked_fill_(mask, 0)
            ok = torch.isfinite(terms.total)
            newly_bad = ~ok & (self.first_bad < 0)
            self.first_bad.copy_(torch.where(newly_bad, self.step_t, self.first_bad))
            self.alive.logical_and_(ok)
            if not (skip_freeze_if_alive and bool(self.alive.all())):
                self._freeze_failed()
        self.opt.step()
        with torch.no_grad():
            n = x.shape[-4]
            running = torch.stack([terms.total, terms.recon, terms.kl], dim=1)
            self.sums.add_(running.detach() * n)
            self.kl_dims.add_(terms.kl_per_dim.detach() * n)
            self.step_t.add_(1)

    def _freeze_failed(self) -> None:
        """Zero each failed member's gradient and Adam first moment: its update is
        then exactly zero, so its weights stay those before its loss went non-finite."""
        dead = ~self.alive
        per_member = isinstance(self.opt, _MemberAdam)
        dead_list = dead.tolist() if per_member else None
        for p in self.ens.parameters():
            mask = dead.view(-1, *([1] * (p.dim() - 1)))
            if p.grad is not None:
                p.grad.masked_fill_(mask, 0)
            if per_member:
                self.opt.zero_first_moment(p, dead_list)
                continue
            exp_avg = self.opt.state.get(p, {}).get("exp_avg")
            if exp_avg is not None:
                exp_avg.masked_fill_(mask, 0)

    # -- evaluation --------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, batch_size: int = 1000):
        """Each member's recon, kl ((K, 2)) and kl per dim ((K, D)) on ``images``, one
        posterior sample per image from a generator of each member's own, restarted at
        :func:`~betavae_lib._common.evaluation_seed` of its seed, as ``fit`` draws it
        (the training noise is left alone)."""
        noise = [
            torch.Generator(device=self.device).manual_seed(evaluation_seed(s))
            for s in self.seeds
        ]
        # fit's evaluation sums in the model's dtype
        sums = torch.zeros(self.size, 2, device=self.device, dtype=self.dtype)
        kl_dims = torch.zeros(
            self.size, self.ens.latent_dim, device=self.device, dtype=self.dtype
        )
        zero = Coefficients()
        coefficients = zero if self.ens.layout == "grouped" else [zero] * self.size
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(
                self.device, non_blocking=True
            )
            x = as_float_images(chunk).to(self.dtype)
            eps = torch.empty(
                self.size,
                len(x),
                self.ens.latent_dim,
                device=self.device,
                dtype=self.dtype,
            )
            terms = self.losses(x, self.draw_noise(eps, noise), coefficients, False)
            sums += torch.stack([terms.recon, terms.kl], dim=1) * len(x)
            kl_dims += terms.kl_per_dim * len(x)
        return sums / len(images), kl_dims / len(images)


class _GraphedStep:
    """The full-batch training step captured in a CUDA graph (module docstring).

    Static buffers hold the batch indices, every member's noise and the coefficients
    (and, with binarize, the binarised batch, drawn outside the graph by the members'
    generators like the noise); :meth:`run` fills them, then runs the step: eagerly on
    a side stream for the first ``warmup`` calls (capture needs Adam's state and
    cuDNN's choices made), captured on the next call and replayed from then on. The
    gradients are allocated inside the capture, so every replay overwrites them.
    """

    def __init__(self, trainer: _Trainer, index_shape, warmup: int = 3):
        t = trainer
        self.trainer, self.warmup, self.calls = t, warmup, 0
        self.index = torch.zeros(index_shape, dtype=torch.long, device=t.device)
        self.eps = torch.zeros(
            t.size, t.batch_size, t.ens.latent_dim, device=t.device, dtype=t.dtype
        )
        rows = len(Coefficients._fields)
        self.row = torch.zeros(rows, t.size, device=t.device, dtype=t.dtype)
        self.x = None  # with binarize: the batch, as the members' generators drew it
        if t.binarizers is not None:
            shape = (*index_shape, *t.ens.image_shape)
            self.x = torch.zeros(shape, device=t.device, dtype=t.dtype)
        self.graph = None

    def body(self) -> None:
        """The step on the static buffers: what the graph holds."""
        t = self.trainer
        t.step(self.index, self.eps, t.coefficients(self.row), False, x=self.x)

    def run(self, index: torch.Tensor, row: torch.Tensor) -> None:
        """One training step on the batch ``index`` with coefficients ``row`` (6, K)."""
        self.index.copy_(index)
        self.row.copy_(row)
        if self.x is not None:
            self.x.copy_(self.trainer.batch(self.index))
        self.trainer.draw_noise(self.eps)
        if self.calls < self.warmup:
            self.warm_up()
        else:
            if self.graph is None:
                self.capture()
            self.replay()
        self.calls += 1

    def warm_up(self) -> None:
        device = self.trainer.device
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            self.trainer.opt.zero_grad(set_to_none=True)
            self.body()
        torch.cuda.current_stream(device).wait_stream(stream)

    def capture(self) -> None:
        t = self.trainer
        t.opt.zero_grad(set_to_none=True)  # so that the graph allocates the gradients
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.body()
        self.grads = [p.grad for p in t.ens.parameters()]  # what the graph writes

    def replay(self) -> None:
        self.graph.replay()


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

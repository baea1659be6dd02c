"""The batched training step of :func:`betavae_lib.ensemble.fit_ensemble`:
:class:`_Trainer` holds one call's data, optimiser, generators and running sums and
takes one step for all K members of a :class:`~betavae_lib.stacked.VAEEnsemble`;
:class:`_MemberAdam` is the optimiser of the "members" layout (each member's weights
stepped as tensors of their own, as ``fit`` steps them) and :class:`_GraphedStep`
replays the step from a CUDA graph. ``fit``'s plain step is in :mod:`betavae_lib.train`.
"""

from __future__ import annotations

import math

import torch

from ._common import (
    adam,
    as_float_images,
    binarize_batch,
    binarize_generator,
    evaluation_seed,
)
from ._training import (
    images_at,
    use_channels_last,
)
from .losses import LossTerms, objective_loss
from .objective import (
    Coefficients,
    log_sigma_of,
    shared_likelihood,
    used_terms,
)


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

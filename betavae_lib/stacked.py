"""K models of one architecture as one batched network: :class:`VAEEnsemble`.

Each parameter of the K members is stacked into one tensor with a leading member
dimension K, and a forward pass runs the K models together, in one of two layouts.
"members" (the CPU default) runs every member's matrix products and convolutions as
the calls ``fit`` makes for one model, on operands aligned as ``fit``'s are
(:class:`_MemberLinear`), so that each member computes ``fit``'s numbers bit for bit;
"grouped" (the CUDA default) runs one batched product per linear layer
(:class:`_BatchedLinear`) and one grouped convolution (``groups=K``) per convolution.
The trainer that steps these networks is :func:`betavae_lib.ensemble.fit_ensemble`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._common import check_vae

CONV_LAYERS = (nn.Conv2d, nn.ConvTranspose2d)
SUPPORTED_LAYERS = (
    nn.Linear,
    nn.ReLU,
    nn.Tanh,
    nn.Flatten,
    nn.Unflatten,
    *CONV_LAYERS,
)
LAYOUTS = ("members", "grouped")


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a copy of it where its data does not start on a 64-byte boundary.

    A member's slice of a stacked tensor starts wherever the members before it end,
    while ``fit`` hands every kernel freshly allocated tensors (64-byte aligned). MKL's
    matrix products may take other code paths for other alignments (and round
    differently), so every operand of a member's product is given aligned."""
    return t if t.data_ptr() % 64 == 0 else t.clone()


class _MemberLinear(torch.autograd.Function):
    """y[k] = x[k] W[k]ᵀ + b[k] for every member k, member by member.

    x: (K, B, I), or (B, I) shared by all members; weight (K, O, I); bias (K, O); y
    (K, B, O). Each member runs the calls ``nn.Linear`` makes for one model (``addmm``
    forward; ``mm`` and ``sum`` backward, with the same operand layouts), on operands
    aligned as ``fit``'s are (:func:`_aligned`), into a fresh result that is then
    copied into its slice: ``fit``'s numbers bit for bit, on any CPU.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        shared = x.dim() == 2
        out = torch.stack(
            [
                torch.addmm(
                    _aligned(bias[k]),
                    _aligned(x if shared else x[k]),
                    _aligned(weight[k]).t(),
                )
                for k in range(weight.shape[0])
            ]
        )
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        shared, members = x.dim() == 2, range(weight.shape[0])
        grads = [_aligned(grad[k]) for k in members]
        inputs = [_aligned(x if shared else x[k]) for k in members]
        weights = [_aligned(weight[k]) for k in members]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            products = [grads[k].mm(weights[k]) for k in members]
            grad_x = sum(products) if shared else torch.stack(products)
        if ctx.needs_input_grad[1]:
            grad_w = torch.stack([grads[k].t().mm(inputs[k]) for k in members])
        if ctx.needs_input_grad[2]:
            grad_b = torch.stack([torch.sum(grads[k], 0) for k in members])
        return grad_x, grad_w, grad_b


class _BatchedLinear(torch.autograd.Function):
    """:class:`_MemberLinear` as three batched products (``baddbmm``, ``bmm``).

    The backward forms the same products as ``nn.Linear``'s (grad_x = g W,
    grad_W = gᵀ x, grad_b = Σ_B g); autograd's own ``baddbmm`` backward would form
    grad_Wᵀ = xᵀ g, which rounds differently.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(1) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _autocast_operands(form: str, h, weight, bias):
    """The operands of a batched linear layer in autocast's dtype when autocast is on
    (autocast does not reach inside a custom autograd Function); the casts are
    recorded by autograd, so the float32 weights get float32 gradients, as
    ``nn.Linear`` under autocast gives them."""
    device = weight.device.type
    if not torch.is_autocast_enabled(device):
        return h, weight, bias
    dtype = torch.get_autocast_dtype(device)
    h = [t.to(dtype) for t in h] if form == "members" else h.to(dtype)
    return h, weight.to(dtype), bias.to(dtype)


def _check_same_architecture(models: Sequence[nn.Module]) -> None:
    if not models:
        raise ValueError("an ensemble needs at least one model")
    for m in models:
        check_vae(m)
        _check_computes_as_layers(m)
    first = models[0]
    for m in models[1:]:
        if type(m) is not type(first) or m.config != first.config:
            raise ValueError(
                f"models trained as one ensemble must share class and config; got "
                f"{type(first).__name__}({first.config}) and "
                f"{type(m).__name__}({m.config})"
            )
    dtypes = {p.dtype for m in models for p in m.parameters()}
    if len(dtypes) > 1:
        raise TypeError(
            f"models trained as one ensemble must share one dtype, got "
            f"{', '.join(sorted(map(str, dtypes)))}; convert them with .float() (or "
            f".double())"
        )
    for name, module in [
        *first.encoder.named_children(),
        *first.decoder.named_children(),
    ]:
        if type(module) not in SUPPORTED_LAYERS:
            supported = ", ".join(t.__name__ for t in SUPPORTED_LAYERS)
            raise TypeError(
                f"VAEEnsemble supports {supported} layers; layer {name} is a "
                f"{type(module).__name__}"
            )


def _check_computes_as_layers(model: nn.Module) -> None:
    """Raise TypeError unless ``model`` computes what the ensemble computes for it: its
    encoder's and decoder's layers in sequence (no overridden ``encode``, ``decode`` or
    ``forward``, no hooks)."""
    from .models import VAE

    name = type(model).__name__
    for method in ("encode", "decode", "forward"):
        if getattr(type(model), method) is not getattr(VAE, method):
            raise TypeError(
                f"{name} overrides {method}(); an ensemble runs only the layers of "
                f"model.encoder and model.decoder, so it would not train what {name} "
                f"computes; train it with fit"
            )
    hooked = [
        label or name
        for label, module in model.named_modules()
        if module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, "parametrizations", None)
    ]
    if hooked:
        raise TypeError(
            f"{name} has forward or backward hooks or parametrizations (on "
            f"{', '.join(hooked)}), which an ensemble does not run; train it with fit"
        )


class VAEEnsemble:
    """K models of one class and config as one model, parameters stacked (K, *shape).

    models: the K members (their weights are copied; the models are not changed).
    device: where the stacked parameters live. layout: ``"members"`` runs every matrix
    product and convolution, and in :func:`fit_ensemble` every loss, member by member in
    the memory layout ``fit`` uses (``fit``'s numbers bit for bit; the default on the
    CPU); ``"grouped"`` runs one batched product per linear layer, one grouped
    convolution (``groups=K``) per convolution and the loss vmapped over the members
    (fewer, larger kernels; the default on CUDA).

    The member dimension comes first: :meth:`encode` takes images (B, C, H, W) shared by
    all members, or (K, B, C, H, W), and returns mu and logvar, each (K, B, D);
    :meth:`decode` maps latents (K, B, D) to logits (K, B, C, H, W).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        device: str | torch.device = "cpu",
        layout: str = "auto",
    ):
        models = list(models)
        _check_same_architecture(models)
        self.device = torch.device(device)
        if layout == "auto":
            layout = "grouped" if self.device.type == "cuda" else "members"
        if layout not in LAYOUTS:
            raise ValueError(
                f"layout must be 'auto', 'members' or 'grouped', got {layout!r}"
            )
        self.layout = layout
        self.size = len(models)
        self.model_class = type(models[0])
        self.config = copy.deepcopy(models[0].config)
        self.latent_dim = models[0].latent_dim
        self.image_shape = models[0].image_shape
        self._encoder = list(models[0].encoder.named_children())
        self._decoder = list(models[0].decoder.named_children())
        self.conv_weights = {
            f"{part}.{name}.weight"
            for part in ("encoder", "decoder")
            for name, m in getattr(models[0], part).named_children()
            if isinstance(m, CONV_LAYERS)
        }
        states = [m.state_dict() for m in models]
        self.params: dict[str, torch.Tensor] = {}
        for name, _ in models[0].named_parameters():
            stacked = self._empty_stacked(name, states[0][name])
            with torch.no_grad():
                for k, state in enumerate(states):
                    stacked[k].copy_(state[name])
            self.params[name] = stacked.requires_grad_(True)
        self.dtype = next(iter(self.params.values())).dtype
        # parameters frozen with requires_grad_(False), which fit leaves alone: name ->
        # whether each member froze it (only names that some member froze)
        self.frozen = {
            name: [not dict(m.named_parameters())[name].requires_grad for m in models]
            for name in self.params
        }
        self.frozen = {n: f for n, f in self.frozen.items() if any(f)}

    def _empty_stacked(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """(K, *shape) on the device. In the members layout a conv weight gets
        channels-last strides per member: ``params[name][k]`` is laid out as ``fit``
        lays out that model's weight."""
        shape = (self.size, *like.shape)
        if self.layout == "members" and name in self.conv_weights:
            k, o, i, h, w = shape
            empty = torch.empty((k, o, h, w, i), dtype=like.dtype, device=self.device)
            return empty.permute(0, 1, 4, 2, 3)
        return torch.empty(shape, dtype=like.dtype, device=self.device)

    def parameters(self) -> list[torch.Tensor]:
        """The stacked parameters (leaf tensors (K, *shape)), in the models' order."""
        return list(self.params.values())

    # -- forward -----------------------------------------------------------------------
    # An activation travels as (form, value): "shared", (B, ...) the same for every
    # member; "stacked", (K, B, ...); "members", a list of K tensors (B, ...);
    # "grouped", (B, K*C, H, W).

    def _stacked(self, form: str, h) -> torch.Tensor:
        if form == "shared":
            return h.expand(self.size, *h.shape)
        if form == "members":
            return torch.stack(h)
        if form == "grouped":
            batch, kc, height, width = h.shape
            per_member = h.view(batch, self.size, kc // self.size, height, width)
            return per_member.transpose(0, 1)
        return h

    def _members(self, form: str, h) -> list[torch.Tensor]:
        if form == "shared":
            return [h] * self.size
        if form == "members":
            return h
        return list(self._stacked(form, h).unbind(0))

    def _grouped(self, form: str, h) -> torch.Tensor:
        stacked = self._stacked(form, h)  # (K, B, C, H, W)
        k, batch, c, height, width = stacked.shape
        return stacked.transpose(0, 1).reshape(batch, k * c, height, width)

    def _layer(self, prefix: str, module: nn.Module, form: str, h):
        if isinstance(module, nn.ReLU):
            if form == "members":
                return form, [torch.relu(t) for t in h]
            return form, torch.relu(h)
        if isinstance(module, nn.Tanh):
            if self.layout == "members":  # fit's call on each member's (B, ...)
                # tensor, so that each one's elementwise kernels (forward and
                # backward) see the tensor fit's see
                return "members", [torch.tanh(t) for t in self._members(form, h)]
            return form, torch.tanh(h)
        if isinstance(module, nn.Flatten):
            start, end = module.start_dim, module.end_dim
            if form == "members":
                return form, [t.flatten(start, end) for t in h]
            if form == "shared":
                return form, h.flatten(start, end)
            end = end if end < 0 else end + 1
            return "stacked", self._stacked(form, h).flatten(start + 1, end)
        if isinstance(module, nn.Unflatten):
            sizes = module.unflattened_size
            return "stacked", self._stacked(form, h).unflatten(module.dim + 1, sizes)
        weight, bias = self.params[f"{prefix}.weight"], self.params[f"{prefix}.bias"]
        if isinstance(module, nn.Linear):
            h, weight, bias = _autocast_operands(form, h, weight, bias)
            if self.layout == "grouped":
                stacked = self._stacked(form, h)
                return "stacked", _BatchedLinear.apply(stacked, weight, bias)
            if form != "shared":
                h = self._stacked(form, h).contiguous()
            return "stacked", _MemberLinear.apply(h, weight, bias)
        return self._conv(module, weight, bias, form, h)

    def _conv(self, module, weight, bias, form: str, h):
        transposed = isinstance(module, nn.ConvTranspose2d)
        op = F.conv_transpose2d if transposed else F.conv2d
        options = dict(
            stride=module.stride, padding=module.padding, dilation=module.dilation
        )
        if transposed:
            options["output_padding"] = module.output_padding
        if self.layout == "members":
            members = zip(self._members(form, h), weight.unbind(0), bias.unbind(0))
            return "members", [
                op(t, _aligned(w), _aligned(b), **options) for t, w, b in members
            ]
        if form == "shared" and not transposed:  # one convolution, K·O channels out
            return "grouped", op(h, weight.flatten(0, 1), bias.flatten(), **options)
        grouped = self._grouped(form, h)
        return "grouped", op(
            grouped, weight.flatten(0, 1), bias.flatten(), groups=self.size, **options
        )

    def _run(self, layers, prefix: str, form: str, h) -> torch.Tensor:
        for name, module in layers:
            form, h = self._layer(f"{prefix}.{name}", module, form, h)
        return self._stacked(form, h)

    def encode(
        self, x: torch.Tensor, channels_last: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) shared by all members, or (K, B, C, H, W), to mu and
        logvar, each (K, B, D). channels_last: convert the images as ``fit`` converts
        its batches for a convolutional model."""
        form = "shared" if x.dim() == 4 else "stacked"
        if channels_last and self.layout == "members":
            members = self._members(form, x)
            form = "members"
            x = [t.contiguous(memory_format=torch.channels_last) for t in members]
        h = self._run(self._encoder, "encoder", form, x)
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (K, B, D) to decoder logits (K, B, C, H, W)."""
        return self._run(self._decoder, "decoder", "stacked", z)

    # -- members -----------------------------------------------------------------------

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s parameters as a state dict (detached views on the device)."""
        return {name: p.detach()[k] for name, p in self.params.items()}

    def copy_into(self, k: int, model: nn.Module) -> nn.Module:
        """Write member ``k``'s weights into ``model`` (same class and config)."""
        model.load_state_dict(self.member_state(k))
        return model

    def member(self, k: int) -> nn.Module:
        """Member ``k`` as an ordinary model (a new ``MLPVAE``/``ConvVAE`` on the CPU,
        in eval mode), ready for :func:`betavae_lib.checkpoints.save`."""
        return self.copy_into(k, self.model_class(**self.config)).eval()

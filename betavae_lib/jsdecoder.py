"""A model's decoder serialised for the JavaScript decoder in ``assets/decoder.js``.

:func:`serialise_decoder` walks ``model.decoder`` (Linear, ConvTranspose2d, ReLU,
Tanh, Sigmoid, Flatten, Unflatten) and writes each layer's weights compactly: int8 with
one float32 scale per block of 32 weights of an output channel (1.125 bytes per weight),
float16 or float32; biases stay float32; all base64.
With ``precision="auto"`` it takes the smallest of int8, fp16, fp32 whose decoded images
stay within ``tolerance`` (default 2/255) of ``torch.sigmoid(model.decode(z))`` on probe
codes.

:func:`decode_serialised` is the same computation in PyTorch, from the serialised
weights: the tolerance is measured with it, and ``decoder.js`` is tested against it.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "betavae-decoder"
VERSION = 1
TOLERANCE = 2 / 255
PRECISIONS = ("int8", "fp16", "fp32")
INT8_BLOCK = 32  # int8 weights share one scale per 32 weights of an output channel
_DTYPES = {"int8": "int8", "fp16": "float16", "fp32": "float32"}


def asset(name: str) -> str:
    """The text of a file in ``betavae_lib/assets`` (e.g. ``decoder.js``)."""
    return (resources.files("betavae_lib") / "assets" / name).read_text(
        encoding="utf-8"
    )


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _unb64(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


# ------------------------------------------------------------------------------ weights


def _gptq_int8(w: np.ndarray, inputs: np.ndarray, block: int):
    """int8 codes and block scales for a Linear weight w (out, in), each column rounded
    so as to make up for the rounding errors of the columns before it on ``inputs``
    (N, in): the GPTQ update (Frantar et al. 2023) with a 1 % damping of the Hessian."""
    w = w.astype(np.float64).copy()
    x = inputs.astype(np.float64)
    hessian = x.T @ x / len(x)
    dead = np.diag(hessian) == 0  # inputs that are always 0: plain rounding
    hessian[dead, dead] = 1.0
    hessian += 0.01 * np.mean(np.diag(hessian)) * np.eye(len(hessian))
    # upper Cholesky factor of the inverse Hessian, as in GPTQ
    u = np.linalg.cholesky(np.linalg.inv(hessian)).T
    n_out, n_in = w.shape
    q = np.zeros((n_out, n_in), dtype=np.int8)
    scale = np.ones((n_out, -(-n_in // block)), dtype=np.float32)
    for j in range(n_in):
        if j % block == 0:
            peak = np.abs(w[:, j : j + block]).max(axis=1)
            scale[:, j // block] = np.where(peak > 0, peak / 127.0, 1.0)
        s = scale[:, j // block].astype(np.float64)
        q[:, j] = np.clip(np.rint(w[:, j] / s), -127, 127)
        err = (w[:, j] - q[:, j] * s) / u[j, j]
        w[:, j + 1 :] -= np.outer(err, u[j, j + 1 :])
    return q, scale


def quantise(
    weight: torch.Tensor,
    precision: str,
    axis: int = 0,
    block: int = INT8_BLOCK,
    inputs=None,
) -> dict:
    """One weight tensor as a JSON-able dict: dtype, shape, data (int8: scale, block).

    int8: the weights of each output channel (the slice along ``axis``, in memory order)
    are cut into blocks of ``block``; each block has one float32 scale s = max|w| / 127
    and stores q = round(w / s), so the error per weight is at most s / 2. With
    ``inputs`` (N, in) for a Linear weight (out, in), axis 0, the rounding instead makes
    up for earlier columns' errors on those inputs (:func:`_gptq_int8`), which keeps the
    layer's outputs closer (the error per weight is then not bounded by s / 2).
    fp16, fp32: IEEE, little-endian. ``data`` keeps the tensor's own (row-major) layout.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    w = weight.detach().to(torch.float32).cpu().numpy()
    out = {"dtype": _DTYPES[precision], "shape": list(w.shape)}
    if precision == "fp32":
        out["data"] = _b64(w.astype("<f4"))
    elif precision == "fp16":
        out["data"] = _b64(w.astype("<f2"))
    elif inputs is not None:
        if w.ndim != 2 or axis != 0:
            raise ValueError(
                "inputs are only used for a Linear weight (out, in), axis 0"
            )
        x = (
            torch.as_tensor(inputs)
            .detach()
            .double()
            .cpu()
            .numpy()
            .reshape(-1, w.shape[1])
        )
        q, scale = _gptq_int8(w, x, block)
        out.update(data=_b64(q), scale=_b64(scale.astype("<f4")), axis=0, block=block)
    else:
        rows = np.moveaxis(w, axis, 0)
        flat = rows.reshape(len(rows), -1)
        n_blocks = -(-flat.shape[1] // block)
        padded = np.zeros((len(flat), n_blocks * block), dtype=np.float32)
        padded[:, : flat.shape[1]] = np.abs(flat)
        peak = padded.reshape(len(flat), n_blocks, block).max(axis=2)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        per_weight = np.repeat(scale, block, axis=1)[:, : flat.shape[1]]
        q = np.clip(np.rint(flat / per_weight), -127, 127).astype(np.int8)
        q = np.moveaxis(q.reshape(rows.shape), 0, axis)
        out.update(
            data=_b64(q), scale=_b64(scale.astype("<f4")), axis=axis, block=block
        )
    return out


def dequantise(spec: dict) -> torch.Tensor:
    """The float32 tensor a :func:`quantise` dict stands for (what JavaScript reads)."""
    shape = tuple(spec["shape"])
    if spec["dtype"] == "float32":
        return torch.from_numpy(_unb64(spec["data"], "<f4").reshape(shape).copy())
    if spec["dtype"] == "float16":
        w = _unb64(spec["data"], "<f2").astype(np.float32)
        return torch.from_numpy(w.reshape(shape))
    if spec["dtype"] == "int8":
        axis, block = spec["axis"], spec["block"]
        rows = np.moveaxis(_unb64(spec["data"], np.int8).reshape(shape), axis, 0)
        flat = rows.reshape(len(rows), -1).astype(np.float32)
        scale = _unb64(spec["scale"], "<f4").reshape(len(flat), -1)
        flat *= np.repeat(scale, block, axis=1)[:, : flat.shape[1]]
        return torch.from_numpy(np.moveaxis(flat.reshape(rows.shape), 0, axis).copy())
    raise ValueError(f"unknown weight dtype {spec['dtype']!r}")


# ------------------------------------------------------------------------------ layers


def decoder_layers(model) -> list[nn.Module]:
    """The decoder's layers, nested Sequentials flattened; TypeError for others."""
    from .models import VAE

    if not isinstance(model, VAE):
        raise TypeError(
            "only betavae_lib VAE models (MLPVAE, ConvVAE) can be serialised for the "
            f"browser, got {type(model).__name__}"
        )
    if type(model).decode is not VAE.decode:
        raise TypeError(
            f"{type(model).__name__} overrides decode(); only model.decoder is "
            "serialised, so the browser would not compute the same images"
        )
    decoder = model.decoder
    if not isinstance(decoder, nn.Sequential):
        raise TypeError(
            f"model.decoder must be an nn.Sequential, got {type(decoder).__name__}"
        )

    def flat(seq):
        for layer in seq:
            yield from flat(layer) if isinstance(layer, nn.Sequential) else [layer]

    return list(flat(decoder))


def _layer_spec(
    layer: nn.Module, shape: tuple, precision: str, inputs=None
) -> tuple[dict, tuple]:
    """One layer as a JSON-able dict, and the shape (without batch) it outputs.

    inputs: what the layer receives for some calibration codes (N, *shape), used to
    round a Linear layer's int8 weights (:func:`quantise`).
    """
    name = type(layer).__name__
    if isinstance(layer, nn.Linear):
        if shape != (layer.in_features,):
            raise ValueError(f"Linear({layer.in_features}, …) gets input shape {shape}")
        spec = {
            "type": "linear",
            "in": layer.in_features,
            "out": layer.out_features,
            "weight": quantise(layer.weight, precision, axis=0, inputs=inputs),
        }
        if layer.bias is not None:
            spec["bias"] = _b64(layer.bias.detach().float().cpu().numpy().astype("<f4"))
        return spec, (layer.out_features,)
    if isinstance(layer, nn.ConvTranspose2d):
        k, s, p, op, d = (
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.output_padding,
            layer.dilation,
        )
        if (
            len(set(k)) != 1
            or len(set(s)) != 1
            or not isinstance(p, tuple)
            or len(set(p)) != 1
            or d != (1, 1)
            or op != (0, 0)
            or layer.groups != 1
            or layer.padding_mode != "zeros"
        ):
            raise TypeError(
                f"{layer}: only square kernels, equal strides and paddings, no "
                "dilation, no output_padding and groups=1 are supported"
            )
        if len(shape) != 3 or shape[0] != layer.in_channels:
            raise ValueError(f"{layer} gets input shape {shape}")
        k, s, p = k[0], s[0], p[0]
        out = (
            layer.out_channels,
            (shape[1] - 1) * s - 2 * p + k,
            (shape[2] - 1) * s - 2 * p + k,
        )
        spec = {
            "type": "conv_transpose2d",
            "in_channels": layer.in_channels,
            "out_channels": layer.out_channels,
            "kernel": k,
            "stride": s,
            "padding": p,
            "input_shape": list(shape),
            "output_shape": list(out),
            # weight (cin, cout, k, k): the output channel is axis 1
            "weight": quantise(layer.weight, precision, axis=1),
        }
        if layer.bias is not None:
            spec["bias"] = _b64(layer.bias.detach().float().cpu().numpy().astype("<f4"))
        return spec, out
    if type(layer) in (nn.ReLU, nn.Tanh, nn.Sigmoid):
        return {"type": name.lower()}, shape
    if isinstance(layer, nn.Unflatten):
        if layer.dim != 1:
            raise TypeError(f"{layer}: only Unflatten(1, …) is supported")
        new = tuple(int(v) for v in layer.unflattened_size)
        if math.prod(new) != math.prod(shape) or len(shape) != 1:
            raise ValueError(f"{layer} cannot reshape {shape}")
        return {"type": "unflatten", "shape": list(new)}, new
    if isinstance(layer, nn.Flatten):
        if layer.start_dim != 1 or layer.end_dim != -1:
            raise TypeError(f"{layer}: only Flatten(1, -1) is supported")
        return {"type": "flatten"}, (math.prod(shape),)
    raise TypeError(
        f"cannot serialise a {name} layer for the browser decoder (supported: Linear, "
        "ConvTranspose2d, ReLU, Tanh, Sigmoid, Flatten, Unflatten)"
    )


def _has_weights(layer: nn.Module) -> bool:
    return isinstance(layer, (nn.Linear, nn.ConvTranspose2d))


@torch.no_grad()
def decoder_spec(model, precision, calibration=None) -> dict:
    """The decoder as the JSON-able dict ``decoder.js`` loads.

    precision: one of :data:`PRECISIONS` for every layer with weights, or a list, one
    per such layer (in order). calibration: codes (N, D) whose activations round the
    int8 weights of Linear layers (:func:`quantise`); without them, plain rounding.
    """
    layers = decoder_layers(model)
    n_weighted = sum(_has_weights(layer) for layer in layers)
    plan = [precision] * n_weighted if isinstance(precision, str) else list(precision)
    if len(plan) != n_weighted or any(p not in PRECISIONS for p in plan):
        raise ValueError(
            f"precision must be one of {PRECISIONS}, or a list of them with one per "
            f"layer with weights ({n_weighted}), got {precision!r}"
        )
    x = None
    if calibration is not None:
        x = torch.as_tensor(np.asarray(calibration, dtype=np.float32))
        weight = next(model.parameters())  # the model's device and dtype (float64 too)
        x = x.reshape(-1, model.latent_dim).to(weight.device, weight.dtype)
    specs, shape, k = [], (model.latent_dim,), 0
    for layer in layers:
        if _has_weights(layer):
            uses = x if plan[k] == "int8" and isinstance(layer, nn.Linear) else None
            spec, shape = _layer_spec(layer, shape, plan[k], uses)
            k += 1
        else:
            spec, shape = _layer_spec(layer, shape, "fp32")
        specs.append(spec)
        if x is not None:
            x = layer(x)
    image_shape = tuple(model.image_shape)
    if shape != image_shape and math.prod(shape) != math.prod(image_shape):
        raise ValueError(
            f"decoder outputs {shape}, the model's images are {image_shape}"
        )
    return {
        "format": FORMAT,
        "version": VERSION,
        "latent_dim": model.latent_dim,
        "image_shape": list(image_shape),
        "precision": "+".join(p for p in PRECISIONS if p in plan) or "fp32",
        "layers": specs,
    }


@torch.no_grad()
def decode_serialised(spec: dict, z) -> torch.Tensor:
    """Decode latents z (B, D) from a spec: images (B, C, H, W) in [0, 1]."""
    x = torch.as_tensor(np.asarray(z, dtype=np.float32))
    if x.dim() != 2 or x.shape[1] != spec["latent_dim"]:
        raise ValueError(
            f"z must have shape (B, {spec['latent_dim']}), got {tuple(x.shape)}"
        )

    def bias(layer, n):
        return (
            torch.from_numpy(_unb64(layer["bias"], "<f4").copy())
            if "bias" in layer
            else torch.zeros(n)
        )

    for layer in spec["layers"]:
        kind = layer["type"]
        if kind == "linear":
            x = F.linear(x, dequantise(layer["weight"]), bias(layer, layer["out"]))
        elif kind == "conv_transpose2d":
            x = F.conv_transpose2d(
                x,
                dequantise(layer["weight"]),
                bias(layer, layer["out_channels"]),
                stride=layer["stride"],
                padding=layer["padding"],
            )
        elif kind == "relu":
            x = torch.relu(x)
        elif kind == "tanh":
            x = torch.tanh(x)
        elif kind == "sigmoid":
            x = torch.sigmoid(x)
        elif kind == "unflatten":
            x = x.reshape(len(x), *layer["shape"])
        elif kind == "flatten":
            x = x.reshape(len(x), -1)
        else:
            raise ValueError(f"unknown layer type {kind!r}")
    return torch.sigmoid(x.reshape(len(x), *spec["image_shape"]))


def probe_codes(latent_dim: int, span: float = 3.0, n: int = 256, seed: int = 0):
    """Codes (n, D) to measure decoding error on: half from N(0, I), half uniform in
    [−span, span]^D (anywhere the explorer's sliders can go)."""
    g = torch.Generator().manual_seed(seed)
    prior = torch.randn(n - n // 2, latent_dim, generator=g)
    box = (torch.rand(n // 2, latent_dim, generator=g) * 2 - 1) * span
    return torch.cat([prior, box])


def _finite_number(name: str, value, *, strict: bool) -> float:
    """``value`` as a finite float >= 0 (> 0 with ``strict``); ValueError naming it."""
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(
        value, bool
    )
    if not ok or not math.isfinite(value) or value < 0 or (strict and value == 0):
        relation = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a finite number {relation}, got {value!r}")
    return float(value)


def _check_finite_weights(model, layers) -> None:
    """ValueError naming the first decoder layer whose weights are NaN or infinite
    (its images would be NaN, and no accuracy check could pass honestly)."""
    for i, layer in enumerate(layers):
        for name, p in layer.named_parameters():
            if not torch.isfinite(p.detach()).all():
                raise ValueError(
                    f"decoder layer {i} ({type(layer).__name__}) has NaN or infinite "
                    f"values in its {name}: the model diverged, and cannot be shown"
                )


@dataclass
class SerialisedDecoder:
    """What :func:`serialise_decoder` returns.

    ``spec``: the JSON-able decoder; ``precision``: the weights' format;
    ``max_error``: max |pixel difference| to PyTorch on the probe codes ([0, 1] units);
    ``nbytes``: the spec's size as compact JSON, i.e. what one model adds to a page.
    """

    spec: dict
    precision: str
    max_error: float
    nbytes: int

    def to_json(self) -> str:
        return json.dumps(self.spec, separators=(",", ":"))


@torch.no_grad()
def serialise_decoder(
    model,
    precision: str = "auto",
    *,
    tolerance: float = TOLERANCE,
    span: float = 3.0,
    extra_codes=None,
) -> SerialisedDecoder:
    """Serialise ``model``'s decoder for ``decoder.js``.

    precision: ``"int8"``, ``"fp16"``, ``"fp32"`` (used whatever its error, reported in
    ``max_error``) or ``"auto"``: int8 if the max pixel error on the probe codes
    (:func:`probe_codes` with ``span``, plus ``extra_codes`` (N, D)) is at most
    ``tolerance`` (pixel units, [0, 1]); else layers move to fp16 one at a time, the
    one whose int8 weights cost the most accuracy first, until it is; else fp32.
    int8 Linear weights are rounded on calibration codes drawn apart from the probe
    codes (:func:`quantise`). ValueError when not even fp32 matches PyTorch: the decoder
    then does something the serialisation misses. A NaN error never passes the check:
    NaN or infinite weights or codes, and a tolerance or span that is not a finite
    number (>= 0, > 0), raise ValueError. float64 models are decoded in float64 for the
    reference, their weights exported in the chosen precision.
    """
    if precision != "auto" and precision not in PRECISIONS:
        raise ValueError(
            f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}"
        )
    tolerance = _finite_number("tolerance", tolerance, strict=False)
    span = _finite_number("span", span, strict=True)
    layers = decoder_layers(model)
    _check_finite_weights(model, layers)
    n_weighted = sum(_has_weights(layer) for layer in layers)
    z = probe_codes(model.latent_dim, span)
    calibration = probe_codes(model.latent_dim, span, n=512, seed=1)
    if extra_codes is not None:
        extra = torch.as_tensor(np.asarray(extra_codes, dtype=np.float32))
        extra = extra.reshape(-1, model.latent_dim)
        if not torch.isfinite(extra).all():
            raise ValueError(
                "extra_codes (e.g. the explorer's z0) contain NaN or infinite values"
            )
        z, calibration = torch.cat([z, extra]), torch.cat([calibration, extra])
    weight = next(model.parameters())
    decoded = model.decode(z.to(weight.device, weight.dtype))
    reference = torch.sigmoid(decoded).float().cpu()
    options = {}  # precision -> spec, each built once

    def build(plan: list[str]) -> tuple[dict, float]:
        for p in set(plan):
            if p not in options:
                options[p] = decoder_spec(model, p, calibration)
        k, layers = iter(range(n_weighted)), []
        for i, layer in enumerate(options[plan[0]]["layers"]):
            layers.append(
                options[plan[next(k)]]["layers"][i] if "weight" in layer else layer
            )
        spec = dict(options[plan[0]], layers=layers)
        spec["precision"] = "+".join(p for p in PRECISIONS if p in plan)
        difference = (decode_serialised(spec, z) - reference).abs()
        # NaN counts as the largest error: a comparison with NaN must never pass
        return spec, float(difference.nan_to_num(nan=math.inf).max())

    if precision != "auto":
        spec, error = build([precision] * n_weighted)
    else:
        plan = ["int8"] * n_weighted
        spec, error = build(plan)
        if error > tolerance:
            alone = [  # each layer's int8 weights with the others in fp32
                build(["int8" if k == j else "fp32" for k in range(n_weighted)])[1]
                for j in range(n_weighted)
            ]
            for j in np.argsort(alone, kind="stable")[::-1]:
                plan[j] = "fp16"
                spec, error = build(plan)
                if error <= tolerance:
                    break
        if error > tolerance:
            spec, error = build(["fp32"] * n_weighted)
    if not math.isfinite(error):
        raise ValueError(
            f"the serialised decoder's images are NaN or infinite where model.decode's "
            f"are not (precision {spec['precision']}): a weight too large for "
            f"{spec['precision']}, or a decoder the serialisation does not follow"
        )
    if error > tolerance and spec["precision"] == "fp32":
        raise ValueError(
            f"the serialised decoder differs from model.decode by {error:.3g} even in "
            "fp32: the model's decoding is not just its decoder's layers in sequence"
        )
    out = SerialisedDecoder(spec, spec["precision"], error, 0)
    out.nbytes = len(out.to_json().encode("utf-8"))
    return out


__all__ = [
    "FORMAT",
    "INT8_BLOCK",
    "PRECISIONS",
    "TOLERANCE",
    "SerialisedDecoder",
    "asset",
    "decode_serialised",
    "decoder_layers",
    "decoder_spec",
    "dequantise",
    "probe_codes",
    "quantise",
    "serialise_decoder",
]

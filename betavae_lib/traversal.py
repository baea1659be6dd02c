"""Latent traversals: change one latent at a time and decode, three ways.

* :func:`traversal_grid`: a static grid, one row per latent, one column per value.
* :func:`traversal_animation`: the same sweep as a self-contained HTML animation
  (``to_jshtml``).
* :func:`live_explorer`: one slider per latent (by KL), a model menu and a 2-D pad; the
  decoder runs in the page's JavaScript from the model's own (quantised) weights, so it
  is live in Jupyter, Colab and the static book alike, with no kernel.
* :func:`latent_playground`: an ipywidgets panel with one slider per latent and a model
  chooser, decoded by the kernel (live only while one runs; the book shows its last
  image).

Every function takes a model with ``latent_dim`` and ``decode(z) -> logits``
(B, C, H, W), like :class:`betavae_lib.models.VAE`; decoded images are
``sigmoid(logits)`` in [0, 1].
"""

from __future__ import annotations

import html
import io
import json
import math
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_VALUES = np.linspace(-3.0, 3.0, 9)


def _model_device(model) -> torch.device:
    """The device of the model's parameters (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@torch.no_grad()
def decode_images(model, z) -> torch.Tensor:
    """Decode latents z (B, D) to mean images (B, C, H, W) in [0, 1], on the CPU."""
    z = torch.as_tensor(
        np.asarray(z, dtype=np.float32) if not isinstance(z, torch.Tensor) else z,
        dtype=torch.float32,
    )
    if z.dim() == 1:
        z = z.unsqueeze(0)
    return torch.sigmoid(model.decode(z.to(**_model_placement(model)))).float().cpu()


def _model_placement(model) -> dict:
    """The device and floating dtype of the model's parameters (float64 models take
    float64 codes), for ``Tensor.to``."""
    try:
        p = next(model.parameters())
    except (AttributeError, StopIteration):
        return {"device": torch.device("cpu")}
    return {"device": p.device, "dtype": p.dtype} if p.is_floating_point() else {}


def _check_z0(model, z0) -> torch.Tensor:
    """A starting code (D,) as a float tensor; ``None`` gives the prior mean (zeros)."""
    if z0 is None:
        return torch.zeros(model.latent_dim)
    z0 = torch.as_tensor(z0, dtype=torch.float32).detach().cpu().reshape(-1)
    if z0.numel() != model.latent_dim:
        raise ValueError(
            f"z0 must hold one value per latent ({model.latent_dim}), got {z0.numel()}"
        )
    if not torch.isfinite(z0).all():
        raise ValueError(f"z0 must hold finite values, got {z0.tolist()}")
    return z0


def _as_models(models, caller: str) -> dict:
    """``models`` as a dict name -> model: one model becomes ``{class name: model}``."""
    if isinstance(models, (list, tuple, set)):
        raise TypeError(
            f"{caller} takes one model or a dict name -> model, got a "
            f"{type(models).__name__}; e.g. {{'beta=1': model_a, 'beta=4': model_b}}"
        )
    if not isinstance(models, dict):
        models = {type(models).__name__: models}
    if not models:
        raise ValueError(f"{caller} needs at least one model, got an empty dict")
    for name, model in models.items():
        if not isinstance(name, str):
            raise TypeError(f"model names must be strings, got {name!r}")
        if not hasattr(model, "latent_dim") or not hasattr(model, "decode"):
            raise TypeError(
                f"{name!r} is a {type(model).__name__}, not a model with latent_dim "
                "and decode()"
            )
    return models


def _check_dims(model, dims) -> list[int]:
    dims = list(range(model.latent_dim)) if dims is None else [int(d) for d in dims]
    bad = [d for d in dims if not 0 <= d < model.latent_dim]
    if bad or not dims:
        raise ValueError(
            f"dims must be latent indices in [0, {model.latent_dim}), got {dims}"
        )
    return dims


def traversal_codes(z0: torch.Tensor, values, dims) -> torch.Tensor:
    """Codes for a traversal: z0 (D,) repeated, latent ``dims[i]`` set to ``values[j]``.

    Returns (len(dims), len(values), D).
    """
    values = torch.as_tensor(np.asarray(values, dtype=np.float32))
    codes = z0.reshape(1, 1, -1).repeat(len(dims), len(values), 1)
    for i, d in enumerate(dims):
        codes[i, :, d] = values
    return codes


def traversal_images(model, z0=None, values=DEFAULT_VALUES, dims=None) -> torch.Tensor:
    """Decoded traversals: (len(dims), len(values), C, H, W) in [0, 1].

    z0: the code (D,) every row starts from (default zeros, the prior mean); values: the
    values each latent in ``dims`` (default all) takes in turn while the others stay at
    z0.
    """
    z0, dims = _check_z0(model, z0), _check_dims(model, dims)
    codes = traversal_codes(z0, values, dims)
    images = decode_images(model, codes.reshape(-1, codes.shape[-1]))
    return images.reshape(len(dims), len(values), *images.shape[1:])


@dataclass
class TraversalGrid:
    """What :func:`traversal_grid` returns.

    ``images`` (len(dims), len(values), C, H, W), the ``figure``, and the ``dims`` and
    ``values`` used.
    """

    images: torch.Tensor
    figure: object
    dims: list
    values: np.ndarray


def traversal_grid(
    model,
    z0=None,
    values=DEFAULT_VALUES,
    dims=None,
    *,
    row_labels=None,
    title: str | None = None,
    ax=None,
) -> TraversalGrid:
    """Static traversal grid: row i decodes z0 with ``dims[i]`` swept over ``values``.

    row_labels: one label per row (default ``z3``; or with extra text, ``z3 (KL 2.1)``).
    Returns a :class:`TraversalGrid` (images and the Figure).
    """
    import matplotlib.pyplot as plt

    from .plots import image_grid

    values = np.asarray(values, dtype=np.float64)
    dims = _check_dims(model, dims)
    images = traversal_images(model, z0, values, dims)
    rows, cols = images.shape[:2]
    if ax is None:
        _, ax = plt.subplots(figsize=(0.75 * cols + 1.4, 0.75 * rows + 0.9))
    labels = (
        list(row_labels) if row_labels is not None else [f"$z_{{{d}}}$" for d in dims]
    )
    fig = image_grid(
        images.reshape(rows * cols, *images.shape[2:]),
        nrow=cols,
        ax=ax,
        row_labels=labels,
        title=title or "Latent traversals",
    )
    h, w = images.shape[-2:]
    ax.set_xticks(
        [c * (w + 2) + w / 2 for c in range(cols)], [f"{v:+.1f}" for v in values]
    )
    ax.set_xlabel("value of the traversed latent (others fixed at $z_0$)")
    return TraversalGrid(images, fig, dims, values)


def there_and_back(steps: int) -> list[int]:
    """Value indices for a looping sweep: 0, 1, …, steps − 1, steps − 2, …, 1.

    2·steps − 2 indices (just ``[0]`` for one step).
    """
    return list(range(steps)) + list(range(steps - 2, 0, -1))


def traversal_frames(
    model, z0=None, values=DEFAULT_VALUES, dims=None, pad: int = 2
) -> list[np.ndarray]:
    """Animation frames for a sweep that goes there and back, so that it loops smoothly.

    Frame t shows, side by side, one image per latent in ``dims`` with that latent set
    to ``values[t]``.

    Returns a list of 2·len(values) − 2 arrays (H, len(dims)·(W + pad) − pad) in [0, 1]
    (len(values) frames when there is only one value).
    """
    images = traversal_images(model, z0, values, dims)[
        :, :, 0
    ].numpy()  # (rows, T, H, W)
    rows, steps, h, w = images.shape
    frames = []
    for t in there_and_back(steps):
        canvas = np.ones((h, rows * (w + pad) - pad), dtype=np.float32)
        for i in range(rows):
            canvas[:, i * (w + pad) : i * (w + pad) + w] = images[i, t]
        frames.append(canvas)
    return frames


def traversal_animation(
    model,
    z0=None,
    values=DEFAULT_VALUES,
    dims=None,
    *,
    title: str = "",
    interval: int = 150,
    height: float = 1.2,
):
    """Traversal as a looping HTML animation (``IPython.display.HTML``, ``to_jshtml``).

    Each frame shows every latent in ``dims`` (left to right) set to the same value, the
    others at z0; the frame title gives that value. Plays in the book without a kernel.
    """
    from .plots import animate

    values = np.asarray(values, dtype=np.float64)
    dims = _check_dims(model, dims)
    frames = traversal_frames(model, z0, values, dims)
    label = " · ".join(f"z{d}" for d in dims)
    titles = [
        f"{title + ': ' if title else ''}{label}  =  {values[t]:+.1f}"
        for t in there_and_back(len(values))
    ]
    width = height * frames[0].shape[1] / frames[0].shape[0]
    return animate(
        frames, titles, interval=interval, figsize=(max(width, 3.0), height + 0.5)
    )


# --------------------------------------------------------------------------- the widget


def image_png(image, size: int = 128) -> bytes:
    """One image (C, H, W) or (H, W) in [0, 1] as PNG bytes, ``size`` pixels wide."""
    from PIL import Image

    arr = (
        image.detach().cpu().numpy()
        if isinstance(image, torch.Tensor)
        else np.asarray(image)
    )
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    pil = Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8))
    pil = pil.resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def latent_playground(
    models, z0=None, *, span: float = 3.0, step: float = 0.1, size: int = 128
):
    """An ipywidgets panel to drive a decoder by hand.

    models: one model or a dict ``name -> model`` (a Dropdown chooses among them).
    z0: the starting code: None (zeros), a code (D,), or a dict ``name -> code`` (D,)
    per model; the sliders jump to the chosen model's z0 when the Dropdown changes.
    span, step: slider range [−span, span] and step; size: image side in pixels.

    Returns an ``ipywidgets.VBox`` with attributes ``dropdown``, ``sliders`` (one
    ``FloatSlider`` per latent of the current model), ``image`` (an ``Image`` widget
    holding a PNG) and ``models``.
    Every slider change decodes the code (one small image) and replaces the PNG.
    """
    import ipywidgets as widgets

    models = _as_models(models, "latent_playground")
    starts = {
        name: _check_z0(m, z0.get(name) if isinstance(z0, dict) else z0)
        for name, m in models.items()
    }

    dropdown = widgets.Dropdown(
        options=list(models), value=next(iter(models)), description="model"
    )
    image = widgets.Image(format="png", width=size, height=size)
    slider_box = widgets.GridBox(
        layout=widgets.Layout(grid_template_columns="repeat(2, 250px)")
    )
    panel = widgets.VBox([dropdown, widgets.HBox([image, slider_box])])
    panel.models, panel.dropdown, panel.image, panel.sliders = (
        models,
        dropdown,
        image,
        [],
    )
    state = {"busy": False}

    def redraw(*_):
        if state["busy"]:
            return
        model = models[dropdown.value]
        z = torch.tensor([[s.value for s in panel.sliders]], dtype=torch.float32)
        image.value = image_png(decode_images(model, z)[0], size)

    def build_sliders(name):
        state["busy"] = True
        sliders = [
            widgets.FloatSlider(
                value=float(v),
                min=-span,
                max=span,
                step=step,
                description=f"z{d}",
                continuous_update=True,
                readout_format="+.1f",
                style={"description_width": "28px"},
                layout=widgets.Layout(width="245px"),
            )
            for d, v in enumerate(starts[name].tolist())
        ]
        for s in sliders:
            s.observe(redraw, names="value")
        panel.sliders = sliders
        slider_box.children = sliders
        state["busy"] = False
        redraw()

    dropdown.observe(lambda change: build_sliders(change["new"]), names="value")
    build_sliders(dropdown.value)
    return panel


# ------------------------------------------------------------------------ in the page

INACTIVE_KL = 0.05
"""Latents with a KL below this many nats are shown as inactive (greyed and folded)."""
PAGE_BUDGET = 5_000_000
"""Bytes a book page should stay under; :func:`live_explorer` warns beyond it."""


@torch.no_grad()
def kl_per_latent(model, images, batch_size: int = 512) -> np.ndarray:
    """Mean KL(q(z_d|x) ‖ N(0, 1)) per latent over images (N, C, H, W): (D,), nats."""
    from .losses import gaussian_kl

    images = torch.as_tensor(images)
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(
            f"images must be a non-empty batch (N, C, H, W), got {tuple(images.shape)}"
        )
    placement = _model_placement(model)
    total = torch.zeros(model.latent_dim, dtype=torch.float64)
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        batch = batch.float() if "dtype" not in placement else batch
        mu, logvar = model.encode(batch.to(**placement))
        total += gaussian_kl(mu, logvar).sum(0).double().cpu()
    return (total / len(images)).float().numpy()


def _per_model(value, models: dict, what: str) -> dict:
    """``value`` for each model: a dict must name every model (and only those); anything
    else is shared (for kl, only allowed with a single model)."""
    if isinstance(value, dict):
        if set(value) != set(models):
            raise ValueError(
                f"{what} must have one entry per model {sorted(models)}, "
                f"got {sorted(value)}"
            )
        return dict(value)
    if value is not None and what == "kl" and len(models) > 1:
        raise ValueError(
            "with several models, give kl as a dict name -> (D,) KL values"
        )
    return {name: value for name in models}


def _kl_values(model, kl) -> np.ndarray:
    from .metrics import kl_summary

    values = kl_summary(kl).per_dim
    if values.shape != (model.latent_dim,):
        raise ValueError(
            f"kl must hold one value per latent ({model.latent_dim}), "
            f"got {values.shape}"
        )
    return values


def _pad_dims(model, pad, order: list[int]) -> list[int] | None:
    """The two latents the 2-D pad drives: the top two by KL for ``pad=True``."""
    if pad is None or pad is False:
        return None
    if pad is True:
        return order[:2] if model.latent_dim >= 2 else None
    dims = [int(d) for d in pad]
    if len(dims) != 2 or dims[0] == dims[1]:
        raise ValueError(
            f"pad must be True, False or two different latents, got {pad!r}"
        )
    _check_dims(model, dims)
    return dims


@dataclass
class LiveExplorer:
    """What :func:`live_explorer` returns: a self-contained HTML/JavaScript output.

    ``config`` is what the page's script reads (models, codes, KL order, settings);
    ``decoders`` maps each model name to its
    :class:`~betavae_lib.jsdecoder.SerialisedDecoder` (``nbytes``, ``precision``,
    ``max_error``). ``html`` is the output; Jupyter shows it through ``_repr_html_``;
    :meth:`save` writes it as a standalone page.
    """

    config: dict
    decoders: dict

    @property
    def html(self) -> str:
        from .jsdecoder import asset

        data = json.dumps(self.config, separators=(",", ":")).replace("<", "\\u003c")
        return (
            f"<style>{asset('explorer.css')}</style>"
            f'<div class="bvx" id="{self.config["id"]}">'
            '<div class="bvx-foot">Latent explorer: it decodes images with JavaScript '
            "in the page, and did not run here. In Jupyter, trust the notebook or run "
            "the cell again.</div></div>"
            '<script>(function () {\n"use strict";\n'
            "var module; // decoder.js must not export to a page-level `module`\n"
            f"{asset('decoder.js')}\n{asset('explorer.js')}\n"
            f"BetaVAEExplorer.mount(document.currentScript, {data});\n"
            "})();</script>"
        )

    def _repr_html_(self) -> str:
        return self.html

    @property
    def nbytes(self) -> int:
        """Bytes the output adds to a page (UTF-8), weights, code and style included."""
        return len(self.html.encode("utf-8"))

    def save(self, path) -> Path:
        """Write the explorer as a standalone HTML page (no other file needed)."""
        path = Path(path)
        path.write_text(
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.config['title'] or 'Latent explorer')}</title>"
            f"</head><body>\n{self.html}\n</body></html>\n",
            encoding="utf-8",
        )
        return path

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}: {d.precision} {d.nbytes / 1e3:.0f} kB"
            for name, d in self.decoders.items()
        )
        return f"LiveExplorer({parts}; {self.nbytes / 1e6:.2f} MB in all)"


def live_explorer(
    models,
    z0=None,
    *,
    kl=None,
    images=None,
    inactive_below: float = INACTIVE_KL,
    pad=True,
    span: float = 3.0,
    step: float = 0.05,
    precision: str = "auto",
    size: int = 196,
    title: str = "",
) -> LiveExplorer:
    """A latent explorer that decodes in the reader's browser: no kernel, no server.

    models: one model or a dict name -> model (a menu switches between them); each an
    ``MLPVAE`` or ``ConvVAE`` whose decoder is serialised into the output
    (:func:`betavae_lib.jsdecoder.serialise_decoder`; ``precision="auto"`` takes int8
    weights when the decoded pixels stay within 2/255 of
    ``torch.sigmoid(model.decode(z))``, else moves layers to fp16 until they do).
    z0: the starting code: None (zeros), a code (D,), or a dict name -> code (D,); reset
    returns to it, and each model keeps its own code while another is shown.
    kl: KL per latent in nats, (D,) or (B, D), for one model, or a dict name -> KL; or
    images: (N, C, H, W) (or a dict name -> images) to compute it from
    (:func:`kl_per_latent`). Sliders are ordered by decreasing KL; latents with
    KL < ``inactive_below`` nats are greyed and folded away. Without kl or images the
    sliders keep latent order and none is folded.
    pad: True (a 2-D pad drives the two highest-KL latents), False, or two latents.
    span, step: slider range [−span, span] and step; size: image side on screen in CSS
    pixels.

    Returns a :class:`LiveExplorer`; displayed, it is a ``text/html`` output that needs
    nothing outside itself (code, style and weights inline).
    """
    from .jsdecoder import serialise_decoder

    models = _as_models(models, "live_explorer")
    if kl is not None and images is not None:
        raise ValueError("give kl or images (to compute the KL from), not both")
    if not (0 < span < math.inf and 0 < step <= span):
        raise ValueError(
            f"need a finite span > 0 and 0 < step <= span, got {span}, {step}"
        )
    if not inactive_below >= 0:
        raise ValueError(f"inactive_below must be >= 0 nats, got {inactive_below!r}")
    if not (isinstance(size, (int, float)) and 16 <= size < math.inf):
        raise ValueError(f"size must be at least 16 pixels, got {size!r}")
    starts = _per_model(z0, models, "z0")
    kls = _per_model(kl, models, "kl")
    batches = _per_model(images, models, "images")

    entries, decoders = [], {}
    for name, model in models.items():
        start = _check_z0(model, starts[name])
        if batches[name] is not None:
            values = _kl_values(model, kl_per_latent(model, batches[name]))
        elif kls[name] is not None:
            values = _kl_values(model, kls[name])
        else:
            values = None
        if values is None:
            order, active = list(range(model.latent_dim)), [True] * model.latent_dim
        else:
            order = [int(d) for d in np.argsort(-values, kind="stable")]
            active = [bool(v >= inactive_below) for v in values]
        decoder = serialise_decoder(
            model, precision, span=span, extra_codes=start[None]
        )
        decoders[name] = decoder
        entries.append(
            {
                "name": name,
                "decoder": decoder.spec,
                "z0": [round(float(v), 5) for v in start],
                "order": order,
                "kl": None if values is None else [round(float(v), 4) for v in values],
                "active": active,
                "pad": _pad_dims(model, pad, order),
                "nbytes": decoder.nbytes,
                "precision": decoder.precision,
                "max_error": decoder.max_error,
            }
        )
    config = {
        "id": f"bvx-{uuid.uuid4().hex[:12]}",
        "title": title,
        "span": float(span),
        "step": float(step),
        "size": int(size),
        "threshold": float(inactive_below),
        "models": entries,
    }
    explorer = LiveExplorer(config, decoders)
    if explorer.nbytes > PAGE_BUDGET:
        warnings.warn(
            f"this explorer adds {explorer.nbytes / 1e6:.1f} MB to its page (over "
            f"{PAGE_BUDGET / 1e6:.0f} MB): show fewer models",
            stacklevel=2,
        )
    return explorer


__all__ = [
    "INACTIVE_KL",
    "PAGE_BUDGET",
    "LiveExplorer",
    "TraversalGrid",
    "decode_images",
    "image_png",
    "kl_per_latent",
    "latent_playground",
    "live_explorer",
    "there_and_back",
    "traversal_animation",
    "traversal_codes",
    "traversal_frames",
    "traversal_grid",
    "traversal_images",
]

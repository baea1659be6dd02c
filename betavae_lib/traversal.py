"""Latent traversals: change one latent at a time and decode, three ways.

* :func:`traversal_grid`: a static grid, one row per latent, one column per value.
* :func:`traversal_animation`: the same sweep as a self-contained HTML animation
  (``to_jshtml``).
* :func:`latent_playground`: an ipywidgets panel with one slider per latent and a model
  chooser, decoded by the kernel (live only while one runs; the book shows its last
  image).

Every function takes a model with ``latent_dim`` and ``decode(z) -> logits``
(B, C, H, W), like :class:`betavae_lib.models.VAE`; decoded images are
``sigmoid(logits)`` in [0, 1].
"""

from __future__ import annotations

import io
from dataclasses import dataclass

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
    return torch.sigmoid(model.decode(z.to(_model_device(model)))).cpu()


def _check_z0(model, z0) -> torch.Tensor:
    """A starting code (D,) as a float tensor; ``None`` gives the prior mean (zeros)."""
    if z0 is None:
        return torch.zeros(model.latent_dim)
    z0 = torch.as_tensor(z0, dtype=torch.float32).detach().cpu().reshape(-1)
    if z0.numel() != model.latent_dim:
        raise ValueError(
            f"z0 must hold one value per latent ({model.latent_dim}), got {z0.numel()}"
        )
    return z0


def _as_models(models, caller: str) -> dict:
    """``models`` as a dict name -> model: one model becomes ``{class name: model}``."""
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


__all__ = [
    "TraversalGrid",
    "decode_images",
    "image_png",
    "latent_playground",
    "there_and_back",
    "traversal_animation",
    "traversal_codes",
    "traversal_frames",
    "traversal_grid",
    "traversal_images",
]

"""Latent traversals: change one latent at a time and decode, three ways.

* :func:`traversal_grid`: a static grid, one row per latent, one column per value.
* :func:`traversal_animation`: the same sweep as a self-contained HTML animation
  (``to_jshtml``).
* :func:`live_explorer` (in :mod:`betavae_lib.explorer`, importable from here): a
  Jupyter widget with one slider per latent (by KL), a model menu and a 2-D pad; the
  decoder runs in the page's JavaScript from the model's own (quantised) weights, so it
  is live in Jupyter, Colab and the static book alike, and Python reads and sets its
  code.

Every function takes a model with ``latent_dim`` and ``decode(z) -> logits``
(B, C, H, W), like :class:`betavae_lib.models.VAE`; decoded images are
``sigmoid(logits)`` in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._latents import _check_dims, _check_z0, decode_images, image_png

DEFAULT_VALUES = np.linspace(-3.0, 3.0, 9)


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


# ------------------------------------------------------------------ the live explorer
# live_explorer and its widget live in betavae_lib.explorer (which imports anywidget);
# they are importable from here as well, on first use.
_EXPLORER_NAMES = (
    "INACTIVE_KL",
    "PAGE_BUDGET",
    "LatentExplorer",
    "kl_per_latent",
    "live_explorer",
)


def __getattr__(name):
    if name in _EXPLORER_NAMES:
        from . import explorer

        return getattr(explorer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TraversalGrid",
    "decode_images",
    "image_png",
    "there_and_back",
    "traversal_animation",
    "traversal_codes",
    "traversal_frames",
    "traversal_grid",
    "traversal_images",
]

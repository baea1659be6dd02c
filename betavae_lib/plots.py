"""Figures used across the chapters. Every function returns the matplotlib Figure it
drew."""

from __future__ import annotations

import base64
import io
import re

import matplotlib.pyplot as plt
import numpy as np
import torch

from ._common import model_device, positive_int, to_numpy


def image_grid(
    images, nrow: int = 8, title: str | None = None, ax=None, row_labels=None
):
    """Show images (N, 1, H, W) in [0, 1] as one grid, ``nrow`` per row; returns the
    Figure."""
    imgs = to_numpy(images, "images")
    if imgs.ndim != 4 or len(imgs) == 0:
        raise ValueError(
            f"images must be a non-empty (N, 1, H, W) batch, got {imgs.shape}"
        )
    nrow = positive_int("nrow", nrow)
    imgs = imgs[:, 0]
    n, h, w = imgs.shape
    rows = int(np.ceil(n / nrow))
    canvas = np.ones((rows * (h + 2) - 2, nrow * (w + 2) - 2))
    for i, im in enumerate(imgs):
        r, c = divmod(i, nrow)
        canvas[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = im
    if ax is None:
        fig, ax = plt.subplots(figsize=(nrow * 0.6 + 0.6, rows * 0.6 + 0.4))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    if row_labels is not None:
        ax.set_yticks(
            [r * (h + 2) + h / 2 for r in range(rows)], list(row_labels)[:rows]
        )
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax.figure


def plot_history(history, title: str = "Training curves"):
    """Reconstruction and KL per epoch (train and, when present, test), in nats per
    image."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, label in zip(
        axes, ("recon", "kl"), ("reconstruction −log p(x|z)", "KL(q(z|x) ‖ p(z))")
    ):
        ax.plot(history.epoch, getattr(history, f"train_{key}"), "o-", label="train")
        if getattr(history, f"test_{key}"):
            ax.plot(history.epoch, getattr(history, f"test_{key}"), "s--", label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{label} [nats/image]")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_kl_per_dim(
    kl_per_dim,
    title: str = "KL per latent dimension",
    ax=None,
    threshold: float | None = None,
):
    """Bar chart of the KL (nats) carried by each latent dimension, largest first in
    colour order."""
    kl = to_numpy(kl_per_dim).ravel()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4, 0.35 * len(kl) + 1), 3))
    ax.bar(np.arange(len(kl)), kl, color="tab:blue")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"{threshold} nats")
        ax.legend()
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL [nats]")
    ax.set_xticks(np.arange(len(kl)))
    ax.set_title(title)
    return ax.figure


def plot_latent_scatter(
    z,
    labels,
    label_names=None,
    title: str = "Posterior means",
    ax=None,
    max_points: int = 5000,
):
    """Scatter of 2-D latent codes (N, 2) coloured by class label."""
    z, labels = to_numpy(z)[:max_points], to_numpy(labels)[:max_points]
    if z.shape[1] != 2:
        raise ValueError(f"plot_latent_scatter needs 2-D codes, got shape {z.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(
        z[:, 0], z[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7, vmin=-0.5, vmax=9.5
    )
    cbar = ax.figure.colorbar(sc, ax=ax, ticks=range(10))
    if label_names is not None:
        cbar.ax.set_yticklabels(label_names)
    ax.set_xlabel("$z_1$ (posterior mean)")
    ax.set_ylabel("$z_2$ (posterior mean)")
    ax.set_title(title)
    return ax.figure


def latent_manifold(
    model, n: int = 15, span: float = 2.5, title: str = "Decoded latent grid", ax=None
):
    """Decode an n×n grid of z ∈ [−span, span]² for a 2-latent model and show it as one
    image."""
    if model.latent_dim != 2:
        raise ValueError(
            f"latent_manifold needs a 2-latent model, got latent_dim={model.latent_dim}"
        )
    grid = torch.linspace(-span, span, n)
    zz = torch.stack(torch.meshgrid(grid, grid.flip(0), indexing="xy"), -1).reshape(
        -1, 2
    )
    with torch.no_grad():
        imgs = torch.sigmoid(model.decode(zz.to(model_device(model)))).cpu()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    return image_grid(imgs, nrow=n, title=title, ax=ax)


def book_style(dpi: int = 80) -> None:
    """Matplotlib settings the chapters share: modest dpi (small notebooks), light grid,
    readable fonts."""
    plt.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "axes.grid": False,
            "font.size": 10,
            "axes.titlesize": 11,
            "figure.max_open_warning": 50,
        }
    )


def animate(
    frames, titles=None, interval: int = 200, figsize=(4, 4), cmap: str = "gray"
):
    """Animate a list of 2-D arrays (e.g. image grids or rendered plots) as
    self-contained HTML.

    Returns an ``IPython.display.HTML`` built with matplotlib's ``to_jshtml``: it plays
    in the static book without a kernel.
    frames: sequence of (H, W) or (H, W, 3) arrays; titles: one per frame.
    """
    from IPython.display import HTML

    frames = [to_numpy(f) for f in frames]
    if not frames:
        raise ValueError("animate needs at least one frame")
    fig, ax = plt.subplots(figsize=figsize)
    im = ax.imshow(
        frames[0],
        cmap=cmap,
        vmin=0,
        vmax=1 if frames[0].ndim == 2 else None,
        interpolation="nearest",
    )
    ax.axis("off")
    title = ax.set_title(titles[0] if titles else "")

    def show(i):
        im.set_data(frames[i])

    return HTML(_jshtml(fig, im, show, frames, titles, title, interval))


def _jshtml(fig, artist, show, frames, titles, title, interval, dpi=None) -> str:
    """``to_jshtml``'s HTML of one frame per item of ``frames``: ``show(i)`` puts frame
    i on ``artist`` and ``title`` follows ``titles``; saved at ``dpi`` (matplotlib's
    default when None); ``fig`` is closed."""
    from matplotlib import animation

    def draw(i):
        show(i)
        if titles:
            title.set_text(titles[i])
        return artist, title

    anim = animation.FuncAnimation(
        fig, draw, frames=len(frames), interval=interval, blit=False
    )
    with plt.rc_context({} if dpi is None else {"savefig.dpi": dpi}):
        html = anim.to_jshtml(default_mode="loop")
    plt.close(fig)
    return html


def animate_scatter(
    points,
    labels,
    titles=None,
    *,
    lim: float = 4.0,
    label_name: str = "class",
    interval: int = 400,
    figsize=(4.4, 3.7),
    dpi: int = 90,
    circles=(),
    colours: int | None = 64,
):
    """Animate 2-D codes, one scatter per frame, coloured by class, as self-contained
    HTML (``to_jshtml``: it plays in the static book without a kernel).

    points: sequence of (N, 2) arrays (e.g. posterior means after each step); labels:
    (N,) integer classes 0-9, shown in a colour key titled ``label_name``; titles: one
    per frame; lim: both axes span [−lim, lim]; circles: radii drawn as dashed circles
    (e.g. ``(1, 2)`` for the prior's 1σ and 2σ). Each frame is drawn at ``dpi`` from
    the points themselves, so text and markers stay sharp; colours: store each frame
    as a PNG of at most this many colours (a scatter of ten classes needs few; a
    frame then takes a fifth of the bytes), None for full colour.
    """
    from IPython.display import HTML

    frames = [to_numpy(p, "points") for p in points]
    if not frames:
        raise ValueError("animate_scatter needs at least one frame")
    labels = to_numpy(labels, "labels").ravel()
    for i, p in enumerate(frames):
        if p.ndim != 2 or p.shape != (len(labels), 2):
            raise ValueError(
                f"frame {i} must be ({len(labels)}, 2) points, one per label; got "
                f"{p.shape}"
            )
    if titles is not None and len(titles) != len(frames):
        raise ValueError(
            f"titles must have one entry per frame ({len(frames)}), got {len(titles)}"
        )
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    sc = ax.scatter(
        frames[0][:, 0],
        frames[0][:, 1],
        c=labels,
        cmap="tab10",
        s=4,
        vmin=-0.5,
        vmax=9.5,
        linewidths=0,
    )
    for r in circles:
        ax.add_patch(plt.Circle((0, 0), r, fill=False, ls="--", lw=0.8, color="0.5"))
    fig.colorbar(sc, ax=ax, ticks=range(10), label=label_name)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="$z_1$", ylabel="$z_2$")
    ax.set_aspect("equal")
    title = ax.set_title(titles[0] if titles else "")
    fig.tight_layout()

    def show(i):
        sc.set_offsets(frames[i])

    html = _jshtml(fig, sc, show, frames, titles, title, interval, dpi)
    return HTML(html if colours is None else _palette_frames(html, colours))


_PNG_FRAME = re.compile(r'"data:image/png;base64,([A-Za-z0-9+/=\\\n]+)"')


def _palette_frames(html: str, colours: int) -> str:
    """``html`` from ``to_jshtml`` with every embedded PNG frame re-encoded with a
    palette of at most ``colours`` colours."""
    from PIL import Image

    def requantise(match):
        data = base64.b64decode(match.group(1).replace("\\", "").replace("\n", ""))
        image = Image.open(io.BytesIO(data)).convert("RGB")
        image = image.quantize(colours, dither=Image.Dither.NONE)
        out = io.BytesIO()
        image.save(out, format="png", optimize=True)
        return f'"data:image/png;base64,{base64.b64encode(out.getvalue()).decode()}"'

    return _PNG_FRAME.sub(requantise, html)


def figure_to_array(fig) -> np.ndarray:
    """Render a matplotlib Figure to an (H, W, 3) float array in [0, 1] (to use it as an
    animation frame)."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return rgba[..., :3].astype(np.float32) / 255.0


def plot_kl_and_mi(
    kl_per_dim, mi, factor_names, entropy=None, threshold: float = 0.01, title: str = ""
):
    """KL per latent (bars) beside the mutual information of each alive latent with each
    factor (heatmap).

    kl_per_dim: (D,) nats; mi: (D, K) nats, e.g. ``metrics.mig(...).mi``; factor_names:
    K names; entropy: (K,) factor entropies in nats: when given, the heatmap shows
    MI / H(factor) in [0, 1].
    Latents with KL ≤ ``threshold`` nats are left out; rows are sorted by decreasing KL.
    """
    kl, mi = to_numpy(kl_per_dim).ravel(), to_numpy(mi)
    if mi.shape != (len(kl), len(factor_names)):
        raise ValueError(
            f"mi must have shape (D, K) = ({len(kl)}, {len(factor_names)}), "
            f"got {mi.shape}"
        )
    alive = [d for d in np.argsort(-kl, kind="stable") if kl[d] > threshold]
    if not alive:
        alive = [int(np.argmax(kl))]
    shown = mi[alive] / to_numpy(entropy)[None, :] if entropy is not None else mi[alive]
    fig, (ax_kl, ax_mi) = plt.subplots(
        1,
        2,
        figsize=(9, 0.42 * len(alive) + 1.6),
        sharey=True,
        gridspec_kw={"width_ratios": [1, 1.6]},
    )
    rows = np.arange(len(alive))
    ax_kl.barh(rows, kl[alive], color="tab:blue")
    ax_kl.invert_xaxis()
    ax_kl.set_yticks(rows, [f"z{d}" for d in alive])
    ax_kl.set_xlabel("KL(q(z_d|x) ‖ N(0,1)) [nats]")
    ax_kl.set_ylabel("latent (alive, by KL)")
    im = ax_mi.imshow(
        shown,
        cmap="viridis",
        aspect="auto",
        vmin=0,
        vmax=1 if entropy is not None else None,
    )
    ax_mi.set_xticks(np.arange(len(factor_names)), list(factor_names))
    ax_mi.set_xlabel("factor")
    for r in rows:
        for c in range(len(factor_names)):
            ax_mi.text(
                c,
                r,
                f"{shown[r, c]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white"
                if shown[r, c] < 0.6 * (np.nanmax(shown) or 1)
                else "black",
            )
    fig.colorbar(
        im, ax=ax_mi, label="MI / H(factor)" if entropy is not None else "MI [nats]"
    )
    ax_mi.set_title("mutual information with each factor")
    ax_kl.set_title("KL per latent")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def gaussian_ellipse(mean, cov, radius: float = 1.0, n: int = 200) -> np.ndarray:
    """Points of the ellipse {z : (z − mean)ᵀ cov⁻¹ (z − mean) = radius²}: (n, 2).

    mean: (2,); cov: (2, 2) symmetric positive definite, or (2,) variances of a
    diagonal covariance. radius is in standard deviations (Mahalanobis distance): 1 and
    2 draw the "1σ" and "2σ" contours, which are equal-density lines of the Gaussian
    whatever its covariance, so two Gaussians' ellipses of the same radius compare.
    """
    mean = np.asarray(to_numpy(mean), dtype=np.float64).ravel()
    cov = np.asarray(to_numpy(cov), dtype=np.float64)
    if cov.ndim == 1:
        cov = np.diag(cov)
    if mean.shape != (2,) or cov.shape != (2, 2):
        raise ValueError(
            f"mean must be (2,) and cov (2, 2) or (2,), got {mean.shape} and "
            f"{cov.shape}"
        )
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius!r}")
    n = positive_int("n", n)
    chol = np.linalg.cholesky(cov)  # raises LinAlgError if cov is not positive definite
    angle = np.linspace(0.0, 2 * np.pi, n)
    circle = np.stack([np.cos(angle), np.sin(angle)], 1)
    return mean + radius * circle @ chol.T


def plot_gaussian_ellipses(
    mean, cov, ax, radii=(1.0, 2.0), axes: bool = False, label=None, **style
):
    """Draw a 2-D Gaussian as its Mahalanobis ellipses (``radii`` in standard
    deviations) on ``ax``; with ``axes=True`` also its principal axes out to the largest
    radius. ``style`` goes to ``ax.plot``; ``label`` names the first ellipse only."""
    for i, radius in enumerate(radii):
        points = gaussian_ellipse(mean, cov, radius)
        ax.plot(points[:, 0], points[:, 1], label=label if i == 0 else None, **style)
    if axes:
        cov = np.asarray(to_numpy(cov), dtype=np.float64)
        cov = np.diag(cov) if cov.ndim == 1 else cov
        centre = np.asarray(to_numpy(mean), dtype=np.float64).ravel()
        variances, vectors = np.linalg.eigh(cov)
        for var, vec in zip(variances, vectors.T):
            end = max(radii) * np.sqrt(var) * vec
            ax.plot(*np.stack([centre - end, centre + end], 1), ls=":", **style)
    return ax.figure

"""The latent explorer: a Jupyter widget that decodes in the reader's browser.

:func:`live_explorer` returns a :class:`LatentExplorer`, an ``anywidget.AnyWidget``
(so an ``ipywidgets.DOMWidget``): one slider per latent (ordered by KL), a model menu,
a 2-D pad and the decoded image. The decoder runs in the page's JavaScript
(``assets/decoder.js``) from the models' own quantised weights
(:mod:`betavae_lib.jsdecoder`), so the image follows the sliders with no round trip to
a kernel. Its synced traits:

* ``z``: the code shown (one float per latent of the model shown). Moving a slider
  updates ``explorer.z`` in Python; setting ``explorer.z = [...]`` redraws;
  ``explorer.observe(f, names="z")`` is called on every change;
* ``model``: the name of the model shown (setting it switches the menu; ``z`` becomes
  that model's own code);
* ``codes``: every model's code (``codes[model] == z``), so that each keeps its own
  while another is shown;
* ``models`` and ``settings``: the decoders (weights, KL order, starting codes) and the
  slider range, fixed when the explorer is built.

Where it works:

* in a live kernel (JupyterLab, Jupyter Notebook, VS Code, Colab): a two-way widget;
* in the static book, with no kernel and no network: Jupyter Book renders the widget
  from the state the executor stored in the notebook (nbclient's
  ``store_widget_state``), through the vendored html-manager and anywidget front end
  (``_config.yml``, ``book/_static/vendored``). The book shows the widget's state at
  the end of the run;
* in a front end without widgets: the output's ``text/html`` is a still image of the
  code shown when it was displayed, with a line saying what the widget needs. It holds
  no weights, so a stored notebook carries them once, in its widget state.

:meth:`LatentExplorer.save` writes the same explorer as a standalone HTML page (a local
stand-in for the widget model; no kernel, no widget manager).
"""

from __future__ import annotations

import base64
import html
import json
import math
import uuid
import warnings
from pathlib import Path

import anywidget
import numpy as np
import torch
import traitlets

from ._latents import (
    _as_models,
    _check_dims,
    _check_z0,
    _model_placement,
    decode_images,
    image_png,
)
from .jsdecoder import asset, serialise_decoder

INACTIVE_KL = 0.05
"""Latents with a KL below this many nats are shown as inactive (greyed and folded)."""
PAGE_BUDGET = 5_000_000
"""Bytes a book page should stay under; :func:`live_explorer` warns beyond it."""


class ExplorerValueError(traitlets.TraitError, ValueError):
    """A value the explorer cannot show (a TraitError, so that traitlets rolls back a
    batch of changes, and a ValueError)."""


def _esm() -> str:
    """The widget's front end: the decoder and the explorer, and anywidget's entry."""
    return (
        "var module; // decoder.js must not export to a page-level `module`\n"
        f"{asset('decoder.js')}\n{asset('explorer.js')}\n"
        "export default {\n"
        "  render({ model, el }) { return BetaVAEExplorer.render(el, model); },\n"
        "};\n"
    )


def as_code(value, n: int | None = None, what: str = "z", whose: str = "") -> list:
    """``value`` (a list, tuple, array or tensor of numbers) as a list of floats.

    ExplorerValueError, naming ``what``, when it is not flat, not finite, or (with
    ``n``) does not hold ``n`` numbers (``whose``: the model, for the message).
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
        if array.ndim == 0:
            raise TypeError
    except (TypeError, ValueError):
        raise ExplorerValueError(
            f"{what} must be a list of numbers, one per latent, got {value!r}"
        ) from None
    if array.ndim != 1:
        raise ExplorerValueError(
            f"{what} must be a flat list of numbers, one per latent, got shape "
            f"{array.shape}"
        )
    if n is not None and len(array) != n:
        raise ExplorerValueError(
            f"{what} must hold {n} numbers, one per latent{whose}, got {len(array)}"
        )
    bad = np.flatnonzero(~np.isfinite(array))
    if len(bad):
        raise ExplorerValueError(
            f"{what} must be finite: {what}[{bad[0]}] is {array[bad[0]]}"
        )
    return [float(v) for v in array]


class _Code(traitlets.List):
    """A code: a list of finite floats (arrays and tensors are converted)."""

    def __init__(self, **kwargs):
        super().__init__(traitlets.Float(), **kwargs)

    def set(self, obj, value):
        # not Container.set, which would wrap a str in a list
        traitlets.TraitType.set(self, obj, value)

    def validate(self, obj, value):
        return super().validate(obj, as_code(value, what=self.name))


class LatentExplorer(anywidget.AnyWidget):
    """What :func:`live_explorer` returns: the explorer as a Jupyter widget.

    Synced traits: ``z`` (the code shown), ``model`` (the name of the model shown),
    ``codes`` (each model's code), ``models`` and ``settings`` (fixed at build).
    Python attributes: ``decoders`` (name -> :class:`~betavae_lib.jsdecoder.
    SerialisedDecoder`: ``precision``, ``max_error``, ``nbytes``), ``sources``
    (name -> the PyTorch model) and ``z0`` (name -> starting code). :meth:`image`
    decodes the code shown (or any code) in PyTorch.

    Setting ``model`` switches to that model at its own code; to show it at another
    code, set ``model`` and then ``z`` (or both inside ``hold_trait_notifications()``).
    """

    _esm = _esm()
    _css = asset("explorer.css")

    z = _Code().tag(sync=True)
    model = traitlets.Unicode().tag(sync=True)
    codes = traitlets.Dict().tag(sync=True)
    models = traitlets.List(traitlets.Dict()).tag(sync=True)
    settings = traitlets.Dict().tag(sync=True)

    def __init__(self, *, models, settings, decoders=None, sources=None, **kwargs):
        self._built = False
        self.decoders = dict(decoders or {})
        self.sources = dict(sources or {})
        first = models[0] if models else {}
        kwargs.setdefault("model", first.get("name", ""))
        kwargs.setdefault("codes", {m["name"]: list(m["z0"]) for m in models})
        if "z" not in kwargs:
            kwargs["z"] = kwargs["codes"].get(kwargs["model"], [])
        super().__init__(models=models, settings=settings, **kwargs)
        self._built = True
        self._fixed_bytes = None

    # --------------------------------------------------------------- validation
    def latent_dims(self) -> dict:
        """name -> the model's number of latents."""
        return {m["name"]: int(m["decoder"]["latent_dim"]) for m in self.models}

    @traitlets.validate("models", "settings")
    def _fixed(self, proposal):
        name = proposal["trait"].name
        if self._built and proposal["value"] != getattr(self, name):
            raise ExplorerValueError(
                f"{name} is fixed when the explorer is built: call live_explorer again"
            )
        return proposal["value"]

    @traitlets.validate("model")
    def _valid_model(self, proposal):
        names = list(self.latent_dims())
        if proposal["value"] not in names:
            raise ExplorerValueError(
                f"model must be one of the explorer's models {names}, got "
                f"{proposal['value']!r}"
            )
        return proposal["value"]

    @traitlets.validate("z")
    def _valid_z(self, proposal):
        dims = self.latent_dims()
        if self.model not in dims:  # the model's own error comes first
            return proposal["value"]
        return as_code(
            proposal["value"],
            dims[self.model],
            "z",
            f" of the model shown ({self.model!r}; set explorer.model first to show "
            "another)",
        )

    @traitlets.validate("codes")
    def _valid_codes(self, proposal):
        dims, codes = self.latent_dims(), proposal["value"]
        if set(codes) != set(dims):
            raise ExplorerValueError(
                f"codes must have one entry per model {sorted(dims)}, got "
                f"{sorted(codes)}"
            )
        return {
            name: as_code(codes[name], dims[name], f"codes[{name!r}]", f" of {name!r}")
            for name in dims
        }

    # ------------------------------------------------- z, model and codes agree
    @traitlets.observe("z")
    def _z_changed(self, change):
        if self.codes.get(self.model) != self.z:
            self.codes = {**self.codes, self.model: list(self.z)}

    @traitlets.observe("model")
    def _model_changed(self, change):
        # z still holds the previous model's code: show the new model at its own. (z set
        # in the same batch, e.g. by the front end's menu, is kept.)
        dims = self.latent_dims()
        if (
            self.z == self.codes.get(change["old"])
            or len(self.z) != dims[change["new"]]
        ):
            self.z = self.codes[change["new"]]
        elif self.codes.get(self.model) != self.z:
            self.codes = {**self.codes, self.model: list(self.z)}

    @traitlets.observe("codes")
    def _codes_changed(self, change):
        if self.codes[self.model] != self.z:
            self.z = self.codes[self.model]

    # ----------------------------------------------------------------- Python side
    @property
    def z0(self) -> dict:
        """name -> the model's starting code (where reset goes back to)."""
        return {m["name"]: list(m["z0"]) for m in self.models}

    @torch.no_grad()
    def image(self, model: str | None = None, z=None) -> torch.Tensor:
        """The image (C, H, W) in [0, 1] that PyTorch decodes from ``z`` (default: the
        code shown) with ``model`` (default: the model shown): what the page shows, to
        within the decoder's ``max_error``."""
        name = self.model if model is None else model
        if name not in self.sources:
            raise ExplorerValueError(
                f"model must be one of the explorer's models {list(self.sources)}, "
                f"got {name!r}"
            )
        source = self.sources[name]
        code = as_code(
            self.codes[name] if z is None else z,
            source.latent_dim,
            "z",
            f" of {name!r}",
        )
        return decode_images(source, torch.tensor([code]))[0]

    def state(self) -> dict:
        """The synced state as JSON-able values (what a page or the notebook stores)."""
        return {
            "settings": self.settings,
            "models": self.models,
            "model": self.model,
            "z": list(self.z),
            "codes": dict(self.codes),
        }

    @property
    def nbytes(self) -> int:
        """Bytes the widget's stored state takes in a notebook or a page (weights, code,
        style and settings), as compact JSON."""
        if self._fixed_bytes is None:
            fixed = [self._esm, self._css, self.settings, self.models]
            self._fixed_bytes = len(json.dumps(fixed, separators=(",", ":")).encode())
        small = [self.model, list(self.z), self.codes]
        return self._fixed_bytes + len(json.dumps(small, separators=(",", ":")))

    # --------------------------------------------------------------- what is shown
    def preview_html(self) -> str:
        """The ``text/html`` fallback: the image of the code shown, as a PNG, and a line
        on what the live widget needs. No weights and no script."""
        settings = self.settings
        title = settings.get("title") or "Latent explorer"
        if self.model in self.sources:
            image = self.image()
            png = image_png(image, size=max(image.shape[-2:]))
            src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            picture = (
                f'<img src="{src}" alt="decoded image" width="{settings["size"]}" '
                f'height="{settings["size"]}" style="image-rendering: pixelated; '
                'image-rendering: crisp-edges; border-radius: 3px">'
            )
        else:
            picture = ""
        return (
            '<div class="bvx-preview" style="font: 13px/1.4 system-ui, sans-serif; '
            "border: 1px solid rgba(128, 128, 128, 0.35); border-radius: 6px; "
            'padding: 10px 12px; max-width: 860px">'
            f"<div><b>{html.escape(title)}</b>: {html.escape(self.model)}</div>"
            f"{picture}"
            '<div style="font-size: 11px; opacity: 0.7">A still of the latent '
            "explorer, a Jupyter widget whose sliders decode in the page. To move "
            "them, run the notebook in a front end with ipywidgets (JupyterLab, "
            "Jupyter Notebook, VS Code, Colab), or read the book's page.</div></div>"
        )

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        data["text/html"] = self.preview_html()
        return data, metadata

    @property
    def html(self) -> str:
        """The explorer as a self-contained HTML fragment (style, code, weights and a
        local stand-in for the widget model): see :meth:`save`."""
        state = json.dumps(self.state(), separators=(",", ":")).replace("<", "\\u003c")
        return (
            f"<style>{self._css}</style>"
            f'<div id="{self.settings["id"]}"><div class="bvx"><div class="bvx-foot">'
            "Latent explorer: it decodes images with JavaScript in the page, and did "
            "not run here.</div></div></div>"
            '<script>(function () {\n"use strict";\n'
            "var module; // decoder.js must not export to a page-level `module`\n"
            f"{asset('decoder.js')}\n{asset('explorer.js')}\n"
            f"BetaVAEExplorer.mount(document.currentScript, {state});\n"
            "})();</script>"
        )

    def save(self, path) -> Path:
        """Write the explorer, as it is now, as a standalone HTML page (no other file,
        no kernel and no widget manager needed; changes there stay in the page)."""
        path = Path(path)
        path.write_text(
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.settings.get('title') or 'Latent explorer')}"
            f"</title></head><body>\n{self.html}\n</body></html>\n",
            encoding="utf-8",
        )
        return path

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}: {d.precision} {d.nbytes / 1e3:.0f} kB"
            for name, d in self.decoders.items()
        )
        return (
            f"LatentExplorer({parts}; showing {self.model!r}; "
            f"{self.nbytes / 1e6:.2f} MB of widget state)"
        )


# ----------------------------------------------------------------------- building


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


def _for_model(name: str, models: dict, check, *args):
    """``check(*args)``; with several models, its ValueError names the model."""
    try:
        return check(*args)
    except ValueError as error:
        if len(models) == 1:
            raise
        sizes = sorted({m.latent_dim for m in models.values()})
        hint = (
            f" (the models have {' and '.join(map(str, sizes))} latents: give a dict "
            "name -> value)"
            if len(sizes) > 1
            else ""
        )
        raise ValueError(f"{error}, for model {name!r}{hint}") from None


def _check_options(kl, images, span, step, inactive_below, size) -> None:
    """Raise ValueError on :func:`live_explorer`'s options: kl and images both given,
    a slider range or step that is not finite and positive, a negative KL threshold,
    a size under 16 pixels."""
    if kl is not None and images is not None:
        raise ValueError("give kl or images (to compute the KL from), not both")
    if not (
        math.isfinite(span) and span > 0 and math.isfinite(step) and 0 < step <= span
    ):
        raise ValueError(
            f"need a finite span > 0 and 0 < step <= span, got {span}, {step}"
        )
    if not inactive_below >= 0:
        raise ValueError(f"inactive_below must be >= 0 nats, got {inactive_below!r}")
    if not (isinstance(size, (int, float)) and 16 <= size < math.inf):
        raise ValueError(f"size must be at least 16 pixels, got {size!r}")


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
) -> LatentExplorer:
    """A latent explorer widget that decodes in the reader's browser.

    models: one model or a dict name -> model (a menu switches between them; they may
    have different numbers of latents); each an ``MLPVAE`` or ``ConvVAE`` whose decoder
    is serialised into the widget's state
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

    Returns a :class:`LatentExplorer` showing the first model at its z0: read or set
    ``explorer.z`` and ``explorer.model``, observe them, decode in PyTorch with
    ``explorer.image()``.
    """
    models = _as_models(models, "live_explorer")
    _check_options(kl, images, span, step, inactive_below, size)
    starts = _per_model(z0, models, "z0")
    kls = _per_model(kl, models, "kl")
    batches = _per_model(images, models, "images")

    entries, decoders = [], {}
    for name, model in models.items():
        start = _for_model(name, models, _check_z0, model, starts[name])
        start = torch.as_tensor(
            _for_model(name, models, as_code, start, None, "z0"), dtype=torch.float32
        )
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
        dims = _for_model(name, models, _pad_dims, model, pad, order)
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
                "pad": dims,
                "nbytes": decoder.nbytes,
                "precision": decoder.precision,
                "max_error": decoder.max_error,
            }
        )
    settings = {
        "id": f"bvx-{uuid.uuid4().hex[:12]}",
        "title": title,
        "span": float(span),
        "step": float(step),
        "size": int(size),
        "threshold": float(inactive_below),
    }
    explorer = LatentExplorer(
        models=entries, settings=settings, decoders=decoders, sources=models
    )
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
    "ExplorerValueError",
    "LatentExplorer",
    "as_code",
    "kl_per_latent",
    "live_explorer",
]

"""What the latent traversals (:mod:`betavae_lib.traversal`) and the latent explorer
(:mod:`betavae_lib.explorer`) share: decoding latents to images, a PNG of an image, and
the checks of their models, starting code and latent dimensions."""

from __future__ import annotations

import io

import numpy as np
import torch


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
        raise ValueError(f"z0 must be finite, got {z0.tolist()}")
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

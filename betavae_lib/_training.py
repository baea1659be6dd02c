"""What the two training loops share, :func:`betavae_lib.train.fit` and
:func:`betavae_lib.ensemble.fit_ensemble`: the checks of their data and loop
arguments, how a batch is taken from the data, the memory-format choice, the progress
bar, and the row an epoch appends to a History. Each loop keeps its own step: ``fit``'s
is the plain one the book teaches, ``fit_ensemble``'s the batched one.
"""

from __future__ import annotations

import torch

from ._common import as_float_images, check_dataset_images, positive_int


def check_data(model, images, test_images, **counts) -> None:
    """Raise unless ``images`` (and ``test_images``, when given) suit ``model`` and
    every count (``epochs=``, ``batch_size=``, ...) is a positive integer."""
    check_dataset_images(model, images, "images")
    if test_images is not None:
        check_dataset_images(model, test_images, "test_images")
    for name, value in counts.items():
        positive_int(name, value)


def images_at(data: torch.Tensor, index: torch.Tensor, dtype: torch.dtype):
    """The images of ``data`` at ``index`` ((B,), or (K, B) for K members) as floats in
    [0, 1] of ``dtype``, shaped (*index.shape, C, H, W)."""
    # index_select: the same rows as data[index], in about half the time
    rows = data.index_select(0, index.reshape(-1))
    return as_float_images(rows.view(*index.shape, *rows.shape[1:])).to(dtype)


def use_channels_last(has_convolutions: bool, device: torch.device) -> bool:
    """Whether convolutional weights and batches go channels-last: the faster layout
    for convolutions on CUDA and the CPU, and the same arithmetic."""
    return has_convolutions and device.type in ("cuda", "cpu")


def progress_bar(total: int, *, progress: bool, desc: str, initial: int = 0, **options):
    """A tqdm bar over the optimiser steps (none shown unless ``progress``); it is left
    on screen only while training."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not progress,
        desc=desc,
        leave=False,
        **options,
    )


def record_epoch(history, epoch: int, train, beta, test, seconds, steps: int) -> None:
    """Append one epoch to ``history``.

    train: the epoch's means (loss, recon, kl, kl per dim); beta: β at its last step;
    test: (recon, kl, kl per dim) on the test images, or None; seconds: the epoch's
    wall time; steps: the optimiser steps taken so far.
    """
    loss, recon, kl, kl_per_dim = train
    history.epoch.append(epoch)
    history.train_loss.append(loss)
    history.train_recon.append(recon)
    history.train_kl.append(kl)
    history.train_kl_per_dim.append(kl_per_dim)
    history.beta.append(beta)
    if test is not None:
        history.test_recon.append(test[0])
        history.test_kl.append(test[1])
        history.test_kl_per_dim.append(test[2])
    history.seconds.append(seconds)
    history.steps = steps

"""The domain classifier behind ``fid(features="domain")``: a small CNN trained on MNIST
or Fashion-MNIST (:class:`DomainClassifier`), whose 128-d penultimate layer
(pre-activation) gives the book's in-domain FID features. Its checkpoints ship in
``betavae_lib/assets``; :func:`train_domain_classifier` makes them again,
:func:`load_domain_classifier` reads them, :func:`classifier_accuracy` checks one.
:mod:`betavae_lib.fid` re-exports every name.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._common import model_device, pick_device, positive_int
from .checkpoints import CheckpointError, atomic_torch_save, build_model, read_safely
from .data import load_dataset

DOMAIN_DATASETS = ("mnist", "fashion_mnist")
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DOMAIN_FORMAT = "betavae_lib.domain_classifier/1"


def _device_or_auto(device) -> torch.device:
    return pick_device("auto" if device is None else device)


class DomainClassifier(nn.Module):
    """Small CNN for 28x28 grayscale digits or clothes; its 128-d penultimate layer
    gives FID features.

    Three strided convolutions with ReLU (``width``, 2·``width``, 2·``width`` channels;
    28 -> 14 -> 7 -> 4), a ``feature_dim``-unit linear layer whose outputs, before their
    ReLU, are the features, then ReLU and a linear layer to ``num_classes`` logits.
    Pre-activations keep the feature covariance full rank (after the ReLU, units that
    never fire would make it singular). Inputs are images (B, 1, 28, 28) in [0, 1]; they
    are centred inside the network.
    """

    def __init__(self, num_classes: int = 10, feature_dim: int = 128, width: int = 16):
        super().__init__()
        self.config = {
            "num_classes": num_classes,
            "feature_dim": feature_dim,
            "width": width,
        }
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1),
            nn.ReLU(),  # 28 -> 14
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.ReLU(),  # 14 -> 7
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),  # 7 -> 4
            nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 28, 28) in [0, 1] -> penultimate pre-activations (B,
        feature_dim)."""
        return self.body((x - 0.5) / 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 28, 28) in [0, 1] -> class logits (B, num_classes)."""
        return self.head(F.relu(self.features(x)))


def domain_checkpoint_path(dataset: str = "mnist") -> Path:
    """Where the shipped classifier for ``dataset`` lives:
    ``betavae_lib/assets/domain_classifier_<name>.pt``."""
    return ASSETS_DIR / f"domain_classifier_{_domain_name(dataset)}.pt"


def _domain_name(dataset: str) -> str:
    key = str(dataset).lower().replace("-", "_")
    if key not in DOMAIN_DATASETS:
        raise ValueError(
            f"no domain classifier for {dataset!r}; "
            f"valid are {', '.join(DOMAIN_DATASETS)} "
            f"(for dSprites or other images use features='inception')"
        )
    return key


def load_domain_classifier(
    dataset: str = "mnist", path: str | os.PathLike | None = None
):
    """Load a domain classifier (read with ``weights_only=True``): returns
    ``(model, meta)`` in eval mode on the CPU. ``path`` defaults to the shipped
    checkpoint for ``dataset``; ``meta`` records the dataset, test accuracy, epochs,
    seed and training time."""
    path = Path(path) if path is not None else domain_checkpoint_path(dataset)
    if not path.is_file():
        raise FileNotFoundError(
            f"no domain classifier checkpoint at {path}; train one with "
            f"betavae_lib.fid.train_domain_classifier({dataset!r}, save_to=...)"
        )
    ckpt = read_safely(path, (DOMAIN_FORMAT,), "domain classifier checkpoint")
    for key, kind in (("config", dict), ("state_dict", dict), ("meta", dict)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"{path}: {key} is missing or not a {kind.__name__}")
    model = build_model(DomainClassifier, ckpt["config"], ckpt["state_dict"], path)
    return model.eval(), dict(ckpt["meta"])


@torch.no_grad()
def classifier_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    """Fraction of ``images`` (N, 1, 28, 28) whose argmax logit equals ``labels``
    (N,)."""
    batch_size = positive_int("batch_size", batch_size)
    model.eval()
    device = model_device(model)
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size].to(device))
        correct += int(
            (logits.argmax(1).cpu() == labels[start : start + batch_size]).sum()
        )
    if len(images) == 0:
        raise ValueError("classifier_accuracy needs at least one image, got 0")
    return correct / len(images)


def train_domain_classifier(
    dataset: str = "mnist",
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    device=None,
    train_size: int | None = None,
    test_size: int | None = None,
    save_to: str | os.PathLike | None = None,
    verbose: bool = True,
):
    """Train a :class:`DomainClassifier` on a dataset's train split; returns
    ``(model, meta)``.

    dataset: ``"mnist"`` or ``"fashion_mnist"``. Adam with a cosine-decayed learning
    rate, seeded (``seed``); ``train_size`` and ``test_size`` limit the images used
    (None: all 60,000 and 10,000). ``meta`` holds the test-split accuracy. ``save_to``:
    also write a checkpoint that :func:`load_domain_classifier` reads.
    """
    name = _domain_name(dataset)
    epochs, batch_size = (
        positive_int("epochs", epochs),
        positive_int("batch_size", batch_size),
    )
    device = _device_or_auto(device)
    train = load_dataset(name, "train", root).subset(train_size, seed=seed)
    test = load_dataset(name, "test", root).subset(test_size, seed=seed)
    torch.manual_seed(seed)
    model = DomainClassifier(num_classes=len(train.label_names)).to(device)
    steps_per_epoch = -(-len(train) // batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * steps_per_epoch
    )
    images, labels = train.images.to(device), train.labels.to(device)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        if verbose:
            print(
                f"epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.4f}, "
                f"{time.perf_counter() - start:.0f} s"
            )
    seconds = time.perf_counter() - start
    accuracy = classifier_accuracy(model, test.images, test.labels)
    model = model.cpu().eval()
    meta = {
        "dataset": name,
        "test_accuracy": accuracy,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "train_size": len(train),
        "test_size": len(test),
        "train_seconds": round(seconds, 1),
        "torch_version": str(torch.__version__),
    }
    if verbose:
        print(
            f"{name}: test accuracy {accuracy:.4f} "
            f"after {epochs} epochs ({seconds:.0f} s)"
        )
    if save_to is not None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_torch_save(
            {
                "format": DOMAIN_FORMAT,
                "config": model.config,
                "state_dict": state,
                "meta": meta,
            },
            save_to,
        )
    return model, meta

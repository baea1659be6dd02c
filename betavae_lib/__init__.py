"""betavae_lib: the library behind the β-VAE book.

Modules: ``data`` (datasets), ``models`` (MLPVAE, ConvVAE), ``losses`` (the β-VAE
objective), ``objective`` (its variants as one family), ``schedules`` (annealing),
``train`` (the one training loop), ``ensemble`` (many models trained as one), ``cache``
(the model cache and ``train_grid``), ``checkpoints`` (model files and training states),
``metrics`` (disentanglement, active units, IWAE), ``fid`` (Fréchet distances and their
feature extractors), ``linear_gaussian`` (an exact model to check the ELBO against),
``traversal`` (latent traversals), ``explorer`` (the latent explorer widget, decoding
in the browser), ``jsdecoder`` (decoders serialised for the browser), ``plots``,
``report`` (headline numbers), ``profile`` (the BETAVAE_PROFILE switch), ``sweep``
(grids of runs, here or on a Ray cluster).

Convention: losses are in nats, summed over pixels and latents, averaged over the batch;
β multiplies that summed KL.
"""

from ._common import pick_device, seed_everything
from ._version import __version__ as __version__
from .cache import train_grid
from .checkpoints import CheckpointError, load, save
from .data import load_dataset
from .ensemble import fit_ensemble
from .losses import beta_vae_loss, gaussian_kl
from .models import MLPVAE, ConvVAE
from .objective import Objective
from .profile import get_profile, start_chapter
from .train import History, NonFiniteLossError, NonFiniteWeightsError, evaluate, fit

__all__ = [
    "CheckpointError",
    "ConvVAE",
    "History",
    "MLPVAE",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "Objective",
    "beta_vae_loss",
    "evaluate",
    "fit",
    "fit_ensemble",
    "gaussian_kl",
    "get_profile",
    "load",
    "load_dataset",
    "pick_device",
    "save",
    "seed_everything",
    "start_chapter",
    "train_grid",
]

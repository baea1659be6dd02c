"""betavae_lib: the library behind the β-VAE book.

Which module to open for what:

- the data: ``data`` (datasets, ``load_dataset``), ``dsprites`` (``DSprites`` and its
  procedural renderer);
- the models: ``models`` (``MLPVAE``, ``ConvVAE``);
- the loss: ``losses`` (the math: ``gaussian_kl``, the likelihoods, the β-TCVAE
  decomposition, ``beta_vae_loss``, ``objective_loss``), ``objective`` (``Objective``:
  β-VAE, free bits, capacity and β-TCVAE as coefficients of one objective),
  ``schedules`` (KL annealing);
- training one model: ``train`` (``fit``, the one training loop), ``evaluation``
  (``evaluate``: the negative ELBO on held-out images), ``resume`` (the training state
  ``fit`` saves and resumes from bit for bit);
- training many: ``ensemble`` (``fit_ensemble``, K models trained as one),
  ``ensemble_step`` (its batched training step), ``stacked`` (``VAEEnsemble``, the K
  models as one batched network), ``cache`` (the model cache and ``train_grid``),
  ``sweep`` (grids of runs, here or on a Ray cluster; a package of its parts);
- files: ``checkpoints`` (``save``, ``load``);
- measuring: ``metrics`` (disentanglement, active units, IWAE; every metric is
  importable from it), ``mutual_info`` (MIG and its bootstrap interval),
  ``factor_scores`` (the FactorVAE and β-VAE scores), ``fid`` (Fréchet
  distances and their feature extractors), ``domain_classifier`` (the small CNN behind
  the book's in-domain FID), ``linear_gaussian`` (an exact model to
  check the ELBO against);
- looking: ``traversal`` (latent traversals), ``explorer`` (the latent explorer widget,
  decoding in the browser), ``jsdecoder`` (decoders serialised for the browser),
  ``plots``, ``report`` (headline numbers), ``profile`` (the BETAVAE_PROFILE switch).

Private modules hold what several of these share: ``_common`` (argument checks,
devices, seeds, atomic files; it imports nothing of the library), ``_training`` (what
``fit`` and ``fit_ensemble`` share), ``_latents`` (what traversals and the explorer
share), ``_version``. No module imports one that imports it back
(``tests/test_import_graph.py``).

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

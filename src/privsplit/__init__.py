"""privsplit: privacy-preserving split inference.

Train an *obfuscator* (the front of a network plus an information-reduction
chain) that runs on the client, and a *task network* that runs on the server;
only the anonymised representation ``z`` leaves the client.

Example:
    >>> import privsplit
    >>> cfg = privsplit.apply_overrides(privsplit.Config(), ["train.epochs=1"])
    >>> metrics = privsplit.train(cfg, "runs/demo")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .config import AdversaryConfig, Config, HeadConfig, ModelConfig, apply_overrides, load_config
from .data import DATASETS, DataConfig, load_dataset
from .errors import CheckpointError, ConfigError, DataError, PrivsplitError
from .methods import METHODS, SplitModel, build_method
from .models import BACKBONES, build_backbone, representation_shape, split_backbone, split_points
from .obfuscator import ClientPart, Obfuscator
from .reduction import OPS, Reduction
from .run import Run, load_run
from .train import TrainConfig
from .train.engine import Trainer, train

__all__ = [
    "AdversaryConfig",
    "BACKBONES",
    "CheckpointError",
    "Client",
    "ClientPart",
    "Config",
    "ConfigError",
    "DATASETS",
    "DataConfig",
    "DataError",
    "HeadConfig",
    "METHODS",
    "ModelConfig",
    "OPS",
    "Obfuscator",
    "PrivsplitError",
    "Reduction",
    "Run",
    "SplitModel",
    "TrainConfig",
    "Trainer",
    "apply_overrides",
    "build_backbone",
    "build_method",
    "load_config",
    "load_dataset",
    "load_run",
    "representation_shape",
    "split_backbone",
    "split_points",
    "train",
]


def __getattr__(name: str):  # noqa: ANN202 - the deployment client loads on first use
    if name == "Client":
        from .serve.client import Client

        return Client
    raise AttributeError(f"module 'privsplit' has no attribute {name!r}")

"""privsplit: privacy-preserving split inference.

Train an *obfuscator* (the front of a network plus an information-reduction
chain) that runs on the client, and a *task network* that runs on the server;
only the anonymised representation ``z`` leaves the client.

Example:
    >>> import privsplit
    >>> cfg = privsplit.apply_overrides(privsplit.Config(), ["train.epochs=1"])
    >>> metrics = privsplit.train(cfg, "runs/demo")  # doctest: +SKIP
    >>> results = privsplit.evaluate_run("runs/demo")  # doctest: +SKIP

``__all__`` is the public API: configuration, data, methods, training,
loading a run, evaluation, export, the server application and the client.
"""

__version__ = "0.1.0"

from .config import AdversaryConfig, Config, HeadConfig, ModelConfig, apply_overrides, load_config
from .data import DATASETS, DataConfig, load_dataset
from .data.base import LabeledImages, TaskInfo
from .errors import CheckpointError, ConfigError, DataError, PrivsplitError
from .methods import METHODS, SplitModel, build_method
from .models import BACKBONES, build_backbone, representation_shape, split_backbone, split_points
from .obfuscator import ClientPart, Obfuscator
from .reduction import OPS, Reduction
from .run import Run, load_run
from .train import TrainConfig
from .train.engine import Trainer, train

# Loaded on first use: each needs an optional extra or imports more than training does.
_LAZY = {
    "AttackOptions": ".attacks",
    "EvalOptions": ".evaluate",
    "evaluate_run": ".evaluate",
    "evaluate_runs": ".evaluate",
    "export_obfuscator": ".export",
    "create_app": ".serve.server",
    "BackgroundServer": ".serve.server",
    "Client": ".serve.client",
}

__all__ = [
    "AdversaryConfig",
    "AttackOptions",
    "BACKBONES",
    "BackgroundServer",
    "CheckpointError",
    "Client",
    "ClientPart",
    "Config",
    "ConfigError",
    "DATASETS",
    "DataConfig",
    "DataError",
    "EvalOptions",
    "HeadConfig",
    "LabeledImages",
    "METHODS",
    "ModelConfig",
    "OPS",
    "Obfuscator",
    "PrivsplitError",
    "Reduction",
    "Run",
    "SplitModel",
    "TaskInfo",
    "TrainConfig",
    "Trainer",
    "apply_overrides",
    "build_backbone",
    "build_method",
    "create_app",
    "evaluate_run",
    "evaluate_runs",
    "export_obfuscator",
    "load_config",
    "load_dataset",
    "load_run",
    "representation_shape",
    "split_backbone",
    "split_points",
    "train",
]


def __getattr__(name: str):  # noqa: ANN202
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'privsplit' has no attribute {name!r}")

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
loading a run, evaluation, export, the benchmark, training-curve loggers, the
server application, the client and its device key, and the plug-in points: a new
method (``Method``, ``METHODS``), reduction op (``ReductionOp``, ``OPS``), attack
(``Attack``, ``AttackResult``, ``ATTACKS``) or training callback (``Callback``).
Each name is imported on first use (PEP 562), so ``import privsplit`` and the
command line's ``--help`` do not import torch.
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys
import types as _types

from .errors import CheckpointError, ConfigError, DataError, PrivsplitError

__version__ = "0.1.0"

# Public name -> the module that defines it; imported on first use.
_LAZY = {
    **dict.fromkeys(["AdversaryConfig", "Config", "HeadConfig", "ModelConfig", "apply_overrides", "load_config"],
                    ".config"),
    **dict.fromkeys(["DATASETS", "DataConfig", "load_dataset"], ".data"),
    **dict.fromkeys(["LabeledImages", "TaskInfo"], ".data.base"),
    **dict.fromkeys(["METHODS", "SplitModel", "build_method"], ".methods"),
    "Method": ".methods.base",
    **dict.fromkeys(["BACKBONES", "build_backbone", "representation_shape", "split_backbone", "split_points"],
                    ".models"),
    **dict.fromkeys(["ClientPart", "Obfuscator"], ".obfuscator"),
    **dict.fromkeys(["OPS", "Reduction"], ".reduction"),
    "ReductionOp": ".reduction.base",
    **dict.fromkeys(["Run", "load_run"], ".run"),
    "RunDir": ".rundir",
    "TrainConfig": ".train",
    **dict.fromkeys(["Callback", "Context", "Trainer", "train"], ".train.engine"),
    **dict.fromkeys(["ATTACKS", "Attack", "AttackOptions", "EvalData"], ".attacks"),
    "AttackResult": ".attacks.result",
    **dict.fromkeys(["EvalOptions", "evaluate_run", "evaluate_runs"], ".evaluate"),
    "export_obfuscator": ".export",
    **dict.fromkeys(["create_app", "BackgroundServer"], ".serve.server"),
    "Client": ".serve.client",
    **dict.fromkeys(["BUDGETS", "run_benchmark"], ".benchmark"),
    **dict.fromkeys(["CSVLogger", "TensorBoardLogger"], ".loggers"),
    "create_key": "privsplit_edge.keyed",  # privsplit keygen FILE (the torch-free client's module)
}

__all__ = [
    "ATTACKS",
    "AdversaryConfig",
    "Attack",
    "AttackOptions",
    "AttackResult",
    "BACKBONES",
    "BUDGETS",
    "BackgroundServer",
    "CSVLogger",
    "Callback",
    "CheckpointError",
    "Client",
    "ClientPart",
    "Config",
    "ConfigError",
    "Context",
    "DATASETS",
    "DataConfig",
    "DataError",
    "EvalData",
    "EvalOptions",
    "HeadConfig",
    "LabeledImages",
    "METHODS",
    "Method",
    "ModelConfig",
    "OPS",
    "Obfuscator",
    "PrivsplitError",
    "Reduction",
    "ReductionOp",
    "Run",
    "RunDir",
    "SplitModel",
    "TaskInfo",
    "TensorBoardLogger",
    "TrainConfig",
    "Trainer",
    "apply_overrides",
    "build_backbone",
    "build_method",
    "create_app",
    "create_key",
    "evaluate_run",
    "evaluate_runs",
    "export_obfuscator",
    "load_config",
    "load_dataset",
    "load_run",
    "representation_shape",
    "run_benchmark",
    "split_backbone",
    "split_points",
    "train",
]


def __getattr__(name: str):  # noqa: ANN202
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'privsplit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """``privsplit.train`` is the function, as it was when this module imported
    it eagerly. The first import of the subpackage ``privsplit.train`` (by
    ``privsplit.train.engine``, say) would bind the subpackage to that name;
    here that binding is skipped, and the name resolves to the function on use."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "train" and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

"""Load a finished run folder: its config, label names and trained weights.

``run.json`` records the SHA-256 of each weights file (``weights_sha256``);
every load checks it, so a changed file is a one-line error naming it. Run
folders written before digests were recorded load without that check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from .config import Config, load_config
from .data.base import TaskInfo
from .errors import CheckpointError
from .methods import SplitModel, build_method
from .rundir import PARTS, RunDir
from .weights import load_weights, read_weights

__all__ = ["PARTS", "Run", "check_model_given", "load_run", "read_run_record", "recorded_digest"]  # PARTS: re-exported, old imports name it here


@dataclass
class Run:
    """A trained run: ``model.obfuscator`` is the client part, ``model.heads`` the server part."""

    dir: Path
    config: Config
    info: TaskInfo
    model: SplitModel
    record: dict[str, Any]  # run.json


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a finished run, or a clear error if the run is not finished (:meth:`RunDir.read_record`)."""
    return RunDir(run_dir).read_record()


def recorded_digest(run_dir: str | Path, filename: str) -> str | None:
    """The SHA-256 ``run.json`` recorded for one of the run's weights files
    (None for a run folder written before digests were recorded)."""
    return (read_run_record(run_dir).get("weights_sha256") or {}).get(filename)


def load_run(run_dir: str | Path, parts: Iterable[str] = PARTS, device: str | torch.device = "cpu",
             model: SplitModel | None = None) -> Run:
    """Rebuild a finished run's model and load the weights of ``parts``.

    No data is needed: label names and image shape come from ``run.json``.
    ``model``: a :class:`~privsplit.methods.SplitModel` to load the weights into
    instead of building one from the config: a run trained on a user's own model
    parts (``Trainer(..., model=...)``) is loaded back with those parts, built as
    they were for training. Weights are checked either way (digests, every key
    and shape).

    Example:
        >>> run = load_run("runs/digits-ours-rn18_3-20260101-120000")  # doctest: +SKIP
        >>> z = run.model.obfuscator(images)                              # doctest: +SKIP
        >>> mine = load_run("runs/mine", model=SplitModel(MyClient(), {"task": my_head}, {"task": "utility"}))  # doctest: +SKIP
    """
    rd = RunDir(run_dir)
    record = rd.read_record()
    config = load_config(rd.config)
    task = record["task"]
    info = TaskInfo(task["dataset"], task["labels"], tuple(task["image_shape"]))
    check_model_given(record, rd, model)
    if model is None:
        model = build_method(config).build(info)
    digests = record.get("weights_sha256") or {}
    for part in parts:
        path = rd.weights(part)  # a ValueError for an unknown part
        module = getattr(model, part)
        if part == "adversaries" and len(module) == 0:
            continue
        load_weights(module, read_weights(path, digests.get(path.name)), str(path))
    return Run(rd.path, config, info, model.to(device).eval(), record)


def check_model_given(record: dict[str, Any], rd: RunDir, model: Any) -> None:
    """A one-line error for a model that is no SplitModel, or for a run trained on
    a user's own model parts (``run.json``'s ``user_model``) loaded without them."""
    if model is not None and not isinstance(model, SplitModel):
        raise TypeError(f"model must be a privsplit SplitModel (obfuscator, heads, head targets), "
                        f"not {type(model).__name__}")
    if model is None and record.get("user_model"):
        raise CheckpointError(
            f"{rd} was trained on your own model parts ({record['user_model']}), which its config cannot rebuild: "
            "pass them, e.g. load_run(run_dir, model=SplitModel(...)) or EvalOptions(model=...)"
        )

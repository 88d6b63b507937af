"""Load a finished run folder: its config, label names and trained weights.

``run.json`` records the SHA-256 of each weights file (``weights_sha256``);
every load checks it, so a changed file is a one-line error naming it. Run
folders written before digests were recorded load without that check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from .config import Config, load_config
from .data.base import TaskInfo
from .errors import CheckpointError
from .methods import SplitModel, build_method
from .train.checkpoint import load_weights, read_weights

PARTS = ("obfuscator", "heads", "adversaries")


@dataclass
class Run:
    """A trained run: ``model.obfuscator`` is the client part, ``model.heads`` the server part."""

    dir: Path
    config: Config
    info: TaskInfo
    model: SplitModel
    record: dict[str, Any]  # run.json


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a finished run, or a clear error if the run is not finished."""
    rd = Path(run_dir)
    if not (rd / "config.yaml").is_file():
        raise CheckpointError(f"{rd} is not a privsplit run folder (no config.yaml)")
    path = rd / "run.json"
    if not path.is_file():
        raise CheckpointError(
            f"{rd} has no finished training (no run.json): finish it with `privsplit train --resume {rd}`"
        )
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("status") != "finished":
        status = record.get("status") if isinstance(record, dict) else None
        raise CheckpointError(f"{rd} did not finish training (status {status!r})")
    digests = record.get("weights_sha256")
    if digests is not None and not (isinstance(digests, dict) and all(isinstance(v, str) for v in digests.values())):
        raise CheckpointError(f"{path} is corrupt (weights_sha256 is not a map of file names to digests); "
                              "restore it or train again")
    return record


def recorded_digest(run_dir: str | Path, filename: str) -> str | None:
    """The SHA-256 ``run.json`` recorded for one of the run's weights files
    (None for a run folder written before digests were recorded)."""
    return (read_run_record(run_dir).get("weights_sha256") or {}).get(filename)


def load_run(run_dir: str | Path, parts: Iterable[str] = PARTS, device: str | torch.device = "cpu") -> Run:
    """Rebuild a finished run's model and load the weights of ``parts``.

    No data is needed: label names and image shape come from ``run.json``.

    Example:
        >>> run = load_run("runs/digits-ours-rn18_3-20260101-120000")  # doctest: +SKIP
        >>> z = run.model.obfuscator(images)                              # doctest: +SKIP
    """
    rd = Path(run_dir)
    record = read_run_record(rd)
    config = load_config(rd / "config.yaml")
    task = record["task"]
    info = TaskInfo(task["dataset"], task["labels"], tuple(task["image_shape"]))
    model = build_method(config).build(info)
    for part in parts:
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; valid: {', '.join(PARTS)}")
        module = getattr(model, part)
        if part == "adversaries" and len(module) == 0:
            continue
        path = rd / f"{part}.safetensors"
        load_weights(module, read_weights(path, (record.get("weights_sha256") or {}).get(path.name)), str(path))
    return Run(rd, config, info, model.to(device).eval(), record)

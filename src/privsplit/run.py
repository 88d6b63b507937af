"""Load a finished run folder: its config, label names and trained weights."""

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
    if record.get("status") != "finished":
        raise CheckpointError(f"{rd} did not finish training (status {record.get('status')!r})")
    return record


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
        load_weights(module, read_weights(rd / f"{part}.safetensors"), str(rd / f"{part}.safetensors"))
    return Run(rd, config, info, model.to(device).eval(), record)

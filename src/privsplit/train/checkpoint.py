"""Checkpoints: safetensors weights plus JSON metadata, never pickles.

A checkpoint is a folder ``checkpoints/epoch-NNNN/`` holding
``model.safetensors``, ``optim.safetensors`` and ``meta.json``. It is written
under a temporary name and renamed into place, so a folder with the final
name is always complete: a run killed while saving leaves nothing that
``--resume`` would trust.

Every weights file's SHA-256 is recorded where it is described (``meta.json``
for a checkpoint's files, ``run.json`` for a run's, the export manifest for an
export) and checked when it is read: a flipped bit is an error naming the
file, never a silently different model. Every write that fails (disk full,
no permission, read-only file system) is a one-line :class:`CheckpointError`
naming the path and the last good checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privsplit_edge.protocol import file_digest  # noqa: F401  (re-exported: one digest for run.json, meta.json, the manifest and the edge client)

from ..errors import CheckpointError
from ..rundir import RunDir
from ..rundir import append_line, last_good, write_json, write_text, writing  # re-exported: old imports name them here
from ..tensors import state_mismatch  # re-exported: old imports name it here
from ..weights import check_digest, load_weights, read_weights, save_weights  # re-exported: old imports name them here

FORMAT = "privsplit-checkpoint"
VERSION = 1


def _optimizer_tensors(opts: dict[str, torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    groups: dict[str, Any] = {}
    for name, opt in opts.items():
        sd = opt.state_dict()
        for idx, st in sd["state"].items():
            for key, value in st.items():
                tensors[f"{name}/{idx}/{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        groups[name] = sd["param_groups"]
    return tensors, groups


def _restore_optimizers(opts: dict[str, torch.optim.Optimizer], tensors: dict[str, torch.Tensor], groups: dict[str, Any]) -> None:
    states: dict[str, dict[int, dict[str, torch.Tensor]]] = defaultdict(lambda: defaultdict(dict))
    for key, value in tensors.items():
        name, idx, field = (key.split("/") + ["", "", ""])[:3]
        if not idx.isdigit():
            raise CheckpointError(f"optimiser state has an unexpected entry {key!r}: not a privsplit checkpoint")
        states[name][int(idx)][field] = value
    for name, opt in opts.items():
        if name not in groups:
            raise CheckpointError(f"checkpoint has no state for optimiser {name!r}")
        try:
            opt.load_state_dict({"state": dict(states[name]), "param_groups": groups[name]})
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise CheckpointError(f"optimiser state for {name!r} does not match this model ({e})") from None


def save_checkpoint(path: Path, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer], meta: dict[str, Any]) -> None:
    """Write a complete checkpoint folder at ``path`` atomically, the digests of
    its weights files in ``meta.json``."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        with writing(path):
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        digests = {"model.safetensors": save_weights(tmp / "model.safetensors", model)}
        tensors, groups = _optimizer_tensors(optimizers)
        digests["optim.safetensors"] = save_weights(tmp / "optim.safetensors", tensors)
        write_json(tmp / "meta.json", {"format": FORMAT, "version": VERSION, "optimizer_groups": groups,
                                       "sha256": digests, **meta})
        with writing(path):
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    except CheckpointError as e:  # name the checkpoint being written, not its temporary folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(str(e).replace(str(tmp), str(path))) from None


def load_checkpoint(path: Path, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer] | None = None) -> dict[str, Any]:
    """Restore ``model`` (and ``optimizers``) from a checkpoint folder; returns its metadata."""
    meta = read_meta(path)
    digests = meta.get("sha256") or {}
    weights = path / "model.safetensors"
    load_weights(model, read_weights(weights, digests.get(weights.name)), str(weights))
    if optimizers:
        optim = path / "optim.safetensors"
        _restore_optimizers(optimizers, read_weights(optim, digests.get(optim.name)), meta["optimizer_groups"])
    return meta


def read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` of a checkpoint folder, checked: a corrupt one is a
    :class:`CheckpointError`, never a half-restored model."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, or not JSON
        raise CheckpointError(f"{path} is not a privsplit checkpoint: cannot read meta.json ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a privsplit checkpoint (meta.json has no format {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {meta.get('version')!r}, this privsplit reads {VERSION}")
    epoch, groups = meta.get("epoch"), meta.get("optimizer_groups")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1 or not isinstance(groups, dict):
        raise CheckpointError(
            f"{path}/meta.json is corrupt (epoch {epoch!r}, optimizer_groups of type {type(groups).__name__}); "
            "delete this checkpoint folder to resume from the one before it"
        )
    # The epoch is stated three times: by the folder's name, by meta.json and
    # (as the most epochs the run could reach) by the config saved with it.
    named = folder_epoch(path)
    planned = (meta.get("config") or {}).get("train", {}).get("epochs") if isinstance(meta.get("config"), dict) else None
    if (named is not None and epoch != named) or (isinstance(planned, int) and epoch > planned):
        raise CheckpointError(
            f"{path}/meta.json says epoch {epoch}, but the folder is {path.name}"
            + (f" of a run planned for {planned} epoch(s)" if isinstance(planned, int) else "")
            + ": it was edited or damaged; delete this checkpoint folder to resume from the one before it"
        )
    digests = meta.get("sha256")
    if digests is not None and not (isinstance(digests, dict) and all(isinstance(v, str) for v in digests.values())):
        raise CheckpointError(f"{path}/meta.json is corrupt (sha256 is not a map of file names to digests); "
                              "delete this checkpoint folder to resume from the one before it")
    return meta


def folder_epoch(path: Path) -> int | None:
    """The epoch in a checkpoint folder's name (``epoch-0005`` -> 5); None for another name."""
    digits = path.name.removeprefix("epoch-")
    return int(digits) if path.name.startswith("epoch-") and digits.isdigit() else None


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (:meth:`RunDir.checkpoint_dirs`)."""
    return RunDir(run_dir).checkpoint_dirs()


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for old in checkpoint_dirs(run_dir)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)

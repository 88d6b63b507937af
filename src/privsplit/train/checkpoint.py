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

import hashlib
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from privsplit_edge.protocol import file_digest  # one digest for run.json, meta.json, the manifest and the edge client

from ..errors import CheckpointError
from ..rundir import RunDir, tmp_path
from ..rundir import append_line, last_good, write_json, write_text, writing  # re-exported: old imports name them here
from ..tensors import state_mismatch  # re-exported: old imports name it here

FORMAT = "privsplit-checkpoint"
VERSION = 1


def check_digest(path: Path, expected: str | None) -> None:
    """Raise :class:`CheckpointError` unless ``path`` hashes to ``expected``
    (None: nothing was recorded, as in folders written before digests were)."""
    if expected is None:
        return
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    actual = file_digest(path)
    if not isinstance(expected, str) or actual != expected:
        raise CheckpointError(
            f"{path} is damaged or was replaced: its SHA-256 is {actual.removeprefix('sha256:')[:16]}..., the one "
            f"recorded when it was written is {str(expected).removeprefix('sha256:')[:16]}...; restore it or train again"
        )


def save_weights(path: Path, module: nn.Module | dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write safetensors weights atomically; returns the file's digest (:func:`file_digest`)."""
    state = module.state_dict() if isinstance(module, nn.Module) else module
    tmp = tmp_path(path)
    with writing(path):
        try:
            # Serialised in memory and written here, so every write error is an OSError of this path.
            data = save({k: v.detach().contiguous().cpu() for k, v in state.items()}, metadata=metadata)
            with open(tmp, "wb") as f:
                f.write(data)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return digest


def read_weights(path: Path, digest: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, with a clear error if it is missing, not
    safetensors, or (given the ``digest`` recorded when it was written) changed."""
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    check_digest(path, digest)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load ``tensors`` into ``module``, strictly: every key and shape must match."""
    problem = state_mismatch(module.state_dict(), tensors)
    if problem:
        raise CheckpointError(
            f"{source} does not match this model ({problem}): it was saved by a different "
            "configuration or is not a privsplit checkpoint"
        )
    module.load_state_dict(tensors)


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

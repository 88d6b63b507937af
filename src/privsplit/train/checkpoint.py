"""Checkpoints: safetensors weights plus JSON metadata, never pickles.

A checkpoint is a folder ``checkpoints/epoch-NNNN/`` holding
``model.safetensors``, ``optim.safetensors`` and ``meta.json``. It is written
under a temporary name and renamed into place, so a folder with the final
name is always complete: a run killed while saving leaves nothing that
``--resume`` would trust.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError

FORMAT = "privsplit-checkpoint"
VERSION = 1


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_weights(path: Path, module: nn.Module | dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    state = module.state_dict() if isinstance(module, nn.Module) else module
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, with a clear error if it is missing or not safetensors."""
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None


def state_mismatch(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> str | None:
    """Why ``tensors`` cannot be loaded into a module whose state dict is
    ``own`` (missing, unexpected or reshaped keys), or None if it can."""
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if tuple(own[k].shape) != tuple(tensors[k].shape))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} with other shapes (e.g. {k}: {tuple(tensors[k].shape)} vs {tuple(own[k].shape)})")
    return "; ".join(parts) or None


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
    """Write a complete checkpoint folder at ``path`` atomically."""
    tmp = path.with_name(f".tmp-{path.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_weights(tmp / "model.safetensors", model)
    tensors, groups = _optimizer_tensors(optimizers)
    save_weights(tmp / "optim.safetensors", tensors)
    write_json(tmp / "meta.json", {"format": FORMAT, "version": VERSION, "optimizer_groups": groups, **meta})
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer] | None = None) -> dict[str, Any]:
    """Restore ``model`` (and ``optimizers``) from a checkpoint folder; returns its metadata."""
    meta = read_meta(path)
    load_weights(model, read_weights(path / "model.safetensors"), str(path / "model.safetensors"))
    if optimizers:
        _restore_optimizers(optimizers, read_weights(path / "optim.safetensors"), meta["optimizer_groups"])
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
    return meta


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("epoch-"))


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for old in checkpoint_dirs(run_dir)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)

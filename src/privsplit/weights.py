"""Weights files: safetensors written atomically with their SHA-256, read back
checked against the digest recorded when they were written, and loaded strictly
(every key and shape must match). Below everything that stores or loads a model:
training's checkpoints, a run's parts, the server's heads, export."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from privsplit_edge.protocol import file_digest  # one digest for run.json, meta.json, the manifest and the edge client

from .errors import CheckpointError
from .rundir import tmp_path, writing
from .tensors import state_mismatch


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


__all__ = ["check_digest", "save_weights", "read_weights", "load_weights", "file_digest"]

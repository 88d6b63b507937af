"""Helpers below every layer that runs a model (training, evaluation, metrics): batches of a
data set, the device a setting names, why a state dict does not fit a module."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset

from .data.base import LabeledImages
from .errors import ConfigError

Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


def batches(ds: Dataset, indices: torch.Tensor, batch_size: int, num_workers: int = 0) -> Iterator[Batch]:
    """Batches of ``ds`` in the order of ``indices``; decoded in-memory images
    are gathered directly, anything else (files, a user's own map-style
    dataset yielding ``(image, labels)``) goes through a DataLoader."""
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    if isinstance(ds, LabeledImages) and ds.images is not None:
        for idx in chunks:
            yield ds.images[idx].float().div_(255), {k: v[idx] for k, v in ds.labels.items()}
        return
    loader = torch.utils.data.DataLoader(ds, batch_sampler=[c.tolist() for c in chunks], num_workers=num_workers)
    yield from loader


def dataset_labels(ds: Dataset) -> dict[str, torch.Tensor]:
    """Every label of a data set, by target (read from the samples unless it is a :class:`LabeledImages`)."""
    if isinstance(ds, LabeledImages):
        return ds.labels
    rows = [labels for _, labels in (ds[i] for i in range(len(ds)))]  # type: ignore[arg-type]
    return {t: torch.as_tensor([int(r[t]) for r in rows]) for t in rows[0]} if rows else {}


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if present, else CPU), ``cpu`` or ``cuda[:N]`` as a device; CUDA must be present."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available here; use train.device=cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


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

"""Batches of a data set for training and evaluation."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset

from ..data.base import LabeledImages

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

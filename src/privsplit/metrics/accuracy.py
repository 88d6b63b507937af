"""Classification accuracy and its chance level."""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Share of rows of ``logits`` (N, K) whose argmax equals ``target`` (N,)."""
    if len(target) == 0:
        return float("nan")
    return float((logits.argmax(1) == target).float().mean())


@torch.no_grad()
def model_accuracy(model: torch.nn.Module, z: torch.Tensor, target: torch.Tensor, batch_size: int = 512) -> float:
    """Test accuracy of classifier ``model`` (put in eval mode) on ``z`` (N, ...), in batches."""
    model.eval()
    hits = sum(
        int((model(z[i : i + batch_size]).argmax(1) == target[i : i + batch_size]).sum())
        for i in range(0, len(z), batch_size)
    )
    return hits / max(len(z), 1)


def chance_level(labels: torch.Tensor) -> float:
    """Accuracy of always answering the most common class of ``labels``."""
    if len(labels) == 0:
        return float("nan")
    return float(torch.bincount(labels).max()) / len(labels)

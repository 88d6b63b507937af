"""Classification accuracy and its chance level."""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Share of rows of ``logits`` (N, K) whose argmax equals ``target`` (N,)."""
    if len(target) == 0:
        return float("nan")
    return float((logits.argmax(1) == target).float().mean())


def chance_level(labels: torch.Tensor) -> float:
    """Accuracy of always answering the most common class of ``labels``."""
    if len(labels) == 0:
        return float("nan")
    return float(torch.bincount(labels).max()) / len(labels)

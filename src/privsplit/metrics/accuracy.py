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


def chance_given(labels: torch.Tensor, known: torch.Tensor) -> float:
    """Accuracy of an attacker who knows ``known`` (e.g. the utility label)
    exactly and nothing else: within each value of ``known`` it answers the
    most common class of ``labels``.

    An attacker reads about this much from any ``z`` that serves the task
    well: on CIFAR-10, knowing living (6 classes) vs non-living (4) alone
    gives 20%.

    Example:
        >>> chance_given(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 0, 1]))
        0.75
    """
    if len(labels) == 0:
        return float("nan")
    return sum(float(torch.bincount(labels[known == v]).max()) for v in known.unique()) / len(labels)

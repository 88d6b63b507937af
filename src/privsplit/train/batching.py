"""Batches of a data set for training and evaluation (they live in :mod:`privsplit.tensors`,
below evaluation and metrics too; this name keeps old imports working)."""

from ..tensors import Batch, batches, dataset_labels

__all__ = ["Batch", "batches", "dataset_labels"]

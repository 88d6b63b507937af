"""Datasets and their (utility, private) task definitions."""

from .base import DATASETS, DataConfig, LabeledImages, TaskInfo, load_dataset
from . import celeba, cifar10, digits, fairface, utkface  # noqa: F401  (registers them)

__all__ = ["DATASETS", "DataConfig", "LabeledImages", "TaskInfo", "load_dataset"]

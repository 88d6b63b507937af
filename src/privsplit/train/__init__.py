"""The training engine (``privsplit.train.engine``), its settings and checkpoints."""

from .config import TrainConfig

__all__ = ["TrainConfig"]

"""Training settings."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..checks import check_fields, setting
from ..errors import ConfigError

DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,2})?")


@dataclass
class TrainConfig:
    """How to train.

    Attributes:
        epochs: passes over the training split.
        batch_size: images per step (per process under torchrun).
        lr_obfuscator, lr_head, lr_adversary: Adam learning rates of the three optimisers.
        lr_schedule: "cosine" decays every rate to 0 over the epochs; "constant" keeps it.
        lam: weight of the adversary term in the obfuscator's loss
            (task - lam * adversary); 0 = task loss only.
        adversary_steps: optimisation steps of the proxy adversaries per
            obfuscator step (on the same batch): a proxy that keeps up is harder
            to fool.
        seed: seeds weights, data order and the random reduction ops.
        flip: random horizontal flips of training images.
        device: "auto" (CUDA if present, else CPU), "cpu" or "cuda[:N]".
        keep_checkpoints: how many epoch checkpoints to keep (the newest).
        threads: torch CPU threads; None = torch's default.

    Every value is checked when the config is built (a one-line
    :class:`~privsplit.errors.ConfigError` names the setting).
    """

    epochs: int = setting(10, ge=1, le=100_000)
    batch_size: int = setting(128, ge=2, le=65_536)  # batch norm needs 2
    lr_obfuscator: float = setting(1e-3, gt=0, le=10)
    lr_head: float = setting(1e-3, gt=0, le=10)
    lr_adversary: float = setting(1e-3, gt=0, le=10)
    lr_schedule: str = setting("cosine", choices=("cosine", "constant"))
    lam: float = setting(1e-2, ge=0)
    adversary_steps: int = setting(1, ge=1, le=100)
    seed: int = setting(0, ge=0, lt=2**63)
    flip: bool = True
    device: str = "auto"
    keep_checkpoints: int = setting(2, ge=1)
    threads: int | None = setting(None, ge=1, le=1024)

    def __post_init__(self) -> None:
        check_fields(self, "train")
        if not DEVICE.fullmatch(self.device):
            raise ConfigError(f"train.device must be auto, cpu or cuda[:N], got {self.device!r}")

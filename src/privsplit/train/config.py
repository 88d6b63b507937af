"""Training settings."""

from __future__ import annotations

from dataclasses import dataclass


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
        seed: seeds weights, data order and the random reduction ops.
        flip: random horizontal flips of training images.
        device: "auto" (CUDA if present, else CPU), "cpu" or "cuda[:N]".
        keep_checkpoints: how many epoch checkpoints to keep (the newest).
        threads: torch CPU threads; None = torch's default.
    """

    epochs: int = 10
    batch_size: int = 128
    lr_obfuscator: float = 1e-3
    lr_head: float = 1e-3
    lr_adversary: float = 1e-3
    lr_schedule: str = "cosine"
    lam: float = 1e-2
    seed: int = 0
    flip: bool = True
    device: str = "auto"
    keep_checkpoints: int = 2
    threads: int | None = None

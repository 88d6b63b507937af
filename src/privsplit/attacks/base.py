"""What every attack shares: the cached representations and the options."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from ..config import Config
from ..data.base import TaskInfo
from ..registry import Registry


@dataclass
class EvalData:
    """``z`` of both splits, computed once with the frozen obfuscator as deployed.

    Attributes:
        z_train, z_test: (N, *z_shape) float32 representations.
        y_train, y_test: target name -> (N,) labels.
        x_train, x_test: (N, 3, H, W) uint8 images, kept only when an attack needs them.
    """

    config: Config
    info: TaskInfo
    z_train: torch.Tensor
    z_test: torch.Tensor
    y_train: dict[str, torch.Tensor]
    y_test: dict[str, torch.Tensor]
    x_train: torch.Tensor | None = None
    x_test: torch.Tensor | None = None

    @property
    def z_shape(self) -> tuple[int, ...]:
        return tuple(self.z_train.shape[1:])


@dataclass
class AttackOptions:
    """How attackers are trained (Adam, lr 1e-3 as in the paper).

    Attributes:
        epochs: attacker training epochs over the cached ``z`` of the training split.
        batch_size: attacker batch size.
        lr: Adam learning rate.
        seed: seeds attacker initialisation and batch order.
        families: attribute attacker families to train (see ``attacks.FAMILIES``).
        target: label the attribute attack predicts.
        converge_margin: relative drop of the training loss in the last epoch
            (below the best of the earlier epochs) that flags an attacker as not converged.
        augment: randomly mirror spatial ``z`` left-right while training attribute
            attackers (features of a mirrored image are close to mirrored features).
        out_dir: where attacks write files (reconstruction grid).
        progress: show progress bars (None: only on a terminal).
        log: where progress lines go.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    families: tuple[str, ...] = ("head", "mlp")
    target: str = "private"
    converge_margin: float = 0.01
    augment: bool = False
    out_dir: Path | None = None
    progress: bool | None = None
    log: Callable[[str], None] = print
    extra: dict[str, Any] = field(default_factory=dict)


class Attack:
    """An attack on ``z``: ``run`` returns a JSON-ready dict of results."""

    name: ClassVar[str]
    needs_images: ClassVar[bool] = False

    def run(self, data: EvalData, options: AttackOptions) -> dict[str, Any]:
        raise NotImplementedError


ATTACKS: Registry[type[Attack]] = Registry("attack")


def fit_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    n: int,
    batch_size: int,
    gen: torch.Generator,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
) -> float:
    """One epoch over ``n`` cached samples in an order drawn from ``gen``;
    ``batch_loss(indices)`` gives each batch's loss. Returns the mean loss."""
    model.train()
    order = torch.randperm(n, generator=gen)
    if len(order) % batch_size == 1:
        order = order[:-1]  # a batch of one breaks batch norm
    total, count = 0.0, 0
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        loss = batch_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        count += len(idx)
    return total / max(count, 1)


def still_falling(losses: list[float], margin: float, fitted: float = 0.05) -> bool:
    """True when the last epoch's loss is still clearly (by the relative
    ``margin``) below every earlier epoch's: the attacker had not converged,
    and an under-trained attacker overstates privacy. A loss under ``fitted``
    means the training split is already fitted (more epochs only overfit).
    One epoch cannot show convergence, so it counts as falling."""
    if len(losses) < 2:
        return True
    if losses[-1] < fitted:
        return False
    return losses[-1] < min(losses[:-1]) * (1 - margin)


def attacker_converged(losses: list[float], test_acc: list[float], margin: float) -> bool:
    """An attacker counts as under-trained only when its training loss is still
    falling *and* its test accuracy peaked at the last epoch. A test accuracy
    that peaked earlier while the loss kept falling is overfitting: more epochs
    would not raise the best accuracy, which is what privacy reports."""
    peaked_last = max(range(len(test_acc)), key=test_acc.__getitem__) == len(test_acc) - 1
    return not (still_falling(losses, margin) and peaked_last)


def leak_threshold(chance: float, n: int) -> float:
    """Accuracy above which an attacker beats chance beyond sampling noise:
    chance + max(1 point, 3 standard errors of a chance-level classifier on n samples)."""
    se = math.sqrt(max(chance * (1 - chance), 1e-12) / max(n, 1))
    return chance + max(0.01, 3 * se)

"""Attribute inference: predict the private label from ``z``.

Several attacker families are trained (Adam, lr 1e-3) on ``z`` of the training
split and tested on ``z`` of the test split; privacy is the highest test
accuracy over epochs and families. ``head`` is a fresh copy of the backbone's
rest (the paper's attacker, and the proxy adversary's architecture); ``mlp``
is a different family: an MLP on spatially pooled ``z``.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..errors import ConfigError
from ..metrics.accuracy import chance_given, chance_level, model_accuracy
from .base import ATTACKS, Attack, AttackOptions, EvalData, attacker_converged, fit_epoch, leak_threshold


class PooledMLP(nn.Module):
    """MLP on ``z`` average-pooled to at most 4x4 positions: a family unlike the
    convolutional head the obfuscator was trained against."""

    def __init__(self, z_shape: tuple[int, ...], num_classes: int, hidden: int = 512) -> None:
        super().__init__()
        if len(z_shape) == 3:
            c, h, w = z_shape
            self.pool: nn.Module = nn.AdaptiveAvgPool2d((min(h, 4), min(w, 4)))
            n_in = c * min(h, 4) * min(w, 4)
        else:
            self.pool = nn.Identity()
            n_in = math.prod(z_shape)
        self.net = nn.Sequential(
            nn.Flatten(1),
            nn.LayerNorm(n_in),
            nn.Linear(n_in, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.pool(z))


def _head(data: EvalData, num_classes: int) -> nn.Module:
    # The method knows its server-side network: the backbone's rest for a cut,
    # a whole ResNet18 for image-level baselines.
    from ..methods import build_method

    return build_method(data.config).attacker_head(data.info, num_classes)


def _mlp(data: EvalData, num_classes: int) -> nn.Module:
    return PooledMLP(data.z_shape, num_classes)


# family name -> builder(data, num_classes)
FAMILIES: dict[str, Callable[[EvalData, int], nn.Module]] = {"head": _head, "mlp": _mlp}


def train_attacker(
    model: nn.Module,
    z_train: torch.Tensor,
    y_train: torch.Tensor,
    z_test: torch.Tensor,
    y_test: torch.Tensor,
    options: AttackOptions,
    desc: str = "attacker",
) -> dict[str, Any]:
    """Train a classifier on cached ``z`` and test it after every epoch.

    Returns per-epoch training loss and test accuracy, the best test accuracy
    and whether the training loss was still falling at the last epoch.
    """
    gen = torch.Generator().manual_seed(options.seed)
    model.to(z_train.device)  # attackers train where the cached z lives
    opt = torch.optim.Adam(model.parameters(), lr=options.lr)
    losses, accs = [], []
    bs = options.batch_size
    bar = tqdm(range(options.epochs), desc=desc, unit="epoch", leave=False, file=sys.stderr,
               disable=None if options.progress is None else not options.progress)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        z = z_train[idx]
        if options.augment and z.dim() == 4:
            flip = (torch.rand(len(z), generator=gen) < 0.5).to(z.device)
            z = torch.where(flip.view(-1, 1, 1, 1), z.flip(-1), z)
        return F.cross_entropy(model(z), y_train[idx])

    for _ in bar:
        losses.append(fit_epoch(model, opt, len(z_train), bs, gen, batch_loss))
        accs.append(model_accuracy(model, z_test, y_test, bs * 4))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{100 * accs[-1]:.1f}%")
    bar.close()
    best = max(range(len(accs)), key=accs.__getitem__)
    return {
        "train_loss": losses,
        "test_acc": accs,
        "best_acc": accs[best],
        "best_epoch": best + 1,
        "last_acc": accs[-1],
        "converged": attacker_converged(losses, accs, options.converge_margin),
    }


@ATTACKS.register("attribute")
class AttributeAttack(Attack):
    """Fresh attackers of every family on ``z``; privacy = best test accuracy."""

    name = "attribute"

    def run(self, data: EvalData, options: AttackOptions) -> dict[str, Any]:
        target = options.target
        if target not in data.y_train:
            raise ConfigError(f"attribute attack target {target!r} is not a label of this data set; valid: {', '.join(data.y_train)}")
        unknown = [f for f in options.families if f not in FAMILIES]
        if unknown or not options.families:
            raise ConfigError(f"unknown attacker famil(ies) {', '.join(unknown) or '(none given)'}; valid choices: {', '.join(FAMILIES)}")
        k = data.info.num_classes(target)
        chance = chance_level(data.y_test[target])
        families: dict[str, Any] = {}
        for i, fam in enumerate(options.families):
            torch.manual_seed(options.seed + 1000 * (i + 1))
            model = FAMILIES[fam](data, k)
            options.log(f"  attribute attack: training {fam} attacker on z {tuple(data.z_shape)} for {options.epochs} epoch(s)")
            families[fam] = train_attacker(model, data.z_train, data.y_train[target], data.z_test, data.y_test[target],
                                           options, desc=f"attacker {fam}")
        best_family = max(families, key=lambda f: families[f]["best_acc"])
        acc = families[best_family]["best_acc"]
        threshold = leak_threshold(chance, len(data.y_test[target]))
        not_converged = [f for f, r in families.items() if not r["converged"]]
        verdict = "leaks" if acc > threshold else "at chance"
        return {
            "target": target,
            "num_classes": k,
            "chance": chance,
            # what an attacker knowing another label (the task's) exactly, and nothing else, gets
            "chance_given": {other: chance_given(data.y_test[target], y) for other, y in data.y_test.items()
                             if other != target},
            "accuracy": acc,
            "best_family": best_family,
            "families": families,
            "leak_threshold": threshold,
            "verdict": verdict,
            "not_converged": not_converged,
            "epochs": options.epochs,
            "lr": options.lr,
            "batch_size": options.batch_size,
            "seed": options.seed,
            "augment": options.augment,
            "n_train": len(data.z_train),
            "n_test": len(data.z_test),
        }

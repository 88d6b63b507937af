"""Attribute inference: predict the private label from ``z``.

Attackers of several families are trained on ``z`` of the training split and
tested on ``z`` of the test split, at each number of repeated queries (``z``
averaged over k draws of the obfuscator for every image); privacy at k queries
is the highest test accuracy over families and epochs. Families:

* ``head``: a fresh copy of the backbone's rest (the paper's attacker, and the
  proxy adversary's architecture), Adam lr 1e-3;
* ``mlp``: an MLP on spatially pooled ``z``, Adam lr 1e-3;
* ``mlp_flat``: the same MLP on standardised, unpooled ``z`` (pooling can
  average away what sits in particular positions);
* ``linear``: a linear probe (logistic regression) on standardised, unpooled
  ``z``: an obfuscator trained against a network-shaped proxy can leave the
  private label linearly readable;
* ``knn``: non-parametric, k nearest neighbours (cosine, on standardised pooled
  ``z``), best of k in 1, 5, 25, 100: no training to under-do.

By default the parametric attackers own the obfuscator: each epoch draws its
randomness afresh on the training images, instead of reusing one draw.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..metrics.accuracy import chance_given, chance_level, model_accuracy
from ..models.probes import PROBES, build_probe
from ..progress import Progress
from .base import (
    ATTACKS,
    Attack,
    DEFAULT_FAMILIES,
    AttackOptions,
    EvalData,
    attacker_converged,
    epoch_batches,
    fit_epoch,
    attack_record,
    leak_threshold,
    per_query,
    query_key,
)


def _head(data: EvalData, num_classes: int) -> nn.Module:
    # The method knows its server-side network: the backbone's rest for a cut,
    # a whole ResNet18 for image-level baselines.
    from ..methods import build_method

    return build_method(data.config).attacker_head(data.info, num_classes)


def _probe(family: str) -> Callable[[EvalData, int], nn.Module]:
    return lambda data, num_classes: build_probe(family, data.z_shape, num_classes)


# trained families: name -> builder(data, num_classes)
FAMILIES: dict[str, Callable[[EvalData, int], nn.Module]] = {"head": _head, **{f: _probe(f) for f in PROBES.names()}}
# every family, the non-parametric one included, in the default order (an
# attacker's seed follows its position here, so the older families keep theirs)
FAMILY_NAMES = DEFAULT_FAMILIES
assert set(FAMILY_NAMES) == {*FAMILIES, "knn"}, "a registered probe family is missing from DEFAULT_FAMILIES"


def train_attacker(
    model: nn.Module,
    z_train: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    y_train: torch.Tensor,
    z_test: torch.Tensor,
    y_test: torch.Tensor,
    options: AttackOptions,
    desc: str = "attacker",
) -> dict[str, Any]:
    """Train a classifier on ``z`` and test it after every epoch.

    ``z_train`` is a tensor, or a function giving the training ``z`` of a batch of
    indices (fresh draws of the obfuscator's randomness at every call).
    Returns per-epoch training loss and test accuracy, the best test accuracy
    and whether the training loss was still falling at the last epoch.
    """
    batch_z = (lambda idx: z_train[idx]) if isinstance(z_train, torch.Tensor) else z_train
    gen = torch.Generator().manual_seed(options.seed)
    model.to(z_test.device)  # attackers train where the cached z lives
    opt = torch.optim.Adam(model.parameters(), lr=options.lr * getattr(model, "lr_scale", 1.0))
    losses, accs = [], []
    bs = options.batch_size
    # Counted in batches over every epoch: one epoch of a large split can take minutes.
    bar = Progress(total=options.epochs * epoch_batches(len(y_train), bs), desc=desc, unit="batch",
                   enabled=options.progress)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        z = batch_z(idx)
        if options.augment and z.dim() == 4:
            flip = (torch.rand(len(z), generator=gen) < 0.5).to(z.device)
            z = torch.where(flip.view(-1, 1, 1, 1), z.flip(-1), z)
        return F.cross_entropy(model(z), y_train[idx])

    for epoch in range(options.epochs):
        losses.append(fit_epoch(model, opt, len(y_train), bs, gen, batch_loss, bar.update))
        accs.append(model_accuracy(model, z_test, y_test, bs * 4))
        bar.set_postfix(**{"after epoch": f"{epoch + 1}/{options.epochs}"}, loss=f"{losses[-1]:.3f}", test_acc=f"{100 * accs[-1]:.1f}%")
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


KNN_KS = (1, 5, 25, 100)


def _pooled(z: torch.Tensor) -> torch.Tensor:
    """(N, D): spatial ``z`` pooled like the MLP's input (at most 4x4 positions), flattened."""
    if z.dim() == 4:
        z = F.adaptive_avg_pool2d(z, (min(z.shape[2], 4), min(z.shape[3], 4)))
    return z.flatten(1)


@torch.no_grad()
def knn_attack(z_train: torch.Tensor, y_train: torch.Tensor, z_test: torch.Tensor, y_test: torch.Tensor,
               num_classes: int, ks: tuple[int, ...] = KNN_KS, chunk: int = 512, progress: bool | None = False,
               desc: str = "k-NN attacker") -> dict[str, Any]:
    """k-nearest-neighbour attacker (cosine similarity of standardised pooled ``z``,
    majority vote); test accuracy for each k in ``ks``, the best reported."""
    ks = tuple(k for k in ks if k <= len(z_train)) or (1,)
    flat = _pooled(z_train)
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    ref = F.normalize((flat - mean) / std, dim=1)  # (N_train, D), unit rows
    hits = torch.zeros(len(ks), dtype=torch.long)
    for i in Progress(range(0, len(z_test), chunk), desc=desc, unit="chunk", enabled=progress):
        q = F.normalize((_pooled(z_test[i : i + chunk]) - mean) / std, dim=1)
        nearest = (q @ ref.T).topk(max(ks), dim=1).indices  # (B, K) by decreasing similarity
        labels = y_train[nearest]  # (B, K)
        for j, k in enumerate(ks):
            votes = F.one_hot(labels[:, :k], num_classes).sum(1)  # (B, classes)
            hits[j] += (votes.argmax(1) == y_test[i : i + chunk]).sum().cpu()
    accs = (hits.double() / max(len(z_test), 1)).tolist()
    best = max(range(len(accs)), key=accs.__getitem__)
    return {"ks": list(ks), "test_acc": accs, "best_acc": accs[best], "best_k": ks[best], "last_acc": accs[-1],
            "train_loss": [], "converged": True}


@ATTACKS.register("attribute")
class AttributeAttack(Attack):
    """Fresh attackers of every family on ``z`` at every number of queries;
    privacy = the best test accuracy, and the headline is the one-query figure.
    The verdict (``leaks`` / ``at chance``) is the worst over the numbers of queries
    (``worst_queries``, ``worst_accuracy``); ``verdict_1`` is the one-query one."""


    def run(self, data: EvalData, options: AttackOptions) -> dict[str, Any]:
        target = options.target
        if target not in data.y_train:
            raise ConfigError(f"attribute attack target {target!r} is not a label of this data set; valid: {', '.join(data.y_train)}")
        unknown = [f for f in options.families if f not in FAMILY_NAMES]
        if unknown or not options.families:
            raise ConfigError(f"unknown attacker famil(ies) {', '.join(unknown) or '(none given)'}; "
                              f"valid choices: {', '.join(FAMILY_NAMES)}")
        k = data.info.num_classes(target)
        chance = chance_level(data.y_test[target])
        threshold = leak_threshold(chance, len(data.y_test[target]))
        by_queries = per_query(data, options, lambda q: self._at(data, options, q, k, threshold))
        worst = max(by_queries, key=lambda q: by_queries[q]["accuracy"])  # the first (fewest queries) of equals
        return {
            "target": target,
            "num_classes": k,
            "chance": chance,
            # what an attacker knowing another label (the task's) exactly, and nothing else, gets
            "chance_given": {other: chance_given(data.y_test[target], y) for other, y in data.y_test.items()
                             if other != target},
            **by_queries["1"],  # the one-query figure is the headline privacy...
            # ...but the verdict is the worst over the numbers of queries measured: a z that is
            # at chance at one query and leaks at 16 leaks.
            "verdict": by_queries[worst]["verdict"],
            "verdict_1": by_queries["1"]["verdict"],
            "worst_queries": worst,
            "worst_accuracy": by_queries[worst]["accuracy"],
            "worst_family": by_queries[worst]["best_family"],
            "leak_threshold": threshold,
            "augment": options.augment,
            **attack_record(data, options, by_queries),
        }

    def _at(self, data: EvalData, options: AttackOptions, q: Any, k: int, threshold: float) -> dict[str, Any]:
        target = options.target
        y_train, y_test = data.y_train[target], data.y_test[target]
        z_test = data.z_test(q)
        families: dict[str, Any] = {}
        at = f" at {query_key(q)} quer{'y' if q == 1 else 'ies'}" if data.repeats_help else ""
        for fam in options.families:
            # A family's seed follows its place in FAMILY_NAMES, not in the families asked for:
            # each attacker is the same whichever others run beside it (so the quick check of
            # privsplit train, a few families, trains exactly the full evaluation's attackers).
            torch.manual_seed(options.seed + 1000 * (FAMILY_NAMES.index(fam) + 1))
            if fam == "knn":
                options.log(f"  attribute attack{at}: k-NN attacker on z {tuple(data.z_shape)}")
                families[fam] = knn_attack(data.z_train_fixed(q), y_train, z_test, y_test, k,
                                           progress=options.progress, desc=f"attacker knn{at}")
                continue
            model = FAMILIES[fam](data, k)
            options.log(f"  attribute attack{at}: training {fam} attacker on z {tuple(data.z_shape)} for {options.epochs} epoch(s)"
                        f"{', fresh draws each epoch' if options.fresh_draws and data.client.random_ops else ''}")
            families[fam] = train_attacker(model, lambda idx: data.z_train(idx, q, options.fresh_draws), y_train,
                                           z_test, y_test, options, desc=f"attacker {fam}{at}")
        best_family = max(families, key=lambda f: families[f]["best_acc"])
        acc = families[best_family]["best_acc"]
        return {
            "accuracy": acc,
            "best_family": best_family,
            "families": families,
            "verdict": "leaks" if acc > threshold else "at chance",
            "not_converged": [f for f, r in families.items() if not r["converged"]],
        }

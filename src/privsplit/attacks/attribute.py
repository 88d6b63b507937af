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

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..formatting import at_queries, num, pct, queries_words
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
from .result import AttackResult


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


def _attempts(f: dict[str, Any]) -> str:
    """How an attacker's best was found: its epoch, or its k for k-NN."""
    if "ks" in f:
        return f"best of k in {', '.join(map(str, f['ks']))} (k = {f['best_k']})"
    return f"best of {len(f['test_acc'])} epochs (epoch {f['best_epoch']})"


class AttributeResult(AttackResult):
    """The attribute attack's result: privacy is the best attacker's test accuracy
    on the private label (the headline: at one query); its verdict is the worst
    over the numbers of queries measured."""

    role = "privacy"
    alarm = "leaks"
    title = "Attribute attack"

    def headline_at(self, res: dict[str, Any]) -> float | None:
        return res["accuracy"]

    def not_converged(self) -> list[str]:
        return [f"{f}@{q}" for q, res in self.distinct_queries().items() for f in res["not_converged"]]

    def worst(self) -> tuple[str, dict[str, Any]]:
        """The number of queries (of the distinct ones) at which the attackers did best, and that result."""
        qs = self.distinct_queries()
        q = max(qs, key=lambda k: qs[k]["accuracy"])
        return q, qs[q]

    def verdict_line(self, run: dict[str, Any]) -> str | None:
        a, qs = self.record, self.distinct_queries()
        wq, w = self.worst()
        if len(qs) > 1 and wq != "1":
            text = (f"{pct(a['accuracy'])} at 1 query, worst {pct(w['accuracy'])} at {queries_words(wq)}, vs chance "
                    f"{pct(a['chance'])} -> {self.verdict()} (the worst over {', '.join(qs)} queries; best family "
                    f"at {wq}: {w['best_family']})")
        else:
            over = f"; the worst over {', '.join(qs)} queries" if len(qs) > 1 else ""
            text = (f"{pct(a['accuracy'])} vs chance {pct(a['chance'])} -> {self.verdict()}"
                    f" (best family: {a['best_family']}{over})")
        return f"attribute attack ({a['target']}): {text}"

    def summary_lines(self, run: dict[str, Any]) -> list[str]:
        a = self.record
        lines = [f"attribute attacker {fam}: {pct(f['best_acc'])}, {_attempts(f)}{'' if f['converged'] else ' (NOT CONVERGED)'}"
                 for fam, f in a["families"].items()]
        if run.get("delta") is not None:
            lines.append(f"privacy {pct(run['privacy'])} (chance {pct(run['privacy_chance'])}); delta = utility - privacy = "
                         f"{100 * run['delta']:+.2f} points"
                         + (" -- meaningless: the model has not learned its task" if run.get("task_learned") is False else ""))
        if run.get("privacy_by_queries"):
            text = ", ".join(f"{q}: {pct(v)}" for q, v in run["privacy_by_queries"].items())
            lines.append(f"privacy by queries: {text} ({a.get('queries_note', '')})")
        for g in run.get("proxy_gap") or []:
            if g["fresh"] is not None:
                lines.append(f"proxy adversary {g['adversary']} ({g['family']}, {g['queries']} quer(ies)): {pct(g['proxy'])} "
                             f"in training, fresh attackers {pct(g['fresh'])} on the same view")
        return lines

    def warnings(self, run: dict[str, Any]) -> list[str]:
        qs = self.distinct_queries()
        out = []
        for q, res in qs.items():
            for fam in res["not_converged"]:
                losses = res["families"][fam]["train_loss"]
                out.append(
                    f"attribute attacker {fam!r}{at_queries(q, len(qs) > 1)} had not converged (training loss still falling "
                    f"at epoch {len(losses)}: {num(losses[-1])} after {num(min(losses[:-1]) if len(losses) > 1 else None)}, "
                    "and test accuracy best at the last epoch); an under-trained attacker overstates privacy: rerun with "
                    "more --attack-epochs")
        return out

    def report_markdown(self, run: dict[str, Any]) -> list[str]:
        a = self.record
        md = ["", "## Attribute attack", "", "| measure | test accuracy | chance |", "|---|---|---|"]
        for fam, f in a["families"].items():
            flag = "" if f["converged"] else " (not converged)"
            md.append(f"| attacker `{fam}` on {a['target']}, {_attempts(f)}{flag} | {pct(f['best_acc'])} | {pct(a['chance'])} |")
        for other, v in a.get("chance_given", {}).items():
            md.append(f"| no z, knowing the true {other} label: its most common {a['target']} class | {pct(v)} | |")
        md.append(f"| **privacy** = best attacker | **{pct(a['accuracy'])}** | {pct(a['chance'])} |")
        if run.get("delta") is not None:
            md.append(f"| **delta** = utility - privacy | **{100 * run['delta']:+.2f} points**"
                      + (" (meaningless: the model has not learned its task)" if run.get("task_learned") is False else "")
                      + " | |")
        md += ["", f"Attackers: Adam lr {a['lr']}, batch {a['batch_size']}, {a['epochs']} epochs, seed {a['seed']}, "
               f"{'fresh obfuscator draws every epoch' if a.get('fresh_draws') else 'one fixed draw of z'}"
               f"{', z mirrored at random (augmentation)' if a.get('augment') else ''}; "
               f"'leaks' means above {pct(a['leak_threshold'])} (chance + max(1 point, 3 standard errors))."]
        return md + self._queries_markdown(run) + _proxy_gap_markdown(run)

    def _queries_markdown(self, run: dict[str, Any]) -> list[str]:
        """The privacy-vs-queries table, with the closest reconstruction (worst case over attacks) beside it."""
        worst = run.get("reconstruction_privacy") or {}
        md = ["", "## Repeated queries", "", f"{self.record.get('queries_note', '')}.", "",
              "| queries | privacy (best attacker) | family | delta | reconstruction SSIM |", "|---|---|---|---|---|"]
        for q, res in self.by_queries.items():
            ssim = worst.get(q, {}).get("ssim", {}).get("value")
            delta = f"{100 * (run['utility'] - res['accuracy']):+.2f}" if run.get("utility") is not None else "n/a"
            md.append(f"| {q} | {pct(res['accuracy'])} | {res['best_family']} | "
                      f"{delta}{' (task not learned)' if run.get('task_learned') is False else ''} | {num(ssim, '{:.3f}')} |")
        if run.get("_out") and (Path(run["_out"]) / "privacy_queries.png").exists():
            md += ["", "![privacy vs queries](privacy_queries.png)"]
        return md

    def attacker_curves(self) -> list[tuple[str, list[float]]]:
        return [(f"attacker {fam}", f["test_acc"]) for fam, f in self.record["families"].items() if "ks" not in f]

    @classmethod
    def benchmark_markdown(cls, rows: list[tuple[dict[str, Any], AttackResult]]) -> list[str]:
        """The paper's privacy and utility table: privacy at 1, 16 and inf queries, utility, delta."""
        r0, a0 = rows[0]
        qs = [q for q in ("16", "inf") if any(q in r.get("privacy_by_queries", {}) for r, _ in rows)]
        d16 = "16" in qs

        def delta(r: dict[str, Any], d: float | None) -> str:
            return "n/a" if d is None else f"{100 * d:+.2f}" + (" (task not learned)" if r.get("task_learned") is False else "")

        md = [f"## Privacy and utility ({r0['dataset']})", "",
              "| method | split | privacy@1 ↓ | best attacker | " + "".join(f"privacy@{q} ↓ | " for q in qs)
              + "utility ↑ | delta@1 ↑ |" + (" delta@16 ↑ |" if d16 else ""),
              "|---|---|---|---|" + "---|" * len(qs) + "---|---|" + ("---|" if d16 else ""),
              f"| chance | | {pct(r0['privacy_chance'])} | | " + "| " * len(qs) + f"{pct(r0['utility_chance'])} | |"
              + (" |" if d16 else "")]
        given = a0.record.get("chance_given", {})
        md += [f"| knowing the {other} label (no z) | | {pct(v)} | | " + "| " * len(qs) + "| |" + (" |" if d16 else "")
               for other, v in given.items()]
        for r, res in rows:
            fams = res.record["families"]
            others = ", ".join(f"{f} {pct(v['best_acc'])}" for f, v in fams.items() if f != res.record["best_family"])
            best = res.record["best_family"] + (f" ({others})" if others else "")
            by = r.get("privacy_by_queries", {})
            split = r["config"]["model"]["split"]
            md.append(f"| {r['name']} | {'image' if split == 'none' else split} | {pct(r['privacy'])} | {best} | "
                      + "".join(f"{pct(by.get(q))} | " for q in qs) + f"{pct(r['utility'])} | {delta(r, r.get('delta'))} |"
                      + (f" {delta(r, r.get('delta_by_queries', {}).get('16'))} |" if d16 else ""))
        md += ["", "Accuracies in %; delta = utility - privacy in points. Best attacker (at one query): the family with "
               "the highest test accuracy (the others' in brackets). privacy@k: the best attacker when the server "
               "averages k queries of each image (inf: the noise-free limit); a deterministic client has one value "
               "for every k. Attackers own the obfuscator: fresh draws of its randomness every epoch."
               + (" 'Knowing the ... label': an attacker who knows that label exactly and answers the most common "
                  "private class given it: the privacy of a z that reveals the task's answer and nothing else." if given else ""),
               ""]
        return md


def _proxy_gap_markdown(run: dict[str, Any]) -> list[str]:
    """The proxy adversaries' last training figure beside the fresh attackers' on the same view."""
    rows = run.get("proxy_gap") or []
    if not rows:
        return []
    md = ["", "### Proxy adversaries against fresh attackers", "",
          "How much the obfuscator fooled its proxy: the proxy's test accuracy in the last training epoch, "
          "and the best fresh attacker's on what the proxy saw.", "",
          "| proxy adversary | family | sees (queries) | proxy in training | fresh attackers | gap |", "|---|---|---|---|---|---|"]
    for g in rows:
        fresh = f"{pct(g['fresh'])} ({g['fresh_family']})" if g["fresh"] is not None else "not attacked at this view"
        gap = f"{100 * (g['fresh'] - g['proxy']):+.2f} points" if g["fresh"] is not None else "–"
        md.append(f"| `{g['adversary']}` | {g['family']} | {g['queries']} | {pct(g['proxy'])} | {fresh} | {gap} |")
    return md



@ATTACKS.register("attribute")
class AttributeAttack(Attack):
    """Fresh attackers of every family on ``z`` at every number of queries;
    privacy = the best test accuracy, and the headline is the one-query figure.
    The verdict (``leaks`` / ``at chance``) is the worst over the numbers of queries
    (``worst_queries``, ``worst_accuracy``); ``verdict_1`` is the one-query one."""

    result_type = AttributeResult

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
        return AttributeResult(self.name, {
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
        })

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


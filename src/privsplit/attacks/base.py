"""What every attack shares: the cached representations and the options."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from ..config import MAX_QUERIES, Config
from ..data.base import TaskInfo
from ..errors import ConfigError
from ..queries import DEFAULT_FAMILIES, query_key  # noqa: F401  (re-exported)
from ..registry import Registry
from .result import AttackResult


Query = float  # a number of queries: 1, 4, 16, ... or math.inf
DEFAULT_QUERIES: tuple[Query, ...] = (1, 16, math.inf)
# DEFAULT_FAMILIES (every family: privacy is the worst case over them) and query_key live
# in the torch-free privsplit.queries, for --help without torch; re-exported here.


def parse_queries(text: str | list[Any] | tuple[Any, ...]) -> tuple[Query, ...]:
    """``"1,16,inf"`` -> ``(1, 16, inf)``, sorted, with 1 always included (the headline figure).

    Raises :class:`ConfigError` on anything but whole numbers from 1 to
    :data:`~privsplit.config.MAX_QUERIES` and ``inf``, and on an empty item (``1,,2``)."""
    items = [str(t).strip() for t in (text.split(",") if isinstance(text, str) else text)]
    if not any(items):
        raise ConfigError("--queries is empty; give numbers of repeated queries, e.g. 1,16,inf")
    if not all(items):
        raise ConfigError(f"--queries {text if isinstance(text, str) else ','.join(map(str, text))!r} has an empty "
                          "item (two commas, or one at an end); give e.g. 1,16,inf")
    out: set[Query] = set()
    for t in items:
        if t.lower() in ("inf", "infinity"):
            out.add(math.inf)
            continue
        if not t.isdigit() or not 1 <= int(t) <= MAX_QUERIES:
            raise ConfigError(
                f"--queries takes whole numbers from 1 to {MAX_QUERIES} and 'inf' (the noise-free limit), "
                f"comma-separated; got {t!r}"
            )
        out.add(int(t))
    return tuple(sorted(out | {1}))


@torch.no_grad()
def averaged_z(client: torch.nn.Module, e: torch.Tensor, k: Query, chunk: int = 2048) -> torch.Tensor:
    """What a server holds after ``k`` queries of each image: the mean of ``k``
    independent draws of the client's random part on the cached encoder output
    ``e`` (N, ...); ``k = inf`` is the limit, every noise source silenced."""
    return torch.cat([client.queried(e[i : i + chunk], k).float() for i in range(0, len(e), chunk)])


@dataclass
class EvalData:
    """What attackers see, computed once with the frozen client part as deployed.

    The client's deterministic stage is cached (``e``); its random stage is drawn
    from there, so an attacker can train on fresh draws every epoch, as an
    attacker who owns the obfuscator can, and a server's view after ``k``
    repeated queries (the mean of ``k`` draws) costs no encoder pass.

    Attributes:
        client: the frozen :class:`privsplit.obfuscator.ClientPart`.
        e_train, e_test: (N, ...) float32 outputs of ``client.encode``.
        y_train, y_test: target name -> (N,) labels.
        x_train, x_test: (N, 3, H, W) uint8 images, kept only when an attack needs them.
        seed: seeds the fixed draws (test split, and the training split when
            attackers do not draw afresh).
        consistent: the client draws its randomness from a keyed hash of the image
            (consistent randomness): a repeated query sends the same ``z``.
        perceptual: the LPIPS models by name (``lpips``, ``st_lpips``; None where
            unavailable), loaded when an attack declares ``needs_lpips``.
    """

    config: Config
    info: TaskInfo
    client: torch.nn.Module
    e_train: torch.Tensor
    e_test: torch.Tensor
    y_train: dict[str, torch.Tensor]
    y_test: dict[str, torch.Tensor]
    x_train: torch.Tensor | None = None
    x_test: torch.Tensor | None = None
    seed: int = 0
    consistent: bool = False
    perceptual: dict[str, Any] = field(default_factory=dict)
    _fixed: dict[tuple[str, Query], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def z_shape(self) -> tuple[int, ...]:
        return tuple(self.client.z_shape)

    @property
    def n_train(self) -> int:
        return len(self.e_train)

    @property
    def repeats_help(self) -> bool:
        """Whether repeated queries can show the server anything a single one does not."""
        return bool(self.client.random_ops) and not self.consistent

    def effective(self, k: Query) -> Query:
        """The number of queries whose result equals ``k``'s: 1 when repeats change nothing."""
        return k if self.repeats_help else 1

    def _draw(self, split: str, k: Query) -> torch.Tensor:
        if (split, k) not in self._fixed:
            e = self.e_train if split == "train" else self.e_test
            devices = [e.device] if e.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed + (0 if split == "train" else 1) + 7919 * (0 if math.isinf(k) else int(k)))
                self._fixed[(split, k)] = averaged_z(self.client, e, k)
        return self._fixed[(split, k)]

    def z_test(self, k: Query = 1) -> torch.Tensor:
        """``z`` of the test split after ``k`` queries (one seeded draw set)."""
        return self._draw("test", self.effective(k))

    def z_train_fixed(self, k: Query = 1) -> torch.Tensor:
        """``z`` of the training split after ``k`` queries, drawn once (seeded)."""
        return self._draw("train", self.effective(k))

    def z_train(self, idx: torch.Tensor, k: Query, fresh: bool) -> torch.Tensor:
        """Training ``z`` of the samples ``idx`` after ``k`` queries: drawn afresh at
        every call (``fresh``), or the fixed draw."""
        k = self.effective(k)
        # An attacker owns the obfuscator: it draws afresh on its own training images even
        # where the client's draws are consistent (it makes them with keys of its own).
        if fresh and self.client.random_ops:
            return averaged_z(self.client, self.e_train[idx], k)
        return self.z_train_fixed(k)[idx]


def per_query(data: EvalData, options: "AttackOptions", attack_at: Callable[[Query], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``attack_at(k)`` once per distinct view of the requested numbers of queries
    (once in all for a client where repeats change nothing); every requested k,
    written as :func:`query_key`, maps to its result."""
    computed: dict[Query, dict[str, Any]] = {}
    for q in options.queries:
        if data.effective(q) not in computed:
            computed[data.effective(q)] = attack_at(data.effective(q))
    return {query_key(q): computed[data.effective(q)] for q in options.queries}


def attack_record(data: EvalData, options: "AttackOptions", by_queries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What every attack reports beside its numbers: the queries and how attackers were trained."""
    return {
        "queries": list(by_queries),
        "queries_note": queries_note(data),
        "by_queries": by_queries,
        "fresh_draws": options.fresh_draws,
        "epochs": options.epochs,
        "lr": options.lr,
        "batch_size": options.batch_size,
        "seed": options.seed,
        "n_train": data.n_train,
        "n_test": len(data.e_test),
    }


def queries_note(data: EvalData) -> str:
    """What the numbers of queries mean for this client, for reports."""
    if not data.client.random_ops:
        return "the client is deterministic: repeated queries send the same z, so every number of queries gives the same figure (computed once)"
    if data.consistent:
        return ("consistent randomness: a repeated query of the same image sends the same z, so every number of "
                "queries gives the one-query figure (computed once); near-duplicate images are not covered")
    others = [op for op in data.client.random_ops if op not in data.client.noise_ops]
    note = "k queries = the mean of k independent draws of z for each image (training and test images alike); inf = every noise op silenced"
    if others:
        note += f", the other random ops ({', '.join(others)}) drawn once as deployed"
    return note


@dataclass
class AttackOptions:
    """How attackers are trained (Adam, lr 1e-3 as in the paper).

    Attributes:
        epochs: attacker training epochs over the training split.
        batch_size: attacker batch size.
        lr: Adam learning rate.
        seed: seeds attacker initialisation and batch order.
        families: attribute attacker families to train (see ``attacks.FAMILIES``).
        target: label the attribute attack predicts.
        queries: numbers of repeated queries to attack at (see :func:`parse_queries`).
        fresh_draws: attackers own the obfuscator: every epoch draws the client's
            randomness afresh on the training images (else one cached draw).
        converge_margin: relative drop of the training loss in the last epoch
            (below the best of the earlier epochs) that flags an attacker as not converged.
        augment: randomly mirror spatial ``z`` left-right while training attribute
            attackers (features of a mirrored image are close to mirrored features).
        inversion_steps, inversion_lr, inversion_tv: most Adam steps per batch, learning
            rate (pixels in [0, 1]) and total-variation prior weight of the inversion and
            model-space attacks (see :mod:`privsplit.attacks.inversion`; measured on no_noise).
        out_dir: where attacks write files (reconstruction grid).
        progress: show progress bars (None: only on a terminal).
        log: where progress lines go.
        extra: LPIPS models by name, for callers that build :class:`EvalData` themselves
            (evaluate puts them in ``EvalData.perceptual``).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    families: tuple[str, ...] = DEFAULT_FAMILIES
    target: str = "private"
    queries: tuple[Query, ...] = DEFAULT_QUERIES
    fresh_draws: bool = True
    converge_margin: float = 0.01
    augment: bool = False
    inversion_steps: int = 400
    inversion_lr: float = 0.1
    inversion_tv: float = 1.0
    out_dir: Path | None = None
    progress: bool | None = None
    log: Callable[[str], None] = print
    extra: dict[str, Any] = field(default_factory=dict)


class Attack:
    """An attack on ``z``: ``run`` returns its :class:`~privsplit.attacks.result.AttackResult`
    (of type ``result_type``, which also rebuilds it from ``results.json``).

    What it needs is declared, never inferred from its name: ``needs_images`` (the
    uint8 images of both splits are kept beside ``z``), ``needs_lpips`` (the LPIPS
    models are loaded into ``EvalData.perceptual``), ``reconstructs`` (an image
    reconstruction: its result's image metrics enter the worst case over attackers).
    """

    name: ClassVar[str]
    result_type: ClassVar[type[AttackResult]] = AttackResult
    needs_images: ClassVar[bool] = False
    needs_lpips: ClassVar[bool] = False
    reconstructs: ClassVar[bool] = False

    @classmethod
    def check(cls, options: "AttackOptions") -> None:
        """Raise :class:`ConfigError` on options this attack cannot run with, before any work."""

    def run(self, data: EvalData, options: AttackOptions) -> AttackResult:
        raise NotImplementedError


ATTACKS: Registry[type[Attack]] = Registry("attack")


def result_type(name: str) -> type[AttackResult]:
    """The result class of the attack registered as ``name`` (the generic one for an
    attack this installation does not know, e.g. from a newer results.json)."""
    return ATTACKS.get(name).result_type if name in ATTACKS else AttackResult


def results_of(run: dict[str, Any]) -> list[AttackResult]:
    """The typed results of a run's results (``results.json``), in the order the attacks ran."""
    return [result_type(name)(name, rec) for name, rec in run.get("attacks", {}).items()]


def privacy_result(run: dict[str, Any]) -> AttackResult | None:
    """The result whose headline is the run's privacy (role ``privacy``), if one ran."""
    return next((r for r in results_of(run) if r.role == "privacy"), None)


def perceptual_models(data: EvalData, options: "AttackOptions") -> dict[str, Any]:
    """The LPIPS models an image attack scores with: ``data.perceptual`` (what
    evaluate loaded), else ``options.extra`` (where callers put them before)."""
    return {k: data.perceptual.get(k, options.extra.get(k)) for k in ("lpips", "st_lpips")}


def fit_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    n: int,
    batch_size: int,
    gen: torch.Generator,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    on_batch: Callable[[], None] | None = None,
) -> float:
    """One epoch over ``n`` cached samples in an order drawn from ``gen``;
    ``batch_loss(indices)`` gives each batch's loss; ``on_batch()`` is called after
    each step (progress). Returns the mean loss."""
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
        if on_batch is not None:
            on_batch()
    return total / max(count, 1)


def epoch_batches(n: int, batch_size: int) -> int:
    """How many steps :func:`fit_epoch` takes over ``n`` samples."""
    return -(-(n - 1 if n % batch_size == 1 else n) // batch_size)


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


def attacker_converged(losses: list[float], test_score: list[float], margin: float, fitted: float = 0.05,
                       higher_is_better: bool = True) -> bool:
    """An attacker counts as under-trained only when its training loss is still
    falling (see :func:`still_falling`) *and* its test score (an accuracy, or with
    ``higher_is_better=False`` an error) was best at the last epoch. A score that
    was best earlier while the loss kept falling is overfitting: more epochs would
    not improve the best score, which is what the attack reports."""
    pick = max if higher_is_better else min
    peaked_last = pick(range(len(test_score)), key=test_score.__getitem__) == len(test_score) - 1
    return not (still_falling(losses, margin, fitted) and peaked_last)


def worst_image_verdict(by_queries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An image reconstruction attack's verdict over every number of queries: it
    reconstructs if it does at any k (``verdict_queries``: those k)."""
    hits = [q for q, v in by_queries.items() if v["verdict"] == "reconstructs"]
    return {"verdict": "reconstructs" if hits else by_queries["1"]["verdict"], "verdict_1": by_queries["1"]["verdict"],
            "verdict_queries": hits}


def leak_threshold(chance: float, n: int) -> float:
    """Accuracy above which an attacker beats chance beyond sampling noise:
    chance + max(1 point, 3 standard errors of a chance-level classifier on n samples)."""
    se = math.sqrt(max(chance * (1 - chance), 1e-12) / max(n, 1))
    return chance + max(0.01, 3 * se)

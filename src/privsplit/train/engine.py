"""The one training loop, shared by every method.

One step, three Adam optimisers:
  1. ``e = obfuscator.encode(x)``, ``z = obfuscator.reduce(e)``;
  2. heads minimise the task loss; the obfuscator minimises
     ``task + lam * privacy_term`` (``privacy_term = -adversary_loss`` for
     ``ours``), through ``z``, or, for an adversary with ``queries: K``, through
     the mean of K draws of ``reduce(e)`` (``inf``: the noise-free features);
  3. each adversary minimises its own loss on a detached copy of what it sees
     (``train.adversary_steps`` steps; re-initialised every ``reset_every`` epochs).

A method may add terms of its own to the obfuscator's loss that need no
adversary (:meth:`~privsplit.methods.Method.feature_terms`).

Runs unchanged under ``torchrun --nproc-per-node N`` (gloo on CPU, NCCL on
GPU): each process takes a shard of every epoch and gradients are averaged
across processes before each optimiser step.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..config import Config, adversary_queries, load_config
from ..data.base import TaskInfo, load_dataset
from ..errors import CheckpointError, ConfigError, TrainingDiverged
from ..lock import LOCK_NAME, FolderLock
from ..methods import Method, SplitModel, build_method
from ..adversaries import ADVERSARIES
from ..progress import Progress
from ..metrics.accuracy import chance_level
from .batching import batches, dataset_labels
from ..rundir import RunDir, write_text
from .checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint, save_weights
from .distributed import Distributed, resolve_device

# Settings that may change when a run is resumed; anything else would make the
# checkpoint describe a different experiment.
RESUMABLE_CHANGES = {"train.epochs", "train.device", "train.threads", "train.keep_checkpoints", "data.root", "data.num_workers"}


@dataclass
class Context:
    """What callbacks see.

    Attributes:
        epoch: the epoch being trained (1-based); at ``on_fit_start``, the last
            finished one (0 for a new run, the checkpoint's epoch on resume).
        step: batches trained by this process in this session.
        metrics: the last finished epoch's metrics (set before ``on_epoch_end``).
        trainer: the :class:`Trainer` itself (its ``optimizers``, ``method``,
            ``train_set``, ``device``...); None for a context built by hand.
    """

    cfg: Config
    run_dir: Path
    model: SplitModel
    epoch: int = 0
    step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    trainer: Trainer | None = None

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The trainer's optimisers by part (``obfuscator``, ``heads``, ``adversaries``;
        a part without parameters has none)."""
        return self.trainer.optimizers if self.trainer is not None else {}


class Callback:
    """Hooks into the loop; override what you need. The events, in order::

        on_fit_start(ctx)                 after the run folder is made or restored
          on_epoch_start(ctx)             for each epoch still to train
            on_step_end(ctx, losses)      after each batch's optimiser steps
          on_epoch_end(ctx)               after the epoch's metrics and checkpoint are written
        on_fit_end(ctx, result)           after the weights and run.json are written

    They run in every process of a ``torchrun`` job (``ctx.trainer.dist.main``
    is True in the first). An object with only some of these methods works too.
    """

    def on_fit_start(self, ctx: Context) -> None:
        pass

    def on_epoch_start(self, ctx: Context) -> None:
        pass

    def on_step_end(self, ctx: Context, losses: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, ctx: Context) -> None:
        pass

    def on_fit_end(self, ctx: Context, result: dict[str, Any]) -> None:
        pass


def _adversary_params(adversaries: torch.nn.ModuleDict) -> list[Any]:
    """The adversaries' parameters: one list, or one group per adversary (with its
    ``lr_scale``) when one of them learns at its own rate (a linear probe,
    :mod:`privsplit.models.probes`); :meth:`Trainer._set_learning_rates` applies it."""
    scales = {name: getattr(adv, "lr_scale", 1.0) for name, adv in adversaries.items()}
    if all(s == 1.0 for s in scales.values()):
        return list(adversaries.parameters())
    return [{"params": list(adversaries[n].parameters()), "lr_scale": s} for n, s in scales.items()]


def _seed(*parts: int) -> int:
    s = 0
    for p in parts:
        s = (s * 1_000_003 + int(p)) % (2**63 - 1)
    return s


class Trainer:
    """Trains one run into ``run_dir``.

    ``cfg`` says how; by default the data set and the model are the ones it
    names. A user's own may be given instead:

    * ``data=(train, test, info)``: any map-style datasets yielding
      ``(image, labels)`` (a float (3, H, W) tensor in [0, 1] and a dict of
      integer labels by target) and a :class:`~privsplit.data.base.TaskInfo`
      naming the labels; ``cfg.data`` is then only recorded;
    * ``model``: a :class:`~privsplit.methods.SplitModel` whose obfuscator is a
      :class:`~privsplit.obfuscator.ClientPart` (``encode``, ``reduce``,
      ``z_shape``); the method ``cfg.method`` still supplies the losses.

    A run trained on a user's own model is loaded back with that model, built
    afresh the same way: ``load_run(run_dir, model=...)``, ``EvalOptions(model=...)``,
    ``export_obfuscator(run_dir, model=...)``, ``TaskNetwork(run_dir, model=...)``.

    Example:
        >>> from privsplit.config import apply_overrides, Config
        >>> cfg = apply_overrides(Config(), ["train.epochs=1", "data.limit_train=256"])
        >>> metrics = Trainer(cfg, "runs/example").fit()  # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        resume: bool = False,
        callbacks: list[Callback] | None = None,
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
        data: tuple[Dataset, Dataset, TaskInfo] | None = None,
        model: SplitModel | None = None,
    ) -> None:
        self.cfg = cfg
        self.data = data
        self.user_model = model
        self.run_dir = Path(run_dir)
        self.rd = RunDir(run_dir)
        self.resume = resume
        self.callbacks = list(callbacks or [])
        self.progress = progress
        self._log = log or (lambda s: tqdm.write(s, file=sys.stdout))
        self._epoch = 0
        self._session_epochs, self._session_s = 0, 0.0  # epochs trained by this process, and their seconds
        Config.from_dict(cfg.to_dict())  # every value checked again: the config may have been changed in Python

    def log(self, msg: str) -> None:
        if self.dist.main:
            self._log(msg)

    def _event(self, name: str, *args: Any) -> None:
        """Call hook ``name`` of every callback that has it."""
        for cb in self.callbacks:
            hook = getattr(cb, name, None)
            if hook is not None:
                hook(*args)

    # Setup ---------------------------------------------------------------

    def _check_run_dir(self) -> None:
        """Fail before any work if the run folder cannot be used (every process checks)."""
        if self.resume:
            if not self.rd.is_run():
                raise CheckpointError(f"{self.run_dir} is not a privsplit run folder (no config.yaml); nothing to resume")
            saved = load_config(self.rd.config).to_dict()
            changed = [k for k in check_resume_overrides(saved, self.cfg.to_dict()) if k not in RESUMABLE_CHANGES]
            if changed:
                raise ConfigError(
                    f"cannot change {', '.join(changed)} when resuming {self.run_dir} (its checkpoints and config.yaml "
                    f"describe the old setting); start a new run instead. Changeable on resume: "
                    f"{', '.join(sorted(RESUMABLE_CHANGES))}"
                )
        elif self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"run folder {self.run_dir} is a file, not a folder: choose another --out")
        elif self.run_dir.exists() and any(p.name != LOCK_NAME for p in self.run_dir.iterdir()):  # a lock: a trainer died
            raise ConfigError(
                f"run folder {self.run_dir} already exists and is not empty; continue it with "
                f"`privsplit train --resume {self.run_dir}` or choose another --out"
            )

    def _prepare_run_dir(self) -> int:
        """Create the run folder, or restore from it; return the epoch to start from."""
        if self.resume:
            return self._restore()
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.rd.config, self.cfg.to_yaml())
        self.dist.barrier()
        return 0

    def _restore(self) -> int:
        if self.dist.main:  # the settings that may change (epochs, device...) are this session's
            write_text(self.rd.config, self.cfg.to_yaml())
        ckpts = self.rd.checkpoint_dirs()
        if not ckpts:
            self.log(f"no complete checkpoint in {self.run_dir}; starting from epoch 1")
            return 0
        meta = load_checkpoint(ckpts[-1], self.model, self.optimizers)
        epoch = int(meta["epoch"])
        # Drop metric lines of an epoch that was interrupted after logging but before its checkpoint.
        if self.dist.main and self.rd.metrics.exists():
            self.rd.keep_metrics_through(epoch)
            self.rd.drop_record()
        self.log(f"resuming {self.run_dir} after epoch {epoch} ({ckpts[-1].name})")
        return epoch

    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.dist = Distributed(resolve_device(cfg.train.device))
        self.device = self.dist.device
        self._check_run_dir()
        self.dist.barrier()
        self.train_set, self.test_set, self.info = self.data or load_dataset(cfg.data)
        if len(self.train_set) < 2 * self.dist.world:
            raise ConfigError(f"the training split has only {len(self.train_set)} image(s); need at least {2 * self.dist.world}")
        torch.manual_seed(cfg.train.seed)  # same initial weights in every process
        self.method: Method = build_method(cfg)
        self.model = (self.user_model or self.method.build(self.info)).to(self.device)
        self.dist.broadcast_module(self.model)
        t = cfg.train
        # A part without parameters (the identity or fixed-noise obfuscator of
        # the resnet18 / image_noise baselines) gets no optimiser.
        parts = {"obfuscator": (list(self.model.obfuscator.parameters()), t.lr_obfuscator),
                 "heads": (list(self.model.heads.parameters()), t.lr_head),
                 "adversaries": (_adversary_params(self.model.adversaries), t.lr_adversary)}
        self.optimizers = {name: torch.optim.Adam(params, lr=lr) for name, (params, lr) in parts.items() if params}

    # Loop ----------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs``; returns the last epoch's metrics.

        The run folder is locked for the whole run (:class:`~privsplit.lock.FolderLock`):
        a second trainer on it, e.g. a ``--resume`` while this one is alive, is refused."""
        self._setup()
        lock = FolderLock(self.run_dir, "run folder")
        if self.dist.main:
            lock.acquire()
        try:
            return self._fit()
        finally:
            lock.release()

    def _fit(self) -> dict[str, Any]:
        start = self._prepare_run_dir()
        cfg = self.cfg
        ctx = Context(cfg, self.run_dir, self.model, epoch=start, trainer=self)
        z_shape = self.model.obfuscator.z_shape
        self.log(
            f"training {cfg.method} on {self.info.dataset} ({len(self.train_set)} train / {len(self.test_set)} "
            f"{'validation (data.val_fraction; the test split is not used)' if cfg.data.val_fraction else 'test'} images, "
            f"{self.info.image_shape}), "
            f"{'your model' if self.user_model else f'{cfg.model.backbone} split {cfg.model.split}'}, z {z_shape}, "
            f"device {self.device}, {self.dist.world} process(es)"
        )
        if self.info.skipped and self.dist.main:
            listed = self.rd.skipped_files
            write_text(listed, "".join(f"{line}\n" for line in self.info.skipped))
            self.log(f"left out {len(self.info.skipped)} unreadable image file(s) (data.skip_bad_files=true); "
                     f"the list is in {listed}")
        t0 = time.time()
        metrics: dict[str, Any] = {}
        self._event("on_fit_start", ctx)
        for epoch in range(start, cfg.train.epochs):
            ctx.epoch = self._epoch = epoch + 1
            self._event("on_epoch_start", ctx)
            e0 = time.time()
            train_metrics = self._train_epoch(ctx)
            metrics = {"epoch": epoch + 1, **train_metrics, **self.evaluate(), "epoch_s": round(time.time() - e0, 2)}
            self._session_epochs += 1
            self._session_s += time.time() - e0
            ctx.metrics = metrics
            if self.dist.main:
                self.rd.append_metrics(metrics)
                save_checkpoint(
                    self.rd.checkpoint(epoch + 1),
                    self.model,
                    self.optimizers,
                    {"epoch": epoch + 1, "metrics": metrics, "config": cfg.to_dict()},
                )
                prune_checkpoints(self.run_dir, cfg.train.keep_checkpoints)
            self.dist.barrier()
            self.log(self._summary(metrics))
            self._event("on_epoch_end", ctx)
        if start >= cfg.train.epochs:
            self.log(f"{self.run_dir} already finished {cfg.train.epochs} epoch(s)")
            metrics = self._last_metrics()
        if self.dist.main:
            self._finish(metrics, time.time() - t0)
        self.dist.barrier()
        self._event("on_fit_end", ctx, metrics)
        return metrics

    def _train_epoch(self, ctx: Context) -> dict[str, float]:
        cfg, d = self.cfg, self.dist
        self._reset_adversaries(ctx.epoch)
        # Everything random in an epoch derives from (seed, epoch, rank): a run
        # resumed from a checkpoint continues exactly as if never stopped.
        torch.manual_seed(_seed(cfg.train.seed, ctx.epoch, d.rank))
        order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(_seed(cfg.train.seed, ctx.epoch)))
        per_rank = len(order) // d.world
        shard = order[d.rank * per_rank : (d.rank + 1) * per_rank]
        if len(shard) % cfg.train.batch_size == 1:
            shard = shard[:-1]  # a batch of one breaks batch norm
        self._set_learning_rates(ctx.epoch)
        self.model.train()
        totals: dict[str, float] = {}
        steps = math.ceil(len(shard) / cfg.train.batch_size)
        # A bar on a terminal; elsewhere a line every few seconds (rate, ETA); nothing with --no-progress.
        bar = Progress(
            batches(self.train_set, shard, cfg.train.batch_size, cfg.data.num_workers),
            total=steps,
            desc=f"epoch {ctx.epoch}/{cfg.train.epochs}",
            unit="batch",
            enabled=False if not d.main else self.progress,
        )
        for x, labels in bar:
            losses = self.step(x, labels)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v
            ctx.step += 1
            bar.set_postfix(task_loss=f"{losses['train/task_loss']:.3f}")
            self._event("on_step_end", ctx, losses)
        bar.close()
        if self.dist.world > 1:
            # Batch-norm running statistics differ per process: average them.
            self.dist.average([b for b in self.model.buffers() if b.dtype.is_floating_point])
        return {k: v / max(steps, 1) for k, v in totals.items()}

    def _set_learning_rates(self, epoch: int) -> None:
        """Cosine decay from the configured rate (epoch 1) towards 0, or constant.
        A function of the epoch alone, so resuming needs no scheduler state."""
        t = self.cfg.train
        scale = 1.0
        if t.lr_schedule == "cosine":
            scale = 0.5 * (1 + math.cos(math.pi * (epoch - 1) / t.epochs))
        base = {"obfuscator": t.lr_obfuscator, "heads": t.lr_head, "adversaries": t.lr_adversary}
        for name, opt in self.optimizers.items():
            for g in opt.param_groups:
                g["lr"] = base[name] * scale * g.get("lr_scale", 1.0)

    def step(self, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on a batch; returns the losses."""
        cfg, model, method = self.cfg, self.model, self.method
        x = x.to(self.device, non_blocking=True)
        labels = {k: v.to(self.device, non_blocking=True) for k, v in labels.items()}
        if cfg.train.flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

        e = model.obfuscator.encode(x)
        z = model.obfuscator.reduce(e)
        views = self._adversary_views(e, z)
        task = sum(method.task_loss(head(z), labels[model.head_targets[name]]) for name, head in model.heads.items())
        loss = task
        out: dict[str, float] = {"train/task_loss": task.item()}
        use_adv = len(model.adversaries) > 0 and cfg.train.lam > 0
        if use_adv:
            privacy = sum(
                method.privacy_term(model.adversary_configs[name], adv(views[name]), x, labels)
                for name, adv in model.adversaries.items()
            )
            loss = task + cfg.train.lam * privacy
            out["train/privacy_term"] = privacy.item()
        for name, term in method.feature_terms(model.obfuscator, e, labels).items():
            loss = loss + term
            out[f"train/{name}"] = term.item()
        self._check_finite(out, loss)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        self._sync_and_step(["obfuscator", "heads"])

        if len(model.adversaries):
            seen = {name: v.detach() for name, v in views.items()}
            for _ in range(cfg.train.adversary_steps):  # several steps keep a proxy from falling behind
                self.optimizers["adversaries"].zero_grad(set_to_none=True)
                adv_loss = 0.0
                for name, adv in model.adversaries.items():
                    a_loss = method.adversary_loss(model.adversary_configs[name], adv(seen[name]), x, labels)
                    out[f"train/adv_loss/{name}"] = a_loss.item()
                    adv_loss = adv_loss + a_loss
                self._check_finite(out, adv_loss)
                adv_loss.backward()  # type: ignore[union-attr]
                self._sync_and_step(["adversaries"])
        return out

    def _reset_adversaries(self, epoch: int) -> None:
        """Re-initialise each adversary with ``reset_every: N`` at the start of
        epochs N+1, 2N+1, ...: a fresh proxy has not been fooled yet. Weights and
        Adam state both start again; seeded by (seed, epoch), so a resumed run
        resets exactly as an uninterrupted one, in every process alike."""
        for name, adv in self.model.adversary_configs.items():
            n = adv.reset_every
            if not n or epoch == 1 or (epoch - 1) % n:
                continue
            module = self.model.adversaries[name]
            torch.manual_seed(_seed(self.cfg.train.seed, epoch, 104_729))
            for m in module.modules():
                if m is not module and hasattr(m, "reset_parameters"):
                    m.reset_parameters()
            opt = self.optimizers["adversaries"]
            for p in module.parameters():
                opt.state.pop(p, None)
            self.log(f"epoch {epoch}: adversary {name} re-initialised (reset_every {n})")

    def _check_finite(self, losses: dict[str, float], loss: torch.Tensor) -> None:
        """Stop before a non-finite loss reaches the weights: the run folder keeps
        its last good checkpoint and is not marked finished."""
        if bool(torch.isfinite(loss)):
            return
        shown = ", ".join(f"{k.removeprefix('train/')} {v:.4g}" for k, v in losses.items())
        ckpts = self.rd.checkpoint_dirs()
        kept = f"the last good checkpoint is {ckpts[-1]}" if ckpts else "no epoch finished, so there is no checkpoint"
        raise TrainingDiverged(
            f"training diverged in epoch {self._epoch}: a loss is not finite ({shown}); {kept}. "
            "Lower the learning rates or train.lam and start a new run"
        )

    def _adversary_views(self, e: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """What each adversary reads: ``z``, the mean of K draws of the client's
        randomness on ``e`` (its ``queries``), or the noise-free features (``inf``)."""
        obf = self.model.obfuscator
        by_queries: dict[float, torch.Tensor] = {1: z}
        views = {}
        for name, adv in self.model.adversary_configs.items():
            q = adversary_queries(adv) if obf.random_ops else 1
            if q not in by_queries:
                by_queries[q] = obf.queried(e, q)
            views[name] = by_queries[q]
        return views

    def _sync_and_step(self, names: list[str]) -> None:
        for name in names:
            if name not in self.optimizers:
                continue
            opt = self.optimizers[name]
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            self.dist.average(grads)
            opt.step()

    # Evaluation ----------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Test accuracy of every head and proxy adversary, with the obfuscator
        as deployed (random ops on). Uses its own seed, so it does not disturb
        the training stream."""
        model, d = self.model, self.dist
        model.eval()
        n = len(self.test_set)
        shard = torch.arange(n)[d.rank :: d.world]
        names = [*model.heads, *model.adversaries]
        sums = torch.zeros(len(names) + 1, dtype=torch.float64)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(_seed(self.cfg.train.seed, 7919, d.rank))
            for x, labels in batches(self.test_set, shard, 256, self.cfg.data.num_workers):
                x = x.to(self.device)
                labels = {k: v.to(self.device) for k, v in labels.items()}
                e = model.obfuscator.encode(x)
                z = model.obfuscator.reduce(e)
                views = self._adversary_views(e, z)
                for i, name in enumerate(names):
                    if name in model.heads:
                        hit = model.heads[name](z).argmax(1) == labels[model.head_targets[name]]
                        sums[i] += hit.sum().item()
                    else:
                        adv = model.adversary_configs[name]
                        out = model.adversaries[name](views[name])
                        sums[i] += ADVERSARIES.create(adv.kind).score(out, x, labels, adv).sum().item()
                sums[-1] += x.shape[0]
        sums = d.sum(sums)
        model.train()
        res: dict[str, float] = {}
        for i, name in enumerate(names):
            if name in model.heads:
                res[f"test/{name}/acc"] = float(sums[i] / sums[-1])
            else:
                metric = ADVERSARIES.create(model.adversary_configs[name].kind).metric
                res[f"test/adv/{name}/{metric}"] = float(sums[i] / sums[-1])
        return res

    # Finish --------------------------------------------------------------

    def _summary(self, m: dict[str, Any]) -> str:
        parts = [f"epoch {m['epoch']}/{self.cfg.train.epochs}", f"task loss {m.get('train/task_loss', float('nan')):.4f}"]
        for k, v in m.items():
            if k.startswith("test/"):
                parts.append(f"{k[5:]} {100 * v:.2f}%" if k.endswith("/acc") else f"{k[5:]} {v:.4f}")
        parts.append(f"{m['epoch_s']:.1f}s")
        left = self.cfg.train.epochs - m["epoch"]
        if left > 0 and self._session_epochs:  # the epochs of this session so far give the rate
            from ..progress import duration

            parts.append(f"ETA {duration(left * self._session_s / self._session_epochs)}")
        return " | ".join(parts)

    def _last_metrics(self) -> dict[str, Any]:
        rows = self.rd.read_metrics()
        return rows[-1] if rows else {}

    def _finish(self, metrics: dict[str, Any], wall_s: float) -> None:
        """Write the deployable parts and ``run.json`` (last, so its presence
        means the run finished)."""
        rd = self.rd
        parts = ["obfuscator", "heads", *(["adversaries"] if len(self.model.adversaries) else [])]
        # checked by every load (privsplit.run)
        digests = {rd.weights(p).name: save_weights(rd.weights(p), getattr(self.model, p)) for p in parts}
        chance = {t: chance_level(v) for t, v in dataset_labels(self.test_set).items()}
        rd.write_record(
            {
                "status": "finished",
                "epochs": self.cfg.train.epochs,
                "metrics": metrics,
                "chance": chance,
                "task": {"dataset": self.info.dataset, "labels": self.info.labels, "image_shape": list(self.info.image_shape)},
                "z_shape": list(self.model.obfuscator.z_shape),
                "n_train": len(self.train_set),
                "n_test": len(self.test_set),
                "weights_sha256": digests,
                # a user's own model parts: every load needs them (privsplit.run.check_model_given)
                **({"user_model": type(self.model.obfuscator).__name__} if self.user_model is not None else {}),
                "wall_s_last_session": round(wall_s, 1),
                "world_size": self.dist.world,
                "device": str(self.device),
                "versions": {"torch": torch.__version__, "privsplit": _version()},
            },
        )


def _version() -> str:
    from .. import __version__

    return __version__


def train(cfg: Config, run_dir: str | Path, resume: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; returns the final metrics.

    Example:
        >>> from privsplit.config import Config, apply_overrides
        >>> train(apply_overrides(Config(), ["train.epochs=1"]), "runs/demo")  # doctest: +SKIP
    """
    return Trainer(cfg, run_dir, resume=resume, **kwargs).fit()


def check_resume_overrides(saved: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    diffs = []
    for k in sorted(set(saved) | set(new)):
        key = f"{prefix}{k}"
        a, b = saved.get(k), new.get(k)
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):  # e.g. reduction.0.sigma
            a, b = dict(enumerate(a)), dict(enumerate(b))
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += check_resume_overrides(a, b, key + ".")
        elif a != b:
            diffs.append(key)
    return diffs


__all__ = ["Callback", "Context", "Trainer", "train", "RESUMABLE_CHANGES", "check_resume_overrides"]

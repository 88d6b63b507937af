"""Training-curve loggers: callbacks of the training loop that write every
epoch's metrics where ML users look at curves.

* :class:`CSVLogger` writes ``metrics.csv`` (one row per epoch, one column per
  metric; no dependency): open it in a spreadsheet or ``pandas.read_csv``.
* :class:`TensorBoardLogger` writes TensorBoard event files through
  ``torch.utils.tensorboard.SummaryWriter`` (needs ``pip install tensorboard``):
  every epoch's metrics at ``step = epoch``, and with ``steps=True`` every
  batch's losses too. ``tensorboard --logdir RUN_DIR/tensorboard`` shows them.

Both are :class:`~privsplit.train.engine.Callback` objects: pass them to the
trainer. A resumed run continues the same curves (an epoch that is trained
again replaces its earlier row). Under ``torchrun`` only the first process writes.

Example:
    >>> from privsplit.loggers import CSVLogger, TensorBoardLogger
    >>> Trainer(cfg, "runs/mine", callbacks=[CSVLogger(), TensorBoardLogger()]).fit()  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .rundir import RunDir
from .rundir import write_text
from .train.engine import Callback, Context

TENSORBOARD_MISSING = ("TensorBoard logging needs the tensorboard package, which is not installed: "
                       "pip install tensorboard (or log to CSV instead)")


def _main_process() -> bool:
    """False in every process but the first of a ``torchrun`` job."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are numbers (``epoch`` aside): what a curve can show."""
    out = {}
    for k, v in metrics.items():
        if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


class CSVLogger(Callback):
    """One CSV row per epoch: ``epoch`` and every metric of the loop (train losses,
    test accuracies of heads and proxy adversaries, ``epoch_s``).

    Args:
        path: the CSV file; default ``RUN_DIR/metrics.csv``. Rewritten in full
            (atomically) after every epoch, so it is complete at any moment.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.rows: dict[int, dict[str, Any]] | None = None

    def _file(self, ctx: Context) -> Path:
        return self.path if self.path is not None else RunDir(ctx.run_dir).metrics_csv

    def _read(self, path: Path) -> dict[int, dict[str, Any]]:
        """Rows an earlier session wrote (a resumed run), by epoch."""
        if not path.is_file():
            return {}
        rows: dict[int, dict[str, Any]] = {}
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                try:
                    rows[int(row["epoch"])] = row
                except (KeyError, TypeError, ValueError):
                    continue  # not one of our rows
        return rows

    def on_epoch_end(self, ctx: Context) -> None:
        if not _main_process() or "epoch" not in ctx.metrics:
            return
        path = self._file(ctx)
        if self.rows is None:  # first epoch of this session: keep what came before it
            self.rows = {e: r for e, r in self._read(path).items() if e < ctx.epoch}
        epoch = int(ctx.metrics["epoch"])
        self.rows[epoch] = {"epoch": epoch, **_scalars(ctx.metrics)}
        columns = list(dict.fromkeys(k for r in self.rows.values() for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
        w.writeheader()
        for e in sorted(self.rows):
            w.writerow(self.rows[e])
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, buf.getvalue())


class TensorBoardLogger(Callback):
    """TensorBoard scalars through ``torch.utils.tensorboard.SummaryWriter``.

    Every epoch's metrics are written at ``step = epoch`` under their own names
    (``train/task_loss``, ``test/task/acc``, ...); with ``steps=True`` the losses
    of every batch are written too, under ``step/<name>`` at the batch's index
    counted from the start of training (also after a resume).

    Args:
        log_dir: the event files' folder; default ``RUN_DIR/tensorboard``.
        steps: also write every batch's losses.

    Raises:
        ConfigError: tensorboard is not installed (one line: what to install).
    """

    def __init__(self, log_dir: str | Path | None = None, steps: bool = False) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(TENSORBOARD_MISSING) from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.steps = steps
        self.writer: Any = None
        self._batch: list[dict[str, float]] = []  # this epoch's batch losses (steps=True), bounded by one epoch

    def _open(self, ctx: Context) -> Any:
        if self.writer is None:
            where = self.log_dir if self.log_dir is not None else RunDir(ctx.run_dir).tensorboard_dir
            self.writer = self._writer_class(log_dir=str(where))
        return self.writer

    def on_step_end(self, ctx: Context, losses: dict[str, float]) -> None:
        if self.steps and _main_process():
            self._batch.append(_scalars(losses))

    def on_epoch_end(self, ctx: Context) -> None:
        if not _main_process() or "epoch" not in ctx.metrics:
            return
        w = self._open(ctx)
        epoch = int(ctx.metrics["epoch"])
        # Batch indices: every epoch has the same number of batches, known once one has ended.
        per_epoch = len(self._batch)
        for i, losses in enumerate(self._batch):
            for k, v in losses.items():
                if math.isfinite(v):
                    w.add_scalar(f"step/{k}", v, (epoch - 1) * per_epoch + i + 1)
        self._batch = []
        for k, v in _scalars(ctx.metrics).items():
            w.add_scalar(k, v, epoch)
        w.flush()

    def on_fit_end(self, ctx: Context, result: dict[str, Any]) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the event file (done when training ends)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


__all__ = ["CSVLogger", "TensorBoardLogger"]

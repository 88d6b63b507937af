"""The run folder, a file format with one owner: every path in it, and how its files are written.

A run folder holds::

    config.yaml              the run's config (written first: its presence makes the folder a run)
    metrics.jsonl            one JSON line per finished epoch
    checkpoints/epoch-NNNN/  complete checkpoints (their inside is :mod:`privsplit.train.checkpoint`'s)
    obfuscator.safetensors   the client part     \\
    heads.safetensors        the server part      > written when training finishes
    adversaries.safetensors  the proxy attackers /
    run.json                 written last: its presence means the run finished
    eval/                    what ``privsplit evaluate`` wrote
    export/                  what ``privsplit export`` wrote
    skipped_files.txt, metrics.csv, tensorboard/   when asked for (data.skip_bad_files, --log-csv, --tensorboard)

Every write is atomic (a temporary file, then a rename) or, for the one
appended file, line by line; a failed write is one :class:`CheckpointError`
naming the path and the last good checkpoint. This module is the bottom layer
below training, evaluation, reports, serving and export: it imports nothing of
theirs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from safetensors import SafetensorError

from .errors import CheckpointError

PARTS = ("obfuscator", "heads", "adversaries")  # the weights files of a finished run, by part


@dataclass(frozen=True)
class RunDir:
    """One run folder; ``RunDir(path)`` takes a path, a string or another RunDir.

    Example:
        >>> rd = RunDir("runs/digits-ours-rn18_3-20260101-120000")
        >>> rd.weights("heads").name
        'heads.safetensors'
    """

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def new(cls, name: str, root: str | Path = "runs") -> RunDir:
        """A fresh run folder's place: ``root/<name>-<YYYYmmdd-HHMMSS>``, the name ``privsplit train`` gives."""
        return cls(Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")

    # Identity --------------------------------------------------------------

    @property
    def name(self) -> str:
        """The run's name: its folder's name (what benchmarks and reports call it)."""
        return self.path.name

    def is_run(self) -> bool:
        """Whether this is a run folder at all (it has its ``config.yaml``)."""
        return self.config.is_file()

    def is_finished(self) -> bool:
        """Whether training finished (``run.json`` exists; :meth:`read_record` checks it)."""
        return self.record.is_file()

    # Paths -----------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def record(self) -> Path:
        """``run.json``: what a finished run states about itself."""
        return self.path / "run.json"

    @property
    def skipped_files(self) -> Path:
        """The list of unreadable images left out (``data.skip_bad_files``)."""
        return self.path / "skipped_files.txt"

    @property
    def metrics_csv(self) -> Path:
        """Where ``--log-csv`` writes by default (:class:`~privsplit.loggers.CSVLogger`)."""
        return self.path / "metrics.csv"

    @property
    def tensorboard_dir(self) -> Path:
        """Where ``--tensorboard`` writes by default (:class:`~privsplit.loggers.TensorBoardLogger`)."""
        return self.path / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, epoch: int) -> Path:
        """The checkpoint folder of ``epoch`` (``checkpoints/epoch-0005``)."""
        return self.checkpoints / f"epoch-{epoch:04d}"

    def checkpoint_dirs(self) -> list[Path]:
        """Complete checkpoint folders, oldest first (a temporary one is hidden: ``.tmp-epoch-...``)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.iterdir() if p.is_dir() and p.name.startswith("epoch-"))

    def weights(self, part: str) -> Path:
        """The weights file of one part of a finished run (``heads.safetensors``...)."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; valid: {', '.join(PARTS)}")
        return self.path / f"{part}.safetensors"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def eval_results(self) -> Path:
        """``eval/results.json``, what ``privsplit evaluate`` found."""
        return self.eval_dir / "results.json"

    @property
    def benchmark_stamp(self) -> Path:
        """``eval/benchmark_stamp.json``: the settings the benchmark evaluated ``eval/`` with."""
        return self.eval_dir / "benchmark_stamp.json"

    def attack_dir(self, attack: str) -> Path:
        """Where ``privsplit evaluate --attack NAME`` writes by default."""
        return self.eval_dir / f"attack-{attack}"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    # metrics.jsonl ----------------------------------------------------------

    def read_metrics(self) -> list[dict[str, Any]]:
        """The epochs' metrics, in order; ``[]`` before the first epoch.

        A line that is no metrics record (the half-written last line of a killed
        trainer, or anything else) is left out, as ``--resume`` drops it."""
        if not self.metrics.is_file():
            return []
        return [row for line in self._metric_lines() if (row := _metrics_row(line)) is not None]

    def append_metrics(self, row: dict[str, Any]) -> None:
        append_line(self.metrics, json.dumps(row))

    def keep_metrics_through(self, epoch: int) -> None:
        """Drop the lines of epochs after ``epoch`` (logged, but not checkpointed
        before a run was stopped) and any line that is no record; the others stay byte for byte."""
        if self.metrics.exists():
            kept = [ln for ln in self._metric_lines() if _epoch_of(ln) <= epoch]
            write_text(self.metrics, "".join(ln + "\n" for ln in kept))

    def _metric_lines(self) -> list[str]:
        return self.metrics.read_text(errors="replace").splitlines()

    # run.json ----------------------------------------------------------------

    def read_record(self) -> dict[str, Any]:
        """``run.json`` of a finished run, checked; a clear error if this is no run
        folder, the run did not finish, or the file is damaged. A run folder
        written before digests were recorded (no ``weights_sha256``) is read as well."""
        rd, path = self.path, self.record
        if not self.is_run():
            raise CheckpointError(f"{rd} is not a privsplit run folder (no config.yaml)")
        if not path.is_file():
            raise CheckpointError(
                f"{rd} has no finished training (no run.json): finish it with `privsplit train --resume {rd}`"
            )
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path} is not valid JSON ({e})") from None
        if not isinstance(record, dict) or record.get("status") != "finished":
            status = record.get("status") if isinstance(record, dict) else None
            raise CheckpointError(f"{rd} did not finish training (status {status!r})")
        digests = record.get("weights_sha256")
        if digests is not None and not (isinstance(digests, dict) and all(isinstance(v, str) for v in digests.values())):
            raise CheckpointError(f"{path} is corrupt (weights_sha256 is not a map of file names to digests); "
                                  "restore it or train again")
        return record

    def write_record(self, record: dict[str, Any]) -> None:
        """Write ``run.json`` atomically (last of a run's files: it marks the run finished)."""
        write_json(self.record, record)

    def drop_record(self) -> None:
        """Mark the run unfinished again (it is being resumed)."""
        self.record.unlink(missing_ok=True)

    def recorded_digest(self, part: str) -> str | None:
        """The SHA-256 ``run.json`` recorded for a part's weights file (None for a
        run folder written before digests were recorded)."""
        return (self.read_record().get("weights_sha256") or {}).get(self.weights(part).name)


def _metrics_row(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("epoch"), int) else None


def _epoch_of(line: str) -> float:
    """The epoch of a metrics.jsonl line; infinity for one that is no metrics record."""
    row = _metrics_row(line)
    return math.inf if row is None else row["epoch"]


# Writing -----------------------------------------------------------------------


def last_good(path: Path) -> str:
    """Which checkpoint survives a failed write at ``path`` (in a run folder or its checkpoints)."""
    for folder in path.parents[:3]:
        rd = RunDir(folder)
        ckpts = rd.checkpoint_dirs()
        if ckpts:
            return f"the last good checkpoint is {ckpts[-1]}"
        if rd.is_run():
            break
    return "no checkpoint was written yet"


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` into one line naming it and what survives.

    safetensors reports a full disk as ``SafetensorError`` (not an OSError).
    """
    try:
        yield
    except (OSError, SafetensorError) as e:
        why = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else str(e).splitlines()[0] if str(e) else type(e).__name__
        code = next((c for c in (errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS)
                     if getattr(e, "errno", None) == c or os.strerror(c) in why), None)  # safetensors has no errno
        hint = {errno.ENOSPC: "free some disk space", errno.EACCES: "check the folder's permissions",
                errno.EPERM: "check the folder's permissions",
                errno.EROFS: "the file system is read-only: choose another folder"}.get(code, "check the disk and the folder")
        raise CheckpointError(f"cannot write {path} ({why}): {hint}; {last_good(path)}") from None


def tmp_path(path: Path) -> Path:
    """The hidden name a file is written under before it is renamed into place."""
    return path.with_name(f".{path.name}.tmp")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    write_text(path, json.dumps(data, indent=2, default=str))


def write_text(path: Path, text: str) -> None:
    """Write text atomically (temporary file, then rename)."""
    tmp = tmp_path(path)
    with writing(path):
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def append_line(path: Path, line: str) -> None:
    """Append one line (``metrics.jsonl``), a failed write reported like any other."""
    with writing(path), open(path, "a") as f:
        f.write(line + "\n")


__all__ = ["PARTS", "RunDir", "append_line", "last_good", "tmp_path", "write_json", "write_text", "writing"]

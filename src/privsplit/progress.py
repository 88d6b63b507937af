"""Progress of a long stage, on a terminal and off one.

On a terminal a stage shows a tqdm bar. Without one (a log file, a pipe, a
job scheduler) a bar would be silent or a mess of carriage returns, so the
stage writes one plain line every few seconds instead, with its count, rate
and ETA::

    epoch 3/10: 40/113 batch (35%), 2.1 batch/s, ETA 35s

A stage that ends before the first interval prints nothing. The interval is
``PRIVSPLIT_PROGRESS_SECONDS`` (default 5) and grows with the stage's age (a
tenth of the time elapsed), so an hour-long stage logs about once a minute
or so, not every 5 seconds. Lines go to stderr: stdout stays for results
(``--json``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any, Iterable, Iterator

DEFAULT_SECONDS = 5.0

# What ``enabled=None`` means for every stage of this process: None (a bar on a
# terminal, lines elsewhere) unless a command's --no-progress turned it off.
_default_enabled: bool | None = None


def set_default(enabled: bool | None) -> None:
    """Set what ``Progress(enabled=None)`` does in this process, e.g. ``False``
    for ``--no-progress``, so that stages a command does not pass the flag to
    (data loading, file checks) are silenced too."""
    global _default_enabled
    _default_enabled = enabled


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("PRIVSPLIT_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def duration(s: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _isatty(f: IO[str]) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Count the steps of a long stage: a tqdm bar on a terminal, else a plain
    line every few seconds (count, rate, ETA).

    ``enabled``: None (the default) shows a bar on a terminal and lines
    elsewhere; True always a bar; False nothing (``--no-progress``).
    Use as an iterable wrapper, or call :meth:`update` and :meth:`close`.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool | None = None, file: IO[str] | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file or sys.stderr
        self.n = 0
        self.postfix = ""
        self.t0 = self.last = time.monotonic()
        self.printed: int | None = None  # the count of the last line printed
        self.bar = None
        self.lines = False
        if enabled is None:
            enabled = _default_enabled
        if enabled is False:
            return
        if enabled or _isatty(self.file):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.file)
        else:
            self.lines = True

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def set_postfix(self, **values: Any) -> None:
        """Shown after the count (``loss=0.31``)."""
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(**values, refresh=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines:
            now = time.monotonic()
            if now - self.last >= max(_interval(), 0.1 * (now - self.t0)):
                self.last = now
                self._line(now)

    def line(self, now: float | None = None) -> str:
        """The current state in words: count, share, rate, ETA."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.t0, 1e-9)
        rate = self.n / elapsed
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.3g} {self.unit}/s" if rate >= 0.1 else f", {elapsed / max(self.n, 1):.3g} s/{self.unit}"
        if self.total and self.n:
            text += f", ETA {duration((self.total - self.n) / rate)}" if self.n < self.total else f", {duration(elapsed)}"
        else:
            text += f", {duration(elapsed)} so far"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _line(self, now: float) -> None:
        self.printed = self.n
        print(self.line(now), file=self.file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.lines and self.printed is not None and self.printed != self.n:
            self._line(time.monotonic())  # the last line says where it ended, and in how long
        self.lines = False


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Progress:
    """:class:`Progress` over ``iterable`` (see there)."""
    return Progress(iterable, **kwargs)


__all__ = ["Progress", "progress", "duration"]

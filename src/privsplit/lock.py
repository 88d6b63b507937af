"""One writer per output folder: a lock file holding the owner's PID and host.

A trainer (``privsplit train``, also with ``--resume``) and a benchmark hold the
lock of their output folder for their whole run. A second writer is refused
with one line while the owner is alive; a lock left by a process that is gone
(``kill -9``, a crash, a reboot) is taken over. A lock from another host cannot
be checked from here, so it is refused with a line saying which file to delete
once that host's process is known to be gone.

Standard library only, so any layer may use it.

Example:
    >>> with FolderLock("runs/my-run", "run folder"):  # doctest: +SKIP
    ...     train_into("runs/my-run")
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError

LOCK_NAME = ".privsplit.lock"


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


class FolderLock:
    """The lock of ``folder`` (created if missing), taken by :meth:`acquire` or ``with``.

    Args:
        folder: the folder one writer at a time may write.
        what: how messages name it ("run folder", "benchmark output folder").

    Raises:
        ConfigError: (from :meth:`acquire`) the folder is held by a live process.
    """

    def __init__(self, folder: str | Path, what: str = "folder") -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self.held = False
        self.mine = {"pid": os.getpid(), "host": socket.gethostname()}

    def owner(self) -> dict[str, Any] | None:
        """Who holds the lock (None: nobody, or a lock file that cannot be read)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None

    def acquire(self) -> "FolderLock":
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"{self.what} {self.folder} is a file, not a folder: choose another path")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create {self.what} {self.folder} ({e.strerror})") from None
        text = json.dumps({**self.mine, "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    continue  # re-checked: it was taken over or released meanwhile
                self.path.unlink(missing_ok=True)  # left by a process that is gone
                continue
            except OSError as e:
                raise ConfigError(f"cannot create the lock file {self.path} ({e.strerror})") from None
            with os.fdopen(fd, "w") as f:
                f.write(text)
            self.held = True
            return self
        raise ConfigError(f"could not take the lock {self.path}: another process keeps taking it; try again")

    def _stale(self) -> bool:
        """True when the lock's owner is gone; raises when it is (or may be) alive."""
        owner = self.owner()
        if owner is None:  # being written this instant, or garbage: a lock older than a few seconds is garbage
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return False
            if age < 5:
                raise ConfigError(f"{self.what} {self.folder} is being locked by another process right now; try again")
            return True
        if owner.get("host") != self.mine["host"]:
            raise ConfigError(
                f"{self.what} {self.folder} is in use by process {owner['pid']} on host {owner.get('host')!r} "
                f"(since {owner.get('since', '?')}); if that process is gone, delete {self.path}"
            )
        if owner["pid"] == self.mine["pid"] or _alive(owner["pid"]):
            raise ConfigError(
                f"{self.what} {self.folder} is in use by process {owner['pid']} on this host "
                f"(since {owner.get('since', '?')}): wait for it to finish or stop it; two writers would mix their files"
            )
        return True

    def release(self) -> None:
        """Remove the lock file if this process still holds it."""
        if self.held:
            self.held = False
            owner = self.owner()
            if owner and owner.get("pid") == self.mine["pid"] and owner.get("host") == self.mine["host"]:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

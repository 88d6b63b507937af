"""Several worker processes behind one listening socket (``privsplit serve --workers N``).

One Python process answers HTTP on one core at a time: its event loop parses every
request. With ``--workers N`` the parent process binds the socket and starts N
worker processes (``spawn``: each imports torch and loads the task network itself,
nothing is shared by ``fork``). The kernel hands each new connection to one of
the workers accepting on the socket. The parent only supervises:

* it prints the serving line once every worker has loaded the run, or the first
  worker's error (one line, exit 2) and stops the others;
* a worker that dies (killed, out of memory) is replaced, and the server keeps
  serving on the others meanwhile; more than :data:`MAX_RESTARTS` deaths within
  :data:`RESTART_WINDOW` seconds stop the server with an error (a crash loop);
* SIGTERM or Ctrl-C stops every worker gracefully (each answers what it has
  queued and prints its summary line), then the parent exits 0. A worker whose
  parent dies (even by ``kill -9``) stops too: it watches a pipe from the parent.

Every limit is the server's, not each worker's:

* ``--max-connections`` is split: worker i may hold its share (the cap divided by
  N, the first ones one more), so the server never holds more than the cap.
  Eviction of unproven connections works within a worker, so one newcomer can be
  refused by its worker (503) while another worker still has room, but never
  while its own worker holds an unproven connection;
* ``--queue-samples``, when given, is split the same way (each share must still
  hold a full batch and a largest request); without it each worker has the
  default queue;
* the token, the timeouts and the body limit are the same in every worker;
* ``GET /metrics``, whichever worker answers it, gives the sums over all workers
  (prometheus-client's multiprocess mode, in a temporary folder that the parent
  removes): counters and histograms keep the counts of replaced workers, the
  gauges of requests in flight and open connections count live workers only.

Threads: each worker runs torch on ``--threads`` threads (default: the cores
divided by N); N x threads over the cores is refused unless ``--oversubscribe``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import PrivsplitError

READY_TIMEOUT = 300.0  # seconds for a worker to import torch and load the run
STOP_TIMEOUT = 30.0  # seconds a stopping worker has to answer what it holds, then it is killed
MAX_RESTARTS = 3  # deaths of ready workers tolerated within RESTART_WINDOW seconds
RESTART_WINDOW = 60.0
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it when it is imported


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, threads: int | None, oversubscribe: bool = False) -> int | None:
    """Torch threads for each worker: ``threads`` if given, else the cores divided
    among the workers (None for one worker: torch's default).

    Raises:
        PrivsplitError: ``workers`` x threads is over the cores and not ``oversubscribe``.
    """
    n = cores()
    if threads is None and workers > 1:
        threads = max(1, n // workers)
    if threads is not None and workers * threads > n and not oversubscribe:
        raise PrivsplitError(
            f"--workers {workers} x --threads {threads} = {workers * threads} torch threads on the {n} core(s) this "
            "process may use: they would contend for the cores and answer slower. Lower --workers or --threads, "
            "or give --oversubscribe")
    return threads


def shares(total: int, n: int) -> list[int]:
    """``total`` split into ``n`` whole shares that differ by at most one."""
    return [total // n + (i < total % n) for i in range(n)]


@dataclass
class WorkerSpec:
    """What a worker process needs to build its server (picklable)."""

    index: int
    count: int
    build: Callable[..., Any]  # build(spec) -> (uvicorn.Server, description), importable at module level
    settings: Any  # the CLI's namespace, or what else ``build`` reads
    token: str | None
    threads: int | None
    max_connections: int
    queue_samples: int | None

    @property
    def name(self) -> str:
        return f"worker {self.index + 1} of {self.count}"


def _worker_main(spec: WorkerSpec, sock: socket.socket, conn: multiprocessing.connection.Connection) -> None:
    """A worker process: build the server, say so to the parent, serve until told to stop
    (or until the parent is gone)."""
    try:
        try:
            server, description = spec.build(spec)
        except PrivsplitError as e:
            conn.send(("error", str(e)))
            sys.exit(2)
        conn.send(("ready", description))

        def watch() -> None:  # "stop", or EOF when the parent is gone
            try:
                conn.recv()
            except (EOFError, OSError):
                pass
            server.should_exit = True

        threading.Thread(target=watch, name="privsplit-parent-watch", daemon=True).start()
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C reached the worker before uvicorn took the signal over
        pass


@dataclass
class _Worker:
    spec: WorkerSpec
    process: Any
    conn: multiprocessing.connection.Connection


class Supervisor:
    """Start ``specs`` as worker processes serving ``sock`` and supervise them
    (see the module docstring). :meth:`run` returns the exit status.

    Args:
        specs: one per worker.
        sock: the bound listening socket.
        say: where the parent's lines go (the serving line, replaced workers).
        metrics: aggregate ``/metrics`` over the workers (multiprocess mode).
    """

    def __init__(self, specs: list[WorkerSpec], sock: socket.socket, say: Callable[[str], None] = print,
                 metrics: bool = True) -> None:
        self.specs, self.sock, self.say = specs, sock, say
        self.metrics = metrics
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []
        self.deaths: deque[float] = deque()
        self.stopping = False

    def start(self, spec: WorkerSpec) -> _Worker:
        ours, theirs = self.ctx.Pipe()
        process = self.ctx.Process(target=_worker_main, args=(spec, self.sock, theirs), name=f"privsplit-{spec.name}",
                                   daemon=False)
        process.start()
        theirs.close()
        return _Worker(spec, process, ours)

    def wait_ready(self, workers: list[_Worker]) -> str:
        """The first worker's description once every worker in ``workers`` is ready.

        Raises:
            PrivsplitError: a worker failed to start (its own one-line error), died, or took too long.
        """
        deadline = time.monotonic() + READY_TIMEOUT
        description = ""
        for w in workers:
            while not w.conn.poll(0.1):
                if self.stopping:
                    raise KeyboardInterrupt
                if not w.process.is_alive():
                    raise PrivsplitError(f"{w.spec.name} exited while loading the run ({_exit_text(w.process)})")
                if time.monotonic() > deadline:
                    raise PrivsplitError(f"{w.spec.name} did not load the run within {READY_TIMEOUT:g} s")
            try:
                kind, text = w.conn.recv()
            except EOFError:
                w.process.join(5)
                raise PrivsplitError(f"{w.spec.name} exited while loading the run ({_exit_text(w.process)})") from None
            if kind == "error":
                raise PrivsplitError(text)
            description = description or text
        return description

    def run(self, on_ready: Callable[[str], None]) -> int:
        folder = None
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def stop(*_: Any) -> None:
            self.stopping = True

        for s in before:
            signal.signal(s, stop)
        if self.metrics:
            folder = tempfile.mkdtemp(prefix="privsplit-metrics-")
            os.environ[METRICS_ENV] = folder  # the spawned workers inherit it
        try:
            self.workers = [self.start(spec) for spec in self.specs]
            try:
                on_ready(self.wait_ready(self.workers))
            except KeyboardInterrupt:
                return 0
            return self.supervise()
        finally:
            self.stop_all()
            for s, handler in before.items():
                signal.signal(s, handler)
            if folder is not None:
                os.environ.pop(METRICS_ENV, None)
                shutil.rmtree(folder, ignore_errors=True)

    def supervise(self) -> int:
        while not self.stopping:
            multiprocessing.connection.wait([w.process.sentinel for w in self.workers], timeout=0.2)
            for i, w in enumerate(self.workers):
                if w.process.is_alive() or self.stopping:
                    continue
                self.forget(w)
                now = time.monotonic()
                self.deaths.append(now)
                while self.deaths and self.deaths[0] < now - RESTART_WINDOW:
                    self.deaths.popleft()
                if len(self.deaths) > MAX_RESTARTS:
                    raise PrivsplitError(f"{w.spec.name} exited ({_exit_text(w.process)}), the {len(self.deaths)}th "
                                         f"worker to exit within {RESTART_WINDOW:g} s: stopping the server (see the "
                                         "lines above for why they exit)")
                self.say(f"{w.spec.name} (pid {w.process.pid}) exited ({_exit_text(w.process)}); the others keep "
                         "serving; starting another")
                self.workers[i] = self.start(w.spec)
                self.wait_ready([self.workers[i]])
                self.say(f"{w.spec.name} serving again (pid {self.workers[i].process.pid})")
        return 0

    def forget(self, w: _Worker) -> None:
        """A worker that exited: its live gauges leave the metrics."""
        w.conn.close()
        if self.metrics and os.environ.get(METRICS_ENV):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(w.process.pid)

    def stop_all(self) -> None:
        """Ask every worker to stop, give them :data:`STOP_TIMEOUT` seconds, kill the rest."""
        for w in self.workers:
            try:
                w.conn.send("stop")
            except (OSError, ValueError):  # exited already, or its pipe is closed
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in self.workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                self.say(f"{w.spec.name} (pid {w.process.pid}) did not stop within {STOP_TIMEOUT:g} s: killed")
                w.process.kill()
                w.process.join(5)


def _exit_text(process: Any) -> str:
    code = process.exitcode
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"

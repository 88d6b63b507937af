"""What the server tells its operator: the Prometheus metrics (``GET /metrics``),
the access log (``--access-log``), the line written at shutdown, and warnings
that a flood of bad clients cannot multiply (:class:`LogLimiter`)."""

import asyncio
import logging
import math
import os
import sys
import time
from collections import Counter
from typing import Any

from ..errors import PrivsplitError
from .protocol import DEFAULT_MAX_BATCH

LOG_WINDOW = 10.0  # seconds: each kind of warning is written in full a few times per window, then counted
LOG_FULL_LINES = 5

# uvicorn's server log: our lines look like its own and follow --log-level.
log = logging.getLogger("uvicorn.error")
# The access log (--access-log): one line per answered request, on stdout.
access_log = logging.getLogger("privsplit.access")

ENDPOINTS = ("/v1/infer", "/v1/model", "/v1/health", "/metrics")  # any other path is counted as "other"
# Every kind of refusal the server counts (privsplit_refusals_total{kind=...}): the app's answers ...
REFUSALS_BY_STATUS = {400: "bad_request", 401: "unauthorized", 404: "unknown_head", 408: "body_timeout",
                      413: "too_large", 422: "invalid_z", 503: "queue_full"}
# ... and the connection layer's (uvicorn_config), plus a client that went away mid-body.
REFUSAL_KINDS = (*REFUSALS_BY_STATUS.values(), "stopping", "client_gone", "header_timeout", "busy", "evicted", "smuggling")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PROMETHEUS_MISSING = ("the /metrics endpoint needs the prometheus-client package, which is not installed: "
                      "pip install 'privsplit[serve]' (or serve with --no-metrics)")


class LogLimiter:
    """Warnings of one kind (``"refused"``, ``"header timeout"``...) are written in
    full :data:`LOG_FULL_LINES` times per :data:`LOG_WINDOW` seconds; the rest are
    counted and written as one line when the window ends, so a client that is
    refused 5,000 times costs a handful of lines, not 5,000.

    Runs on the server's event loop (not thread-safe; it does not need to be).
    """

    def __init__(self, window: float | None = None, full: int | None = None) -> None:
        self.window = LOG_WINDOW if window is None else window
        self.full = LOG_FULL_LINES if full is None else full
        self.started: dict[str, float] = {}
        self.shown: Counter[str] = Counter()
        self.held: Counter[str] = Counter()

    def warn(self, kind: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.started.get(kind, -math.inf) >= self.window:
            self.flush(kind)
            self.started[kind], self.shown[kind] = now, 0
        if self.shown[kind] < self.full:
            self.shown[kind] += 1
            log.warning(msg, *args)
            return
        if not self.held[kind]:  # the first one held back in this window: sum up when it ends
            try:
                asyncio.get_running_loop().call_later(self.started[kind] + self.window - now, self.flush, kind)
            except RuntimeError:  # no loop (called from a thread): summed up at the next warning of this kind
                pass
        self.held[kind] += 1

    def flush(self, kind: str) -> None:
        if self.held[kind]:
            log.warning("%s: %d more in the last %g s (not logged one by one)", kind, self.held[kind], self.window)
            self.held[kind] = 0


class ServerMetrics:
    """What one server has answered: plain counts (for the line written at
    shutdown) and, with ``prometheus=True``, the same as Prometheus metrics in a
    registry of this server's own (``GET /metrics``).

    Every label value comes from a fixed set (:data:`ENDPOINTS`, the statuses the
    server sends, :data:`REFUSAL_KINDS`): hostile requests move counts, never add series.

    Under ``privsplit serve --workers N`` (the environment variable
    ``PROMETHEUS_MULTIPROC_DIR`` set before prometheus-client was imported) the
    values live in that folder and :meth:`exposition` sums every worker's.

    Raises:
        PrivsplitError: ``prometheus=True`` and prometheus-client is not installed.
    """

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH, prometheus: bool = True,
                 identity: dict[str, Any] | None = None, batch_samples: int | None = None) -> None:
        self.started = time.monotonic()
        self.passes = 0  # forward passes of the task network
        self.passed = 0  # samples through them
        self.statuses: Counter[int] = Counter()
        self.refusals: Counter[str] = Counter()
        self.in_flight = 0
        self.connections = 0
        self.registry = None
        if not prometheus:
            return
        try:
            import prometheus_client as prom
        except ImportError:
            raise PrivsplitError(PROMETHEUS_MISSING) from None
        self.registry = r = prom.CollectorRegistry()
        self._exposed = r  # what /metrics shows: this registry, or every worker's files under --workers
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            self._exposed = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(self._exposed)
        self._requests = prom.Counter("privsplit_requests", "HTTP requests answered, by endpoint and status",
                                      ["endpoint", "status"], registry=r)
        self._refusals = prom.Counter("privsplit_refusals", "requests or connections refused or cut off, by kind",
                                      ["kind"], registry=r)
        for kind in REFUSAL_KINDS:
            self._refusals.labels(kind)  # every kind shows from the start, at 0
        self._latency = prom.Histogram("privsplit_request_duration_seconds",
                                       "time from the request head to the end of the answer, by endpoint",
                                       ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        sizes = sorted({*(2**i for i in range(max(max_batch, 1).bit_length())), max_batch})
        self._batch = prom.Histogram("privsplit_batch_size", "samples per answered POST /v1/infer",
                                     buckets=sizes, registry=r)
        most = max(batch_samples or 1, max_batch, 1)
        formed = sorted({*(2**i for i in range(most.bit_length())), most})
        self._formed = prom.Histogram("privsplit_formed_batch_size",
                                      "samples per forward pass of the task network (with batching: of several "
                                      "requests)", buckets=formed, registry=r)
        # multiprocess_mode: how the workers' values add up (ignored with one process).
        self._in_flight = prom.Gauge("privsplit_requests_in_flight", "requests being answered now", registry=r,
                                     multiprocess_mode="livesum")
        self._connections = prom.Gauge("privsplit_connections_open", "open client connections", registry=r,
                                       multiprocess_mode="livesum")
        prom.Gauge("privsplit_start_time_seconds", "when the server started (Unix time)", registry=r,
                   multiprocess_mode="min").set(time.time())
        if identity:
            keys = ("method", "backbone", "split")
            prom.Gauge("privsplit_model_info", "the run this server answers for (always 1)", keys,
                       registry=r, multiprocess_mode="max").labels(*(str(identity.get(k, ""))[:64] for k in keys)).set(1)

    def request_started(self) -> None:
        self.in_flight += 1
        if self.registry is not None:
            self._in_flight.inc()

    def request_done(self, endpoint: str, status: int, seconds: float) -> None:
        self.in_flight -= 1
        self.statuses[status] += 1
        if self.registry is not None:
            self._in_flight.dec()
            self._requests.labels(endpoint, str(status)).inc()
            self._latency.labels(endpoint).observe(seconds)

    def refused(self, kind: str) -> None:
        self.refusals[kind] += 1
        if self.registry is not None:
            self._refusals.labels(kind).inc()

    def batch(self, n: int) -> None:
        if self.registry is not None:
            self._batch.observe(n)

    def formed(self, n: int) -> None:
        """One forward pass of ``n`` samples."""
        self.passes += 1
        self.passed += n
        if self.registry is not None:
            self._formed.observe(n)

    def connection(self, change: int) -> None:
        self.connections += change
        if self.registry is not None:
            self._connections.inc(change)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        import prometheus_client as prom

        return prom.generate_latest(self._exposed), prom.CONTENT_TYPE_LATEST

    def summary(self) -> str:
        """``up 12 s: 42 request(s) answered (200: 40, 401: 2); refused: unauthorized 2``"""
        up = time.monotonic() - self.started
        n = sum(self.statuses.values())
        by = ", ".join(f"{s}: {c}" for s, c in sorted(self.statuses.items()))
        refused = ", ".join(f"{k} {c}" for k, c in sorted(self.refusals.items()) if c) or "none"
        passes = f"; {self.passes} forward pass(es), {self.passed / self.passes:.1f} samples each" if self.passes else ""
        return f"up {up:.0f} s: {n} request(s) answered{f' ({by})' if by else ''}; refused: {refused}{passes}"


class _Observe:
    """ASGI middleware: counts and times every HTTP request (:class:`ServerMetrics`)
    and writes the access log line when asked."""

    def __init__(self, app: Any, metrics: ServerMetrics, access: bool = False) -> None:
        self.app, self.metrics, self.access = app, metrics, access

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        answer = {"status": 500, "bytes": 0}  # an exception that escapes is answered 500 further out

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
            await send(message)

        self.metrics.request_started()
        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            self.metrics.request_done(path if path in ENDPOINTS else "other", answer["status"], seconds)
            if self.access:
                access_log.info("%s \"%s %s\" %d %.1f ms %d B", _peer(scope), scope.get("method", "?"),
                                _shown_target(scope), answer["status"], 1000 * seconds, answer["bytes"])


def _peer(scope: dict) -> str:
    client = scope.get("client")
    return "%s:%s" % tuple(client) if client else "?"


def _shown_target(scope: dict) -> str:
    """The request target as the access log shows it: printable ASCII, at most 200 characters."""
    target = scope.get("path", "")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    shown = "".join(c if " " < c < "\x7f" and c != '"' else "%%%02X" % ord(c) for c in target)
    return shown if len(shown) <= 200 else shown[:200] + "..."


def _enable_access_log() -> None:
    """Access lines go to stdout, with a time stamp (once per process)."""
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
        access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False

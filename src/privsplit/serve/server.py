"""The server: runs only the task network (the heads) on representations ``z``.

``privsplit serve RUN_DIR`` loads ``heads.safetensors`` and ``run.json`` from the
run folder; the obfuscator's weights are never read. Endpoints:

* ``POST /v1/infer[?head=NAME]``: body = one message of the wire format
  (:mod:`privsplit_edge.protocol`), answer = class probabilities, predicted
  label and label names as JSON;
* ``GET /v1/model``: what the server expects (``z`` shape and dtypes, method,
  split point, heads and labels, ``sha256`` of the weights, limits);
* ``GET /v1/health``: ``{"status": "ok"}`` (no token needed, tells nothing).

Without a token the server binds to loopback only; with ``--token-file`` every
request but ``/v1/health`` needs ``Authorization: Bearer <token>`` (compared in
constant time; the token is at least 16 printable ASCII characters). Every bad
request gets a 4xx and a JSON error saying what was expected; the server keeps
serving.

Slow and idle clients cannot hold the server (all limits are ``privsplit
serve`` flags, see :func:`uvicorn_config`):

* the request head must arrive within ``--header-timeout`` seconds of the
  connection opening (or of its first byte, for the next request on a
  kept-alive connection), else 408 and the connection is closed;
* the body of ``POST /v1/infer`` must arrive within ``--body-timeout`` seconds,
  else 408 and close; any answer sent before the body has fully arrived
  (401, 404, 408, 413, ...) closes the connection;
* an idle kept-alive connection is closed after ``--keep-alive`` seconds;
* at most ``--max-connections`` connections are open, and a connection that
  has not yet sent a complete request head with a valid token (an
  *unproven* one) cannot hold a slot against a newcomer: when the cap is
  reached, a new connection takes the slot of the oldest unproven connection
  of the peer address that holds the most unproven ones (that one is answered
  503 and closed). Only when every slot is held by a proven connection (one
  that sent an authenticated request; without a token, any complete request)
  is the newcomer answered 503 and closed before its request is read.

Why this shape: the cap is checked before any token can be read, so a cap
that refuses newcomers lets one machine with no token hold every slot with
silent sockets, reopening each as the header timeout closes it. A per-address
limit alone does not help behind a NAT or on one host (a valid client shares
the address), and a shorter header timeout only shortens each hold. With
eviction an attacker's sockets only ever push out each other (or, for a
moment, a newcomer that has not sent its head yet: a valid client sends it at
once, and the newest connection is evicted last); a proven client is never
pushed out.

A request carrying both ``Content-Length`` and ``Transfer-Encoding`` is
answered 400 and the connection closed (RFC 9112 section 6.1: the two
disagree about where the body ends, the classic request-smuggling vector).

With ``--tls-cert``/``--tls-key`` the server speaks HTTPS only.

Observability: ``GET /metrics`` answers in the Prometheus text format (the
``prometheus-client`` library, extra ``[serve]``): requests by endpoint and
status, refusals by kind, a latency histogram per endpoint, the batch sizes of
answered ``/v1/infer`` requests, requests in flight and open connections. It
needs the bearer token like ``/v1/model`` when the server has one (a scraper
sends it with ``authorization: {credentials_file: TOKEN_FILE}``); every label
comes from a fixed set (an unknown path counts as ``other``), so no client can
grow the metrics. ``--access-log`` writes one line per answered request to
stdout; when the server stops it writes one line summing up what it served.

Refused or cut-off clients cost warning lines in the log, never a traceback,
and at most a few per kind every 10 s: the rest are counted and summed up in
one line ("... 4995 more in the last 10 s") so a flood cannot fill the disk.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations
# at run time, and `Request` is imported inside create_app (fastapi is optional).
import asyncio
import contextlib
import hmac
import http
import json
import logging
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from privsplit_edge import protocol as wire
from privsplit_edge.protocol import is_loopback  # noqa: F401  (cli.serve and tests import it from here)

from ..errors import PrivsplitError
from .protocol import (
    API,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    EdgeError,
    WireFormatError,
    decode_z,
    expected_message,
    run_identity,
)

LOG_WINDOW = 10.0  # seconds: each kind of warning is written in full a few times per window, then counted
LOG_FULL_LINES = 5

# uvicorn's server log: our lines look like its own and follow --log-level.
log = logging.getLogger("uvicorn.error")
# The access log (--access-log): one line per answered request, on stdout.
access_log = logging.getLogger("privsplit.access")

ENDPOINTS = ("/v1/infer", "/v1/model", "/v1/health", "/metrics")  # any other path is counted as "other"
# Every kind of refusal the server counts (privsplit_refusals_total{kind=...}): the app's answers ...
REFUSALS_BY_STATUS = {400: "bad_request", 401: "unauthorized", 404: "unknown_head", 408: "body_timeout",
                      413: "too_large", 422: "invalid_z"}
# ... and the connection layer's (uvicorn_config), plus a client that went away mid-body.
REFUSAL_KINDS = (*REFUSALS_BY_STATUS.values(), "client_gone", "header_timeout", "busy", "evicted", "smuggling")
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

    Raises:
        PrivsplitError: ``prometheus=True`` and prometheus-client is not installed.
    """

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH, prometheus: bool = True,
                 identity: dict[str, Any] | None = None) -> None:
        self.started = time.monotonic()
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
        self._in_flight = prom.Gauge("privsplit_requests_in_flight", "requests being answered now", registry=r)
        self._connections = prom.Gauge("privsplit_connections_open", "open client connections", registry=r)
        prom.Gauge("privsplit_start_time_seconds", "when the server started (Unix time)",
                   registry=r).set(time.time())
        if identity:
            keys = ("method", "backbone", "split")
            prom.Gauge("privsplit_model_info", "the run this server answers for (always 1)", keys,
                       registry=r).labels(*(str(identity.get(k, ""))[:64] for k in keys)).set(1)

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

    def connection(self, change: int) -> None:
        self.connections += change
        if self.registry is not None:
            self._connections.inc(change)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        import prometheus_client as prom

        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST

    def summary(self) -> str:
        """``up 12 s: 42 request(s) answered (200: 40, 401: 2); refused: unauthorized 2``"""
        up = time.monotonic() - self.started
        n = sum(self.statuses.values())
        by = ", ".join(f"{s}: {c}" for s, c in sorted(self.statuses.items()))
        refused = ", ".join(f"{k} {c}" for k, c in sorted(self.refusals.items()) if c) or "none"
        return f"up {up:.0f} s: {n} request(s) answered{f' ({by})' if by else ''}; refused: {refused}"


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


class TaskNetwork:
    """The heads of a finished run, ready to answer for batches of ``z``.

    Only ``heads.safetensors`` is loaded (safetensors: no code runs on load).

    Args:
        run_dir: a finished run folder.
        device: where the heads run.
    """

    def __init__(self, run_dir: str | Path, device: str = "cpu") -> None:
        from ..config import load_config
        from ..data.base import TaskInfo
        from ..methods import build_method
        from ..run import recorded_digest
        from ..train.checkpoint import load_weights, read_weights

        rd = Path(run_dir)
        self.run_dir = rd
        self.identity = run_identity(rd)
        cfg = load_config(rd / "config.yaml")
        # The heads are rebuilt from the config alone: the method knows its
        # server-side network (the backbone's rest for a cut, a whole ResNet18 for
        # the image-level baselines, an MLP for maxent). The obfuscator is never
        # built or read here.
        method = build_method(cfg)
        info = TaskInfo(cfg.data.name, {h["target"]: h["labels"] for h in self.identity["heads"]},
                        tuple(self.identity["image_shape"]))
        heads = nn.ModuleDict(
            {h["name"]: method.server_head(info, len(h["labels"])) for h in self.identity["heads"]}
        )
        weights = rd / "heads.safetensors"
        load_weights(heads, read_weights(weights, recorded_digest(rd, weights.name)), str(weights))
        self.heads = heads.to(device).eval()
        self.device = torch.device(device)
        self.z_shape = tuple(self.identity["z_shape"])
        self.info = {h["name"]: h for h in self.identity["heads"]}
        self.default_head = self.identity["heads"][0]["name"]
        self._dry_run(rd)

    @torch.inference_mode()
    def _dry_run(self, rd: Path) -> None:
        """One forward of a zero ``z`` through every head: ``run.json`` states the
        shape clients will send, and a shape the heads cannot take (an edited or
        damaged ``run.json``) must stop the server at start, not answer 500 later."""
        shape = self.z_shape
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 16 for d in shape) \
                or math.prod(shape) > 1 << 26:
            raise PrivsplitError(f"{rd / 'run.json'} states z_shape {list(shape)}, which is no representation shape: "
                                 "the run folder is damaged; restore run.json or train again")
        z = torch.zeros(1, *shape, device=self.device)
        for name, head in self.heads.items():
            classes = len(self.info[name]["labels"])
            try:
                out = head(z)
                problem = None if tuple(out.shape) == (1, classes) else f"it gives {tuple(out.shape)}, not (1, {classes})"
            except Exception as e:  # noqa: BLE001 - any failure means the stated shape is wrong; say so in one line
                problem = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if problem:
                raise PrivsplitError(
                    f"{rd / 'run.json'} states z_shape {list(shape)}, but head {name!r} cannot take it ({problem}): "
                    "run.json was edited or belongs to another run; restore it or train again"
                )

    @torch.inference_mode()
    def predict(self, z: np.ndarray, head: str | None = None) -> dict[str, Any]:
        """Probabilities of head ``head`` (default: the first) for ``z`` (N, *z_shape).

        Raises:
            WireFormatError: status 422 when the network's output is not finite
                (finite but huge values of ``z`` overflow inside the network).
        """
        name = head or self.default_head
        x = torch.from_numpy(np.array(z, dtype=np.float32)).to(self.device)  # float16 is widened here
        logits = self.heads[name](x).float()
        probs = logits.softmax(1)
        broken = ~(logits.isfinite().all(1) & probs.isfinite().all(1))
        if broken.any():
            rows = broken.nonzero().flatten().tolist()
            raise WireFormatError(
                f"the network's output is not finite for sample(s) {rows[:10]}{' ...' if len(rows) > 10 else ''}: "
                f"z holds values far outside what the obfuscator produces (largest |z| {float(np.abs(z).max()):.3g})",
                422,
            )
        probs = probs.cpu().numpy()  # (N, classes)
        labels = self.info[name]["labels"]
        preds = []
        for p in probs:
            i = int(p.argmax())
            preds.append({"index": i, "label": labels[i], "probability": float(p[i]), "probabilities": p.tolist()})
        return {"head": name, "target": self.info[name]["target"], "labels": labels, "n": len(preds), "predictions": preds}


def create_app(
    run_dir: str | Path | TaskNetwork,
    token: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_bytes: int | None = None,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    *,
    metrics: bool = True,
    access_log: bool = False,
    on_stop: Callable[[str], None] | None = None,
) -> Any:
    """The FastAPI application serving a run's task network.

    Args:
        run_dir: a finished run folder (or an already loaded :class:`TaskNetwork`).
        token: bearer token required on every endpoint but ``/v1/health``; None = no check.
        max_batch: the most representations per request.
        max_body_bytes: the largest request body (413 above); default: what
            ``max_batch`` float32 representations need. At least what one needs.
        body_timeout: seconds for a request body to arrive in full (408 after).
        metrics: serve ``GET /metrics`` (Prometheus text format; needs the token
            when there is one). The counts are kept either way (``app.state.metrics``).
        access_log: one line per answered request on stdout (logger ``privsplit.access``).
        on_stop: called with one line summing up what was served when the server
            stops (default: logged at info level).

    Raises:
        PrivsplitError: a setting is out of range, or ``metrics`` without prometheus-client.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    check_int("max_batch (--max-batch)", max_batch, 1)
    _check_seconds("body_timeout (--body-timeout)", body_timeout)
    if token is not None:
        check_token(token, "given to the server")
    net = run_dir if isinstance(run_dir, TaskNetwork) else TaskNetwork(run_dir)
    per_sample = math.prod(net.z_shape) * 4  # float32
    limit = 8 + MAX_HEADER_BYTES + max_batch * per_sample
    if max_body_bytes is not None:
        check_int("max_body_bytes (--max-body-bytes)", max_body_bytes, 8 + MAX_HEADER_BYTES + per_sample,
                   "what one float32 representation with its header needs; leave it out for the default")
        limit = max_body_bytes
    expected = expected_message(net.z_shape, max_batch)
    secret = token.encode() if token else None
    logs = LogLimiter()
    stats = ServerMetrics(max_batch, prometheus=metrics, identity=net.identity)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        (on_stop or log.info)(f"stopped serving {net.run_dir}: {stats.summary()}")

    app = FastAPI(title="privsplit task network", version=API, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    if access_log:
        _enable_access_log()
    app.add_middleware(_Observe, metrics=stats, access=access_log)

    def error(status: int, message: str, exp: dict | None = None, headers: dict | None = None,
              kind: str | None = None) -> JSONResponse:
        stats.refused(kind or REFUSALS_BY_STATUS.get(status, "bad_request"))
        body: dict[str, Any] = {"error": message}
        if exp:
            body["expected"] = exp
        return JSONResponse(body, status_code=status, headers=headers)

    def refused(request: Request) -> JSONResponse | None:
        if secret is None:
            return None
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        # compare_digest takes the same time wherever the first difference is.
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode("latin-1"), secret):
            return error(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                         headers={"WWW-Authenticate": "Bearer"})
        return None

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model(request: Request) -> Any:
        if (r := refused(request)) is not None:
            return r
        return {
            "api": API,
            **net.identity,
            "dtypes": ["float32", "float16"],
            "default_head": net.default_head,
            "max_batch": max_batch,
            "max_body_bytes": limit,
            "body_timeout_s": body_timeout,
            "wire_format": "safetensors bytes with one tensor 'z' of shape [N, *z_shape]; see privsplit_edge.protocol",
        }

    @app.post("/v1/infer")
    async def infer(request: Request, head: str | None = None) -> Any:
        if (r := refused(request)) is not None:
            return r
        app.state.infer_requests += 1  # counted before any check: tests assert a client sent nothing
        if head is not None and head not in net.info:
            return error(404, f"unknown head {head!r}; this server has {', '.join(net.info)}")
        too_big = f"request body over the {limit} bytes allowed: send at most {max_batch} samples"
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return error(400, f"Content-Length {declared!r} is not a number", expected)
            if int(declared) > limit:
                return error(413, too_big, expected, {"Connection": "close"})
        body = bytearray()

        async def receive() -> bool:  # False: over the limit
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > limit:  # a body sent without (or with a false) Content-Length
                    return False
            return True

        who = "%s:%s" % tuple(request.client or ("?", "?"))
        try:
            # uvicorn has no body timeout: the whole body must arrive by this deadline.
            complete = await asyncio.wait_for(receive(), body_timeout)
        except asyncio.TimeoutError:
            logs.warn("body timeouts", "client %s sent %d of %s body bytes in %g s: answered 408", who, len(body),
                      declared or "?", body_timeout)
            return error(408, f"the request body did not arrive within {body_timeout:g} s "
                         f"({len(body)} of {declared or 'unknown'} bytes came)", headers={"Connection": "close"})
        except ClientDisconnect:
            logs.warn("clients gone mid-body", "client %s went away mid-body (%d of %s bytes came)", who, len(body),
                      declared or "?")
            return error(400, "client went away mid-body", kind="client_gone")  # nobody reads it
        if not complete:
            return error(413, too_big, expected, {"Connection": "close"})
        try:
            z = decode_z(bytes(body), net.z_shape, max_batch)
            answer = await run_in_threadpool(net.predict, z, head)
        except WireFormatError as e:
            return error(e.status, str(e), e.expected or expected)
        stats.batch(answer["n"])
        return answer

    if metrics:
        @app.get("/metrics")
        async def metrics_endpoint(request: Request) -> Any:
            if (r := refused(request)) is not None:
                return r
            body, content_type = stats.exposition()
            return Response(body, media_type=content_type)

    app.state.task_network = net
    app.state.metrics = stats
    app.state.infer_requests = 0
    app.state.secret = secret  # the connection layer tells proven clients from the rest (uvicorn_config)
    return app


# --- command line -------------------------------------------------------------------------------------------


def check_token(token: str, where: str) -> str:
    """``token`` if it is a usable bearer token (:func:`privsplit_edge.protocol.check_token`)."""
    try:
        return wire.check_token(token, where)
    except EdgeError as e:
        raise PrivsplitError(str(e)) from None


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (:func:`privsplit_edge.protocol.read_token`)."""
    try:
        return wire.read_token(path)
    except EdgeError as e:
        raise PrivsplitError(str(e)) from None


def check_int(name: str, value: Any, least: int, why: str = "", most: int | None = None) -> None:
    """A one-line :class:`PrivsplitError` unless ``value`` is an int from ``least`` (to ``most``)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least or (most is not None and value > most):
        span = f"from {least} to {most}" if most is not None else f"at least {least}"
        raise PrivsplitError(f"{name} must be an integer {span}{f' ({why})' if why else ''}, got {value!r}")


def _check_seconds(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0 < value < math.inf):
        raise PrivsplitError(f"{name} must be a positive number of seconds, got {value!r}")


def _open_files_limit() -> int | None:
    """How many files this process may open (``ulimit -n``); None: no limit, or not known."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _raw_response(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 JSON error response that closes the connection."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def _protocol(header_timeout: float, max_connections: int, secret: bytes | None,
              metrics: ServerMetrics | None = None) -> type:
    """uvicorn's h11 protocol plus a header deadline, a cap on open connections
    that unproven connections cannot hold (see the module docstring), a refusal
    of requests with both Content-Length and Transfer-Encoding, and no
    keep-alive after answering a request whose body has not fully arrived."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    busy = _raw_response(503, f"server busy: {max_connections} connections open; try again later")
    evicted = _raw_response(503, "server busy: this connection sent no request in time and made room for another; "
                                 "send the request right after connecting")
    late = _raw_response(408, f"the request head did not arrive within {header_timeout:g} s")
    smuggled = _raw_response(400, "a request may carry Content-Length or Transfer-Encoding, not both (RFC 9112 "
                                  "section 6.1); the connection is closed")
    logs = LogLimiter()

    def count(kind: str) -> None:
        if metrics is not None:
            metrics.refused(kind)

    class Protocol(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None
        proven = False  # sent a complete request head with a valid token (without a token: any complete head)
        opened = 0.0
        counted = False  # in the open-connections gauge

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            live = self.connections
            if len(live) >= max_connections:  # those being closed do not count
                live = [c for c in self.connections if not c.transport.is_closing()]
            if len(live) >= max_connections and not self.make_room(list(live)):
                self.transport = transport  # connection_lost needs it
                logs.warn("refused connections", "refused a connection: %d open, all with a proven client "
                          "(--max-connections)", len(live))
                count("busy")
                transport.write(busy)
                transport.close()
                return
            super().connection_made(transport)
            if metrics is not None:
                metrics.connection(+1)
                self.counted = True
            self.opened = time.monotonic()
            self.conn.next_event = self.checked_event(self.conn.next_event)  # type: ignore[method-assign]
            self.start_header_clock()

        def make_room(self, live: list["Protocol"]) -> bool:
            """Close the oldest unproven connection of the address holding the most
            of them; False when every open connection is proven."""
            unproven = [c for c in live if not c.proven]
            if not unproven:
                return False
            per_peer = Counter(c.client[0] if c.client else "?" for c in unproven)
            peer = per_peer.most_common(1)[0][0]
            victim = min((c for c in unproven if (c.client[0] if c.client else "?") == peer), key=lambda c: c.opened)
            logs.warn("made room", "closed an unproven connection from %s (open %.2f s, no authenticated request "
                      "yet) to make room for a new one (--max-connections %d)", peer,
                      time.monotonic() - victim.opened, max_connections)
            count("evicted")
            if victim.cycle is None or victim.cycle.response_complete:
                victim.transport.write(evicted)  # no response under way: the client may read why
            victim.transport.close()
            return True

        def checked_event(self, next_event: Any) -> Any:
            def wrapped() -> Any:
                event = next_event()
                if isinstance(event, h11.Request):
                    names = {k.lower() for k, _ in event.headers}
                    if b"content-length" in names and b"transfer-encoding" in names:
                        logs.warn("refused smuggling", "client %s sent both Content-Length and Transfer-Encoding: "
                                  "answered 400 and closed", self.who())
                        count("smuggling")
                        self.transport.write(smuggled)
                        self.transport.close()
                        return h11.NEED_DATA  # uvicorn stops reading; nothing of the body is parsed
                    self.proven = self.proven or secret is None or _bearer_ok(event.headers, secret)
                return event

            return wrapped

        def who(self) -> str:
            return "%s:%d" % self.client if self.client else "?"

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return  # refused or cut off: nothing more is read
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # a request head is (partly) due
                self.start_header_clock()
            elif self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
            if self.counted:
                self.counted = False
                metrics.connection(-1)  # type: ignore[union-attr]
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self.transport.close()  # answered early: do not wait for (or read) the rest of the body

        def start_header_clock(self) -> None:
            if self.header_timer is None and not self.transport.is_closing():
                self.header_timer = self.loop.call_later(header_timeout, self.header_timed_out)

        def header_timed_out(self) -> None:
            self.header_timer = None
            if not self.transport.is_closing():
                logs.warn("header timeouts", "client %s sent no complete request head in %g s: answered 408",
                          self.who(), header_timeout)
                count("header_timeout")
                self.transport.write(late)  # no response is under way: the client is still sending its head
                self.transport.close()

    return Protocol


def _bearer_ok(headers: Any, secret: bytes) -> bool:
    """Whether raw request headers carry ``Authorization: Bearer <secret>`` (constant-time compare)."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, given = bytes(value).partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), secret)
    return False


def uvicorn_config(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    keep_alive: float = DEFAULT_KEEP_ALIVE,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    log_level: str = "warning",
    access_log: bool = False,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
) -> Any:
    """The ``uvicorn.Config`` that serves ``app`` with this server's connection limits.

    uvicorn's own settings cover the keep-alive timeout (``timeout_keep_alive``)
    and the size of a request head (h11's 16 KiB); it has no header timeout and
    its ``limit_concurrency`` only answers 503 once a request head has arrived
    (a client that never sends one still holds a socket). So the HTTP protocol
    is uvicorn's h11 one (pure Python, also where ``httptools`` is installed)
    with a header deadline and a cap on open connections; the body timeout is
    the endpoint's (:func:`create_app`). A connection counts as proven once it
    sent a request head with the app's token (``app.state.secret``).

    ``tls_cert`` and ``tls_key`` (PEM files, both or neither) make it HTTPS;
    they are loaded here, so a bad pair is a one-line error before binding.

    Raises:
        PrivsplitError: a setting is out of range.
    """
    import uvicorn

    check_int("port (--port)", port, 0, most=65535)
    _check_seconds("header_timeout (--header-timeout)", header_timeout)
    _check_seconds("keep_alive (--keep-alive)", keep_alive)
    check_int("max_connections (--max-connections)", max_connections, 1)
    files = _open_files_limit()
    if files is not None and max_connections > files - 64:
        raise PrivsplitError(f"--max-connections {max_connections} is over what this process may open "
                             f"(ulimit -n is {files}, some are needed for files): lower it or raise the limit")
    tls = check_tls(tls_cert, tls_key)
    return uvicorn.Config(
        app, host=host, port=port, ws="none",
        http=_protocol(header_timeout, max_connections, getattr(app.state, "secret", None),
                       getattr(app.state, "metrics", None)),
        timeout_keep_alive=keep_alive, log_level=log_level, access_log=access_log,  # type: ignore[arg-type]
        **({"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}),
    )


def check_tls(cert: str | Path | None, key: str | Path | None) -> tuple[Path, Path] | None:
    """The certificate and key files if they make a usable TLS server context;
    None when neither is given. Raises a one-line :class:`PrivsplitError` otherwise."""
    import ssl

    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise PrivsplitError("--tls-cert and --tls-key go together: give both (the certificate and its private key)")
    for flag_name, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            kind = "a folder" if Path(path).is_dir() else "missing"
            raise PrivsplitError(f"{flag_name} {path} is {kind}: give a PEM file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError, ValueError) as e:
        raise PrivsplitError(f"cannot use --tls-cert {cert} with --tls-key {key} ({e}): give a PEM certificate "
                             "and the private key that belongs to it (not encrypted)") from None
    return Path(cert), Path(key)


class BackgroundServer:
    """Run ``app`` with uvicorn in a background thread (tests, benchmarks, notebooks).

    Args:
        app: the application from :func:`create_app`.
        host: address to bind; loopback by default.
        port: 0 picks a free port; the chosen one is in :attr:`url`.
        limits: ``header_timeout``, ``keep_alive``, ``max_connections``, ``tls_cert``, ``tls_key``
            as for :func:`uvicorn_config`.

    Example:
        >>> with BackgroundServer(create_app("runs/my-run")) as srv:  # doctest: +SKIP
        ...     Client("runs/my-run", srv.url).infer(["digit.png"])
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **limits: Any) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn_config(app, host, port, **limits))
        self.host = host
        self.scheme = "https" if limits.get("tls_cert") else "http"
        self.url = ""

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise PrivsplitError(f"the server did not start on {self.host} within {timeout:.0f} s")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"{self.scheme}://{self.host}:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

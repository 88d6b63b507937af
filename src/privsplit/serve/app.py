"""The application: the HTTP endpoints over a :class:`TaskNetwork` (FastAPI).

An ASGI app like any other: tests drive it without a socket (``httpx.ASGITransport``),
:mod:`privsplit.serve.transport` serves it with the connection limits.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations
# at run time, and `Request` is imported inside create_app (fastapi is optional).
import asyncio
import contextlib
import hmac
import math
from pathlib import Path
from typing import Any, Callable

from .batching import Batcher, QueueFull
from .network import TaskNetwork
from .observe import REFUSALS_BY_STATUS, LogLimiter, ServerMetrics, _enable_access_log, _Observe, log
from .protocol import (
    API,
    DEFAULT_BATCH_SAMPLES,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_DELAY_MS,
    QUEUE_BATCHES,
    MAX_HEADER_BYTES,
    WireFormatError,
    decode_z,
    expected_message,
)
from .settings import check_int, check_milliseconds, check_seconds, check_token

MAX_DELAY_MS = 1000.0  # a longer wait for a batch to fill only adds latency


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
    batching: bool = True,
    batch_samples: int = DEFAULT_BATCH_SAMPLES,
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS,
    queue_samples: int | None = None,
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
        batching: gather concurrent requests for the same head into one forward pass
            (:mod:`privsplit.serve.batching`); False runs each request alone.
        batch_samples: most samples in one forward pass (a larger request runs alone).
        max_delay_ms: most milliseconds a batch waits for more requests after its first;
            it waits only while fewer requests came than in the last batch (0: never).
        queue_samples: most samples waiting for a batch; a request beyond it is answered
            503 with ``Retry-After`` at once. Default: ``QUEUE_BATCHES`` full batches, and
            at least one largest request.

    Raises:
        PrivsplitError: a setting is out of range, or ``metrics`` without prometheus-client.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    check_int("max_batch (--max-batch)", max_batch, 1)
    check_seconds("body_timeout (--body-timeout)", body_timeout)
    check_int("batch_samples (--batch-samples)", batch_samples, 1)
    check_milliseconds("max_delay_ms (--max-delay)", max_delay_ms, MAX_DELAY_MS)
    least_queue = max(batch_samples, max_batch)
    if queue_samples is None:
        queue_samples = max(QUEUE_BATCHES * batch_samples, max_batch)
    check_int("queue_samples (--queue-samples)", queue_samples, least_queue,
              "one full batch (--batch-samples) and one largest request (--max-batch) must fit")
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
    stats = ServerMetrics(max_batch, prometheus=metrics, identity=net.identity, batch_samples=batch_samples)
    batcher = Batcher(net, batch_samples, max_delay_ms / 1000, queue_samples, stats.formed) if batching else None

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        if batcher is not None:
            batcher.start()
        yield
        if batcher is not None:
            await batcher.stop()
        (on_stop or log.info)(f"stopped serving {net.run_dir}: {stats.summary()}")

    # FastAPI's native OpenTelemetry (0.165+) checks on every request whether a provider was
    # configured: 6.5% of the event loop's time under load (py-spy, 32 clients), for tracing
    # that privsplit never configures. The server's own metrics are /metrics.
    app = FastAPI(title="privsplit task network", version=API, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan, telemetry={"tracing": False, "metrics": False, "logs": False})
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
            "batching": {"batch_samples": batch_samples, "max_delay_ms": max_delay_ms,
                         "queue_samples": queue_samples} if batcher is not None else None,
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
            z = decode_z(bytes(body), net.z_shape, max_batch)  # a malformed body is refused here, never queued
            if batcher is None:
                stats.formed(len(z))
                answer = await run_in_threadpool(net.predict, z, head)
            else:
                answer = await batcher.infer(z, head or net.default_head)
        except WireFormatError as e:
            return error(e.status, str(e), e.expected or expected)
        except QueueFull as e:
            return error(503, str(e), headers={"Retry-After": "1"}, kind=e.kind)
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
    app.state.batcher = batcher
    app.state.infer_requests = 0
    app.state.secret = secret  # the connection layer tells proven clients from the rest (uvicorn_config)
    return app

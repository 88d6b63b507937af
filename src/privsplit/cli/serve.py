"""``privsplit serve``: serve a run's task network over HTTP (the work is in :mod:`privsplit.serve.server`)."""

from __future__ import annotations

import argparse
import socket

from privsplit_edge.protocol import is_loopback

from ..errors import PrivsplitError
from ..serve.protocol import (  # torch-free: --help shows them without importing the server
    DEFAULT_BATCH_SAMPLES,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_DELAY_MS,
    QUEUE_BATCHES,
)
from ..serve.settings import check_int, read_token
from ..serve.workers import WorkerSpec, threads_per_worker
from .common import add_device, resolve_device_flag, set_threads


def cmd_serve(args: argparse.Namespace) -> int:
    check_int("--workers", args.workers, 1)
    if args.threads is not None:
        check_int("--threads", args.threads, 1)
    threads = threads_per_worker(args.workers, args.threads, args.oversubscribe)
    token = read_token(args.token_file) if args.token_file else None
    if token is None and not is_loopback(args.host):
        raise PrivsplitError(
            f"refusing to serve on {args.host} without a token: anyone on the network could use it. "
            "Give --token-file FILE, or bind to 127.0.0.1"
        )
    if args.workers == 1:
        server, line = build(WorkerSpec(0, 1, build, args, token, threads, args.max_connections, args.queue_samples))
        sock = listen(args.host, args.port)
        print(line.replace("{port}", str(sock.getsockname()[1])), flush=True)
        server.run(sockets=[sock])
        return 0
    return serve_workers(args, token, threads)


def serve_workers(args: argparse.Namespace, token: str | None, threads: int | None) -> int:
    """``--workers N``: N processes on one socket, each with its share of the limits (:mod:`privsplit.serve.workers`)."""
    from ..serve.transport import check_tls
    from ..serve.workers import Supervisor, shares

    n = args.workers
    if args.max_connections < n:
        raise PrivsplitError(f"--max-connections {args.max_connections} is fewer than --workers {n}: each worker "
                             "needs at least one connection (the cap is the server's, split among the workers)")
    queues: list[int | None] = [None] * n  # None: each worker its default queue
    if args.queue_samples is not None:
        queues = shares(args.queue_samples, n)  # type: ignore[assignment]
        least = max(args.batch_samples, args.max_batch)
        if min(queues) < least:  # type: ignore[type-var]
            raise PrivsplitError(
                f"--queue-samples {args.queue_samples} over --workers {n} leaves {min(queues)} samples for a "
                f"worker, under one full batch and one largest request ({least}): give at least {least * n}, or "
                "leave it out (each worker then queues its default)")
    check_tls(args.tls_cert, args.tls_key)  # a bad pair is one line before any process starts
    specs = [WorkerSpec(i, n, build, args, token, threads, cap, queue)
             for i, (cap, queue) in enumerate(zip(shares(args.max_connections, n), queues))]
    sock = listen(args.host, args.port)
    port = sock.getsockname()[1]

    def ready(line: str) -> None:
        each = f"{threads} torch thread(s) each" if threads else "torch's default threads each"
        print(f"{line.replace('{port}', str(port))} [{n} worker processes, {each}]", flush=True)

    return Supervisor(specs, sock, say=lambda line: print(line, flush=True), metrics=not args.no_metrics).run(ready)


def build(spec: "WorkerSpec") -> tuple[object, str]:
    """The ``uvicorn.Server`` for one worker (the only one without ``--workers``), and the line
    that says what it serves (``{port}`` left to fill in: the socket is bound elsewhere)."""
    import uvicorn

    from ..serve.server import TaskNetwork, create_app, uvicorn_config

    args = spec.settings
    set_threads(spec.threads)
    device = resolve_device_flag(args.device)
    who = f"{spec.name}: " if spec.count > 1 else ""
    app = create_app(TaskNetwork(args.run_dir, device=device), spec.token, args.max_batch, args.max_body_bytes,
                     args.body_timeout, metrics=not args.no_metrics, access_log=args.access_log,
                     on_stop=lambda line: print(who + line, flush=True), batching=not args.no_batching,
                     batch_samples=args.batch_samples, max_delay_ms=args.max_delay, queue_samples=spec.queue_samples)
    config = uvicorn_config(
        app, args.host, args.port, header_timeout=args.header_timeout, keep_alive=args.keep_alive,
        max_connections=spec.max_connections, log_level=args.log_level,
        access_log=args.log_level == "debug" and not args.access_log,  # uvicorn's own; --access-log is ours
        tls_cert=args.tls_cert, tls_key=args.tls_key,
    )
    net: TaskNetwork = app.state.task_network
    scheme = "https" if args.tls_cert else "http"
    line = (
        f"serving {args.run_dir} ({net.identity['method']}, {net.identity['backbone']} split {net.identity['split']}, "
        f"z {tuple(net.z_shape)}, heads {', '.join(net.info)}, on {device}) on {scheme}://{args.host}:{{port}} "
        f"({'bearer token required' if spec.token else 'no token: loopback only'}; timeouts: header "
        f"{args.header_timeout:g} s, body {args.body_timeout:g} s, keep-alive {args.keep_alive:g} s; "
        f"at most {args.max_connections} connections{', split among the workers' if spec.count > 1 else ''}; "
        f"{batching(app)}{' per worker' if spec.count > 1 and app.state.batcher is not None else ''}; "
        f"{'no metrics' if args.no_metrics else 'Prometheus metrics at /metrics' + (', token required' if spec.token else '')}"
        f"{'; access log on stdout' if args.access_log else ''})"
    )
    return uvicorn.Server(config), line


def batching(app) -> str:
    b = app.state.batcher
    if b is None:
        return "no batching: each request runs alone"
    return (f"batching up to {b.batch_samples} samples per forward pass, waiting at most {1000 * b.max_delay:g} ms, "
            f"at most {b.queue_samples} samples queued")


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one privsplit
    line (uvicorn would log its own error and exit)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise PrivsplitError(f"cannot listen on {host}:{port}: {host!r} is not an address of this machine ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(address, family=family, backlog=2048)
    except OSError as e:
        hint = "choose another --port or stop what uses it" if e.errno in (98, 48, 10048) else "check --host and --port"
        raise PrivsplitError(f"cannot listen on {host}:{port} ({e.strerror}): {hint}") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a run's task network over HTTP (the server part; never loads the obfuscator)",
        description="Serve the task network of a finished run: POST /v1/infer (binary z), GET /v1/model, "
        "GET /v1/health, GET /metrics (Prometheus). Without --token-file only loopback addresses are allowed; "
        "with it every endpoint but /v1/health needs the token. When it stops, the server prints one line "
        "summing up what it answered.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token-file)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token-file", metavar="FILE", help="require 'Authorization: Bearer <token in FILE>'")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="most samples per request (default 64)")
    p.add_argument("--batch-samples", type=int, default=DEFAULT_BATCH_SAMPLES, metavar="N",
                   help="dynamic batching: concurrent requests for the same head run as one forward pass of at "
                   "most N samples, each answered with its own rows (default %(default)d; a request larger than N "
                   "runs alone). --max-batch is per request, this is per forward pass")
    p.add_argument("--max-delay", type=float, default=DEFAULT_MAX_DELAY_MS, metavar="MS",
                   help="most milliseconds a forming batch waits for more requests after its first (default "
                   "%(default)g; 0: run what is queued at once). It waits only while fewer requests came than in "
                   "the batch before, so a lone client never waits")
    p.add_argument("--queue-samples", type=int, metavar="N",
                   help=f"most samples waiting for a batch (default {QUEUE_BATCHES} x --batch-samples, at least "
                   "--max-batch); a request that does not fit is answered 503 with Retry-After at once")
    p.add_argument("--no-batching", action="store_true",
                   help="run each request alone, in a thread of its own (no gathering, no queue)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default: what --max-batch needs)")
    p.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT, metavar="SECONDS",
                   help="a request body must arrive within this, else 408 (default %(default)g)")
    p.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT, metavar="SECONDS",
                   help="a request head must arrive within this, else 408 (default %(default)g)")
    p.add_argument("--keep-alive", type=float, default=DEFAULT_KEEP_ALIVE, metavar="SECONDS",
                   help="close an idle connection after this (default %(default)g)")
    p.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                   help="most open connections (default %(default)d); a new one takes the slot of a connection that "
                   "has not sent an authenticated request yet, and gets 503 only when all are held by proven clients")
    p.add_argument("--tls-cert", metavar="FILE.pem",
                   help="serve HTTPS with this certificate (PEM; with --tls-key): the token and every z are "
                   "encrypted on the wire. Clients verify it (--ca-file for a self-signed one)")
    p.add_argument("--tls-key", metavar="FILE.pem", help="the certificate's private key (PEM, not encrypted)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes answering on the one socket (default 1). Each loads the task network "
                   "and takes a share of --max-connections and --queue-samples, so the limits stay the server's; "
                   "/metrics sums all workers; a worker that dies is replaced")
    p.add_argument("--threads", type=int,
                   help="torch threads for the heads, in each worker (default: torch's; with --workers N, the "
                   "cores divided by N)")
    p.add_argument("--oversubscribe", action="store_true",
                   help="allow --workers x --threads over this machine's cores (refused otherwise: they would "
                   "contend for the cores)")
    add_device(p, "the task network runs", default="cpu", default_text="cpu")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true",
                   help="write one line per answered request to stdout (time, client address, method, path, "
                   "status, milliseconds, bytes sent); off by default")
    p.add_argument("--no-metrics", action="store_true",
                   help="do not serve GET /metrics (Prometheus text format: requests by endpoint and status, "
                   "refusals by kind, latency and batch-size histograms, requests in flight, open connections; "
                   "it needs the bearer token like /v1/model when --token-file is given)")
    p.set_defaults(func=cmd_serve)

"""The task network on Ray Serve: replicas on a Ray cluster, past one machine.

The same application as ``privsplit serve`` (:func:`privsplit.serve.app.create_app`) runs in
every replica, so the endpoints, the wire format, the bearer token, the body limits and the
answers are the same: ``privsplit infer`` and ``privsplit-edge`` talk to it unchanged. Ray
places the replicas on the cluster's machines and its HTTP proxy spreads the requests over them.

Batching: each replica gathers its concurrent requests with privsplit's own batcher
(:mod:`privsplit.serve.batching`: per-request answers, a bounded queue answered 503 with
``Retry-After``, a malformed request never queued). ``@serve.batch`` would batch within a
replica just the same, but it would be a second implementation of those guarantees, tested
apart from the one ``privsplit serve`` uses.

What changes behind Ray:

- Connections are Ray's proxy's, not privsplit's transport: the cap on open connections and the
  header deadline are not privsplit's, and the proxy speaks plain HTTP unless Ray is given a
  certificate. Put a load balancer or reverse proxy with TLS and those limits in front, as for
  any Ray Serve application (``privsplit infer`` refuses to send a token over plain HTTP to
  another host).
- Back-pressure: each replica takes at most its queue (``queue_samples``) plus one batch of
  requests at once (``max_ongoing_requests``), and Ray's proxy holds at most as many more
  (``max_queued_requests``); beyond them requests are answered 503 with ``Retry-After``, by the
  replica's batcher or by the proxy, never left waiting without bound.
- ``/metrics`` is off: one replica's counts would be read as the whole server's (use Ray's).
- Ray's own ports (GCS, dashboard, jobs) have no authentication: anyone who reaches them can run
  code on the cluster and read the token. Keep them on a private network.

From Python::

    from ray import serve
    from privsplit.serve.ray_serve import application
    serve.run(application("runs/cifar", token_file="token.txt", replicas=4), route_prefix="/")

With Ray's command line, on a cluster whose nodes have privsplit installed and the run folder
at the same path (a shared disk)::

    RAY_SERVE_DEFAULT_HTTP_HOST=0.0.0.0 serve run privsplit.serve.ray_serve:app \
        run_dir=/shared/runs/cifar token_file=/shared/token replicas=4

The token file is read by each replica (at the same path on every node), so the token itself is
not stored in Ray's deployment record; a ``token`` given as a string is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import PrivsplitError
from ..rundir import RunDir
from .protocol import DEFAULT_BATCH_SAMPLES, DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BATCH, DEFAULT_MAX_DELAY_MS, QUEUE_BATCHES
from .settings import check_int, check_token, read_token

NAME = "privsplit"


def application(run_dir: str | Path, token: str | None = None, *, token_file: str | Path | None = None,
                replicas: int = 1, threads: int = 1, max_batch: int = DEFAULT_MAX_BATCH,
                batch_samples: int = DEFAULT_BATCH_SAMPLES, max_delay_ms: float = DEFAULT_MAX_DELAY_MS,
                queue_samples: int | None = None, body_timeout: float = DEFAULT_BODY_TIMEOUT,
                max_body_bytes: int | None = None, allow_no_token: bool = False) -> Any:
    """A Ray Serve application serving a run's task network (``serve.run`` it).

    Args:
        run_dir: a finished run folder, at this path on every node that runs a replica.
        token: the bearer token every endpoint but ``/v1/health`` requires; or ``token_file`` (read by each
            replica, at the same path on every node; a string ``token`` is kept in Ray's deployment record).
            One of them is required unless ``allow_no_token``: without a token anyone who reaches
            Ray's proxy can use the server, and a cluster's proxy is on the network.
        replicas: replicas of the task network (Ray places them on the cluster's nodes).
        threads: torch threads per replica, and the CPUs Ray reserves for each.
        max_batch, batch_samples, max_delay_ms, queue_samples, body_timeout, max_body_bytes: as for
            ``privsplit serve`` (``--max-batch`` ...), per replica.

    Raises:
        PrivsplitError: a setting is out of range, the run folder is not a finished run, or ray
            is not installed (``pip install 'privsplit[ray]'``).
    """
    try:
        from ray import serve
    except ImportError:
        raise PrivsplitError("serving on Ray needs ray[serve]: pip install 'privsplit[ray]'") from None
    if token is not None and token_file is not None:
        raise PrivsplitError("give the token or token_file, not both")
    if token_file is not None:
        token_file = str(Path(token_file).resolve())
        read_token(token_file)  # a clear error here; each replica reads it again
    elif token is not None:
        check_token(token, "given to the Ray application")
    elif not allow_no_token:
        raise PrivsplitError("a Ray application needs a bearer token (token_file=FILE): Ray's proxy may be reachable "
                             "from the network; allow_no_token=true serves without one")
    check_int("replicas", replicas, 1)
    check_int("threads", threads, 1)
    run_dir = str(Path(run_dir).resolve())
    RunDir(run_dir).read_record()  # a clear error for a folder that is not a finished run, before loading it
    options = {"max_batch": max_batch, "batch_samples": batch_samples, "max_delay_ms": max_delay_ms,
               "queue_samples": queue_samples, "body_timeout": body_timeout, "max_body_bytes": max_body_bytes}
    from .app import create_app

    create_app(run_dir, token, metrics=False, **options)  # every setting checked here as a replica will, in one line
    queue = queue_samples if queue_samples is not None else max(QUEUE_BATCHES * batch_samples, max_batch)
    in_flight = queue + batch_samples  # what one replica's batcher holds and runs; beyond it, Ray's proxy queues

    def build() -> Any:  # runs in each replica (a function, not a partial: Ray tells a builder by that)
        import torch

        from .app import create_app

        torch.set_num_threads(threads)
        return create_app(run_dir, read_token(token_file) if token_file else token, metrics=False, **options)

    limits: dict[str, Any] = {"max_ongoing_requests": in_flight, "max_queued_requests": in_flight}
    try:
        from ray.serve.config import BackpressureConfig  # Ray >= 2.60: the proxy's 503 says when to retry

        limits["backpressure_config"] = BackpressureConfig(status_code=503, retry_after_s=1)
    except ImportError:
        pass
    deployment = serve.deployment(serve.ingress(build)(), name=NAME, num_replicas=replicas,
                                  ray_actor_options={"num_cpus": threads}, **limits)
    return deployment.bind()


_INTS = ("replicas", "threads", "max_batch", "batch_samples", "queue_samples", "max_body_bytes")


def app(args: dict[str, str]) -> Any:
    """The builder for Ray's command line: ``serve run privsplit.serve.ray_serve:app run_dir=DIR [token_file=F]
    [replicas=N] [threads=T] [max_batch=..] [batch_samples=..] [max_delay_ms=..] [queue_samples=..]
    [body_timeout=..] [max_body_bytes=..] [allow_no_token=true]``."""
    args = dict(args)
    known = {"run_dir", "token_file", "allow_no_token", "max_delay_ms", "body_timeout", *_INTS}
    if unknown := sorted(set(args) - known):
        raise PrivsplitError(f"unknown argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "run_dir" not in args:
        raise PrivsplitError("give run_dir=DIR, a finished run folder")
    kwargs: dict[str, Any] = {}
    for key, value in args.items():
        if key in _INTS or key in ("max_delay_ms", "body_timeout"):
            try:
                kwargs[key] = int(value) if key in _INTS else float(value)
            except ValueError:
                raise PrivsplitError(f"{key}={value!r} is not a number") from None
        elif key == "allow_no_token":  # a string from `serve run`, a bool from a Serve config file
            if value not in (True, False, "true", "false"):
                raise PrivsplitError(f"allow_no_token={value!r} must be true or false")
            kwargs[key] = value in (True, "true")
        elif key != "run_dir":
            kwargs[key] = value
    return application(args["run_dir"], **kwargs)

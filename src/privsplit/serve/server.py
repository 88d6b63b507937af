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
constant time). Every bad request gets a 4xx and a JSON error saying what was
expected; the server keeps serving.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations
# at run time, and `Request` is imported inside create_app (fastapi is optional).
import argparse
import hmac
import ipaddress
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import PrivsplitError
from .protocol import API, MAX_HEADER_BYTES, WireFormatError, decode_z, expected_message, run_identity

DEFAULT_MAX_BATCH = 64


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
        from ..train.checkpoint import load_weights, read_weights

        rd = Path(run_dir)
        self.identity = run_identity(rd)
        cfg = load_config(rd / "config.yaml")
        # The heads are rebuilt from the config alone: the method knows its
        # server-side network (the backbone's rest for a cut, a whole ResNet18 for
        # the image-level baselines, an MLP for maxent), which is also what its
        # "head" attacker family trains. The obfuscator is never built or read here.
        method = build_method(cfg)
        info = TaskInfo(cfg.data.name, {h["target"]: h["labels"] for h in self.identity["heads"]},
                        tuple(self.identity["image_shape"]))
        heads = nn.ModuleDict(
            {h["name"]: method.attacker_head(info, len(h["labels"])) for h in self.identity["heads"]}
        )
        load_weights(heads, read_weights(rd / "heads.safetensors"), str(rd / "heads.safetensors"))
        self.heads = heads.to(device).eval()
        self.device = torch.device(device)
        self.z_shape = tuple(self.identity["z_shape"])
        self.info = {h["name"]: h for h in self.identity["heads"]}
        self.default_head = self.identity["heads"][0]["name"]

    @torch.inference_mode()
    def predict(self, z: np.ndarray, head: str | None = None) -> dict[str, Any]:
        """Probabilities of head ``head`` (default: the first) for ``z`` (N, *z_shape)."""
        name = head or self.default_head
        x = torch.from_numpy(np.array(z, dtype=np.float32)).to(self.device)  # float16 is widened here
        probs = self.heads[name](x).float().softmax(1).cpu().numpy()  # (N, classes)
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
) -> Any:
    """The FastAPI application serving a run's task network.

    Args:
        run_dir: a finished run folder (or an already loaded :class:`TaskNetwork`).
        token: bearer token required on every endpoint but ``/v1/health``; None = no check.
        max_batch: the most representations per request.
        max_body_bytes: the largest request body (413 above); default: what
            ``max_batch`` float32 representations need.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    net = run_dir if isinstance(run_dir, TaskNetwork) else TaskNetwork(run_dir)
    if max_batch < 1:
        raise PrivsplitError(f"max_batch must be at least 1, got {max_batch}")
    limit = max_body_bytes or 8 + MAX_HEADER_BYTES + max_batch * math.prod(net.z_shape) * 4
    expected = expected_message(net.z_shape, max_batch)
    secret = token.encode() if token else None
    app = FastAPI(title="privsplit task network", version=API, docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, message: str, exp: dict | None = None, headers: dict | None = None) -> JSONResponse:
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
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), secret):
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
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:  # a body sent without (or with a false) Content-Length
                return error(413, too_big, expected, {"Connection": "close"})
        try:
            z = decode_z(bytes(body), net.z_shape, max_batch)
        except WireFormatError as e:
            return error(e.status, str(e), e.expected)
        return await run_in_threadpool(net.predict, z, head)

    app.state.task_network = net
    app.state.infer_requests = 0
    return app


# --- command line -------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace removed); at least 16 characters."""
    p = Path(path)
    try:
        token = p.read_text().strip()
    except OSError as e:
        raise PrivsplitError(f"cannot read the token file {p}: {e}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise PrivsplitError(
            f"the token in {p} must be one word of at least 16 characters (a short token can be guessed); "
            "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))' > TOKEN_FILE"
        )
    return token


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    token = read_token(args.token_file) if args.token_file else None
    if token is None and not is_loopback(args.host):
        raise PrivsplitError(
            f"refusing to serve on {args.host} without a token: anyone on the network could use it. "
            "Give --token-file FILE, or bind to 127.0.0.1"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    app = create_app(args.run_dir, token, args.max_batch, args.max_body_bytes)
    net: TaskNetwork = app.state.task_network
    print(
        f"serving {args.run_dir} ({net.identity['method']}, {net.identity['backbone']} split {net.identity['split']}, "
        f"z {tuple(net.z_shape)}, heads {', '.join(net.info)}) on http://{args.host}:{args.port} "
        f"({'bearer token required' if token else 'no token: loopback only'})",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.log_level == "debug")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a run's task network over HTTP (the server part; never loads the obfuscator)",
        description="Serve the task network of a finished run: POST /v1/infer (binary z), GET /v1/model, "
        "GET /v1/health. Without --token-file only loopback addresses are allowed.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token-file)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token-file", metavar="FILE", help="require 'Authorization: Bearer <token in FILE>'")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="most samples per request (default 64)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default: what --max-batch needs)")
    p.add_argument("--threads", type=int, help="torch threads for the heads (default: torch's)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)


class BackgroundServer:
    """Run ``app`` with uvicorn in a background thread (tests, benchmarks, notebooks).

    Args:
        app: the application from :func:`create_app`.
        host: address to bind; loopback by default.
        port: 0 picks a free port; the chosen one is in :attr:`url`.

    Example:
        >>> with BackgroundServer(create_app("runs/my-run")) as srv:  # doctest: +SKIP
        ...     Client("runs/my-run", srv.url).infer(["digit.png"])
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
        self.host = host
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
        self.url = f"http://{self.host}:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

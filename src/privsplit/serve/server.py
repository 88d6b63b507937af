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

With ``--workers N``, N processes answer on one socket and the limits above are
the server's, split among them (:mod:`privsplit.serve.workers`).

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

# The server is in rooms of one idea each; this module keeps the names that
# `privsplit serve`, the tests and users import from it.
from privsplit_edge.protocol import is_loopback

from .app import create_app
from .network import TaskNetwork
from .observe import (
    ENDPOINTS,
    LATENCY_BUCKETS,
    LOG_FULL_LINES,
    LOG_WINDOW,
    PROMETHEUS_MISSING,
    REFUSAL_KINDS,
    REFUSALS_BY_STATUS,
    LogLimiter,
    ServerMetrics,
)
from .protocol import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CONNECTIONS,
)
from .settings import check_int, check_seconds, check_token, read_token
from .transport import BackgroundServer, check_tls, uvicorn_config

__all__ = [
    "DEFAULT_BODY_TIMEOUT", "DEFAULT_HEADER_TIMEOUT", "DEFAULT_KEEP_ALIVE", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_CONNECTIONS",
    "ENDPOINTS", "LATENCY_BUCKETS", "LOG_FULL_LINES", "LOG_WINDOW", "PROMETHEUS_MISSING", "REFUSAL_KINDS",
    "REFUSALS_BY_STATUS", "BackgroundServer", "LogLimiter", "ServerMetrics", "TaskNetwork", "check_int",
    "check_seconds", "check_tls", "check_token", "create_app", "is_loopback", "read_token", "uvicorn_config",
]

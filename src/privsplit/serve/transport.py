"""The transport: uvicorn with this server's connection limits (header deadline,
a cap on open connections that unproven clients cannot hold, no request
smuggling, TLS), and :class:`BackgroundServer` for tests and notebooks.
See :mod:`privsplit.serve.server` for why the limits have this shape."""

import asyncio
import hmac
import http
import json
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import PrivsplitError
from .observe import LogLimiter, ServerMetrics
from .protocol import DEFAULT_HEADER_TIMEOUT, DEFAULT_KEEP_ALIVE, DEFAULT_MAX_CONNECTIONS
from .settings import check_int, check_seconds


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
            no_delay(transport)
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


def no_delay(transport: asyncio.BaseTransport) -> None:
    """Send each write at once (TCP_NODELAY). asyncio sets it only on sockets whose
    ``proto`` is ``IPPROTO_TCP``; a socket made by ``socket.create_server`` (what
    ``privsplit serve`` listens on) has ``proto`` 0, and without the option every
    answer on a kept-alive connection waited about 40 ms: the response head and
    body are two writes, Nagle holds the second until the client's delayed ACK."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
    check_seconds("header_timeout (--header-timeout)", header_timeout)
    check_seconds("keep_alive (--keep-alive)", keep_alive)
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

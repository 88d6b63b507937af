"""Deployment: the server (task network), the client (obfuscator) and the wire
format between them. The wire format and the torch-free edge client live in
the top-level package :mod:`privsplit_edge`; see :mod:`privsplit.serve.protocol`."""

from .protocol import ServeError, run_identity

__all__ = ["Client", "ServeError", "create_app", "run_identity"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: the server needs fastapi, the client does not
    if name == "Client":
        from .client import Client

        return Client
    if name == "create_app":
        from .server import create_app

        return create_app
    raise AttributeError(f"module 'privsplit.serve' has no attribute {name!r}")

"""Errors of the edge side. The privsplit package wraps them in its own
:class:`privsplit.PrivsplitError` subclasses (this package cannot import
privsplit, which imports torch)."""


class EdgeError(Exception):
    """Base class: something the user or the server must fix; the message says what."""


class WireFormatError(EdgeError, ValueError):
    """A request body is not a valid representation message.

    Attributes:
        status: the HTTP status a server answers with (400 malformed, 413 too
            large, 422 well-formed but not what the model expects).
        expected: what a valid message looks like, for the JSON error reply.
    """

    def __init__(self, message: str, status: int = 400, expected: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.expected = expected or {}


class ServerError(EdgeError):
    """The server answered with an error (or could not be reached)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class IdentityMismatch(EdgeError):
    """The server runs a different model than the one this client's obfuscator was trained with."""

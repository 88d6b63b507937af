"""privsplit_edge: the torch-free half of privsplit, for the edge device.

It holds the wire format (:mod:`privsplit_edge.protocol`), consistent
randomness from a device key (:mod:`privsplit_edge.keyed`) and a client that
runs an exported ONNX obfuscator with ONNX Runtime and talks to a privsplit
server over plain HTTP (:mod:`privsplit_edge.client`). It imports only the
standard library, numpy, and (when used) onnxruntime, Pillow and simplejpeg:
never torch, never privsplit. It is a separate top-level package so that it
installs on its own, as the distribution ``privsplit-edge`` (``edge/pyproject.toml``
in the source tree: ``pip install ./edge``), which brings the command
``privsplit-edge`` and none of privsplit's training dependencies. With the full
package, ``pip install 'privsplit[edge]'`` adds the same client's dependencies.
Example:

    >>> from privsplit_edge import EdgeClient
    >>> client = EdgeClient("runs/my-run/export", "http://127.0.0.1:8000")  # doctest: +SKIP
    >>> client.infer(["cat.jpg"])[0]["label"]                                 # doctest: +SKIP
    'living'
"""

from .errors import EdgeError, IdentityMismatch, ServerError, WireFormatError
from .protocol import decode_z, encode_z

__all__ = ["EdgeClient", "EdgeError", "IdentityMismatch", "ServerError", "WireFormatError", "decode_z", "encode_z"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: the client needs onnxruntime, the protocol does not
    if name == "EdgeClient":
        from .client import EdgeClient

        return EdgeClient
    raise AttributeError(f"module 'privsplit_edge' has no attribute {name!r}")

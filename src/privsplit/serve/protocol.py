"""The wire format, re-exported from :mod:`privsplit_edge.protocol` (where it is
documented), plus what needs the run folder: the run's identity.

The format lives in ``privsplit_edge`` so that the edge client can use it
without importing torch (``privsplit/__init__.py`` imports torch).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from privsplit_edge.errors import EdgeError, IdentityMismatch, ServerError, WireFormatError
from privsplit_edge.protocol import (
    API,
    CONTENT_TYPE,
    DTYPE_NAMES,
    MAX_HEADER_BYTES,
    decode_z,
    encode_z,
    expected_message,
    identity_mismatches,
)

from ..errors import CheckpointError, PrivsplitError

# The server's default limits, here (torch-free) so that `privsplit serve --help` shows them
# without importing the server.
DEFAULT_MAX_BATCH = 64
DEFAULT_BODY_TIMEOUT = 10.0  # seconds for the whole body of one request
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for the request line and headers
DEFAULT_KEEP_ALIVE = 5.0  # seconds an idle connection stays open
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_BATCH_SAMPLES = 64  # most samples in one forward pass formed from concurrent requests
DEFAULT_MAX_DELAY_MS = 2.0  # milliseconds a forming batch waits for more requests
QUEUE_BATCHES = 4  # the queue holds this many full batches unless --queue-samples says otherwise

__all__ = [
    "API",
    "CONTENT_TYPE",
    "DTYPE_NAMES",
    "MAX_HEADER_BYTES",
    "EdgeError",
    "IdentityMismatch",
    "ServeError",
    "ServerError",
    "WireFormatError",
    "decode_z",
    "encode_z",
    "expected_message",
    "fingerprint",
    "identity_mismatches",
    "run_identity",
]


class ServeError(PrivsplitError):
    """A client/server problem: unreachable server, another model on the server, a refused request."""


def fingerprint(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: is this a finished run folder?")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def run_identity(run_dir: str | Path) -> dict[str, Any]:
    """What client and server must agree on, from the run folder alone.

    ``fingerprint`` is the sha256 of ``heads.safetensors`` (the server's
    weights); both sides hold the run folder, so both can compute it.
    """
    from ..config import load_config
    from ..rundir import RunDir

    rd = RunDir(run_dir)
    record = rd.read_record()
    cfg = load_config(rd.config)
    labels = record["task"]["labels"]
    return json.loads(
        json.dumps(
            {
                "method": cfg.method,
                "backbone": cfg.model.backbone,
                "split": cfg.model.split,
                "z_shape": record["z_shape"],
                "image_shape": record["task"]["image_shape"],
                "heads": [{"name": h.name, "target": h.target, "labels": labels[h.target]} for h in cfg.heads],
                "fingerprint": fingerprint(rd.weights("heads")),
            }
        )
    )

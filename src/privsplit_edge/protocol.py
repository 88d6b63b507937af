"""The wire format between the client (obfuscator) and the server (task network).

Request: ``POST /v1/infer`` with a body that is a **safetensors** file holding
exactly one tensor named ``z``:

```
bytes 0..8          n: unsigned 64-bit little-endian, length of the JSON header
bytes 8..8+n        JSON header (UTF-8), e.g.
                    {"z": {"dtype": "F32", "shape": [N, C, H, W], "data_offsets": [0, D]},
                     "__metadata__": {"api": "privsplit-z/1"}}   (metadata optional, str -> str)
bytes 8+n..8+n+D    the values of z: little-endian, row-major (C order), no padding
```

* ``dtype`` is ``F32`` (float32) or ``F16`` (float16); ``D = N * prod(z_shape) * itemsize``.
* ``shape`` is ``[N, *z_shape]``: ``N`` samples (1 <= N <= the server's
  ``max_batch``) of the run's representation shape (``GET /v1/model``).
* Every value must be finite (no NaN or infinity).
* The body ends exactly after the data; nothing else is accepted. The header
  may be padded with trailing spaces (as the safetensors writer does) and is at
  most :data:`MAX_HEADER_BYTES` long.

Any safetensors writer produces such bodies
(``safetensors.numpy.save({"z": z})``); :func:`encode_z` writes them with only
numpy. It is never pickle: the server parses a length, a small JSON object and
raw numbers, and checks each before use.

Response: JSON. ``POST /v1/infer`` answers (for the default head or ``?head=NAME``)::

    {"head": "task", "target": "utility", "labels": ["even", "odd"], "n": 2,
     "predictions": [{"index": 1, "label": "odd", "probability": 0.93,
                      "probabilities": [0.07, 0.93]}, ...]}

Errors are JSON ``{"error": "what was wrong", "expected": {...}}`` with status
400 (malformed body), 401 (missing or wrong bearer token), 404 (unknown
head), 413 (body larger than the server's limit), or 422 (well-formed, but wrong
shape, dtype, batch size or non-finite values).

This module imports only the standard library and numpy, so the torch-free
edge client and the server share it.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Sequence

import numpy as np

from .errors import WireFormatError

API = "privsplit-z/1"
CONTENT_TYPE = "application/octet-stream"
TENSOR = "z"
MAX_HEADER_BYTES = 4096
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}
DTYPE_NAMES = {"F32": "float32", "F16": "float16"}
_CODES = {"float32": "F32", "float16": "F16"}


def encode_z(z: np.ndarray, dtype: str = "float32") -> bytes:
    """Serialise a batch ``z`` (N, *z_shape) to a request body.

    Args:
        z: the representations, any float array.
        dtype: ``"float32"`` or ``"float16"`` (half the bytes).

    Example:
        >>> body = encode_z(np.zeros((2, 4, 3, 3), np.float32))
        >>> decode_z(body, (4, 3, 3)).shape
        (2, 4, 3, 3)
    """
    if dtype not in _CODES:
        raise WireFormatError(f"dtype must be float32 or float16, got {dtype!r}")
    code = _CODES[dtype]
    with np.errstate(over="ignore"):  # overflow to float16 is reported below, in words
        arr = np.ascontiguousarray(np.asarray(z), dtype=DTYPES[code])
    if code == "F16" and not np.isfinite(arr).all() and np.isfinite(np.asarray(z)).all():
        raise WireFormatError("z has values beyond float16's range (65504): send it as float32")
    data = arr.tobytes()
    header = {
        TENSOR: {"dtype": code, "shape": [int(s) for s in np.shape(z)], "data_offsets": [0, len(data)]},
        "__metadata__": {"api": API},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data to 8 bytes, as safetensors writers do
    return struct.pack("<Q", len(raw)) + raw + data


def expected_message(z_shape: Sequence[int], max_batch: int) -> dict[str, Any]:
    """What a valid request looks like, for error replies."""
    return {
        "format": "safetensors bytes with one tensor 'z' (see GET /v1/model)",
        "shape": ["N", *[int(s) for s in z_shape]],
        "dtype": ["float32", "float16"],
        "batch": [1, int(max_batch)],
        "values": "finite",
    }


def decode_z(body: bytes, z_shape: Sequence[int] | None = None, max_batch: int | None = None) -> np.ndarray:
    """Parse and validate a request body; returns ``z`` as a read-only array.

    Args:
        body: the request bytes.
        z_shape: the shape of one representation; checked when given.
        max_batch: the most samples per request; checked when given.

    Raises:
        WireFormatError: with ``status`` 400 (malformed) or 422 (wrong shape,
            dtype, batch size, or non-finite values), saying what was expected.
    """
    exp = expected_message(z_shape or [], max_batch or 0) if z_shape is not None else {}

    def bad(msg: str, status: int = 400) -> WireFormatError:
        return WireFormatError(msg, status, exp)

    if len(body) < 8:
        raise bad(f"body has {len(body)} bytes; a safetensors message starts with an 8-byte header length")
    (n,) = struct.unpack("<Q", body[:8])
    if n > MAX_HEADER_BYTES:
        raise bad(f"header length {n} is over the {MAX_HEADER_BYTES} bytes allowed: not a representation message")
    if len(body) < 8 + n:
        raise bad(f"body is truncated: the header needs {n} bytes, {len(body) - 8} follow")
    try:
        header = json.loads(body[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("header must be a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise bad("__metadata__ must map strings to strings")
    if set(header) != {TENSOR}:
        raise bad(f"the message must hold exactly one tensor named {TENSOR!r}; it holds {sorted(header)}")
    spec = header[TENSOR]
    if not isinstance(spec, dict):
        raise bad(f"tensor {TENSOR!r} must be described by an object")
    code, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if code not in DTYPES:
        raise bad(f"dtype {code!r} is not accepted; send F32 (float32) or F16 (float16)", 422)
    if not (isinstance(shape, list) and shape and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise bad(f"shape must be a non-empty list of non-negative integers, got {shape!r}")
    if z_shape is not None and list(shape[1:]) != [int(s) for s in z_shape]:
        raise bad(f"shape {shape} does not match the model: expected [N, {', '.join(map(str, z_shape))}]", 422)
    if shape[0] < 1:
        raise bad("the batch is empty: send at least one representation", 422)
    if max_batch is not None and shape[0] > max_batch:
        raise bad(f"{shape[0]} samples in one request; the server takes at most {max_batch}: split the batch", 422)
    size = math.prod(shape) * DTYPES[code].itemsize
    if offsets != [0, size]:
        raise bad(f"data_offsets {offsets!r} do not fit shape {shape} and dtype {code} (expected [0, {size}])")
    data = body[8 + n :]
    if len(data) != size:
        what = "truncated" if len(data) < size else "longer than its header says"
        raise bad(f"body is {what}: {len(data)} data bytes for {size} expected")
    z = np.frombuffer(data, dtype=DTYPES[code]).reshape(shape)
    if not np.isfinite(z).all():
        bad_count = int(z.size - np.isfinite(z).sum())
        raise bad(f"z holds {bad_count} NaN or infinite value(s); every value must be finite", 422)
    return z


# --- the run's identity, compared by the client before it sends anything ----------------------------------

IDENTITY_KEYS = ("method", "backbone", "split", "z_shape", "image_shape", "heads", "fingerprint")


def identity_mismatches(local: dict[str, Any], remote: dict[str, Any]) -> list[str]:
    """Differences between the client's run identity and the server's ``/v1/model``.

    Returns one line per differing field (empty when they match).
    """
    out = []
    for key in IDENTITY_KEYS:
        a, b = _plain(local.get(key)), _plain(remote.get(key))
        if a != b:
            out.append(f"{key}: client has {a!r}, server has {b!r}")
    return out


def _plain(v: Any) -> Any:
    # JSON turns tuples into lists: compare in that form.
    return json.loads(json.dumps(v))

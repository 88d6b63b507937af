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
* The header is strict: JSON nested at most :data:`MAX_HEADER_DEPTH` levels
  (a valid header needs 3), no duplicate keys, no ``NaN``/``Infinity``
  constants, exactly the fields above with their JSON types (``dtype`` a
  string, ``shape`` a list of at most :data:`MAX_NDIM` integers from 0 to
  :data:`MAX_DIM`, ``data_offsets`` a list of two integers), metadata
  strings only.

Any safetensors writer produces such bodies
(``safetensors.numpy.save({"z": z})``); :func:`encode_z` writes them with only
numpy. It is never pickle: the server parses a length, a small JSON object and
raw numbers, and checks each before use.

Response: JSON. ``POST /v1/infer`` answers (for the default head or ``?head=NAME``)::

    {"head": "task", "target": "utility", "labels": ["even", "odd"], "n": 2,
     "predictions": [{"index": 1, "label": "odd", "probability": 0.93,
                      "probabilities": [0.07, 0.93]}, ...]}

Errors are JSON ``{"error": "what was wrong", "expected": {...}}`` with status
400 (malformed body or header), 401 (missing or wrong bearer token), 404
(unknown head), 408 (the body did not arrive within the server's body
timeout), 413 (body larger than the server's limit), 422 (well-formed, but
wrong shape, dtype, batch size or non-finite values, or values so far outside
what the obfuscator produces that the network's output is not finite) or 503
(the server's connections are all held by authenticated clients, or this
connection had sent no complete request and was closed to make room for a
new one; try again later). A request with both ``Content-Length`` and
``Transfer-Encoding`` is 400 and its connection closed.
The server closes connections whose request head or body arrives too slowly
and idle keep-alive connections (``privsplit serve --help`` lists the limits).

This module imports only the standard library and numpy, so the torch-free
edge client and the server share it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import EdgeError, WireFormatError

API = "privsplit-z/1"
CONTENT_TYPE = "application/octet-stream"
TENSOR = "z"
MAX_HEADER_BYTES = 4096
MAX_HEADER_DEPTH = 4  # JSON nesting; a valid header has 3 levels (object, tensor, shape)
MAX_NDIM = 16
MAX_DIM = 2**31 - 1
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}
DTYPE_NAMES = {"F32": "float32", "F16": "float16"}
_CODES = {"float32": "F32", "float16": "F16"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes (the form ``run.json``, checkpoints' ``meta.json`` and the export manifest record)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


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
        WireFormatError: with ``status`` 400 (malformed, including a header
            that breaks the strict rules in the module docstring) or 422 (wrong
            shape, dtype, batch size, or non-finite values), saying what was
            expected. Never any other exception, whatever the bytes.
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
    raw = body[8 : 8 + n]
    if (depth := _nesting(raw)) > MAX_HEADER_DEPTH:
        raise bad(f"header JSON nests {depth} levels deep; at most {MAX_HEADER_DEPTH} are allowed (a valid header has 3)")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise bad(f"header is not valid JSON ({_short(e, 120)})") from None
    if not isinstance(header, dict):
        raise bad("header must be a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):  # JSON keys are strings
        raise bad("__metadata__ must map strings to strings")
    if set(header) != {TENSOR}:
        raise bad(f"the message must hold exactly one tensor named {TENSOR!r}; it holds {_short(sorted(header))}")
    spec = header[TENSOR]
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"tensor {TENSOR!r} must be an object with exactly dtype, shape and data_offsets")
    code, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(code, str):
        raise bad(f"dtype must be a string such as \"F32\", got {_short(code)}")
    if code not in DTYPES:
        raise bad(f"dtype {_short(code)} is not accepted; send F32 (float32) or F16 (float16)", 422)
    if not (isinstance(shape, list) and 1 <= len(shape) <= MAX_NDIM and all(_is_int(s, MAX_DIM) for s in shape)):
        raise bad(f"shape must be a list of 1 to {MAX_NDIM} non-negative integers up to {MAX_DIM}, got {_short(shape)}")
    if z_shape is not None and list(shape[1:]) != [int(s) for s in z_shape]:
        raise bad(f"shape {shape} does not match the model: expected [N, {', '.join(map(str, z_shape))}]", 422)
    if shape[0] < 1:
        raise bad("the batch is empty: send at least one representation", 422)
    if max_batch is not None and shape[0] > max_batch:
        raise bad(f"{shape[0]} samples in one request; the server takes at most {max_batch}: split the batch", 422)
    size = math.prod(shape) * DTYPES[code].itemsize
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)) or offsets != [0, size]:
        raise bad(f"data_offsets {_short(offsets)} do not fit shape {shape} and dtype {code} (expected [0, {size}])")
    data = body[8 + n :]
    if len(data) != size:
        what = "truncated" if len(data) < size else "longer than its header says"
        raise bad(f"body is {what}: {len(data)} data bytes for {size} expected")
    z = np.frombuffer(data, dtype=DTYPES[code]).reshape(shape)
    if not np.isfinite(z).all():
        bad_count = int(z.size - np.isfinite(z).sum())
        raise bad(f"z holds {bad_count} NaN or infinite value(s); every value must be finite", 422)
    return z


def _nesting(raw: bytes) -> int:
    """How deep the JSON text ``raw`` nests (brackets inside strings do not count).

    Checked before ``json.loads``, which recurses once per level.
    """
    depth = deepest = 0
    in_string = escaped = False
    for b in raw:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:  # closing quote
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif b in b"]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {_short(next(k for k in keys if keys.count(k) > 1))}")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_int(v: Any, most: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0 and (most is None or v <= most)


def _short(v: Any, limit: int = 60) -> str:
    """``repr(v)`` cut to ``limit`` characters: error messages echo client input."""
    r = repr(v) if not isinstance(v, BaseException) else str(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


# --- the bearer token, shared by the server and both clients -----------------------------------------------

MIN_TOKEN_CHARS = 16
MAKE_TOKEN = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))' > TOKEN_FILE"


def check_token(token: str, where: str) -> str:
    """``token`` if it is a usable bearer token: at least 16 printable ASCII
    characters, no whitespace (other characters may not survive an HTTP header)."""
    if len(token) < MIN_TOKEN_CHARS or not all("!" <= c <= "~" for c in token):
        raise EdgeError(
            f"the token {where} must be one word of at least {MIN_TOKEN_CHARS} characters, printable ASCII only "
            f"(a short token can be guessed; other characters may not survive an HTTP header); {MAKE_TOKEN}"
        )
    return token


def read_token(path: str | Path) -> str:
    """The bearer token in the file ``path`` (surrounding whitespace removed), checked by :func:`check_token`."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise EdgeError(f"cannot read the token file {p}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise EdgeError(f"the token file {p} is not text (not UTF-8); {MAKE_TOKEN}") from None
    return check_token(text.strip(), f"in {p}")


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

"""The wire format: round trips, compatibility with safetensors, every kind of bad body."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from privsplit_edge.errors import WireFormatError
from privsplit_edge.protocol import MAX_HEADER_BYTES, decode_z, encode_z, identity_mismatches

Z = (4, 3, 2)


def z_batch(n=3, dtype=np.float32):
    return np.random.default_rng(0).standard_normal((n, *Z)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_and_safetensors_compatible(dtype):
    z = z_batch()
    body = encode_z(z, dtype)
    out = decode_z(body, Z, max_batch=8)
    assert out.dtype == np.dtype(dtype) and out.shape == z.shape
    np.testing.assert_allclose(out, z, rtol=1e-3 if dtype == "float16" else 0)
    # Any safetensors reader reads our bodies, and we read any safetensors writer's.
    np.testing.assert_array_equal(st_load(body)["z"], out)
    np.testing.assert_array_equal(decode_z(st_save({"z": z.astype(dtype)}), Z), out)
    # float16 halves the payload.
    assert len(body) - 8 - struct.unpack("<Q", body[:8])[0] == z.size * np.dtype(dtype).itemsize


def test_float16_overflow_is_refused_on_the_client():
    with pytest.raises(WireFormatError, match="float16's range"):
        encode_z(np.full((1, *Z), 1e6, np.float32), "float16")


def _header(spec, extra=b""):
    raw = json.dumps(spec).encode()
    return struct.pack("<Q", len(raw)) + raw + extra


BAD = {
    "empty": (b"", 400, "8-byte"),
    "garbage": (b"\x89PNG\r\n\x1a\n" + b"x" * 40, 400, "header length"),
    "header not json": (struct.pack("<Q", 5) + b"{{{{{", 400, "not valid JSON"),
    "header truncated": (struct.pack("<Q", 100) + b"{}", 400, "truncated"),
    "data truncated": (encode_z(z_batch())[:-4], 400, "truncated"),
    "trailing bytes": (encode_z(z_batch()) + b"\0\0\0\0", 400, "longer"),
    "two tensors": (st_save({"z": z_batch(), "y": z_batch()}), 400, "exactly one tensor"),
    "wrong name": (st_save({"x": z_batch()}), 400, "exactly one tensor"),
    "float64": (st_save({"z": z_batch().astype(np.float64)}), 422, "F32"),
    "int32": (st_save({"z": np.zeros((1, *Z), np.int32)}), 422, "F32"),
    "wrong shape": (encode_z(np.zeros((2, 4, 2, 3), np.float32)), 422, "[N, 4, 3, 2]"),
    "no batch axis": (encode_z(np.zeros(Z, np.float32)), 422, "[N, 4, 3, 2]"),
    "empty batch": (encode_z(np.zeros((0, *Z), np.float32)), 422, "at least one"),
    "too many": (encode_z(z_batch(9)), 422, "at most 8"),
    "nan": (encode_z(np.full((1, *Z), np.nan, np.float32)), 422, "NaN"),
    "inf": (encode_z(np.where(np.arange(24).reshape(1, *Z) == 5, np.inf, 0).astype(np.float16), "float16"), 422, "1 NaN or infinite"),
    "offsets lie": (_header({"z": {"dtype": "F32", "shape": [1, *Z], "data_offsets": [0, 8]}}, b"\0" * 8), 400, "data_offsets"),
    "negative shape": (_header({"z": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 0]}}), 400, "non-negative"),
    "huge header": (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b" " * (MAX_HEADER_BYTES + 1), 400, "header length"),
    "header length overflow": (b"\xff" * 8 + b"{}", 400, "header length"),
    "bad metadata": (_header({"__metadata__": {"a": 1}, "z": {}}), 400, "__metadata__"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_bodies_name_what_was_expected(name):
    body, status, words = BAD[name]
    with pytest.raises(WireFormatError) as e:
        decode_z(body, Z, max_batch=8)
    assert e.value.status == status
    assert words in str(e.value)
    assert e.value.expected["shape"] == ["N", *Z]


def test_identity_mismatches_lists_each_field():
    a = {"method": "ours", "split": "rn18_3", "z_shape": [256, 2, 2], "fingerprint": "sha256:1"}
    assert identity_mismatches(a, dict(a)) == []
    diff = identity_mismatches(a, {**a, "z_shape": (256, 1, 1), "fingerprint": "sha256:2"})
    assert len(diff) == 2 and diff[0].startswith("z_shape") and "sha256:2" in diff[1]
    assert identity_mismatches({"z_shape": (1, 2)}, {"z_shape": [1, 2]}) == []  # tuples and JSON lists agree


def test_edge_package_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import privsplit_edge, privsplit_edge.protocol, privsplit_edge.client\n"
        "from privsplit_edge import EdgeClient\n"
        "assert 'privsplit' not in sys.modules, 'the edge package must not import privsplit (it imports torch)'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"

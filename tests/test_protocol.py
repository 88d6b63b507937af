"""The wire format: round trips, compatibility with safetensors, every kind of bad body, and a
property-based fuzz of the parser (hypothesis)."""

import json
import math
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from privsplit_edge.errors import WireFormatError
from privsplit_edge.protocol import API, MAX_HEADER_BYTES, MAX_HEADER_DEPTH, decode_z, encode_z, identity_mismatches

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
    raw = (spec if isinstance(spec, str) else json.dumps(spec)).encode()
    return struct.pack("<Q", len(raw)) + raw + extra


def _z_spec(**change):
    """A valid header for one zero sample of shape Z, with fields changed."""
    return {"z": {"dtype": "F32", "shape": [1, *Z], "data_offsets": [0, 96], **change}}


ZEROS = b"\0" * 96  # one float32 sample of shape Z


BAD = {
    "empty": (b"", 400, "8-byte"),
    "garbage": (b"\x89PNG\r\n\x1a\n" + b"x" * 40, 400, "header length"),
    "header not json": (struct.pack("<Q", 5) + b"{z:1}", 400, "not valid JSON"),
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
    # Found by an audit: each of these was a 500 (an exception other than WireFormatError) or accepted.
    "nested 2000 deep": (_header('{"z": ' + "[" * 2000 + "]" * 2000 + "}"), 400, "nests 2001 levels"),
    "nested in a field": (_header(_z_spec(dtype=[[["F32"]]])), 400, "nests 5 levels"),
    "dtype a list": (_header(_z_spec(dtype=["F32"]), ZEROS), 400, "dtype must be a string"),
    "dtype an object": (_header(_z_spec(dtype={}), ZEROS), 400, "dtype must be a string"),
    "dtype a number": (_header(_z_spec(dtype=1), ZEROS), 400, "dtype must be a string"),
    "shape huge": (_header(_z_spec(shape=[1, 4, 3, 2**70]), ZEROS), 400, "non-negative integers"),
    "shape a string": (_header(_z_spec(shape="1,4,3,2"), ZEROS), 400, "non-negative integers"),
    "offsets floats": (_header(_z_spec(data_offsets=[0.0, 96.0]), ZEROS), 400, "data_offsets"),
    "offsets booleans": (_header(_z_spec(data_offsets=[False, 96]), ZEROS), 400, "data_offsets"),
    "offsets an object": (_header(_z_spec(data_offsets={"0": 96}), ZEROS), 400, "data_offsets"),
    "offsets NaN": (_header('{"z": {"dtype": "F32", "shape": [1, 4, 3, 2], "data_offsets": [0, NaN]}}', ZEROS),
                    400, "NaN is not JSON"),
    "duplicate tensor": (_header('{"z": {"dtype": "F32", "shape": [1, 4, 3, 2], "data_offsets": [0, 96]}, '
                                 '"z": {"dtype": "F16", "shape": [1, 4, 3, 2], "data_offsets": [0, 48]}}', ZEROS),
                         400, "duplicate key 'z'"),
    "extra field": (_header(_z_spec(scale=2.0), ZEROS), 400, "exactly dtype, shape and data_offsets"),
    "metadata a list": (_header({**_z_spec(), "__metadata__": ["api"]}, ZEROS), 400, "__metadata__"),
    "metadata nested": (_header({**_z_spec(), "__metadata__": {"api": {"v": "1"}}}, ZEROS), 400, "__metadata__"),
    "header not UTF-8": (struct.pack("<Q", 4) + b"{\xff}}", 400, "not valid JSON"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_bodies_name_what_was_expected(name):
    body, status, words = BAD[name]
    with pytest.raises(WireFormatError) as e:
        decode_z(body, Z, max_batch=8)
    assert e.value.status == status
    assert words in str(e.value)
    assert e.value.expected["shape"] == ["N", *Z]


def test_bad_shapes_without_a_model_shape():
    """Without z_shape (any shape allowed) sizes that numpy cannot reshape to are still refused in words."""
    for shape in ([1, 0, 2**70], [1] * 70):
        with pytest.raises(WireFormatError, match="non-negative integers") as e:
            decode_z(_header(_z_spec(shape=shape, data_offsets=[0, 4 * math.prod(shape)])))
        assert e.value.status == 400


def test_brackets_inside_strings_are_not_nesting():
    raw = json.dumps({"__metadata__": {"api": API, "note": "[[[[[{{{{{\\\"]]"}, **_z_spec()})
    assert decode_z(_header(raw, ZEROS), Z).shape == (1, *Z)
    assert MAX_HEADER_DEPTH >= 3  # what a valid header needs


# --- property-based fuzz of the parser ------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
DEEP = "@@deep@@"  # placeholder, replaced by raw JSON nested (1 to 3000 levels) after json.dumps


def check_decode(body):
    """The property: a valid finite z of the model's shape, or a WireFormatError with a 4xx status
    whose message can be sent as JSON; never any other exception."""
    try:
        z = decode_z(body, Z, max_batch=8)
    except WireFormatError as e:
        assert e.status in (400, 413, 422), e.status
        json.dumps({"error": str(e), "expected": e.expected}, allow_nan=False).encode("utf-8")
        event(f"refused {e.status}")
        return
    assert z.shape[1:] == Z and 1 <= z.shape[0] <= 8
    assert z.dtype in (np.float32, np.float16) and np.isfinite(z).all()
    event("accepted")


@st.composite
def mutated_messages(draw):
    """A valid message, then: fields replaced by random JSON (or deep nesting), the data filled
    with special values, the header length lied about, the body cut, a byte flipped."""
    n = draw(st.integers(0, 10))
    code = draw(st.sampled_from(["F32", "F16"]))
    fill = draw(st.sampled_from([0.0, -1.5, 7e4, 3e38, np.nan, np.inf]))
    with np.errstate(over="ignore"):
        data = np.full((n, *Z), fill, np.float32 if code == "F32" else np.float16).tobytes()
    spec = {"dtype": code, "shape": [n, *Z], "data_offsets": [0, len(data)]}
    header = {"z": spec, "__metadata__": {"api": API}} if draw(st.booleans()) else {"z": spec}
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra", "__metadata__", "whole header"]))
        value = draw(JSON | st.just(DEEP))
        if where == "whole header":
            header = value
        elif where == "__metadata__" and isinstance(header, dict):
            header[where] = value
        else:
            spec[where] = value
    depth = draw(st.integers(1, 3000))
    raw = json.dumps(header).replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()
    raw += b" " * draw(st.integers(0, 7))
    n_raw = draw(st.just(len(raw)) | st.integers(0, len(raw) + 16) | st.integers(0, 2**64 - 1))
    body = struct.pack("<Q", n_raw) + raw + data
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    if body and draw(st.booleans()):
        i = draw(st.integers(0, len(body) - 1))
        body = body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1 :]
    return body


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(body):
    check_decode(body)


@FUZZ
@given(st.binary(max_size=200), st.integers(0, 300))
def test_fuzz_arbitrary_header_bytes(raw, pad):
    """A plausible header length followed by random header bytes and data."""
    check_decode(struct.pack("<Q", len(raw)) + raw + b"\0" * pad)


@FUZZ
@given(JSON, st.binary(max_size=200))
@pytest.mark.slow
def test_fuzz_random_json_headers(header, data):
    check_decode(_header(json.dumps(header), data))


@FUZZ
@given(mutated_messages())
@pytest.mark.slow
def test_fuzz_mutated_messages(body):
    check_decode(body)


@FUZZ
@given(st.sampled_from(["float32", "float16"]).flatmap(
    lambda dt: arrays(dt, array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
                      elements={"allow_nan": False, "allow_infinity": False})))
@pytest.mark.slow
def test_fuzz_round_trip(z):
    out = decode_z(encode_z(z, str(z.dtype)), z.shape[1:], max_batch=z.shape[0])
    assert out.dtype == z.dtype and out.shape == z.shape
    assert out.tobytes() == z.tobytes()  # bit for bit, -0.0 included


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

"""Consistent randomness: the obfuscator's draws as a keyed function of the image."""

import os
import stat

import numpy as np
import pytest

from privsplit.cli import main
from privsplit.serve.client import Client
from privsplit.serve.protocol import ServeError
from privsplit_edge import EdgeClient
from privsplit_edge.keyed import DeviceKeyError, create_key, fresh_uniforms, keyed_uniforms, load_key
from tests.test_export import trained  # noqa: F401  (a tiny run with a frequency filter and noise)

NOWHERE = "http://127.0.0.1:9"  # encode() never talks to the server


def images(seed, n=3, size=16):
    # Pixels that are whole uint8 levels, as every decoded image is.
    pix = np.random.default_rng(seed).integers(0, 256, (n, 3, size, size))
    return (pix / 255).astype(np.float32)


@pytest.fixture
def key(tmp_path):
    return create_key(tmp_path / "device.key")


def test_keyed_uniforms_are_a_function_of_key_and_image(key, tmp_path):
    k = load_key(key)
    x = images(0)
    u = keyed_uniforms(k, x, 1000)
    assert u.shape == (3, 1000) and u.dtype == np.float32 and (u > 0).all() and (u < 1).all()
    assert np.array_equal(u, keyed_uniforms(k, x.copy(), 1000))
    assert abs(u.mean() - 0.5) < 0.02 and not np.array_equal(u[0], u[1])
    other = load_key(create_key(tmp_path / "other.key"))
    assert not np.array_equal(u, keyed_uniforms(other, x, 1000))
    y = x.copy()
    y[0, 0, 0, 0] = (round(y[0, 0, 0, 0] * 255) ^ 1) / 255  # one pixel, one level
    changed = keyed_uniforms(k, y, 1000)
    assert not np.array_equal(changed[0], u[0]) and np.array_equal(changed[1:], u[1:])
    assert not np.array_equal(fresh_uniforms(2, 50), fresh_uniforms(2, 50))


@pytest.mark.slow
def test_pytorch_onnx_and_edge_clients_agree_and_repeat_bit_identically(trained, key, tmp_path):  # noqa: F811
    assert main(["export", str(trained), "--format", "onnx"]) == 0
    x, other_image = images(1), images(2)
    torch_client = Client(trained, NOWHERE, device_key=key)
    onnx_client = Client(trained, NOWHERE, backend="onnx", device_key=key)
    edge_client = EdgeClient(trained / "export", NOWHERE, device_key=key)
    zt, zo, ze = torch_client.encode(x), onnx_client.encode(x), edge_client.encode(x)
    assert np.array_equal(zt, torch_client.encode(x)), "the same image must give a bit-identical z (PyTorch)"
    assert np.array_equal(ze, edge_client.encode(x)), "the same image must give a bit-identical z (ONNX Runtime)"
    assert np.array_equal(zo, ze)
    np.testing.assert_allclose(zt, ze, rtol=1e-4, atol=1e-4)
    assert not np.allclose(zt, torch_client.encode(other_image), atol=1e-2)
    other_key = Client(trained, NOWHERE, device_key=create_key(tmp_path / "k2"))
    assert not np.allclose(zt, other_key.encode(x), atol=1e-2), "another device key draws other noise"
    # Without a key every call draws fresh noise, in both runtimes.
    fresh = Client(trained, NOWHERE)
    assert not np.array_equal(fresh.encode(x), fresh.encode(x))
    fresh_edge = EdgeClient(trained / "export", NOWHERE)
    assert not np.array_equal(fresh_edge.encode(x), fresh_edge.encode(x))
    # The key is in no exported file.
    secret = key.read_text().strip()
    for f in (trained / "export").iterdir():
        assert secret.encode() not in f.read_bytes() and bytes.fromhex(secret) not in f.read_bytes()


@pytest.mark.slow
def test_bad_device_keys_are_clear_errors(trained, tmp_path):  # noqa: F811
    missing = tmp_path / "nope.key"
    with pytest.raises(ServeError, match=f"device key {missing} does not exist"):
        Client(trained, NOWHERE, device_key=missing)
    shared = create_key(tmp_path / "shared.key")
    os.chmod(shared, 0o644)
    with pytest.raises(DeviceKeyError, match="accessible to other users.*chmod 600"):
        load_key(shared)
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"\xff\xfe not a key")
    os.chmod(garbage, 0o600)
    with pytest.raises(DeviceKeyError, match="cannot read device key|64 hex digits"):
        load_key(garbage)
    short = tmp_path / "short.key"
    short.write_text("abcd\n")
    os.chmod(short, 0o600)
    with pytest.raises(DeviceKeyError, match="must hold 64 hex digits"):
        load_key(short)


def test_keygen_cli(tmp_path, capsys):
    path = tmp_path / "k"
    assert main(["keygen", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(load_key(path)) == 32
    assert main(["keygen", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_infer_with_a_missing_key_is_one_line(trained, tmp_path, capsys):  # noqa: F811
    code = main(["infer", str(trained), "img.png", "--server", NOWHERE, "--device-key", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert code == 2 and "device key" in err and "does not exist" in err and "Traceback" not in err

"""The edge client as its own distribution sees it: only numpy, onnxruntime, Pillow and simplejpeg.

These tests import nothing from privsplit or torch. CI runs them in a venv that has neither
(``pip install ./edge``), with ``PRIVSPLIT_EDGE_BUNDLE`` naming a real ``privsplit export``
folder made beforehand by the full package; in the project's own venv the bundle is trained
and exported here. The server is a small standard-library stand-in that speaks the wire format
(``privsplit_edge.protocol``); the real server's side is tested in tests/test_serve.py and, across
the two venvs, by .ci/run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from privsplit_edge import EdgeClient
from privsplit_edge.client import PROG
from privsplit_edge.keyed import create_key
from privsplit_edge.protocol import API, decode_z

TOKEN = "edge-test-token-0123456789abcdef"
# The tests' tiny run (tests/conftest.py's TINY): 16x16 digits, one epoch.
TINY = ["data.image_size=16", "data.limit_train=96", "data.limit_test=48", "train.batch_size=32", "train.epochs=1"]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    """A real export folder: $PRIVSPLIT_EDGE_BUNDLE, or a tiny run trained and exported now."""
    given = os.environ.get("PRIVSPLIT_EDGE_BUNDLE")
    if given:
        path = Path(given)
        assert (path / "obfuscator.json").is_file(), f"PRIVSPLIT_EDGE_BUNDLE={given} is not a `privsplit export` folder"
        return path
    privsplit = pytest.importorskip(
        "privsplit", reason="no export bundle: set PRIVSPLIT_EDGE_BUNDLE to a `privsplit export` folder")
    run = tmp_path_factory.mktemp("edge") / "run"
    privsplit.train(privsplit.apply_overrides(privsplit.Config(), TINY), run)
    return privsplit.export_obfuscator(run).parent


class Stand_in:  # noqa: N801 - a server, named for what it is
    """A threaded HTTP server answering /v1/model with the bundle's identity and /v1/infer
    with a fixed rule on the decoded z; it records every z it received."""

    def __init__(self, identity: dict, max_batch: int = 2) -> None:
        self.received: list[np.ndarray] = []
        labels = ["even", "odd"]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.reply(401, {"error": "missing or wrong bearer token"})
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                if self.authorised():
                    self.reply(200, {"api": API, **identity, "max_batch": max_batch, "default_head": "task"})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not self.authorised():
                    return
                z = decode_z(body, identity["z_shape"], max_batch)
                outer.received.append(z)
                p = 1 / (1 + np.exp(-z.reshape(len(z), -1).astype(np.float64).mean(1)))
                self.reply(200, {"head": "task", "labels": labels, "n": len(z), "predictions": [
                    {"index": int(q > 0.5), "label": labels[int(q > 0.5)], "probability": float(max(q, 1 - q)),
                     "probabilities": [float(1 - q), float(q)]} for q in p]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(bundle):
    s = Stand_in(json.loads((bundle / "obfuscator.json").read_text())["identity"])
    yield s
    s.close()


@pytest.fixture
def images(tmp_path) -> list[str]:
    """Three images of other sizes than the model's, PNG and JPEG (the client crops and resizes)."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (ext, size) in enumerate([("png", (20, 24)), ("jpg", (40, 30)), ("png", (16, 16))]):
        p = tmp_path / f"img{i}.{ext}"
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture
def token_file(tmp_path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return str(path)


def edge_command() -> list[str]:
    """The installed ``privsplit-edge`` next to this Python (the console script a user runs)."""
    script = Path(sys.executable).with_name("privsplit-edge")
    assert script.is_file(), f"{script} is not installed: pip install ./edge"
    return [str(script)]


def run_edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*edge_command(), *args], capture_output=True, text=True, timeout=120)


def test_privsplit_edge_infers_through_the_wire_in_batches(bundle, server, images, token_file, tmp_path):
    out = tmp_path / "results.json"
    r = run_edge("infer", str(bundle), *images, "--server", server.url, "--token-file", token_file, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote 3 result(s) to {out}" and r.stderr == ""
    results = json.loads(out.read_text())
    assert [x["image"] for x in results] == images
    assert all(x["label"] in ("even", "odd") and 0.5 <= x["probability"] <= 1 for x in results)
    # max_batch 2: two requests, every z of the run's shape and finite.
    z_shape = tuple(json.loads((bundle / "obfuscator.json").read_text())["identity"]["z_shape"])
    assert [z.shape for z in server.received] == [(2, *z_shape), (1, *z_shape)]
    assert all(z.dtype == np.float32 and np.isfinite(z).all() for z in server.received)

    r = run_edge("infer", str(bundle), images[0], "--server", server.url, "--token-file", token_file, "--float16")
    assert r.returncode == 0, r.stderr
    label, prob, path = r.stdout.strip().split("\t")
    assert label in ("even", "odd") and float(prob) >= 0.5 and path == images[0]
    assert server.received[-1].dtype == np.float16


def test_errors_are_one_line_named_privsplit_edge(bundle, server, images, token_file, tmp_path):
    assert PROG == "privsplit-edge"
    r = run_edge("infer", str(bundle), images[0], "--server", server.url)  # no token: the server's 401
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("privsplit-edge: error: server answered 401") and r.stderr.count("\n") == 1, r.stderr
    r = run_edge("infer", str(tmp_path / "nothing"), images[0], "--server", server.url)
    assert r.returncode == 2 and r.stderr.startswith("privsplit-edge: error: ") and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    r = run_edge("infer", str(bundle), images[0])  # argparse: the usage names the command as installed
    assert r.returncode == 2 and "usage: privsplit-edge infer" in r.stderr and "the following arguments are required: --server" in r.stderr
    r = run_edge("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: privsplit-edge ")


def test_device_key_repeats_z_and_fresh_draws_do_not(bundle, tmp_path, images):
    manifest = json.loads((bundle / "obfuscator.json").read_text())
    fresh = EdgeClient(bundle, "http://127.0.0.1:1")
    z1, z2 = fresh.encode(images), fresh.encode(images)
    assert z1.shape == (3, *manifest["identity"]["z_shape"])
    keyed = EdgeClient(bundle, "http://127.0.0.1:1", device_key=create_key(tmp_path / "device.key"))
    np.testing.assert_array_equal(keyed.encode(images), keyed.encode(images))
    if manifest["draws"]["per_image"]:  # a random chain: fresh randomness differs between calls
        assert not np.array_equal(z1, z2)


def test_edge_client_imports_neither_privsplit_nor_torch(bundle, images):
    """In a fresh process, encoding with the client loads no module of privsplit or torch."""
    code = (
        "import sys\n"
        "from privsplit_edge import EdgeClient\n"
        f"EdgeClient({str(bundle)!r}, 'http://127.0.0.1:1').encode({images!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'privsplit', 'yaml'))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr

"""A torch-free client: ONNX Runtime runs the exported obfuscator on the device,
only ``z`` goes to the server over HTTP (standard library ``http.client``).

Uses only the standard library, numpy, onnxruntime and Pillow.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import EdgeError, IdentityMismatch, ServerError
from .images import decode_square
from .keyed import fresh_uniforms, keyed_uniforms, load_key
from .protocol import API, CONTENT_TYPE, encode_z, identity_mismatches, read_token

MANIFEST = "obfuscator.json"


class Http:
    """A tiny JSON-over-HTTP client with a keep-alive connection per thread."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        u = urllib.parse.urlsplit(base_url.rstrip("/"))
        if u.scheme not in ("http", "https") or not u.hostname:
            raise EdgeError(f"server URL must look like http://HOST:PORT, got {base_url!r}")
        self.url, self.scheme, self.host, self.port = base_url.rstrip("/"), u.scheme, u.hostname, u.port
        self.prefix = u.path.rstrip("/")
        self.token, self.timeout = token, timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        """Send a request and return the decoded JSON reply; raises :class:`ServerError` on a 4xx/5xx."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, self.prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                conn.close()
                self._local.conn = None
                # A kept-alive connection the server closed in between: retry once on a fresh one.
                if attempt == 1 or not isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                    raise ServerError(f"cannot reach the server at {self.url} ({e})") from None
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            self._local.conn = None
        try:
            reply = json.loads(data) if data else {}
        except json.JSONDecodeError:
            reply = {"error": data[:200].decode("utf-8", "replace")}
        if resp.status >= 400:
            msg = reply.get("error") or reply.get("detail") or resp.reason
            raise ServerError(f"server answered {resp.status}: {msg}", resp.status)
        return reply


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode an image to float32 (3, size, size) in [0, 1], exactly as the
    training data loader does: RGB, centre-cropped to a square, bilinear resize."""
    try:
        arr = decode_square(path, size)
    except OSError as e:
        raise EdgeError(f"cannot read image {path}: {e}") from None
    return arr.transpose(2, 0, 1).astype(np.float32) / np.float32(255)


def as_batch(images: Iterable[Any] | np.ndarray, size: int) -> np.ndarray:
    """Images (paths or float arrays (3, H, W) in [0, 1]) as one float32 (N, 3, size, size) batch."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = images.astype(np.float32, copy=False)
    else:
        items = [load_image(im, size) if isinstance(im, (str, Path)) else np.asarray(im, np.float32) for im in images]
        if not items:
            raise EdgeError("no images given")
        batch = np.stack(items)
    if batch.shape[1:] != (3, size, size):
        raise EdgeError(f"images must be (N, 3, {size}, {size}) in [0, 1]; got {batch.shape}")
    return batch


class EdgeClient:
    """Run an exported ONNX obfuscator locally and ask the server for the task result.

    Args:
        bundle: the export folder (``obfuscator.onnx`` + ``obfuscator.json``)
            written by ``privsplit export``, or the ``.onnx`` file inside it.
        server_url: e.g. ``http://127.0.0.1:8000``.
        token: bearer token, when the server was started with ``--token-file``.
        dtype: what is sent: ``"float32"`` or ``"float16"`` (half the bytes).
        threads: ONNX Runtime intra-op threads (None = its default).
        device_key: path of the device key (``privsplit keygen``): random ops draw
            consistently per image, so resending an image sends the same ``z``.
            None: fresh randomness at every call.

    Before sending anything the client checks that the server's ``/v1/model``
    describes the same run (method, split, ``z`` shape, labels, fingerprint of
    the task network's weights) and raises :class:`IdentityMismatch` if not.
    """

    def __init__(
        self,
        bundle: str | Path,
        server_url: str,
        token: str | None = None,
        dtype: str = "float32",
        threads: int | None = None,
        timeout: float = 60.0,
        device_key: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort

        self.key = load_key(device_key) if device_key is not None else None

        path = Path(bundle)
        folder = path.parent if path.suffix == ".onnx" else path
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise EdgeError(f"{folder} has no {MANIFEST}: export the run with `privsplit export RUN_DIR --format onnx`")
        self.manifest = json.loads(manifest_path.read_text())
        if "onnx" not in self.manifest.get("files", {}):
            raise EdgeError(f"{folder} has no ONNX model: export it with `privsplit export RUN_DIR --format onnx`")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / self.manifest["files"]["onnx"]), opts, providers=["CPUExecutionProvider"])
        self.draws = int(self.manifest.get("draws", {}).get("per_image", 0))
        self.identity = self.manifest["identity"]
        self.image_size = int(self.identity["image_shape"][-1])
        self.http = Http(server_url, token, timeout)
        self.dtype = dtype
        self._server: dict[str, Any] | None = None

    def check(self) -> dict[str, Any]:
        """Fetch ``/v1/model`` and verify it is this run's task network; returns it."""
        if self._server is None:
            remote = self.http.request("GET", "/v1/model")
            check_server(self.identity, remote)
            self._server = remote
        return self._server

    def encode(self, images: Iterable[Any] | np.ndarray) -> np.ndarray:
        """Run the obfuscator: images -> ``z`` float32 (N, *z_shape). Random ops draw
        fresh randomness every call, or consistent draws per image with a device key."""
        batch = as_batch(images, self.image_size)
        feed = {"image": batch}
        if self.draws:
            feed["draws"] = keyed_uniforms(self.key, batch, self.draws) if self.key else fresh_uniforms(len(batch), self.draws)
        return self.session.run(None, feed)[0]

    def infer(self, images: Iterable[Any] | np.ndarray, head: str | None = None) -> list[dict[str, Any]]:
        """Task results for ``images`` (paths or arrays): one dict per image with
        ``label``, ``index``, ``probability`` and ``probabilities``."""
        return send(self.http, self.check(), self.encode(images), self.dtype, head)


def check_server(local: dict[str, Any], remote: dict[str, Any]) -> None:
    """Raise :class:`IdentityMismatch` unless the server runs ``local``'s task network."""
    if remote.get("api") != API:
        raise IdentityMismatch(f"the server speaks {remote.get('api')!r}, this client {API!r}: update one of them")
    diff = identity_mismatches(local, remote)
    if diff:
        raise IdentityMismatch(
            "the server runs a different model than this client's obfuscator was trained with; nothing was sent. "
            + "; ".join(diff)
        )


def send(http: Http, server: dict[str, Any], z: np.ndarray, dtype: str, head: str | None) -> list[dict[str, Any]]:
    """POST ``z`` in batches of the server's ``max_batch``; returns the predictions in order."""
    path = "/v1/infer" + (f"?head={urllib.parse.quote(head)}" if head else "")
    out: list[dict[str, Any]] = []
    step = int(server.get("max_batch", len(z))) or len(z)
    for i in range(0, len(z), step):
        reply = http.request("POST", path, encode_z(z[i : i + step], dtype), CONTENT_TYPE)
        out += reply["predictions"]
    return out


def print_results(paths: Sequence[str], results: list[dict[str, Any]], out: str | None) -> None:
    """Print ``label probability path`` per image, or write JSON to ``out``."""
    if out:
        Path(out).write_text(json.dumps([{"image": str(p), **r} for p, r in zip(paths, results)], indent=2))
        print(f"wrote {len(results)} result(s) to {out}")
        return
    for p, r in zip(paths, results):
        print(f"{r['label']}\t{r['probability']:.4f}\t{p}")


def main(argv: list[str] | None = None) -> int:
    """``python -m privsplit_edge infer BUNDLE --server URL IMAGE...`` (no torch needed)."""
    parser = argparse.ArgumentParser(prog="privsplit_edge", description="Torch-free privsplit client (ONNX Runtime).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("infer", help="obfuscate images locally, get the task result from the server")
    p.add_argument("bundle", help="folder written by `privsplit export RUN_DIR --format onnx`")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--server", required=True, metavar="URL")
    p.add_argument("--token-file", metavar="FILE", help="file holding the server's bearer token")
    p.add_argument("--head", help="task head to ask (default: the server's first)")
    p.add_argument("--float16", action="store_true", help="send z as float16 (half the bytes)")
    p.add_argument("--device-key", metavar="FILE",
                   help="consistent randomness: the same image always gives the same z (key from `privsplit keygen`)")
    p.add_argument("--out", metavar="FILE.json", help="write results as JSON instead of printing")
    args = parser.parse_args(argv)
    try:
        token = read_token(args.token_file) if args.token_file else None
        client = EdgeClient(args.bundle, args.server, token, "float16" if args.float16 else "float32",
                            device_key=args.device_key)
        print_results(args.images, client.infer(args.images, args.head), args.out)
    except EdgeError as e:
        print(f"privsplit_edge: error: {e}", file=sys.stderr)
        return 2
    return 0

"""A torch-free client: ONNX Runtime runs the exported obfuscator on the device,
only ``z`` goes to the server over HTTP (standard library ``http.client``).

Uses only the standard library, numpy, onnxruntime and Pillow.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import EdgeError, IdentityMismatch, ServerError
from .images import decode_square
from .keyed import fresh_uniforms, keyed_uniforms, load_key
from .protocol import API, CONTENT_TYPE, encode_z, file_digest, identity_mismatches, is_loopback, read_token

MANIFEST = "obfuscator.json"
PROG = "privsplit-edge"  # the command's name in usage and errors, also under python -m privsplit_edge


class Http:
    """A tiny JSON-over-HTTP(S) client with a keep-alive connection per thread.

    ``https://`` URLs verify the server's certificate against the system's CAs,
    or against ``ca_file`` (a self-signed deployment's certificate or CA). A
    token is never sent over plain ``http://`` to another host: anyone on the
    path could read and replay it; ``allow_insecure_token`` forces it.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0,
                 ca_file: str | Path | None = None, allow_insecure_token: bool = False) -> None:
        u = urllib.parse.urlsplit(base_url.rstrip("/"))
        if u.scheme not in ("http", "https") or not u.hostname:
            raise EdgeError(f"server URL must look like http://HOST:PORT or https://HOST:PORT, got {base_url!r}")
        try:
            port = u.port
        except ValueError:
            raise EdgeError(f"server URL {base_url!r} has no valid port") from None
        self.url, self.scheme, self.host, self.port = base_url.rstrip("/"), u.scheme, u.hostname, port
        self.prefix = u.path.rstrip("/")
        self.token, self.timeout = token, timeout
        if token and u.scheme == "http" and not is_loopback(u.hostname) and not allow_insecure_token:
            raise EdgeError(
                f"refusing to send the bearer token over plain http to {u.hostname}: anyone on the network path could "
                "read and replay it. Serve with --tls-cert/--tls-key and use https://, or pass --allow-insecure-token "
                "to send it in clear anyway"
            )
        self.context: ssl.SSLContext | None = None
        if ca_file is not None and u.scheme != "https":
            raise EdgeError(f"--ca-file is for https:// servers; {base_url!r} is plain http")
        if u.scheme == "https":
            if ca_file is not None and not Path(ca_file).is_file():
                raise EdgeError(f"CA file {ca_file} {'is a folder' if Path(ca_file).is_dir() else 'does not exist'}: "
                                "give the server's certificate (or its CA) as a PEM file")
            try:
                self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except (ssl.SSLError, OSError, ValueError) as e:
                raise EdgeError(f"cannot read CA file {ca_file} ({e}): give a PEM certificate") from None
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
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
            except ssl.SSLCertVerificationError as e:
                conn.close()
                self._local.conn = None
                raise ServerError(f"the server at {self.url} has a certificate this client does not trust "
                                  f"({e.verify_message}): give its certificate or CA with --ca-file; nothing was sent") from None
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
    if not Path(path).is_file():
        raise EdgeError(f"image {path} {'is a folder, not an image file' if Path(path).is_dir() else 'does not exist'}")
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
        ca_file: str | Path | None = None,
        allow_insecure_token: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.key = load_key(device_key) if device_key is not None else None
        self.http = Http(server_url, token, timeout, ca_file, allow_insecure_token)  # URL and TLS checked first
        path = Path(bundle)
        folder = path.parent if path.suffix == ".onnx" else path
        self.manifest = read_manifest(folder)
        model = folder / self.manifest["files"]["onnx"]
        check_file_digest(model, self.manifest.get("sha256", {}).get(model.name))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a broken file
            why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise EdgeError(f"{model} is not a readable ONNX model ({why}): export it again with "
                            "`privsplit export RUN_DIR --format onnx`") from None
        self.draws = int(self.manifest["draws"]["per_image"])
        self.identity = self.manifest["identity"]
        self.image_size = int(self.identity["image_shape"][-1])
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


def read_manifest(folder: Path) -> dict[str, Any]:
    """``obfuscator.json`` of an export folder, checked: a truncated or edited one
    is a one-line :class:`EdgeError`, never a traceback deep in the client."""
    path = folder / MANIFEST
    if not path.is_file():
        raise EdgeError(f"{folder} has no {MANIFEST}: export the run with `privsplit export RUN_DIR --format onnx`")
    again = "export the run again with `privsplit export RUN_DIR --format onnx`"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, or not JSON (a truncated file)
        raise EdgeError(f"{path} is not a readable export manifest ({e}): {again}") from None
    try:
        files, identity, draws = manifest["files"], manifest["identity"], manifest.get("draws", {"per_image": 0})
        ok = (isinstance(files, dict) and isinstance(identity, dict) and isinstance(draws, dict)
              and isinstance(draws.get("per_image", 0), int) and draws.get("per_image", 0) >= 0
              and isinstance(identity["image_shape"][-1], int) and isinstance(manifest.get("sha256", {}), dict))
    except (KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        raise EdgeError(f"{path} is not a complete export manifest (files, identity, draws): {again}")
    if not isinstance(files.get("onnx"), str) or Path(files["onnx"]).name != files["onnx"]:
        raise EdgeError(f"{folder} has no ONNX model: export it with `privsplit export RUN_DIR --format onnx`")
    manifest.setdefault("draws", {"per_image": 0})
    draws.setdefault("per_image", 0)
    return manifest


def check_file_digest(path: Path, expected: str | None) -> None:
    """Raise :class:`EdgeError` unless ``path`` exists and (when a digest was recorded) hashes to it."""
    if not path.is_file():
        raise EdgeError(f"{path} does not exist: export the run again with `privsplit export RUN_DIR --format onnx`")
    if expected is not None and file_digest(path) != expected:
        raise EdgeError(f"{path} is damaged or was replaced: its SHA-256 is not the one the export manifest "
                        "recorded; export the run again with `privsplit export RUN_DIR --format onnx`")


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


def check_out(out: str | None) -> None:
    """Refuse an ``--out`` that cannot be written before any work is done."""
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise EdgeError(f"--out {out} is a folder: give a file name, e.g. {path / 'results.json'}")
    if not path.parent.is_dir():
        raise EdgeError(f"--out {out}: folder {path.parent} does not exist")


def print_results(paths: Sequence[str], results: list[dict[str, Any]], out: str | None) -> None:
    """Print ``label probability path`` per image, or write JSON to ``out``
    (atomically; if that fails the results are printed, so the work is not lost)."""
    if out:
        path = Path(out)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(json.dumps([{"image": str(p), **r} for p, r in zip(paths, results)], indent=2))
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            for p, r in zip(paths, results):
                print(f"{r['label']}\t{r['probability']:.4f}\t{p}")
            raise EdgeError(f"cannot write --out {out} ({e.strerror}); the results are printed above") from None
        print(f"wrote {len(results)} result(s) to {out}")
        return
    for p, r in zip(paths, results):
        print(f"{r['label']}\t{r['probability']:.4f}\t{p}")


def main(argv: list[str] | None = None) -> int:
    """``privsplit-edge infer BUNDLE --server URL IMAGE...`` (or ``python -m privsplit_edge``; no torch needed)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Torch-free privsplit client (ONNX Runtime).")
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
    p.add_argument("--ca-file", metavar="FILE.pem",
                   help="trust this certificate (or CA) for an https:// server with a self-signed certificate")
    p.add_argument("--allow-insecure-token", action="store_true",
                   help="send the token over plain http:// to a non-loopback host anyway: anyone on the network "
                   "path can read and replay it")
    args = parser.parse_args(argv)
    try:
        check_out(args.out)
        token = read_token(args.token_file) if args.token_file else None
        client = EdgeClient(args.bundle, args.server, token, "float16" if args.float16 else "float32",
                            device_key=args.device_key, ca_file=args.ca_file,
                            allow_insecure_token=args.allow_insecure_token)
        print_results(args.images, client.infer(args.images, args.head), args.out)
    except EdgeError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0

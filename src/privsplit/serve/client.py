"""The client: runs the obfuscator locally and sends only ``z`` to the server.

Two backends run the same obfuscator: ``"torch"`` (the run's weights) and
``"onnx"`` (the model written by ``privsplit export``, through ONNX Runtime;
the torch-free :class:`privsplit_edge.EdgeClient` does the same without this
package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from privsplit_edge import client as edge
from privsplit_edge.keyed import keyed_uniforms, load_key

from ..rundir import RunDir
from .protocol import EdgeError, ServeError, identity_mismatches, run_identity

BACKENDS = ("torch", "onnx")


class Client:
    """Obfuscate images on this machine and get the task result from a privsplit server.

    Args:
        run_dir: the finished run folder (the client reads the obfuscator's
            weights, ``run.json`` and ``config.yaml``, and hashes
            ``heads.safetensors`` to recognise the server's model).
        server_url: e.g. ``http://127.0.0.1:8000``.
        token: bearer token, when the server requires one.
        backend: ``"torch"`` or ``"onnx"`` (needs ``privsplit export RUN_DIR``
            first, or ``export_dir``).
        export_dir: folder of the ONNX export (default ``RUN_DIR/export``).
        dtype: ``"float32"`` or ``"float16"`` on the wire.
        ca_file: trust this certificate (or CA) for an ``https://`` server (self-signed).
        allow_insecure_token: send ``token`` over plain ``http://`` to a non-loopback host anyway.
        device: where the torch backend's obfuscator runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        model: the run's :class:`~privsplit.methods.SplitModel`, for a run trained on your own
            model parts (see :func:`~privsplit.run.load_run`; the torch backend loads its obfuscator).
        device_key: path of a device key (``privsplit keygen``): random ops draw
            consistently per image (:mod:`privsplit_edge.keyed`), so an image sent
            twice gives the same ``z``; None: fresh randomness at every call.

    Before the first request the client checks that the server's ``/v1/model``
    describes this run; a mismatch raises :class:`ServeError` and nothing is sent.

    Example:
        >>> client = Client("runs/my-run", "http://127.0.0.1:8000")  # doctest: +SKIP
        >>> client.infer(["digit.png"])[0]["label"]                   # doctest: +SKIP
        'even'
    """

    def __init__(
        self,
        run_dir: str | Path,
        server_url: str,
        token: str | None = None,
        backend: str = "torch",
        export_dir: str | Path | None = None,
        dtype: str = "float32",
        timeout: float = 60.0,
        device_key: str | Path | None = None,
        ca_file: str | Path | None = None,
        allow_insecure_token: bool = False,
        device: str = "cpu",
        model: Any = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ServeError(f"unknown backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
        if dtype not in ("float32", "float16"):
            raise ServeError(f"dtype must be float32 or float16, got {dtype!r}")
        self.run_dir = Path(run_dir)
        self.identity = run_identity(self.run_dir)
        self.image_size = int(self.identity["image_shape"][-1])
        self.backend, self.dtype = backend, dtype
        self._server: dict[str, Any] | None = None
        try:
            self.key = load_key(device_key) if device_key is not None else None
            self.http = edge.Http(server_url, token, timeout, ca_file, allow_insecure_token)
            if backend == "torch":
                from ..run import load_run

                self.device = torch.device(device)
                self.obfuscator = load_run(self.run_dir, parts=("obfuscator",), model=model).model.obfuscator.to(self.device)
            else:
                folder = Path(export_dir) if export_dir else RunDir(self.run_dir).export_dir
                if not (folder / "obfuscator.onnx").is_file():
                    raise ServeError(f"no ONNX export in {folder}: run `privsplit export {self.run_dir} --format onnx` first")
                self.edge = edge.EdgeClient(folder, server_url, token, dtype, timeout=timeout, device_key=device_key,
                                            ca_file=ca_file, allow_insecure_token=allow_insecure_token)
                diff = identity_mismatches(self.identity, self.edge.identity)
                if diff:
                    raise ServeError(f"the ONNX export in {folder} is from another run ({'; '.join(diff)}); export again")
        except EdgeError as e:
            raise ServeError(str(e)) from None

    def check(self) -> dict[str, Any]:
        """Fetch the server's ``/v1/model`` and verify it serves this run; returns it."""
        if self._server is None:
            try:
                remote = self.http.request("GET", "/v1/model")
                edge.check_server(self.identity, remote)
            except EdgeError as e:
                raise ServeError(str(e)) from None
            self._server = remote
        return self._server

    def encode(self, images: Iterable[Any] | np.ndarray | torch.Tensor) -> np.ndarray:
        """Run the obfuscator locally: images -> ``z`` float32 (N, *z_shape).

        ``images``: paths, or float (3, H, W) / (N, 3, H, W) tensors or arrays in
        [0, 1]. Random reduction ops draw fresh randomness (torch's global
        generator for the torch backend: ``torch.manual_seed`` fixes it), or,
        with a device key, draws that are a keyed function of each image.
        """
        if self.backend == "onnx":
            try:
                return self.edge.encode(_as_numpy(images, self.image_size))
            except EdgeError as e:
                raise ServeError(str(e)) from None
        batch = _as_numpy(images, self.image_size)
        draws = self.obfuscator.draws
        u = torch.from_numpy(keyed_uniforms(self.key, batch, draws)).to(self.device) if self.key and draws else None
        with torch.inference_mode():
            return self.obfuscator(torch.from_numpy(batch).to(self.device), u).float().cpu().numpy()

    def infer(self, images: Iterable[Any] | np.ndarray | torch.Tensor, head: str | None = None) -> list[dict[str, Any]]:
        """Task results, one dict per image: ``label``, ``index``, ``probability``, ``probabilities``."""
        server = self.check()  # before anything leaves this machine
        try:
            return edge.send(self.http, server, self.encode(images), self.dtype, head)
        except EdgeError as e:
            raise ServeError(str(e)) from None


def _as_numpy(images: Any, size: int) -> np.ndarray:
    """Paths, tensors or arrays as one float32 (N, 3, size, size) batch."""
    from ..data.base import open_image

    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().float().numpy()
    if isinstance(images, np.ndarray):
        batch = images[None] if images.ndim == 3 else images
    else:
        items = []
        for im in images:
            if isinstance(im, (str, Path)):
                if not Path(im).is_file():
                    kind = "is a folder, not an image file" if Path(im).is_dir() else "does not exist"
                    raise ServeError(f"image {im} {kind}")
                try:
                    im = open_image(Path(im), size)
                except OSError as e:
                    raise ServeError(f"cannot read image {im}: {e}") from None
            items.append(im.numpy() if isinstance(im, torch.Tensor) else np.asarray(im))
        if not items:
            raise ServeError("no images given")
        batch = np.stack(items)
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.shape[1:] != (3, size, size):
        raise ServeError(f"images must be (N, 3, {size}, {size}) with values in [0, 1]; got {batch.shape}")
    return batch



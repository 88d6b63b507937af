"""Export the obfuscator (encoder + reduction chain, or a baseline's client part) for the edge device.

``privsplit export RUN_DIR --format onnx|torchscript`` writes, into
``RUN_DIR/export/`` (or ``--out``):

* ``obfuscator.onnx`` (input ``image`` float32 (N, 3, H, W) in [0, 1], output
  ``z`` float32 (N, *z_shape), dynamic batch axis N), or
  ``obfuscator.torchscript.pt`` (load with ``torch.jit.load``);
* ``obfuscator.json``: the manifest the torch-free edge client reads: the run's
  identity (method, split, ``z`` shape, labels, fingerprint of the server's
  weights), the input size, how images are prepared, how many random draws
  the model takes, and the SHA-256 of each model file (checked by the edge
  client).

Each file is written under a temporary name and renamed into place, the
manifest last: an interrupted export leaves the old files or none, never a
broken model beside a manifest that vouches for it.

Random ops stay random, but their randomness is an input: a client with random
steps takes a second input ``draws`` float32 (N, D) of uniforms in (0, 1)
(D in the manifest). The client fills it with fresh draws from the operating
system's entropy, or with consistent draws from a keyed hash of the image
(:mod:`privsplit_edge.keyed`); the graph itself is deterministic, so the same
draws give the same ``z`` in PyTorch and ONNX Runtime. Each reduction op
exports itself (:meth:`privsplit.reduction.ReductionOp.export_form`: the
frequency filter as real matrix products with the 2-D DFT matrices).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privsplit_edge.keyed import SCHEME

from .errors import PrivsplitError
from .obfuscator import ClientPart
from .rundir import RunDir, write_json, writing
from .weights import file_digest

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 18
FILENAMES = {"onnx": "obfuscator.onnx", "torchscript": "obfuscator.torchscript.pt"}
MANIFEST = "obfuscator.json"


class ExportError(PrivsplitError):
    """The obfuscator (or one of its ops) cannot be exported."""


class ExportableObfuscator(nn.Module):
    """A client part in its exportable form: ``(image[, draws]) -> z``.

    Each reduction op exports itself (:meth:`ReductionOp.export_form`), so the
    math is the one that trained. A client with random steps takes its
    randomness as the input ``draws`` (N, :attr:`draws`) of uniforms in (0, 1).
    """

    def __init__(self, client: ClientPart) -> None:
        super().__init__()
        self.image_shape = tuple(client.image_shape)
        self.z_shape = tuple(client.z_shape)
        self.random_ops = list(client.random_ops)
        self.draws = client.draws
        self.parts: list[tuple[str, nn.Module]] = client.stages()  # to name the stage that fails to export
        self.model = client.export_form()

    def forward(self, image: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(image, draws)


# --- writing the files -------------------------------------------------------------------------------------


def export_obfuscator(run_dir: str | Path, fmt: str = "onnx", out_dir: str | Path | None = None,
                      model: Any = None) -> Path:
    """Export a finished run's obfuscator; returns the model file's path.

    The manifest ``obfuscator.json`` is written next to it. ``model``: for a run
    trained on a user's own model parts, the :class:`~privsplit.methods.SplitModel`
    to load the weights into (:func:`~privsplit.run.load_run`).

    Example:
        >>> path = export_obfuscator("runs/digits-ours-rn18_3-20260101-120000", "onnx")  # doctest: +SKIP
    """
    from .run import load_run
    from .serve.protocol import run_identity

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    out = Path(out_dir) if out_dir else RunDir(run_dir).export_dir
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder: give a folder for the exported files")
    run = load_run(run_dir, parts=("obfuscator",), model=model)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    client = ExportableObfuscator(run.model.obfuscator).eval()
    path = out / FILENAMES[fmt]
    tmp = out / f".tmp-{path.name}"  # same suffix: the exporters look at it
    try:
        with writing(path):
            if fmt == "onnx":
                _export_onnx(client, tmp)
            else:
                _export_torchscript(client, tmp)
            digest = file_digest(tmp)
            os.replace(tmp, path)
    finally:
        if tmp.is_file():
            tmp.unlink()
    c, h, w = client.image_shape
    identity = run_identity(run_dir)
    files: dict[str, str] = {}
    digests: dict[str, str] = {}
    try:  # keep the other format's entry when it is from this run
        old = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else {}
    except (OSError, ValueError):
        old = {}  # a broken manifest is replaced
    if isinstance(old, dict) and old.get("identity") == identity and isinstance(old.get("files"), dict):
        files = {k: v for k, v in old["files"].items() if isinstance(v, str) and (out / v).is_file()}
        digests = {v: d for v, d in (old.get("sha256") or {}).items() if v in files.values()}
    files[fmt] = path.name
    digests[path.name] = digest
    manifest: dict[str, Any] = {
        "files": files,
        "identity": identity,
        "input": {"name": "image", "dtype": "float32", "shape": ["N", c, h, w], "range": [0.0, 1.0]},
        "output": {"name": "z", "dtype": "float32", "shape": ["N", *client.z_shape]},
        "preprocess": "RGB; centre-crop to a square; bilinear resize to HxW; divide by 255",
        "reduction": run.config.reduction,
        "random_ops": client.random_ops,
        # uniforms in (0, 1) per image, fed as the input "draws"; 0: the model takes the image alone
        "draws": {"name": "draws", "dtype": "float32", "per_image": client.draws, "keyed_scheme": SCHEME},
        "onnx_opset": ONNX_OPSET,
        "sha256": digests,  # of each model file, checked before it is loaded
    }
    write_json(out / MANIFEST, manifest)  # last: it vouches for the files above
    return path


def _example(model: ExportableObfuscator, n: int = 2) -> tuple[torch.Tensor, ...]:
    image = torch.rand(n, *model.image_shape)
    return (image, torch.rand(n, model.draws)) if model.draws else (image,)


def _export_onnx(model: ExportableObfuscator, path: Path) -> None:
    batch = torch.export.Dim("N", min=1, max=1 << 20)
    names = ["image", "draws"] if model.draws else ["image"]
    dynamic = {"image": {0: batch}, "draws": {0: batch}} if model.draws else {"image": {0: batch}}
    try:
        # The exporter narrates its steps on stdout; keep the CLI's output short.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                _example(model),
                str(path),
                dynamo=True,
                external_data=False,  # one file: the weights inside the model
                verbose=False,
                opset_version=ONNX_OPSET,
                input_names=names,
                output_names=["z"],
                dynamic_shapes=dynamic,
            )
    except Exception as e:  # noqa: BLE001 - name the op that failed instead of a deep stack trace
        raise ExportError(f"cannot export to ONNX: {_culprit(model)}{_first_line(e)}") from None


def _culprit(model: ExportableObfuscator) -> str:
    """Export each part alone (random ops on fresh draws) to say which one fails."""
    x = torch.rand(2, *model.image_shape)
    for name, part in model.parts:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(part, (x,), None, dynamo=True, verbose=False, opset_version=ONNX_OPSET)
        except Exception:  # noqa: BLE001
            return f"part {name!r} is not exportable: "
        with torch.no_grad():
            x = part(x)
    return ""


def _export_torchscript(model: ExportableObfuscator, path: Path) -> None:
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, _example(model))
            traced.save(str(path))
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"cannot export to TorchScript: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    """The telling line of an exporter error: its exception summary when it has one."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # the exporter colours its messages
    lines = text.splitlines()
    summary = [ln for ln in lines if ln.startswith("<class '")]
    if summary:
        return summary[0][:300]
    return lines[0][:300] if lines else type(e).__name__



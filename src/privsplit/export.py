"""Export the obfuscator (encoder + reduction chain, or a baseline's client part) for the edge device.

``privsplit export RUN_DIR --format onnx|torchscript`` writes, into
``RUN_DIR/export/`` (or ``--out``):

* ``obfuscator.onnx`` (input ``image`` float32 (N, 3, H, W) in [0, 1], output
  ``z`` float32 (N, *z_shape), dynamic batch axis N), or
  ``obfuscator.torchscript.pt`` (load with ``torch.jit.load``);
* ``obfuscator.json``: the manifest the torch-free edge client reads: the run's
  identity (method, split, ``z`` shape, labels, fingerprint of the server's
  weights), the input size and how images are prepared.

Random ops stay random: they are exported as ONNX random operators
(``RandomNormalLike``, ``RandomUniformLike``) without a fixed seed, so the
exported model draws fresh noise, replacement masks and permutations at every
run, on the device. To export, every reduction op is swapped for an
export-friendly twin with the same math (:data:`EXPORT_TWINS`): the frequency
filter becomes real matrix products with the 2-D DFT matrices (the band mask
is fixed once the input size is), shapes that depend only on the image size
are computed once, and random draws use ``*_like`` ops so the batch axis stays
dynamic.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import PrivsplitError
from .obfuscator import Obfuscator
from .reduction import Reduction, ReductionOp
from .reduction.frequency import radial_frequency

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 18
FILENAMES = {"onnx": "obfuscator.onnx", "torchscript": "obfuscator.torchscript.pt"}
MANIFEST = "obfuscator.json"


class ExportError(PrivsplitError):
    """The obfuscator (or one of its ops) cannot be exported."""


# --- export-friendly twins of the reduction ops ------------------------------------------------------------


class _Noise(nn.Module):
    def __init__(self, op: ReductionOp, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.sigma = float(op.sigma)
        self.rms = op.normalize == "rms"
        self.dims = tuple(range(1, len(in_shape) + 1))  # every non-batch axis

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.rms:
            z = z / z.pow(2).mean(dim=self.dims, keepdim=True).add(1e-12).sqrt()
        return z + self.sigma * torch.randn_like(z)


class _Replace(nn.Module):
    def __init__(self, op: ReductionOp, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.fraction = float(op.fraction)
        self.single = math.prod(in_shape) == 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(1)  # (N, D)
        mean = flat.mean(1, keepdim=True)
        std = torch.ones_like(mean) if self.single else flat.std(1, keepdim=True)
        values = mean + std * torch.randn_like(flat)
        mask = torch.rand_like(flat) < self.fraction
        return torch.where(mask, values, flat).reshape(z.shape)


class _Shuffle(nn.Module):
    def __init__(self, op: ReductionOp, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        c, h, w = in_shape
        self.c, self.h, self.w = c, h, w
        self.k = int(round(op.fraction * h * w))  # positions taking part: fixed by the input size
        self.register_buffer("positions", torch.arange(h * w), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.k < 2:
            return z
        hw = self.h * self.w
        flat = z.flatten(2)  # (N, C, HW)
        keys = torch.rand_like(flat[:, 0, :])  # (N, HW)
        chosen = keys.argsort(1)[:, : self.k]  # (N, k) positions taking part
        order = torch.rand_like(flat[:, 0, : self.k]).argsort(1)  # (N, k) where each goes
        source = self.positions.unsqueeze(0).expand_as(keys)  # (N, HW)
        source = source.scatter(1, chosen, chosen.gather(1, order))
        index = source.unsqueeze(1).expand(-1, self.c, hw)  # (N, C, HW)
        return flat.gather(2, index).reshape(-1, self.c, self.h, self.w)


class _Frequency(nn.Module):
    """``ifft2(fft2(z) * mask).real`` as real matrix products: with F the DFT
    matrices, ``out = Re(conj(Fh) (M * (Fh z Fw^T)) conj(Fw)^T) / (H W)``."""

    def __init__(self, op: ReductionOp, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        _, h, w = in_shape
        band = (radial_frequency(h, w) >= op.low) & (radial_frequency(h, w) <= op.high)
        mask = band if op.mode == "pass" else ~band
        for name, n in (("h", h), ("w", w)):
            k = torch.arange(n, dtype=torch.float64)
            angle = -2 * math.pi * torch.outer(k, k) / n  # (n, n), symmetric
            self.register_buffer(f"{name}_re", torch.cos(angle).float(), persistent=False)
            self.register_buffer(f"{name}_im", torch.sin(angle).float(), persistent=False)
        self.register_buffer("mask", mask.float(), persistent=False)
        self.scale = 1.0 / (h * w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        p, q = self.h_re @ z, self.h_im @ z  # (N, C, H, W): Fh z, real and imaginary
        # The DFT matrices are symmetric, so Fw^T = Fw.
        s_re = (p @ self.w_re - q @ self.w_im) * self.mask
        s_im = (p @ self.w_im + q @ self.w_re) * self.mask
        u_re = self.h_re @ s_re + self.h_im @ s_im  # conj(Fh) S
        u_im = self.h_re @ s_im - self.h_im @ s_re
        return (u_re @ self.w_re + u_im @ self.w_im) * self.scale


def _same(op: ReductionOp, in_shape: tuple[int, ...]) -> nn.Module:
    return op


EXPORT_TWINS: dict[str, Callable[[ReductionOp, tuple[int, ...]], nn.Module]] = {
    "noise": _Noise,
    "replace": _Replace,
    "shuffle": _Shuffle,
    "frequency": _Frequency,
    "resize": _same,
}


class ExportableObfuscator(nn.Module):
    """The obfuscator with each reduction op replaced by its export twin.

    Same math as the original; random ops draw from torch's global generator.
    """

    def __init__(self, obfuscator: nn.Module) -> None:
        super().__init__()
        self.image_shape = tuple(obfuscator.image_shape)
        self.z_shape = tuple(obfuscator.z_shape)
        twins = []
        self.op_names: list[str] = []
        if not isinstance(obfuscator, Obfuscator):
            # A baseline's client part (raw or noisy image, MaxEnt embedding, DISCO pruner): one module,
            # exported as it is; it names its random draws in ``random_ops``.
            self.encoder = obfuscator
            self.reduction = nn.Sequential()
            self.random_ops = list(getattr(obfuscator, "random_ops", ()))
            return
        self.encoder = obfuscator.encoder
        self.random_ops = [op.name for op in obfuscator.reduction if op.random]
        shape = tuple(obfuscator.encoder_shape)
        for op in obfuscator.reduction:
            if op.name not in EXPORT_TWINS:
                raise ExportError(
                    f"reduction op {op.name!r} has no export rule (exportable: {', '.join(EXPORT_TWINS)}); "
                    "add one to privsplit.export.EXPORT_TWINS or run the PyTorch client"
                )
            twins.append(EXPORT_TWINS[op.name](op, shape))
            self.op_names.append(op.name)
            shape = op.output_shape(shape)
        self.reduction = nn.Sequential(*twins)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.encoder(image))


# --- writing the files -------------------------------------------------------------------------------------


def export_obfuscator(run_dir: str | Path, fmt: str = "onnx", out_dir: str | Path | None = None) -> Path:
    """Export a finished run's obfuscator; returns the model file's path.

    The manifest ``obfuscator.json`` is written next to it.

    Example:
        >>> path = export_obfuscator("runs/digits-ours-rn18_3-20260101-120000", "onnx")  # doctest: +SKIP
    """
    from .run import load_run
    from .serve.protocol import run_identity

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    run = load_run(run_dir, parts=("obfuscator",))
    out = Path(out_dir) if out_dir else Path(run_dir) / "export"
    out.mkdir(parents=True, exist_ok=True)
    model = ExportableObfuscator(run.model.obfuscator).eval()
    path = out / FILENAMES[fmt]
    if fmt == "onnx":
        _export_onnx(model, path)
    else:
        _export_torchscript(model, path)
    c, h, w = model.image_shape
    identity = run_identity(run_dir)
    files: dict[str, str] = {}
    if (out / MANIFEST).is_file():  # keep the other format's entry when it is from this run
        old = json.loads((out / MANIFEST).read_text())
        if old.get("identity") == identity:
            files = {k: v for k, v in old.get("files", {}).items() if (out / v).is_file()}
    files[fmt] = path.name
    manifest: dict[str, Any] = {
        "files": files,
        "identity": identity,
        "input": {"name": "image", "dtype": "float32", "shape": ["N", c, h, w], "range": [0.0, 1.0]},
        "output": {"name": "z", "dtype": "float32", "shape": ["N", *model.z_shape]},
        "preprocess": "RGB; centre-crop to a square; bilinear resize to HxW; divide by 255",
        "reduction": run.config.reduction,
        "random_ops": model.random_ops,
        "onnx_opset": ONNX_OPSET,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return path


def _export_onnx(model: ExportableObfuscator, path: Path) -> None:
    example = torch.rand(2, *model.image_shape)
    try:
        # The exporter narrates its steps on stdout; keep the CLI's output short.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,
                external_data=False,  # one file: the weights inside the model
                verbose=False,
                opset_version=ONNX_OPSET,
                input_names=["image"],
                output_names=["z"],
                dynamic_shapes={"image": {0: torch.export.Dim("N", min=1, max=1 << 20)}},
            )
    except Exception as e:  # noqa: BLE001 - name the op that failed instead of a deep stack trace
        raise ExportError(f"cannot export to ONNX: {_culprit(model)}{_first_line(e)}") from None


def _culprit(model: ExportableObfuscator) -> str:
    """Export each part alone to say which one fails."""
    shape: tuple[int, ...] = model.image_shape
    parts = [("encoder", model.encoder)] + list(zip(model.op_names, model.reduction))
    x = torch.rand(2, *shape)
    for name, part in parts:
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
    example = torch.rand(2, *model.image_shape)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # check_trace would compare two runs of a random model and fail.
            traced = torch.jit.trace(model, (example,), check_trace=False)
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


def cmd_export(args: argparse.Namespace) -> int:
    path = export_obfuscator(args.run_dir, args.format, args.out)
    print(f"wrote {path} and {path.parent / MANIFEST}")
    if args.format == "onnx":
        print(f"edge client (no torch): python -m privsplit_edge infer {path.parent} --server URL IMAGE...")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export the obfuscator (client part) to ONNX or TorchScript for the edge device",
        description="Export a finished run's obfuscator, reduction chain included (random ops draw fresh "
        "randomness on the device at every run), with a dynamic batch axis.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or torchscript")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/export)")
    p.set_defaults(func=cmd_export)

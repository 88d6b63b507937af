"""``privsplit export``: the obfuscator for the edge device (the work is in :mod:`privsplit.export`)."""

from __future__ import annotations

import argparse

FORMATS = ("onnx", "torchscript")  # privsplit.export.FORMATS (which imports torch), pinned by tests/test_packaging.py


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import MANIFEST, export_obfuscator

    path = export_obfuscator(args.run_dir, args.format, args.out)
    print(f"wrote {path} and {path.parent / MANIFEST}")
    if args.format == "onnx":
        print(f"edge client (no torch): privsplit-edge infer {path.parent} --server URL IMAGE...")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export the obfuscator (client part) to ONNX or TorchScript for the edge device",
        description="Export a finished run's obfuscator, reduction chain included, with a dynamic batch axis. "
        "A random chain takes its randomness as a second input 'draws' (uniforms in (0, 1)) that the client "
        "fills: fresh at every run, or consistent per image with a device key (privsplit keygen).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or torchscript")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/export)")
    p.set_defaults(func=cmd_export)

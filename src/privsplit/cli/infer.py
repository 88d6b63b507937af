"""``privsplit infer`` and ``privsplit keygen``: the client side (the work is in :mod:`privsplit.serve.client`)."""

from __future__ import annotations

import argparse

from ..checks import flag
from .common import add_device, add_threads, resolve_device_flag, set_threads

BACKENDS = ("torch", "onnx")  # privsplit.serve.client.BACKENDS (which imports torch), pinned by tests/test_packaging.py


def cmd_infer(args: argparse.Namespace) -> int:
    import torch

    from privsplit_edge import client as edge

    from ..serve.client import Client
    from ..serve.protocol import EdgeError, ServeError
    from ..serve.server import read_token

    if args.seed is not None:
        torch.manual_seed(args.seed)
    set_threads(args.threads)
    try:
        edge.check_out(args.out)  # before the work, not after the server has answered
    except EdgeError as e:
        raise ServeError(str(e)) from None
    token = read_token(args.token_file) if args.token_file else None
    client = Client(args.run_dir, args.server, token, args.backend, args.export_dir,
                    "float16" if args.float16 else "float32", device_key=args.device_key,
                    ca_file=args.ca_file, allow_insecure_token=args.allow_insecure_token,
                    device=resolve_device_flag(args.device) if args.backend == "torch" else "cpu")
    results = client.infer(args.images, args.head)
    try:
        edge.print_results(args.images, results, args.out)
    except EdgeError as e:
        raise ServeError(str(e)) from None
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "infer",
        help="obfuscate images locally and get the task result from a privsplit server",
        description="Run the run's obfuscator on this machine (PyTorch or the ONNX export), send only z to "
        "the server, print 'label probability image' per image (or write JSON with --out). The server's "
        "model is checked against this run before anything is sent.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the finished run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (resized like the training data)")
    p.add_argument("--server", required=True, metavar="URL", help="e.g. http://127.0.0.1:8000")
    p.add_argument("--token-file", metavar="FILE", help="file holding the server's bearer token")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="run the obfuscator with torch or the ONNX export")
    p.add_argument("--export-dir", metavar="DIR", help="ONNX export folder (default RUN_DIR/export)")
    p.add_argument("--head", help="task head to ask (default: the server's first)")
    p.add_argument("--float16", action="store_true", help="send z as float16 (half the bytes)")
    p.add_argument("--seed", type=flag(int, ge=0), help="seed the torch backend's random reduction ops")
    add_threads(p, "torch CPU threads of the torch backend")
    add_device(p, "the torch backend's obfuscator runs", default="cpu", default_text="cpu")
    p.add_argument("--device-key", metavar="FILE",
                   help="consistent randomness: random ops draw from a keyed hash of each image, so sending an "
                   "image again sends the same z and averaging repeats gains the server nothing (make the key "
                   "once on the device with `privsplit keygen FILE`; it never leaves it)")
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON instead of printing")
    p.add_argument("--ca-file", metavar="FILE.pem",
                   help="trust this certificate (or CA) for an https:// server with a self-signed certificate")
    p.add_argument("--allow-insecure-token", action="store_true",
                   help="send the token over plain http:// to a non-loopback host anyway: anyone on the network "
                   "path can read and replay it")
    p.set_defaults(func=cmd_infer)


def cmd_keygen(args: argparse.Namespace) -> int:
    from privsplit_edge.keyed import create_key

    from ..serve.protocol import EdgeError, ServeError

    try:
        path = create_key(args.path)
    except EdgeError as e:
        raise ServeError(str(e)) from None
    print(f"wrote a new device key to {path} (owner read/write only); keep it on this device and use it with "
          f"--device-key {path}")
    return 0


def add_keygen_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keygen",
        help="create the device key for consistent randomness (privsplit infer --device-key)",
        description="Write 32 random bytes (hex) to a new file readable only by its owner. With it, the "
        "obfuscator's random draws are HMAC-SHA256(key, image): the same image always gives the same z, so a "
        "server that receives it again learns nothing new. The key must stay on the device.",
    )
    p.add_argument("path", metavar="FILE", help="where to write the key (must not exist)")
    p.set_defaults(func=cmd_keygen)

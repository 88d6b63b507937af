"""Drive a real privsplit server from several concurrent clients for a bounded time.

    python benchmarks/serve.py                      # trains a tiny digits run first (~20 s)
    python benchmarks/serve.py --run runs/<run> --clients 4 --seconds 10 --batch 1 --float16

The server runs as `privsplit serve` in its own process on 127.0.0.1 (loopback
only); the client threads send real representations ``z`` of real test images,
computed once by the run's obfuscator, over keep-alive HTTP connections.
Prints requests/s, p50/p99 latency, bytes per request against the raw image,
the cost of parsing one request (binary vs a JSON list of floats) and the error
count, which must be zero (the exit status is 1 otherwise).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def tiny_run(out: Path) -> Path:
    from privsplit.cli import main

    sets = ["train.epochs=1", "data.limit_train=256", "data.limit_test=128"]
    code = main(["train", "--out", str(out), "--no-progress", *sum((["--set", s] for s in sets), [])])
    if code:
        sys.exit(code)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a finished run folder (default: train a tiny digits run)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to drive the server")
    ap.add_argument("--batch", type=int, default=1, help="representations per request")
    ap.add_argument("--float16", action="store_true", help="send z as float16")
    ap.add_argument("--server-threads", type=int, default=1, help="torch threads in the server process")
    args = ap.parse_args()

    import torch
    from PIL import Image

    from privsplit.data import load_dataset
    from privsplit.run import load_run
    from privsplit.serve.protocol import decode_z, encode_z
    from privsplit_edge.client import Http
    from privsplit_edge.errors import EdgeError

    tmp = tempfile.TemporaryDirectory()
    run_dir = args.run or tiny_run(Path(tmp.name) / "run")
    run = load_run(run_dir, parts=("obfuscator",))
    cfg = run.config
    _, test, _ = load_dataset(cfg.data)
    n_img = min(len(test), 64)
    x = torch.stack([test[i][0] for i in range(n_img)])  # (n, 3, H, W) real test images
    torch.manual_seed(0)
    with torch.no_grad():
        z = run.model.obfuscator(x).numpy()
    dtype = "float16" if args.float16 else "float32"
    bodies = [encode_z(z[i : i + args.batch], dtype) for i in range(0, n_img - args.batch + 1, args.batch)]

    # What sending the image itself would cost: raw RGB bytes, and a PNG of it.
    c, h, w = run.info.image_shape
    raw_bytes = c * h * w  # uint8 pixels
    png = io.BytesIO()
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(png, "PNG")

    # Parsing cost of one request: this wire format vs a JSON list of floats.
    reps = 200
    t0 = time.perf_counter()
    for _ in range(reps):
        decode_z(bodies[0], run.model.obfuscator.z_shape, args.batch)
    t_bin = (time.perf_counter() - t0) / reps
    as_json = json.dumps(z[: args.batch].tolist())
    t0 = time.perf_counter()
    for _ in range(reps):
        np.asarray(json.loads(as_json), dtype=np.float32)
    t_json = (time.perf_counter() - t0) / reps

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "privsplit", "serve", str(run_dir), "--port", str(port),
         "--max-batch", str(max(args.batch, 64)), "--threads", str(args.server_threads)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
    )
    try:
        probe = Http(url, timeout=5)
        deadline = time.monotonic() + 120
        while True:
            try:
                probe.request("GET", "/v1/health")
                break
            except EdgeError:
                if server.poll() is not None or time.monotonic() > deadline:
                    print(server.stdout.read() if server.poll() is not None else "server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)

        latencies: list[list[float]] = [[] for _ in range(args.clients)]
        errors = [0] * args.clients
        stop_at = [0.0]
        barrier = threading.Barrier(args.clients + 1)

        def client(k: int) -> None:
            http = Http(url, timeout=30)
            http.request("GET", "/v1/model")  # open the connection before timing
            barrier.wait()
            i = k
            while time.perf_counter() < stop_at[0]:
                t = time.perf_counter()
                try:
                    reply = http.request("POST", "/v1/infer", bodies[i % len(bodies)], "application/octet-stream")
                    if reply.get("n") != args.batch:
                        errors[k] += 1
                except EdgeError:
                    errors[k] += 1
                latencies[k].append(time.perf_counter() - t)
                i += args.clients

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        start = time.perf_counter()
        stop_at[0] = start + args.seconds
        barrier.wait()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)

    lat = np.array([v for lst in latencies for v in lst]) * 1000
    n_req, n_err = len(lat), sum(errors)
    per_req = float(np.mean([len(b) for b in bodies]))
    z_per_image = math.prod(run.model.obfuscator.z_shape) * (2 if args.float16 else 4)
    print(f"privsplit serve benchmark: {run_dir}" + ("" if args.run else " (tiny digits run trained for this benchmark)"))
    print(f"  model: {cfg.model.backbone} split {cfg.model.split}, z {tuple(run.model.obfuscator.z_shape)} {dtype}, "
          f"image {c}x{h}x{w}; server: 1 uvicorn process, {args.server_threads} torch thread(s), 127.0.0.1")
    print(f"  load: {args.clients} concurrent clients, {args.batch} image(s) per request, {elapsed:.1f} s")
    print(f"  requests: {n_req}  ({n_req / elapsed:.1f} req/s, {n_req * args.batch / elapsed:.1f} images/s)")
    print(f"  latency: p50 {np.percentile(lat, 50):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms, max {lat.max():.2f} ms")
    print(f"  bytes per request: {per_req:.0f} (z {z_per_image * args.batch} + header {per_req - z_per_image * args.batch:.0f})")
    print(f"  raw image: {raw_bytes} bytes per image (uint8 RGB), PNG {len(png.getvalue())} bytes; "
          f"z / raw image = {z_per_image / raw_bytes:.2f}x, request / raw images = {per_req / (raw_bytes * args.batch):.2f}x")
    print(f"  parsing one request body: binary {t_bin * 1e6:.1f} us, JSON list of floats {t_json * 1e6:.1f} us "
          f"({t_json / t_bin:.0f}x slower)")
    print(f"  errors: {n_err}")
    tmp.cleanup()
    return 1 if n_err else 0


if __name__ == "__main__":
    sys.exit(main())

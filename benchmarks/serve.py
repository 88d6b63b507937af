"""Drive a real privsplit server from concurrent clients, with and without dynamic
batching, and set it beside the bare task network at the batches the server formed.

    python benchmarks/serve.py                      # trains a tiny digits run first (~20 s)
    python benchmarks/serve.py --run runs/<run> --clients 1,8,32,64 --seconds 8
    python benchmarks/serve.py --run runs/<run> --modes batched --clients 4 --batch 8 --float16
    python benchmarks/serve.py --run runs/<run> --modes batched,ray --workers 2   # beside Ray Serve (extra [ray])

The server runs as `privsplit serve` in its own process on 127.0.0.1 (loopback
only), once per mode (``batched``: the default dynamic batching; ``unbatched``:
``--no-batching``; ``ray``: the same app on a local single-node Ray Serve, ``--workers``
replicas, through Ray's HTTP proxy); client threads of this process send real representations
``z`` of real test images, computed once by the run's obfuscator, over keep-alive
HTTP connections. For each mode and number of clients it prints requests/s,
images/s, p50/p99 latency, the mean batch the server formed (from its
``/metrics``), the bare task network's images/s at that batch (the heads alone,
in this process, with the server's torch threads), the ratio server / bare,
and the CPU time per request of the server process and of the clients (the two
share the machine's cores, so a busy client slows the server).
Then the goals of the serving issue, each with its figures: at 32 clients
batched >= 3x unbatched and >= 0.6x bare, p99 <= max-delay + 3x the bare batch's
time; at 1 client batched p50 within 10% of unbatched. Also printed: bytes per
request against the raw image and the cost of parsing one request (binary vs a
JSON list of floats). The exit status is 1 when any request failed (a 503 from a
full queue counts as failed), else 0; a missed goal is a result, not a failure.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
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


def positive_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, comma-separated, got {text!r}")
    return values


def modes(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or set(values) - {"batched", "unbatched", "ray"}:
        raise argparse.ArgumentTypeError(f"expected batched, unbatched and/or ray, comma-separated, got {text!r}")
    return values


def bare_rate(net, head: str, z: np.ndarray, batch: int, seconds: float = 0.6) -> tuple[float, float]:
    """The heads alone on ``batch`` samples: (images/s, seconds per batch), median of timed rounds."""
    import torch

    x = torch.from_numpy(np.resize(z, (batch, *z.shape[1:])).astype(np.float32))
    model = net.heads[head]
    with torch.inference_mode():
        model(x)  # warm up
        per_batch = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(per_batch) < 5:
            t = time.perf_counter()
            model(x).softmax(1)
            per_batch.append(time.perf_counter() - t)
    t = float(np.median(per_batch))
    return batch / t, t


def formed_batches(port: int) -> tuple[float, float]:
    """(samples, forward passes) so far, from the server's privsplit_formed_batch_size histogram."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # a new one: an idle one is closed (keep-alive)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    total = re.search(r"^privsplit_formed_batch_size_sum (\S+)$", text, re.M)
    count = re.search(r"^privsplit_formed_batch_size_count (\S+)$", text, re.M)
    return (float(total.group(1)), float(count.group(1))) if total and count else (math.nan, math.nan)


RAY_SERVER = """
import signal, sys, time
import ray
from ray import serve
from privsplit.serve.ray_serve import application
run_dir, port, replicas, threads, batch_samples, max_delay, max_batch = sys.argv[1:]
ray.init(num_cpus=max(int(replicas) * int(threads), 1), include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(port)})
serve.run(application(run_dir, allow_no_token=True, replicas=int(replicas), threads=int(threads),
                      batch_samples=int(batch_samples), max_delay_ms=float(max_delay), max_batch=int(max_batch)),
          route_prefix="/")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
try:
    while True:
        time.sleep(1)
finally:
    serve.shutdown()
    ray.shutdown()
"""


def start_server(run_dir: Path, args: argparse.Namespace, mode: str):
    """A ``privsplit serve`` process (or a local Ray Serve) answering on a free loopback port: (process, URL)."""
    from privsplit_edge.client import Http
    from privsplit_edge.errors import EdgeError

    port = free_port()
    if mode == "ray":
        cmd = [sys.executable, "-c", RAY_SERVER, str(run_dir), str(port), str(args.workers), str(args.server_threads),
               str(args.batch_samples), str(args.max_delay), str(max(args.batch, 64))]
    else:
        cmd = [sys.executable, "-m", "privsplit", "serve", str(run_dir), "--port", str(port),
               "--max-batch", str(max(args.batch, 64)), "--threads", str(args.server_threads),
               "--max-connections", str(max(100, 2 * max(args.clients))), "--workers", str(args.workers)]
        cmd += ["--batch-samples", str(args.batch_samples), "--max-delay", str(args.max_delay)] \
            if mode == "batched" else ["--no-batching"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    url = f"http://127.0.0.1:{port}"
    probe = Http(url, timeout=5)
    deadline = time.monotonic() + 120
    while True:
        try:
            probe.request("GET", "/v1/health")
            return server, url
        except EdgeError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit(f"the server did not start:\n{server.stdout.read()}")
            time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and all its descendants (``--workers``, Ray's
    processes) so far (Linux /proc; NaN elsewhere)."""
    try:
        procs = {}
        for entry in (e for e in os.listdir("/proc") if e.isdigit()):
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            procs[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        mine, grew = {pid}, True
        while grew:
            before = len(mine)
            mine |= {p for p, (parent, _) in procs.items() if parent in mine}
            grew = len(mine) > before
        return sum(procs[p][1] for p in mine if p in procs)
    except (OSError, ValueError, IndexError):
        return math.nan


def drive(url: str, server_pid: int, bodies: list[bytes], clients: int, batch: int, seconds: float,
          warmup: float) -> dict:
    """``clients`` threads, each sending one request after another for ``warmup`` + ``seconds``;
    what was answered in the last ``seconds`` counts, and the CPU time the server and the
    clients (this process) spent meanwhile."""
    from privsplit_edge.client import Http
    from privsplit_edge.errors import EdgeError

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    window = [math.inf, math.inf]  # [start, stop] of the timed window (perf_counter)
    barrier = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        http = Http(url, timeout=60)
        http.request("GET", "/v1/model")  # open the connection before timing
        barrier.wait()
        i = k
        while True:
            t = time.perf_counter()
            if t >= window[1]:
                return
            try:
                reply = http.request("POST", "/v1/infer", bodies[i % len(bodies)], "application/octet-stream")
                ok = reply.get("n") == batch
            except EdgeError:
                ok = False
            done = time.perf_counter()
            if t >= window[0] and done <= window[1]:
                latencies[k].append(done - t)
                errors[k] += not ok
            i += clients

    port = int(url.rsplit(":", 1)[1])
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    window[0], window[1] = now + warmup, now + warmup + seconds
    barrier.wait()
    time.sleep(max(0.0, window[0] - time.perf_counter()))
    before = formed_batches(port)
    cpu = cpu_seconds(server_pid), time.process_time()
    time.sleep(max(0.0, window[1] - time.perf_counter()))
    cpu = cpu_seconds(server_pid) - cpu[0], time.process_time() - cpu[1]
    after = formed_batches(port)
    for t in threads:
        t.join()
    lat = np.array([v for lst in latencies for v in lst]) * 1000
    passes = after[1] - before[1]
    return {
        "clients": clients, "requests": len(lat), "errors": sum(errors),
        "requests_per_s": len(lat) / seconds, "images_per_s": len(lat) * batch / seconds,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else math.nan,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else math.nan,
        "mean_formed_batch": (after[0] - before[0]) / passes if passes > 0 else math.nan,
        "server_cpu_ms_per_request": cpu[0] * 1000 / len(lat) if len(lat) else math.nan,
        "client_cpu_ms_per_request": cpu[1] * 1000 / len(lat) if len(lat) else math.nan,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a finished run folder (default: train a tiny digits run)")
    ap.add_argument("--clients", type=positive_ints, default=[1, 8, 32, 64],
                    help="numbers of concurrent client threads, comma-separated (default 1,8,32,64)")
    ap.add_argument("--modes", type=modes, default=["batched", "unbatched"],
                    help="batched (dynamic batching, the default server) and/or unbatched (--no-batching)")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per number of clients (default 8)")
    ap.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before each (default 1)")
    ap.add_argument("--batch", type=int, default=1, help="representations per request (default 1)")
    ap.add_argument("--float16", action="store_true", help="send z as float16")
    ap.add_argument("--server-threads", type=int, default=1,
                    help="torch threads in the server process, and for the bare task network (default 1)")
    ap.add_argument("--workers", type=int, default=1,
                    help="the server's --workers (default 1), each with --server-threads torch threads")
    ap.add_argument("--batch-samples", type=int, default=64, help="the server's --batch-samples (default 64)")
    ap.add_argument("--max-delay", type=float, default=2.0, help="the server's --max-delay in ms (default 2)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE as JSON")
    args = ap.parse_args()
    if args.batch < 1 or args.seconds <= 0 or args.warmup < 0 or args.server_threads < 1 or args.workers < 1:
        ap.error("--batch, --server-threads and --workers must be >= 1, --seconds > 0 and --warmup >= 0")

    import torch
    from PIL import Image

    from privsplit.data import load_dataset
    from privsplit.run import load_run
    from privsplit.serve.network import TaskNetwork
    from privsplit.serve.protocol import decode_z, encode_z

    tmp = tempfile.TemporaryDirectory()
    run_dir = args.run or tiny_run(Path(tmp.name) / "run")
    run = load_run(run_dir, parts=("obfuscator",))
    cfg = run.config
    _, test, _ = load_dataset(cfg.data)
    n_img = min(len(test), 64)
    if n_img < args.batch:
        ap.error(f"--batch {args.batch} is more than the {n_img} test images the benchmark sends")
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

    # The bare task network, as the server runs it: the first head, the server's threads.
    torch.set_num_threads(args.server_threads)
    net = TaskNetwork(run_dir)
    bare: dict[int, tuple[float, float]] = {}

    def bare_at(batch: int) -> tuple[float, float]:
        if batch not in bare:
            bare[batch] = bare_rate(net, net.default_head, z, batch)
        return bare[batch]

    for b in sorted({args.batch, *(min(k * args.batch, args.batch_samples) for k in (1, 8, 32, 64))}):
        bare_at(b)

    rows: list[dict] = []
    for mode in args.modes:
        server, url = start_server(run_dir, args, mode)
        try:
            for clients in args.clients:
                row = {"mode": mode, **drive(url, server.pid, bodies, clients, args.batch, args.seconds, args.warmup)}
                formed = row["mean_formed_batch"]
                b = max(1, round(formed)) if math.isfinite(formed) else args.batch
                rate, seconds = bare_at(b)
                row.update(bare_batch=b, bare_images_per_s=rate, bare_batch_ms=seconds * 1000)
                row["server_over_bare"] = row["images_per_s"] / row["bare_images_per_s"]
                rows.append(row)
                print(f"  {mode:9s} {clients:3d} clients: {row['requests_per_s']:7.1f} req/s, "
                      f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, mean batch {formed:.1f}",
                      file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)

    per_req = float(np.mean([len(b) for b in bodies]))
    z_per_image = math.prod(run.model.obfuscator.z_shape) * (2 if args.float16 else 4)
    print(f"privsplit serve benchmark: {run_dir}" + ("" if args.run else " (tiny digits run trained for this benchmark)"))
    print(f"  model: {cfg.model.backbone} split {cfg.model.split}, z {tuple(run.model.obfuscator.z_shape)} {dtype}, "
          f"image {c}x{h}x{w}; server: {args.workers} worker process(es), {args.server_threads} torch thread(s) "
          f"each, 127.0.0.1; "
          f"batched: --batch-samples {args.batch_samples} --max-delay {args.max_delay:g}")
    print(f"  load: {args.batch} image(s) per request, {args.seconds:g} s timed after {args.warmup:g} s warm-up "
          f"per row; {os.cpu_count()} CPU cores shared by server and clients")
    print("  bare task network (in-process): " + ", ".join(
        f"batch {b} {r:.0f} images/s ({t * 1000:.2f} ms)" for b, (r, t) in sorted(bare.items())))
    print()
    print("  | mode | clients | req/s | images/s | p50 ms | p99 ms | mean batch | bare images/s at it | server / bare "
          "| CPU ms per request: server, clients | errors |")
    print("  |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"  | {r['mode']} | {r['clients']} | {r['requests_per_s']:.0f} | {r['images_per_s']:.0f} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_formed_batch']:.1f} | "
              f"{r['bare_images_per_s']:.0f} (batch {r['bare_batch']}) | {r['server_over_bare']:.2f} | "
              f"{r['server_cpu_ms_per_request']:.2f}, {r['client_cpu_ms_per_request']:.2f} | {r['errors']} |")
    print()
    find = {(r["mode"], r["clients"]): r for r in rows}
    bat, unb = find.get(("batched", 32)), find.get(("unbatched", 32))
    if bat and unb:
        ratio = bat["images_per_s"] / unb["images_per_s"]
        print(f"  goal, 32 clients, batched >= 3x unbatched: {ratio:.2f}x ({'met' if ratio >= 3 else 'missed'})")
    if bat:
        print(f"  goal, 32 clients, batched >= 0.6x bare at its mean batch: {bat['server_over_bare']:.2f}x "
              f"({'met' if bat['server_over_bare'] >= 0.6 else 'missed'})")
        bound = args.max_delay + 3 * bat["bare_batch_ms"]
        print(f"  goal, 32 clients, batched p99 <= max-delay + 3x bare batch time = {bound:.2f} ms: "
              f"{bat['p99_ms']:.2f} ms ({'met' if bat['p99_ms'] <= bound else 'missed'})")
    one_b, one_u = find.get(("batched", 1)), find.get(("unbatched", 1))
    if one_b and one_u:
        ratio = one_b["p50_ms"] / one_u["p50_ms"]
        print(f"  goal, 1 client, batched p50 within 10% of unbatched: {ratio:.2f}x ({'met' if ratio <= 1.1 else 'missed'})")
    print(f"  bytes per request: {per_req:.0f} (z {z_per_image * args.batch} + header {per_req - z_per_image * args.batch:.0f})")
    print(f"  raw image: {raw_bytes} bytes per image (uint8 RGB), PNG {len(png.getvalue())} bytes; "
          f"z / raw image = {z_per_image / raw_bytes:.2f}x, request / raw images = {per_req / (raw_bytes * args.batch):.2f}x")
    print(f"  parsing one request body: binary {t_bin * 1e6:.1f} us, JSON list of floats {t_json * 1e6:.1f} us "
          f"({t_json / t_bin:.0f}x slower)")
    n_err = sum(r["errors"] for r in rows)
    print(f"  errors: {n_err}")
    if args.json:
        args.json.write_text(json.dumps({"run": str(run_dir), "bare": {b: {"images_per_s": r, "batch_ms": t * 1000}
                                                                       for b, (r, t) in bare.items()},
                                         "rows": rows}, indent=1))
    tmp.cleanup()
    return 1 if n_err else 0


if __name__ == "__main__":
    sys.exit(main())

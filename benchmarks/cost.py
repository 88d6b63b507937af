"""Client cost of the obfuscator: our count beside the paper's table, and
ONNX Runtime vs PyTorch latency of each client part.

    PYTHONPATH=src python benchmarks/cost.py [--size 178] [--repeats 50] [--threads N]

Prints, for ResNet18 at 178x178 (the paper's Table of client cost):
GFLOPs and memory of the encoders rn18_1..4 and of the whole network
(10 classes) next to the paper's figures, bytes sent per sample, and the
median batch-1 CPU latency of each encoder in PyTorch and in ONNX Runtime
(the encoders are exported here with ``torch.onnx.export``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from privsplit.metrics.cost import count_flops, cpu_latency_ms, memory_mb, payload_bytes
from privsplit.models import build_backbone, representation_shape, split_backbone

PAPER = {  # name: (GFLOPs, MB)
    "rn18_1": (0.75, 0.60),
    "rn18_2": (1.31, 2.61),
    "rn18_3": (1.92, 10.63),
    "rn18_4": (2.52, 42.67),
    "resnet18 (10 classes)": (2.52, 42.69),
}


def onnx_latency_ms(module: torch.nn.Module, shape: tuple[int, ...], repeats: int, threads: int, folder: Path) -> float:
    import onnxruntime as ort

    path = folder / "encoder.onnx"
    x = torch.rand((1, *shape))
    torch.onnx.export(module.eval(), (x,), str(path), input_names=["image"], output_names=["z"], dynamo=True, verbose=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    # Spinning ORT worker threads would keep stealing the CPU from what is timed next.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"image": x.numpy()}
    ref = module(x).detach().numpy()
    out = sess.run(None, feed)[0]
    assert abs(out - ref).max() < 1e-3 * max(1.0, abs(ref).max()), "ONNX output differs from PyTorch"
    times = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        sess.run(None, feed)
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1e3)
    del sess
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=178, help="image side (default 178, the paper's)")
    ap.add_argument("--repeats", type=int, default=50, help="timed batch-1 passes per measurement (median)")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for both runtimes (default 1: one core of an edge device; several threads on a "
                         "loaded machine give erratic PyTorch timings)")
    ap.add_argument("--no-latency", action="store_true", help="only the deterministic counts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (3, args.size, args.size)

    print(f"ResNet18 client cost at {args.size}x{args.size} (FLOPs = multiply-adds x2: conv/linear per weight use, "
          "batch norm 2/elem, ReLU 1/elem, pooling 1/input elem, residual add 1/elem)")
    print(f"{'client part':<22} {'GFLOPs':>7} {'paper':>6} {'ratio':>6} {'MB':>7} {'paper':>6} {'ratio':>6} "
          f"{'z shape':>14} {'bytes f32':>10} {'bytes f16':>10}")
    parts: dict[str, torch.nn.Module] = {}
    for k in range(1, 5):
        parts[f"rn18_{k}"] = split_backbone("resnet18", f"rn18_{k}", num_classes=10)[0]
    parts["resnet18 (10 classes)"] = build_backbone("resnet18", num_classes=10)
    ok = True
    for name, module in parts.items():
        g = count_flops(module, shape).gflops
        mb = memory_mb(module)
        pg, pmb = PAPER[name]
        match = round(g, 2) == pg and round(mb, 2) == pmb
        ok &= match if args.size == 178 else True
        if name.startswith("rn18"):
            z = representation_shape("resnet18", name, (args.size, args.size))
        else:
            z = (10,)
        print(f"{name:<22} {g:>7.3f} {pg:>6.2f} {g / pg:>6.3f} {mb:>7.2f} {pmb:>6.2f} {mb / pmb:>6.3f} "
              f"{str(tuple(z)):>14} {payload_bytes(z, 4):>10} {payload_bytes(z, 2):>10}"
              + ("" if args.size != 178 else ("   = paper" if match else "   DIFFERS")))
    print(f"(the image itself: {payload_bytes(shape, 1)} bytes as uint8)")

    if not args.no_latency:
        print(f"\nmedian batch-1 CPU latency, {args.repeats} runs, {args.threads} thread(s); "
              f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
        import onnxruntime

        print(f"{'client part':<10} {'PyTorch ms':>11} {'ONNX Runtime ' + onnxruntime.__version__ + ' ms':>24} {'speed-up':>9}")
        names = [f"rn18_{k}" for k in range(1, 5)]
        # All PyTorch timings first, then ONNX Runtime: neither runtime's threads linger into the other's.
        pt = {n: cpu_latency_ms(parts[n].eval(), shape, args.repeats, threads=args.threads) for n in names}
        with tempfile.TemporaryDirectory() as tmp:
            ox = {n: onnx_latency_ms(parts[n].eval(), shape, args.repeats, args.threads, Path(tmp)) for n in names}
        for n in names:
            print(f"{n:<10} {pt[n]:>11.2f} {ox[n]:>24.2f} {pt[n] / ox[n]:>8.2f}x")
        print("(load on a shared machine inflates both columns alike; compare within a row)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

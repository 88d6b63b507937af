"""Images per second of the training data pipeline on a file-backed data set
(UTKFace by default), with and without keeping decoded images in memory.

    python benchmarks/data_pipeline.py --data-root /tmp/privsplit-data --size 178 --limit 4000

Prints, per epoch, how many images/s ``privsplit.train.batching.batches`` yields
(decoding, cropping, resizing; no model): with ``data.cache_gb=0`` every epoch
decodes every JPEG; by default only the first does.
"""

from __future__ import annotations

import argparse
import time

import torch

from privsplit.data.base import DataConfig, load_dataset
from privsplit.train.batching import batches


def epochs_per_second(cfg: DataConfig, epochs: int) -> list[float]:
    train, _, _ = load_dataset(cfg)
    rates = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        n = sum(len(x) for x, _ in batches(train, torch.randperm(len(train)), 128))
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--dataset", default="utkface")
    p.add_argument("--size", type=int, default=178)
    p.add_argument("--limit", type=int, default=4000, help="training images to read (default 4000)")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(2)
    print(f"data pipeline: {args.dataset} at {args.size}x{args.size}, {args.limit} training images, "
          f"{torch.get_num_threads()} torch threads, num_workers 0")
    results = {}
    for label, cache_gb in (("decode every epoch (data.cache_gb=0)", 0.0), ("keep decoded (default)", 4.0)):
        cfg = DataConfig(name=args.dataset, root=args.data_root, image_size=args.size, limit_train=args.limit,
                         limit_test=1, cache_gb=cache_gb)
        results[label] = epochs_per_second(cfg, args.epochs)
        print(f"  {label:40s} " + "  ".join(f"epoch {i + 1}: {r:7.0f} img/s" for i, r in enumerate(results[label])))
    a, b = results.values()
    print(f"  epochs after the first: {b[-1] / a[-1]:.1f}x faster when decoded images are kept")


if __name__ == "__main__":
    main()

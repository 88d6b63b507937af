"""The built-in default: scikit-learn's 8x8 handwritten digits (1,797 real
images, shipped inside scikit-learn, so it runs offline).

Same shape of protocol as CIFAR-10: utility = even vs odd, private = the digit.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import DATASETS, DataConfig, DatasetSpec, LabeledImages, resize_uint8, seeded_split


def _load(cfg: DataConfig, size: int) -> tuple[LabeledImages, LabeledImages]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # (N, 8, 8) in 0..16 -> uint8 (N, 3, 8, 8) in 0..255, grey copied to RGB.
    pixels = torch.from_numpy((bunch.images * (255 / 16)).round().astype(np.uint8))
    images = resize_uint8(pixels[:, None].expand(-1, 3, -1, -1), size)
    digit = bunch.target.astype(np.int64)
    train_idx, test_idx = seeded_split(len(digit), cfg.test_fraction, cfg.split_seed)

    def part(idx: np.ndarray) -> LabeledImages:
        return LabeledImages({"utility": digit[idx] % 2, "private": digit[idx]}, images=images[idx].contiguous())

    return part(train_idx), part(test_idx)


DATASETS.register("digits")(
    lambda: DatasetSpec(
        labels={"utility": ["even", "odd"], "private": [str(d) for d in range(10)]},
        default_size=32,
        load=_load,
        needs_root=False,
        source="scikit-learn (bundled)",
    )
)

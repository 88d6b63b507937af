"""CIFAR-10: utility = living (bird, cat, deer, dog, frog, horse) vs non-living;
private = the 10 classes.

Reads either the official ``cifar-10-batches-py`` layout or an image-folder
layout (``train/<class>/*.jpg``, ``test/<class>/*.jpg``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from privsplit_edge.images import check_jpeg_data

from ..errors import DataError
from ..progress import Progress
from .base import DATASETS, DataConfig, DatasetSpec, LabeledImages, resize_uint8, screen_files, subset_indices

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LIVING = {2, 3, 4, 5, 6, 7}
LAYOUT = (
    "either <root>/cifar-10-batches-py/{data_batch_1..5,test_batch} (the official python version) or "
    "<root>/{train,test}/<class>/*.png|jpg with the 10 class folders (image-folder layout)"
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


class _ArraysOnly(pickle.Unpickler):
    """The official batches are pickles: allow only what numpy arrays need, so a
    tampered file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to load {module}.{name} from a CIFAR-10 batch file: not a plain data file")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(f, encoding="latin1").load()
        data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return data, np.asarray(d["labels"], dtype=np.int64)
    except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as e:
        raise DataError(f"{path} is not a readable CIFAR-10 batch ({e}); expected layout: {LAYOUT}") from None


def _find(root: Path) -> tuple[str, Path]:
    for cand in (root, root / "cifar10", root / "cifar-10"):
        if (cand / "cifar-10-batches-py").is_dir():
            return "batches", cand / "cifar-10-batches-py"
        if cand.name == "cifar-10-batches-py" and (cand / "test_batch").exists():
            return "batches", cand
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return "folder", cand
    raise DataError(f"no CIFAR-10 data under {root}. Expected {LAYOUT}. Get it from https://www.cs.toronto.edu/~kriz/cifar.html")


def _decode(p: Path) -> tuple[np.ndarray | None, str | None]:
    """One CIFAR-10 image file as uint8 (3, 32, 32), or why it cannot be used.

    The size comes from the header, before any decoding, so a huge image is
    refused without decoding it in full."""
    try:
        with Image.open(p) as im:
            if im.size != (32, 32):
                return None, f"{p}: {im.size[0]}x{im.size[1]} pixels, CIFAR-10 images are 32x32"
            if im.format == "JPEG":
                check_jpeg_data(p)  # a truncated scan is an error, never padded
            return np.asarray(im.convert("RGB")).transpose(2, 0, 1), None
    except (OSError, ValueError, SyntaxError) as e:
        return None, f"{p}: cannot be decoded ({e})"


def _read_folder(split_dir: Path, skip_bad: bool, limit: int | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decoded images, labels, and the files left out (``data.skip_bad_files``).

    With ``limit`` (``data.limit_*``) and without ``skip_bad``, only the seeded
    subset is checked and decoded (:func:`~privsplit.data.base.subset_indices` on
    the sorted file list: the images decoding every file and then taking the subset
    gives). With ``skip_bad`` every file is decoded: the files left out change which
    subset is drawn, and decoding is what finds them."""
    missing = [c for c in CLASSES if not (split_dir / c).is_dir()]
    if missing:
        raise DataError(f"{split_dir} lacks class folders {', '.join(missing)}; expected {LAYOUT}")
    files = [(p, i) for i, c in enumerate(CLASSES) for p in sorted((split_dir / c).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"no images in {split_dir}; expected {LAYOUT}")
    if not skip_bad:
        files = [files[j] for j in subset_indices(len(files), limit, seed)]
    keep, skipped = screen_files([p for p, _ in files], skip_bad)
    files = [files[j] for j in keep]
    # Checked one by one as decoded: a file that passed the cheap check may still fail to
    # decode or have another size.
    decoded, labels, bad = [], [], []
    for p, label in Progress(files, desc=f"decoding {split_dir.name}", unit="img"):
        arr, problem = _decode(p)
        if problem is not None:
            bad.append(problem)
            continue
        decoded.append(arr)
        labels.append(label)
    if bad and not skip_bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataError(f"{len(bad)} image file(s) in {split_dir} cannot be used: {shown}. Remove or replace them, "
                        "or leave them out with --set data.skip_bad_files=true")
    if not decoded:
        raise DataError(f"no usable images in {split_dir}; expected {LAYOUT}")
    images = np.stack(decoded).astype(np.uint8, copy=False)
    return images, np.array(labels, dtype=np.int64), skipped + bad


def _load(cfg: DataConfig, size: int) -> tuple[LabeledImages, LabeledImages]:
    kind, where = _find(Path(cfg.root).expanduser())  # type: ignore[arg-type]
    limits = {"train": cfg.limit_train, "test": cfg.limit_test}
    if kind == "batches":
        names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        for n in names["train"] + names["test"]:
            if not (where / n).exists():
                raise DataError(f"{where / n} is missing; expected {LAYOUT}")
        parts = {s: [_read_batch(where / n) for n in ns] for s, ns in names.items()}
        splits = {}
        for s, p in parts.items():  # the seeded subset (load_dataset's rule) before resizing
            images, labels = np.concatenate([a for a, _ in p]), np.concatenate([b for _, b in p])
            idx = subset_indices(len(labels), limits[s], cfg.split_seed)
            splits[s] = (images[idx], labels[idx], []) if len(idx) < len(labels) else (images, labels, [])
    else:
        splits = {s: _read_folder(where / s, cfg.skip_bad_files, limits[s], cfg.split_seed) for s in ("train", "test")}

    def part(images: np.ndarray, labels: np.ndarray, skipped: list[str]) -> LabeledImages:
        living = np.isin(labels, list(LIVING)).astype(np.int64)
        out = LabeledImages({"utility": living, "private": labels}, images=resize_uint8(torch.from_numpy(images), size))
        out.skipped = skipped
        return out

    return part(*splits["train"]), part(*splits["test"])


DATASETS.register("cifar10")(
    lambda: DatasetSpec(
        labels={"utility": ["non-living", "living"], "private": CLASSES},
        default_size=32,
        load=_load,
        layout=LAYOUT,
        source="https://www.cs.toronto.edu/~kriz/cifar.html",
    )
)

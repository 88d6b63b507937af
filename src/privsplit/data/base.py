"""Dataset registry and the shared image dataset.

Every dataset yields ``(image, labels)`` with ``image`` a float tensor
(3, H, W) in [0, 1] and ``labels`` a dict of integer labels, one per target
(``"utility"``, ``"private"``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from privsplit_edge.images import decode_square, image_problem

from ..checks import check_fields, setting
from ..errors import ConfigError, DataError
from ..progress import Progress
from ..registry import Registry


@dataclass
class DataConfig:
    """Which data to train on.

    Attributes:
        name: a registered dataset (``privsplit.data.DATASETS.names()``).
        root: folder holding the data in its published layout (not needed for ``digits``).
        image_size: side of the square images fed to the network; None = the dataset's default.
        test_fraction: share held out for testing, for data sets without an official split.
        split_seed: seed of that split (recorded with the run).
        limit_train: use a seeded random N of the training images (quick runs); None = all.
        limit_test: likewise for the test split.
        val_fraction: carve a seeded validation split of this share from the
            training images (after ``limit_train``): the run trains on the rest
            and every "test" figure (training log, ``privsplit evaluate``) is
            on the validation images, so settings are chosen without reading the
            test split. 0 = none (train on all, test on the test split).
        num_workers: DataLoader worker processes.
        cache_gb: a data set read from files keeps each image once decoded and
            resized (uint8, in memory), so only the first epoch decodes files;
            a set that would need more than this many GiB (or runs with
            ``num_workers`` > 0) decodes every epoch. 0 = never keep.
        skip_bad_files: leave out image files that cannot be read (empty,
            truncated, not an image, too many pixels) instead of stopping with
            an error that lists them; how many were left out is printed.
    """

    name: str = "digits"
    root: str | None = None
    image_size: int | None = setting(None, ge=8, le=1024)
    test_fraction: float = setting(0.2, gt=0, lt=1)
    split_seed: int = setting(0, ge=0, lt=2**32)
    limit_train: int | None = setting(None, ge=1)
    limit_test: int | None = setting(None, ge=1)
    val_fraction: float = setting(0.0, ge=0, lt=1)
    num_workers: int = setting(0, ge=0, le=64)
    skip_bad_files: bool = False
    cache_gb: float = setting(4.0, ge=0, le=1024)

    def __post_init__(self) -> None:
        check_fields(self, "data")


@dataclass
class TaskInfo:
    """What a dataset's labels mean."""

    dataset: str
    labels: dict[str, list[str]]  # target -> class names, e.g. {"utility": [...], "private": [...]}
    image_shape: tuple[int, int, int]
    skipped: list[str] = field(default_factory=list)  # "path: why" of files left out (data.skip_bad_files)

    def num_classes(self, target: str) -> int:
        if target not in self.labels:
            raise ConfigError(
                f"dataset {self.dataset!r} has no target {target!r}; valid targets: {', '.join(self.labels)}"
            )
        return len(self.labels[target])


class LabeledImages(Dataset):
    """Images with a dict of labels.

    Holds either decoded images (``images``: uint8 tensor (N, 3, H, W)) or
    file paths decoded on access (``paths`` + ``load``).
    """

    def __init__(
        self,
        labels: dict[str, Sequence[int]],
        images: torch.Tensor | None = None,
        paths: Sequence[Path] | None = None,
        load: Callable[[Path], torch.Tensor] | None = None,
    ) -> None:
        if (images is None) == (paths is None):
            raise ValueError("give exactly one of images or paths")
        self.images = images
        self.paths = list(paths) if paths is not None else None
        self.load = load
        self.labels = {k: torch.as_tensor(np.asarray(v), dtype=torch.long) for k, v in labels.items()}
        self.skipped: list[str] = []  # "path: why" of files a loader left out (data.skip_bad_files)
        self._kept: torch.Tensor | None = None  # which images keep_decoded holds
        n = len(images) if images is not None else len(self.paths)  # type: ignore[arg-type]
        for k, v in self.labels.items():
            if len(v) != n:
                raise ValueError(f"label {k!r} has {len(v)} entries for {n} images")

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.paths)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.images is not None:
            x = self.images[i].float().div_(255)
        else:
            x = self.load(self.paths[i])  # type: ignore[index, misc]
            if self._kept is not None and not self._kept[i]:
                self._decoded[i] = x.mul(255).round_().to(torch.uint8)  # exact: x came from uint8 pixels
                self._kept[i] = True
                self._missing -= 1
                if self._missing == 0:  # every image decoded: from now on an in-memory set
                    self.images, self._kept = self._decoded, None
        return x, {k: v[i] for k, v in self.labels.items()}

    def keep_decoded(self, shape: tuple[int, int, int], max_bytes: float) -> bool:
        """Keep each image of a file-backed set once decoded (uint8 ``shape``), so
        that only the first pass decodes files; False (nothing kept) if that
        would take more than ``max_bytes``."""
        if self.paths is None or len(self) * math.prod(shape) > max_bytes:
            return False
        self._decoded = torch.empty((len(self), *shape), dtype=torch.uint8)
        self._kept = torch.zeros(len(self), dtype=torch.bool)
        self._missing = len(self)
        return True

    def select(self, keep: list[int]) -> "LabeledImages":
        """The samples at indices ``keep`` (in order)."""
        return self if len(keep) == len(self) else self._take(torch.as_tensor(keep, dtype=torch.long))

    def subset(self, n: int | None, seed: int = 0) -> "LabeledImages":
        """A seeded random subset of ``n`` samples (all when ``n`` is None).
        Random, not the first ``n``: folder layouts are sorted by class."""
        if n is None or n >= len(self):
            return self
        return self._take(torch.from_numpy(subset_indices(len(self), n, seed)))

    def _take(self, idx: torch.Tensor) -> "LabeledImages":
        labels = {k: v[idx] for k, v in self.labels.items()}
        if self.images is not None:
            return LabeledImages(labels, images=self.images[idx])
        return LabeledImages(labels, paths=[self.paths[i] for i in idx.tolist()], load=self.load)  # type: ignore[index]


def subset_indices(total: int, n: int | None, seed: int = 0) -> np.ndarray:
    """The indices (sorted) of the seeded random subset of ``n`` of ``total`` samples
    that ``data.limit_train`` / ``limit_test`` choose (all when ``n`` is None or
    ``n >= total``). A loader that decodes files picks these first and decodes only them:
    the same images as decoding every file and then taking the subset."""
    if n is None or n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


@dataclass
class DatasetSpec:
    """A registered dataset: its label names, default size and loader."""

    labels: dict[str, list[str]]
    default_size: int
    load: Callable[[DataConfig, int], tuple[LabeledImages, LabeledImages]]
    layout: str = ""  # what the data folder must hold, shown in errors
    source: str = ""
    needs_root: bool = True
    extra: dict = field(default_factory=dict)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def load_dataset(cfg: DataConfig) -> tuple[LabeledImages, LabeledImages, TaskInfo]:
    """Load the train and test splits named by ``cfg``.

    Example:
        >>> train, test, info = load_dataset(DataConfig(name="digits"))
        >>> info.labels["utility"]
        ['even', 'odd']
    """
    spec = DATASETS.create(cfg.name)
    size = spec.default_size if cfg.image_size is None else cfg.image_size
    if spec.needs_root:
        if not cfg.root:
            raise DataError(
                f"dataset {cfg.name!r} needs its data folder: set data.root (e.g. --set data.root=/path/to/data). "
                f"Expected layout: {spec.layout}. Nothing is downloaded; get it from {spec.source}"
            )
        if not Path(cfg.root).expanduser().is_dir():
            raise DataError(f"data.root {cfg.root!r} for dataset {cfg.name!r} is not a folder. Expected layout: {spec.layout}")
    train, test = spec.load(cfg, size)
    skipped = train.skipped + test.skipped  # left out by a loader that decodes every file at open
    if train.paths is not None:  # decoded on access: check every file now, not in the middle of an epoch
        if not cfg.skip_bad_files:
            # Any bad file is an error, so the subset is drawn from every file: draw it
            # first and check only the files the run uses (the same images either way).
            train, test = train.subset(cfg.limit_train, cfg.split_seed), test.subset(cfg.limit_test, cfg.split_seed)
        # With skip_bad_files, which files are left out changes the subset: check them all first.
        n = len(train)
        keep, bad = screen_files([*train.paths, *test.paths], cfg.skip_bad_files)  # type: ignore[misc]
        train, test = train.select([i for i in keep if i < n]), test.select([i - n for i in keep if i >= n])
        skipped += bad
    if skipped:
        warnings.warn(f"data.skip_bad_files: left out {len(skipped)} unreadable image file(s), e.g. {skipped[0]}")
    info = TaskInfo(cfg.name, spec.labels, (3, size, size), skipped)
    train, test = train.subset(cfg.limit_train, cfg.split_seed), test.subset(cfg.limit_test, cfg.split_seed)
    if cfg.val_fraction > 0:  # the validation split takes the test split's place; the test images are not read
        if len(train) < 4:
            raise ConfigError(f"data.val_fraction={cfg.val_fraction} needs at least 4 training images, got {len(train)}")
        keep, val = seeded_split(len(train), cfg.val_fraction, cfg.split_seed + 1)
        train, test = train._take(torch.from_numpy(keep)), train._take(torch.from_numpy(val))
    if cfg.num_workers == 0:  # a worker process would keep its own copy
        for part in (train, test):
            part.keep_decoded(info.image_shape, cfg.cache_gb * 2**30)
    return train, test, info


def screen_files(paths: Sequence[Path], skip: bool) -> tuple[list[int], list[str]]:
    """Check image files cheaply (:func:`privsplit_edge.images.image_problem`).

    Returns the indices of the usable files and ``"path: why"`` for the others.
    Raises :class:`DataError` naming the bad files unless ``skip``.
    """
    good, bad = [], []
    for i, p in enumerate(Progress(paths, desc="checking image files", unit="file")):
        problem = image_problem(p)
        if problem is None:
            good.append(i)
        else:
            bad.append(f"{p}: {problem}")
    if bad and not skip:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataError(
            f"{len(bad)} of {len(paths)} image file(s) cannot be used: {shown}. Remove or replace them, "
            "or leave them out with --set data.skip_bad_files=true"
        )
    return good, bad


def open_image(path: Path, size: int) -> torch.Tensor:
    """Decode an image file to a float (3, size, size) tensor in [0, 1]
    (centre-cropped to a square first, then resized), exactly as the edge
    client does (:func:`privsplit_edge.images.decode_square`)."""
    try:
        arr = decode_square(path, size)
    except (OSError, ValueError, SyntaxError) as e:  # damaged after the check at open, or inside the data
        raise DataError(f"cannot decode image {path} ({e}); replace or remove it") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, 3, H, W) batch to ``size`` (bilinear, antialiased)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def seeded_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded random train/test split."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(math.floor(n * test_fraction)))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])

"""UTKFace (aligned & cropped): utility = gender, private = race (5 groups).

Labels come from the file names, ``<age>_<gender>_<race>_<datetime>.jpg[.chip.jpg]``
(gender 0 male, 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others),
in ``<root>/UTKFace/`` or ``<root>``. Files whose name lacks a field are skipped
with a warning. There is no official split: a seeded split
(``data.test_fraction``, ``data.split_seed``) is used and saved with the run.
UTKFace is for non-commercial research only.
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

from ..errors import DataError
from .base import DATASETS, DataConfig, DatasetSpec, LabeledImages, open_image, seeded_split

RACES = ["White", "Black", "Asian", "Indian", "Others"]
LAYOUT = "<root>/UTKFace/<age>_<gender>_<race>_<datetime>.jpg.chip.jpg (UTKFace 'Aligned & Cropped Faces')"


def parse_name(name: str) -> tuple[int, int] | None:
    """(gender, race) from a UTKFace file name, or None if it is malformed."""
    parts = name.split("_")
    if len(parts) < 4:
        return None
    try:
        age, gender, race = int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return None
    if gender not in (0, 1) or not 0 <= race < len(RACES) or age < 0:
        return None
    return gender, race


def _load(cfg: DataConfig, size: int) -> tuple[LabeledImages, LabeledImages]:
    root = Path(cfg.root).expanduser()  # type: ignore[arg-type]
    where = root / "UTKFace" if (root / "UTKFace").is_dir() else root
    files = sorted(p for p in where.iterdir() if p.suffix.lower() == ".jpg")
    if not files:
        raise DataError(f"no .jpg images in {where}. Expected {LAYOUT}. Get it from https://susanqq.github.io/UTKFace/")
    kept, labels, skipped = [], [], []
    for p in files:
        parsed = parse_name(p.name)
        if parsed is None:
            skipped.append(p.name)
        else:
            kept.append(p)
            labels.append(parsed)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} UTKFace file(s) whose names lack a label field: {', '.join(skipped[:5])}")
    if not kept:
        raise DataError(f"no file in {where} has a UTKFace name; expected {LAYOUT}")
    train_idx, test_idx = seeded_split(len(kept), cfg.test_fraction, cfg.split_seed)
    load = partial(open_image, size=size)

    def part(idx) -> LabeledImages:  # noqa: ANN001
        return LabeledImages(
            {"utility": [labels[i][0] for i in idx], "private": [labels[i][1] for i in idx]},
            paths=[kept[i] for i in idx],
            load=load,
        )

    return part(train_idx), part(test_idx)


DATASETS.register("utkface")(
    lambda: DatasetSpec(
        labels={"utility": ["male", "female"], "private": RACES},
        default_size=178,
        load=_load,
        layout=LAYOUT,
        source="https://susanqq.github.io/UTKFace/",
    )
)

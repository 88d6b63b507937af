"""FairFace: utility = gender, private = race (7 groups).

Reads the official label files ``fairface_label_train.csv`` and
``fairface_label_val.csv`` in ``<root>``; their ``file`` column gives image
paths relative to ``<root>`` (e.g. ``train/1.jpg``). The validation split is
the test split.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

from ..errors import DataError
from .base import DATASETS, DataConfig, DatasetSpec, LabeledImages, open_image

GENDERS = ["Male", "Female"]
RACES = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
LAYOUT = "<root>/fairface_label_{train,val}.csv with columns file,age,gender,race and the image folders they name (<root>/train, <root>/val)"


def _read(root: Path, split: str, size: int) -> LabeledImages:
    path = root / f"fairface_label_{split}.csv"
    if not path.is_file():
        raise DataError(f"{path} is missing. Expected {LAYOUT}. Get FairFace from https://github.com/joojs/fairface")
    paths, gender, race = [], [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file", "gender", "race"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path} lacks columns {', '.join(sorted(missing))}; expected {LAYOUT}")
        for i, row in enumerate(reader, start=2):
            if row["gender"] not in GENDERS or row["race"] not in RACES:
                raise DataError(
                    f"{path} line {i}: gender {row['gender']!r} / race {row['race']!r} not among {GENDERS} / {RACES}"
                )
            paths.append(root / row["file"])
            gender.append(GENDERS.index(row["gender"]))
            race.append(RACES.index(row["race"]))
    if not paths:
        raise DataError(f"{path} lists no images")
    if not paths[0].is_file():
        raise DataError(f"{paths[0]} (first image listed in {path.name}) does not exist; expected {LAYOUT}")
    return LabeledImages({"utility": gender, "private": race}, paths=paths, load=partial(open_image, size=size))


def _load(cfg: DataConfig, size: int) -> tuple[LabeledImages, LabeledImages]:
    root = Path(cfg.root).expanduser()  # type: ignore[arg-type]
    return _read(root, "train", size), _read(root, "val", size)


DATASETS.register("fairface")(
    lambda: DatasetSpec(
        labels={"utility": [g.lower() for g in GENDERS], "private": RACES},
        default_size=178,
        load=_load,
        layout=LAYOUT,
        source="https://github.com/joojs/fairface",
    )
)

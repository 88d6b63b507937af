"""CelebA: utility = Smiling, private = Male.

Reads torchvision's CelebA folder layout: ``<root>/celeba/`` (or ``<root>``
itself) holding ``img_align_celeba/``, ``list_attr_celeba.txt`` and
``list_eval_partition.txt``. The 178x218 aligned images are centre-cropped to
178x178 (the paper's input) and resized to ``data.image_size``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ..errors import DataError
from .base import DATASETS, DataConfig, DatasetSpec, LabeledImages, open_image

LAYOUT = "<root>/celeba/{img_align_celeba/*.jpg, list_attr_celeba.txt, list_eval_partition.txt} (torchvision's CelebA layout)"
FILES = ("list_attr_celeba.txt", "list_eval_partition.txt")


def _find(root: Path) -> Path:
    for cand in (root / "celeba", root):
        if all((cand / f).is_file() for f in FILES) and (cand / "img_align_celeba").is_dir():
            return cand
    raise DataError(f"no CelebA data under {root}. Expected {LAYOUT}. Get it from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html")


def _attributes(path: Path) -> tuple[list[str], dict[str, list[int]]]:
    lines = path.read_text().splitlines()
    try:
        names = lines[1].split()
        rows = {}
        for line in lines[2:]:
            if line.strip():
                parts = line.split()
                rows[parts[0]] = [int(v) for v in parts[1:]]
                if len(rows[parts[0]]) != len(names):
                    raise ValueError(f"row for {parts[0]} has {len(parts) - 1} values for {len(names)} attributes")
    except (IndexError, ValueError) as e:
        raise DataError(f"{path} is malformed ({e}); expected the list_attr_celeba.txt format") from None
    return names, rows


def _load(cfg: DataConfig, size: int) -> tuple[LabeledImages, LabeledImages]:
    where = _find(Path(cfg.root).expanduser())  # type: ignore[arg-type]
    names, rows = _attributes(where / "list_attr_celeba.txt")
    for a in ("Smiling", "Male"):
        if a not in names:
            raise DataError(f"{where / 'list_attr_celeba.txt'} has no {a!r} attribute")
    si, mi = names.index("Smiling"), names.index("Male")
    partition: dict[str, int] = {}
    for line in (where / "list_eval_partition.txt").read_text().splitlines():
        if line.strip():
            fname, p = line.split()
            partition[fname] = int(p)
    load = partial(open_image, size=size)
    out = []
    # Official partition: 0 train, 1 validation, 2 test. Validation is not used for training.
    for wanted in (0, 2):
        fnames = [f for f, p in partition.items() if p == wanted and f in rows]
        labels = {
            "utility": [int(rows[f][si] == 1) for f in fnames],
            "private": [int(rows[f][mi] == 1) for f in fnames],
        }
        out.append(LabeledImages(labels, paths=[where / "img_align_celeba" / f for f in fnames], load=load))
    return out[0], out[1]


DATASETS.register("celeba")(
    lambda: DatasetSpec(
        labels={"utility": ["not smiling", "smiling"], "private": ["female", "male"]},
        default_size=178,
        load=_load,
        layout=LAYOUT,
        source="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
    )
)

"""Image decoding shared by training and the edge client, so a deployed client
preprocesses exactly as the data loader did. Pillow and numpy only."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def decode_square(path: str | Path, size: int) -> np.ndarray:
    """RGB uint8 array (size, size, 3): centre-cropped to a square, then
    bilinear-resized. Raises OSError for a file that is not a readable image."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.width != im.height:
            s = min(im.width, im.height)
            left, top = (im.width - s) // 2, (im.height - s) // 2
            im = im.crop((left, top, left + s, top + s))
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)

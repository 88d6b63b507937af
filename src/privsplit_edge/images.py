"""Image decoding shared by training and the edge client, so a deployed client
preprocesses exactly as the data loader did. Pillow, numpy and simplejpeg (strict
JPEG checks) only."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

# Bounds on one image file: far above any photo a data set holds, far below
# what would exhaust memory when decoded (a "decompression bomb").
MAX_FILE_BYTES = 64 * 2**20
MAX_PIXELS = 40_000_000
# How a whole file of these formats ends; a truncated one lacks it.
ENDINGS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole, readable image, judged cheaply from its size,
    its header and its last bytes (nothing is decoded); None if it looks whole.

    Catches empty and oversized files, files that are not images, images
    with more than :data:`MAX_PIXELS` pixels, and truncated JPEG and PNG files.
    """
    from PIL import Image

    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        if size > MAX_FILE_BYTES:
            return f"{size} bytes, over the {MAX_FILE_BYTES} allowed for one image"
        with open(path, "rb") as f:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(f) as im:
                        fmt, (w, h) = im.format, im.size
            except Image.DecompressionBombError:
                return "too many pixels to decode safely (decompression bomb)"
            except Exception as e:  # noqa: BLE001 - Pillow raises many types for foreign bytes
                return f"not an image Pillow can read ({type(e).__name__})"
            if w * h > MAX_PIXELS:
                return f"{w}x{h} pixels, over the {MAX_PIXELS} allowed (decompression bomb?)"
            ending = ENDINGS.get(fmt or "")
            if ending:
                f.seek(max(0, size - 32))
                if ending not in f.read():
                    return f"truncated {fmt} file (it does not end with its end marker)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None


def check_jpeg_data(path: str | Path) -> None:
    """Raise ValueError if the JPEG file at ``path`` has damaged scan data.

    Pillow pads a JPEG cut in its scan data (with an end marker appended) with
    grey and says nothing; libjpeg only warns. simplejpeg turns that warning
    into an error (``strict``). Decoded at the smallest DCT scale: the entropy
    decoding, where the damage shows, is complete at any scale."""
    import simplejpeg

    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    try:
        simplejpeg.decode_jpeg(data, strict=True, fastdct=True, min_height=1, min_width=1)
    except ValueError as e:
        raise ValueError(f"damaged JPEG data ({e})") from None


def decode_square(path: str | Path, size: int) -> np.ndarray:
    """RGB uint8 array (size, size, 3): centre-cropped to a square, then
    bilinear-resized. Raises OSError for a file that is not a readable image."""
    from PIL import Image

    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise OSError(str(e)) from None
    with im:
        if im.width * im.height > MAX_PIXELS:
            raise OSError(f"{path} has {im.width}x{im.height} pixels, over the {MAX_PIXELS} allowed")
        if im.format == "JPEG":
            check_jpeg_data(path)  # a truncated scan is an error, never padded
        im = im.convert("RGB")
        if im.width != im.height:
            s = min(im.width, im.height)
            left, top = (im.width - s) // 2, (im.height - s) // 2
            im = im.crop((left, top, left + s, top + s))
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)

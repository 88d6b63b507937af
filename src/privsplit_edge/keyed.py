"""Consistent randomness: the random draws of the obfuscator as a keyed function of the image.

With fresh randomness, a server that receives the same image k times can
average the k representations and shrink the noise by sqrt(k). Here every
random draw of the obfuscator comes from a generator seeded by
``HMAC-SHA256(device key, preprocessed image)``, so an identical image always
gives a bit-identical ``z`` and averaging identical queries gains nothing.

What it does not stop: two images that differ in a single pixel (a re-encoded
upload, the next frame of a still scene) get unrelated draws, so averaging
near-duplicates still shrinks the noise; nor anything about one query alone.

The key is made on the device (:func:`create_key`: 32 random bytes, hex, in a
file only its owner can read), never leaves it and is in no export or manifest.
Without the key the server cannot predict the draws.

Scheme ``hmac-sha256/pcg64/v1``, for one image (3, H, W) float32 in [0, 1]:
  1. bytes = the image rounded to uint8 (``rint(x * 255)``), C order, after a
     header ``b"privsplit-keyed-v1" + H.to_bytes(4) + W.to_bytes(4)``;
  2. seed = HMAC-SHA256(key, bytes) as a big-endian 256-bit integer;
  3. draws: numpy's PCG64 seeded with it, ``random_raw`` 64-bit words, the top
     23 bits ``k`` of each give ``u = (2k + 1) / 2**24``: exact in float32,
     strictly inside (0, 1).
Standard library and numpy only, so PyTorch clients and the torch-free edge
client compute the same draws.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import numpy as np

from .errors import EdgeError

SCHEME = "hmac-sha256/pcg64/v1"
KEY_BYTES = 32
_HEADER = b"privsplit-keyed-v1"


class DeviceKeyError(EdgeError):
    """The device key is missing, unreadable, malformed or not private."""


def create_key(path: str | Path) -> Path:
    """Write a new random device key to ``path`` (owner read/write only); refuses to overwrite."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DeviceKeyError(f"device key {path} already exists; keep it (z of known images depends on it) or delete it first") from None
    except OSError as e:
        raise DeviceKeyError(f"cannot create device key {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(KEY_BYTES).hex() + "\n")
    return path


def load_key(path: str | Path) -> bytes:
    """Read a device key written by :func:`create_key`. Raises :class:`DeviceKeyError`,
    naming the file, if it is missing, unreadable, not 64 hex digits, or readable
    by other users: never a silent fall-back to fresh randomness."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise DeviceKeyError(f"device key {path} does not exist; create one on the device with `privsplit keygen {path}`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DeviceKeyError(f"cannot read device key {path}: {getattr(e, 'strerror', None) or e}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DeviceKeyError(f"device key {path} is accessible to other users (mode {stat.S_IMODE(mode):o}); run chmod 600 {path}")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise DeviceKeyError(f"device key {path} must hold {2 * KEY_BYTES} hex digits (made by `privsplit keygen`)")
    return key


def image_seed(key: bytes, image: np.ndarray) -> int:
    """The 256-bit seed of one image (3, H, W) float in [0, 1] under ``key``."""
    if image.ndim != 3:
        raise EdgeError(f"expected one image (3, H, W), got shape {image.shape}")
    pixels = np.clip(np.rint(np.asarray(image, np.float64) * 255), 0, 255).astype(np.uint8)
    h, w = pixels.shape[1:]
    msg = _HEADER + int(h).to_bytes(4, "big") + int(w).to_bytes(4, "big") + np.ascontiguousarray(pixels).tobytes()
    return int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest(), "big")


def uniforms_from(bit_generator: np.random.BitGenerator, n: int) -> np.ndarray:
    """``n`` float32 uniforms ``(2k + 1) / 2**24`` from the top 23 bits of 64-bit words."""
    words = bit_generator.random_raw(n) >> np.uint64(41)  # uint64 in [0, 2**23)
    return ((2 * words + 1).astype(np.float32)) * np.float32(2.0**-24)


def keyed_uniforms(key: bytes, images: np.ndarray, draws: int) -> np.ndarray:
    """``(N, draws)`` float32 uniforms, a keyed function of each image ``(N, 3, H, W)``."""
    out = np.empty((len(images), draws), np.float32)
    for i, im in enumerate(images):
        out[i] = uniforms_from(np.random.PCG64(image_seed(key, im)), draws)
    return out


def fresh_uniforms(n: int, draws: int) -> np.ndarray:
    """``(n, draws)`` float32 uniforms from the operating system's entropy."""
    return uniforms_from(np.random.PCG64(), n * draws).reshape(n, draws)

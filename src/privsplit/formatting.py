"""How numbers are written for people and for JSON: percentages, image metrics,
numbers of queries, and JSON without infinities. The one place reports, attack
results and benchmarks take their formats from (it imports nothing of privsplit)."""

from __future__ import annotations

import json
import math
from typing import Any


def jsonable(x: Any) -> Any:
    """JSON has no infinity: PSNR of identical images is written as the string "inf"
    (NaN as null). :func:`from_jsonable` undoes it."""
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else None)
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items() if k != "lpips_module"}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def from_jsonable(x: Any) -> Any:
    """Undo :func:`jsonable`'s strings for infinities."""
    if x == "inf":
        return math.inf
    if x == "-inf":
        return -math.inf
    if isinstance(x, dict):
        return {k: from_jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [from_jsonable(v) for v in x]
    return x


def to_json(x: Any) -> str:
    """Strict JSON (no NaN or Infinity: ``"inf"`` and null instead), for ``--json`` and scripts."""
    return json.dumps(jsonable(x), indent=2, default=str, allow_nan=False)


def pct(x: float | None) -> str:
    """``0.1234`` -> ``12.34%``; None -> ``n/a``."""
    return "n/a" if x is None else f"{100 * x:.2f}%"


def num(x: float | None, fmt: str = "{:.4f}") -> str:
    """A number in ``fmt``; None -> ``n/a``, an infinity -> ``inf``."""
    if x is None:
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return fmt.format(x)


def queries_words(q: str) -> str:
    """``"1"`` -> ``1 query``, ``"16"`` -> ``16 queries``."""
    return f"{q} quer{'y' if q == '1' else 'ies'}"


def at_queries(q: str, several: bool) -> str:
    """`` at 16 queries`` where several numbers of queries were measured, else nothing."""
    return f" at {queries_words(q)}" if several else ""


# The image metrics in the order the tables give them, with their number format.
IMAGE_METRICS = (("mse", "MSE", "{:.2f}"), ("l1", "L1", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("ms_ssim", "MS-SSIM", "{:.4f}"),
                 ("psnr", "PSNR", "{:.2f}"), ("lpips", "LPIPS", "{:.4f}"), ("st_lpips", "ST-LPIPS", "{:.4f}"))

# Which way each image metric moves as a reconstruction improves (True: higher is closer).
CLOSER_IS_HIGHER = {"mse": False, "l1": False, "ssim": True, "ms_ssim": True, "psnr": True, "lpips": False,
                    "st_lpips": False}

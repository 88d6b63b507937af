"""Measures: accuracy, image similarity, client cost (FLOPs, memory, bytes, latency)."""

from .accuracy import accuracy, chance_given, chance_level
from .cost import FlopCount, client_cost, count_flops, cpu_latency_ms, memory_mb, payload_bytes
from .image import MS_SSIM_MIN_SIDE, LPIPS, image_metrics, load_lpips

__all__ = [
    "FlopCount",
    "LPIPS",
    "MS_SSIM_MIN_SIDE",
    "accuracy",
    "chance_given",
    "chance_level",
    "client_cost",
    "count_flops",
    "cpu_latency_ms",
    "image_metrics",
    "load_lpips",
    "memory_mb",
    "payload_bytes",
]

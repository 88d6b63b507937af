"""What the obfuscator costs the client: FLOPs, memory, bytes sent, latency.

FLOPs follow the paper's count (the convention of the ``ptflops`` counter,
doubled): every operation is counted in multiply-adds and the total is
multiplied by 2. Multiply-adds are: convolution and linear layers (one per
weight use), batch norm 2 per element (normalise, then scale and shift), ReLU
1 per element, pooling 1 per *input* element, and the residual add of a
ResNet block 1 per output element. This reproduces the paper's table for
ResNet18 at 178x178 exactly (see ``benchmarks/cost.py``); counting the
element-wise operations once instead of twice gives 1.30 / 1.91 / 2.51
GFLOPs for rn18_2..4, which does not.

Example:
    >>> from privsplit.models import split_backbone
    >>> enc, _ = split_backbone("resnet18", "rn18_1", num_classes=10)
    >>> round(count_flops(enc, (3, 178, 178)).total / 1e9, 2), round(memory_mb(enc), 2)
    (0.75, 0.6)
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
ACTIVATIONS = (nn.ReLU, nn.ReLU6)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class FlopCount:
    """FLOPs of one forward pass of one sample, by kind of operation."""

    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    @property
    def gflops(self) -> float:
        return self.total / 1e9

    def add(self, kind: str, multiply_adds: int) -> None:
        # Counted in multiply-adds, reported as 2 FLOPs each (the paper's convention).
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 2 * int(multiply_adds)


def count_flops(module: nn.Module, in_shape: tuple[int, ...]) -> FlopCount:
    """FLOPs of ``module`` on one input of shape ``in_shape`` (without batch),
    counted with forward hooks on a zero input (see the module docstring).

    Modules the counter does not know (e.g. the reduction ops) add nothing:
    their cost is a few operations per element of ``z``, negligible beside
    the encoder's convolutions.
    """
    count = FlopCount()

    def hook(m: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            k = math.prod(m.kernel_size) * (m.in_channels // m.groups)
            count.add("conv", out.numel() * k + (out.numel() if m.bias is not None else 0))
        elif isinstance(m, nn.ConvTranspose2d):
            k = math.prod(m.kernel_size) * (m.out_channels // m.groups)
            count.add("conv", inputs[0].numel() * k + (out.numel() if m.bias is not None else 0))
        elif isinstance(m, nn.Linear):
            rows = out.numel() // m.out_features
            count.add("linear", rows * m.in_features * m.out_features + (out.numel() if m.bias is not None else 0))
        elif isinstance(m, NORMS):
            count.add("batchnorm", 2 * out.numel() if m.affine else out.numel())
        elif isinstance(m, ACTIVATIONS):
            count.add("relu", out.numel())
        elif isinstance(m, POOLS):
            count.add("pool", inputs[0].numel())
        elif isinstance(m, (BasicBlock, Bottleneck)):
            count.add("residual_add", out.numel())

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    was_training = module.training
    try:
        module.eval()
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            module(torch.zeros((1, *in_shape), device=device))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return count


def memory_mb(module: nn.Module) -> float:
    """Size of the weights as float32: (parameters + buffers) * 4 bytes / 2^20.

    Buffers include batch-norm running statistics and ``num_batches_tracked``,
    as in the paper.
    """
    n = sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())
    return n * 4 / 2**20


def payload_bytes(z_shape: tuple[int, ...], bytes_per_value: int = 4) -> int:
    """Bytes sent per sample: one value of ``z`` is ``bytes_per_value`` bytes
    (4 for float32, 2 for float16)."""
    return math.prod(z_shape) * bytes_per_value


def cpu_latency_ms(
    module: nn.Module, in_shape: tuple[int, ...], repeats: int = 30, warmup: int = 3, threads: int | None = 1
) -> float:
    """Median wall time of a batch-1 forward pass on the CPU, in milliseconds.

    ``threads`` torch threads are used while timing (default 1, one core of an
    edge device; None keeps the current setting). Several threads on a
    loaded machine give erratic numbers.
    """
    module = module.to("cpu").eval()
    x = torch.rand((1, *in_shape))
    times = []
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                t0 = time.perf_counter()
                module(x)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(before)
    return statistics.median(times)


def client_cost(
    obfuscator: nn.Module, image_shape: tuple[int, int, int], latency_repeats: int = 30, latency_threads: int = 1
) -> dict[str, Any]:
    """Every client-side cost of an obfuscator (encoder + reduction) in one dict.

    ``latency_repeats=0`` skips the timing (``latency_ms`` is then None).
    """
    from ..obfuscator import ClientPart

    # FLOPs of the network the client runs (a client part says which); elementwise random steps are not counted.
    client = isinstance(obfuscator, ClientPart)
    flops = count_flops(obfuscator.counted_network if client else obfuscator, image_shape)
    z_shape = tuple(obfuscator.z_shape) if client else _out_shape(obfuscator, image_shape)
    return {
        "gflops": flops.gflops,
        "flops_by_kind": flops.by_kind,
        "memory_mb": memory_mb(obfuscator),
        "z_shape": list(z_shape),
        "bytes_per_sample_float32": payload_bytes(z_shape, 4),
        "bytes_per_sample_float16": payload_bytes(z_shape, 2),
        "image_bytes_uint8": math.prod(image_shape),
        "latency_ms_cpu_batch1": (
            cpu_latency_ms(obfuscator, image_shape, latency_repeats, threads=latency_threads) if latency_repeats else None
        ),
        "latency_threads": latency_threads,
        "counting": "multiply-adds x2; conv/linear per weight use, batchnorm 2/elem, relu 1/elem, pool 1/input elem, residual add 1/elem",
    }


def _out_shape(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(module.eval()(torch.zeros((1, *in_shape))).shape[1:])


__all__ = ["FlopCount", "count_flops", "memory_mb", "payload_bytes", "cpu_latency_ms", "client_cost"]

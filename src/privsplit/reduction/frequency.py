"""Frequency band filter over the spatial axes."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from .base import OPS, ReductionOp, check_choice, check_fraction


def radial_frequency(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised radius of each 2-D FFT bin, shape (h, w): 0 at DC, 1 at the
    highest frequency on both axes (the Nyquist corner)."""
    fy = torch.fft.fftfreq(h, device=device).abs()
    fx = torch.fft.fftfreq(w, device=device).abs()
    r = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    return r / (0.5 * 2**0.5)


def band_mask(h: int, w: int, low: float, high: float, mode: str, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (h, w) mask of the FFT bins a filter keeps."""
    r = radial_frequency(h, w, device)
    band = (r >= low) & (r <= high)
    return band if mode == "pass" else ~band


def frequency_filter(z: torch.Tensor, low: float, high: float, mode: str = "pass") -> torch.Tensor:
    """Keep (``mode="pass"``) or remove (``"reject"``) the frequencies whose
    normalised radius lies in ``[low, high]``; ``z`` is (N, C, H, W)."""
    mask = band_mask(*z.shape[-2:], low, high, mode, z.device)
    spectrum = torch.fft.fft2(z.float())  # (N, C, H, W) complex
    # The mask is symmetric in +/- frequency, so the inverse is real up to rounding.
    return torch.fft.ifft2(spectrum * mask).real.to(z.dtype)


@OPS.register("frequency")
class FrequencyFilter(ReductionOp):
    """Band-pass or band-reject filter on the 2-D spectrum of each channel.

    Args:
        low: lower normalised radius of the band, in [0, 1].
        high: upper normalised radius of the band, in [0, 1], > low.
        mode: "pass" keeps the band, "reject" removes it.
    """

    needs_spatial = True

    def __init__(self, low: float = 0.0, high: float = 0.5, mode: str = "pass") -> None:
        super().__init__()
        self.low = check_fraction("frequency.low", low)
        self.high = check_fraction("frequency.high", high)
        if self.low >= self.high:
            raise ConfigError(f"frequency.low ({self.low}) must be below frequency.high ({self.high})")
        self.mode = check_choice("frequency.mode", mode, ("pass", "reject"))

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return frequency_filter(z, self.low, self.high, self.mode)

    def export_form(self, in_shape: tuple[int, ...]) -> nn.Module:
        # ONNX has no complex FFT: the same filter as real matrix products.
        return DFTFilter(band_mask(in_shape[1], in_shape[2], self.low, self.high, self.mode))

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}, mode={self.mode}"


class DFTFilter(nn.Module):
    """``ifft2(fft2(z) * mask).real`` as real matrix products, for a fixed (H, W):
    with F the DFT matrices, ``out = Re(conj(Fh) (M * (Fh z Fw^T)) conj(Fw)^T) / (H W)``."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        h, w = mask.shape
        for name, n in (("h", h), ("w", w)):
            k = torch.arange(n, dtype=torch.float64)
            angle = -2 * math.pi * torch.outer(k, k) / n  # (n, n), symmetric
            self.register_buffer(f"{name}_re", torch.cos(angle).float(), persistent=False)
            self.register_buffer(f"{name}_im", torch.sin(angle).float(), persistent=False)
        self.register_buffer("mask", mask.float(), persistent=False)
        self.scale = 1.0 / (h * w)

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        p, q = self.h_re @ z, self.h_im @ z  # (N, C, H, W): Fh z, real and imaginary
        # The DFT matrices are symmetric, so Fw^T = Fw.
        s_re = (p @ self.w_re - q @ self.w_im) * self.mask
        s_im = (p @ self.w_im + q @ self.w_re) * self.mask
        u_re = self.h_re @ s_re + self.h_im @ s_im  # conj(Fh) S
        u_im = self.h_re @ s_im - self.h_im @ s_re
        return (u_re @ self.w_re + u_im @ self.w_im) * self.scale

"""Frequency band filter over the spatial axes."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import OPS, ReductionOp, check_choice, check_fraction


def radial_frequency(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised radius of each 2-D FFT bin, shape (h, w): 0 at DC, 1 at the
    highest frequency on both axes (the Nyquist corner)."""
    fy = torch.fft.fftfreq(h, device=device).abs()
    fx = torch.fft.fftfreq(w, device=device).abs()
    r = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    return r / (0.5 * 2**0.5)


def frequency_filter(z: torch.Tensor, low: float, high: float, mode: str = "pass") -> torch.Tensor:
    """Keep (``mode="pass"``) or remove (``"reject"``) the frequencies whose
    normalised radius lies in ``[low, high]``; ``z`` is (N, C, H, W)."""
    h, w = z.shape[-2:]
    r = radial_frequency(h, w, z.device)
    band = (r >= low) & (r <= high)
    mask = band if mode == "pass" else ~band
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

    name = "frequency"
    needs_spatial = True

    def __init__(self, low: float = 0.0, high: float = 0.5, mode: str = "pass") -> None:
        super().__init__()
        self.low = check_fraction("frequency.low", low)
        self.high = check_fraction("frequency.high", high)
        if self.low >= self.high:
            raise ConfigError(f"frequency.low ({self.low}) must be below frequency.high ({self.high})")
        self.mode = check_choice("frequency.mode", mode, ("pass", "reject"))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return frequency_filter(z, self.low, self.high, self.mode)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}, mode={self.mode}"

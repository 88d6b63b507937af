"""The information-reduction chain and its ops.

Each op is a pure tensor function plus a small ``nn.Module`` registered in
:data:`OPS` under the name used in configs.
"""

from .base import OPS, ReductionOp
from .chain import Reduction, build_op
from .frequency import FrequencyFilter, frequency_filter
from .noise import GaussianNoise, gaussian_noise
from .replace import RandomReplace, random_replace
from .resize import Resize, resize
from .shuffle import RandomShuffle, random_shuffle

__all__ = [
    "OPS",
    "FrequencyFilter",
    "GaussianNoise",
    "RandomReplace",
    "RandomShuffle",
    "Reduction",
    "ReductionOp",
    "Resize",
    "build_op",
    "frequency_filter",
    "gaussian_noise",
    "random_replace",
    "random_shuffle",
    "resize",
]

"""Image similarity between originals and reconstructions, on the 0-255 scale.

SSIM, MS-SSIM and PSNR come from ``torchmetrics`` (functional API). LPIPS
needs ImageNet backbone weights that cannot be downloaded here: the user
gives a weights file; without one LPIPS is reported as unavailable.
ST-LPIPS, the shift-tolerant LPIPS of Ghildyal & Liu (2022), ships its
complete weights in the ``stlpips-pytorch`` package (extra ``[stlpips]``) and
is computed whenever that package is installed. Its backbone is trained from
scratch on LPIPS's human judgements, not on ImageNet: its scores are not
comparable to LPIPS(alex) and are always reported under their own name.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, PrivsplitError
from ..tensors import state_mismatch

# MS-SSIM at its 5 default scales halves the image 4 times, so the 11-pixel
# gaussian window needs more than (11 - 1) * 2^4 = 160 pixels per side;
# torchmetrics checks side // 16 > 10, i.e. at least 176 pixels.
MS_SSIM_MIN_SIDE = 176
LPIPS_ENV = "PRIVSPLIT_LPIPS_WEIGHTS"
# AlexNet's first two stages (11x11 stride-4 convolution, two 3x3 stride-2
# max-pools) leave nothing of images under 31 pixels.
LPIPS_MIN_SIDE = 32


def _torchmetrics():  # noqa: ANN202
    try:
        from torchmetrics.functional import image as tmi
    except ImportError:
        raise PrivsplitError("image metrics need torchmetrics: pip install 'privsplit[eval]'") from None
    return tmi


@torch.no_grad()
def image_metrics(
    original: torch.Tensor, reconstruction: torch.Tensor, lpips: "LPIPS | None" = None,
    st_lpips: "LPIPS | None" = None,
) -> dict[str, Any]:
    """Similarity of two batches of images in [0, 1], shape (N, 3, H, W).

    Returns MSE and L1 (0-255 scale), SSIM, MS-SSIM, PSNR (data range 255),
    LPIPS and ST-LPIPS. A metric that cannot be computed is ``None`` with the
    reason in ``notes``; PSNR of identical images is ``inf``.
    """
    if original.shape != reconstruction.shape or original.dim() != 4:
        raise ValueError(f"need two (N, C, H, W) batches of one shape, got {tuple(original.shape)} and {tuple(reconstruction.shape)}")
    tmi = _torchmetrics()
    a = original.double().clamp(0, 1) * 255
    b = reconstruction.double().clamp(0, 1) * 255
    diff = a - b
    out: dict[str, Any] = {
        "mse": float(diff.pow(2).mean()),
        "l1": float(diff.abs().mean()),
        "ssim": _mean_per_image(tmi.structural_similarity_index_measure, b, a),
        "psnr": float(tmi.peak_signal_noise_ratio(b, a, data_range=255.0)),
        "ms_ssim": None,
        "lpips": None,
        "st_lpips": None,
        "notes": {},
    }
    side = min(a.shape[-2:])
    if side >= MS_SSIM_MIN_SIDE:
        out["ms_ssim"] = _mean_per_image(tmi.multiscale_structural_similarity_index_measure, b, a)
    else:
        out["notes"]["ms_ssim"] = (
            f"not computed: images are {side} px; MS-SSIM at its default 5 scales needs more than 160 px "
            f"(torchmetrics: at least {MS_SSIM_MIN_SIDE} px)"
        )
    missing = {"lpips": f"no weights given (--lpips-weights FILE or ${LPIPS_ENV})", "st_lpips": ST_LPIPS_MISSING}
    for key, scorer in (("lpips", lpips), ("st_lpips", st_lpips)):
        name = key.upper().replace("_", "-")
        if scorer is None:
            out["notes"][key] = f"unavailable: {missing[key]}"
        elif side < LPIPS_MIN_SIDE:
            out["notes"][key] = f"not computed: images are {side} px, {name}(alex) needs at least {LPIPS_MIN_SIDE} px"
        else:
            out[key] = scorer.score(original, reconstruction)
    return out


ST_LPIPS_MISSING = "the stlpips-pytorch package is not installed (pip install 'privsplit[stlpips]')"


def load_st_lpips() -> "LPIPS | None":
    """Shift-tolerant LPIPS (AlexNet variant) with the weights the
    ``stlpips-pytorch`` package ships (nothing is downloaded); ``None`` when
    the package (or a module it imports) is not installed."""
    try:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints while it imports
            from stlpips_pytorch import stlpips
    except ImportError:
        return None
    net = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
    for param in net.parameters():
        param.requires_grad_(False)
    return LPIPS(net, "stlpips-pytorch: ST-LPIPS alex shift_tolerant (weights vST0.0)")


# Values per SSIM call. torchmetrics' gaussian window is a grouped convolution;
# on the CPU in float64 it unfolds ~120 values per pixel (5000 CIFAR images
# took >20 GB), so SSIM runs in float32 (mkldnn) on chunks of about this size.
SSIM_CHUNK_VALUES = 1 << 20


def _mean_per_image(fn, b: torch.Tensor, a: torch.Tensor) -> float:  # noqa: ANN001
    """Mean over images of ``fn(b, a)`` (an SSIM-like metric at data range 255),
    in float32 chunks; equals the whole-batch ``elementwise_mean``."""
    per_image = max(1, SSIM_CHUNK_VALUES // a[0].numel())
    vals = [fn(b[i : i + per_image].float(), a[i : i + per_image].float(), data_range=255.0, reduction="none")
            for i in range(0, len(a), per_image)]
    return float(torch.cat([v.reshape(-1) for v in vals]).double().mean())


class LPIPS(nn.Module):
    """LPIPS (AlexNet) with weights from a local file; never downloads.

    ``score`` takes images in [0, 1] and returns the mean distance.
    """

    def __init__(self, net: nn.Module, source: str) -> None:
        super().__init__()
        self.net = net.eval()
        self.source = source

    @torch.no_grad()
    def score(self, a: torch.Tensor, b: torch.Tensor, batch_size: int = 64) -> float:
        total, n = 0.0, 0
        for i in range(0, len(a), batch_size):
            x, y = a[i : i + batch_size].float(), b[i : i + batch_size].float()
            total += float(self.net(x, y, normalize=True).sum())
            n += len(x)
        return total / max(n, 1)


def _alex_lin_weights() -> dict[str, torch.Tensor]:
    """The linear calibration layers of LPIPS(alex) shipped inside torchmetrics."""
    import torchmetrics.functional.image.lpips as tml

    path = Path(tml.__file__).parent / "lpips_models" / "alex.pth"
    return torch.load(path, map_location="cpu", weights_only=True)


def load_lpips(path: str | os.PathLike | None = None) -> LPIPS | None:
    """Build LPIPS(alex) from a local weights file; ``None`` if no file is named
    (neither ``path`` nor the environment variable ``PRIVSPLIT_LPIPS_WEIGHTS``).

    The file (safetensors, or a PyTorch state dict read with
    ``weights_only=True``) holds either the whole LPIPS network
    (``net.slice1.0.weight`` ... and ``lin0.model.1.weight`` ..., the layout of
    the ``lpips`` package and torchmetrics) or torchvision's ImageNet AlexNet
    (``features.0.weight`` ...), in which case the linear layers shipped with
    torchmetrics are used. Anything else is an error.
    """
    path = path or os.environ.get(LPIPS_ENV) or None
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"LPIPS weights file {p} does not exist")
    try:
        from torchmetrics.functional.image.lpips import _LPIPS
    except ImportError:
        raise PrivsplitError("LPIPS needs torchmetrics: pip install 'privsplit[eval]'") from None
    tensors = _read_state_dict(p)
    # pretrained=False and pnet_rand=True: build the network without loading or downloading anything.
    net = _LPIPS(pretrained=False, net="alex", pnet_rand=True)
    own = net.state_dict()
    if any(k.startswith("features.") for k in tensors):
        # torchvision AlexNet: features.{0,3,6,8,10} are the 5 convolutions LPIPS taps.
        where = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
        mapped = {}
        for idx, s in where.items():
            for kind in ("weight", "bias"):
                key = f"features.{idx}.{kind}"
                if key in tensors:
                    mapped[f"net.slice{s}.{idx}.{kind}"] = tensors[key]
        lin = _alex_lin_weights()
        tensors = {**mapped, **{k: v for k, v in lin.items() if k.startswith("lin")}}
    tensors = {k: v for k, v in tensors.items() if not k.startswith("scaling_layer.")}
    # torchmetrics registers the linear layers twice (lin0 and lins.0): fill both.
    for k in list(tensors):
        if k.startswith("lin") and not k.startswith("lins."):
            tensors.setdefault(f"lins.{k[3]}{k[4:]}", tensors[k])
    problem = state_mismatch(own, tensors)
    if problem:
        raise ConfigError(
            f"{p} is not LPIPS(alex) weights ({problem}). Give the LPIPS network's state dict "
            "(net.slice1.0.weight ..., lin0.model.1.weight ...) or torchvision's ImageNet AlexNet state dict "
            "(features.0.weight ...)"
        )
    net.load_state_dict(tensors)
    for param in net.parameters():
        param.requires_grad_(False)
    return LPIPS(net, str(p))


def _read_state_dict(p: Path) -> dict[str, torch.Tensor]:
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise ConfigError(f"{p} is not a readable safetensors file ({e})") from None
    try:
        # weights_only: a plain tensor dict; a file that would run code is refused.
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises many kinds for a bad file)
        raise ConfigError(f"{p} is not a readable weights file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(torch.is_tensor(v) for v in data.values()):
        raise ConfigError(f"{p} does not hold a state dict of tensors")
    return data


def psnr_text(value: float | None) -> str:
    """PSNR for humans: ``inf`` for identical images."""
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.2f} dB"

"""The model-space (likelihood-maximisation) attack, for a client the attacker does *not* own.

The attack of the DISCO paper (also in InferenceBenchmark): the attacker knows the
public architecture (backbone, split point, reduction chain) but not the trained
weights, so it optimises the images *and* a surrogate client jointly, until the
surrogate's noise-free output for the images matches the received ``z``. The
surrogate starts from fresh weights: the issue asks for the public backbone's
pretrained weights, but nothing is downloaded and none ship offline. Same
objective, prior, start and early stop as :mod:`.inversion`; beside the white-box
inversion it shows how much of the leak comes from owning the obfuscator.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..progress import Progress
from .base import ATTACKS, AttackOptions, EvalData
from .inversion import (InversionAttack, InversionSettings, StopWatch, _power, batch_for, check_differentiable, descend,
                        relative_fit, silenced_forward, start_batch)


def fresh_copy(client: nn.Module) -> nn.Module:
    """The client's architecture with fresh weights: every submodule with
    ``reset_parameters`` is re-initialised (batch norm statistics reset too).
    The attacker knows the public backbone and the split, not the trained weights
    (and no pretrained weights are available offline)."""
    surrogate = copy.deepcopy(client)
    for m in surrogate.modules():
        if m is not surrogate and callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()
    for p in surrogate.parameters():
        p.requires_grad_(True)
    return surrogate.eval()


def invert_model_space(
    client: nn.Module,
    z: torch.Tensor,
    start: torch.Tensor,
    settings: InversionSettings,
    seed: int = 0,
    progress: bool | None = None,
    desc: str = "model-space",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Images and a surrogate client optimised jointly so that the surrogate's
    silenced output matches ``z`` (N, *z_shape); the surrogate is shared by every
    image (the attacker fits one client to everything it received), each batch
    of images has its own Adam state. Returns what :func:`invert` does, plus
    ``"parameters"``: the surrogate's number of weights."""
    torch.manual_seed(seed)
    surrogate = fresh_copy(client).to(z.device)
    check_differentiable(surrogate, start.to(z.device))
    surrogate = surrogate.to(memory_format=torch.channels_last)  # faster on the CPU (see inversion.channels_last)
    forward = silenced_forward(surrogate, settings.draws)
    params = [p for p in surrogate.parameters()]
    theta_opt = torch.optim.Adam(params, lr=settings.surrogate_lr) if params else None
    bs = batch_for(settings.batch_size, start.shape)
    zs = [z[i : i + bs].float() for i in range(0, len(z), bs)]  # batches of (B, *z_shape)
    powers = [_power(zb) for zb in zs]
    xs = [start_batch(start.to(z.device), len(zb)) for zb in zs]
    opts = [torch.optim.Adam([x], lr=settings.lr) for x in xs]
    bar = Progress(range(settings.steps), desc=desc, unit="step", enabled=progress)
    watch = StopWatch(bar)
    step = 0
    for step in bar:
        # one pass over every batch per step; the surrogate steps with each
        total = sum(descend(x, [opt, *([theta_opt] if theta_opt else [])], forward, zb, power, settings.tv).sum().item()
                    for x, zb, power, opt in zip(xs, zs, powers, opts))
        if watch.add(total / len(z)):
            break
    bar.close()
    with torch.no_grad():
        fit_total = sum(relative_fit(forward(x), zb, p).sum().item() for x, zb, p in zip(xs, zs, powers))
    return torch.cat([x.detach().cpu().contiguous() for x in xs]), {
        "steps": [step + 1], "converged": step + 1 < settings.steps, "fit": fit_total / max(len(z), 1),
        "parameters": sum(p.numel() for p in params)}



@ATTACKS.register("model_space")
class ModelSpaceAttack(InversionAttack):
    """The likelihood-maximisation attack (DISCO; InferenceBenchmark) for a
    client the attacker does *not* own: the images and a surrogate client of the
    same public architecture are optimised together. Beside the white-box
    inversion it shows how much of the leak comes from owning the obfuscator."""

    label = "model-space attack"
    grid_name = "model_space"

    def assumption(self) -> str:
        return ("the attacker knows the public architecture (backbone, split point, reduction chain) but not the trained "
                "weights: a surrogate client with fresh weights (no pretrained weights are available offline) is "
                "optimised jointly with the images")

    def _invert(self, data: EvalData, options: AttackOptions, z: torch.Tensor, start: torch.Tensor,
                settings: InversionSettings, desc: str) -> tuple[torch.Tensor, dict[str, Any]]:
        return invert_model_space(data.client, z, start, settings, options.seed, options.progress, desc)

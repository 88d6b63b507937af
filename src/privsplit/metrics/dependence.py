"""Differentiable, per-batch measures of how much features depend on a label.

Used as training penalties on the noise-free features (the ``dependence`` and
``centre`` levers of ``ours``): unlike a proxy adversary there is no network
that the encoder can learn to fool; the estimate is a closed-form function of
the batch.

* :func:`distance_correlation_sqr`: squared distance correlation (Székely et
  al., 2007), the biased V-statistic, as ``dcor.distance_correlation_sqr``;
  0 exactly when the two samples are independent (in the population).
* :func:`conditional_dcor`: its average over the groups of a conditioning
  label: how much the features say about the private label *beyond* the
  utility label, the part the task does not need.
* :func:`within_class_share`: the share of the features' variance left within
  the classes of a label (a centre term).

Example:
    >>> x = torch.randn(64, 8)
    >>> float(distance_correlation_sqr(x, x))
    1.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _centred_distances(x: torch.Tensor) -> torch.Tensor:
    """Double-centred Euclidean distance matrix of the rows of ``x`` (N, D)."""
    norms = x.pow(2).sum(1)
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: no (N, N, D) difference tensor (134 MB at N=128, D=1024)
    sq = (norms[:, None] + norms[None, :] - 2 * x @ x.T).clamp_min(0)  # (N, N)
    # sqrt has an infinite derivative at 0 (the diagonal): a tiny floor keeps
    # the gradient finite and moves each distance by at most 1e-6.
    d = (sq + 1e-12).sqrt()
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation_sqr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared distance correlation of paired samples ``x`` (N, ...) and ``y`` (N, ...), in [0, 1].

    Rows are flattened; 0 when either sample is constant."""
    a, b = _centred_distances(x.flatten(1).double()), _centred_distances(y.flatten(1).double())
    dcov = (a * b).mean()
    dvar = (a * a).mean() * (b * b).mean()
    return torch.where(dvar > 0, dcov / dvar.clamp_min(1e-300).sqrt(), 0.0).clamp_min(0).float()


def conditional_dcor(features: torch.Tensor, target: torch.Tensor, given: torch.Tensor | None,
                     num_classes: int, min_group: int = 4) -> torch.Tensor:
    """Squared distance correlation of ``features`` (N, ...) with the one-hot
    ``target`` label (N,), within each group of ``given`` (N,), averaged with the
    groups' sizes as weights (``given=None``: one group).

    Groups with fewer than ``min_group`` samples are left out; the result is 0
    (still attached to the graph) when none is left."""
    onehot = F.one_hot(target, num_classes).float()
    groups = [torch.ones_like(target, dtype=torch.bool)] if given is None else [given == g for g in given.unique()]
    total, weight = features.sum() * 0.0, 0
    for mask in groups:
        n = int(mask.sum())
        if n >= min_group:
            total = total + n * distance_correlation_sqr(features[mask], onehot[mask])
            weight += n
    return total / max(weight, 1)


def within_class_share(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of the total variance of ``features`` (N, ...) that lies within the
    classes of ``labels`` (N,): 0 when every class is one point, 1 when class
    means coincide. Scale-free."""
    f = features.flatten(1)
    total = (f - f.mean(0)).pow(2).sum()
    within = f.new_zeros(())
    for c in labels.unique():
        fc = f[labels == c]
        within = within + (fc - fc.mean(0)).pow(2).sum()
    return within / total.clamp_min(1e-12)

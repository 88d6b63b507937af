"""Numbers of repeated queries and the attacker families by name: pure Python (no torch), so
that a command's ``--help`` can name them without importing the attacks.
:mod:`privsplit.attacks.base` re-exports both."""

from __future__ import annotations

import math

# Attribute attacker families trained by default (privsplit evaluate, every
# benchmark budget): all of them, since privacy is the worst case over families.
DEFAULT_FAMILIES: tuple[str, ...] = ("head", "mlp", "knn", "linear", "mlp_flat")


def query_key(k: float) -> str:
    """``"1"``, ``"16"``, ``"inf"``: how a number of queries is written in results."""
    return "inf" if math.isinf(k) else str(int(k))


__all__ = ["DEFAULT_FAMILIES", "query_key"]

"""The adversary kinds moved to :mod:`privsplit.adversaries` (below ``config``, which checks them);
this name keeps old imports working."""

from ..adversaries import ADVERSARIES, ATTRIBUTE, DECODER, AdversaryKind

__all__ = ["ADVERSARIES", "ATTRIBUTE", "DECODER", "AdversaryKind"]

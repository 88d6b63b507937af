"""Post-hoc attackers: trained after training, on ``z`` of the frozen obfuscator.

``ATTACKS`` maps a name to an :class:`Attack`; ``privsplit evaluate --attacks``
and ``privsplit attack --attack`` look names up here.
"""

from .base import ATTACKS, Attack, AttackOptions, EvalData
from . import attribute, reconstruction  # noqa: F401  (registers them)
from .attribute import FAMILIES, AttributeAttack, train_attacker
from .reconstruction import ReconstructionAttack

__all__ = ["ATTACKS", "Attack", "AttackOptions", "AttributeAttack", "EvalData", "FAMILIES", "ReconstructionAttack", "train_attacker"]

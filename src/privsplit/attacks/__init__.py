"""Post-hoc attackers: trained after training, on ``z`` of the frozen obfuscator.

``ATTACKS`` maps a name to an :class:`Attack`; ``privsplit evaluate --attacks``
and ``privsplit attack --attack`` look names up here.
"""

from .base import ATTACKS, DEFAULT_QUERIES, Attack, AttackOptions, EvalData, parse_queries, query_key
from . import attribute, reconstruction  # noqa: F401  (registers them)
from .attribute import FAMILIES, FAMILY_NAMES, AttributeAttack, knn_attack, train_attacker
from .reconstruction import ReconstructionAttack

__all__ = ["ATTACKS", "DEFAULT_QUERIES", "Attack", "AttackOptions", "AttributeAttack", "EvalData", "FAMILIES", "FAMILY_NAMES",
           "ReconstructionAttack", "knn_attack", "parse_queries", "query_key", "train_attacker"]

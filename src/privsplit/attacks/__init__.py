"""Post-hoc attackers: trained after training, on ``z`` of the frozen obfuscator.

``ATTACKS`` maps a name to an :class:`Attack`; ``privsplit evaluate --attacks``
and ``privsplit attack --attack`` look names up here.
"""

from .base import ATTACKS, DEFAULT_QUERIES, Attack, AttackOptions, EvalData, parse_queries, query_key
from . import attribute, inversion, model_space, reconstruction  # noqa: F401  (registers them)
from .attribute import FAMILIES, FAMILY_NAMES, AttributeAttack, knn_attack, train_attacker
from .inversion import InversionAttack, InversionSettings, invert
from .model_space import ModelSpaceAttack, invert_model_space
from .reconstruction import ReconstructionAttack

__all__ = ["ATTACKS", "DEFAULT_QUERIES", "Attack", "AttackOptions", "AttributeAttack", "EvalData", "FAMILIES", "FAMILY_NAMES",
           "InversionAttack", "InversionSettings", "ModelSpaceAttack", "ReconstructionAttack", "invert",
           "invert_model_space", "knn_attack", "parse_queries", "query_key", "train_attacker"]

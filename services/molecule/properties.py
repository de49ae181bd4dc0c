"""Kept only for `services.prediction.jobs` until it takes the predictable properties from the contract.

Molecule code uses `services.molecule.domain.properties`; delete this module when prediction stops importing it.
"""

from services.molecule.domain.properties import PREDICTABLE_PROPERTIES

__all__ = ["PREDICTABLE_PROPERTIES"]

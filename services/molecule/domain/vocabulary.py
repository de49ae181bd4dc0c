"""The molecule service's words, each defined once: statuses, property sources and their precedence,
flag types, who may write, and the name its events carry on the bus."""

from __future__ import annotations

EVENT_SOURCE = "molecule"  # the `source` of every event this service records (bus subject prefix)

# Molecule statuses. ARCHIVED means "deleted from lists"; PENDING and TESTING are held by a submission.
AVAILABLE = "AVAILABLE"
ARCHIVED = "ARCHIVED"
STATUSES = (AVAILABLE, "PENDING", "TESTING", "RESULTS", ARCHIVED)
USER_STATUSES = (AVAILABLE, ARCHIVED)  # the statuses a user may set
HELD_STATUSES = ("PENDING", "TESTING")  # a submission's

# Where a property value came from.
CALCULATED = "CALCULATED"  # by RDKit at registration
IMPORTED = "IMPORTED"  # from a CSV or a create request
PREDICTED = "PREDICTED"  # by the prediction service
EXPERIMENTAL = "EXPERIMENTAL"  # measured by a CRO
SOURCES = (CALCULATED, IMPORTED, PREDICTED, EXPERIMENTAL)
# A property's effective value is the one from the first source present in this order (most trusted first).
PRECEDENCE = (EXPERIMENTAL, IMPORTED, PREDICTED, CALCULATED)

FLAG_TYPES = ("PRIORITY", "FAVORITE", "REVIEW")

WRITER_ROLES = ("pharma_scientist",)  # pharma_admin implies it; system_admin passes every check
IMPORT_MANAGER_ROLES = ("pharma_admin",)  # besides an import's creator, who may cancel it

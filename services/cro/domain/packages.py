"""The submission package (issue 11): the immutable manifest of what was sent to the CRO. Pure: no I/O.

The manifest is the pharma side's record: the submission, the service, the specifications, every molecule
as it was at SUBMIT (structure, registration number, sample code) and the documents with the SHA-256 of
their versions. Its bytes are canonical JSON (sorted keys, no whitespace, UTF-8), built only from facts
fixed at SUBMIT, so building it again gives the same bytes and the same SHA-256. The CRO side reads it
blinded (service/submissions.py) unless the structures were revealed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.cro.domain.vocabulary import SubmissionStatus

if TYPE_CHECKING:  # submissions imports results, which hashes with canonical_json from here
    from services.cro.domain.submissions import Submission

MANIFEST_VERSION = 1
MEDIA_TYPE = "application/json"


@dataclass(frozen=True)
class PackagedMolecule:
    """A molecule as it was sent (the snapshot taken at SUBMIT) with its sample code."""

    molecule_id: str
    sample_code: str
    registration_number: str
    smiles: str
    inchi_key: str
    formula: str
    molecular_weight: float | None
    concentration: str = ""
    notes: str = ""


@dataclass(frozen=True)
class PackagedDocument:
    document_id: str
    document_type: str
    version: int
    sha256: str


@dataclass(frozen=True)
class Package:
    """A built package: the manifest's canonical bytes and their SHA-256 (hex)."""

    manifest: dict[str, Any]
    data: bytes
    sha256: str

    @property
    def storage_key(self) -> str:
        """Named by the hash: a rebuild writes the same bytes under the same key."""
        return f"cro/submissions/{self.manifest['submission']['id']}/package-{self.sha256}.json"


def build_package(
    submission: Submission,
    *,
    service_name: str,
    molecules: Sequence[PackagedMolecule],
    documents: Sequence[PackagedDocument],
) -> Package:
    submitted_at = submission.step_times.get(SubmissionStatus.SUBMITTED)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "submission": {
            "id": submission.id,
            "name": submission.name,
            "organization_id": submission.organization_id,
            "cro_organization_id": submission.cro_organization_id,
            "created_by": submission.created_by,
            "submitted_at": submitted_at.isoformat() if submitted_at else "",
            "currency": submission.currency,
            "budget": str(submission.budget) if submission.budget is not None else "",
        },
        "service": {"id": submission.service_id, "name": service_name, "service_type": submission.service_type},
        "specifications": submission.specifications,
        "molecules": [
            {
                "sample_code": m.sample_code,
                "molecule_id": m.molecule_id,
                "registration_number": m.registration_number,
                "smiles": m.smiles,
                "inchi_key": m.inchi_key,
                "formula": m.formula,
                "molecular_weight": m.molecular_weight,
                "concentration": m.concentration,
                "notes": m.notes,
            }
            for m in molecules
        ],
        "documents": [
            {"document_id": d.document_id, "document_type": d.document_type, "version": d.version, "sha256": d.sha256}
            for d in sorted(documents, key=lambda d: (d.document_type, d.document_id))
        ],
    }
    data = canonical_json(manifest)
    return Package(manifest=manifest, data=data, sha256=hashlib.sha256(data).hexdigest())


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same value always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

"""What the submission use cases need from other services (molecule and document), as protocols: the
runtime's gRPC clients (services/runtime/{molecule,document}_client.py) fit them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from services.runtime.document_client import DocumentFingerprint, DocumentRequirements
from services.runtime.molecule_client import MoleculeRecord


class MoleculeLookup(Protocol):
    async def batch_get(
        self, ids: Sequence[str], credentials: Mapping[str, str]
    ) -> tuple[list[MoleculeRecord], list[str]]: ...


class OrganizationNames(Protocol):
    async def organization_name(self, credentials: Mapping[str, str], organization_id: str) -> str: ...


class DocumentRequirementsPort(Protocol):
    async def requirements(
        self,
        credentials: Mapping[str, str],
        submission_id: str,
        service_type: str,
        *,
        include_service_agreement: bool = False,
    ) -> DocumentRequirements: ...

    async def share(
        self,
        credentials: Mapping[str, str],
        submission_id: str,
        owner_organization_id: str,
        cro_organization_id: str,
        *,
        shared: bool = True,
    ) -> int: ...

    async def fingerprints(
        self, credentials: Mapping[str, str], document_ids: Sequence[str]
    ) -> list[DocumentFingerprint]: ...

"""Documents, their versions and submission shares: the only SQL of the service.

Every read on behalf of a caller filters by what the caller may see (`visible_to`): its own
organization's documents, and the documents of a submission shared between its organization and the
other side (a pharma organization and the CRO it submitted to see each other's documents of that
submission, nothing else). Another organization's document does not exist for the caller (404).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bus.tables import processed_events_table
from services.document.domain.documents import Document, Version
from services.document.domain.requirements import SubmissionDocument
from services.document.domain.vocabulary import DocumentStatus, DocumentType, VersionOrigin
from services.document.store.signatures import SignatureRepository
from services.document.store.tables import SCHEMA, document_versions, documents, submission_shares
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid
from services.runtime.errors import NotFoundError
from services.runtime.pagination import PageRequest

_shares = submission_shares.c
_docs = documents.c
_versions = document_versions.c


@dataclass(frozen=True)
class DocumentFilter:
    document_type: DocumentType | None = None
    status: DocumentStatus | None = None
    submission_id: str = ""
    include_deleted: bool = False


@dataclass(frozen=True)
class Share:
    submission_id: str
    owner_organization_id: str  # pharma
    cro_organization_id: str


def not_found(document_id: str) -> NotFoundError:
    return NotFoundError(f"document {document_id} not found", detail="DOCUMENT_NOT_FOUND")


def visible_to(principal: Principal) -> sa.ColumnElement[bool]:
    """The documents `principal` may read."""
    if principal.is_system_admin:
        return sa.true()
    organization = canonical_uuid(principal.organization_id)
    if organization is None:
        return sa.false()
    owner, cro = _shares.owner_organization_id, _shares.cro_organization_id
    shared = sa.exists().where(
        _shares.submission_id == _docs.submission_id,
        sa.or_(
            sa.and_(owner == _docs.organization_id, cro == organization),  # a CRO reads the pharma's
            sa.and_(cro == _docs.organization_id, owner == organization),  # and the pharma the CRO's
        ),
    )
    return sa.or_(_docs.organization_id == organization, sa.and_(_docs.submission_id != "", shared))


class DocumentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._stored_versions: dict[str, int] = {}  # document id → versions already in the table

    # -- one document ------------------------------------------------------------------------------------

    async def get(self, principal: Principal, document_id: str, *, lock: bool = False) -> Document:
        """A document the caller may read, with every version; NotFoundError otherwise."""
        found = await self._load(document_id, visible_to(principal), lock=lock)
        if found is None:
            raise not_found(document_id)
        return found

    async def get_any(self, document_id: str, *, lock: bool = False) -> Document | None:
        """Whoever owns it: for the service's own work (the expiry sweep, signature callbacks)."""
        return await self._load(document_id, sa.true(), lock=lock)

    async def _load(self, document_id: str, condition: sa.ColumnElement[bool], *, lock: bool) -> Document | None:
        key = canonical_uuid(document_id)
        if key is None:
            return None
        statement = sa.select(documents).where(_docs.id == key, condition)
        if lock:
            statement = statement.with_for_update(of=documents)
        row = (await self._session.execute(statement)).mappings().first()
        if row is None:
            return None
        version_rows = (
            await self._session.execute(
                sa.select(document_versions).where(_versions.document_id == key).order_by(_versions.version)
            )
        ).mappings()
        document = _document(row, [_version(v) for v in version_rows])
        self._stored_versions[document.id] = document.current_version
        return document

    async def add(self, document: Document) -> Document:
        await self._session.execute(sa.insert(documents).values(**_document_values(document), id=document.id))
        await self._insert_versions(document, after=0)
        return await self._refreshed(document)

    async def save(self, document: Document) -> Document:
        """Writes the document's state and the versions added since it was loaded."""
        await self._session.execute(
            sa.update(documents)
            .where(_docs.id == document.id)
            .values(**_document_values(document), updated_at=sa.func.now())
        )
        await self._insert_versions(document, after=self._stored_versions.get(document.id, 0))
        return await self._refreshed(document)

    async def _insert_versions(self, document: Document, *, after: int) -> None:
        new = [v for v in document.versions if v.version > after]
        if new:
            await self._session.execute(
                sa.insert(document_versions), [_version_values(document.id, v) for v in new]
            )
        self._stored_versions[document.id] = document.current_version

    async def _refreshed(self, document: Document) -> Document:
        """The document as stored (database timestamps filled in)."""
        found = await self._load(document.id, sa.true(), lock=False)
        assert found is not None  # written in this transaction
        return found

    # -- lists -------------------------------------------------------------------------------------------

    async def find(
        self, principal: Principal, where: DocumentFilter, page: PageRequest
    ) -> tuple[list[Document], int]:
        """Newest first, each with its current version only."""
        conditions = [visible_to(principal)]
        if where.document_type is not None:
            conditions.append(_docs.document_type == where.document_type.value)
        if where.status is not None:
            conditions.append(_docs.status == where.status.value)
        elif not where.include_deleted:
            conditions.append(_docs.status != DocumentStatus.ARCHIVED.value)
        if where.submission_id:
            conditions.append(_docs.submission_id == where.submission_id)
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(documents).where(*conditions))
        rows = (
            await self._session.execute(
                sa.select(documents, *_version_columns())
                .join(
                    document_versions,
                    sa.and_(_versions.document_id == _docs.id, _versions.version == _docs.current_version),
                )
                .where(*conditions)
                .order_by(_docs.created_at.desc(), _docs.id)
                .limit(page.page_size)
                .offset(page.offset)
            )
        ).mappings()
        return [_document(row, [_version(row, prefix="v_")]) for row in rows], int(total or 0)

    async def in_submission(self, principal: Principal, submission_id: str) -> list[SubmissionDocument]:
        """The submission's documents the caller may read, with who signed each."""
        rows = (
            await self._session.execute(
                sa.select(_docs.id, _docs.organization_id, _docs.document_type, _docs.status, _docs.created_at)
                .where(visible_to(principal), _docs.submission_id == submission_id)
            )
        ).all()
        signed = await self.signing_organizations([(str(r.id), str(r.organization_id), r.status) for r in rows])
        return [
            SubmissionDocument(
                id=str(r.id),
                organization_id=str(r.organization_id),
                document_type=DocumentType(r.document_type),
                status=DocumentStatus(r.status),
                created_at=r.created_at,
                signed_by=signed.get(str(r.id), frozenset()),
            )
            for r in rows
        ]

    async def signing_organizations(
        self, found: Sequence[tuple[str, str, str]]
    ) -> dict[str, frozenset[str]]:
        """Document id → the organizations that signed it, for (id, organization id, status) triples:
        the organizations of the signers of its signed version (signature tables); a SIGNED document
        without signature records counts as signed by its own organization."""
        signed = [(d, o) for d, o, status in found if status == DocumentStatus.SIGNED.value]
        by_signers = await SignatureRepository(self._session).signing_organizations([d for d, _ in signed])
        return {document_id: by_signers.get(document_id) or frozenset({organization_id})
                for document_id, organization_id in signed}

    async def due_for_expiry(self, today: date, limit: int) -> list[str]:
        """Ids of documents past their last valid day and not yet EXPIRED or ARCHIVED, locked for this
        transaction; rows another transaction holds are skipped (two sweeping replicas split the work)."""
        rows = await self._session.scalars(
            sa.select(_docs.id)
            .where(
                _docs.expires_on.is_not(None),
                _docs.expires_on < today,
                _docs.status.not_in([DocumentStatus.EXPIRED.value, DocumentStatus.ARCHIVED.value]),
            )
            .order_by(_docs.expires_on, _docs.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [str(document_id) for document_id in rows]

    async def due_for_expiry_warning(self, today: date, days: int, marker: str, limit: int) -> list[Document]:
        """Documents whose last valid day is within `days` from `today`, not EXPIRED or ARCHIVED, and not
        yet announced for that day (the `marker` consumer's processed-events row, keyed
        "<document id>:<expires_on>", says so; a changed expiry date is announced again)."""
        announced = processed_events_table(SCHEMA)
        key = sa.cast(_docs.id, sa.Text) + ":" + sa.cast(_docs.expires_on, sa.Text)
        ids = await self._session.scalars(
            sa.select(_docs.id)
            .where(
                _docs.expires_on.is_not(None),
                _docs.expires_on >= today,
                _docs.expires_on <= today + timedelta(days=days),
                _docs.status.not_in([DocumentStatus.EXPIRED.value, DocumentStatus.ARCHIVED.value]),
                ~sa.exists().where(announced.c.consumer == marker, announced.c.event_id == key),
            )
            .order_by(_docs.expires_on, _docs.id)
            .limit(limit)
        )
        found = [await self.get_any(str(document_id)) for document_id in ids]
        return [document for document in found if document is not None]

    # -- shares ------------------------------------------------------------------------------------------

    async def share(self, share: Share, shared_by: str) -> bool:
        """True when the share is new (False: it existed already)."""
        result = await self._session.execute(
            pg_insert(submission_shares)
            .values(
                submission_id=share.submission_id,
                owner_organization_id=share.owner_organization_id,
                cro_organization_id=share.cro_organization_id,
                shared_by=shared_by,
            )
            .on_conflict_do_nothing()
            .returning(_shares.submission_id)
        )
        return result.first() is not None

    async def unshare(self, share: Share) -> bool:
        """True when a share was removed."""
        result = await self._session.execute(
            sa.delete(submission_shares).where(
                _shares.submission_id == share.submission_id,
                _shares.owner_organization_id == share.owner_organization_id,
                _shares.cro_organization_id == share.cro_organization_id,
            ).returning(_shares.submission_id)
        )
        return result.first() is not None

    async def share_of(self, submission_id: str, organization_id: str | None) -> Share | None:
        """The share of the submission that involves the organization, on either side (None: any)."""
        condition: sa.ColumnElement[bool] = sa.true()
        if organization_id is not None:
            organization = canonical_uuid(organization_id)
            if organization is None:
                return None
            condition = sa.or_(
                _shares.owner_organization_id == organization, _shares.cro_organization_id == organization
            )
        row = (
            await self._session.execute(
                sa.select(submission_shares)
                .where(_shares.submission_id == submission_id, condition)
                .order_by(_shares.created_at.desc())
                .limit(1)
            )
        ).mappings().first()
        if row is None:
            return None
        return Share(row["submission_id"], str(row["owner_organization_id"]), str(row["cro_organization_id"]))

    async def count_in_submission(self, submission_id: str, organization_id: str) -> int:
        """How many documents the organization has in the submission (archived ones included)."""
        return int(
            await self._session.scalar(
                sa.select(sa.func.count())
                .select_from(documents)
                .where(_docs.submission_id == submission_id, _docs.organization_id == organization_id)
            )
            or 0
        )


# -- rows ↔ aggregate -------------------------------------------------------------------------------------

_VERSION_FIELDS = ("version", "filename", "content_type", "size_bytes", "sha256", "origin", "signed",
                   "object_key", "created_by", "created_at")


def _version_columns() -> list[sa.Label[Any]]:
    return [document_versions.c[name].label(f"v_{name}") for name in _VERSION_FIELDS]


def _version(row: Any, *, prefix: str = "") -> Version:
    return Version(
        version=row[f"{prefix}version"],
        filename=row[f"{prefix}filename"],
        content_type=row[f"{prefix}content_type"],
        size_bytes=row[f"{prefix}size_bytes"],
        sha256=row[f"{prefix}sha256"],
        origin=VersionOrigin(row[f"{prefix}origin"]),
        object_key=row[f"{prefix}object_key"],
        created_by=row[f"{prefix}created_by"],
        signed=row[f"{prefix}signed"],
        created_at=row[f"{prefix}created_at"],
    )


def _document(row: Any, versions: list[Version]) -> Document:
    return Document(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        document_type=DocumentType(row["document_type"]),
        title=row["title"],
        status=DocumentStatus(row["status"]),
        created_by=row["created_by"],
        submission_id=row["submission_id"],
        description=row["description"],
        expires_on=row["expires_on"],
        template=row["template"],
        versions=versions,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _document_values(document: Document) -> dict[str, Any]:
    return {
        "organization_id": document.organization_id,
        "submission_id": document.submission_id,
        "document_type": document.document_type.value,
        "title": document.title,
        "description": document.description,
        "status": document.status.value,
        "current_version": document.current_version,
        "expires_on": document.expires_on,
        "template": document.template,
        "created_by": document.created_by,
    }


def _version_values(document_id: str, version: Version) -> dict[str, Any]:
    return {
        "document_id": document_id,
        "version": version.version,
        "filename": version.filename,
        "content_type": version.content_type,
        "size_bytes": version.size_bytes,
        "sha256": version.sha256,
        "origin": version.origin.value,
        "signed": version.signed,
        "object_key": version.object_key,
        "created_by": version.created_by,
    }

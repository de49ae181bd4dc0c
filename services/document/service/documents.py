"""Document use cases (service layer, no protos): upload, list, read, change, delete, download,
requirements, sharing with a submission's CRO, the expiry sweep, generation from templates.

Each use case checks the caller's role, loads through the repository (which only finds what the
caller may see: another organization's document is a 404), asks the domain, saves, and records its
events in the same transaction: `AuditRecorded` for every create/version/change, and
`DocumentStatusChanged` for every status move.

Uploads stream from the gateway to object storage: the body is never held whole (the first 64 KiB for
the content check, and what the storage buffers for one S3 part). The text fields of a form come
before its `file` part, so everything about the target document is checked before a byte is stored.

The signature service builds on the public helpers at the end: `store_bytes` (a file made here: a
sealed PDF, DocuSign's completed document), `record_status_change` and `record_audit`, and on the
repository (`uow.documents.get(principal, id, lock=True)`, `.get_any(id)`, `.save(document)`).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from molbridge.events.v1.document_pb2 import DocumentExpiring, DocumentStatusChanged

from services.document.domain import content
from services.document.domain.documents import (
    Document,
    StatusChange,
    StoredFile,
    check_submission_id,
    optional_date,
    parse_status,
    parse_type,
)
from services.document.domain.requirements import Requirements, requirements
from services.document.domain.vocabulary import DOCUMENT_READERS, DOCUMENT_WRITERS, DocumentType, VersionOrigin
from services.document.service.ports import MoleculeRow, TemplateInfo, TemplateRenderer
from services.document.store.documents import DocumentFilter, Share
from services.document.store.uow import DocumentTransactions, DocumentUnitOfWork
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid
from services.runtime.errors import (
    AuthorizationError,
    IntegrationError,
    NotFoundError,
    ValidationError,
)
from services.runtime.multipart import (
    PartEnd,
    PartStart,
    RawFile,
    UploadedFile,
    boundary_of,
    clean_filename,
    header_params,
    parse_stream,
)
from services.runtime.pagination import PageRequest
from services.runtime.storage import MIB, ObjectStorage

DEFAULT_MAX_BYTES = 50 * MIB
DEFAULT_LINK_SECONDS = 300
DEFAULT_FILENAME = "document"
READ_CHUNK = 256 * 1024  # download messages (the gateway streams each one on)
EXPIRY_BATCH = 100
EXPIRY_WARNING_DAYS = 30  # DocumentExpiring this many days before a document's last valid day
EXPIRY_WARNING = "expiry-warning"  # the processed-events marker of an announced (document, expiry date)
SYSTEM_ACTOR = "system:document"  # who the expiry sweep acts as, in events
SHARERS = ("pharma_scientist",)  # who may share their organization's documents of a submission

MULTIPART = "multipart/form-data"
FILE_FIELD = "file"
MAX_FIELD_BYTES = 16 * 1024
# The upload's text fields: form field → raw-body header.
FIELD_HEADERS = {
    "document_type": "x-document-type",
    "title": "x-document-title",
    "description": "x-document-description",
    "submission_id": "x-submission-id",
    "expires_on": "x-expires-on",
    "document_id": "x-document-id",
}


@dataclass(frozen=True)
class DocumentLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    link_seconds: int = DEFAULT_LINK_SECONDS


@dataclass(frozen=True)
class Target:
    """Where a file goes: a new document (these values) or a new version of `document_id`."""

    document_id: str = ""
    document_type: DocumentType | None = None
    title: str = ""
    description: str = ""
    submission_id: str = ""
    expires_on: date | None = None


@dataclass(frozen=True)
class Download:
    filename: str
    content_type: str
    size_bytes: int
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class DownloadLink:
    url: str
    expires_at: datetime | None  # None: the API route, valid as long as the caller's token


@dataclass(frozen=True)
class GenerateRequest:
    template: str
    fields: Mapping[str, str] = field(default_factory=dict)
    molecules: Sequence[MoleculeRow] = ()
    submission_id: str = ""
    title: str = ""
    expires_on: str = ""
    document_id: str = ""


def utcnow() -> datetime:
    return datetime.now(UTC)


class DocumentService:
    def __init__(
        self,
        uow: DocumentTransactions,
        storage: ObjectStorage,
        *,
        limits: DocumentLimits | None = None,
        public_url: str = "",
        templates: TemplateRenderer | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._uow = uow
        self.storage = storage
        self.limits = limits or DocumentLimits()
        self._public_url = public_url.rstrip("/")
        self._templates = templates
        self._clock = clock

    # -- upload ------------------------------------------------------------------------------------------

    async def upload(
        self,
        principal: Principal,
        content_type: str,
        chunks: AsyncIterator[bytes],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Document:
        """A new document, or a new version of one, from a multipart/form-data body (text fields, then
        `file`) or a raw body (fields in x-document-* headers, its name in content-disposition)."""
        principal.require_any_role(*DOCUMENT_WRITERS)
        headers = headers or {}
        body: UploadedFile
        if content_type.split(";", 1)[0].strip().lower() == MULTIPART:
            body = _MultipartUpload(boundary_of(content_type), chunks)
            values = await body.fields()
        else:
            filename = header_params("content-disposition", headers.get("content-disposition", "")).get_filename()
            body = RawFile(chunks, clean_filename(filename, DEFAULT_FILENAME))
            values = {name: headers.get(header, "") for name, header in FIELD_HEADERS.items()}
        target = _target(values)
        if target.document_id:  # refuse a version the document cannot take before storing anything
            async with self._uow() as uow:
                self._check_versionable(principal, await uow.documents.get(principal, target.document_id))
        stored = await self._store(principal.organization_id, body.content(), body.filename)
        try:
            await body.finish()
            async with self._uow() as uow:
                return await self._keep_file(uow, principal, target, stored, VersionOrigin.UPLOAD)
        except BaseException:
            await asyncio.shield(self.storage.delete(stored.object_key))
            raise

    async def store_bytes(self, organization_id: str, data: bytes, filename: str) -> StoredFile:
        """A file made by the service (a generated or sealed PDF, DocuSign's completed document) in object
        storage, checked and hashed like an upload; becomes a version through the domain."""
        return await self._store(organization_id, _once(data), filename)

    async def _store(self, organization_id: str, chunks: AsyncIterator[bytes], filename: str) -> StoredFile:
        sniffer = content.ContentSniffer()
        digest = hashlib.sha256()

        async def checked() -> AsyncIterator[bytes]:
            held: list[bytes] | None = []  # until the head is known good, nothing reaches storage
            async for chunk in chunks:
                sniffer.feed(chunk)
                digest.update(chunk)
                if held is None:
                    yield chunk
                    continue
                held.append(chunk)
                if len(sniffer.head) >= content.HEAD_BYTES:
                    sniffer.check_head()
                    for piece in held:
                        yield piece
                    held = None
            if held is not None:
                sniffer.check_head()
                for piece in held:
                    yield piece

        object_key = f"documents/{organization_id}/{uuid.uuid4().hex}"
        size = await self.storage.put_stream(object_key, checked(), max_bytes=self.limits.max_bytes)
        try:
            media_type = sniffer.media_type()
        except BaseException:
            await asyncio.shield(self.storage.delete(object_key))
            raise
        return StoredFile(object_key, filename, media_type, size, digest.hexdigest())

    async def _keep_file(
        self,
        uow: DocumentUnitOfWork,
        principal: Principal,
        target: Target,
        stored: StoredFile,
        origin: VersionOrigin,
        *,
        template: str = "",
    ) -> Document:
        """The stored file as a new document or as the next version of `target.document_id`."""
        details = {"version": "", "sha256": stored.sha256, "origin": origin.value, "content_type": stored.content_type}
        if target.document_id:
            document = await uow.documents.get(principal, target.document_id, lock=True)
            self._require_owner(principal, document)
            change = document.add_version(stored, principal.subject, origin, template=template)
            document = await uow.documents.save(document)
            details["version"] = str(document.current_version)
            record_audit(uow, "document.version_added", document, principal, details)
        else:
            assert target.document_type is not None  # _target requires it for a new document
            document, change = Document.create(
                organization_id=principal.organization_id,
                document_type=target.document_type,
                title=target.title or stored.filename,
                file=stored,
                created_by=principal.subject,
                origin=origin,
                submission_id=target.submission_id,
                description=target.description,
                expires_on=target.expires_on,
                template=template,
            )
            document = await uow.documents.add(document)
            record_audit(uow, "document.created", document, principal, {**details, "version": "1"})
        if change is not None:
            record_status_change(uow, document, change, actor=principal)
        return document

    # -- reading -----------------------------------------------------------------------------------------

    async def list_documents(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        document_type: str = "",
        status: str = "",
        submission_id: str = "",
        include_deleted: bool = False,
    ) -> tuple[list[Document], int]:
        """The caller's organization's documents and those shared with it, newest first."""
        principal.require_any_role(*DOCUMENT_READERS)
        where = DocumentFilter(
            document_type=parse_type(document_type) if document_type else None,
            status=parse_status(status) if status else None,
            submission_id=check_submission_id(submission_id),
            include_deleted=include_deleted,
        )
        async with self._uow() as uow:
            return await uow.documents.find(principal, where, page)

    async def get(self, principal: Principal, document_id: str) -> Document:
        principal.require_any_role(*DOCUMENT_READERS)
        async with self._uow() as uow:
            return await uow.documents.get(principal, document_id)

    async def download(self, principal: Principal, document_id: str, version: int = 0) -> Download:
        """The file of a version (0: the current one) as a stream, opened before answering so a
        missing object is an error, not a cut response."""
        found = (await self.get(principal, document_id)).version(version)
        reader = await asyncio.to_thread(self.storage.open_reader, found.object_key)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while chunk := await asyncio.to_thread(reader.read, READ_CHUNK):
                    yield chunk
            finally:
                await asyncio.to_thread(reader.close)

        return Download(found.filename, found.content_type, found.size_bytes, chunks())

    async def download_link(self, principal: Principal, document_id: str, version: int = 0) -> DownloadLink:
        """A presigned URL when the storage signs them (S3), else the download route."""
        document = await self.get(principal, document_id)
        found = document.version(version)
        seconds = self.limits.link_seconds
        url = await self.storage.presigned_url(
            found.object_key, seconds, download_name=found.filename, content_type=found.content_type
        )
        if url is None:
            return DownloadLink(
                f"{self._public_url}/api/v1/documents/{document.id}/download?version={found.version}", None
            )
        return DownloadLink(url, self._clock() + timedelta(seconds=seconds))

    # -- changes -----------------------------------------------------------------------------------------

    async def update(
        self, principal: Principal, document_id: str, *, title: str = "", description: str = "", expires_on: str = ""
    ) -> Document:
        principal.require_any_role(*DOCUMENT_WRITERS)
        async with self._uow() as uow:
            document = await uow.documents.get(principal, document_id, lock=True)
            self._require_owner(principal, document)
            changed = document.update(title=title, description=description, expires_on=expires_on)
            if not changed:
                return document
            document = await uow.documents.save(document)
            record_audit(uow, "document.updated", document, principal, {"fields": ",".join(changed)})
            return document

    async def delete(self, principal: Principal, document_id: str) -> Document:
        """Soft delete: ARCHIVED, kept; refused for a signed document or one out for signature."""
        principal.require_any_role(*DOCUMENT_WRITERS)
        async with self._uow() as uow:
            document = await uow.documents.get(principal, document_id, lock=True)
            self._require_owner(principal, document)
            change = document.archive()
            if change is None:
                return document
            document = await uow.documents.save(document)
            record_audit(uow, "document.archived", document, principal)
            record_status_change(uow, document, change, actor=principal)
            return document

    async def expire_due(self, today: date | None = None, *, batch: int = EXPIRY_BATCH) -> int:
        """Marks EXPIRED every document past its last valid day; answers how many. Idempotent, and safe
        with several replicas sweeping at once (each locks the rows it takes, skipping the others')."""
        today = today or self._clock().date()
        expired = 0
        while True:
            async with self._uow() as uow:
                due = await uow.documents.due_for_expiry(today, batch)
                for document_id in due:
                    document = await uow.documents.get_any(document_id)
                    change = document.expire(today) if document is not None else None
                    if document is None or change is None:
                        continue
                    document = await uow.documents.save(document)
                    details = {"expires_on": str(document.expires_on)}
                    record_audit(uow, "document.expired", document, None, details, actor_id=SYSTEM_ACTOR)
                    record_status_change(uow, document, change, actor_id=SYSTEM_ACTOR)
                    expired += 1
            if len(due) < batch:
                return expired

    async def warn_expiring(self, today: date | None = None, *, batch: int = EXPIRY_BATCH) -> int:
        """DocumentExpiring once per document and expiry date, EXPIRY_WARNING_DAYS ahead (notifications tell
        the owner's admins); answers how many were announced. The marker commits with the event."""
        today = today or self._clock().date()
        announced = 0
        while True:
            async with self._uow() as uow:
                due = await uow.documents.due_for_expiry_warning(today, EXPIRY_WARNING_DAYS, EXPIRY_WARNING, batch)
                for document in due:
                    assert document.expires_on is not None  # selected for it
                    if not await uow.first_delivery(EXPIRY_WARNING, f"{document.id}:{document.expires_on}"):
                        continue  # another replica announced it meanwhile
                    event = DocumentExpiring(
                        document_id=document.id,
                        organization_id=document.organization_id,
                        submission_id=document.submission_id,
                        document_type=document.document_type.value,
                        title=document.title,
                        expires_on=str(document.expires_on),
                        days_left=(document.expires_on - today).days,
                    )
                    uow.record(event, organization_id=document.organization_id, actor_id=SYSTEM_ACTOR)
                    announced += 1
            if len(due) < batch:
                return announced

    async def sweep_expired_forever(self, interval_s: float) -> None:
        """The expiry sweep as a background job: now, then every `interval_s` seconds."""
        while True:
            await self.expire_due()
            await self.warn_expiring()
            await asyncio.sleep(interval_s)

    # -- submissions -------------------------------------------------------------------------------------

    async def requirements(
        self, principal: Principal, submission_id: str, service_type: str, *, include_service_agreement: bool = False
    ) -> Requirements:
        """Which documents the submission needs for the service type, which are present and signed."""
        principal.require_any_role(*DOCUMENT_READERS)
        submission_id = _required_submission(submission_id)
        async with self._uow() as uow:
            found = await uow.documents.in_submission(principal, submission_id)
            share = await uow.documents.share_of(
                submission_id, None if principal.is_system_admin else principal.organization_id
            )
        if share is not None:
            owner, counterparty = share.owner_organization_id, share.cro_organization_id
        else:  # not shared yet: the caller's organization is the owner (an admin: the documents')
            owner = found[0].organization_id if principal.is_system_admin and found else principal.organization_id
            counterparty = ""
        return requirements(
            submission_id,
            service_type,
            found,
            owner_organization_id=owner,
            counterparty_organization_id=counterparty,
            include_service_agreement=include_service_agreement,
        )

    async def share_submission(
        self,
        principal: Principal,
        submission_id: str,
        owner_organization_id: str,
        cro_organization_id: str,
        *,
        shared: bool,
    ) -> int:
        """Lets the CRO organization read (and sign) the owner's documents of the submission, and the owner
        read the CRO's, or takes that away. Answers how many of the owner's documents it concerns."""
        share = _checked_share(submission_id, owner_organization_id, cro_organization_id)
        if not principal.is_system_admin and not (
            principal.organization_id == share.owner_organization_id and principal.has_any_role(*SHARERS)
        ):
            raise AuthorizationError(
                "only a pharma scientist of the owner organization may share its documents",
                detail="NOT_DOCUMENT_OWNER",
            )
        async with self._uow() as uow:
            return await _apply_share(uow, share, shared=shared, actor_id=principal.subject)

    async def share_submitted(
        self,
        submission_id: str,
        owner_organization_id: str,
        cro_organization_id: str,
        *,
        event_id: str,
        consumer: str,
        submitted_by: str = "",
    ) -> int | None:
        """The platform's own share when a submission is SUBMITTED to its CRO (a SubmissionTransitioned
        event, no caller): the effect of ShareSubmissionDocuments(shared=true), once per event (None: this
        event was handled before). Nobody's role is checked: the CRO service's SUBMIT checked the submitter."""
        share = _checked_share(submission_id, owner_organization_id, cro_organization_id)
        async with self._uow() as uow:
            if not await uow.first_delivery(consumer, event_id):
                return None
            details = {"submitted_by": submitted_by} if submitted_by else {}
            return await _apply_share(uow, share, shared=True, actor_id=SYSTEM_ACTOR, details=details)

    # -- generation --------------------------------------------------------------------------------------

    def templates(self, principal: Principal) -> Sequence[TemplateInfo]:
        principal.require_any_role(*DOCUMENT_READERS)
        return self._renderer().templates()

    async def preview(self, principal: Principal, name: str) -> bytes:
        """The template as PDF with sample values; nothing is stored."""
        principal.require_any_role(*DOCUMENT_READERS)
        return await asyncio.to_thread(self._renderer().preview, name)

    async def generate(self, principal: Principal, request: GenerateRequest) -> Document:
        """Renders the template into a PDF/A stored as a new document (or a version of `document_id`)
        with origin "generated" and `template` set."""
        principal.require_any_role(*DOCUMENT_WRITERS)
        renderer = self._renderer()
        info = next((t for t in renderer.templates() if t.name == request.template), None)
        if info is None:
            raise NotFoundError(f"template {request.template[:100]!r} not found", detail="TEMPLATE_NOT_FOUND")
        # Default title: the template's and the other side's name (the CRO's for a pharma, and back).
        other_side = request.fields.get(
            "pharma_organization" if principal.organization_kind == "CRO" else "cro_organization", ""
        )
        target = _target(
            {
                "document_type": info.document_type.value,
                "title": request.title or (f"{info.title} — {other_side}" if other_side.strip() else info.title),
                "submission_id": request.submission_id or request.fields.get("submission_id", ""),
                "expires_on": request.expires_on,
                "document_id": request.document_id,
            }
        )
        if target.document_id:
            async with self._uow() as uow:
                self._check_versionable(principal, await uow.documents.get(principal, target.document_id))
        pdf = await asyncio.to_thread(renderer.render, request.template, dict(request.fields), list(request.molecules))
        stored = await self.store_bytes(principal.organization_id, pdf, f"{request.template}.pdf")
        try:
            async with self._uow() as uow:
                return await self._keep_file(
                    uow, principal, target, stored, VersionOrigin.GENERATED, template=request.template
                )
        except BaseException:
            await asyncio.shield(self.storage.delete(stored.object_key))
            raise

    def _renderer(self) -> TemplateRenderer:
        if self._templates is None:
            raise IntegrationError("document templates are not configured", detail="TEMPLATES_UNAVAILABLE")
        return self._templates

    # -- helpers -----------------------------------------------------------------------------------------

    def _require_owner(self, principal: Principal, document: Document) -> None:
        """A document shared through a submission is read, never changed, by the other side."""
        if not principal.can_see_organization(document.organization_id):
            raise AuthorizationError(
                "only the organization that owns the document may change it", detail="NOT_DOCUMENT_OWNER"
            )

    def _check_versionable(self, principal: Principal, document: Document) -> None:
        self._require_owner(principal, document)
        document.check_versionable()


# -- events (also used by the signature service) ------------------------------------------------------



def record_audit(
    uow: DocumentUnitOfWork,
    action: str,
    document: Document,
    actor: Principal | None,
    details: Mapping[str, str] | None = None,
    *,
    organization_id: str | None = None,
    actor_id: str | None = None,
) -> str:
    """`AuditRecorded` about a document (e.g. "document.created"), in the document's organization."""
    event = audit_event(
        action,
        target_type="document",
        target_id=document.id,
        details={
            "document_type": document.document_type.value,
            "status": document.status.value,
            # names the submission, so the submission's audit history lists its documents and signatures
            **({"submission_id": document.submission_id} if document.submission_id else {}),
            **(details or {}),
        },
    )
    return uow.record(
        event,
        organization_id=organization_id or document.organization_id,
        actor_id=actor_id if actor_id is not None else (actor.subject if actor else ""),
    )


def record_status_change(
    uow: DocumentUnitOfWork,
    document: Document,
    change: StatusChange,
    *,
    actor: Principal | None = None,
    organization_id: str | None = None,
    actor_id: str | None = None,
) -> str:
    """`DocumentStatusChanged` for a move the domain made."""
    event = DocumentStatusChanged(
        document_id=document.id,
        organization_id=document.organization_id,
        submission_id=document.submission_id,
        document_type=document.document_type.value,
        from_status=change.from_status.value if change.from_status else "",
        to_status=change.to_status.value,
        version=document.current_version,
    )
    return uow.record(
        event,
        organization_id=organization_id or document.organization_id,
        actor_id=actor_id if actor_id is not None else (actor.subject if actor else ""),
    )


# -- the upload's parts -----------------------------------------------------------------------------------


def _target(values: Mapping[str, str]) -> Target:
    """The upload's or generation's text values, checked (a version needs only `document_id`)."""
    document_id = values.get("document_id", "").strip()
    if document_id:
        if canonical_uuid(document_id) is None:
            problem = f"{document_id!r} is not a document id"
            raise ValidationError(f"document_id: {problem}", field_violations=[("document_id", problem)])
        return Target(document_id=document_id)
    return Target(
        document_type=parse_type(values.get("document_type", "")),
        title=values.get("title", "").strip(),
        description=values.get("description", ""),
        submission_id=check_submission_id(values.get("submission_id", "")),
        expires_on=optional_date(values.get("expires_on", "")),
    )


def _checked_share(submission_id: str, owner_organization_id: str, cro_organization_id: str) -> Share:
    submission_id = _required_submission(submission_id)
    owner = _organization(owner_organization_id, "owner_organization_id")
    cro = _organization(cro_organization_id, "cro_organization_id")
    if owner == cro:
        raise ValidationError(
            "the CRO organization must differ from the owner",
            field_violations=[("cro_organization_id", "must differ from owner_organization_id")],
        )
    return Share(submission_id, owner, cro)


async def _apply_share(
    uow: DocumentUnitOfWork, share: Share, *, shared: bool, actor_id: str, details: Mapping[str, str] | None = None
) -> int:
    """Shares (or unshares) and records "document.shared"/"document.unshared" when that changed anything (the
    CRO service's call at SUBMIT and the SubmissionTransitioned event both share); answers the owner's
    documents."""
    changed = await (uow.documents.share(share, actor_id) if shared else uow.documents.unshare(share))
    count = await uow.documents.count_in_submission(share.submission_id, share.owner_organization_id)
    if not changed:
        return count
    uow.record(
        audit_event(
            "document.shared" if shared else "document.unshared",
            target_type="submission",
            target_id=share.submission_id,
            details={
                "owner_organization_id": share.owner_organization_id,
                "cro_organization_id": share.cro_organization_id,
                "documents": str(count),
                **(details or {}),
            },
        ),
        organization_id=share.owner_organization_id,
        actor_id=actor_id,
    )
    return count


def _required_submission(submission_id: str) -> str:
    value = check_submission_id(submission_id)
    if not value:
        raise ValidationError("submission_id: required", field_violations=[("submission_id", "required")])
    return value


def _organization(value: str, field_name: str) -> str:
    organization = canonical_uuid(value)
    if organization is None:
        problem = "required" if not value else f"{value!r} is not an organization id"
        raise ValidationError(f"{field_name}: {problem}", field_violations=[(field_name, problem)])
    return organization


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class _MultipartUpload(UploadedFile):
    """The text fields (read first, bounded), then the `file` part streamed; nothing may follow it."""

    def __init__(self, boundary: str, chunks: AsyncIterator[bytes]) -> None:
        self._events = parse_stream(boundary, chunks)
        self.filename = DEFAULT_FILENAME

    async def fields(self) -> dict[str, str]:
        values: dict[str, str] = {}
        name, value = "", bytearray()
        async for event in self._events:
            if isinstance(event, PartStart):
                if event.name == FILE_FIELD:
                    self.filename = clean_filename(event.filename, DEFAULT_FILENAME)
                    return values
                if event.name not in FIELD_HEADERS:
                    problem = f"unknown form field; send {', '.join(FIELD_HEADERS)} and then {FILE_FIELD}"
                    raise ValidationError(f"{event.name}: {problem}", field_violations=[(event.name, problem)])
                name, value = event.name, bytearray()
            elif isinstance(event, PartEnd):
                values[name] = value.decode("utf-8", "replace")
            else:
                value += event
                if len(value) > MAX_FIELD_BYTES:
                    problem = f"at most {MAX_FIELD_BYTES:,} bytes"
                    raise ValidationError(f"{name}: {problem}", field_violations=[(name, problem)])
        raise ValidationError(
            f'the form has no field named "{FILE_FIELD}"',
            detail="MISSING_FILE",
            field_violations=[(FILE_FIELD, "required")],
        )

    async def content(self) -> AsyncIterator[bytes]:
        async for event in self._events:
            if isinstance(event, PartEnd):
                return
            if isinstance(event, bytes):
                yield event

    async def finish(self) -> None:
        async for event in self._events:
            if isinstance(event, PartStart):
                problem = f'form fields come before the "{FILE_FIELD}" part'
                raise ValidationError(f"{event.name}: {problem}", field_violations=[(event.name, problem)])

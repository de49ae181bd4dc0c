"""The document aggregate: a document of an organization and its stored versions, with the rules of
its status (DOMAIN.md "Documents"). Pure: no I/O, no grpc.

A change that moves the status answers a `StatusChange` (the use case records the events); a rule
that forbids the change raises the domain error the caller sees.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime

from services.document.domain.vocabulary import (
    SIGNATURE_REQUIRED,
    DocumentStatus,
    DocumentType,
    VersionOrigin,
)
from services.runtime.errors import NotFoundError, PreconditionError, ValidationError

MAX_TITLE = 300
MAX_DESCRIPTION = 4000
MAX_SUBMISSION_ID = 100
NO_EXPIRY = "none"  # UpdateDocument's word for "remove the expiry date"

# A new file may replace the current one only while the document is not signed, out for signature
# or archived; a version added to a REJECTED or EXPIRED document makes it a DRAFT again.
VERSIONABLE = frozenset({DocumentStatus.DRAFT, DocumentStatus.REJECTED, DocumentStatus.EXPIRED})
# Soft delete is refused for these (records of signatures are kept 7 years).
UNDELETABLE = frozenset({DocumentStatus.SIGNED, DocumentStatus.PENDING_SIGNATURE})
# Every status move a rule may make; ARCHIVED is final.
TRANSITIONS: dict[DocumentStatus, frozenset[DocumentStatus]] = {
    DocumentStatus.DRAFT: frozenset(
        {DocumentStatus.PENDING_SIGNATURE, DocumentStatus.EXPIRED, DocumentStatus.ARCHIVED}
    ),
    DocumentStatus.PENDING_SIGNATURE: frozenset(
        {DocumentStatus.SIGNED, DocumentStatus.REJECTED, DocumentStatus.DRAFT, DocumentStatus.EXPIRED}
    ),
    DocumentStatus.SIGNED: frozenset({DocumentStatus.EXPIRED}),
    DocumentStatus.REJECTED: frozenset(
        {DocumentStatus.DRAFT, DocumentStatus.PENDING_SIGNATURE, DocumentStatus.EXPIRED, DocumentStatus.ARCHIVED}
    ),
    DocumentStatus.EXPIRED: frozenset({DocumentStatus.DRAFT, DocumentStatus.ARCHIVED}),
    DocumentStatus.ARCHIVED: frozenset(),
}


@dataclass(frozen=True)
class StatusChange:
    """A status move a rule made; `from_status` is None when the document was just created."""

    from_status: DocumentStatus | None
    to_status: DocumentStatus


@dataclass(frozen=True)
class StoredFile:
    """A file already in object storage, about to become a version."""

    object_key: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Version:
    version: int
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    origin: VersionOrigin
    object_key: str
    created_by: str
    signed: bool = False  # a signed version never changes (nothing here can alter a Version)
    created_at: datetime | None = None  # set by the database

    @classmethod
    def of(
        cls, number: int, file: StoredFile, origin: VersionOrigin, created_by: str, *, signed: bool = False
    ) -> Version:
        return cls(
            version=number,
            filename=file.filename,
            content_type=file.content_type,
            size_bytes=file.size_bytes,
            sha256=file.sha256,
            origin=origin,
            object_key=file.object_key,
            created_by=created_by,
            signed=signed,
        )


@dataclass
class Document:
    id: str
    organization_id: str
    document_type: DocumentType
    title: str
    status: DocumentStatus
    created_by: str
    submission_id: str = ""
    description: str = ""
    expires_on: date | None = None
    template: str = ""
    versions: list[Version] = field(default_factory=list)  # oldest first
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def create(
        cls,
        *,
        organization_id: str,
        document_type: DocumentType,
        title: str,
        file: StoredFile,
        created_by: str,
        origin: VersionOrigin = VersionOrigin.UPLOAD,
        submission_id: str = "",
        description: str = "",
        expires_on: date | None = None,
        template: str = "",
        document_id: str | None = None,
    ) -> tuple[Document, StatusChange]:
        document = cls(
            id=document_id or str(uuid.uuid4()),
            organization_id=organization_id,
            document_type=document_type,
            title=check_title(title),
            status=DocumentStatus.DRAFT,
            created_by=created_by,
            submission_id=check_submission_id(submission_id),
            description=check_description(description),
            expires_on=expires_on,
            template=template,
            versions=[Version.of(1, file, origin, created_by)],
        )
        return document, StatusChange(None, DocumentStatus.DRAFT)

    # -- reading --------------------------------------------------------------------------------------

    @property
    def signature_required(self) -> bool:
        return self.document_type in SIGNATURE_REQUIRED

    @property
    def current_version(self) -> int:
        return len(self.versions)

    @property
    def current(self) -> Version:
        return self.versions[-1]

    def version(self, number: int = 0) -> Version:
        """Version `number`, or the current one for 0."""
        if number == 0:
            return self.current
        if 1 <= number <= len(self.versions):
            return self.versions[number - 1]
        raise NotFoundError(
            f"document {self.id} has no version {number} (versions 1 to {len(self.versions)})",
            detail="VERSION_NOT_FOUND",
        )

    def is_expired_on(self, today: date) -> bool:
        """`expires_on` is the last valid day."""
        return self.expires_on is not None and today > self.expires_on

    # -- changes ----------------------------------------------------------------------------------------

    def add_version(
        self, file: StoredFile, created_by: str, origin: VersionOrigin = VersionOrigin.UPLOAD, *, template: str = ""
    ) -> StatusChange | None:
        """A new file; the document becomes a DRAFT again if it was REJECTED or EXPIRED."""
        self.check_versionable()
        self.versions.append(Version.of(self.current_version + 1, file, origin, created_by))
        if template:
            self.template = template
        if self.status is not DocumentStatus.DRAFT:
            return self._move(DocumentStatus.DRAFT)
        return None

    def check_versionable(self) -> None:
        """A new file is refused once the document is signed, out for signature or archived."""
        if self.status not in VERSIONABLE:
            raise PreconditionError(
                f"a {self.status} document cannot take a new version: only DRAFT, REJECTED or EXPIRED "
                "documents can (upload a new document instead)",
                detail="DOCUMENT_STATE",
                metadata={"status": self.status.value},
            )

    def add_signed_version(self, file: StoredFile, created_by: str, origin: VersionOrigin) -> StatusChange:
        """The completed signature's file (signature page and seal, or DocuSign's): an immutable version,
        and the document SIGNED. Only a document out for signature can be completed."""
        if self.status is not DocumentStatus.PENDING_SIGNATURE:
            raise PreconditionError(
                f"a {self.status} document cannot be completed as signed: only PENDING_SIGNATURE can",
                detail="DOCUMENT_STATE",
                metadata={"status": self.status.value},
            )
        self.versions.append(Version.of(self.current_version + 1, file, origin, created_by, signed=True))
        return self._move(DocumentStatus.SIGNED)

    def change_status(self, to: DocumentStatus) -> StatusChange | None:
        """Any allowed move (the signature flow uses it: PENDING_SIGNATURE, back to DRAFT, REJECTED);
        None when already there."""
        if to is self.status:
            return None
        if to not in TRANSITIONS[self.status]:
            allowed = ", ".join(sorted(TRANSITIONS[self.status])) or "none"
            raise PreconditionError(
                f"a {self.status} document cannot become {to} (allowed: {allowed})",
                detail="DOCUMENT_STATE",
                metadata={"status": self.status.value},
            )
        return self._move(to)

    def update(self, *, title: str = "", description: str = "", expires_on: str = "") -> list[str]:
        """Empty values leave a field as it is; answers the names of the fields that changed."""
        self._require_not_archived("changed")
        changed: list[str] = []
        if title and check_title(title) != self.title:
            self.title, changed = check_title(title), [*changed, "title"]
        if description and check_description(description) != self.description:
            self.description, changed = check_description(description), [*changed, "description"]
        if expires_on:
            new_date = None if expires_on.strip().lower() == NO_EXPIRY else parse_date(expires_on, "expires_on")
            if new_date != self.expires_on:
                self.expires_on, changed = new_date, [*changed, "expires_on"]
        return changed

    def archive(self) -> StatusChange | None:
        """Soft delete; None when already archived."""
        if self.status is DocumentStatus.ARCHIVED:
            return None
        if self.status in UNDELETABLE:
            what = "signed" if self.status is DocumentStatus.SIGNED else "out for signature"
            raise PreconditionError(
                f"a {what} document cannot be deleted (signed records are kept 7 years)",
                detail="DOCUMENT_STATE",
                metadata={"status": self.status.value},
            )
        return self._move(DocumentStatus.ARCHIVED)

    def expire(self, today: date) -> StatusChange | None:
        """EXPIRED once past its last valid day; None when not due or already EXPIRED/ARCHIVED."""
        if not self.is_expired_on(today) or self.status in (DocumentStatus.EXPIRED, DocumentStatus.ARCHIVED):
            return None
        return self._move(DocumentStatus.EXPIRED)

    def _move(self, to: DocumentStatus) -> StatusChange:
        change = StatusChange(self.status, to)
        self.status = to
        return change

    def _require_not_archived(self, action: str) -> None:
        if self.status is DocumentStatus.ARCHIVED:
            raise PreconditionError(f"an ARCHIVED document cannot be {action}", detail="DOCUMENT_STATE")


# -- checks of the values a caller sends -------------------------------------------------------------


def parse_type(value: str, field_name: str = "document_type") -> DocumentType:
    try:
        return DocumentType(value.strip().upper())
    except ValueError:
        accepted = ", ".join(t.value for t in DocumentType)
        problem = "required" if not value.strip() else f"unknown document type {value!r}; accepted: {accepted}"
        raise ValidationError(f"{field_name}: {problem}", field_violations=[(field_name, problem)]) from None


def parse_status(value: str, field_name: str = "status") -> DocumentStatus:
    try:
        return DocumentStatus(value.strip().upper())
    except ValueError:
        accepted = ", ".join(s.value for s in DocumentStatus)
        problem = f"unknown status {value!r}; accepted: {accepted}"
        raise ValidationError(f"{field_name}: {problem}", field_violations=[(field_name, problem)]) from None


def parse_date(value: str, field_name: str = "expires_on") -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        problem = f"{value!r} is not a date: send YYYY-MM-DD"
        raise ValidationError(f"{field_name}: {problem}", field_violations=[(field_name, problem)]) from None


def optional_date(value: str, field_name: str = "expires_on") -> date | None:
    return parse_date(value, field_name) if value.strip() else None


def check_title(value: str) -> str:
    title = value.strip()
    if not title:
        raise ValidationError("title: required", field_violations=[("title", "required")])
    if len(title) > MAX_TITLE:
        problem = f"at most {MAX_TITLE} characters"
        raise ValidationError(f"title: {problem}", field_violations=[("title", problem)])
    return title


def check_description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION:
        problem = f"at most {MAX_DESCRIPTION} characters"
        raise ValidationError(f"description: {problem}", field_violations=[("description", problem)])
    return value.strip()


def check_submission_id(value: str) -> str:
    """An opaque id (the CRO service's); printable, bounded."""
    submission_id = value.strip()
    if len(submission_id) > MAX_SUBMISSION_ID or not submission_id.isprintable():
        problem = f"at most {MAX_SUBMISSION_ID} printable characters"
        raise ValidationError(f"submission_id: {problem}", field_violations=[("submission_id", problem)])
    return submission_id

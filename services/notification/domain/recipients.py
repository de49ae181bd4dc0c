"""Who hears of what (issue 13: "the people who must act next … never anyone outside the organization
the event belongs to or was shared with"). Pure: the service layer hands in an `Occurrence` (one event,
already classified) and the directory's members of the organizations concerned; `recipients` answers
who gets a notification.

| type | recipients |
|---|---|
| SUBMISSION_SUBMITTED | the CRO's cro_admins |
| SUBMISSION_QUOTED, RESULTS_UPLOADED | the submitter and the pharma_admins |
| SUBMISSION_APPROVED, SUBMISSION_STARTED, RESULTS_REVIEWED | the CRO side (cro_technician and up) |
| SUBMISSION_REJECTED, SUBMISSION_CANCELLED | the side that did not act (both when the actor is unknown) |
| MESSAGE_POSTED | the other side of the thread (CRO side, or the submitter and the pharma_admins) |
| SIGNATURE_REQUESTED | the named signer, or every member of the signer organization with the signer role or above |
| SIGNATURE_COMPLETED, SIGNATURE_DECLINED | the requester |
| DOCUMENT_EXPIRING, DOCUMENT_EXPIRED | the owner organization's admins |
| IMPORT_*, PREDICTION_* | the user who started it |

Always: only active, not deleted members of the event's organizations (a DRAFT submission's CRO
never saw it: a submission cancelled from DRAFT stays with the pharma side); whoever acted is not
told of their own action (except of their own import or prediction job ending).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from services.notification.domain.vocabulary import NotificationType, SubjectType
from services.runtime.auth import ROLE_IMPLIES

PHARMA_ADMIN = "pharma_admin"
CRO_ADMIN = "cro_admin"
CRO_TECHNICIAN = "cro_technician"
ORGANIZATION_ADMINS = frozenset({PHARMA_ADMIN, CRO_ADMIN})
DRAFT = "DRAFT"
PHARMA, CRO = "PHARMA", "CRO"


@dataclass(frozen=True)
class Member:
    """A user as the directory knows them."""

    user_id: str
    organization_id: str
    roles: frozenset[str] = frozenset()
    active: bool = True
    deleted: bool = False
    email: str = ""
    display_name: str = ""

    @property
    def reachable(self) -> bool:
        return self.active and not self.deleted

    def holds_any(self, roles: frozenset[str]) -> bool:
        """Holds one of `roles` or a role above it (a cro_admin is a cro_technician too)."""
        effective = self.roles.union(*(ROLE_IMPLIES.get(role, frozenset()) for role in self.roles))
        return bool(effective & roles)


@dataclass(frozen=True)
class Parties:
    """A submission's two organizations and its submitter (from SubmissionTransitioned)."""

    submission_id: str
    organization_id: str  # pharma
    cro_organization_id: str
    created_by: str = ""
    name: str = ""


@dataclass(frozen=True)
class Occurrence:
    """One event as the rules need it. `organization_id` is the organization the event belongs to;
    `submission` the parties when it concerns a submission (None when unknown)."""

    type: NotificationType
    event_id: str
    organization_id: str
    subject_type: SubjectType
    subject_id: str
    actor_id: str = ""
    occurred_at: datetime | None = None
    submission: Parties | None = None
    from_status: str = ""  # SubmissionTransitioned
    side: str = ""  # MESSAGE_POSTED: the author's side
    signer_user_id: str = ""  # SIGNATURE_REQUESTED
    signer_organization_id: str = ""
    signer_role: str = ""
    requested_by: str = ""  # signatures: the requester; jobs: who started them
    facts: dict[str, str] = field(default_factory=dict)  # for the texts and the webhook payload


@dataclass(frozen=True)
class Audience:
    """Named users and (organization, roles) selections, limited to `organizations`."""

    organizations: frozenset[str]
    users: frozenset[str] = frozenset()
    roles: tuple[tuple[str, frozenset[str]], ...] = ()
    exclude: frozenset[str] = frozenset()

    def __or__(self, other: Audience) -> Audience:
        return Audience(
            self.organizations | other.organizations,
            self.users | other.users,
            self.roles + other.roles,
            self.exclude | other.exclude,
        )

    def selects(self, member: Member) -> bool:
        if not member.reachable or member.organization_id not in self.organizations:
            return False
        if member.user_id in self.exclude:
            return False
        if member.user_id in self.users:
            return True
        return any(member.organization_id == org and member.holds_any(roles) for org, roles in self.roles)


def _pharma_side(parties: Parties) -> Audience:
    users = frozenset({parties.created_by} - {""})
    return Audience(
        frozenset({parties.organization_id}), users, ((parties.organization_id, frozenset({PHARMA_ADMIN})),)
    )


def _cro(parties: Parties, roles: frozenset[str]) -> Audience:
    return Audience(frozenset({parties.cro_organization_id}), roles=((parties.cro_organization_id, roles),))


def _cro_side(parties: Parties) -> Audience:
    return _cro(parties, frozenset({CRO_TECHNICIAN}))


def _other_side(parties: Parties, acting_organization: str | None) -> Audience:
    if acting_organization == parties.organization_id:
        return _cro_side(parties)
    if acting_organization == parties.cro_organization_id:
        return _pharma_side(parties)
    return _pharma_side(parties) | _cro_side(parties)


def _submission_audience(o: Occurrence, parties: Parties, acting_organization: str | None) -> Audience:
    match o.type:
        case NotificationType.SUBMISSION_SUBMITTED:
            return _cro(parties, frozenset({CRO_ADMIN}))
        case NotificationType.SUBMISSION_QUOTED | NotificationType.RESULTS_UPLOADED:
            return _pharma_side(parties)
        case (
            NotificationType.SUBMISSION_APPROVED
            | NotificationType.SUBMISSION_STARTED
            | NotificationType.RESULTS_REVIEWED
        ):
            return _cro_side(parties)
        case NotificationType.SUBMISSION_REJECTED | NotificationType.SUBMISSION_CANCELLED:
            return _other_side(parties, acting_organization)
        case NotificationType.MESSAGE_POSTED:
            return _other_side(parties, {PHARMA: parties.organization_id, CRO: parties.cro_organization_id}.get(o.side))
    raise ValueError(f"{o.type} is not a submission notification")


def audience(o: Occurrence, acting_organization: str | None = None) -> Audience:
    """Who `o` is for. `acting_organization`: the actor's organization (from the directory), if known."""
    if o.submission is not None and o.subject_type is SubjectType.SUBMISSION:
        selected = _submission_audience(o, o.submission, acting_organization)
        allowed = {o.submission.organization_id}
        # The CRO sees a submission once it was sent: one cancelled from DRAFT was never the CRO's business.
        if o.from_status != DRAFT or o.type is NotificationType.SUBMISSION_SUBMITTED:
            allowed.add(o.submission.cro_organization_id)
        return Audience(selected.organizations & allowed, selected.users, selected.roles, frozenset({o.actor_id}))
    shared = {o.organization_id}
    if o.submission is not None:  # a submission's documents are shared with its CRO
        shared |= {o.submission.organization_id, o.submission.cro_organization_id}
    match o.type:
        case NotificationType.SIGNATURE_REQUESTED:
            organization = o.signer_organization_id or o.organization_id
            signers = frozenset(shared | {organization})
            if o.signer_user_id:
                return Audience(signers, frozenset({o.signer_user_id}))
            roles = frozenset({o.signer_role}) if o.signer_role else ORGANIZATION_ADMINS
            return Audience(signers, roles=((organization, roles),), exclude=frozenset({o.actor_id}))
        case NotificationType.SIGNATURE_COMPLETED | NotificationType.SIGNATURE_DECLINED:
            return Audience(frozenset(shared), frozenset({o.requested_by} - {""}))
        case NotificationType.DOCUMENT_EXPIRING | NotificationType.DOCUMENT_EXPIRED:
            return Audience(frozenset({o.organization_id}), roles=((o.organization_id, ORGANIZATION_ADMINS),))
        case (
            NotificationType.IMPORT_FINISHED
            | NotificationType.IMPORT_FAILED
            | NotificationType.PREDICTION_FINISHED
            | NotificationType.PREDICTION_FAILED
        ):
            return Audience(frozenset({o.organization_id}), frozenset({o.requested_by} - {""}))
    # A submission event whose parties are unknown: nobody can be chosen safely.
    return Audience(frozenset())


def webhook_organizations(o: Occurrence) -> frozenset[str]:
    """Whose endpoints receive `o`: a submission's event both parties' (the CRO's once it was sent to
    it); anything else the organization it belongs to (and a requested signer's)."""
    if o.submission is not None and o.subject_type is SubjectType.SUBMISSION:
        organizations = {o.submission.organization_id}
        if o.from_status != DRAFT or o.type is NotificationType.SUBMISSION_SUBMITTED:
            organizations.add(o.submission.cro_organization_id)
        return frozenset(organizations - {""})
    if o.type is NotificationType.SIGNATURE_REQUESTED:
        return frozenset({o.organization_id, o.signer_organization_id} - {""})
    return frozenset({o.organization_id} - {""})


def recipients(o: Occurrence, members: Iterable[Member], acting_organization: str | None = None) -> list[Member]:
    """The members `o` is for, each once, in user id order."""
    chosen = audience(o, acting_organization)
    found = {m.user_id: m for m in members if chosen.selects(m)}
    return [found[user_id] for user_id in sorted(found)]

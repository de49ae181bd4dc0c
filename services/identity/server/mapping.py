"""Proto ↔ domain mapping for the identity API."""

from __future__ import annotations

from molbridge.identity.v1 import identity_service_pb2 as pb

from services.identity import domain
from services.runtime.protomap import enum_name, enum_number, timestamp


def kind_pb(kind: str) -> pb.Organization.Kind.ValueType:
    return enum_number(pb.Organization.Kind, kind)


def kind_name(kind: pb.Organization.Kind.ValueType) -> str:
    """"" when not given; a number the contract does not define fails the domain's kind check (400)."""
    return enum_name(pb.Organization.Kind, kind)


def user_pb(user: domain.User) -> pb.User:
    return pb.User(
        id=user.id, email=user.email, full_name=user.full_name, organization_id=user.organization_id,
        roles=list(user.roles), active=user.active, mfa_enabled=user.mfa_enabled,
        locked_until=timestamp(user.locked_until), created_at=timestamp(user.created_at),
        updated_at=timestamp(user.updated_at), last_login_at=timestamp(user.last_login_at),
    )


def organization_pb(organization: domain.Organization) -> pb.Organization:
    return pb.Organization(
        id=organization.id, name=organization.name, kind=kind_pb(organization.kind),
        created_at=timestamp(organization.created_at),
    )


def session_pb(session: domain.Session) -> pb.Session:
    return pb.Session(
        access_token=session.access_token, refresh_token=session.refresh_token,
        token_type="bearer" if session.access_token else "", expires_in=session.expires_in,
        user=user_pb(session.user), mfa_token=session.mfa_token, mfa_required=session.mfa_required,
    )


def api_key_pb(key: domain.ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        id=key.id, name=key.name, organization_id=key.organization_id, roles=list(key.roles), prefix=key.prefix,
        created_by=key.created_by, created_at=timestamp(key.created_at), revoked_at=timestamp(key.revoked_at),
        last_used_at=timestamp(key.last_used_at),
    )


def audit_event_pb(entry: domain.AuditEntry) -> pb.AuditEvent:
    return pb.AuditEvent(
        id=entry.id, sequence=entry.sequence, occurred_at=timestamp(entry.occurred_at), source=entry.source,
        action=entry.action, outcome=entry.outcome, actor_id=entry.actor_id, organization_id=entry.organization_id,
        target_type=entry.target_type, target_id=entry.target_id, client_address=entry.client_address,
        request_id=entry.request_id, details=entry.details, hash=entry.hash.hex(), trace_id=entry.trace_id,
    )


def verification_pb(verification: domain.Verification) -> pb.AuditVerification:
    found = verification.first_break
    return pb.AuditVerification(
        ok=verification.ok,
        entries_checked=verification.entries_checked,
        head=pb.AuditChainLink(sequence=verification.head_sequence, hash=verification.head_hash.hex()),
        anchors_checked=verification.anchors_checked,
        first_break=pb.AuditChainBreak(
            kind=pb.AuditChainBreak.Kind.Value(found.kind.value), sequence=found.sequence, entry_id=found.entry_id,
            expected_hash=found.expected_hash.hex(), stored_hash=found.stored_hash.hex(),
        ) if found else None,
    )


def anchor_pb(anchor: domain.Anchor) -> pb.AuditAnchor:
    return pb.AuditAnchor(
        sequence=anchor.sequence, hash=anchor.hash.hex(), anchored_at=timestamp(anchor.anchored_at),
        object_key=anchor.object_key,
    )




def signer_pb(signer: domain.Signer) -> pb.ConfirmSignerIdentityResponse:
    return pb.ConfirmSignerIdentityResponse(
        user_id=signer.user_id, printed_name=signer.printed_name, email=signer.email,
        organization_id=signer.organization_id, roles=list(signer.roles),
    )

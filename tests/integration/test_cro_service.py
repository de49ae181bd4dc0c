"""CRO use cases on real PostgreSQL with the real identity, molecule and document services served over
gRPC in this process: the CRO service asks them with the caller's forwarded credentials (molecules are
the caller's, documents present and signed). The unique partial index refuses a second active
submission of a molecule; specification errors come per field; the CRO side sees a blinded view.

The PENDING_REVIEW step is the package worker's (its use case runs on the queued item here): the journey
goes up to SUBMITTED, then CANCEL releases the molecules."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.cro_pb2 import (
    QuoteProvided,
    SubmissionMessagePosted,
    SubmissionPackageRequested,
    SubmissionTransitioned,
)
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.identity.v1 import identity_service_pb2_grpc as identity_grpc

from services.cro.bootstrap import MIGRATIONS as CRO_MIGRATIONS
from services.cro.bootstrap import CroParts, CroSettings
from services.cro.bootstrap import build_parts as build_cro
from services.cro.domain.catalogue import ServiceFields
from services.cro.domain.submissions import SubmissionMolecule
from services.cro.service.submissions import ActionInput, LineItemInput, ListFilters
from services.cro.store import SCHEMA as CRO_SCHEMA
from services.document.adapters.signer_identities import IdentitySigners
from services.document.bootstrap import MIGRATIONS as DOCUMENT_MIGRATIONS
from services.document.bootstrap import DocumentParts, DocumentSettings
from services.document.bootstrap import build_parts as build_documents
from services.document.domain.signatures import SignerSpec
from services.document.server.signatures import PUBLIC_METHODS as DOCUMENT_PUBLIC
from services.document.store import SCHEMA as DOCUMENT_SCHEMA
from services.identity.bootstrap import MIGRATIONS as IDENTITY_MIGRATIONS
from services.identity.server import PUBLIC_METHODS, IdentityServicer
from services.identity.service import IdentityService
from services.identity.store import SCHEMA as IDENTITY_SCHEMA
from services.molecule.bootstrap import MIGRATIONS as MOLECULE_MIGRATIONS
from services.molecule.bootstrap import build_parts as build_molecules
from services.molecule.domain.molecules import NewMolecule
from services.molecule.settings import MoleculeSettings
from services.molecule.store import SCHEMA as MOLECULE_SCHEMA
from services.runtime.auth import Authenticator, Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.document_client import DocumentClient
from services.runtime.errors import (
    AuthorizationError,
    ConflictError,
    NotFoundError,
    PreconditionError,
    ValidationError,
)
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.molecule_client import MoleculeClient
from services.runtime.pagination import PageRequest
from services.runtime.prediction_client import PredictionClient
from services.runtime.process import Process, running
from services.runtime.settings import Settings
from stack.ports import free_port
from tests.integration.identity_world import started_identity
from tests.pdfs import blank_pdf

PASSWORD = "Cro-Service-Tester-123!"
SCHEMA_2020 = {
    "type": "object",
    "properties": {"temperature": {"type": "number", "minimum": 0}, "buffer": {"type": "string"}},
    "required": ["temperature"],
}


@dataclass(frozen=True)
class Actor:
    principal: Principal
    token: str

    @property
    def id(self) -> str:
        return self.principal.subject

    @property
    def org(self) -> str:
        return self.principal.organization_id

    @property
    def credentials(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


class World:
    def __init__(self, identity: IdentityService, documents: DocumentParts, cro: CroParts, molecules: Any,
                 cro_engine: Any) -> None:
        self.identity, self.documents, self.cro, self.molecule_service = identity, documents, cro, molecules
        self.cro_engine = cro_engine
        self.verifier = TokenVerifier(identity.jwks)
        self.root: Actor

    async def login(self, email: str) -> Actor:
        session = await self.identity.login(email, PASSWORD)
        return Actor(await self.verifier.verify(session.access_token), session.access_token)

    async def organization(self, kind: str) -> Actor:
        organization = await self.identity.create_organization(
            self.root.principal, f"Org {uuid.uuid4().hex[:8]}", kind, ""
        )
        return await self.user(organization.id, f"{kind.lower()}_admin")

    async def user(self, organization_id: str, role: str) -> Actor:
        email = f"u{uuid.uuid4().hex[:10]}@cro.test"
        await self.identity.create_user(
            self.root.principal, email=email, full_name=f"User {email[:6]}", password=PASSWORD, roles=[role],
            organization_id=organization_id, request_id="",
        )
        return await self.login(email)

    async def molecules(self, owner: Actor, *smiles: str) -> list[str]:
        outcomes = await self.molecule_service.batch_create(owner.principal, [NewMolecule(s) for s in smiles])
        return [o.molecule_id for o in outcomes]

    async def document(self, owner: Actor, submission_id: str, document_type: str) -> str:
        async def body() -> AsyncIterator[bytes]:
            yield blank_pdf()

        headers = {"x-document-type": document_type, "x-document-title": document_type.title(),
                   "x-submission-id": submission_id,
                   "content-disposition": f'attachment; filename="{document_type.lower()}.pdf"'}
        document = await self.documents.documents.upload(owner.principal, "application/pdf", body(), headers=headers)
        return document.id

    async def signed(self, requester: Actor, document_id: str, *signers: Actor) -> None:
        specs = [SignerSpec(user_id=s.id, routing_order=i) for i, s in enumerate(signers, start=1)]
        await self.documents.signatures.request(requester.principal, document_id, specs)
        for signer in signers:
            await self.documents.signatures.sign(
                signer.principal, document_id, password=PASSWORD, mfa_code="", meaning="approved",
                credentials=signer.credentials,
            )

    async def events(self, kind: type[Message]) -> list[Any]:
        async with self.cro_engine.connect() as connection:
            payloads = await connection.execute(
                sa.text(f"SELECT payload FROM {CRO_SCHEMA}.outbox ORDER BY created_at, id")
            )
            found = []
            for payload in payloads.scalars():
                envelope = EventEnvelope.FromString(payload)
                if envelope.payload.Is(kind.DESCRIPTOR):
                    event = kind()
                    envelope.payload.Unpack(event)
                    found.append(event)
            return found


@pytest.fixture(scope="module")
async def world(postgres_server, tmp_path_factory) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    url = postgres_server.create_database()
    for migrations in (IDENTITY_MIGRATIONS, MOLECULE_MIGRATIONS, DOCUMENT_MIGRATIONS, CRO_MIGRATIONS):
        migrations.upgrade(url)
    root: Path = tmp_path_factory.mktemp("cro")
    engines = [make_engine(url, schema) for schema in (IDENTITY_SCHEMA, MOLECULE_SCHEMA, DOCUMENT_SCHEMA, CRO_SCHEMA)]
    identity_engine, molecule_engine, document_engine, cro_engine = engines
    identity = await started_identity(identity_engine, root / "mail", "root@cro.test", PASSWORD)
    ports = {name: free_port() for name in ("identity", "molecule", "document")}
    env = {f"MOLBRIDGE_{name.upper()}_ADDR": f"127.0.0.1:{port}" for name, port in ports.items()}
    env["MOLBRIDGE_DATA_DIR"] = str(root / "data")
    identity_process = Process(
        servicers=[(identity_grpc.add_IdentityServiceServicer_to_server, IdentityServicer(identity))],
        authenticator=Authenticator(TokenVerifier(identity.jwks), identity),
        public_methods=PUBLIC_METHODS,
    )
    remote = RemoteIdentity(env["MOLBRIDGE_IDENTITY_ADDR"])
    molecule_settings = MoleculeSettings.from_env("molecule", env)
    molecule_client = MoleculeClient(env["MOLBRIDGE_MOLECULE_ADDR"])
    document_client = DocumentClient(env["MOLBRIDGE_DOCUMENT_ADDR"])
    prediction_client = PredictionClient(f"127.0.0.1:{free_port()}")  # no prediction service: comparisons untested here
    try:
        async with running("identity", identity_process, Settings.from_env("identity", env)):
            molecules = build_molecules(molecule_settings, molecule_engine)
            documents = build_documents(
                DocumentSettings.from_env("document", env | {"MOLBRIDGE_SIGNING_KEY_DIR": str(root / "seal")}),
                document_engine, signers=IdentitySigners(remote),
            )
            cro = build_cro(CroSettings.from_env("cro", env), cro_engine, molecules=molecule_client,
                            documents=document_client, message_documents=document_client,
                            predictions=prediction_client, names=remote)
            molecule_process = Process(servicers=molecules.servicers, authenticator=remote_authenticator(remote))
            document_process = Process(
                servicers=documents.servicers, authenticator=remote_authenticator(remote),
                public_methods=DOCUMENT_PUBLIC,
            )
            async with (
                running("molecule", molecule_process, molecule_settings),
                running("document", document_process, Settings.from_env("document", env)),
            ):
                w = World(identity, documents, cro, molecules.molecules, cro_engine)
                w.root = await w.login("root@cro.test")
                yield w
    finally:
        await molecule_client.close()
        await document_client.close()
        await prediction_client.close()
        await remote.close()
        for engine in engines:
            await engine.dispose()
        postgres_server.drop_database(url.rsplit("/", 1)[1])


def service_fields(**changes: Any) -> ServiceFields:
    values: dict[str, Any] = {
        "name": "Kinase binding panel", "service_type": "BINDING_ASSAY", "base_price": "1250.00", "currency": "usd",
        "turnaround_days": 14, "specification_schema": SCHEMA_2020,
    }
    return ServiceFields(**(values | changes))


@dataclass
class Parties:
    pharma_admin: Actor
    scientist: Actor
    cro_admin: Actor
    technician: Actor
    outsider: Actor
    service_id: str


async def parties(world: World) -> Parties:
    pharma_admin = await world.organization("PHARMA")
    scientist = await world.user(pharma_admin.org, "pharma_scientist")
    cro_admin = await world.organization("CRO")
    technician = await world.user(cro_admin.org, "cro_technician")
    outsider = await world.organization("PHARMA")
    service = await world.cro.catalogue.create(cro_admin.principal, service_fields(),
                                               credentials=cro_admin.credentials)
    assert service.organization_name.startswith("Org ")  # named by identity for the cro_admin
    return Parties(pharma_admin, scientist, cro_admin, technician, outsider, service.id)


async def test_catalogue_is_managed_by_cro_admins_with_valid_schemas(world: World) -> None:
    p = await parties(world)
    catalogue = world.cro.catalogue
    with pytest.raises(AuthorizationError):
        await catalogue.create(p.scientist.principal, service_fields())
    with pytest.raises(AuthorizationError):
        await catalogue.create(p.technician.principal, service_fields())
    with pytest.raises(ValidationError) as bad:
        await catalogue.create(p.cro_admin.principal, service_fields(
            specification_schema={"type": "object", "properties": {"x": {"type": "nonsense"}}},
            turnaround_days=0, currency="dollars",
        ))
    fields = dict(bad.value.field_violations)
    assert set(fields) == {"specification_schema", "turnaround_days", "currency"}
    assert "nonsense" in fields["specification_schema"]

    cheap = await catalogue.create(
        p.cro_admin.principal, service_fields(name="Solubility", service_type="SOLUBILITY", base_price="300",
                                              turnaround_days=5),
        request_id="cheap-1",
    )
    again = await catalogue.create(p.cro_admin.principal, service_fields(name="Solubility"), request_id="cheap-1")
    assert again.id == cheap.id and cheap.currency == "USD" and str(cheap.base_price) == "300.00"

    mine, total = await catalogue.list_services(
        p.scientist.principal, PageRequest.of(1, 10), organization_id=p.cro_admin.org, sort="-price"
    )
    assert total == 2 and [s.name for s in mine] == ["Kinase binding panel", "Solubility"]
    found, _ = await catalogue.list_services(
        p.scientist.principal, PageRequest.of(1, 10), organization_id=p.cro_admin.org, max_price="500",
        max_turnaround_days=7, service_type="SOLUBILITY",
    )
    assert [s.id for s in found] == [cheap.id]
    with pytest.raises(ValidationError):
        await catalogue.list_services(p.scientist.principal, PageRequest.of(1, 10), sort="colour")

    other_cro = await world.organization("CRO")
    with pytest.raises(AuthorizationError):
        await catalogue.update(other_cro.principal, cheap.id, ServiceFields(name="Taken"))
    changed = await catalogue.update(p.cro_admin.principal, cheap.id, ServiceFields(active=False))
    assert not changed.active
    with pytest.raises(NotFoundError):  # an inactive service is its own organization's only
        await catalogue.get(p.scientist.principal, cheap.id)
    listed, _ = await catalogue.list_services(
        p.cro_admin.principal, PageRequest.of(1, 10), organization_id=p.cro_admin.org, include_inactive=True
    )
    assert {s.id for s in listed} == {cheap.id, p.service_id}

    deleted, _ = await catalogue.delete(p.cro_admin.principal, cheap.id)
    assert deleted
    [molecule] = await world.molecules(p.scientist, "CCO")
    await world.cro.submissions.create(
        p.scientist.principal, p.scientist.credentials, name="Uses it", service_id=p.service_id,
        molecules=[SubmissionMolecule(molecule)],
    )
    deleted, kept = await catalogue.delete(p.cro_admin.principal, p.service_id)
    assert not deleted and not kept.active  # in use: deactivated, never deleted


async def test_a_submission_is_submitted_blinded_and_holds_its_molecules(world: World) -> None:
    p = await parties(world)
    subs = world.cro.submissions
    ids = await world.molecules(p.scientist, "CCO", "c1ccccc1O")
    [foreign] = await world.molecules(p.outsider, "CCN")
    with pytest.raises(ValidationError) as not_theirs:
        await subs.create(
            p.scientist.principal, p.scientist.credentials, name="Panel", service_id=p.service_id,
            molecules=[SubmissionMolecule(ids[0]), SubmissionMolecule(foreign)],
        )
    assert [name for name, _ in not_theirs.value.field_violations] == ["molecules[1].molecule_id"]
    with pytest.raises(AuthorizationError):
        await subs.create(p.cro_admin.principal, p.cro_admin.credentials, name="x", service_id=p.service_id)

    draft = await subs.create(
        p.scientist.principal, p.scientist.credentials, name="Panel", service_id=p.service_id,
        molecules=[SubmissionMolecule(i, "10 mM") for i in ids], specifications={"temperature": "hot"},
        budget="1000", request_id="panel-1",
    )
    submission_id = draft.submission.id
    again = await subs.create(p.scientist.principal, p.scientist.credentials, name="Panel", service_id=p.service_id,
                              request_id="panel-1")
    assert again.submission.id == submission_id
    for outsider in (p.cro_admin, p.outsider):  # the CRO does not see a DRAFT; a third organization nothing
        with pytest.raises(NotFoundError):
            await subs.get(outsider.principal, submission_id)

    submit = ActionInput(action="SUBMIT", request_id="submit-1")
    with pytest.raises(ValidationError) as invalid:
        await subs.act(p.scientist.principal, p.scientist.credentials, submission_id, submit)
    assert dict(invalid.value.field_violations) == {"specifications.temperature": "'hot' is not of type 'number'"}
    await subs.update(p.scientist.principal, p.scientist.credentials, submission_id, specifications={})
    with pytest.raises(ValidationError) as missing:
        await subs.act(p.scientist.principal, p.scientist.credentials, submission_id, submit)
    assert dict(missing.value.field_violations) == {"specifications.temperature": "required"}
    await subs.update(p.scientist.principal, p.scientist.credentials, submission_id,
                      specifications={"temperature": 37, "buffer": "PBS"})

    with pytest.raises(PreconditionError) as unsigned:
        await subs.act(p.scientist.principal, p.scientist.credentials, submission_id, submit)
    assert unsigned.value.detail == "DOCUMENTS_INCOMPLETE"
    assert all(kind in unsigned.value.message for kind in ("NON_DISCLOSURE_AGREEMENT", "MATERIAL_TRANSFER_AGREEMENT"))
    nda = await world.document(p.scientist, submission_id, "NON_DISCLOSURE_AGREEMENT")
    mta = await world.document(p.scientist, submission_id, "MATERIAL_TRANSFER_AGREEMENT")
    await world.document(p.scientist, submission_id, "EXPERIMENT_SPECIFICATION")
    await world.signed(p.scientist, nda, p.pharma_admin)
    with pytest.raises(PreconditionError) as still:
        await subs.act(p.scientist.principal, p.scientist.credentials, submission_id, submit)
    assert still.value.metadata["unsigned"] == "MATERIAL_TRANSFER_AGREEMENT"
    await world.signed(p.scientist, mta, p.pharma_admin)

    submitted = await subs.act(p.scientist.principal, p.scientist.credentials, submission_id, submit)
    assert submitted.submission.status.value == "SUBMITTED"
    retried = await subs.act(p.scientist.principal, p.scientist.credentials, submission_id, submit)
    assert retried.submission.status.value == "SUBMITTED"  # the same key answers the first outcome
    pharma_view = submitted.molecules
    assert [m.molecule_id for m in pharma_view] == ids and all(m.smiles and m.registration_number for m in pharma_view)
    codes = [m.sample_code for m in pharma_view]
    assert all(code.startswith("S-") for code in codes) and len(set(codes)) == 2

    cro_view = await subs.get(p.technician.principal, submission_id)
    assert cro_view.blinded
    assert [(m.molecule_id, m.registration_number, m.smiles) for m in cro_view.molecules] == [("", "", "")] * 2
    assert [m.sample_code for m in cro_view.molecules] == codes
    assert all(m.formula and m.molecular_weight for m in cro_view.molecules)
    assert "PROVIDE_PRICING" not in cro_view.permitted_actions  # the package worker's step comes first
    with pytest.raises(NotFoundError):
        await subs.get(p.outsider.principal, submission_id)

    # the CRO reads the shared documents' requirements too
    requirements = await subs.document_requirements(p.cro_admin.principal, p.cro_admin.credentials, submission_id)
    assert requirements.of("NON_DISCLOSURE_AGREEMENT").signed_by_owner  # type: ignore[union-attr]

    # revealing structures needs the NDA (signed) and the pharma side
    with pytest.raises(AuthorizationError):
        await subs.set_structures_revealed(p.cro_admin.principal, p.cro_admin.credentials, submission_id,
                                           revealed=True)
    await subs.set_structures_revealed(p.scientist.principal, p.scientist.credentials, submission_id, revealed=True)
    revealed = await subs.get(p.technician.principal, submission_id)
    assert not revealed.blinded and all(m.smiles for m in revealed.molecules)
    # structures, yes; the pharma side's own handles (molecule ids, registration numbers), never
    assert not any(m.molecule_id or m.registration_number for m in revealed.molecules)

    # a second active submission of the same molecule is refused by the database, naming the first
    second = await subs.create(
        p.scientist.principal, p.scientist.credentials, name="Again", service_id=p.service_id,
        molecules=[SubmissionMolecule(ids[1])], specifications={"temperature": 20},
    )
    for kind in ("NON_DISCLOSURE_AGREEMENT", "MATERIAL_TRANSFER_AGREEMENT", "EXPERIMENT_SPECIFICATION"):
        document = await world.document(p.scientist, second.submission.id, kind)
        if kind != "EXPERIMENT_SPECIFICATION":
            await world.signed(p.scientist, document, p.pharma_admin)
    with pytest.raises(ConflictError) as held:
        await subs.act(p.scientist.principal, p.scientist.credentials, second.submission.id,
                       ActionInput(action="SUBMIT"))
    assert held.value.detail == "MOLECULE_IN_ACTIVE_SUBMISSION"
    assert held.value.metadata == {"molecule_id": ids[1], "submission_id": submission_id}
    assert submission_id in held.value.message
    assert (await subs.get(p.scientist.principal, second.submission.id)).submission.status.value == "DRAFT"

    # who may: the CRO technician may not reject; the CRO admin cancels before the work starts
    with pytest.raises(AuthorizationError) as rule:
        await subs.act(p.technician.principal, p.technician.credentials, submission_id,
                       ActionInput(action="REJECT", reason="no"))
    assert "cro_admin" in rule.value.message
    await subs.act(p.scientist.principal, p.scientist.credentials, submission_id,
                   ActionInput(action="CANCEL", reason="budget cut"))
    done = await subs.act(p.scientist.principal, p.scientist.credentials, second.submission.id,
                          ActionInput(action="SUBMIT"))
    assert done.submission.status.value == "SUBMITTED"

    listed, total = await subs.list_submissions(
        p.scientist.principal, ListFilters(molecule_id=ids[1]), PageRequest.of(1, 10)
    )
    assert total == 2 and {v.submission.id for v in listed} == {submission_id, second.submission.id}
    counts = await subs.status_counts(p.scientist.principal)
    assert counts["CANCELLED"] == 1 and counts["SUBMITTED"] == 1 and counts["DRAFT"] == 0
    cro_counts = await subs.status_counts(p.cro_admin.principal)
    assert cro_counts["SUBMITTED"] == 1

    transitions = [e for e in await world.events(SubmissionTransitioned) if e.submission_id == submission_id]
    assert [(e.from_status, e.to_status, e.molecule_status) for e in transitions] == [
        ("DRAFT", "SUBMITTED", "PENDING"), ("SUBMITTED", "CANCELLED", "AVAILABLE")
    ]
    assert list(transitions[0].molecule_ids) == ids and transitions[1].reason == "budget cut"
    packages = [e.submission_id for e in await world.events(SubmissionPackageRequested)]
    assert packages.count(submission_id) == 1
    audits = [(e.action, e.details.get("from", ""), e.details.get("to", "")) for e in await world.events(AuditRecorded)
              if e.target_id == submission_id]
    assert ("submission.created", "", "") in audits
    assert ("submission.submitted", "DRAFT", "SUBMITTED") in audits
    assert ("submission.cancelled", "SUBMITTED", "CANCELLED") in audits


async def package_built(world: World, submission_id: str) -> None:
    """The package worker's system step (SUBMITTED → PENDING_REVIEW), by its own use case on the work item
    SUBMIT queued (test_cro_packages.py runs the worker itself, through JetStream)."""
    [item] = [i for i in await world.events(SubmissionPackageRequested) if i.submission_id == submission_id]
    assert await world.cro.packages.build(item)


async def submitted(world: World, p: Parties, *smiles: str, budget: str = "") -> tuple[str, list[str]]:
    ids = await world.molecules(p.scientist, *smiles)
    draft = await world.cro.submissions.create(
        p.scientist.principal, p.scientist.credentials, name="Journey", service_id=p.service_id,
        molecules=[SubmissionMolecule(i) for i in ids], specifications={"temperature": 4}, budget=budget,
    )
    submission_id = draft.submission.id
    for kind in ("NON_DISCLOSURE_AGREEMENT", "MATERIAL_TRANSFER_AGREEMENT", "EXPERIMENT_SPECIFICATION"):
        document = await world.document(p.scientist, submission_id, kind)
        if kind != "EXPERIMENT_SPECIFICATION":
            await world.signed(p.scientist, document, p.pharma_admin)
    await world.cro.submissions.act(p.scientist.principal, p.scientist.credentials, submission_id,
                                    ActionInput(action="SUBMIT"))
    return submission_id, ids


async def test_quote_approval_and_the_service_agreement_gate(world: World) -> None:
    p = await parties(world)
    subs = world.cro.submissions
    submission_id, ids = await submitted(world, p, "CCOC", "CCCl", budget="500")
    await package_built(world, submission_id)
    codes = (await subs.get(p.scientist.principal, submission_id)).submission.sample_codes

    asked = await subs.act(p.technician.principal, p.technician.credentials, submission_id,
                           ActionInput(action="REQUEST_CHANGES", text="Which buffer, please?"))
    assert asked.submission.status.value == "PENDING_REVIEW"
    messages = [e for e in await world.events(SubmissionMessagePosted) if e.submission_id == submission_id]
    assert [(m.side, m.change_request) for m in messages] == [("CRO", True)]

    price = ActionInput(
        action="PROVIDE_PRICING", price="600.00", turnaround_days=10,
        valid_until=(date.today() + timedelta(days=30)).isoformat(),
        line_items=[LineItemInput(codes[ids[0]], "Kd", 2, "150"), LineItemInput(ids[1], "Kd", 2, "150")],
        request_id="quote-1",
    )
    with pytest.raises(AuthorizationError):  # only a cro_admin prices
        await subs.act(p.technician.principal, p.technician.credentials, submission_id, price)
    bad = ActionInput(action="PROVIDE_PRICING", price="600", turnaround_days=10, valid_until="soon")
    with pytest.raises(ValidationError) as invalid:
        await subs.act(p.cro_admin.principal, p.cro_admin.credentials, submission_id, bad)
    assert dict(invalid.value.field_violations) == {"valid_until": "a date YYYY-MM-DD"}
    quoted = await subs.act(p.cro_admin.principal, p.cro_admin.credentials, submission_id, price)
    assert quoted.submission.status.value == "PRICING_PROVIDED"
    view, quotes = await subs.quotes(p.cro_admin.principal, submission_id)
    assert [q.number for q in quotes] == [1] and quotes[0].over_budget
    assert [view.quote_molecule(i.molecule_id) for i in quotes[0].line_items] == [codes[ids[0]], codes[ids[1]]]
    await subs.act(p.cro_admin.principal, p.cro_admin.credentials, submission_id,
                   replace(price, price="500", line_items=[], request_id="quote-2"))
    _, quotes = await subs.quotes(p.scientist.principal, submission_id)
    assert [(q.number, str(q.price), q.over_budget) for q in quotes] == [(2, "500.00", False), (1, "600.00", True)]

    with pytest.raises(AuthorizationError) as scientist_approves:
        await subs.act(p.scientist.principal, p.scientist.credentials, submission_id, ActionInput(action="APPROVE"))
    assert "pharma_admin" in scientist_approves.value.message
    approved = await subs.act(p.pharma_admin.principal, p.pharma_admin.credentials, submission_id,
                              ActionInput(action="APPROVE"))
    assert approved.submission.status.value == "APPROVED" and str(approved.submission.price) == "500.00"

    start = ActionInput(action="START_EXPERIMENT")
    with pytest.raises(PreconditionError) as unsigned:
        await subs.act(p.technician.principal, p.technician.credentials, submission_id, start)
    assert unsigned.value.detail == "SERVICE_AGREEMENT_UNSIGNED"
    agreement = await world.document(p.scientist, submission_id, "SERVICE_AGREEMENT")
    await world.signed(p.scientist, agreement, p.pharma_admin, p.cro_admin)
    started = await subs.act(p.technician.principal, p.technician.credentials, submission_id, start)
    assert started.submission.status.value == "IN_PROGRESS"
    assert started.submission.estimated_completion == date.today() + timedelta(days=10)

    transitions = [(e.to_status, e.molecule_status) for e in await world.events(SubmissionTransitioned)
                   if e.submission_id == submission_id]
    assert transitions == [("SUBMITTED", "PENDING"), ("PENDING_REVIEW", ""), ("PRICING_PROVIDED", ""),
                           ("APPROVED", ""), ("IN_PROGRESS", "TESTING")]
    quoted_events = [(e.number, e.over_budget) for e in await world.events(QuoteProvided)
                     if e.submission_id == submission_id]
    assert quoted_events == [(1, True), (2, False)]
    audits = [e.action for e in await world.events(AuditRecorded) if e.target_id == submission_id]
    for action in ("submission.package_built", "submission.changes_requested", "submission.priced",
                   "submission.approved", "submission.started"):
        assert action in audits

"""Submission rows ↔ the Submission aggregate; molecules (with their SUBMIT snapshot), quotes (history)
and steps live in their own tables. The unique partial index on active molecule rows is the last word
on "a molecule is in at most one active submission": a clash becomes a 409 naming the other one."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.cro.domain.submissions import LineItem, Quote, Submission, SubmissionMolecule
from services.cro.domain.vocabulary import VISIBLE_TO_CRO, SubmissionStatus
from services.cro.store.tables import quotes, submission_molecules, submission_steps, submissions
from services.runtime.db import canonical_uuid
from services.runtime.errors import ConflictError
from services.runtime.pagination import PageRequest

_s = submissions.c
_m = submission_molecules.c
_q = quotes.c
_st = submission_steps.c


@dataclass(frozen=True)
class MoleculeSnapshot:
    """What was sent of a molecule, taken at SUBMIT from the molecule service."""

    molecule_id: str
    canonical_smiles: str = ""
    formula: str = ""
    molecular_weight: float | None = None
    inchi_key: str = ""
    registration_number: str = ""


@dataclass(frozen=True)
class MoleculeRow:
    """A submission's molecule as stored: the draft's input, its sample code and its snapshot."""

    molecule_id: str
    concentration: str
    notes: str
    sample_code: str
    snapshot: MoleculeSnapshot


@dataclass(frozen=True)
class SubmissionFilter:
    """Whose submissions: the pharma organization's (all) or the CRO organization's (from SUBMITTED on)."""

    pharma_organization_id: str = ""
    cro_organization_id: str = ""
    everyone: bool = False  # a system_admin outside both
    status: str = ""
    for_cro_organization_id: str = ""  # the `cro_organization_id` filter of the request
    cro_service_id: str = ""
    created_from: date | None = None
    created_to: date | None = None
    molecule_id: str = ""


def _row_values(submission: Submission) -> dict[str, Any]:
    return {
        "organization_id": submission.organization_id,
        "cro_organization_id": submission.cro_organization_id,
        "cro_service_id": submission.service_id,
        "service_type": submission.service_type,
        "name": submission.name,
        "status": submission.status.value,
        "sample_prefix": submission.sample_prefix,
        "currency": submission.currency,
        "budget": submission.budget,
        "specifications": submission.specifications,
        "approved_quote_number": submission.approved_quote_number,
        "package_sha256": submission.package_sha256,
        "estimated_completion": submission.estimated_completion,
        "structures_revealed": submission.structures_revealed,
        "created_by": submission.created_by,
        "updated_at": submission.updated_at,
    }


def _quote_values(submission_id: str, quote: Quote) -> dict[str, Any]:
    return {
        "submission_id": submission_id,
        "number": quote.number,
        "price": quote.price,
        "currency": quote.currency,
        "turnaround_days": quote.turnaround_days,
        "valid_until": quote.valid_until,
        "line_items": [
            {"molecule_id": i.molecule_id, "assay": i.assay, "replicates": i.replicates,
             "unit_price": str(i.unit_price)}
            for i in quote.line_items
        ],
        "over_budget": quote.over_budget,
        "note": quote.note,
        "provided_by": quote.provided_by,
        "provided_at": quote.provided_at,
    }


def _quote(row: Any) -> Quote:
    return Quote(
        number=row.number,
        price=Decimal(row.price),
        currency=row.currency,
        turnaround_days=row.turnaround_days,
        valid_until=row.valid_until,
        line_items=tuple(
            LineItem(i["molecule_id"], i["assay"], int(i["replicates"]), Decimal(i["unit_price"]))
            for i in row.line_items or []
        ),
        over_budget=row.over_budget,
        provided_by=row.provided_by,
        provided_at=row.provided_at,
        note=row.note,
    )


class SubmissionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # -- writing ----------------------------------------------------------------------------------------

    async def add(self, submission: Submission) -> None:
        await self._session.execute(
            sa.insert(submissions).values(id=submission.id, created_at=submission.created_at, **_row_values(submission))
        )
        await self._insert_molecules(submission)

    async def save(self, submission: Submission) -> None:
        """Writes the aggregate back: its row, its molecules (replaced while a DRAFT; afterwards their
        active flag and sample codes), and quotes not stored yet. A molecule already held by another
        active submission is a ConflictError naming it."""
        await self._session.execute(
            sa.update(submissions).where(_s.id == submission.id).values(**_row_values(submission))
        )
        if submission.status is SubmissionStatus.DRAFT:
            await self._session.execute(sa.delete(submission_molecules).where(_m.submission_id == submission.id))
            await self._insert_molecules(submission)
        else:
            await self._mark_molecules(submission)
        stored = await self._session.scalar(
            sa.select(sa.func.coalesce(sa.func.max(_q.number), 0)).where(_q.submission_id == submission.id)
        )
        new = [q for q in submission.quotes if q.number > int(stored or 0)]
        if new:
            await self._session.execute(sa.insert(quotes), [_quote_values(submission.id, q) for q in new])

    async def _insert_molecules(self, submission: Submission) -> None:
        if not submission.molecules:
            return
        rows = [
            {
                "submission_id": submission.id,
                "molecule_id": m.molecule_id,
                "organization_id": submission.organization_id,
                "position": i,
                "concentration": m.concentration,
                "notes": m.notes,
                "active": submission.active,
                "sample_code": submission.sample_codes.get(m.molecule_id, ""),
            }
            for i, m in enumerate(submission.molecules)
        ]
        await self._session.execute(sa.insert(submission_molecules), rows)

    async def _mark_molecules(self, submission: Submission) -> None:
        try:
            async with self._session.begin_nested():
                for molecule_id, code in submission.sample_codes.items():
                    await self._session.execute(
                        sa.update(submission_molecules)
                        .where(_m.submission_id == submission.id, _m.molecule_id == molecule_id, _m.sample_code == "")
                        .values(sample_code=code)
                    )
                await self._session.execute(
                    sa.update(submission_molecules)
                    .where(_m.submission_id == submission.id, _m.active.is_not(submission.active))
                    .values(active=submission.active)
                )
        except IntegrityError as error:
            raise await self._held_elsewhere(submission) from error

    async def _held_elsewhere(self, submission: Submission) -> ConflictError:
        row = (
            await self._session.execute(
                sa.select(_m.molecule_id, _m.submission_id)
                .where(
                    _m.organization_id == submission.organization_id,
                    _m.molecule_id.in_(submission.molecule_ids),
                    _m.active,
                    _m.submission_id != submission.id,
                )
                .order_by(_m.molecule_id)
                .limit(1)
            )
        ).one_or_none()
        molecule_id, other = (str(row.molecule_id), str(row.submission_id)) if row else ("", "")
        return ConflictError(
            f"molecule {molecule_id} is already in active submission {other}: a molecule is in at most one "
            "active submission",
            detail="MOLECULE_IN_ACTIVE_SUBMISSION",
            metadata={"molecule_id": molecule_id, "submission_id": other},
        )

    async def add_step(
        self, submission_id: str, status: SubmissionStatus, *, at: datetime, actor: str, action: str, reason: str = ""
    ) -> None:
        await self._session.execute(
            sa.insert(submission_steps).values(
                submission_id=submission_id, status=status.value, at=at, actor=actor, action=action, reason=reason
            )
        )

    async def snapshot(self, submission_id: str, snapshots: Iterable[MoleculeSnapshot]) -> None:
        """Records what was sent of each molecule (at SUBMIT; never changed afterwards)."""
        for snap in snapshots:
            await self._session.execute(
                sa.update(submission_molecules)
                .where(_m.submission_id == submission_id, _m.molecule_id == snap.molecule_id)
                .values(
                    canonical_smiles=snap.canonical_smiles,
                    formula=snap.formula,
                    molecular_weight=snap.molecular_weight,
                    inchi_key=snap.inchi_key,
                    registration_number=snap.registration_number,
                )
            )

    # -- reading ----------------------------------------------------------------------------------------

    async def get(self, submission_id: str, *, lock: bool = False) -> Submission | None:
        key = canonical_uuid(submission_id)
        if key is None:
            return None
        query = sa.select(submissions).where(_s.id == key)
        if lock:
            query = query.with_for_update()
        row = (await self._session.execute(query)).one_or_none()
        if row is None:
            return None
        return (await self._load([row]))[0]

    async def molecules(self, submission_id: str) -> list[MoleculeRow]:
        """The molecules in the submission's order, with sample codes and snapshots."""
        rows = await self._session.execute(
            sa.select(submission_molecules).where(_m.submission_id == submission_id).order_by(_m.position)
        )
        return [
            MoleculeRow(
                molecule_id=str(r.molecule_id),
                concentration=r.concentration,
                notes=r.notes,
                sample_code=r.sample_code,
                snapshot=MoleculeSnapshot(
                    str(r.molecule_id), r.canonical_smiles, r.formula, r.molecular_weight, r.inchi_key,
                    r.registration_number,
                ),
            )
            for r in rows
        ]

    async def steps(self, submission_id: str) -> list[dict[str, Any]]:
        """Every step (status, at, actor, action, reason), oldest first."""
        rows = await self._session.execute(
            sa.select(_st.status, _st.at, _st.actor, _st.action, _st.reason)
            .where(_st.submission_id == submission_id)
            .order_by(_st.id)
        )
        return [dict(r._mapping) for r in rows]

    async def find(self, found: SubmissionFilter, page: PageRequest) -> tuple[list[Submission], int]:
        where = self._where(found)
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(submissions).where(where))
        rows = (
            await self._session.execute(
                sa.select(submissions)
                .where(where)
                .order_by(_s.created_at.desc(), _s.id)
                .limit(page.page_size)
                .offset(page.offset)
            )
        ).all()
        return await self._load(rows), int(total or 0)

    async def status_counts(self, found: SubmissionFilter) -> dict[str, int]:
        rows = await self._session.execute(
            sa.select(_s.status, sa.func.count()).where(self._where(found)).group_by(_s.status)
        )
        return {status: int(count) for status, count in rows}

    def _where(self, found: SubmissionFilter) -> Any:
        visible = [s.value for s in VISIBLE_TO_CRO]
        sides = []
        if found.pharma_organization_id:
            sides.append(_s.organization_id == found.pharma_organization_id)
        if found.cro_organization_id:
            sides.append(sa.and_(_s.cro_organization_id == found.cro_organization_id, _s.status.in_(visible)))
        conditions: list[Any] = [sa.true() if found.everyone else sa.or_(sa.false(), *sides)]
        if found.status:
            conditions.append(_s.status == found.status)
        by_id = ((_s.cro_organization_id, found.for_cro_organization_id), (_s.cro_service_id, found.cro_service_id))
        for column, value in by_id:
            if value:
                key = canonical_uuid(value)
                conditions.append(column == key if key else sa.false())
        if found.created_from:
            conditions.append(sa.func.date(sa.func.timezone("UTC", _s.created_at)) >= found.created_from)
        if found.created_to:
            conditions.append(sa.func.date(sa.func.timezone("UTC", _s.created_at)) <= found.created_to)
        if found.molecule_id:
            key = canonical_uuid(found.molecule_id)
            conditions.append(
                _s.id.in_(sa.select(_m.submission_id).where(_m.molecule_id == key)) if key else sa.false()
            )
        return sa.and_(*conditions)

    async def _load(self, rows: Sequence[Any]) -> list[Submission]:
        """Aggregates of `rows` with their molecules, quotes and step times (three queries for all)."""
        ids = [str(r.id) for r in rows]
        if not ids:
            return []
        molecules: dict[str, list[Any]] = defaultdict(list)
        for m in await self._session.execute(
            sa.select(submission_molecules).where(_m.submission_id.in_(ids)).order_by(_m.position)
        ):
            molecules[str(m.submission_id)].append(m)
        quote_rows: dict[str, list[Quote]] = defaultdict(list)
        for q in await self._session.execute(sa.select(quotes).where(_q.submission_id.in_(ids)).order_by(_q.number)):
            quote_rows[str(q.submission_id)].append(_quote(q))
        step_times: dict[str, dict[SubmissionStatus, datetime]] = defaultdict(dict)
        for st in await self._session.execute(
            sa.select(_st.submission_id, _st.status, _st.at).where(_st.submission_id.in_(ids)).order_by(_st.id)
        ):
            step_times[str(st.submission_id)][SubmissionStatus(st.status)] = st.at
        return [
            Submission(
                id=str(r.id),
                organization_id=str(r.organization_id),
                cro_organization_id=str(r.cro_organization_id),
                service_id=str(r.cro_service_id),
                service_type=r.service_type,
                name=r.name,
                created_by=r.created_by,
                sample_prefix=r.sample_prefix,
                currency=r.currency,
                status=SubmissionStatus(r.status),
                molecules=tuple(
                    SubmissionMolecule(str(m.molecule_id), m.concentration, m.notes) for m in molecules[str(r.id)]
                ),
                specifications=dict(r.specifications or {}),
                budget=Decimal(r.budget) if r.budget is not None else None,
                quotes=quote_rows[str(r.id)],
                approved_quote_number=r.approved_quote_number,
                sample_codes={str(m.molecule_id): m.sample_code for m in molecules[str(r.id)] if m.sample_code},
                package_sha256=r.package_sha256,
                estimated_completion=r.estimated_completion,
                step_times=step_times[str(r.id)],
                created_at=r.created_at,
                updated_at=r.updated_at,
                structures_revealed=r.structures_revealed,
            )
            for r in rows
        ]

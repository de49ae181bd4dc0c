"""Reads for predicted vs measured: a result version's header and aggregated values (with sample codes and the
molecules' registration numbers as submitted), and an organization's accepted results. Reads only: the
results store writes these tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.cro.store.tables import result_values, results, submission_molecules
from services.runtime.db import canonical_uuid

ACCEPTED = "ACCEPTED"


@dataclass(frozen=True)
class ResultHeader:
    """What deciding whether a version can be compared needs."""

    id: str
    submission_id: str
    organization_id: str  # the pharma organization
    cro_organization_id: str
    status: str  # PENDING | PROCESSING | COMPLETED | FAILED | REJECTED
    withdrawn: bool
    reviewed_at: datetime | None


@dataclass(frozen=True)
class MeasuredValue:
    """One aggregated value of a version; `qualifier` None means its replicates conflict."""

    result_id: str
    molecule_id: str
    property: str
    sample_code: str
    registration_number: str
    units: str
    qualifier: str | None
    value: float | None


class ComparisonRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def result(self, result_id: str) -> ResultHeader | None:
        """The version; None when the id is unknown or not a UUID."""
        canonical = canonical_uuid(result_id)
        if canonical is None:
            return None
        row = (await self._session.execute(_headers().where(results.c.id == canonical))).first()
        return None if row is None else _header(row)

    async def values(self, result_id: str, property_name: str = "") -> list[MeasuredValue]:
        """The version's values (only `property_name`'s when given), by sample code, then property."""
        query = _values().where(result_values.c.result_id == result_id)
        if property_name:
            query = query.where(result_values.c.property == property_name)
        rows = await self._session.execute(query.order_by(result_values.c.sample_code, result_values.c.property))
        return [_value(row) for row in rows]

    async def accepted(self, organization_id: str) -> list[ResultHeader]:
        """The organization's versions the pharma side accepted, by review date."""
        rows = await self._session.execute(
            _headers()
            .where(
                results.c.organization_id == organization_id,
                results.c.review_decision == ACCEPTED,
                results.c.withdrawn.is_(False),
            )
            .order_by(results.c.reviewed_at, results.c.id)
        )
        return [_header(row) for row in rows]

    async def accepted_values(self, organization_id: str, property_name: str = "") -> list[MeasuredValue]:
        """The values of every accepted version of the organization (only `property_name`'s when given)."""
        query = _values().where(
            results.c.organization_id == organization_id,
            results.c.review_decision == ACCEPTED,
            results.c.withdrawn.is_(False),
        )
        if property_name:
            query = query.where(result_values.c.property == property_name)
        rows = await self._session.execute(
            query.order_by(result_values.c.result_id, result_values.c.sample_code, result_values.c.property)
        )
        return [_value(row) for row in rows]


def _headers() -> sa.Select[Any]:
    return sa.select(
        results.c.id,
        results.c.submission_id,
        results.c.organization_id,
        results.c.cro_organization_id,
        results.c.status,
        results.c.withdrawn,
        results.c.reviewed_at,
    )


def _values() -> sa.Select[Any]:
    """result_values (joined to their version) with the registration number the molecule had when submitted."""
    submitted = sa.and_(
        submission_molecules.c.submission_id == results.c.submission_id,
        submission_molecules.c.molecule_id == result_values.c.molecule_id,
    )
    return sa.select(
        result_values.c.result_id,
        result_values.c.molecule_id,
        result_values.c.property,
        result_values.c.sample_code,
        sa.func.coalesce(submission_molecules.c.registration_number, "").label("registration_number"),
        result_values.c.units,
        result_values.c.qualifier,
        result_values.c.value,
    ).select_from(
        result_values.join(results, results.c.id == result_values.c.result_id).outerjoin(
            submission_molecules, submitted
        )
    )


def _header(row: Any) -> ResultHeader:
    return ResultHeader(
        id=str(row.id),
        submission_id=str(row.submission_id),
        organization_id=str(row.organization_id),
        cro_organization_id=str(row.cro_organization_id),
        status=row.status,
        withdrawn=row.withdrawn,
        reviewed_at=row.reviewed_at,
    )


def _value(row: Any) -> MeasuredValue:
    return MeasuredValue(
        result_id=str(row.result_id),
        molecule_id=str(row.molecule_id),
        property=row.property,
        sample_code=row.sample_code,
        registration_number=row.registration_number,
        units=row.units,
        qualifier=row.qualifier,
        value=row.value,
    )

"""Result rows ↔ ResultVersion; stored uploads; a version's values, replicates and row errors.

The worker writes a version's values, measurements and errors in one transaction with its COMPLETED
status, after deleting whatever a previous delivery may have left: a redelivered item never duplicates.
At most one version per submission is current (the unique partial index results_one_current)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.cro.domain.result_versions import Mode, ResultStatus, ResultVersion
from services.cro.domain.results import Aggregate, Measurement, RowError
from services.cro.domain.vocabulary import Qualifier
from services.cro.store.tables import (
    result_errors,
    result_files,
    result_measurements,
    result_values,
    results,
    submission_molecules,
    submissions,
)
from services.runtime.db import canonical_uuid
from services.runtime.pagination import PageRequest

_f = result_files.c
_r = results.c
_v = result_values.c
_m = result_measurements.c
_e = result_errors.c

INSERT_BATCH = 1000


@dataclass(frozen=True)
class StoredResultsFile:
    storage_key: str
    organization_id: str
    filename: str
    size_bytes: int
    sha256: str
    content_type: str
    created_by: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class ResultFilter:
    """Whose versions: the pharma organization's or the CRO organization's (or everyone's, system admin)."""

    organization_id: str = ""
    cro_organization_id: str = ""
    everyone: bool = False
    submission_id: str = ""
    statuses: tuple[str, ...] = ()
    current_only: bool = False


@dataclass(frozen=True)
class StoredValue:
    aggregate: Aggregate
    replicates: tuple[Measurement, ...]


@dataclass(frozen=True)
class StoredError:
    error: RowError
    cells: tuple[str, ...]


@dataclass(frozen=True)
class MoleculeValue:
    version: ResultVersion
    value: StoredValue


def _version(row: Any, submission_name: str = "") -> ResultVersion:
    return ResultVersion(
        id=str(row.id),
        submission_id=str(row.submission_id),
        organization_id=str(row.organization_id),
        cro_organization_id=str(row.cro_organization_id),
        version=row.version,
        status=ResultStatus(row.status),
        storage_key=row.storage_key,
        file_sha256=row.file_sha256,
        input_sha256=row.input_sha256,
        mode=Mode(row.mode),
        uploaded_by=row.uploaded_by,
        filename=row.filename,
        mapping=dict(row.mapping or {}),
        column_units=dict(row.column_units or {}),
        current=row.current,
        superseded_by=str(row.superseded_by) if row.superseded_by else "",
        withdrawn=row.withdrawn,
        format=row.format,
        content_sha256=row.content_sha256,
        total_rows=row.total_rows,
        processed_rows=row.processed_rows,
        values_accepted=row.values_accepted,
        rows_rejected=row.rows_rejected,
        error_count=row.error_count,
        qc=dict(row.qc or {}),
        qc_flag=row.qc_flag,
        qc_note=row.qc_note,
        notes=row.notes,
        failure_reason=row.failure_reason,
        review_decision=row.review_decision,
        review_reason=row.review_reason,
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        submission_name=submission_name,
    )


def _values(version: ResultVersion) -> dict[str, Any]:
    return {
        "status": version.status.value,
        "current": version.current,
        "superseded_by": version.superseded_by or None,
        "withdrawn": version.withdrawn,
        "format": version.format,
        "content_sha256": version.content_sha256,
        "total_rows": version.total_rows,
        "processed_rows": version.processed_rows,
        "values_accepted": version.values_accepted,
        "rows_rejected": version.rows_rejected,
        "error_count": version.error_count,
        "qc": version.qc,
        "qc_flag": version.qc_flag,
        "qc_note": version.qc_note,
        "notes": version.notes,
        "failure_reason": version.failure_reason,
        "review_decision": version.review_decision,
        "review_reason": version.review_reason,
        "reviewed_by": version.reviewed_by,
        "reviewed_at": version.reviewed_at,
        "finished_at": version.finished_at,
        "updated_at": sa.func.now(),
    }


def _qualifier(text: str | None) -> Qualifier | None:
    return Qualifier(text) if text else None


class ResultRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # -- stored files ------------------------------------------------------------------------------------

    async def add_file(self, stored: StoredResultsFile) -> StoredResultsFile:
        await self._session.execute(
            sa.insert(result_files).values(
                storage_key=stored.storage_key, organization_id=stored.organization_id, filename=stored.filename,
                size_bytes=stored.size_bytes, sha256=stored.sha256, content_type=stored.content_type,
                created_by=stored.created_by,
            )
        )
        return stored

    async def get_file(self, storage_key: str) -> StoredResultsFile | None:
        row = (
            await self._session.execute(sa.select(result_files).where(_f.storage_key == storage_key))
        ).one_or_none()
        if row is None:
            return None
        return StoredResultsFile(
            row.storage_key, str(row.organization_id), row.filename, row.size_bytes, row.sha256, row.content_type,
            row.created_by, row.created_at,
        )

    # -- versions ----------------------------------------------------------------------------------------

    def _select(self) -> sa.Select[Any]:
        return sa.select(results, submissions.c.name.label("submission_name")).join(
            submissions, submissions.c.id == _r.submission_id
        )

    async def get(self, result_id: str, *, lock: bool = False) -> ResultVersion | None:
        key = canonical_uuid(result_id)
        if key is None:
            return None
        query = self._select().where(_r.id == key)
        if lock:
            query = query.with_for_update(of=results)
        row = (await self._session.execute(query)).one_or_none()
        return _version(row, row.submission_name) if row else None

    async def of_submission(self, submission_id: str) -> list[ResultVersion]:
        """Every version of a submission, newest first."""
        rows = await self._session.execute(
            self._select().where(_r.submission_id == submission_id).order_by(_r.version.desc())
        )
        return [_version(row, row.submission_name) for row in rows]

    async def add(self, version: ResultVersion) -> None:
        await self._session.execute(
            sa.insert(results).values(
                id=version.id, submission_id=version.submission_id, organization_id=version.organization_id,
                cro_organization_id=version.cro_organization_id, version=version.version,
                storage_key=version.storage_key, filename=version.filename, file_sha256=version.file_sha256,
                input_sha256=version.input_sha256, mapping=version.mapping, column_units=version.column_units,
                mode=version.mode.value, uploaded_by=version.uploaded_by, **_values(version),
            )
        )

    async def save(self, version: ResultVersion) -> None:
        await self._session.execute(sa.update(results).where(_r.id == version.id).values(**_values(version)))

    async def set_progress(self, result_id: str, processed_rows: int, *, total: int | None = None) -> None:
        """Rows validated so far (and the file's data rows, once counted) of a version still processing."""
        values: dict[str, Any] = {"processed_rows": processed_rows, "updated_at": sa.func.now()}
        if total is not None:
            values["total_rows"] = total
        await self._session.execute(
            sa.update(results)
            .where(_r.id == result_id, _r.status == ResultStatus.PROCESSING.value)
            .values(**values)
        )

    async def make_current(self, version: ResultVersion) -> ResultVersion | None:
        """`version` becomes its submission's current one and is saved; answers the one it replaced (now
        superseded). A newer version that is current already stays so: `version` is then superseded by it."""
        current = (
            await self._session.execute(
                sa.select(_r.id, _r.version).where(
                    _r.submission_id == version.submission_id, _r.current, _r.id != version.id
                )
            )
        ).one_or_none()
        if current is not None and current.version > version.version:
            version.current, version.superseded_by = False, str(current.id)
            await self.save(version)
            return None
        if current is not None:
            await self._session.execute(
                sa.update(results)
                .where(_r.id == current.id)
                .values(current=False, superseded_by=version.id, updated_at=sa.func.now())
            )
        version.current = True
        await self.save(version)
        return await self.get(str(current.id)) if current is not None else None

    async def restore_previous(self, withdrawn: ResultVersion) -> ResultVersion | None:
        """After a withdrawal: the latest COMPLETED (or REJECTED) version not withdrawn becomes current again."""
        previous = (
            await self._session.execute(
                sa.select(_r.id)
                .where(
                    _r.submission_id == withdrawn.submission_id,
                    _r.id != withdrawn.id,
                    sa.not_(_r.withdrawn),
                    _r.status.in_([ResultStatus.COMPLETED.value, ResultStatus.REJECTED.value]),
                    _r.version < withdrawn.version,
                )
                .order_by(_r.version.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if previous is None:
            return None
        await self._session.execute(
            sa.update(results)
            .where(_r.id == previous)
            .values(current=True, superseded_by=None, updated_at=sa.func.now())
        )
        return await self.get(str(previous))

    async def find(self, filters: ResultFilter, page: PageRequest) -> tuple[list[ResultVersion], int]:
        """Versions the filter allows, newest first."""
        conditions: list[Any] = []
        if not filters.everyone:
            owners = []
            if filters.organization_id:
                owners.append(_r.organization_id == filters.organization_id)
            if filters.cro_organization_id:
                owners.append(_r.cro_organization_id == filters.cro_organization_id)
            conditions.append(sa.or_(*owners) if owners else sa.false())
        if filters.submission_id:
            submission_key = canonical_uuid(filters.submission_id)
            conditions.append(_r.submission_id == submission_key if submission_key else sa.false())
        if filters.statuses:
            conditions.append(_r.status.in_(filters.statuses))
        if filters.current_only:
            conditions.append(_r.current)
        total = await self._count(results, conditions)
        rows = await self._session.execute(
            self._select()
            .where(*conditions)
            .order_by(_r.created_at.desc(), _r.version.desc())
            .offset(page.offset)
            .limit(page.page_size)
        )
        return [_version(row, row.submission_name) for row in rows], total

    async def _count(self, selectable: Any, conditions: Sequence[Any]) -> int:
        found = await self._session.execute(sa.select(sa.func.count()).select_from(selectable).where(*conditions))
        return int(found.scalar_one())

    # -- what the worker found ---------------------------------------------------------------------------

    async def clear_outcome(self, result_id: str) -> None:
        """Whatever an earlier, interrupted delivery wrote for this version."""
        for table in (result_values, result_measurements, result_errors):
            await self._session.execute(sa.delete(table).where(table.c.result_id == result_id))

    async def add_outcome(
        self,
        result_id: str,
        aggregates: Sequence[Aggregate],
        measurements: Sequence[Measurement],
        errors: Sequence[tuple[RowError, Sequence[str]]],
    ) -> None:
        values = [
            {"result_id": result_id, "molecule_id": a.molecule_id, "property": a.property,
             "sample_code": a.sample_code, "units": a.units, "qualifier": a.qualifier.value if a.qualifier else None,
             "value": a.value, "mean": a.mean, "sd": a.sd, "n": a.n, "n_censored": a.n_censored}
            for a in aggregates
        ]
        replicates = [
            {"result_id": result_id, "row_number": m.row_number, "property": m.property,
             "molecule_id": m.molecule_id, "sample_code": m.sample_code, "qualifier": m.qualifier.value,
             "value": m.value, "units": m.units, "replicate": m.replicate, "notes": m.notes, "original": m.original}
            for m in measurements
        ]
        problems = [
            {"result_id": result_id, "seq": seq, "row_number": e.row_number, "column_name": e.column,
             "code": e.code.value, "reason": e.reason, "property": e.property, "cells": list(cells)}
            for seq, (e, cells) in enumerate(errors, 1)
        ]
        for table, rows in ((result_values, values), (result_measurements, replicates), (result_errors, problems)):
            for start in range(0, len(rows), INSERT_BATCH):
                await self._session.execute(sa.insert(table), rows[start : start + INSERT_BATCH])

    async def aggregates(self, result_id: str) -> list[Aggregate]:
        rows = await self._session.execute(
            sa.select(result_values).where(_v.result_id == result_id).order_by(_v.sample_code, _v.property)
        )
        return [_aggregate(row) for row in rows]

    async def values_page(
        self, result_id: str, page: PageRequest, *, property_name: str = "", sample_code: str = ""
    ) -> tuple[list[StoredValue], int]:
        conditions = [_v.result_id == result_id]
        if property_name:
            conditions.append(_v.property == property_name)
        if sample_code:
            conditions.append(sa.func.upper(_v.sample_code) == sample_code.strip().upper())
        total = await self._count(result_values, conditions)
        rows = list(
            await self._session.execute(
                sa.select(result_values)
                .where(*conditions)
                .order_by(_v.sample_code, _v.property)
                .offset(page.offset)
                .limit(page.page_size)
            )
        )
        replicates = await self._replicates(result_id, [(str(r.molecule_id), r.property) for r in rows])
        return [StoredValue(_aggregate(r), replicates.get((str(r.molecule_id), r.property), ())) for r in rows], total

    async def _replicates(
        self, result_id: str, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[Measurement, ...]]:
        wanted = list(keys)
        if not wanted:
            return {}
        rows = await self._session.execute(
            sa.select(result_measurements)
            .where(_m.result_id == result_id, sa.tuple_(_m.molecule_id, _m.property).in_(wanted))
            .order_by(_m.row_number)
        )
        found: dict[tuple[str, str], list[Measurement]] = {}
        for r in rows:
            found.setdefault((str(r.molecule_id), r.property), []).append(_measurement(r))
        return {key: tuple(group) for key, group in found.items()}

    async def errors(self, result_id: str) -> list[StoredError]:
        rows = await self._session.execute(sa.select(result_errors).where(_e.result_id == result_id).order_by(_e.seq))
        return [
            StoredError(RowError(r.row_number, r.column_name, r.code, r.reason, r.property), tuple(r.cells))
            for r in rows
        ]

    async def registration_numbers(self, submission_id: str) -> dict[str, str]:
        """molecule id → registration number, from the submission's SUBMIT snapshots."""
        sm = submission_molecules.c
        rows = await self._session.execute(
            sa.select(sm.molecule_id, sm.registration_number).where(sm.submission_id == submission_id)
        )
        return {str(r.molecule_id): r.registration_number or "" for r in rows}

    async def of_molecule(
        self, organization_id: str, molecule_id: str, page: PageRequest
    ) -> tuple[list[MoleculeValue], int]:
        """A molecule's values across its organization's versions (not withdrawn nor failed), newest first."""
        molecule_key = canonical_uuid(molecule_id)
        if molecule_key is None:
            return [], 0
        conditions = [
            _v.molecule_id == molecule_key,
            _r.organization_id == organization_id,
            sa.not_(_r.withdrawn),
            _r.status.in_([ResultStatus.COMPLETED.value, ResultStatus.REJECTED.value]),
        ]
        joined = result_values.join(results, _r.id == _v.result_id)
        total = await self._count(joined, conditions)
        rows = list(
            await self._session.execute(
                sa.select(result_values, results, submissions.c.name.label("submission_name"))
                .select_from(joined.join(submissions, submissions.c.id == _r.submission_id))
                .where(*conditions)
                .order_by(_r.created_at.desc(), _v.property)
                .offset(page.offset)
                .limit(page.page_size)
            )
        )
        # The page's replicates in one query: every row is this molecule's, keyed by (version, property).
        replicates: dict[tuple[str, str], list[Measurement]] = {}
        if rows:
            found = await self._session.execute(
                sa.select(result_measurements)
                .where(_m.molecule_id == molecule_key, _m.result_id.in_({str(row.id) for row in rows}))
                .order_by(_m.row_number)
            )
            for r in found:
                replicates.setdefault((str(r.result_id), r.property), []).append(_measurement(r))
        out = []
        for row in rows:
            value = StoredValue(_aggregate(row), tuple(replicates.get((str(row.id), row.property), ())))
            out.append(MoleculeValue(_version(row, row.submission_name), value))
        return out, total


def _measurement(r: Any) -> Measurement:
    return Measurement(
        molecule_id=str(r.molecule_id), sample_code=r.sample_code, property=r.property,
        qualifier=Qualifier(r.qualifier), value=r.value, units=r.units, replicate=r.replicate,
        notes=r.notes, row_number=r.row_number, original=r.original,
    )


def _aggregate(row: Any) -> Aggregate:
    return Aggregate(
        molecule_id=str(row.molecule_id),
        sample_code=row.sample_code,
        property=row.property,
        units=row.units,
        qualifier=_qualifier(row.qualifier),
        value=row.value,
        mean=row.mean,
        sd=row.sd,
        n=row.n,
        n_censored=row.n_censored,
    )

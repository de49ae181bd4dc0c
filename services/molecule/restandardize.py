"""Re-standardize stored molecules with the current rules; report, and split, records they change.

`python -m services.molecule.restandardize [--dry-run] [--organization ID]` (DATABASE_URL as for
the service). Until the standardization rules of chemistry.py / fragment_parent.py changed,
metal-containing compounds were registered under their largest organic fragment: cisplatin as
ammonia, ferrocene as cyclopentadiene, NaCl as HCl — and merged with the real ammonia, etc. Every
registration keeps its submitted SMILES (molecule_provenance.original_smiles), so the right parent
of each can be computed again:

- unchanged: every registration of the record still gives the stored InChIKey;
- rekey: they all give one other key; the record's identity, structure, fingerprints and
  CALCULATED values are replaced (nothing else moves);
- split: they give several keys. The registrations that give the key of the record's earliest
  registration stay (the record is re-keyed if needed, so ids that other services hold keep
  pointing at the compound first registered under them); every other group moves to the
  organization's molecule with its key, created if there is none (structure and CALCULATED values
  from its earliest registration, no name). Moving a group moves its provenance rows and the
  IMPORTED values whose provenance names one of its import rows; library memberships are copied.
  Values without a row (API registrations, UpdateMolecule, predictions, experiments) and flags
  stay with the record;
- collision: the record's new key is already another record's: reported, never merged here;
- unregistrable: registrations whose SMILES no longer registers are reported (with any of the
  above) and stay where they are.

Without --dry-run each correction is its own transaction, planned again under a row lock, and
records MoleculesChanged (search and query indexes re-read the molecules) and an AuditRecorded
event (action molecule.restandardized or molecule.split, actor ACTOR). PREDICTED values of a
re-keyed record were computed for the old structure; they are counted in the report, not deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import get_args

from molbridge.events.v1.molecule_pb2 import MoleculesChanged

from services.molecule.domain import chemistry
from services.molecule.domain.restandardization import ACTOR, APPLIED, Correction, Kind, Register, plan
from services.molecule.settings import MoleculeSettings
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import MoleculeTransactions, MoleculeUnitOfWork, molecule_transactions
from services.runtime.audit import audit_event
from services.runtime.db import make_engine


async def find_corrections(
    transactions: MoleculeTransactions, organization_id: str | None = None, register: Register = chemistry.register
) -> list[Correction]:
    """The dry run: every record the current rules would change."""
    async with transactions() as uow:
        records = await uow.restandardize.stored_molecules(organization_id)
        owners = {org: await uow.restandardize.key_owners(org) for org in {r.organization_id for r in records}}
    once = functools.lru_cache(maxsize=100_000)(register)  # one SMILES is often registered many times
    found = (plan(record, owners[record.organization_id], once) for record in records)
    return [correction for correction in found if correction is not None]


async def apply(transactions: MoleculeTransactions, corrections: Iterable[Correction]) -> list[Correction]:
    """Carry out the rekeys and splits (collisions are left alone), each in its own transaction and
    planned again under the record's lock; returns what was done."""
    done: list[Correction] = []
    for planned in corrections:
        if planned.kind not in APPLIED:
            continue
        async with transactions() as uow:
            await uow.restandardize.lock_numbering(planned.molecule.organization_id)
            records = await uow.restandardize.stored_molecules(molecule_id=planned.molecule.id, lock=True)
            if not records:  # gone since the plan
                continue
            correction = plan(records[0], await uow.restandardize.key_owners(records[0].organization_id))
            if correction is None or correction.kind not in APPLIED:
                continue
            await _carry_out(uow, correction)
            done.append(correction)
    return done


async def _carry_out(uow: MoleculeUnitOfWork, correction: Correction) -> None:
    record, keeper = correction.molecule, correction.keeper
    touched = [record.id]
    if keeper.inchi_key != record.inchi_key:
        await uow.restandardize.rekey(record.id, keeper.registered)
    for group in correction.moved:
        target = group.existing_id or await uow.restandardize.split_off_target(record.organization_id, group)
        touched.append(target)
        await uow.restandardize.move_registrations(record.id, target, group.registrations)
    details = {
        "from_inchi_key": record.inchi_key,
        "to_inchi_key": keeper.inchi_key,
        "moved_to": ",".join(touched[1:]),
        "registrations_moved": str(sum(len(g.registrations) for g in correction.moved)),
    }
    audit = audit_event(
        f"molecule.{'split' if correction.moved else 'restandardized'}",
        target_type="molecule",
        target_id=record.id,
        details=details,
    )
    changed = MoleculesChanged(organization_id=record.organization_id, molecule_ids=touched)
    for event in (audit, changed):
        uow.record(event, organization_id=record.organization_id, actor_id=ACTOR)


# --- command line ---------------------------------------------------------------------------------------


async def run(database_url: str, *, dry_run: bool, organization_id: str | None, out: Callable[[str], None]) -> int:
    engine = make_engine(database_url, SCHEMA)
    try:
        transactions = molecule_transactions(engine)
        corrections = await find_corrections(transactions, organization_id)
        for correction in corrections:
            out(correction.describe())
        counts = {kind: sum(c.kind == kind for c in corrections) for kind in get_args(Kind)}
        out(f"{len(corrections)} record(s) affected: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
        if not dry_run:
            done = await apply(transactions, corrections)
            out(f"corrected {len(done)} record(s); collisions left for a person to decide")
        return 0
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.molecule.restandardize", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    parser.add_argument("--organization", help="only this organization's molecules")
    args = parser.parse_args(argv)
    settings = MoleculeSettings.from_env("molecule")
    return asyncio.run(run(settings.database_url, dry_run=args.dry_run, organization_id=args.organization, out=print))


if __name__ == "__main__":
    sys.exit(main())

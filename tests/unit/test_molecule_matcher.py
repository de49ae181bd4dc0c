"""StructureMatcher: matching in worker processes gives the in-process answers; its bounds and repairs.

The pathological case (a query that keeps RDKit busy for minutes) is in
tests/integration/test_molecule_search_isolation.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rdkit import Chem

from services.molecule.index.matcher import MatcherLimits, MatchInterrupted, StructureMatcher
from services.molecule.index.search_index import SearchIndex
from tests.unit.test_molecule_search_index import SMARTS, Molecule, index, molecules, pack  # noqa: F401

FAR = 3600.0  # a deadline nobody reaches


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_matching_in_a_worker_gives_the_answers_of_matching_here(index: SearchIndex) -> None:  # noqa: F811
    matcher = StructureMatcher(MatcherLimits(workers=1, per_organization=1))
    try:
        for smarts in SMARTS.values():
            query = Chem.MolFromSmarts(smarts)
            fp = pack(Chem.PatternFingerprint(query, 2048))
            for limit in (None, 10, 1000):
                here = index.substructure("org-a", query, fp, limit, time_budget_s=None)
                scan = index.substructure_scan("org-a", fp, limit, deadline=time.monotonic() + FAR)
                there = await matcher.run_scan("org-a", scan, query)
                assert there == here, (smarts, limit)
        assert matcher.replaced == 0 and matcher.is_healthy()
    finally:
        await matcher.close()


async def test_one_organization_cannot_hold_every_worker() -> None:
    matcher = StructureMatcher(MatcherLimits(workers=2, per_organization=1))
    try:
        async with matcher.session("org-a", time.monotonic() + FAR):
            with pytest.raises(MatchInterrupted):  # its one worker is taken: it waits until its deadline
                async with matcher.session("org-a", time.monotonic() + 0.2):
                    pass
            async with matcher.session("org-b", time.monotonic() + FAR) as other:
                assert await other.match(Chem.MolFromSmarts("c").ToBinary(), b"CC\nc1ccccc1\nC", -1) == [1]
        assert matcher.idle_workers == 2
    finally:
        await matcher.close()


async def test_a_worker_that_died_idle_is_replaced_before_it_is_used(index: SearchIndex) -> None:  # noqa: F811
    matcher = StructureMatcher(MatcherLimits(workers=1, per_organization=1))
    try:
        await matcher.start()
        await eventually(lambda: matcher.idle_workers == 1)
        [pid] = matcher.pids
        os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer, a while before the next search
        await eventually(lambda: not Path(f"/proc/{pid}").exists())
        query = Chem.MolFromSmarts(SMARTS["benzene"])
        fp = pack(Chem.PatternFingerprint(query, 2048))
        scan = index.substructure_scan("org-a", fp, None, deadline=time.monotonic() + FAR)
        result = await matcher.run_scan("org-a", scan, query)
        assert result == index.substructure("org-a", query, fp, None, time_budget_s=None)
        assert matcher.replaced == 1 and pid not in matcher.pids
    finally:
        await matcher.close()


def test_limits_come_from_the_environment() -> None:
    from services.molecule.settings import MoleculeSettings
    from services.runtime.settings import SettingsError

    settings = MoleculeSettings.from_env("molecule", {"MOLBRIDGE_SEARCH_MATCH_WORKERS": "3"})
    assert settings.matcher_limits == MatcherLimits(workers=3, per_organization=1)
    settings = MoleculeSettings.from_env(
        "molecule", {"MOLBRIDGE_SEARCH_MATCH_WORKERS": "2", "MOLBRIDGE_SEARCH_MATCH_WORKERS_PER_ORG": "5"}
    )
    assert settings.matcher_limits == MatcherLimits(workers=2, per_organization=2)
    with pytest.raises(SettingsError, match="MOLBRIDGE_SEARCH_MATCH_WORKERS"):
        MoleculeSettings.from_env("molecule", {"MOLBRIDGE_SEARCH_MATCH_WORKERS": "0"})

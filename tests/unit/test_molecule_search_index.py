"""SearchIndex against brute-force RDKit on rdkit's own NCI sample (first_5K.smi, in the rdkit wheel)."""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import rdFingerprintGenerator

from services.molecule.index.search_index import (
    IndexEntry,
    SearchIndex,
    _nth_set_rows,
    _planes_to_rows,
    _rows_to_planes,
)

RDLogger.DisableLog("rdApp.*")  # the sample has invalid entries on purpose

SMARTS = {
    "benzene": "c1ccccc1",
    "carboxylic acid": "C(=O)[OH]",
    "naphthalene": "c1ccc2ccccc2c1",
    "fused ring atoms": "[R2][R2]",
    "five-membered ring atom": "[r5]",
    "ring nitrogen": "[#7;R]",
    "chlorine": "Cl",
}


def pack(bv: DataStructs.ExplicitBitVect) -> bytes:
    """The chemistry module's packing: bit i -> bit i % 8 of byte i // 8."""
    bits = np.zeros(bv.GetNumBits(), np.uint8)
    DataStructs.ConvertToNumpyArray(bv, bits)
    return np.packbits(bits, bitorder="little").tobytes()


@dataclass(frozen=True)
class Molecule:
    entry: IndexEntry
    mol: Chem.Mol
    morgan: DataStructs.ExplicitBitVect


@pytest.fixture(scope="module")
def molecules() -> list[Molecule]:
    spec = importlib.util.find_spec("rdkit")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "Data" / "NCI" / "first_5K.smi"
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    out = []
    for line in path.read_text().splitlines():
        smiles, number = line.split()
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            continue
        morgan = generator.GetFingerprint(mol)
        entry = IndexEntry(
            id=f"nci-{int(number):05d}",
            morgan_fp=pack(morgan),
            pattern_fp=pack(Chem.PatternFingerprint(mol, 2048)),
            smiles=Chem.MolToSmiles(mol),
            inchi_key=Chem.MolToInchiKey(mol) if len(out) < 300 else "",
        )
        out.append(Molecule(entry, mol, morgan))
    assert len(out) > 4900
    return out


@pytest.fixture(scope="module")
def index(molecules: list[Molecule]) -> SearchIndex:
    idx = SearchIndex()
    entries = [m.entry for m in molecules]
    idx.bulk_load(
        "org-a",
        [e.id for e in entries],
        [e.morgan_fp for e in entries],
        [e.pattern_fp for e in entries],
        [e.smiles for e in entries],
        [e.inchi_key for e in entries],
    )
    return idx


def brute_similar(molecules: list[Molecule], query: Molecule, threshold: float) -> list[tuple[str, float]]:
    sims = DataStructs.BulkTanimotoSimilarity(query.morgan, [m.morgan for m in molecules])
    hits = [(m.entry.id, s) for m, s in zip(molecules, sims, strict=True) if s >= threshold]
    return sorted(hits, key=lambda h: (-h[1], h[0]))


def brute_substructure(molecules: list[Molecule], smarts: str) -> set[str]:
    query = Chem.MolFromSmarts(smarts)
    return {m.entry.id for m in molecules if m.mol.HasSubstructMatch(query)}


def search_substructure(idx: SearchIndex, org: str, smarts: str, **kwargs):
    query = Chem.MolFromSmarts(smarts)
    return idx.substructure(org, query, pack(Chem.PatternFingerprint(query, 2048)), **kwargs)


QUERY_ROWS = (0, 17, 250, 1234, 3000, 4500)


@pytest.mark.parametrize("threshold", [1.0, 0.7, 0.5, 0.3, 0.0])
def test_similarity_equals_brute_force(index: SearchIndex, molecules: list[Molecule], threshold: float):
    for row in QUERY_ROWS:
        query = molecules[row]
        result = index.similar("org-a", query.entry.morgan_fp, threshold=threshold, limit=None)
        assert result.hits == brute_similar(molecules, query, threshold)
        assert not result.truncated
        assert result.searched <= len(molecules)


def test_similarity_limit_keeps_the_best(index: SearchIndex, molecules: list[Molecule]) -> None:
    for row in QUERY_ROWS:
        query = molecules[row]
        expected = brute_similar(molecules, query, 0.2)
        for limit in (1, 5, 50):
            got = index.similar("org-a", query.entry.morgan_fp, threshold=0.2, limit=limit)
            assert got.hits == expected[:limit]


def test_similarity_ties_are_broken_by_id(molecules: list[Molecule]) -> None:
    idx = SearchIndex()
    base = molecules[42]
    twins = [
        Molecule(
            IndexEntry(f"twin-{c}", base.entry.morgan_fp, base.entry.pattern_fp, base.entry.smiles),
            base.mol,
            base.morgan,
        )
        for c in "edcba"
    ]
    content = [*twins, *molecules[:500]]
    idx.add("org", [m.entry for m in content])
    expected = brute_similar(content, base, 0.9)
    assert len([h for h in expected if h[1] == 1.0]) >= 6
    assert idx.similar("org", base.entry.morgan_fp, threshold=0.9, limit=3).hits == expected[:3]
    assert idx.similar("org", base.entry.morgan_fp, threshold=0.9, limit=None).hits == expected


def test_candidates_restrict_both_searches(index: SearchIndex, molecules: list[Molecule]) -> None:
    rng = np.random.default_rng(7)
    ids = [m.entry.id for m in molecules]
    dense = set(rng.choice(ids, len(ids) // 2, replace=False).tolist())
    sparse = set(rng.choice(ids, 40, replace=False).tolist()) | {molecules[17].entry.id}
    query = molecules[17]
    for allowed in (dense, sparse, set()):
        expected = [h for h in brute_similar(molecules, query, 0.3) if h[0] in allowed]
        got = index.similar("org-a", query.entry.morgan_fp, threshold=0.3, limit=None, candidates=allowed)
        assert got.hits == expected
        sub = search_substructure(index, "org-a", SMARTS["benzene"], limit=None, candidates=allowed)
        assert set(sub.hits) == brute_substructure(molecules, SMARTS["benzene"]) & allowed
    # ids unknown to the index are simply not found
    assert index.similar("org-a", query.entry.morgan_fp, threshold=0.0, candidates=["nope"]).hits == []


@pytest.mark.parametrize("name", list(SMARTS))
def test_substructure_equals_brute_force(index: SearchIndex, molecules: list[Molecule], name: str) -> None:
    expected = brute_substructure(molecules, SMARTS[name])
    result = search_substructure(index, "org-a", SMARTS[name], limit=None, time_budget_s=None)
    assert set(result.hits) == expected
    assert len(result.hits) == len(expected)
    assert result.total_matched == len(expected)
    assert result.screened >= result.total_matched
    assert result.checked == result.screened
    assert not result.truncated and not result.timed_out


def test_substructure_limit_and_honest_counts(index: SearchIndex, molecules: list[Molecule]) -> None:
    expected = brute_substructure(molecules, SMARTS["benzene"])
    first = search_substructure(index, "org-a", SMARTS["benzene"], limit=10, time_budget_s=None)
    assert len(first.hits) == 10 and set(first.hits) <= expected
    assert first.truncated and not first.timed_out
    assert 10 <= first.total_matched <= len(expected) <= first.screened
    counted = search_substructure(index, "org-a", SMARTS["benzene"], limit=10, count_all=True)
    assert counted.hits == first.hits  # same deterministic search order
    assert counted.total_matched == len(expected)
    assert not counted.truncated


def test_tiny_time_budget_truncates(index: SearchIndex, molecules: list[Molecule]) -> None:
    expected = brute_substructure(molecules, SMARTS["carboxylic acid"])
    result = search_substructure(index, "org-a", SMARTS["carboxylic acid"], limit=None, time_budget_s=0.0)
    assert result.truncated and result.timed_out
    assert set(result.hits) <= expected
    assert result.total_matched <= len(expected) <= result.screened
    similar = index.similar("org-a", molecules[0].entry.morgan_fp, threshold=0.1, time_budget_s=0.0)
    assert similar.truncated


def test_tenant_isolation(molecules: list[Molecule]) -> None:
    idx = SearchIndex()
    a = [m.entry for m in molecules[:2000]]
    b = [m.entry for m in molecules[2000:4000]]
    b_renamed = [IndexEntry("b-" + e.id, e.morgan_fp, e.pattern_fp, e.smiles, e.inchi_key) for e in b]
    idx.add("org-a", a)
    idx.add("org-b", b_renamed)
    idx.add("org-b", [a[0]])  # the same molecule and id in both organizations
    a_ids = {e.id for e in a}
    for m in molecules[1990:2010]:
        for org, own in (("org-a", a_ids), ("org-b", {e.id for e in b_renamed} | {a[0].id})):
            assert {h for h, _ in idx.similar(org, m.entry.morgan_fp, threshold=0.0, limit=None).hits} <= own
            assert set(search_substructure(idx, org, SMARTS["benzene"], limit=None).hits) <= own
    idx.remove("org-b", [a[0].id])
    assert idx.similar("org-a", a[0].morgan_fp, threshold=1.0).hits[0] == (a[0].id, 1.0)
    assert a[0].id not in {h for h, _ in idx.similar("org-b", a[0].morgan_fp, threshold=1.0).hits}
    assert idx.size("org-a") == 2000 and idx.size("org-b") == 2000 and idx.size("org-c") == 0
    assert idx.similar("org-c", a[0].morgan_fp).hits == []


def test_updates_and_removals_stay_exact(molecules: list[Molecule]) -> None:
    idx = SearchIndex()
    entries = [m.entry for m in molecules[:3000]]
    for start in range(0, 3000, 250):  # many small batches: segments get merged along the way
        idx.add("org", entries[start : start + 250])
    assert idx.size("org") == 3000
    assert idx.stats("org").segments <= 4
    # Replace ten molecules' structures (same ids), remove a hundred others.
    replaced = {e.id: molecules[3000 + i] for i, e in enumerate(entries[:10])}
    idx.add("org", [replace(m.entry, id=i) for i, m in replaced.items()])
    removed = {e.id for e in entries[500:600]}
    assert idx.remove("org", [*removed, "never-there"]) == 100
    assert idx.remove("org", removed) == 0
    assert idx.size("org") == 2900
    current = [
        Molecule(
            replace(replaced[m.entry.id].entry, id=m.entry.id),
            replaced[m.entry.id].mol,
            replaced[m.entry.id].morgan,
        )
        if m.entry.id in replaced
        else m
        for m in molecules[:3000]
        if m.entry.id not in removed
    ]
    for query in (molecules[3000], molecules[3005], molecules[10], molecules[550]):
        assert idx.similar("org", query.entry.morgan_fp, threshold=0.4, limit=None).hits == brute_similar(
            current, query, 0.4
        )
    for smarts in (SMARTS["carboxylic acid"], SMARTS["naphthalene"]):
        found = search_substructure(idx, "org", smarts, limit=None).hits
        assert set(found) == brute_substructure(current, smarts)


def test_removing_most_molecules_compacts(molecules: list[Molecule]) -> None:
    idx = SearchIndex()
    idx.add("org", [m.entry for m in molecules[:1000]])
    before = idx.stats("org").memory_bytes
    idx.remove("org", [m.entry.id for m in molecules[:900]])
    stats = idx.stats("org")
    assert stats.molecules == 100 and stats.memory_bytes < before / 4
    query = molecules[950]
    assert idx.similar("org", query.entry.morgan_fp, threshold=0.3, limit=None).hits == brute_similar(
        molecules[900:1000], query, 0.3
    )
    idx.remove("org", [m.entry.id for m in molecules[900:1000]])
    assert idx.stats("org").segments == 0 and idx.similar("org", query.entry.morgan_fp).hits == []


def test_exact_by_inchi_key(index: SearchIndex, molecules: list[Molecule]) -> None:
    target = molecules[123]
    same_key = sorted(m.entry.id for m in molecules[:300] if m.entry.inchi_key == target.entry.inchi_key)
    assert index.exact("org-a", target.entry.inchi_key) == same_key
    assert target.entry.id in same_key
    assert index.exact("org-a", "XXXXXXXXXXXXXX-XXXXXXXXXX-X") == []
    assert index.exact("org-b", target.entry.inchi_key) == []


def test_bulk_load_replaces_and_keeps_the_last_duplicate(molecules: list[Molecule]) -> None:
    idx = SearchIndex()
    idx.add("org", [m.entry for m in molecules[:100]])
    first, second = molecules[200].entry, molecules[201].entry
    rows = [first, second, IndexEntry(first.id, second.morgan_fp, second.pattern_fp, second.smiles)]
    morgan = np.frombuffer(b"".join(e.morgan_fp for e in rows), np.uint8).reshape(3, 256)
    loaded = idx.bulk_load(
        "org",
        np.array([e.id for e in rows]),
        morgan,
        [e.pattern_fp for e in rows],
        [e.smiles for e in rows],
    )
    assert loaded == 2 and idx.size("org") == 2
    both = sorted([(first.id, 1.0), (second.id, 1.0)])
    assert idx.similar("org", second.morgan_fp, threshold=1.0, limit=None).hits == both
    everything = idx.similar("org", molecules[0].entry.morgan_fp, threshold=0.0, limit=None)
    assert {h for h, _ in everything.hits} == {
        first.id,
        second.id,
    }  # the first bulk load's molecules are gone


def test_readers_run_alongside_a_writer(molecules: list[Molecule]) -> None:
    idx = SearchIndex()
    idx.add("org", [m.entry for m in molecules[:1000]])
    query = molecules[5]
    baseline = {h for h, _ in idx.similar("org", query.entry.morgan_fp, threshold=0.3, limit=None).hits}
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                found = idx.similar("org", query.entry.morgan_fp, threshold=0.3, limit=None)
                hits = {h for h, _ in found.hits}
                assert baseline <= hits  # writers only add molecules here: what was found stays found
                search_substructure(idx, "org", SMARTS["benzene"], limit=20)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for start in range(1000, 4000, 200):
        idx.add("org", [m.entry for m in molecules[start : start + 200]])
    stop.set()
    for t in readers:
        t.join()
    assert not errors
    assert idx.size("org") == 4000


def test_bit_planes_round_trip() -> None:
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 256, size=(1000, 256), dtype=np.uint8)
    planes = _rows_to_planes(rows)
    assert planes.shape == (2048, 16)
    bits = np.unpackbits(rows, axis=1, bitorder="little")
    assert ((planes[5, 0] >> np.uint64(3)) & np.uint64(1)) == bits[3, 5]
    assert ((planes[2047, 15] >> np.uint64(39)) & np.uint64(1)) == bits[999, 2047]
    some = np.array([0, 1, 63, 64, 500, 999])
    assert np.array_equal(_planes_to_rows(planes, some), rows[some])
    assert np.array_equal(_planes_to_rows(planes, np.arange(1000)), rows)


def test_ids_sharing_a_hash_are_still_told_apart(molecules: list[Molecule]) -> None:
    idx = SearchIndex(id_hash=lambda raw: len(raw) % 3)  # collisions everywhere
    content = molecules[:600]
    for start in range(0, 600, 150):
        idx.add("org", [m.entry for m in content[start : start + 150]])
    removed = {m.entry.id for m in content[::7]}
    assert idx.remove("org", removed) == len(removed)
    kept = [m for m in content if m.entry.id not in removed]
    allowed = {m.entry.id for m in kept[::3]} | {"nci-99999", "x"}
    query = kept[10]
    assert idx.size("org") == len(kept)
    assert idx.similar("org", query.entry.morgan_fp, threshold=0.2, limit=None, candidates=allowed).hits == [
        h for h in brute_similar(kept, query, 0.2) if h[0] in allowed
    ]


def test_nth_set_rows_reads_only_the_requested_slice() -> None:
    rng = np.random.default_rng(11)
    mask = rng.integers(0, 2**63, size=40, dtype=np.uint64) & rng.integers(0, 2**63, size=40, dtype=np.uint64)
    mask[5:9] = 0
    every = np.flatnonzero(np.unpackbits(mask.view(np.uint8), bitorder="little"))
    cumulative = np.cumsum(np.bitwise_count(mask), dtype=np.int64)
    for start, stop in ((0, 1), (0, len(every)), (3, 70), (100, 101), (len(every) - 5, len(every))):
        assert np.array_equal(_nth_set_rows(mask, cumulative, start, stop), every[start:stop])


def test_bad_input_is_rejected(index: SearchIndex, molecules: list[Molecule]) -> None:
    with pytest.raises(ValueError, match="256 bytes"):
        index.similar("org-a", b"\x00" * 128)
    with pytest.raises(ValueError, match="threshold"):
        index.similar("org-a", molecules[0].entry.morgan_fp, threshold=1.5)
    with pytest.raises(ValueError, match="limit"):
        index.similar("org-a", molecules[0].entry.morgan_fp, limit=0)
    with pytest.raises(ValueError, match="same length"):
        SearchIndex().bulk_load("org", ["a", "b"], [b"\x00" * 256] * 2, [b"\x00" * 256] * 2, ["C"])
    assert index.similar("org-a", bytes(256)).hits == []  # an empty fingerprint is similar to nothing
    empty = SearchIndex()
    assert empty.bulk_load("org", [], np.zeros((0, 256), np.uint8), [], []) == 0
    assert empty.size("org") == 0 and empty.similar("org", molecules[0].entry.morgan_fp).hits == []

"""Import rules without I/O: progress figures, chunk counts, column plans, row evaluation, kept results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.molecule.domain.imports import (
    ChunkCounts,
    ColumnPlan,
    JobStatus,
    Mode,
    Phase,
    RowError,
    StructureRow,
    Throughput,
    chunk_phase,
    decode_valid,
    encode_valid,
    evaluate_rows,
    parse_mode,
    throughput,
)
from services.runtime.errors import ValidationError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_throughput_is_rows_per_second_since_start_and_eta_at_that_rate() -> None:
    figures = throughput(500, 2000, T0, T0 + timedelta(seconds=10))
    assert figures.rows_per_second == 50
    assert figures.eta_seconds == 30  # 1,500 rows left at 50 rows/s


def test_throughput_is_zero_before_anything_is_known() -> None:
    nothing = Throughput(0.0, 0.0)
    assert throughput(0, 2000, T0, T0 + timedelta(seconds=10)) == nothing  # no rows done yet
    assert throughput(100, 2000, None, T0) == nothing  # no worker has started it
    assert throughput(100, 2000, T0, T0) == nothing  # no time has passed
    assert throughput(100, 2000, T0, T0 - timedelta(seconds=1)) == nothing  # clocks disagree


def test_throughput_of_an_ended_job_has_no_eta() -> None:
    assert throughput(2000, 2000, T0, T0 + timedelta(seconds=4), ended=True) == Throughput(500.0, 0.0)
    # Cancelled halfway: the rate it had, and nothing left to wait for.
    assert throughput(1000, 2000, T0, T0 + timedelta(seconds=4), ended=True) == Throughput(250.0, 0.0)
    assert throughput(1000, 2000, T0, T0 + timedelta(seconds=4)).eta_seconds == 4  # had it kept going


def test_chunk_counts_add_up() -> None:
    counts = ChunkCounts.of(rejected=2, created=[True, False, True, True])
    assert counts == ChunkCounts(processed=6, registered=3, merged=1, rejected=2)
    total = counts + ChunkCounts.of(0, [False, False]) + ChunkCounts.of(3, [])
    assert total == ChunkCounts(processed=11, registered=3, merged=3, rejected=5)
    assert total.processed == total.registered + total.merged + total.rejected


def test_modes_and_phases() -> None:
    assert parse_mode("") is Mode.KEEP_VALID
    assert parse_mode("reject_all") is Mode.REJECT_ALL
    with pytest.raises(ValidationError) as error:
        parse_mode("all_or_nothing")
    assert error.value.field_violations[0][0] == "mode"
    assert chunk_phase(Mode.KEEP_VALID) is Phase.REGISTER
    assert chunk_phase(Mode.REJECT_ALL) is Phase.VALIDATE
    assert JobStatus.CANCELLED.terminal and not JobStatus.PROCESSING.terminal


def test_column_plan_reads_only_mapped_cells_in_a_fixed_order() -> None:
    headers = ["ID", "Structure", "IC50 (nM)", "notes", "batch"]
    mapping = {
        "ID": "name",
        "Structure": "smiles",
        "IC50 (nM)": "ic50",
        "notes": "ignore",
        "batch": "custom_batch",
    }
    plan = ColumnPlan.of(headers, mapping)
    assert plan.columns == (1, 0, 2, 4)
    assert plan.has_name
    assert plan.properties == (("IC50 (nM)", "ic50"), ("batch", "custom_batch"))
    assert plan.project(["cmpd-1", "CCO", "12", "whatever", "B7"]) == ("CCO", "cmpd-1", "12", "B7")
    # Unmapped headers are ignored, a name column is optional.
    bare = ColumnPlan.of(headers, {"Structure": "smiles"})
    assert bare.columns == (1,) and not bare.has_name and bare.properties == ()


def test_evaluate_rows_registers_valid_rows_and_gives_every_reason_for_the_others() -> None:
    plan = ColumnPlan.of(
        ["smiles", "name", "IC50", "logp", "custom_note"],
        {"smiles": "smiles", "name": "name", "IC50": "ic50", "logp": "logp", "custom_note": "custom_note"},
    )
    rows = [
        (1, ("CCO", " ethanol ", "12.5", "", "hello")),  # empty logp: no value, not an error
        (2, ("", "nothing", "", "", "")),
        (3, ("C1CC", "broken", "abc", "", "")),
        (4, ("c1ccccc1", "benzene", "2e6", "11", "7")),
        (5, ("CC(=O)[O-].[Na+]", "salt", "", "", "")),
    ]
    results = evaluate_rows(plan, rows)
    assert [type(r) for r in results] == [StructureRow, RowError, RowError, RowError, StructureRow]
    ethanol = results[0]
    assert isinstance(ethanol, StructureRow)
    assert ethanol.row_number == 1 and ethanol.name == "ethanol"
    assert ethanol.values == {"ic50": (12.5, None, "nM"), "custom_note": (None, "hello", "")}
    assert ethanol.registered.canonical_smiles == "CCO"
    assert results[1] == RowError(2, "empty SMILES")
    broken = results[2]
    assert isinstance(broken, RowError)
    assert broken.reason.startswith("invalid SMILES: unclosed ring; IC50: not a number: 'abc'")
    out_of_range = results[3]
    assert isinstance(out_of_range, RowError)
    assert out_of_range.reason == (
        "IC50: out of range for ic50: 2e6 nM (allowed 0–1e6);"
        " logp: out of range for logp: 11 (allowed -10–10)"
    )
    salt = results[4]
    assert isinstance(salt, StructureRow) and salt.registered.canonical_smiles == "CC(=O)O"


def test_evaluate_rows_refuses_an_overlong_name() -> None:
    plan = ColumnPlan.of(["s", "n"], {"s": "smiles", "n": "name"})
    (result,) = evaluate_rows(plan, [(9, ("CCO", "x" * 501))])
    assert result == RowError(9, "name too long: 501 characters (limit 500)")


def test_validated_results_survive_the_round_trip() -> None:
    plan = ColumnPlan.of(["s", "n", "v", "c"], {"s": "smiles", "n": "name", "v": "ic50", "c": "custom_c"})
    rows = evaluate_rows(plan, [(1, ("CCO", "e", "3", "x")), (2, ("c1ccccc1", "", "", "4.5"))])
    valid = [row for row in rows if isinstance(row, StructureRow)]
    assert len(valid) == 2
    assert decode_valid(encode_valid(valid)) == valid
    assert decode_valid(encode_valid([])) == []

"""The pure pieces of the import and search commands: progress formatting and drawing, --map parsing
and merging with the server's suggestions, the chunked upload reader."""

from __future__ import annotations

import io
import math
from email.message import Message
from pathlib import Path

import pytest
from molbridge.molecule.v1 import import_service_pb2 as pb

from cli.client import CliError
from cli.imports import (
    CSV_CONTENT_TYPE,
    MappingRow,
    csv_messages,
    job_stats,
    job_summary,
    merge_mapping,
    parse_map,
)
from cli.progress import (
    CLEAR_TO_END,
    MAX_BAR,
    MIN_BAR,
    ProgressLine,
    RateMeter,
    bar,
    bar_width,
    eta,
    format_bytes,
    format_duration,
    format_rate,
    fraction,
    render,
)
from cli.transfer import UPLOAD_CHUNK_BYTES, content_disposition

MIB = 1024 * 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- formatting --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (12_345_678, "bytes", "12.3 MB/s"),
        (999, "bytes", "999 B/s"),
        (1_500, "bytes", "1.5 kB/s"),
        (250_000_000, "bytes", "250 MB/s"),
        (2_500_000_000, "bytes", "2.5 GB/s"),
        (1234.4, "rows", "1,234 rows/s"),
        (0, "rows", "-- rows/s"),
        (None, "rows", "-- rows/s"),
        (math.inf, "bytes", "-- MB/s"),
    ],
)
def test_rates_read_as_humans_write_them(value: float | None, unit: str, expected: str) -> None:
    assert format_rate(value, unit) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "00:00"),
        (75.4, "01:15"),
        (3599.6, "1:00:00"),
        (3725, "1:02:05"),
        (None, "--:--"),
        (-1, "--:--"),
        (math.nan, "--:--"),
    ],
)
def test_durations_are_minutes_and_seconds_then_hours(seconds: float | None, expected: str) -> None:
    assert format_duration(seconds) == expected


def test_eta_is_the_rest_at_the_current_rate_and_unknown_without_a_rate() -> None:
    assert eta(50, 100, 10.0) == 5.0
    assert eta(120, 100, 10.0) == 0.0
    assert eta(0, 100, None) is None
    assert eta(0, 100, 0.0) is None
    assert eta(0, 0, 10.0) is None


def test_fraction_is_clamped_and_unknown_without_a_total() -> None:
    assert fraction(25, 100) == 0.25
    assert fraction(150, 100) == 1.0
    assert fraction(5, 0) is None


def test_rate_meter_averages_since_its_start() -> None:
    clock = FakeClock()
    meter = RateMeter(clock)
    assert meter.rate(100) is None  # no time has passed
    clock.now += 4
    assert meter.rate(100) == 25.0
    assert meter.elapsed() == 4


def test_byte_sizes_use_decimal_units() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(1_000) == "1.0 kB"
    assert format_bytes(104_857_600) == "105 MB"


# --- the bar and the line ----------------------------------------------------------------------------------


def test_bar_fills_its_width_in_proportion() -> None:
    assert bar(0.5, 10) == "[#####-----]"
    assert bar(0.0, 4) == "[----]"
    assert bar(1.0, 4) == "[####]"


def test_the_bar_width_depends_on_the_terminal_only_within_bounds() -> None:
    assert bar_width(400, "import") == MAX_BAR
    assert MIN_BAR < bar_width(100, "import") < MAX_BAR
    assert bar_width(50, "import") == MIN_BAR
    assert bar_width(40, "import") == 0  # no room for a bar and numbers beside it


SEGMENTS = ["1,000/5,000 rows", "800 rows/s", "ETA 00:05", "registered 990", "merged 5", "rejected 5"]


@pytest.mark.parametrize("columns", [10, 20, 40, 60, 80, 120, 200])
def test_a_terminal_line_never_wraps(columns: int) -> None:
    assert len(render("import", 0.2, SEGMENTS, columns=columns)) <= columns - 1


def test_a_wide_terminal_shows_bar_percentage_and_every_segment() -> None:
    line = render("import", 0.2, SEGMENTS, columns=200)
    assert line == f"import {bar(0.2, bar_width(200, 'import'))}  20% " + "  ".join(SEGMENTS)


def test_a_narrow_terminal_keeps_the_bar_and_leaves_out_the_last_segments() -> None:
    line = render("import", 0.2, SEGMENTS, columns=80)
    assert line.startswith(f"import {bar(0.2, bar_width(80, 'import'))}  20% 1,000/5,000 rows  800 rows/s")
    assert "rejected" not in line


def test_the_bar_stays_put_as_the_numbers_grow() -> None:
    early = render("import", 0.1, ["9/5,000 rows"], columns=100)
    late = render("import", 0.9, ["4,500/5,000 rows", "registered 4,400"], columns=100)
    assert early.index("]") == late.index("]")


def test_a_tiny_terminal_gets_what_fits_of_the_first_segment() -> None:
    assert render("import", 0.2, SEGMENTS, columns=20) == "import  20% 1,000/5"


def test_plain_lines_have_every_segment_and_no_bar() -> None:
    assert render("import", 0.2, SEGMENTS[:2], columns=None) == "import  20% 1,000/5,000 rows  800 rows/s"
    assert render("import", None, ["queued"], columns=80) == "import queued"  # total unknown: no bar


def test_on_a_terminal_the_line_is_redrawn_in_place_and_ended_once() -> None:
    out, clock = io.StringIO(), FakeClock()
    line = ProgressLine(out, "upload", tty=True, columns=80, clock=clock)
    line.update(0.1, ["a"])
    clock.now += 0.01
    line.update(0.2, ["b"])  # within the redraw interval: skipped
    clock.now += 1
    line.update(0.3, ["c"])
    line.finish(1.0, ["done"])
    text = out.getvalue()
    assert text.count("\r") == 3 and text.count(CLEAR_TO_END) == 3
    assert " b" not in text
    assert text.endswith("done" + CLEAR_TO_END + "\n") and text.count("\n") == 1
    line.end()  # already ended: nothing more
    assert out.getvalue() == text


def test_a_detail_line_is_redrawn_below_the_bar_and_ends_the_plain_line() -> None:
    out = io.StringIO()
    line = ProgressLine(out, "import", tty=True, columns=80, clock=FakeClock())
    line.update(None, ["queued"])
    line.update(0.5, ["5/10 rows"], ["rejected 1"], force=True)  # grows to two lines
    line.update(0.6, ["6/10 rows"], ["rejected 2"], force=True)  # back up one line, both redrawn
    line.finish(1.0, ["10/10 rows"])  # no detail any more: the stale line is blanked
    frames = out.getvalue().split("\r")[1:]
    assert frames[0] == "import queued" + CLEAR_TO_END
    assert frames[1] == "import " + bar(0.5, bar_width(80, "import")) + "  50% 5/10 rows" + CLEAR_TO_END + (
        "\n       rejected 1" + CLEAR_TO_END
    )
    assert frames[2].startswith("\x1b[1Aimport ") and frames[2].endswith("\n       rejected 2" + CLEAR_TO_END)
    assert frames[3].startswith("\x1b[1Aimport ") and frames[3].endswith(
        "10/10 rows" + CLEAR_TO_END + "\n" + CLEAR_TO_END + "\n"
    )

    plain = io.StringIO()
    ProgressLine(plain, "import", tty=False).update(0.5, ["5/10 rows"], ["rejected 1"])
    assert plain.getvalue() == "import  50% 5/10 rows  rejected 1\n"


def test_off_a_terminal_plain_lines_come_at_intervals_and_at_the_end() -> None:
    out, clock = io.StringIO(), FakeClock()
    line = ProgressLine(out, "import", tty=False, interval=5.0, clock=clock)
    line.update(0.1, ["first"])  # the first update always shows
    for _ in range(4):
        clock.now += 1
        line.update(0.2, ["between"])
    clock.now += 1.5
    line.update(0.5, ["later"])
    clock.now += 0.5
    line.finish(1.0, ["final"])
    assert out.getvalue().splitlines() == ["import  10% first", "import  50% later", "import 100% final"]
    assert "\r" not in out.getvalue() and CLEAR_TO_END not in out.getvalue()


# --- --map ------------------------------------------------------------------------------------------------


def test_map_splits_at_the_last_equals_sign_and_lowercases_targets() -> None:
    assert parse_map(["IC50 (nM)=ic50", "a=b = SMILES", " Name =name"]) == {
        "IC50 (nM)": "ic50",
        "a=b": "smiles",
        "Name": "name",
    }


@pytest.mark.parametrize("bad", [["smiles"], ["=smiles"], ["SMILES="], ["x=smiles", "x=name"]])
def test_map_refuses_malformed_or_repeated_columns(bad: list[str]) -> None:
    with pytest.raises(CliError):
        parse_map(bad)


HEADERS = ["Compound", "SMILES", "Alt SMILES", "MW", "IC50 (nM)", "notes"]
SUGGESTED = {
    "Compound": "name",
    "SMILES": "smiles",
    "Alt SMILES": "ignore",
    "MW": "molecular_weight",
    "IC50 (nM)": "ic50",
}


def test_without_overrides_the_suggestions_stand_in_column_order() -> None:
    rows = merge_mapping(HEADERS, SUGGESTED, {})
    assert [r.header for r in rows] == HEADERS
    assert {r.header: r.target for r in rows} == {**SUGGESTED, "notes": "ignore"}
    assert rows[-1] == MappingRow("notes", "ignore", "-")


def test_an_override_takes_its_target_away_from_the_suggested_column() -> None:
    rows = merge_mapping(
        HEADERS, SUGGESTED, parse_map(["Alt SMILES=smiles", "mw=ignore", "notes=custom_notes"])
    )
    by_header = {r.header: r for r in rows}
    assert by_header["Alt SMILES"] == MappingRow("Alt SMILES", "smiles", "--map")
    assert by_header["SMILES"] == MappingRow("SMILES", "ignore", "--map took smiles")
    assert by_header["MW"] == MappingRow("MW", "ignore", "--map")  # matched ignoring case
    assert by_header["notes"].target == "custom_notes"
    assert by_header["Compound"] == MappingRow("Compound", "name", "suggested")
    # Exactly one column per real target: what the server requires.
    targets = [r.target for r in rows if r.target != "ignore"]
    assert len(targets) == len(set(targets))


def test_an_override_for_a_missing_column_names_the_columns_of_the_file() -> None:
    with pytest.raises(CliError, match=r'no column "Smile".*"Compound", "SMILES"'):
        merge_mapping(HEADERS, SUGGESTED, {"Smile": "smiles"})


def test_two_overrides_for_one_column_are_refused() -> None:
    with pytest.raises(CliError, match="given twice"):
        merge_mapping(HEADERS, SUGGESTED, {"MW": "ignore", "mw": "molecular_weight"})


# --- upload reader ------------------------------------------------------------------------------------------


def test_the_file_goes_in_pieces_of_at_most_1_mib_the_first_with_the_content_type(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    content = b"smiles,name\n" + b"".join(b"C" * (i % 97 + 1) + b",m%d\n" % i for i in range(60_000))
    path.write_bytes(content)
    assert len(content) > 2 * UPLOAD_CHUNK_BYTES
    seen: list[int] = []
    messages = list(csv_messages(path, on_progress=seen.append))
    assert len(messages) == -(-len(content) // UPLOAD_CHUNK_BYTES)
    assert all(m.ByteSize() <= MIB for m in messages)
    assert messages[0].content_type == CSV_CONTENT_TYPE
    assert all(m.content_type == "" for m in messages[1:])
    assert b"".join(m.data for m in messages) == content
    assert seen == [min((i + 1) * UPLOAD_CHUNK_BYTES, len(content)) for i in range(len(messages))]


def test_the_reader_reads_as_the_sender_takes(tmp_path: Path) -> None:
    path = tmp_path / "growing.csv"
    path.write_bytes(b"a" * 10)
    messages = csv_messages(path, chunk_bytes=10)
    assert next(messages).data == b"a" * 10
    with path.open("ab") as more:  # written after the first piece was taken: still sent
        more.write(b"b" * 5)
    assert [m.data for m in messages] == [b"b" * 5]


def test_an_empty_file_is_one_empty_message_with_the_content_type(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    [message] = csv_messages(path)
    assert message.content_type == CSV_CONTENT_TYPE and message.data == b""


@pytest.mark.parametrize("name", ["molecules.csv", "données 2024.csv", 'a"b.csv'])
def test_the_file_name_travels_in_an_ascii_content_disposition(name: str) -> None:
    header = content_disposition(name)
    assert header.isascii()
    message = Message()
    message["content-disposition"] = header
    assert message.get_filename() == name  # as the service reads it


# --- job lines -------------------------------------------------------------------------------------------


def test_job_lines_show_rows_rate_eta_and_counts() -> None:
    job = pb.ImportJob(
        job_id="j1",
        status="processing",
        total_rows=5000,
        processed_rows=1200,
        registered=1100,
        merged=60,
        rejected=40,
        rows_per_second=812.4,
        eta_seconds=4.7,
    )
    assert (
        job_stats(job) == "1,200/5,000 rows  812 rows/s  ETA 00:05  registered 1,100  merged 60  rejected 40"
    )
    job.status = "completed"
    job.processed_rows = 5000
    job.created_at.FromSeconds(1_700_000_000)
    job.finished_at.FromSeconds(1_700_000_007)
    assert job_summary(job) == (
        "Import j1 completed in 00:07: 5,000 of 5,000 rows, registered 1,100, merged 60, rejected 40"
    )
    assert job_stats(pb.ImportJob(status="queued", total_rows=10)) == "queued, 10 rows"

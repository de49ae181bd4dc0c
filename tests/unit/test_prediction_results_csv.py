"""The CSV download of a job's values: header, full-precision numbers, formula-neutralised text."""

from __future__ import annotations

import csv
import io

from services.prediction.domain import results_csv
from services.prediction.domain.jobs import Prediction
from services.runtime.spreadsheet import neutralise_cell


def parsed(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_the_header_names_every_column_of_a_result() -> None:
    assert parsed(results_csv.header()) == [list(results_csv.HEADER)]
    assert results_csv.filename("j-1") == "prediction-j-1-results.csv"


def test_rows_keep_numbers_whole_and_neutralise_text_a_spreadsheet_would_run() -> None:
    rows = [
        Prediction("m-1", "logp", -2.5, "log units", 0.875, "baseline", "1.0"),
        Prediction("m-2", '=HYPERLINK("x")', 1e-07, "-log(mol/L)", 1.0, "@model", "+1"),
    ]
    assert parsed(results_csv.rows(rows)) == [
        ["m-1", "logp", "-2.5", "log units", "0.875", "baseline", "1.0"],
        ["m-2", '\'=HYPERLINK("x")', "1e-07", "'-log(mol/L)", "1.0", "'@model", "+1"],
    ]


def test_plain_numbers_are_not_formulas() -> None:
    assert [neutralise_cell(v) for v in ("-1.5", "+2e3", "=1+1", "\tx", "")] == [
        "-1.5",
        "+2e3",
        "'=1+1",
        "'\tx",
        "",
    ]


def test_no_rows_is_no_text() -> None:
    assert results_csv.rows([]) == ""

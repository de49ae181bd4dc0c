"""`molbridge results …` without a gateway: argument parsing (units, statuses, the review decision), plot
file names, and what the tables show (values with qualifiers, comparison scores, model accuracy)."""

from __future__ import annotations

import argparse

import pytest
from molbridge.cro.v1 import result_service_pb2 as pb

from cli import results
from cli.client import CliError
from cli.main import build_parser
from cli.results import (
    COMPARISON_HEADERS,
    accuracy_rows,
    comparison_notes,
    comparison_rows,
    measured_text,
    parse_units,
    plot_filename,
    result_rows,
    result_status,
    result_summary,
    review_request,
    value_table,
)


def test_units_per_column_keep_their_case_and_split_on_the_last_equals() -> None:
    assert parse_units(["IC50=uM", "Sol (a=b)=µg/mL"]) == {"IC50": "uM", "Sol (a=b)": "µg/mL"}
    for bad in ("IC50", "=uM", "IC50="):
        with pytest.raises(CliError, match="expected COLUMN=UNITS"):
            parse_units([bad])
    with pytest.raises(CliError, match="given twice"):
        parse_units(["IC50=uM", "IC50=nM"])


def test_statuses_are_the_domain_words() -> None:
    assert result_status("completed") == "COMPLETED"
    assert result_status("REJECTED") == "REJECTED"
    with pytest.raises(argparse.ArgumentTypeError, match="pending, processing, completed, failed, rejected"):
        result_status("done")


def test_a_review_is_an_acceptance_or_a_rejection_with_its_reason() -> None:
    accepted = review_request("r1", accept=True, reject=False, reason="")
    assert (accepted.id, accepted.decision, accepted.reason) == ("r1", pb.Review.ACCEPTED, "")
    rejected = review_request("r1", accept=False, reject=True, reason="  row 7 is a typo ")
    assert (rejected.decision, rejected.reason) == (pb.Review.REJECTED, "row 7 is a typo")
    with pytest.raises(CliError, match="--reject needs --reason"):
        review_request("r1", accept=False, reject=True, reason=" ")
    with pytest.raises(CliError, match="--reason goes with --reject"):
        review_request("r1", accept=True, reject=False, reason="fine")


def test_the_parser_takes_the_upload_options_and_needs_a_decision_to_review() -> None:
    args = build_parser().parse_args([
        "results", "upload", "r.csv", "--submission", "s1", "--map", "Cmpd=sample_code", "--units", "IC50=uM",
        "--mode", "reject_all", "--preview", "--errors", "bad.csv",
    ])
    assert (args.submission, args.map, args.units, args.mode, args.preview, str(args.errors)) == (
        "s1", ["Cmpd=sample_code"], ["IC50=uM"], "reject_all", True, "bad.csv")
    assert args.gateway_handler is results.upload
    with pytest.raises(SystemExit):
        build_parser().parse_args(["results", "review", "r1"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["results", "review", "r1", "--accept", "--reject"])
    listed = build_parser().parse_args(["results", "list", "--status", "completed", "--status", "failed"])
    assert listed.status == ["COMPLETED", "FAILED"]
    watched = build_parser().parse_args(["results", "watch", "r1", "--errors", "bad.csv"])
    assert (watched.id, str(watched.errors), watched.gateway_handler) == ("r1", "bad.csv", results.watch_result)


def test_plot_files_are_named_after_the_comparison_and_safe() -> None:
    comparison = pb.Comparison(property="solubility", model_name="baseline", model_version="1.2.0")
    assert plot_filename(comparison, "scatter") == "solubility-baseline-1.2.0-scatter.png"
    odd = pb.Comparison(property="ic50", model_name="../my model", model_version="")
    assert plot_filename(odd, "residuals") == "ic50-my_model-unversioned-residuals.png"


def test_values_show_qualifiers_and_conflicts() -> None:
    assert measured_text("<", 10.0, "nM") == "<10 nM"
    assert measured_text("=", 3.5, "mg/mL") == "3.5 mg/mL"
    assert measured_text("~", 2.0, "") == "~2"
    assert measured_text("", None, "nM") == "conflicting (< and >)"


def test_the_molecule_column_appears_only_for_the_pharma_side() -> None:
    cro_view = [pb.ResultValue(sample_code="S-1", property="ic50", units="nM", qualifier="<", value=10, n=0,
                               n_censored=2)]
    headers, rows = value_table(cro_view)
    assert headers == ["SAMPLE", "PROPERTY", "VALUE", "MEAN", "SD", "N", "CENSORED"]
    assert rows == [["S-1", "ic50", "<10 nM", "-", "-", "0", "2"]]
    pharma_view = [pb.ResultValue(sample_code="S-1", molecule_id="m1", registration_number="ACME-000001",
                                  property="ic50", units="nM", qualifier="=", value=12.5, mean=12.5, sd=1.25, n=2)]
    headers, rows = value_table(pharma_view)
    assert headers[:3] == ["SAMPLE", "MOLECULE", "PROPERTY"]
    assert rows == [["S-1", "ACME-000001", "ic50", "12.5 nM", "12.5", "1.25", "2", "0"]]


TOO_FEW = "needs at least 2 numeric pairs"


def _summary(**fields: object) -> pb.ComparisonSummary:
    return pb.ComparisonSummary(**fields)  # type: ignore[arg-type]


def test_a_comparison_row_has_every_score_and_says_which_are_undefined() -> None:
    full = pb.Comparison(
        property="solubility", model_name="baseline", model_version="1.0", units="mg/mL", scale="LOG10",
        summary=_summary(n=3, mae=0.41234, rmse=0.5, r2=-0.25, spearman=0.5, bias=0.1,
                         within_rule="WITHIN_0_5_LOG_UNITS", within=2, within_counted=3, within_share=2 / 3,
                         censored_consistent=1, censored_inconsistent=1,
                         confidence=pb.ConfidenceSplit(high=pb.ConfidenceGroup(n=2, mae=0.2),
                                                       low=pb.ConfidenceGroup(n=1, mae=0.8))),
    )
    sparse = pb.Comparison(
        property="logp", model_name="baseline", model_version="1.0", scale="LOG_UNITS",
        summary=_summary(n=1, mae=0.3, rmse=0.3, bias=-0.3, within_rule="WITHIN_0_5_LOG_UNITS", within=1,
                         within_counted=1, within_share=1.0,
                         undefined={"r2": TOO_FEW, "spearman": TOO_FEW}),
    )
    rows = comparison_rows([full, sparse])
    assert len(rows[0]) == len(COMPARISON_HEADERS)
    assert rows[0] == ["solubility", "baseline", "1.0", "LOG10", "3", "0.412", "0.5", "-0.25", "0.5", "0.1",
                       "2/3 (67%)", "1/1", "0.2/0.8"]
    assert rows[1][5:11] == ["0.3", "0.3", "-", "-", "-0.3", "1/1 (100%)"]
    assert rows[1][12] == "-"  # no confidence split
    notes = comparison_notes([full, sparse])
    assert notes[0] == "solubility / baseline 1.0: errors on log10(mg/mL); within 0.5 log units"
    assert "  r2: needs at least 2 numeric pairs" in notes


def test_accuracy_rows_list_each_version() -> None:
    accuracy = pb.ModelAccuracy(model_name="baseline", property="solubility", versions=[
        pb.VersionAccuracy(model_version="1.0", overall=_summary(n=4, mae=0.5, within=1, within_counted=4,
                                                                 within_share=0.25),
                           results=[pb.ResultScore(result_id="r1"), pb.ResultScore(result_id="r2")]),
        pb.VersionAccuracy(model_version="1.1", overall=_summary(n=0)),
    ])
    rows = accuracy_rows([accuracy])
    assert [row[:2] for row in rows] == [["solubility", "1.0"], ["solubility", "1.1"]]
    assert rows[0][3:6] == ["2", "4", "0.5"] and rows[0][8] == "1/4 (25%)"
    assert rows[1][4:] == ["0", "-", "-", "-", "-"]


def test_result_listing_and_summary() -> None:
    result = pb.Result(id="r1", submission_id="s1", submission_name="Round 1", version=2,
                       status=pb.Result.COMPLETED, current=True, total_rows=12, values_accepted=9, rows_rejected=3,
                       error_count=3, qc_flag=pb.QcSummary.WARNING,
                       review=pb.Review(decision=pb.Review.REJECTED, reason="typo"))
    row = result_rows([result])[0]
    assert row[:10] == ["r1", "Round 1", "2", "COMPLETED", "yes", "12", "9", "3", "WARNING", "REJECTED"]
    assert result_summary(result) == ("Results version 2 of submission Round 1 COMPLETED: 12 rows, 9 values "
                                      "accepted, 3 rows rejected (3 errors), QC WARNING")
    one = pb.Result(submission_id="s1", version=1, status=pb.Result.FAILED, total_rows=1, rows_rejected=1,
                    error_count=1)
    assert result_summary(one) == "Results version 1 of submission s1 FAILED: 1 row, 0 values accepted, 1 row " \
                                  "rejected (1 error), QC -"

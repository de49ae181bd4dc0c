"""Results commands (issue 12): `results upload FILE --submission ID` (upload, optional preview, process,
live progress, QC summary), `results list|status|values|errors|review`, and predicted vs measured:
`results compare ID` (scores per property and model version, `--plot DIR` for the PNGs) and
`results accuracy MODEL` (a model's versions over the organization's accepted results)."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
from molbridge.cro.v1 import result_service_pb2 as pb

from cli import output
from cli.app import add_command
from cli.arguments import column_values, enum_choice, truncate
from cli.client import CliError, Gateway, describe_rpc_error
from cli.cro_services import NAME_WIDTH, show, show_list
from cli.imports import MODES, MappingRow, merge_mapping, parse_map
from cli.progress import ProgressLine, format_bytes, format_count, fraction
from cli.transfer import readable_file, upload_with_progress

CSV_CONTENT_TYPE = "text/csv"
PREVIEW_ROWS = 20  # the server's default: a screenful, enough to check a mapping
EXAMPLE_WIDTH = 30
NOT_CREATED = "x-molbridge-not-created"  # ProcessResults' initial metadata: the current version, unchanged
PLOT_KINDS = ("scatter", "residuals")
FINAL = frozenset({pb.Result.COMPLETED, pb.Result.FAILED, pb.Result.REJECTED})
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# --- parsing ---------------------------------------------------------------------------------------------


def parse_units(values: Sequence[str]) -> dict[str, str]:
    """`--units COLUMN=UNITS` values as {column: units} (wide-format columns); the last `=` splits, units
    are kept as written (case matters: uM is micromolar, um micrometre)."""
    return column_values(values, "--units", "COLUMN=UNITS", '--units "IC50=uM"')


def result_status(value: str) -> str:
    """A Result.Status word (ListResultsRequest.status is text) from `completed` or `COMPLETED`."""
    return pb.Result.Status.Name(enum_choice(pb.Result.Status, value, "status"))  # type: ignore[arg-type]


def review_request(result_id: str, *, accept: bool, reject: bool, reason: str) -> pb.ReviewResultRequest:
    """ACCEPTED or REJECTED; a rejection needs its reason (the CRO reads it to correct the upload)."""
    if accept == reject:
        raise CliError("choose one: --accept or --reject --reason TEXT")
    if reject and not reason.strip():
        raise CliError("--reject needs --reason TEXT: the CRO reads it to correct the results")
    if accept and reason.strip():
        raise CliError("--reason goes with --reject (an acceptance has no reason)")
    decision = pb.Review.ACCEPTED if accept else pb.Review.REJECTED
    return pb.ReviewResultRequest(id=result_id, decision=decision, reason=reason.strip())


def plot_filename(comparison: pb.Comparison, kind: str) -> str:
    """`solubility-baseline-1.2.0-scatter.png`: one file per comparison and kind, safe on any file system."""
    parts = (comparison.property, comparison.model_name, comparison.model_version or "unversioned", kind)
    return "-".join(_UNSAFE_NAME.sub("_", part).strip("._") or "_" for part in parts) + ".png"


# --- formatting ------------------------------------------------------------------------------------------


def number(value: float | None, digits: int = 3) -> str:
    """A figure with `digits` significant digits ("-" when absent or not finite)."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def optional(message: Any, field: str, digits: int = 3) -> str:
    """An `optional double` field: "-" when it is not set."""
    return number(getattr(message, field), digits) if message.HasField(field) else "-"


def share(count: int, of: int, fraction_set: bool, value: float) -> str:
    """`3/4 (75%)`; "-" when the rule applied to nothing."""
    if not of:
        return "-"
    percent = f" ({value:.0%})" if fraction_set else ""
    return f"{count}/{of}{percent}"


def measured_text(qualifier: str, value: float | None, units: str) -> str:
    """`<10 nM`, `3.5 mg/mL`, `~2`; "conflicting" when the replicates are censored both ways."""
    if value is None:
        return "conflicting (< and >)"
    prefix = qualifier if qualifier in ("<", ">", "~") else ""
    return f"{prefix}{number(value, 4)} {units}".strip()


def counted(n: int, noun: str) -> str:
    """`1 row`, `3 rows`, `1,200 errors`."""
    return f"{format_count(n)} {noun}{'' if n == 1 else 's'}"


def qc_flag_word(result: pb.Result) -> str:
    return output.enum_word(result, "qc_flag") if result.qc_flag else "-"


def review_word(result: pb.Result) -> str:
    if not result.HasField("review") or not result.review.decision:
        return "-"
    return output.enum_word(result.review, "decision")


RESULT_HEADERS = ["ID", "SUBMISSION", "VERSION", "STATUS", "CURRENT", "ROWS", "ACCEPTED", "REJECTED", "QC",
                  "REVIEW", "CREATED"]


def result_rows(results: Sequence[pb.Result], *, name_width: int = NAME_WIDTH) -> list[list[str]]:
    return [
        [
            r.id,
            truncate(r.submission_name, name_width) or r.submission_id,
            str(r.version),
            output.enum_word(r, "status") + (" (withdrawn)" if r.withdrawn else ""),
            "yes" if r.current else "no",
            format_count(r.total_rows),
            format_count(r.values_accepted),
            format_count(r.rows_rejected),
            qc_flag_word(r),
            review_word(r),
            output.timestamp(r.created_at),
        ]
        for r in results
    ]


def result_fields(r: pb.Result) -> str:
    review = "-"
    if r.HasField("review") and r.review.decision:
        reason = f": {r.review.reason}" if r.review.reason else ""
        review = (f"{output.enum_word(r.review, 'decision')}{reason} "
                  f"({r.review.reviewed_by or '-'}, {output.timestamp(r.review.reviewed_at)})")
    qc = r.qc
    pairs = [
        ("result", r.id),
        ("submission", f"{r.submission_id} ({r.submission_name})" if r.submission_name else r.submission_id),
        ("version", f"{r.version}{' (current)' if r.current else ''}"
                    f"{f', superseded by {r.superseded_by}' if r.superseded_by else ''}"
                    f"{', withdrawn' if r.withdrawn else ''}"),
        ("status", output.enum_word(r, "status")),
        ("file", f"{r.filename or '-'} ({r.format or '-'}, {r.mode or '-'})"),
        ("rows", f"{format_count(r.processed_rows)} of {format_count(r.total_rows)} read"),
        ("values accepted", format_count(r.values_accepted)),
        ("rows rejected", f"{format_count(r.rows_rejected)} ({counted(r.error_count, 'error')})"),
        ("qc", f"{qc_flag_word(r)}{f': {r.qc_note}' if r.qc_note else ''}"
               f"{'' if not qc.conflicting else f'; {qc.conflicting} conflicting'}"
               f"{'' if not qc.missing else f'; {len(qc.missing)} missing'}"),
        ("review", review),
    ]
    if r.failure_reason:
        pairs.append(("failure", r.failure_reason))
    if r.notes:
        pairs.append(("notes", r.notes))
    pairs += [("uploaded", f"{output.timestamp(r.created_at)} by {r.uploaded_by or '-'}"),
              ("finished", output.timestamp(r.finished_at))]
    return output.fields(pairs)


QC_HEADERS = ["PROPERTY", "ACCEPTED", "REJECTED", "SAMPLES"]


def qc_rows(qc: pb.QcSummary) -> list[list[str]]:
    return [[p.property, str(p.accepted), str(p.rejected), str(p.samples)] for p in qc.per_property]


def result_text(r: pb.Result) -> str:
    parts = [result_fields(r)]
    if r.qc.per_property:
        parts.append(output.table(QC_HEADERS, qc_rows(r.qc)))
    if r.qc.missing:
        missing = ", ".join(f"{m.sample_code} {m.property}" for m in r.qc.missing)
        parts.append(f"missing: {missing}")
    return "\n\n".join(parts)


def result_summary(r: pb.Result) -> str:
    """One line for the end of an upload."""
    return (f"Results version {r.version} of submission {r.submission_name or r.submission_id} "
            f"{output.enum_word(r, 'status')}: {counted(r.total_rows, 'row')}, "
            f"{counted(r.values_accepted, 'value')} accepted, {counted(r.rows_rejected, 'row')} rejected "
            f"({counted(r.error_count, 'error')}), QC {qc_flag_word(r)}")


def value_table(values: Sequence[pb.ResultValue]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a version's values; the molecule column only when the caller may see molecules
    (the pharma side: the CRO's view has none)."""
    with_molecules = any(v.registration_number or v.molecule_id for v in values)
    headers = ["SAMPLE", *(["MOLECULE"] if with_molecules else []), "PROPERTY", "VALUE", "MEAN", "SD", "N",
               "CENSORED"]
    rows = [
        [
            v.sample_code,
            *([v.registration_number or v.molecule_id or "-"] if with_molecules else []),
            v.property,
            measured_text(v.qualifier, v.value if v.HasField("value") else None, v.units),
            optional(v, "mean", 4),
            optional(v, "sd", 3),
            str(v.n),
            str(v.n_censored),
        ]
        for v in values
    ]
    return headers, rows


COMPARISON_HEADERS = ["PROPERTY", "MODEL", "VERSION", "SCALE", "N", "MAE", "RMSE", "R²", "SPEARMAN", "BIAS",
                      "WITHIN", "CENSORED OK/NOT", "MAE HIGH/LOW CONF"]


def confidence_text(split: pb.ConfidenceSplit) -> str:
    if not (split.high.n and split.low.n):
        return "-"
    return f"{number(split.high.mae)}/{number(split.low.mae)}"


def comparison_rows(comparisons: Sequence[pb.Comparison]) -> list[list[str]]:
    rows = []
    for c in comparisons:
        s = c.summary
        rows.append([
            c.property,
            c.model_name,
            c.model_version or "-",
            c.scale or "-",
            str(s.n),
            optional(s, "mae"),
            optional(s, "rmse"),
            optional(s, "r2"),
            optional(s, "spearman"),
            optional(s, "bias"),
            share(s.within, s.within_counted, s.HasField("within_share"), s.within_share),
            f"{s.censored_consistent}/{s.censored_inconsistent}",
            confidence_text(s.confidence),
        ])
    return rows


def comparison_notes(comparisons: Sequence[pb.Comparison]) -> list[str]:
    """What the table's figures mean, and why a missing one is missing."""
    notes = []
    for c in comparisons:
        label = f"{c.property} / {c.model_name} {c.model_version}".rstrip()
        rule = {"WITHIN_0_5_LOG_UNITS": "within 0.5 log units", "WITHIN_2_FOLD": "within 2-fold"}.get(
            c.summary.within_rule, c.summary.within_rule)
        scale = {"LOG10": f"errors on log10({c.units})", "LOG_UNITS": "errors in log units",
                 "LINEAR": f"errors in {c.units or 'the property units'}"}.get(c.scale, c.scale)
        notes.append(f"{label}: {scale}; {rule}" if rule else f"{label}: {scale}")
        notes.extend(f"  {name}: {why}" for name, why in sorted(c.summary.undefined.items()))
    return notes


ACCURACY_HEADERS = ["PROPERTY", "VERSION", "FIRST USED", "RESULTS", "N", "MAE", "RMSE", "R²", "WITHIN"]


def accuracy_rows(accuracies: Sequence[pb.ModelAccuracy]) -> list[list[str]]:
    return [
        [
            a.property,
            v.model_version or "-",
            output.timestamp(v.first_used),
            str(len(v.results)),
            str(v.overall.n),
            optional(v.overall, "mae"),
            optional(v.overall, "rmse"),
            optional(v.overall, "r2"),
            share(v.overall.within, v.overall.within_counted, v.overall.HasField("within_share"),
                  v.overall.within_share),
        ]
        for a in accuracies
        for v in a.versions
    ]


def mapping_table(rows: Sequence[MappingRow], preview: pb.ResultsPreview) -> str:
    first = list(preview.rows[0].cells) if preview.rows else []
    lines = [[row.header, row.target, row.origin, truncate(first[i] if i < len(first) else "", EXAMPLE_WIDTH)]
             for i, row in enumerate(rows)]
    return output.table(["COLUMN", "FIELD", "FROM", "EXAMPLE"], lines)


def preview_text(preview: pb.ResultsPreview, rows: Sequence[MappingRow]) -> str:
    """The suggested mapping, then (with a submission) how the previewed rows validate."""
    parts = [f"{preview.format or '?'} format, {preview.encoding or '?'}, {len(preview.headers)} columns",
             mapping_table(rows, preview)]
    if preview.requested_properties:
        parts.append(f"requested properties: {', '.join(preview.requested_properties)}")
    if preview.measurements:
        measurements = [[str(m.row_number), m.sample_code, m.property, m.original or "-",
                         measured_text(m.qualifier, m.value, m.units), m.replicate or "-"]
                        for m in preview.measurements]
        parts.append(output.table(["ROW", "SAMPLE", "PROPERTY", "AS WRITTEN", "CANONICAL", "REPLICATE"],
                                  measurements))
    if preview.errors:
        parts.append(output.table(["ROW", "COLUMN", "CODE", "REASON"], error_rows(preview.errors)))
    elif preview.measurements:
        parts.append(f"the {len(preview.rows)} previewed rows validate")
    return "\n\n".join(parts)


def error_rows(errors: Sequence[pb.RowError]) -> list[list[str]]:
    return [[str(e.row_number), e.column or "-", e.code, e.reason] for e in errors]


def progress_segments(r: pb.Result) -> list[str]:
    status = output.enum_word(r, "status").lower()
    if not r.total_rows:
        return [status]
    return [status, f"{format_count(r.processed_rows)}/{format_count(r.total_rows)} rows",
            f"accepted {format_count(r.values_accepted)}", f"rejected {format_count(r.rows_rejected)}"]


# --- gateway calls ---------------------------------------------------------------------------------------


def watch(gw: Gateway, result_id: str) -> pb.Result:
    """Follow a version until processing ends, with a progress line on stderr; its final state."""
    again = f"molbridge results watch {result_id}"
    line = ProgressLine(sys.stderr, "results")
    stream = None
    last: pb.Result | None = None
    try:
        stream = gw.stream(gw.results.WatchResult, pb.WatchResultRequest(id=result_id))
        for event in stream:
            last = event.data
            if event.final or last.status in FINAL:
                line.finish(fraction(last.processed_rows, last.total_rows), progress_segments(last))
                return last
            line.update(fraction(last.processed_rows, last.total_rows), progress_segments(last))
    except KeyboardInterrupt:
        if stream is not None:
            stream.cancel()
        line.end()
        _interrupted(result_id)
    except grpc.RpcError as err:
        line.end()
        raise CliError(f"{describe_rpc_error(err, gw.target)}\nlost the progress of results {result_id}; "
                       f"they may still be processing: {again}") from err
    line.end()
    status = output.enum_word(last, "status") if last is not None else "unknown"
    raise CliError(f"the progress stream of results {result_id} ended before processing did (last status: "
                   f"{status}): {again}")


def _interrupted(result_id: str) -> NoReturn:
    raise CliError(f"stopped watching; results {result_id} keep processing in the background: "
                   f"molbridge results watch {result_id}", exit_code=130)


def save_errors(gw: Gateway, result_id: str, path: Path) -> int:
    body = gw.call(gw.results.GetResultErrors, pb.GetResultErrorsRequest(id=result_id))
    output.write_file(path, body.data)
    return len(body.data)


def process(gw: Gateway, request: pb.ProcessResultsRequest) -> tuple[pb.Result, bool]:
    """The version processing the upload, and whether it is new (False: the same file and mapping as the
    submission's current version, which is answered unchanged)."""
    answer, call = gw.call(gw.results.ProcessResults.with_call, request)
    headers = {key: value for key, value in call.initial_metadata() or () if isinstance(value, str)}
    return answer.data, headers.get(NOT_CREATED) != "1"


# --- commands --------------------------------------------------------------------------------------------


def upload(args: argparse.Namespace, gw: Gateway) -> None:
    path: Path = args.file
    readable_file(path)
    overrides = parse_map(args.map)
    column_units = parse_units(args.units)
    notes = sys.stderr if args.json else sys.stdout
    stored = upload_with_progress(gw, gw.results.UploadResults, path, content_type=CSV_CONTENT_TYPE).data
    mapping: dict[str, str] = {}
    if args.preview or overrides:  # the suggestions, to show them or to lay the --map overrides on
        request = pb.PreviewResultsRequest(storage_key=stored.storage_key, rows=PREVIEW_ROWS,
                                           submission_id=args.submission if args.preview else "")
        preview = gw.call(gw.results.PreviewResults, request).data
        rows = merge_mapping(preview.headers, preview.suggested_mapping, overrides)
        mapping = {row.header: row.target for row in rows}
        if overrides and args.preview:  # validate the previewed rows with the mapping that will be used
            request.mapping.update(mapping)
            preview = gw.call(gw.results.PreviewResults, request).data
        if args.preview:
            print(f"Uploaded {stored.filename} ({format_bytes(stored.size_bytes)})", file=notes)
            print(preview_text(preview, rows), file=notes)
    result, new = process(gw, pb.ProcessResultsRequest(
        storage_key=stored.storage_key, submission_id=args.submission, mapping=mapping, column_units=column_units,
        mode=args.mode, notes=args.notes,
    ))
    try:  # from here on a Ctrl-C leaves the version processing, and says so
        if new:
            print(f"Processing results version {result.version} ({result.id}) of submission {args.submission} "
                  f"({result.mode or args.mode})", file=sys.stderr)
        else:
            print(f"Same file and mapping as the current version {result.version} ({result.id}): nothing changed",
                  file=sys.stderr)
        final = result if result.status in FINAL else watch(gw, result.id)
    except KeyboardInterrupt:
        _interrupted(result.id)
    conclude(args, gw, final)


def conclude(args: argparse.Namespace, gw: Gateway, final: pb.Result) -> None:
    """The outcome of a processed version and where its error report is; fails when it FAILED."""
    print(output.as_json(pb.GetResultResponse(data=final)) if args.json else result_summary(final))
    report_errors(gw, final, args.errors, sys.stderr if args.json else sys.stdout)
    if final.status == pb.Result.FAILED:
        raise CliError(f"results {final.id} failed: {final.failure_reason or 'no reason given'}")


def watch_result(args: argparse.Namespace, gw: Gateway) -> None:
    conclude(args, gw, watch(gw, args.id))


def report_errors(gw: Gateway, result: pb.Result, path: Path | None, notes: Any) -> None:
    if not result.error_count:
        if path is not None:
            print(f"No row errors: {path} not written", file=notes)
        return
    rows = counted(result.rows_rejected, "row")
    if path is None:
        print(f"Error report ({rows}): molbridge results errors {result.id} -o FILE", file=notes)
        return
    size = save_errors(gw, result.id, path)
    print(f"Error report ({rows}): saved to {path} ({format_bytes(size)})", file=notes)


def list_results(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.ListResultsRequest(submission_id=args.submission, status=args.status, current_only=args.current,
                                    page=args.page, page_size=args.page_size)
    answer = gw.call(gw.results.ListResults, request)
    show_list(args, answer, "No results found", RESULT_HEADERS,
              lambda width: result_rows(answer.data, name_width=width), output.page_summary(answer.meta, "result"))


def status(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.results.GetResult, pb.GetResultRequest(id=args.id))
    show(args, answer, lambda: result_text(answer.data))


def values(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.ListResultValuesRequest(id=args.id, property=args.property, sample_code=args.sample)
    if args.json:
        request.page, request.page_size = args.page or 1, args.page_size
        print(output.as_json(gw.call(gw.results.ListResultValues, request)))
        return
    found = list(gw.paginate(gw.results.ListResultValues, request))
    if not found and args.output != "csv":
        print("No values")
        return
    headers, rows = value_table(found)
    output.listing(args, headers, rows, counted(len(found), "value"))


def errors(args: argparse.Namespace, gw: Gateway) -> None:
    if args.out is None:
        body = gw.call(gw.results.GetResultErrors, pb.GetResultErrorsRequest(id=args.id))
        sys.stdout.buffer.write(body.data)
        sys.stdout.flush()
        return
    size = save_errors(gw, args.id, args.out)
    print(f"Saved the error report of results {args.id} to {args.out} ({format_bytes(size)})")


def review(args: argparse.Namespace, gw: Gateway) -> None:
    request = review_request(args.id, accept=args.accept, reject=args.reject, reason=args.reason)
    answer = gw.call(gw.results.ReviewResult, request)
    r = answer.data
    decision = "Accepted" if args.accept else "Rejected"
    show(args, answer, lambda: f"{decision} results version {r.version} of submission "
                               f"{r.submission_name or r.submission_id}\n{result_fields(r)}")


def compare(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.ComparePredictionsRequest(id=args.id, property=args.property, model_name=args.model,
                                           summary_only=not args.json)
    answer = gw.call(gw.results.ComparePredictions, request)
    if args.json:
        print(output.as_json(answer))
    elif not answer.data and args.output != "csv":
        print("No predictions to compare: none of the measured molecules has a prediction of these properties")
    else:
        output.listing(args, COMPARISON_HEADERS, comparison_rows(answer.data))
        if args.output != "csv":
            print("\n".join(comparison_notes(answer.data)))
    if args.plot is not None:
        save_plots(gw, args.id, answer.data, args.plot, sys.stderr if args.json or args.output == "csv" else sys.stdout)


def save_plots(gw: Gateway, result_id: str, comparisons: Sequence[pb.Comparison], directory: Path, notes: Any) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot create {directory}: {err.strerror or err}") from err
    for c in comparisons:
        for kind in PLOT_KINDS:
            request = pb.GetComparisonPlotRequest(id=result_id, property=c.property, model_name=c.model_name,
                                                  model_version=c.model_version, kind=kind)
            body = gw.call(gw.results.GetComparisonPlot, request)
            path = directory / plot_filename(c, kind)
            output.write_file(path, body.data)
            print(f"Wrote {path} ({format_bytes(len(body.data))})", file=notes)


def accuracy(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.results.GetModelAccuracy,
                     pb.GetModelAccuracyRequest(model_name=args.model, property=args.property))
    if args.json:
        print(output.as_json(answer))
    elif not any(a.versions for a in answer.data) and args.output != "csv":
        print(f"No accepted results score model {args.model} yet")
    else:
        output.listing(args, ACCURACY_HEADERS, accuracy_rows(answer.data))


def register(subparsers: Any) -> None:
    results = subparsers.add_parser("results", help="a CRO's measured values: upload, review, compare").add_subparsers(
        dest="results_command", required=True, metavar="COMMAND"
    )
    cmd = add_command(results, "upload", "upload a results CSV for a submission, process it and follow it (CRO)",
                      gateway=upload)
    cmd.add_argument("file", type=Path, metavar="FILE.csv")
    cmd.add_argument("--submission", required=True, metavar="ID")
    cmd.add_argument("--map", action="append", default=[], metavar="HEADER=FIELD",
                     help="map a column (repeatable): sample_code, registration_number, inchi_key, molecule_id, "
                          "property, value, units, qualifier, replicate, notes, a property name (wide format) or "
                          "ignore; overrides the suggested mapping")
    cmd.add_argument("--units", action="append", default=[], metavar="COLUMN=UNITS",
                     help="units of a wide-format column (repeatable), overriding those in its header")
    cmd.add_argument("--mode", choices=MODES, default="keep_valid",
                     help="reject_all: any row error fails the version (default keep_valid: bad rows reported)")
    cmd.add_argument("--notes", default="", help="your notes on this version")
    cmd.add_argument("--preview", action="store_true",
                     help="first show the suggested mapping and how the first rows validate")
    cmd.add_argument("--errors", type=Path, metavar="PATH", help="save the error report (rejected rows) to PATH")

    cmd = add_command(results, "watch", "follow a version until processing ends (exit 1 if it FAILED)",
                      gateway=watch_result)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--errors", type=Path, metavar="PATH", help="save the error report (rejected rows) to PATH")

    cmd = add_command(results, "list", "result versions you may see, newest first", gateway=list_results)
    cmd.add_argument("--submission", default="", metavar="ID", help="only this submission's versions")
    cmd.add_argument("--status", action="append", type=result_status, default=[],
                     help="pending, processing, completed, failed or rejected (repeatable)")
    cmd.add_argument("--current", action="store_true", help="only current versions")
    cmd.add_argument("--page", type=int, default=1)
    cmd.add_argument("--page-size", type=int, default=0, help="results per page (server default 50)")

    cmd = add_command(results, "status", "a version: status, QC summary, review", gateway=status)
    cmd.add_argument("id", metavar="ID")

    cmd = add_command(results, "values", "a version's values (replicates aggregated)", gateway=values)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--property", default="", help="only this property")
    cmd.add_argument("--sample", default="", metavar="CODE", help="only this sample")
    cmd.add_argument("--page", type=int, default=0, help="with --json: this page (default 1)")
    cmd.add_argument("--page-size", type=int, default=0, help="with --json: values per page (server default 50)")

    cmd = add_command(results, "errors", "a version's rejected rows as CSV", gateway=errors)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("-o", "--out", type=Path, metavar="PATH", help="write to PATH (default: standard output)")

    cmd = add_command(results, "review", "accept a version (values onto the molecules) or reject it (pharma)",
                      gateway=review)
    cmd.add_argument("id", metavar="ID")
    decision = cmd.add_mutually_exclusive_group(required=True)
    decision.add_argument("--accept", action="store_true")
    decision.add_argument("--reject", action="store_true")
    cmd.add_argument("--reason", default="", help="why it is rejected (required with --reject)")

    cmd = add_command(results, "compare", "predicted vs measured per property and model version (pharma)",
                      gateway=compare)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--property", default="", help="only this property")
    cmd.add_argument("--model", default="", metavar="NAME", help="only this model")
    cmd.add_argument("--plot", type=Path, metavar="DIR", help="save the scatter and residual PNGs in DIR")

    cmd = add_command(results, "accuracy", "a model's accuracy on your accepted results, version by version",
                      gateway=accuracy)
    cmd.add_argument("model", metavar="MODEL")
    cmd.add_argument("--property", default="", help="only this property")


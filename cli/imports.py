"""CSV import commands: `import FILE.csv` (upload, preview, start, watch) and
`imports list|watch|cancel|errors`."""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.api.httpbody_pb2 import HttpBody
from molbridge.molecule.v1 import import_service_pb2 as pb
from molbridge.molecule.v1 import import_service_pb2_grpc as pb_grpc
from molbridge.molecule.v1 import library_service_pb2 as lib_pb
from molbridge.molecule.v1 import library_service_pb2_grpc as lib_grpc

from cli import output
from cli.app import add_command
from cli.arguments import column_values
from cli.client import CliError, Gateway, describe_rpc_error
from cli.progress import (
    SEPARATOR,
    ProgressLine,
    format_bytes,
    format_count,
    format_duration,
    format_rate,
    fraction,
)
from cli.transfer import (
    UPLOAD_CHUNK_BYTES,
    file_messages,
    readable_file,
    upload_with_progress,
)

CSV_CONTENT_TYPE = "text/csv"
IGNORE = "ignore"
MODES = ("keep_valid", "reject_all")
PAGE_SIZE = 100
PREVIEW_ROWS = 3
EXAMPLE_WIDTH = 30
DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon"}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


# --- pure pieces ----------------------------------------------------------------------------------------


def csv_messages(
    path: Path, *, chunk_bytes: int = UPLOAD_CHUNK_BYTES, on_progress: Callable[[int], None] | None = None
) -> Iterator[HttpBody]:
    """The CSV file as upload messages (see cli.transfer.file_messages)."""
    return file_messages(path, content_type=CSV_CONTENT_TYPE, chunk_bytes=chunk_bytes, on_progress=on_progress)


def parse_map(values: Sequence[str]) -> dict[str, str]:
    """`--map HEADER=TARGET` values as {header: target}. The last `=` splits (headers may hold one,
    targets never do); targets are lower-cased, as every target name is."""
    pairs = column_values(values, "--map", "HEADER=TARGET", '--map "IC50 (nM)=ic50"')
    return {header: target.lower() for header, target in pairs.items()}


@dataclass(frozen=True)
class MappingRow:
    header: str
    target: str
    origin: str  # why this target: "--map", "suggested", "--map took <target>", "-" (not recognised)


def merge_mapping(
    headers: Sequence[str], suggested: Mapping[str, str], overrides: Mapping[str, str]
) -> list[MappingRow]:
    """The server's suggestions with the --map overrides on top, in column order. A target given to a
    column by --map is taken away from the column it was suggested for (a target takes one column)."""
    chosen: dict[str, str] = {}
    for given, target in overrides.items():
        header = match_header(given, headers)
        if header in chosen:
            raise CliError(f'--map: column "{header}" is given twice')
        chosen[header] = target
    taken = {target for target in chosen.values() if target != IGNORE}
    rows = []
    for header in headers:
        suggestion = suggested.get(header, IGNORE)
        if header in chosen:
            rows.append(MappingRow(header, chosen[header], "--map"))
        elif suggestion in taken:
            rows.append(MappingRow(header, IGNORE, f"--map took {suggestion}"))
        else:
            rows.append(MappingRow(header, suggestion, "suggested" if header in suggested else "-"))
    return rows


def match_header(given: str, headers: Sequence[str]) -> str:
    """The file's column named `given`: exactly, else the only one equal ignoring case."""
    if given in headers:
        return given
    folded = [h for h in headers if h.strip().casefold() == given.casefold()]
    if len(folded) == 1:
        return folded[0]
    columns = ", ".join(f'"{h}"' for h in headers)
    raise CliError(f'--map: the file has no column "{given}" (columns: {columns})')


def job_segments(job: pb.ImportJob) -> tuple[list[str], list[str]]:
    """The progress of a job: rows, rate and ETA; then the counts (a line of their own on a terminal)."""
    if job.status == "queued" and not job.processed_rows:
        return [f"queued, {format_count(job.total_rows)} rows"], []
    segments = [
        f"{format_count(job.processed_rows)}/{format_count(job.total_rows)} rows",
        format_rate(job.rows_per_second or overall_rate(job), "rows"),
    ]
    if job.status == "processing":
        segments.append(f"ETA {format_duration(job.eta_seconds or None)}")
    counts = [
        f"registered {format_count(job.registered)}",
        f"merged {format_count(job.merged)}",
        f"rejected {format_count(job.rejected)}",
    ]
    return segments, counts


def job_seconds(job: pb.ImportJob) -> float | None:
    """How long a finished job took."""
    if not (job.HasField("created_at") and job.HasField("finished_at")):
        return None
    return (job.finished_at.ToNanoseconds() - job.created_at.ToNanoseconds()) / 1e9


def overall_rate(job: pb.ImportJob) -> float | None:
    seconds = job_seconds(job)
    return job.processed_rows / seconds if seconds else None


def job_stats(job: pb.ImportJob) -> str:
    segments, counts = job_segments(job)
    return SEPARATOR.join([*segments, *counts])


def job_summary(job: pb.ImportJob) -> str:
    seconds = job_seconds(job)
    took = "" if seconds is None else f" in {format_duration(seconds)}"
    return (
        f"Import {job.job_id} {job.status}{took}: "
        f"{format_count(job.processed_rows)} of {format_count(job.total_rows)} rows, "
        f"registered {format_count(job.registered)}, merged {format_count(job.merged)}, "
        f"rejected {format_count(job.rejected)}"
    )


# --- gateway calls ---------------------------------------------------------------------------------------


def _imports(gw: Gateway) -> pb_grpc.ImportServiceStub:
    return gw.stub(pb_grpc.ImportServiceStub)


def _libraries(gw: Gateway) -> lib_grpc.LibraryServiceStub:
    return gw.stub(lib_grpc.LibraryServiceStub)


def _every_page(gw: Gateway, method: Callable[..., Any], request_type: Callable[..., Any]) -> Iterator[Any]:
    page = 1
    while True:
        answer = gw.call(method, request_type(page=page, page_size=PAGE_SIZE))
        yield from answer.data
        if not answer.data or page * max(answer.meta.page_size, 1) >= answer.meta.total:
            return
        page += 1


def resolve_library(gw: Gateway, name: str, *, create: bool) -> lib_pb.Library:
    """A library by id, or by name among the caller's own then every library they can see; created
    (owned by the caller) when missing and `create` is set."""
    libraries = _libraries(gw)
    if _UUID.match(name):
        return gw.call(libraries.GetLibrary, lib_pb.GetLibraryRequest(id=name)).data
    for method, request_type in (
        (libraries.ListMyLibraries, lib_pb.ListMyLibrariesRequest),
        (libraries.ListLibraries, lib_pb.ListLibrariesRequest),
    ):
        found = [library for library in _every_page(gw, method, request_type) if library.name == name]
        if len(found) > 1:
            ids = ", ".join(library.id for library in found)
            raise CliError(f'{len(found)} libraries named "{name}" are visible to you: pass an id ({ids})')
        if found:
            return found[0]
    if not create:
        raise CliError(f'no library named "{name}": pass --create-library to create it')
    request = lib_pb.CreateLibraryRequest(name=name, request_id=str(uuid.uuid4()))
    library = gw.call(libraries.CreateLibrary, request).data
    print(f'Created library "{library.name}" ({library.id})', file=sys.stderr)
    return library


def upload(gw: Gateway, path: Path) -> pb.StoredUpload:
    """Stream the file to the service with a progress line (bytes, MB/s, ETA) on stderr."""
    return upload_with_progress(gw, _imports(gw).UploadCsv, path, content_type=CSV_CONTENT_TYPE).data


def watch(gw: Gateway, job_id: str, *, assume_yes: bool) -> pb.WatchImportResponse:
    """Follow a job to its final event with a live progress line. Ctrl-C offers to cancel the job; a
    stream that ends without a final event is a failure."""
    again = f"molbridge imports watch {job_id}"
    line = ProgressLine(sys.stderr, "import")
    stream = None
    last: pb.ImportJob | None = None
    try:
        stream = gw.stream(_imports(gw).WatchImport, pb.WatchImportRequest(job_id=job_id))
        for event in stream:
            last = event.data
            if event.final:
                line.finish(fraction(last.processed_rows, last.total_rows), *job_segments(last))
                return event
            line.update(fraction(last.processed_rows, last.total_rows), *job_segments(last))
    except KeyboardInterrupt:
        if stream is not None:
            stream.cancel()
        line.end()
        _interrupted(gw, job_id, assume_yes=assume_yes)
    except grpc.RpcError as err:
        line.end()
        raise CliError(
            f"{describe_rpc_error(err, gw.target)}\n"
            f"lost the progress of import {job_id}; it may still be running: {again}"
        ) from err
    line.end()
    status = last.status if last is not None else "unknown"
    raise CliError(
        f"the progress stream of import {job_id} ended without a final event (last status: {status}); "
        f"the job may still be running: {again}"
    )


def _interrupted(gw: Gateway, job_id: str, *, assume_yes: bool) -> NoReturn:
    """Ctrl-C while watching: cancel the job if the user says so, else leave it running."""
    again = f"molbridge imports watch {job_id}"
    if not assume_yes and sys.stdin.isatty() and _confirm(f"Cancel import {job_id}? [y/N] "):
        job = gw.call(_imports(gw).CancelImport, pb.CancelImportRequest(job_id=job_id)).data
        raise CliError(f"cancel requested: {job_stats_line(job)}", exit_code=130)
    raise CliError(f"stopped watching; import {job_id} continues in the background: {again}", exit_code=130)


def _confirm(prompt: str) -> bool:
    print(prompt, end="", file=sys.stderr, flush=True)
    try:
        return input().strip().lower() in ("y", "yes")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return False


def job_stats_line(job: pb.ImportJob) -> str:
    return f"import {job.job_id} {job.status}, {job_stats(job)}"


def report(gw: Gateway, final: pb.WatchImportResponse, args: argparse.Namespace) -> None:
    """Print the outcome of a finished job and where its error report is; fail unless it completed."""
    job = final.data
    print(output.as_json(final) if args.json else job_summary(job))
    notes = sys.stderr if args.json else sys.stdout
    if args.errors_out and not job.rejected:
        print(f"No rows rejected: {args.errors_out} not written", file=notes)
    if job.rejected:
        rows = f"{format_count(job.rejected)} row{'' if job.rejected == 1 else 's'}"
        if args.errors_out:
            size = save_errors(gw, job.job_id, args.errors_out)
            print(f"Error report ({rows}): saved to {args.errors_out} ({format_bytes(size)})", file=notes)
        else:
            print(f"Error report ({rows}): {errors_location(gw, job.job_id)}", file=notes)
    if job.status == "failed":
        raise CliError(f"import {job.job_id} failed: {job.failure_reason or 'no reason given'}")
    if job.status != "completed":
        raise CliError(f"import {job.job_id} did not complete: {job.status}")


def errors_location(gw: Gateway, job_id: str) -> str:
    """The download link for the error report, or the command that fetches it."""
    fetch = f"molbridge imports errors {job_id} --out FILE"
    try:
        link = gw.call(_imports(gw).GetImportErrorsLink, pb.GetImportErrorsLinkRequest(job_id=job_id)).data
    except grpc.RpcError as err:
        return f"{fetch} (no link: {describe_rpc_error(err, gw.target)})"
    url = f"http://{gw.target}{link.url}" if link.url.startswith("/") else link.url
    expires = f", link valid until {output.timestamp(link.expires_at)}" if link.HasField("expires_at") else ""
    return f"{url}{expires}; or {fetch}"


def save_errors(gw: Gateway, job_id: str, path: Path) -> int:
    body = gw.call(_imports(gw).GetImportErrors, pb.GetImportErrorsRequest(job_id=job_id))
    output.write_file(path, body.data)
    return len(body.data)


# --- commands --------------------------------------------------------------------------------------------


def import_csv(args: argparse.Namespace, gw: Gateway) -> None:
    path: Path = args.file
    readable_file(path)
    overrides = parse_map(args.map)
    predict = [name.strip() for value in args.predict for name in value.split(",") if name.strip()]
    library = resolve_library(gw, args.library, create=args.create_library) if args.library else None

    stored = upload(gw, path)
    preview = gw.call(
        _imports(gw).PreviewCsv, pb.PreviewCsvRequest(storage_key=stored.storage_key, rows=PREVIEW_ROWS)
    ).data
    rows = merge_mapping(preview.headers, preview.suggested_mapping, overrides)
    if not args.json:
        print(describe_preview(preview, stored))
        print(mapping_table(rows, preview))
    request = pb.StartImportRequest(
        storage_key=stored.storage_key,
        mapping={row.header: row.target for row in rows},
        mode=args.mode,
        library_id=library.id if library else "",
        predict=predict,
        request_id=str(uuid.uuid4()),
    )
    job = gw.call(_imports(gw).StartImport, request).data
    into = f' into library "{library.name}"' if library else ""
    print(f"Started import {job.job_id}{into} ({args.mode})", file=sys.stderr)
    report(gw, watch(gw, job.job_id, assume_yes=args.yes), args)


def describe_preview(preview: pb.CsvPreview, stored: pb.StoredUpload) -> str:
    delimiter = DELIMITER_NAMES.get(preview.delimiter, repr(preview.delimiter))
    return (
        f"Uploaded {stored.filename} ({format_bytes(stored.size_bytes)}): {preview.encoding}, "
        f"{delimiter}-separated, {len(preview.headers)} columns"
    )


def mapping_table(rows: Sequence[MappingRow], preview: pb.CsvPreview) -> str:
    first = list(preview.rows[0].cells) if preview.rows else []
    lines = []
    for i, row in enumerate(rows):
        example = first[i] if i < len(first) else ""
        if len(example) > EXAMPLE_WIDTH:
            example = example[: EXAMPLE_WIDTH - 1] + "…"
        lines.append([row.header, row.target, row.origin, example])
    return output.table(["COLUMN", "TARGET", "FROM", "EXAMPLE"], lines)


def watch_import(args: argparse.Namespace, gw: Gateway) -> None:
    report(gw, watch(gw, args.job_id, assume_yes=args.yes), args)


def list_imports(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(
        _imports(gw).ListImports, pb.ListImportsRequest(page=args.page, page_size=args.page_size)
    )
    if args.json:
        print(output.as_json(answer))
        return
    rows = [
        [
            job.job_id,
            job.status,
            job.filename,
            f"{format_count(job.processed_rows)}/{format_count(job.total_rows)}",
            format_count(job.registered),
            format_count(job.merged),
            format_count(job.rejected),
            output.timestamp(job.created_at),
        ]
        for job in answer.data
    ]
    headers = ["JOB", "STATUS", "FILE", "ROWS", "REGISTERED", "MERGED", "REJECTED", "CREATED"]
    output.listing(args, headers, rows, output.page_summary(answer.meta, "import"))


def cancel_import(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(_imports(gw).CancelImport, pb.CancelImportRequest(job_id=args.job_id))
    print(output.as_json(answer) if args.json else f"Cancel requested: {job_stats_line(answer.data)}")


def import_errors(args: argparse.Namespace, gw: Gateway) -> None:
    if args.out is None:
        body = gw.call(_imports(gw).GetImportErrors, pb.GetImportErrorsRequest(job_id=args.job_id))
        sys.stdout.buffer.write(body.data)
        sys.stdout.flush()
        return
    size = save_errors(gw, args.job_id, args.out)
    print(f"Saved the error report of import {args.job_id} to {args.out} ({format_bytes(size)})")


def register(subparsers: Any) -> None:
    cmd = add_command(
        subparsers,
        "import",
        "upload a CSV of molecules and import it, with live progress",
        gateway=import_csv,
    )
    cmd.add_argument("file", type=Path, metavar="FILE.csv")
    cmd.add_argument("--library", metavar="NAME", help="add the molecules to this library (name or id)")
    cmd.add_argument(
        "--create-library", action="store_true", help="create the --library if it does not exist"
    )
    cmd.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="HEADER=TARGET",
        help="map a column (repeatable): smiles, name, a property, custom_<name> or ignore; "
        "overrides the suggested mapping",
    )
    cmd.add_argument(
        "--mode", choices=MODES, default="keep_valid", help="reject_all: nothing if any row fails"
    )
    cmd.add_argument(
        "--predict",
        action="append",
        default=[],
        metavar="PROP",
        help="properties to predict (repeatable, or a,b)",
    )
    _watch_options(cmd)

    imports = subparsers.add_parser("imports", help="CSV import jobs of your organization").add_subparsers(
        dest="imports_command", required=True, metavar="COMMAND"
    )
    cmd = add_command(imports, "list", "list import jobs, newest first", gateway=list_imports)
    cmd.add_argument("--page", type=int, default=1)
    cmd.add_argument("--page-size", type=int, default=0, help="jobs per page (server default 50)")

    cmd = add_command(imports, "watch", "follow an import job until it ends", gateway=watch_import)
    cmd.add_argument("job_id", metavar="JOB_ID")
    _watch_options(cmd)

    cmd = add_command(imports, "cancel", "cancel an import job", gateway=cancel_import)
    cmd.add_argument("job_id", metavar="JOB_ID")

    cmd = add_command(
        imports, "errors", "download the rejected rows of an import as CSV", gateway=import_errors
    )
    cmd.add_argument("job_id", metavar="JOB_ID")
    cmd.add_argument("--out", type=Path, metavar="FILE", help="write to FILE (default: standard output)")


def _watch_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--errors-out", type=Path, metavar="FILE", help="save the error report (rejected rows) to FILE"
    )
    cmd.add_argument(
        "--yes",
        action="store_true",
        help="never ask: on Ctrl-C the job keeps running in the background",
    )

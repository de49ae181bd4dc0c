"""Submission commands: `submissions list|get|create|update`, the actions (`submit`, `quote`, `approve`,
`reject`, `cancel`, `request-changes`, `start`, `complete`, and `act` for any of them), `status`,
`status-counts`, `quotes`, `package`, `requirements`, `reveal`; the thread (`submissions messages|post|
read`) and `messages unread`."""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2
from molbridge.cro.v1 import cro_service_pb2 as pb

from cli import output
from cli.app import add_command
from cli.arguments import enum_choice, iso_date, truncate
from cli.client import CliError, Gateway
from cli.cro_services import (
    NAME_WIDTH,
    as_struct,
    currency,
    days,
    money,
    price_text,
    read_json_object,
    show,
    show_list,
    struct_text,
)
from molbridge_client import Unavailable

# ActOnSubmissionRequest.action's words (cro_service.proto), and the short names `act` also takes.
ACTIONS = ("SUBMIT", "PROVIDE_PRICING", "APPROVE", "REJECT", "REQUEST_CHANGES", "CANCEL", "START_EXPERIMENT",
           "UPLOAD_RESULTS", "REVIEW_RESULTS", "COMPLETE")
ACTION_ALIASES = {"quote": "PROVIDE_PRICING", "start": "START_EXPERIMENT", "review": "REVIEW_RESULTS"}
WATCH_RETRIES = 5  # consecutive failed reconnections before `--watch` gives up
WATCH_PAUSE_SECONDS = 1.0
WATCH_MAX_PAUSE_SECONDS = 30.0
_IN_DAYS = re.compile(r"^\+(\d+)d?$")


# --- parsing ---------------------------------------------------------------------------------------------


def submission_status(value: str) -> int:
    """A Submission.Status from `pricing-provided` or `PRICING_PROVIDED`."""
    return enum_choice(pb.Submission.Status, value, "status")


def action_word(value: str) -> str:
    """An action from `provide-pricing`, `PROVIDE_PRICING` or a short name (quote, start, review)."""
    word = value.strip()
    if word.lower() in ACTION_ALIASES:
        return ACTION_ALIASES[word.lower()]
    name = word.upper().replace("-", "_")
    if name not in ACTIONS:
        choices = ", ".join([*(a.lower().replace("_", "-") for a in ACTIONS), *ACTION_ALIASES])
        raise argparse.ArgumentTypeError(f"unknown action {value!r} (choose from {choices})")
    return name


def quote_date(value: str, today: datetime.date | None = None) -> str:
    """A quote's last day: YYYY-MM-DD, or +N (N days from today)."""
    found = _IN_DAYS.match(value.strip())
    if found:
        return ((today or datetime.date.today()) + datetime.timedelta(days=int(found[1]))).isoformat()
    return iso_date(value)


def money_or_none(value: str) -> str:
    """A budget, or `none` to remove it (UpdateSubmissionRequest.budget)."""
    return "none" if value.strip().lower() == "none" else money(value)


def parse_molecule(value: str) -> pb.SubmissionMoleculeInput:
    """`ID` or `ID:CONCENTRATION` (the first colon splits: `m1:10 mM` → m1, "10 mM")."""
    molecule_id, _, concentration = value.partition(":")
    if not molecule_id.strip():
        raise argparse.ArgumentTypeError(f"{value!r}: expected MOLECULE_ID[:CONCENTRATION]")
    return pb.SubmissionMoleculeInput(molecule_id=molecule_id.strip(), concentration=concentration.strip())


def parse_line_item(value: str) -> pb.QuoteLineItem:
    """`MOLECULE:ASSAY:REPLICATES:UNIT_PRICE` (molecule = sample code or molecule id; the assay may hold
    colons: the first and the last two split). The service computes each amount."""
    molecule, _, rest = value.partition(":")
    parts = rest.rsplit(":", 2)
    usage = f"{value!r}: expected MOLECULE:ASSAY:REPLICATES:UNIT_PRICE, e.g. S-7F3K-01:IC50:3:120.00"
    if len(parts) != 3 or not molecule.strip() or not parts[0].strip():
        raise argparse.ArgumentTypeError(usage)
    assay, replicates, unit_price = (p.strip() for p in parts)
    if not replicates.isdigit() or int(replicates) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: replicates must be a whole number from 1")
    try:
        price = money(unit_price) if unit_price else ""
    except argparse.ArgumentTypeError:
        price = ""
    if not price:
        raise argparse.ArgumentTypeError(f"{value!r}: the unit price {unit_price!r} is not an amount")
    return pb.QuoteLineItem(molecule=molecule.strip(), assay=assay, replicates=int(replicates), unit_price=price)


def lines_total(line_items: Sequence[pb.QuoteLineItem]) -> str:
    """Σ replicates × unit price: the price of a quote given by its lines only."""
    return format(sum((Decimal(i.unit_price) * i.replicates for i in line_items), Decimal(0)), "f")


def _spec_value(text: str) -> Any:
    """JSON when it reads as JSON (37, true, null, [1, 2], "37"), else the text itself."""
    def refuse(constant: str) -> Any:
        raise ValueError(constant)  # NaN and Infinity: no JSON a schema accepts

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:
        return text


def spec_fields(values: Sequence[str]) -> struct_pb2.Struct:
    """`--spec-field KEY=VALUE` values as specifications; a dotted key nests (`assay.temperature=37` →
    {"assay": {"temperature": 37}}); values are typed as JSON when they read as JSON."""
    spec: dict[str, Any] = {}
    for value in values:
        key, sep, text = value.partition("=")
        path = [part.strip() for part in key.split(".")]
        if not sep or not all(path):
            raise CliError(f"--spec-field {value!r}: expected KEY=VALUE, e.g. --spec-field temperature_c=37")
        node = spec
        for depth, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CliError(f"--spec-field {key}: {'.'.join(path[: depth + 1])} is already a value")
        if path[-1] in node:
            raise CliError(f"--spec-field {key} is given twice (or is already an object)")
        node[path[-1]] = _spec_value(text)
    return as_struct(spec)


def specifications(args: argparse.Namespace) -> struct_pb2.Struct | None:
    """From --spec FILE.json or --spec-field KEY=VALUE …; None when neither is given."""
    if args.spec:
        return read_json_object(args.spec, "--spec")
    return spec_fields(args.spec_field) if args.spec_field else None


def date_range(created_from: str, created_to: str) -> tuple[str, str]:
    if created_from and created_to and created_from > created_to:
        raise CliError(f"--from {created_from} is after --to {created_to}")
    return created_from, created_to


# --- requests --------------------------------------------------------------------------------------------


def action_request(submission_id: str, action: str, **fields: Any) -> pb.ActOnSubmissionRequest:
    """An action with a fresh idempotency key: a retried command is a new action, a retried call is not."""
    return pb.ActOnSubmissionRequest(id=submission_id, action=action, request_id=str(uuid.uuid4()), **fields)


def pricing_fields(args: argparse.Namespace) -> dict[str, Any]:
    """PROVIDE_PRICING's fields; without --price, the price is the lines' total."""
    price = args.price or (lines_total(args.line) if args.line else "")
    if not price:
        raise CliError("--price is required (or give --line items: the price is then their total)")
    if not args.turnaround or not args.valid_until:
        raise CliError("a quote needs --turnaround DAYS and --valid-until YYYY-MM-DD")
    return {"price": price, "currency": args.currency, "turnaround_days": args.turnaround,
            "valid_until": args.valid_until, "line_items": args.line, "note": args.note}


def generic_action(args: argparse.Namespace) -> pb.ActOnSubmissionRequest:
    """`act ID ACTION`: the fields its options gave, for whichever action (the service says what is missing)."""
    if args.action == "PROVIDE_PRICING":
        return action_request(args.id, args.action, reason=args.reason, text=args.text, **pricing_fields(args))
    return action_request(
        args.id, args.action, reason=args.reason, text=args.text, price=args.price, currency=args.currency,
        turnaround_days=args.turnaround, valid_until=args.valid_until, line_items=args.line, note=args.note,
    )


def quote_action(args: argparse.Namespace) -> pb.ActOnSubmissionRequest:
    return action_request(args.id, "PROVIDE_PRICING", **pricing_fields(args))


def one_action(action: str, **options: str) -> Callable[[argparse.Namespace], pb.ActOnSubmissionRequest]:
    """The request of a one-action command; `options` maps request fields to argument names."""
    def build(args: argparse.Namespace) -> pb.ActOnSubmissionRequest:
        return action_request(args.id, action, **{field: getattr(args, name) for field, name in options.items()})

    return build


def list_request(args: argparse.Namespace) -> pb.ListSubmissionsRequest:
    created_from, created_to = date_range(args.created_from, args.created_to)
    return pb.ListSubmissionsRequest(
        status=args.status or pb.Submission.STATUS_UNSPECIFIED, cro_organization_id=args.cro,
        cro_service_id=args.service, created_from=created_from, created_to=created_to, molecule_id=args.molecule,
        page=args.page, page_size=args.page_size,
    )


def create_request(args: argparse.Namespace) -> pb.CreateSubmissionRequest:
    return pb.CreateSubmissionRequest(
        name=args.name, cro_service_id=args.service, molecules=args.molecule, specifications=specifications(args),
        budget=args.budget, request_id=str(uuid.uuid4()),
    )


def update_request(args: argparse.Namespace) -> pb.UpdateSubmissionRequest:
    if args.molecule and args.no_molecules:
        raise CliError("--molecule and --no-molecules: choose one")
    return pb.UpdateSubmissionRequest(
        id=args.id, name=args.name, molecules=args.molecule, replace_molecules=bool(args.molecule or args.no_molecules),
        specifications=specifications(args), budget=args.budget,
    )


# --- output ----------------------------------------------------------------------------------------------


def submission_rows(submissions: Sequence[pb.Submission], *, name_width: int = NAME_WIDTH) -> list[list[str]]:
    return [
        [
            s.id,
            truncate(s.name, name_width),
            truncate(s.cro_service_name, name_width) or s.cro_service_id,
            output.enum_word(s, "status"),
            price_text(s.price, s.currency),
            output.timestamp(s.created_at),
        ]
        for s in submissions
    ]


SUBMISSION_HEADERS = ["ID", "NAME", "SERVICE", "STATUS", "PRICE", "CREATED"]


def molecule_table(molecules: Sequence[pb.SubmissionMolecule]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a submission's molecules, with the columns the caller may see: the CRO side
    has no molecule ids, and SMILES only once the structures are revealed."""
    columns: list[tuple[str, Callable[[pb.SubmissionMolecule], str]]] = [
        ("SAMPLE", lambda m: m.sample_code or "-"),
        ("MOLECULE", lambda m: m.registration_number or m.molecule_id or "-"),
        ("FORMULA", lambda m: m.formula or "-"),
        ("MW", lambda m: f"{m.molecular_weight:.2f}" if m.molecular_weight else "-"),
        ("CONCENTRATION", lambda m: m.concentration or "-"),
        ("NOTES", lambda m: m.notes or "-"),
        ("SMILES", lambda m: m.smiles or "-"),
    ]
    optional = {
        "MOLECULE": lambda m: m.registration_number or m.molecule_id,
        "NOTES": lambda m: m.notes,
        "SMILES": lambda m: m.smiles,
    }
    shown = [(h, cell) for h, cell in columns if h not in optional or any(optional[h](m) for m in molecules)]
    return [h for h, _ in shown], [[cell(m) for _, cell in shown] for m in molecules]


def quote_summary(s: pb.Submission) -> str:
    if not s.HasField("current_quote"):
        return price_text(s.price, s.currency) + (f", {s.turnaround_days} days" if s.turnaround_days else "")
    q = s.current_quote
    over = f"; over the budget of {price_text(s.budget, s.currency)}" if q.over_budget else ""
    return (f"{price_text(q.price, q.currency)}, {q.turnaround_days} days "
            f"(quote {q.number}, valid until {q.valid_until or '-'}{over})")


def submission_fields(s: pb.Submission) -> str:
    return output.fields(
        [
            ("id", s.id),
            ("name", s.name),
            ("status", output.enum_word(s, "status")),
            ("service", f"{s.cro_service_name or s.cro_service_id} ({output.enum_word(s, 'service_type')})"),
            ("cro", s.cro_organization_id or "-"),
            ("budget", price_text(s.budget, s.currency)),
            ("price", quote_summary(s)),
            ("estimated completion", s.estimated_completion or "-"),
            ("structures", "shown to the CRO" if s.structures_revealed else "hidden from the CRO"),
            ("package sha-256", s.package_sha256 or "-"),
            ("specifications", struct_text(s.specifications)),
            ("may now", ", ".join(s.permitted_actions) or "-"),
            ("created", f"{output.timestamp(s.created_at)} by {s.created_by or '-'}"),
            ("updated", output.timestamp(s.updated_at)),
        ]
    )


def submission_text(s: pb.Submission) -> str:
    if not s.molecules:
        return f"{submission_fields(s)}\n\nNo molecules yet"
    return f"{submission_fields(s)}\n\n{output.table(*molecule_table(s.molecules))}"


LINE_HEADERS = ["MOLECULE", "ASSAY", "REPLICATES", "UNIT PRICE", "AMOUNT"]


def line_rows(line_items: Sequence[pb.QuoteLineItem]) -> list[list[str]]:
    return [[i.molecule, i.assay, str(i.replicates), i.unit_price, i.amount or "-"] for i in line_items]


def status_text(s: pb.Submission) -> str:
    """Where a submission stands: its status, when each step was reached, the current quote and what the
    caller may do now."""
    head = output.fields(
        [
            ("submission", f"{s.id} ({s.name})"),
            ("status", output.enum_word(s, "status")),
            ("price", quote_summary(s)),
            ("estimated completion", s.estimated_completion or "-"),
            ("may now", ", ".join(s.permitted_actions) or "nothing"),
        ]
    )
    parts = [head, output.table(["STEP", "REACHED"], [[t.status, output.timestamp(t.at)] for t in s.step_times])]
    if s.current_quote.line_items:
        parts.append(output.table(LINE_HEADERS, line_rows(s.current_quote.line_items)))
    return "\n\n".join(parts)


QUOTE_HEADERS = ["QUOTE", "PRICE", "TURNAROUND", "VALID UNTIL", "OVER BUDGET", "BY", "GIVEN", "NOTE"]


def quote_rows(quotes: Sequence[pb.Quote], *, note_width: int = NAME_WIDTH) -> list[list[str]]:
    return [
        [str(q.number), price_text(q.price, q.currency), f"{q.turnaround_days} d", q.valid_until or "-",
         "yes" if q.over_budget else "no", q.provided_by or "-", output.timestamp(q.provided_at),
         truncate(q.note, note_width) or "-"]
        for q in quotes
    ]


REQUIREMENT_HEADERS = ["DOCUMENT TYPE", "SIGNATURE", "DOCUMENT", "PRESENT", "SIGNED (PHARMA)", "SIGNED (CRO)",
                       "SATISFIED"]


def requirement_rows(requirements: Sequence[pb.SubmissionDocumentRequirement]) -> list[list[str]]:
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    return [
        [r.document_type, "required" if r.signature_required else "-", r.document_id or "-", yes(r.present),
         yes(r.signed_by_owner), yes(r.signed_by_counterparty), yes(r.satisfied)]
        for r in requirements
    ]


def message_line(m: pb.Message) -> str:
    """One message of a thread as a line of a transcript."""
    extras = [*([f"document {m.document_id}"] if m.document_id else []),
              *(["change request"] if m.change_request else [])]
    suffix = f" ({'; '.join(extras)})" if extras else ""
    return f"[{output.timestamp(m.created_at)}] {m.side or '-'} {m.author_id or '-'}: {m.text}{suffix}"


MESSAGE_HEADERS = ["ID", "WHEN", "SIDE", "AUTHOR", "TEXT", "DOCUMENT", "CHANGE REQUEST"]


def message_rows(messages: Iterable[pb.Message]) -> list[list[str]]:
    return [[m.id, output.timestamp(m.created_at), m.side, m.author_id, m.text, m.document_id,
             "yes" if m.change_request else "no"] for m in messages]


def message_json(m: pb.Message) -> str:
    """One message as one line of JSON (`--watch --json`: a line per message)."""
    return json.dumps(json_format.MessageToDict(m, preserving_proto_field_name=True), ensure_ascii=False)


def follow(
    open_watch: Callable[[str], Iterable[pb.WatchMessagesResponse]],
    after_id: str,
    show_message: Callable[[pb.Message], None],
    *,
    pause: Callable[[float], None] = time.sleep,
    retries: int = WATCH_RETRIES,
) -> None:
    """Every message after `after_id` as it arrives, until interrupted; heartbeats (no message) are
    skipped. A stream that ends (the gateway's route timeout) or drops (unavailable) is opened again after
    the last message shown; `retries` failures in a row end the watch with the last error."""
    failures = 0
    while True:
        try:
            for response in open_watch(after_id):
                failures = 0
                if response.message.id:
                    show_message(response.message)
                    after_id = response.message.id
        except Unavailable:
            failures += 1
            if failures > retries:
                raise
        pause(min(WATCH_PAUSE_SECONDS * 2**failures, WATCH_MAX_PAUSE_SECONDS))


# --- commands --------------------------------------------------------------------------------------------


def list_submissions(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.submissions.ListSubmissions, list_request(args))
    show_list(args, answer, "No submission found", SUBMISSION_HEADERS,
              lambda width: submission_rows(answer.data, name_width=width),
              output.page_summary(answer.meta, "submission"))


def get_submission(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.submissions.GetSubmission, pb.GetSubmissionRequest(id=args.id))
    if args.output == "csv":  # the molecules, the one list of a submission
        output.listing(args, *molecule_table(answer.data.molecules))
        return
    show(args, answer, lambda: submission_text(answer.data))


def create_submission(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.submissions.CreateSubmission, create_request(args))
    show(args, answer, lambda: f"Created submission {answer.data.id} (DRAFT)\n{submission_text(answer.data)}")


def update_submission(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.submissions.UpdateSubmission, update_request(args))
    show(args, answer, lambda: f"Updated submission {answer.data.id}\n{submission_text(answer.data)}")


def take_action(args: argparse.Namespace, gw: Gateway) -> None:
    """Every action command: the request its `build_action` makes, then where the submission stands."""
    request = args.build_action(args)
    answer = gw.call(gw.submissions.ActOnSubmission, request)
    state = output.enum_word(answer.data, "status")
    show(args, answer, lambda: f"{request.action}: submission {args.id} is {state}\n\n{status_text(answer.data)}")


def status(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.submissions.GetSubmission, pb.GetSubmissionRequest(id=args.id))
    show(args, answer, lambda: status_text(answer.data))


def status_counts(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.submissions.GetSubmissionStatusCounts, pb.GetSubmissionStatusCountsRequest())
    show_list(args, answer, "No submission yet", ["STATUS", "COUNT"],
              lambda _: [[c.status, str(c.count)] for c in answer.data], f"{sum(c.count for c in answer.data)} in all")


def quotes(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.submissions.ListQuotes, pb.ListQuotesRequest(id=args.id))
    show_list(args, answer, f"No quote yet for submission {args.id}", QUOTE_HEADERS,
              lambda width: quote_rows(answer.data, note_width=width))
    for q in answer.data if args.output == "table" else ():
        if q.line_items:
            print(f"\nQuote {q.number}:\n{output.table(LINE_HEADERS, line_rows(q.line_items))}")


def package(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.submissions.GetSubmissionPackage, pb.GetSubmissionPackageRequest(id=args.id))
    manifest = json.dumps(json_format.MessageToDict(answer.data.manifest), ensure_ascii=False, indent=2)
    if args.out:
        output.write_file(args.out, (manifest + "\n").encode())
    head = output.fields([("sha-256", answer.data.sha256 or "-"), ("built", output.timestamp(answer.data.built_at))])
    show(args, answer, lambda: f"{head}\nmanifest written to {args.out}" if args.out else f"{head}\n\n{manifest}")


def requirements(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.submissions.GetSubmissionDocumentRequirements,
                     pb.GetSubmissionDocumentRequirementsRequest(id=args.id))
    if args.json:
        print(output.as_json(answer))
        return
    complete = "complete: every required document is there" if answer.data.complete else "incomplete"
    output.listing(args, REQUIREMENT_HEADERS, requirement_rows(answer.data.requirements), complete)


def reveal(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.submissions.SetStructuresRevealed,
                     pb.SetStructuresRevealedRequest(id=args.id, revealed=not args.hide))
    shown = "shown to" if answer.data.structures_revealed else "hidden from"
    show(args, answer, lambda: f"The structures of submission {args.id} are now {shown} the CRO")


def messages(args: argparse.Namespace, gw: Gateway) -> None:
    if args.page:
        answer = gw.call(gw.messages.ListMessages,
                         pb.ListMessagesRequest(id=args.id, page=args.page, page_size=args.page_size))
        thread, summary = list(answer.data), output.page_summary(answer.meta, "message")
        if args.json and not args.watch:
            print(output.as_json(answer))
            return
    else:  # the whole thread
        thread = list(gw.paginate(gw.messages.ListMessages, pb.ListMessagesRequest(id=args.id)))
        summary = f"{len(thread)} message{'' if len(thread) == 1 else 's'}"
        if args.json and not args.watch:
            print(output.as_json(pb.ListMessagesResponse(data=thread)))
            return
    print_message = (lambda m: print(message_json(m), flush=True)) if args.json else (
        lambda m: print(message_line(m), flush=True))
    if args.output == "csv" and not args.watch:
        output.listing(args, MESSAGE_HEADERS, message_rows(thread))
        return
    for m in thread:
        print_message(m)
    if not args.watch:
        print(summary if thread else "No messages yet")
        return
    print(f"(watching submission {args.id}: Ctrl-C to stop)", file=sys.stderr, flush=True)
    streams: list[Any] = []

    def open_watch(after_id: str) -> Iterable[pb.WatchMessagesResponse]:
        streams.append(gw.stream(gw.messages.WatchMessages, pb.WatchMessagesRequest(id=args.id, after_id=after_id)))
        return streams[-1]  # type: ignore[no-any-return]

    try:
        follow(open_watch, thread[-1].id if thread else "", print_message)
    finally:
        for stream in streams:
            stream.cancel()


def post(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.PostMessageRequest(id=args.id, text=args.text, document_id=args.document,
                                    request_id=str(uuid.uuid4()))
    answer = gw.call(gw.messages.PostMessage, request)
    show(args, answer, lambda: message_line(answer.data))


def read(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.messages.MarkMessagesRead, pb.MarkMessagesReadRequest(id=args.id, up_to_message_id=args.up_to))
    show(args, answer, lambda: f"Marked read: {answer.unread} unread message{'' if answer.unread == 1 else 's'} "
                               f"left on submission {args.id}")


def unread(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.messages.GetUnreadCounts, pb.GetUnreadCountsRequest())
    show_list(args, answer, "No unread messages", ["SUBMISSION", "UNREAD"],
              lambda _: [[c.submission_id, str(c.unread)] for c in answer.data], f"{answer.total} unread in all")


# --- registration ----------------------------------------------------------------------------------------


def _add_spec_options(cmd: argparse.ArgumentParser) -> None:
    spec = cmd.add_mutually_exclusive_group()
    spec.add_argument("--spec", type=Path, metavar="FILE.json", help="specifications: a JSON object")
    spec.add_argument("--spec-field", action="append", default=[], metavar="KEY=VALUE",
                      help="a specification (repeatable; a.b=… nests; values read as JSON when they are: 37, "
                           "true, [1,2])")


def _add_pricing_options(cmd: argparse.ArgumentParser, *, required: bool) -> None:
    cmd.add_argument("--price", type=money, default="", metavar="AMOUNT",
                     help="the quote's price (default: the total of the --line items)")
    cmd.add_argument("--turnaround", type=days, default=0, required=required, metavar="DAYS")
    cmd.add_argument("--valid-until", type=quote_date, default="", required=required, metavar="YYYY-MM-DD",
                     help="last day the quote may be approved (or +N: N days from today)")
    cmd.add_argument("--currency", type=currency, default="", help="default: the submission's")
    cmd.add_argument("--line", type=parse_line_item, action="append", default=[],
                     metavar="MOLECULE:ASSAY:REPLICATES:UNIT_PRICE",
                     help="a line item (repeatable); molecule = sample code or molecule id")
    cmd.add_argument("--note", default="")


def _with_id(parent: Any, name: str, help: str, handler: Any) -> argparse.ArgumentParser:  # noqa: A002
    cmd = add_command(parent, name, help, gateway=handler)
    cmd.add_argument("id", metavar="ID", help="submission id")
    return cmd


def _action(
    parent: Any, name: str, help: str,  # noqa: A002
    build: Callable[[argparse.Namespace], pb.ActOnSubmissionRequest],
) -> argparse.ArgumentParser:
    cmd = _with_id(parent, name, help, take_action)
    cmd.set_defaults(build_action=build)
    return cmd


def register(subparsers: Any) -> None:
    subs = subparsers.add_parser("submissions", help="submissions to CRO services, their actions and messages")
    commands = subs.add_subparsers(dest="submissions_command", required=True, metavar="COMMAND")

    cmd = add_command(commands, "list", "list your organization's submissions", gateway=list_submissions)
    cmd.add_argument("--status", type=submission_status, help="draft, submitted, pricing-provided, …")
    cmd.add_argument("--cro", default="", metavar="ORG_ID", help="only those sent to this CRO organization")
    cmd.add_argument("--service", default="", metavar="ID", help="only those of this CRO service")
    cmd.add_argument("--from", dest="created_from", type=iso_date, default="", metavar="YYYY-MM-DD",
                     help="created on or after")
    cmd.add_argument("--to", dest="created_to", type=iso_date, default="", metavar="YYYY-MM-DD",
                     help="created on or before")
    cmd.add_argument("--molecule", default="", metavar="ID", help="only those holding this molecule")
    cmd.add_argument("--page", type=int, default=1)
    cmd.add_argument("--page-size", type=int, default=0, help="submissions per page (server default 50)")

    _with_id(commands, "get", "show a submission and its molecules (--output csv: the molecules)", get_submission)

    cmd = add_command(commands, "create", "create a DRAFT submission to a CRO service", gateway=create_submission)
    cmd.add_argument("--name", required=True)
    cmd.add_argument("--service", required=True, metavar="ID", help="the CRO service")
    cmd.add_argument("--molecule", type=parse_molecule, action="append", default=[],
                     metavar="ID[:CONCENTRATION]", help="a molecule to send (repeatable), e.g. <id>:10 mM")
    _add_spec_options(cmd)
    cmd.add_argument("--budget", type=money, default="", metavar="AMOUNT", help="in the service's currency")

    cmd = _with_id(commands, "update", "edit a DRAFT; options not given stay as they are", update_submission)
    cmd.add_argument("--name", default="")
    cmd.add_argument("--molecule", type=parse_molecule, action="append", default=[],
                     metavar="ID[:CONCENTRATION]", help="replaces the molecules (repeatable)")
    cmd.add_argument("--no-molecules", action="store_true", help="remove every molecule")
    _add_spec_options(cmd)
    cmd.add_argument("--budget", type=money_or_none, default="", metavar="AMOUNT", help="or `none` to remove it")

    _action(commands, "submit", "send a DRAFT to the CRO (needs molecules and the documents signed)",
            one_action("SUBMIT"))
    cmd = _action(commands, "quote", "give a quote (CRO admin)", quote_action)
    _add_pricing_options(cmd, required=True)
    _action(commands, "approve", "approve the current quote (pharma admin)", one_action("APPROVE"))
    cmd = _action(commands, "reject", "reject a submission (CRO) or its price (pharma admin)",
                  one_action("REJECT", reason="reason"))
    cmd.add_argument("--reason", required=True)
    cmd = _action(commands, "cancel", "cancel a submission", one_action("CANCEL", reason="reason"))
    cmd.add_argument("--reason", default="")
    cmd = _action(commands, "request-changes", "ask the other side for changes (posts a message)",
                  one_action("REQUEST_CHANGES", text="text"))
    cmd.add_argument("--text", required=True, help="what should change")
    _action(commands, "start", "start the experiments (CRO)", one_action("START_EXPERIMENT"))
    _action(commands, "complete", "complete a submission whose results were reviewed", one_action("COMPLETE"))

    cmd = _action(commands, "act", "take any action, with the options it needs", generic_action)
    cmd.add_argument("action", type=action_word, metavar="ACTION",
                     help=f"{', '.join(a.lower().replace('_', '-') for a in ACTIONS)}")
    cmd.add_argument("--reason", default="")
    cmd.add_argument("--text", default="")
    _add_pricing_options(cmd, required=False)

    _with_id(commands, "status", "status, step times, current quote and the actions you may take", status)
    add_command(commands, "status-counts", "how many submissions are in each status", gateway=status_counts)
    _with_id(commands, "quotes", "every quote the CRO gave, newest first", quotes)
    cmd = _with_id(commands, "package", "the package built at SUBMIT: its SHA-256 and manifest", package)
    cmd.add_argument("--out", type=Path, metavar="FILE.json", help="write the manifest here")
    _with_id(commands, "requirements", "the documents the submission needs and their state", requirements)
    cmd = _with_id(commands, "reveal", "show the structures to the CRO (needs the NDA signed)", reveal)
    cmd.add_argument("--hide", action="store_true", help="hide them again")

    cmd = _with_id(commands, "messages", "the submission's thread, oldest first", messages)
    cmd.add_argument("--watch", action="store_true", help="then print new messages as they come, until Ctrl-C")
    cmd.add_argument("--page", type=int, default=0, help="only this page (default: the whole thread)")
    cmd.add_argument("--page-size", type=int, default=0, help="messages per page (server default 50)")
    cmd = _with_id(commands, "post", "post a message on the thread", post)
    cmd.add_argument("text", metavar="TEXT")
    cmd.add_argument("--document", default="", metavar="ID", help="a document of the submission to point at")
    cmd = _with_id(commands, "read", "mark the thread read", read)
    cmd.add_argument("--up-to", default="", metavar="MESSAGE_ID", help="default: the latest message")

    threads = subparsers.add_parser("messages", help="messages of your submissions").add_subparsers(
        dest="messages_command", required=True, metavar="COMMAND"
    )
    add_command(threads, "unread", "your unread messages per submission", gateway=unread)

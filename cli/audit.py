"""Audit trail commands: `audit verify` (walk the hash chain and its anchors), `audit export` (the trail
as CSV, filtered) and `audit history` (one object's events, oldest first)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from molbridge.identity.v1 import identity_service_pb2 as pb

from cli import output
from cli.app import add_command
from cli.client import CliError, Gateway
from cli.progress import format_bytes
from cli.transfer import save_stream

VERIFY_TIMEOUT_S = 600.0  # the gateway's route timeout for /audit-events/verify (it walks the whole chain)


def verify(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.identity.VerifyAuditTrail, pb.VerifyAuditTrailRequest(), timeout=VERIFY_TIMEOUT_S)
    result = answer.data
    if args.json:
        print(output.as_json(answer))
    else:
        print(output.fields([
            ("status", "ok" if result.ok else "BROKEN"),
            ("entries checked", str(result.entries_checked)),
            ("head", f"{result.head.sequence} {result.head.hash}"),
            ("anchors checked", str(result.anchors_checked)),
        ]))
    if not result.ok:
        found = result.first_break
        where = f" (entry {found.entry_id})" if found.entry_id else ""
        raise CliError(
            f"the audit trail is broken at sequence {found.sequence}{where}: "
            f"{output.enum_word(found, 'kind')}, expected hash {found.expected_hash or '-'}, "
            f"stored {found.stored_hash or '-'}"
        )


def export(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.ExportAuditEventsRequest(
        action=args.action, target_type=args.target_type, target_id=args.target_id, actor_id=args.actor_id,
        organization_id=args.organization_id, occurred_after=args.since, occurred_before=args.until,
    )
    stream = gw.stream(gw.identity.ExportAuditEvents, request)
    if args.out is None:  # to stdout, for pipes
        for chunk in stream:
            sys.stdout.buffer.write(chunk.data)
        sys.stdout.flush()
        return
    size = save_stream(stream, args.out, label=f"export {args.out.name}")
    print(f"Wrote {args.out} ({format_bytes(size)})")


def history(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.GetAuditHistoryRequest(
        target_type=args.target_type, target_id=args.target_id, page=args.page, page_size=args.page_size
    )
    answer = gw.call(gw.identity.GetAuditHistory, request)
    if args.json:
        print(output.as_json(answer))
        return
    rows = [
        [str(e.sequence), output.timestamp(e.occurred_at), e.action, e.outcome, e.actor_id, e.target_type,
         e.target_id, ", ".join(f"{k}={v}" for k, v in sorted(e.details.items()))]
        for e in answer.data
    ]
    headers = ["SEQ", "WHEN", "ACTION", "OUTCOME", "ACTOR", "TARGET TYPE", "TARGET", "DETAILS"]
    output.listing(args, headers, rows, output.page_summary(answer.meta, "event"))


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="the tamper-evident audit trail").add_subparsers(
        dest="audit_command", required=True, metavar="COMMAND"
    )
    add_command(audit, "verify", "walk the audit trail's hash chain and anchors; exit 1 when broken",
                gateway=verify)

    cmd = add_command(audit, "export", "save the audit trail as CSV (oldest first)", gateway=export)
    cmd.add_argument("-o", "--out", type=Path, metavar="FILE", help="file to write (default: standard output)")
    cmd.add_argument("--action", default="", help="only actions starting with this, e.g. auth.")
    cmd.add_argument("--target-type", default="", help="only events about this kind of object, e.g. submission")
    cmd.add_argument("--target-id", default="", help="only events about this object id")
    cmd.add_argument("--actor-id", default="", help="only events done by this user or API key id")
    cmd.add_argument("--organization-id", default="", help="one organization (platform auditors and admins)")
    cmd.add_argument("--since", default="", help="from this RFC 3339 instant, e.g. 2026-01-31T00:00:00Z")
    cmd.add_argument("--until", default="", help="before this RFC 3339 instant")

    cmd = add_command(audit, "history", "one object's audit events, oldest first", gateway=history)
    cmd.add_argument("target_type", metavar="TYPE", help="kind of object, e.g. submission, document, user")
    cmd.add_argument("target_id", metavar="ID")
    cmd.add_argument("--page", type=int, default=1)
    cmd.add_argument("--page-size", type=int, default=0, help="events per page (server default 50)")

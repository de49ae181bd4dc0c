"""CRO services catalogue commands: `cro-services list|get|create|update|delete`, and the parsing the
submission commands share with them (money, days, JSON files as google.protobuf.Struct)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2
from molbridge.cro.v1 import cro_service_pb2 as pb

from cli import output
from cli.app import add_command
from cli.arguments import enum_choice, truncate
from cli.client import CliError, Gateway

SORTS = ("name", "price", "-price", "turnaround_days")
NAME_WIDTH = 40


# --- pure pieces ----------------------------------------------------------------------------------------


def service_type(value: str) -> int:
    """A CroService.ServiceType from `adme`, `metabolic-stability` or `METABOLIC_STABILITY`."""
    return enum_choice(pb.CroService.ServiceType, value, "service type")


def money(value: str) -> str:
    """An amount as the API's decimal text ("1250.00"), checked here: a number, finite, not negative."""
    if not value.strip():
        return ""  # not given (argparse passes the default through here too)
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{value!r} is not an amount (e.g. 1250.00)") from None
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not an amount (e.g. 1250.00)")
    return format(amount, "f")  # plain digits: 1E+3 → 1000


def days(value: str) -> int:
    """A whole number of days, at least 1."""
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of days (a whole number from 1)")
    return int(value)


def currency(value: str) -> str:
    """An ISO 4217 code (three letters), upper-cased."""
    code = value.strip().upper()
    if not code:
        return ""  # not given
    if len(code) != 3 or not (code.isascii() and code.isalpha()):
        raise argparse.ArgumentTypeError(f"{value!r} is not a currency code (ISO 4217, e.g. EUR)")
    return code


def as_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def read_json_object(path: Path, option: str) -> struct_pb2.Struct:
    """A JSON file holding one object (a schema, specifications) as a Struct; anything else is the user's
    error, with the file and the reason."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CliError(f"{option} {path}: cannot read it: {err.strerror or err}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CliError(f"{option} {path}: not JSON ({err})") from err
    if not isinstance(value, dict):
        raise CliError(f"{option} {path}: expected a JSON object, found {type(value).__name__}")
    return as_struct(value)


def struct_text(struct: struct_pb2.Struct) -> str:
    """A Struct as compact JSON for one line of a listing ("-" when empty)."""
    if not struct.fields:
        return "-"
    return json.dumps(json_format.MessageToDict(struct), ensure_ascii=False, sort_keys=True)


def price_text(amount: str, currency_code: str) -> str:
    return f"{amount} {currency_code}".strip() if amount else "-"


def service_rows(services: Sequence[pb.CroService], *, name_width: int = NAME_WIDTH) -> list[list[str]]:
    return [
        [
            s.id,
            truncate(s.name, name_width),
            output.enum_word(s, "service_type"),
            s.organization_name or s.organization_id,
            price_text(s.base_price, s.currency),
            f"{s.turnaround_days} d",
            "yes" if s.active else "no",
        ]
        for s in services
    ]


SERVICE_HEADERS = ["ID", "NAME", "TYPE", "CRO", "PRICE", "TURNAROUND", "ACTIVE"]


def service_fields(s: pb.CroService) -> str:
    return output.fields(
        [
            ("id", s.id),
            ("name", s.name),
            ("type", output.enum_word(s, "service_type")),
            ("cro", f"{s.organization_name or '-'} ({s.organization_id})"),
            ("base price", price_text(s.base_price, s.currency)),
            ("turnaround", f"{s.turnaround_days} days"),
            ("active", "yes" if s.active else "no"),
            ("description", s.description or "-"),
            ("created", output.timestamp(s.created_at)),
            ("updated", output.timestamp(s.updated_at)),
        ]
    )


def schema_text(schema: struct_pb2.Struct) -> str:
    if not schema.fields:
        return "specification schema: none (any object)"
    body = json.dumps(json_format.MessageToDict(schema), ensure_ascii=False, indent=2, sort_keys=True)
    return f"specification schema:\n{body}"


def active_flag(value: bool | None) -> str:
    """UpdateCroServiceRequest.active: "true"/"false", or "" to leave it."""
    return "" if value is None else str(value).lower()


def show(args: argparse.Namespace, answer: Any, text: Callable[[], str]) -> None:
    """The API's JSON with --json, else the text."""
    print(output.as_json(answer) if args.json else text())


def show_list(
    args: argparse.Namespace,
    answer: Any,
    nothing: str,
    headers: Sequence[str],
    rows: Callable[[int], list[list[str]]],
    summary: str | None = None,
) -> None:
    """A list answer: the API's JSON with --json; `nothing` when it is empty (a CSV still gets its header);
    else a table of `rows(width)`, long texts cut to NAME_WIDTH, or CSV with whole values."""
    if args.json:
        print(output.as_json(answer))
    elif not answer.data and args.output != "csv":
        print(nothing)
    else:
        output.listing(args, headers, rows(NAME_WIDTH), summary, csv_rows=rows(sys.maxsize))


# --- requests --------------------------------------------------------------------------------------------


def list_request(args: argparse.Namespace) -> pb.ListCroServicesRequest:
    return pb.ListCroServicesRequest(
        service_type=args.type or pb.CroService.SERVICE_TYPE_UNSPECIFIED, organization_id=args.cro,
        max_price=args.max_price, max_turnaround_days=args.max_turnaround, include_inactive=args.include_inactive,
        sort=args.sort, page=args.page, page_size=args.page_size,
    )


def create_request(args: argparse.Namespace) -> pb.CreateCroServiceRequest:
    return pb.CreateCroServiceRequest(
        name=args.name, description=args.description, service_type=args.type, base_price=args.price,
        currency=args.currency, turnaround_days=args.turnaround,
        specification_schema=read_json_object(args.schema, "--schema") if args.schema else None,
        request_id=str(uuid.uuid4()),
    )


def update_request(args: argparse.Namespace) -> pb.UpdateCroServiceRequest:
    return pb.UpdateCroServiceRequest(
        id=args.id, name=args.name, description=args.description, base_price=args.price, currency=args.currency,
        turnaround_days=args.turnaround, active=active_flag(args.active),
        specification_schema=read_json_object(args.schema, "--schema") if args.schema else None,
    )


# --- commands --------------------------------------------------------------------------------------------


def list_services(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.catalogue.ListCroServices, list_request(args))
    show_list(args, answer, "No CRO service found", SERVICE_HEADERS,
              lambda width: service_rows(answer.data, name_width=width), output.page_summary(answer.meta, "service"))


def get_service(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.catalogue.GetCroService, pb.GetCroServiceRequest(id=args.id))
    show(args, answer, lambda: f"{service_fields(answer.data)}\n\n{schema_text(answer.data.specification_schema)}")


def create_service(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.catalogue.CreateCroService, create_request(args))
    show(args, answer, lambda: f"Created CRO service {answer.data.id}\n{service_fields(answer.data)}")


def update_service(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.catalogue.UpdateCroService, update_request(args))
    show(args, answer, lambda: f"Updated CRO service {answer.data.id}\n{service_fields(answer.data)}")


def delete_service(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.catalogue.DeleteCroService, pb.DeleteCroServiceRequest(id=args.id))
    show(args, answer, lambda: f"Deleted CRO service {args.id}" if answer.deleted
         else f"Deactivated CRO service {args.id}: submissions use it, so it is kept (inactive)")


def register(subparsers: Any) -> None:
    services = subparsers.add_parser("cro-services", help="the CRO services catalogue").add_subparsers(
        dest="cro_services_command", required=True, metavar="COMMAND"
    )
    type_help = "binding-assay, adme, solubility, permeability, metabolic-stability, toxicity or custom"

    cmd = add_command(services, "list", "list the CRO services offered", gateway=list_services)
    cmd.add_argument("--type", type=service_type, help=type_help)
    cmd.add_argument("--cro", default="", metavar="ORG_ID", help="only this CRO organization's services")
    cmd.add_argument("--max-price", type=money, default="", metavar="AMOUNT", help="base price at most")
    cmd.add_argument("--max-turnaround", type=days, default=0, metavar="DAYS", help="turnaround at most")
    cmd.add_argument("--sort", choices=SORTS, default="", help="default: name (descending price: --sort=-price)")
    cmd.add_argument("--include-inactive", action="store_true", help="your own CRO's inactive services too")
    cmd.add_argument("--page", type=int, default=1)
    cmd.add_argument("--page-size", type=int, default=0, help="services per page (server default 50)")

    cmd = add_command(services, "get", "show a CRO service and its specification schema", gateway=get_service)
    cmd.add_argument("id", metavar="ID")

    cmd = add_command(services, "create", "add a service to your CRO organization (cro_admin)",
                      gateway=create_service)
    cmd.add_argument("--name", required=True)
    cmd.add_argument("--type", type=service_type, required=True, help=type_help)
    cmd.add_argument("--price", type=money, required=True, metavar="AMOUNT", help="base price, e.g. 1250.00")
    cmd.add_argument("--currency", type=currency, required=True, help="ISO 4217, e.g. EUR")
    cmd.add_argument("--turnaround", type=days, required=True, metavar="DAYS", help="typical turnaround in days")
    cmd.add_argument("--schema", type=Path, metavar="FILE.json",
                     help="JSON Schema (draft 2020-12) the submissions' specifications must satisfy")
    cmd.add_argument("--description", default="")

    cmd = add_command(services, "update", "change a service; options not given stay as they are",
                      gateway=update_service)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--name", default="")
    cmd.add_argument("--description", default="")
    cmd.add_argument("--price", type=money, default="", metavar="AMOUNT")
    cmd.add_argument("--currency", type=currency, default="")
    cmd.add_argument("--turnaround", type=days, default=0, metavar="DAYS")
    cmd.add_argument("--schema", type=Path, metavar="FILE.json", help="replace the specification schema")
    activity = cmd.add_mutually_exclusive_group()
    activity.add_argument("--activate", dest="active", action="store_const", const=True, default=None)
    activity.add_argument("--deactivate", dest="active", action="store_const", const=False,
                          help="take no new submissions")

    cmd = add_command(services, "delete", "remove a service (one in use is deactivated instead)",
                      gateway=delete_service)
    cmd.add_argument("id", metavar="ID")

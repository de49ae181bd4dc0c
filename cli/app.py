"""How a command is declared: `add_command(...)` gives it the global options too, so they work on either
side of the command name (`molbridge --json users list` and `molbridge users list --json`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cli.client import Gateway

GatewayHandler = Callable[[argparse.Namespace, Gateway], None]
LocalHandler = Callable[[argparse.Namespace], None]


def add_global_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # On subcommands the defaults are suppressed, so they never overwrite a value given before them.
    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS

    parser.add_argument(
        "--target",
        default=default(None),
        help="gateway host:port (default: $MOLBRIDGE_TARGET, else 127.0.0.1:$GATEWAY_PORT or 8080)",
    )
    parser.add_argument(
        "--output",
        choices=["table", "json", "csv"],
        default=default("table"),
        help="how to print results: table (default), json (the API's JSON), csv (lists only)",
    )
    parser.add_argument("--json", action="store_true", default=default(False), help="same as --output json")
    parser.add_argument(
        "--show-trace",
        action="store_true",
        default=default(False),
        help="print the trace id of the command's calls (see `molbridge trace`)",
    )


def add_command(
    subparsers: Any,
    name: str,
    help: str,  # noqa: A002 - argparse's own keyword
    *,
    gateway: GatewayHandler | None = None,
    local: LocalHandler | None = None,
) -> argparse.ArgumentParser:
    """A subcommand run with a Gateway connection (`gateway=`) or without one (`local=`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=help)
    add_global_options(parser, top_level=False)
    parser.set_defaults(gateway_handler=gateway, local_handler=local)
    return parser

"""`molbridge`: the command-line client. Talks gRPC to the gateway; see `molbridge --help`.

A command module exposes `register(subparsers)` and declares its commands with cli.app.add_command;
the gRPC connection, tokens and error printing are handled here and in cli.client.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import grpc

from cli import audit, cro_services, documents, identity, imports, molecules, notifications, results, submissions
from cli.app import add_command, add_global_options
from cli.client import CliError, Gateway, cli_error, default_target
from cli.credentials import CredentialStore
from molbridge_client import __version__


def trace(args: argparse.Namespace) -> None:
    try:  # reads the span files of a development checkout, with the server's telemetry code
        from cli.trace import default_data_dir, show_trace
    except ImportError as err:
        raise CliError("`molbridge trace` needs a Molbridge development checkout (it reads local span files)") from err
    if args.data_dir is None:
        args.data_dir = default_data_dir()
    rendered = show_trace(args.trace_id, args.data_dir)
    if rendered is None:
        raise CliError(
            f"trace {args.trace_id} not found under {args.data_dir / 'traces'} "
            "(spans reach the files within a second; with OTEL_EXPORTER_OTLP_ENDPOINT set they go to "
            "your collector instead)"
        )
    print(rendered)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="molbridge",
        description="Molbridge command-line client (gRPC).",
        epilog="Exit codes: 0 ok, 1 other failure, 2 usage, 3 authentication, 4 permission denied, "
        "5 not found, 6 validation, 7 conflict, 8 rate limited, 9 unavailable.",
    )
    parser.add_argument("--version", action="version", version=f"molbridge {__version__}")
    add_global_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    identity.register(subparsers)
    imports.register(subparsers)
    molecules.register(subparsers)
    documents.register(subparsers)
    cro_services.register(subparsers)
    submissions.register(subparsers)
    results.register(subparsers)
    audit.register(subparsers)
    notifications.register(subparsers)
    cmd = add_command(subparsers, "trace", "print a trace from the local span files as a tree", local=trace)
    cmd.add_argument("trace_id", help="32 hex digits")
    cmd.add_argument("--data-dir", type=Path, default=None, help="default: $MOLBRIDGE_DATA_DIR, else .data in the repo")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.json:
        args.output = "json"
    args.json = args.output == "json"
    if args.local_handler is not None:
        args.local_handler(args)
        return
    target = args.target or default_target()
    api_key = os.environ.get("MOLBRIDGE_API_KEY") or None
    with Gateway(target, CredentialStore(), api_key=api_key) as gw:
        try:
            args.gateway_handler(args, gw)
        except grpc.RpcError as err:  # the client's typed errors are RpcErrors too
            raise cli_error(err, target) from err
        finally:
            if args.show_trace:
                print(f"trace_id: {gw.trace_id}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()
        return 0
    args: Any = parser.parse_args(argv)
    try:
        run(args)
    except CliError as err:
        print(f"molbridge: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `molbridge … | head`: the reader left, which is not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The CLI's side of the partner client (molbridge_client): a Client whose login lives in the user's
credentials file, the exit status of each kind of error, and one readable message per gRPC error."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from cli.credentials import CredentialStore
from molbridge_client import (
    AuthenticationError,
    AuthorizationError,
    Client,
    ConflictError,
    MolbridgeError,
    NotFoundError,
    NotLoggedIn,
    RateLimited,
    SessionExpired,
    Tokens,
    Unavailable,
    Unimplemented,
    ValidationError,
    default_target,
)
from molbridge_client.client import DEFAULT_TIMEOUT_SECONDS
from molbridge_client.errors import from_rpc_error

__all__ = ["CliError", "Gateway", "cli_error", "default_target", "describe_rpc_error", "exit_code_of"]

# Exit statuses (README "Exit codes"): scripts can tell why a command failed.
EXIT_FAILURE = 1  # anything else: bad local input, a failed import job, an unexpected server error
EXIT_USAGE = 2  # argparse: unknown command or option
EXIT_AUTHENTICATION = 3  # not logged in, session expired, wrong password or MFA code, bad API key
EXIT_PERMISSION = 4  # logged in, but not allowed
EXIT_NOT_FOUND = 5
EXIT_VALIDATION = 6  # the server refused the request's fields
EXIT_CONFLICT = 7
EXIT_RATE_LIMITED = 8
EXIT_UNAVAILABLE = 9  # the gateway or a service behind it did not answer (retry later)

EXIT_CODES: list[tuple[type[MolbridgeError], int]] = [
    (AuthenticationError, EXIT_AUTHENTICATION),
    (AuthorizationError, EXIT_PERMISSION),
    (NotFoundError, EXIT_NOT_FOUND),
    (ValidationError, EXIT_VALIDATION),
    (ConflictError, EXIT_CONFLICT),
    (RateLimited, EXIT_RATE_LIMITED),
    (Unavailable, EXIT_UNAVAILABLE),
]


def exit_code_of(err: MolbridgeError) -> int:
    return next((code for error_class, code in EXIT_CODES if isinstance(err, error_class)), EXIT_FAILURE)


class CliError(Exception):
    """An expected failure: printed as one message, exit status `exit_code` (1), no traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Gateway(Client):
    """The partner client as the CLI uses it: the login of `target` from the credentials file (shared by
    every molbridge process), or an API key (MOLBRIDGE_API_KEY); TLS with MOLBRIDGE_TLS=1 (and the CA
    bundle MOLBRIDGE_CA_FILE for a private CA)."""

    def __init__(
        self,
        target: str,
        store: CredentialStore,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        ca_file = os.environ.get("MOLBRIDGE_CA_FILE")
        super().__init__(
            target,
            tls=os.environ.get("MOLBRIDGE_TLS", "") not in ("", "0", "false"),
            root_certificates=Path(ca_file).read_bytes() if ca_file else None,
            api_key=api_key,
            tokens=store.for_target(target),
            timeout=timeout,
        )
        self.store = store

    def __enter__(self) -> Gateway:
        return self

    def profile(self) -> Tokens:
        profile = self.store.get(self.target)
        if profile is None:
            raise CliError(f"not logged in to {self.target}: run `molbridge login`", exit_code=EXIT_AUTHENTICATION)
        return profile


def cli_error(err: grpc.RpcError, target: str) -> CliError:
    """The CliError (message and exit status) for a failed call."""
    typed = from_rpc_error(err)
    if isinstance(typed, NotLoggedIn):
        message = f"not logged in to {target}: run `molbridge login`"
    elif isinstance(typed, SessionExpired):
        message = "your session has expired or was revoked: run `molbridge login`"
    else:
        message = describe_rpc_error(typed, target)
    return CliError(message, exit_code=exit_code_of(typed))


def describe_rpc_error(err: grpc.RpcError, target: str) -> str:
    """The server's message with the gRPC code and the ErrorInfo reason/detail, plus field violations."""
    typed = from_rpc_error(err)
    if not typed.reason and isinstance(typed, Unavailable) and typed.code() == grpc.StatusCode.UNAVAILABLE:
        return f"the gateway at {target} is unavailable: {typed.message}"
    if not typed.reason and isinstance(typed, Unimplemented):
        return f"the gateway at {target} does not offer this call (UNIMPLEMENTED): is its service deployed?"
    tags = [typed.code().name, *([typed.reason] if typed.reason else [])]
    # A metadata value that only repeats the message (e.g. the rule a refusal names) is said once.
    tags.extend(f"{k}={v}" for k, v in sorted(typed.metadata.items()) if v != typed.message)
    violations = [f"  {v.field}: {v.description}" for v in typed.field_violations]
    return "\n".join([f"{typed.message} ({', '.join(tags)})", *violations])

"""Identity commands: login, logout, whoami, users list|create."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import uuid
from typing import Any

from molbridge.identity.v1 import identity_service_pb2 as pb

from cli import output
from cli.app import add_command
from cli.client import CliError, Gateway
from molbridge_client import MolbridgeError


def _ask(prompt: str, flag: str) -> str:
    print(prompt, end="", file=sys.stderr, flush=True)  # stdout stays clean for --json and pipes
    try:
        answer = input().strip()
    except EOFError:
        print(file=sys.stderr)
        answer = ""
    if not answer:
        raise CliError(f"{prompt.rstrip(': ')} required: pass {flag}")
    return answer


def ask_secret(prompt: str, env_var: str | None = None) -> str:
    value = os.environ.get(env_var, "") if env_var else ""
    if not value:
        try:
            value = getpass.getpass(prompt)
        except EOFError:
            value = ""
    if not value:
        raise CliError(f"{prompt.rstrip(': ')} required" + (f" (or set {env_var})" if env_var else ""))
    return value


def login(args: argparse.Namespace, gw: Gateway) -> None:
    email = args.email or _ask("Email: ", "--email")
    password = ask_secret("Password: ", "MOLBRIDGE_PASSWORD")
    user = gw.login(
        email,
        password,
        mfa_code=lambda: args.code or os.environ.get("MOLBRIDGE_MFA_CODE") or _ask("MFA code: ", "--code"),
    )
    print(f"Logged in to {gw.target} as {user.email} ({', '.join(user.roles) or 'no roles'})")


def logout(args: argparse.Namespace, gw: Gateway) -> None:
    if gw.store.get(gw.target) is None:
        print(f"Not logged in to {gw.target}")
        return
    gw.logout()
    print(f"Logged out of {gw.target}")


def whoami(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.identity.GetMe, pb.GetMeRequest())
    if args.json:
        print(output.as_json(answer))
        return
    user = answer.data
    organization = user.organization_id
    try:
        org = gw.call(gw.identity.GetOrganization, pb.GetOrganizationRequest(id=user.organization_id)).data
        organization = f"{org.name} ({output.enum_word(org, 'kind')})"
    except MolbridgeError:
        pass  # the id alone is still useful
    print(
        output.fields(
            [
                ("email", user.email),
                ("name", user.full_name),
                ("id", user.id),
                ("organization", organization),
                ("roles", ", ".join(user.roles)),
                ("mfa", _on(user.mfa_enabled)),
                ("last login", output.timestamp(user.last_login_at)),
                ("gateway", gw.target),
            ]
        )
    )


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def list_users(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.ListUsersRequest(
        page=args.page, page_size=args.page_size, organization_id=args.organization_id, sort=args.sort
    )
    answer = gw.call(gw.identity.ListUsers, request)
    if args.json:
        print(output.as_json(answer))
        return
    rows = [
        [u.id, u.email, u.full_name, ",".join(u.roles), "yes" if u.active else "no", _on(u.mfa_enabled)]
        for u in answer.data
    ]
    headers = ["ID", "EMAIL", "NAME", "ROLES", "ACTIVE", "MFA"]
    output.listing(args, headers, rows, output.page_summary(answer.meta, "user"))


def create_user(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.CreateUserRequest(
        email=args.email,
        full_name=args.name,
        password=args.password or ask_secret("Password for the new user: "),
        roles=args.role,
        organization_id=args.organization_id,
        request_id=str(uuid.uuid4()),
    )
    answer = gw.call(gw.identity.CreateUser, request)
    if args.json:
        print(output.as_json(answer))
        return
    user = answer.data
    print(f"Created user {user.email} ({', '.join(user.roles)}), id {user.id}")


def register(subparsers: Any) -> None:
    cmd = add_command(subparsers, "login", "log in and keep the tokens for later commands", gateway=login)
    cmd.add_argument("--email", help="login email (prompted when missing)")
    cmd.add_argument("--code", help="TOTP code, when MFA is enabled (else $MOLBRIDGE_MFA_CODE or prompted)")

    add_command(subparsers, "logout", "end the session and forget its tokens", gateway=logout)
    add_command(subparsers, "whoami", "show the logged-in user", gateway=whoami)

    users = subparsers.add_parser("users", help="manage users of your organization").add_subparsers(
        dest="users_command", required=True, metavar="COMMAND"
    )
    cmd = add_command(users, "list", "list users of your organization", gateway=list_users)
    cmd.add_argument("--page", type=int, default=1)
    cmd.add_argument("--page-size", type=int, default=0, help="users per page (server default 50)")
    cmd.add_argument("--organization-id", default="", help="another organization (system_admin only)")
    cmd.add_argument("--sort", default="", help="email, full_name or created_at; prefix - for descending")

    cmd = add_command(users, "create", "create a user", gateway=create_user)
    cmd.add_argument("--email", required=True)
    cmd.add_argument("--name", required=True, help="display name")
    cmd.add_argument("--role", action="append", default=[], help="a role (repeatable; default by org kind)")
    cmd.add_argument("--password", help="initial password (prompted when missing)")
    cmd.add_argument("--organization-id", default="", help="target organization (system_admin only)")

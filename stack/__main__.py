"""`make run`: the whole mesh on loopback until Ctrl-C (or SIGTERM), then nothing left running."""

from __future__ import annotations

import signal
import sys
from types import FrameType

from services.runtime.settings import SettingsError, initial_credentials_path
from stack.mesh import Stack, StackSettings
from stack.processes import StartupError


class Interrupted(Exception):
    pass


def say(text: str) -> None:
    print(text, flush=True)


def on_signal(signum: int, _frame: FrameType | None) -> None:
    # Stopping must not itself be interrupted by a second Ctrl-C.
    ignore_signals()
    raise Interrupted(signal.Signals(signum).name)


def ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def banner(stack: Stack) -> str:
    env = stack.settings.env
    generated = initial_credentials_path(stack.data_dir)
    if env.get("MOLBRIDGE_ADMIN_EMAIL"):
        admin = f"{env['MOLBRIDGE_ADMIN_EMAIL']} (password: $MOLBRIDGE_ADMIN_PASSWORD)"
    elif generated.exists():
        email, password = generated.read_text().split()[:2]
        admin = f"{email} / {password}  (generated; kept in {generated} — change it, then delete the file)"
    else:
        admin = "as set on first start (MOLBRIDGE_ADMIN_EMAIL / MOLBRIDGE_ADMIN_PASSWORD)"
    rows = [
        ("REST API", f"{stack.gateway_url}/api/v1  (health: {stack.gateway_url}/api/v1/health)"),
        ("gRPC", f"{stack.grpc_target}  (h2c, same port; e.g. grpcurl -plaintext {stack.grpc_target} list)"),
        ("API docs", f"{stack.gateway_url}/docs"),
        ("Envoy admin", f"{stack.admin_url}  (loopback only)"),
        ("Admin user", admin),
        ("PostgreSQL", stack.database_url),
        ("NATS", stack.nats_url),
        *((name, addr) for name, addr in stack.settings.service_addrs.items()),
        ("Traces", str(stack.settings.otlp_endpoint or stack.traces_dir)),
        ("Data dir", str(stack.data_dir)),
        ("Logs", str(stack.logs_dir)),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\nMolbridge is running:\n" + "\n".join(lines) + "\nCtrl-C stops everything.\n"


def main() -> int:
    try:
        settings = StackSettings.from_env()
    except SettingsError as error:
        print(f"molbridge: {error}", file=sys.stderr, flush=True)
        return 2
    stack = Stack(settings, say=say)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        say(banner(stack))
        exited = stack.wait()
        print(exited.describe_exit(f"exited with code {exited.exit_code()}"), file=sys.stderr, flush=True)
        print("stopping everything", file=sys.stderr, flush=True)
        return 1
    except StartupError as error:
        print(f"\nmolbridge: could not start the stack: {error}", file=sys.stderr, flush=True)
        return 1
    except Interrupted as interrupt:
        say(f"\n{interrupt}: stopping …")
        return 0
    finally:
        ignore_signals()
        stack.stop()
        say("stopped; no process left running")


if __name__ == "__main__":
    sys.exit(main())

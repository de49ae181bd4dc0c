"""Typed settings from the environment, checked at start: one mechanism for every process and tool.

`Settings` holds what every process needs; a service declares its own subclass with its variables
(each field names its variable with `validation_alias`) and hands the class to `run_process`:

    class IdentitySettings(Settings):
        key_passphrase: str = Field("", validation_alias="MOLBRIDGE_KEY_PASSPHRASE")

A bad value stops the process at start with a `SettingsError` that names the variable and what it
accepts, e.g. `MOLBRIDGE_LOG_LEVEL='LOUD': Input should be 'DEBUG', 'INFO', … `. An empty variable
counts as unset. `from_env` reads an explicit mapping (tests pass a dict; nothing else is read).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.retention import RetentionPolicy
from bus.streams import DAY_S, StreamPolicy

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every service of the mesh with its default gRPC port; an address is overridden by
# MOLBRIDGE_<NAME>_ADDR. Adding a service is one line here.
SERVICE_PORTS: dict[str, int] = {
    "identity": 50051,
    "molecule": 50052,
    "cro": 50053,
    "document": 50054,
    "prediction": 50055,
    "notification": 50056,
}

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class SettingsError(ValueError):
    """A variable has a value the process cannot use; the message names it and what it accepts."""


def addr_variable(name: str) -> str:
    """`molecule` → `MOLBRIDGE_MOLECULE_ADDR`, `molecule-worker` → `MOLBRIDGE_MOLECULE_WORKER_ADDR`."""
    return f"MOLBRIDGE_{name.upper().replace('-', '_')}_ADDR"


def health_addr_variable(name: str) -> str:
    """Where a worker serves gRPC health: `MOLBRIDGE_<NAME>_HEALTH_ADDR` (e.g. MOLBRIDGE_MOLECULE_WORKER_…)."""
    return addr_variable(name).removesuffix("_ADDR") + "_HEALTH_ADDR"


def service_addr(name: str, env: Mapping[str, str] = os.environ) -> str:
    """Where `name` answers: one host:port, a DNS name resolving to every replica, or a comma list of
    the replicas' addresses."""
    return env.get(addr_variable(name)) or f"127.0.0.1:{SERVICE_PORTS[name]}"


def addr_list(value: str) -> list[str]:
    """The addresses of a comma list (`10.0.0.5:50052,10.0.0.6:50052`), blanks dropped."""
    return [part.strip() for part in value.split(",") if part.strip()]


def grpc_target(value: str) -> str:
    """The gRPC channel target for an address setting: one address as it is (a DNS name resolves to
    every replica behind it), a comma list of IP addresses as one `ipv4:`/`ipv6:` target. Channels
    balance calls round robin over what the target resolves to (GRPC_BALANCED)."""
    addrs = addr_list(value)
    if len(addrs) <= 1:
        return value.strip()
    hosts = [addr.rpartition(":")[0].strip("[]") for addr in addrs]
    try:
        versions = {ipaddress.ip_address(host).version for host in hosts}
    except ValueError:
        raise SettingsError(f"{value!r}: a list of replicas must be IP addresses; for host names use one "
                            "DNS name that resolves to every replica") from None
    if len(versions) > 1:
        raise SettingsError(f"{value!r}: IPv4 and IPv6 replicas cannot be mixed in one list")
    return f"ipv{versions.pop()}:{','.join(addrs)}"


# Channel options of every service-to-service channel: spread calls over all resolved replicas.
GRPC_BALANCED: tuple[tuple[str, str], ...] = (("grpc.lb_policy_name", "round_robin"),)


def check_host_port(value: str, variable: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f"{variable}={value!r}: expected host:port, e.g. 127.0.0.1:50051")
    return value


class Settings(BaseSettings):
    """What every Molbridge process reads. Field → variable (default):

    MOLBRIDGE_DATA_DIR (.data) · DATABASE_URL · NATS_URL (nats://127.0.0.1:4222; a comma list for a
    cluster) · MOLBRIDGE_STREAM_REPLICAS (1) ·
    MOLBRIDGE_<SERVICE>_ADDR (127.0.0.1:5005x; a comma list for replicas) · MOLBRIDGE_LISTEN_ADDR (a
    replica's own bind address) · OTEL_EXPORTER_OTLP_ENDPOINT · MOLBRIDGE_LOG_LEVEL (INFO) ·
    MOLBRIDGE_PUBLIC_URL (the gateway URL) · GATEWAY_PORT (8080) · MOLBRIDGE_SERVICES ·
    SMTP_URL / SMTP_CA_FILE / SMTP_VERIFY / SMTP_ALLOW_PLAINTEXT_AUTH · S3_* and AWS_* (object storage) ·
    MOLBRIDGE_<PROCESS>_HEALTH_ADDR (workers' health server) · retention of the bus (MOLBRIDGE_OUTBOX_RETENTION_DAYS,
    MOLBRIDGE_PROCESSED_EVENTS_RETENTION_DAYS, MOLBRIDGE_RETENTION_SWEEP_S, MOLBRIDGE_RETENTION_BATCH,
    MOLBRIDGE_EVENTS_MAX_AGE_DAYS, MOLBRIDGE_EVENTS_MAX_BYTES; see bus.retention and bus.streams).
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_ignore_empty=True)

    service_name: str = ""
    data_dir: Path = Field(REPO_ROOT / ".data", validation_alias="MOLBRIDGE_DATA_DIR")
    database_url: str = Field("", validation_alias="DATABASE_URL")
    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias="NATS_URL")
    # Copies JetStream keeps of each stream: 3 on a three-node cluster (NATS_URL lists its nodes).
    stream_replicas: int = Field(1, ge=1, le=5, validation_alias="MOLBRIDGE_STREAM_REPLICAS")
    otlp_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    log_level: LogLevel = Field("INFO", validation_alias="MOLBRIDGE_LOG_LEVEL")
    gateway_port: int = Field(8080, ge=1, le=65535, validation_alias="GATEWAY_PORT")
    public_url_override: str | None = Field(None, validation_alias="MOLBRIDGE_PUBLIC_URL")
    # After SIGTERM a server answers health NOT_SERVING and goes on serving this long, so load balancers
    # (Envoy checks every second) stop sending before it stops accepting; 0 when nothing balances it.
    drain_seconds: float = Field(0.0, ge=0, le=60, validation_alias="MOLBRIDGE_DRAIN_SECONDS")
    # Where this server binds when MOLBRIDGE_<SERVICE>_ADDR lists every replica (each replica its own).
    listen_addr_override: str | None = Field(None, validation_alias="MOLBRIDGE_LISTEN_ADDR")
    # The services GET /api/v1/health probes (comma separated; the stack sets it).
    mesh_services: str = Field("", validation_alias="MOLBRIDGE_SERVICES")
    # Email: unset = .eml files under <data dir>/outbox/email (see services.runtime.email).
    smtp_url: str = Field("", validation_alias="SMTP_URL")
    smtp_ca_file: Path | None = Field(None, validation_alias="SMTP_CA_FILE")
    smtp_verify: bool = Field(True, validation_alias="SMTP_VERIFY")
    smtp_allow_plaintext_auth: bool = Field(False, validation_alias="SMTP_ALLOW_PLAINTEXT_AUTH")
    # Object storage: S3 when S3_BUCKET is set, else a local directory.
    s3_bucket: str = Field("", validation_alias="S3_BUCKET")
    s3_endpoint_url: str | None = Field(None, validation_alias="S3_ENDPOINT_URL")
    s3_region: str | None = Field(None, validation_alias="S3_REGION")
    s3_create_bucket: bool = Field(False, validation_alias="S3_CREATE_BUCKET")
    # The bucket's lifecycle (services.runtime.storage.lifecycle_rules): staged uploads and reports expire.
    s3_lifecycle: bool = Field(True, validation_alias="MOLBRIDGE_S3_LIFECYCLE")
    upload_expiry_days: int = Field(7, ge=1, validation_alias="MOLBRIDGE_UPLOAD_EXPIRY_DAYS")
    report_expiry_days: int = Field(7, ge=1, validation_alias="MOLBRIDGE_REPORT_EXPIRY_DAYS")
    aws_default_region: str | None = Field(None, validation_alias="AWS_DEFAULT_REGION")
    aws_access_key_id: str | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: str | None = Field(None, validation_alias="AWS_SECRET_ACCESS_KEY", repr=False)
    aws_session_token: str | None = Field(None, validation_alias="AWS_SESSION_TOKEN", repr=False)
    # Retention of the bus (defaults and their reasons: bus.retention.RetentionPolicy, bus.streams.StreamPolicy).
    outbox_retention_days: float = Field(7.0, gt=0, validation_alias="MOLBRIDGE_OUTBOX_RETENTION_DAYS")
    processed_events_retention_days: float = Field(
        45.0, gt=0, validation_alias="MOLBRIDGE_PROCESSED_EVENTS_RETENTION_DAYS"
    )
    retention_sweep_s: float = Field(3600.0, gt=0, validation_alias="MOLBRIDGE_RETENTION_SWEEP_S")
    retention_batch: int = Field(1000, ge=1, le=100_000, validation_alias="MOLBRIDGE_RETENTION_BATCH")
    events_max_age_days: float = Field(30.0, gt=0.01, validation_alias="MOLBRIDGE_EVENTS_MAX_AGE_DAYS")
    events_max_bytes: int = Field(10 << 30, ge=1 << 20, validation_alias="MOLBRIDGE_EVENTS_MAX_BYTES")
    # The whole environment as read, for MOLBRIDGE_<NAME>_ADDR lookups and not-yet-typed variables.
    env: Mapping[str, str] = Field(default_factory=dict, repr=False, exclude=True)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, value: str) -> str:
        if value and not value.startswith(("smtp://", "smtps://")):
            raise ValueError("expected smtp://[user:pass@]host[:port] or smtps://…")
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str) -> str:
        if not addr_list(value) or not all(
            url.startswith(("nats://", "tls://", "ws://", "wss://")) for url in addr_list(value)
        ):
            raise ValueError("expected nats://host:port, or a comma list of a cluster's nodes")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://", "postgresql+")):
            raise ValueError("expected postgresql://user:pass@host:port/db")
        return value

    @model_validator(mode="after")
    def _markers_outlive_the_stream(self) -> Self:
        # A marker pruned while EVENTS still holds its event would let a replay apply the event twice.
        if self.processed_events_retention_days <= self.events_max_age_days:
            raise ValueError(
                "MOLBRIDGE_PROCESSED_EVENTS_RETENTION_DAYS must exceed MOLBRIDGE_EVENTS_MAX_AGE_DAYS "
                f"({self.processed_events_retention_days:g} <= {self.events_max_age_days:g})"
            )
        return self

    @property
    def stream_policy(self) -> StreamPolicy:
        return StreamPolicy(
            max_age_s=self.events_max_age_days * DAY_S, max_bytes=self.events_max_bytes, replicas=self.stream_replicas
        )

    @property
    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(
            outbox_s=self.outbox_retention_days * DAY_S,
            processed_events_s=self.processed_events_retention_days * DAY_S,
            interval_s=self.retention_sweep_s,
            batch=self.retention_batch,
        )

    @classmethod
    def from_env(cls, service_name: str, env: Mapping[str, str] | None = None) -> Self:
        """Read and check; raises SettingsError naming every bad variable."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {key: value for key, value in env.items() if value != ""}
        values.update(service_name=service_name, env=env)
        try:
            settings = cls.model_validate(values)
        except ValidationError as error:
            raise SettingsError(_describe(error, env)) from None
        if service_name in SERVICE_PORTS:
            variable = "MOLBRIDGE_LISTEN_ADDR" if settings.listen_addr_override else addr_variable(service_name)
            if len(addr_list(settings.listen_addr)) > 1:
                raise SettingsError(f"{variable}={settings.listen_addr!r} lists several replicas: set "
                                    "MOLBRIDGE_LISTEN_ADDR to this replica's own host:port")
            check_host_port(settings.listen_addr, variable)
        return settings

    @property
    def listen_addr(self) -> str:
        return self.listen_addr_override or self.addr_of(self.service_name)

    @property
    def public_url(self) -> str:
        """Base of links in emails: MOLBRIDGE_PUBLIC_URL, else the local gateway."""
        return self.public_url_override or f"http://127.0.0.1:{self.gateway_port}"

    def addr_of(self, service: str) -> str:
        return service_addr(service, self.env)

    def get(self, name: str, default: str = "") -> str:
        """A variable no typed field covers yet (prefer a field on the service's Settings subclass)."""
        return self.env.get(name, default)


_SECRET = re.compile(r"PASS|SECRET|TOKEN|KEY|URL", re.IGNORECASE)  # URLs may carry credentials


def _describe(error: ValidationError, env: Mapping[str, str]) -> str:
    problems = []
    for item in error.errors(include_url=False):
        variable = ".".join(str(part) for part in item["loc"]) or "settings"
        secret = _SECRET.search(variable)
        shown = f"={env[variable]!r}" if variable in env and not secret else ""
        problems.append(f"{variable}{shown}: {item['msg']}")
    return "invalid settings: " + "; ".join(problems)


def initial_credentials_path(data_dir: Path) -> Path:
    """Where identity keeps a generated first admin password (mode 0600) until the operator deletes it;
    `make run` shows it once. Here, not in identity, because the stack reads it too."""
    return data_dir / "initial-admin-credentials"

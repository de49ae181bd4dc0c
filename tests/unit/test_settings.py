"""Typed settings: defaults as documented in the README, and a bad value fails naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from services.runtime.settings import (
    GRPC_BALANCED,
    REPO_ROOT,
    Settings,
    SettingsError,
    grpc_target,
    health_addr_variable,
)


class ToySettings(Settings):
    """The pattern a service follows: its own variables on top of the base."""

    csv_processes: int = Field(4, ge=1, validation_alias="MOLBRIDGE_CSV_PROCESSES")


def test_defaults_match_the_readme() -> None:
    settings = Settings.from_env("molecule", {})
    assert settings.data_dir == (REPO_ROOT / ".data").resolve()
    assert settings.database_url == ""
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.listen_addr == "127.0.0.1:50052"
    assert settings.addr_of("identity") == "127.0.0.1:50051"
    assert settings.otlp_endpoint is None and settings.log_level == "INFO"
    assert settings.public_url == "http://127.0.0.1:8080" and settings.smtp_url == ""
    assert not settings.s3_bucket and not settings.s3_create_bucket


def test_values_are_read_and_typed(tmp_path: Path) -> None:
    env = {
        "MOLBRIDGE_DATA_DIR": str(tmp_path),
        "MOLBRIDGE_MOLECULE_ADDR": "0.0.0.0:6000",
        "MOLBRIDGE_IDENTITY_ADDR": "identity:7000",
        "GATEWAY_PORT": "9000",
        "MOLBRIDGE_LOG_LEVEL": "debug",
        "S3_CREATE_BUCKET": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",  # empty counts as unset
        "MOLBRIDGE_CSV_PROCESSES": "2",
    }
    settings = ToySettings.from_env("molecule", env)
    assert settings.data_dir == tmp_path and settings.listen_addr == "0.0.0.0:6000"
    assert settings.addr_of("identity") == "identity:7000"
    assert settings.public_url == "http://127.0.0.1:9000" and settings.log_level == "DEBUG"
    assert settings.s3_create_bucket is True and settings.otlp_endpoint is None
    assert settings.csv_processes == 2
    assert health_addr_variable("molecule-worker") == "MOLBRIDGE_MOLECULE_WORKER_HEALTH_ADDR"


@pytest.mark.parametrize(
    ("env", "named", "accepts"),
    [
        ({"MOLBRIDGE_LOG_LEVEL": "LOUD"}, "MOLBRIDGE_LOG_LEVEL='LOUD'", "'DEBUG', 'INFO'"),
        ({"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT='eighty'", "valid integer"),
        ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT='70000'", "less than or equal to 65535"),
        ({"S3_CREATE_BUCKET": "maybe"}, "S3_CREATE_BUCKET='maybe'", "valid boolean"),
        ({"SMTP_URL": "http://mail"}, "SMTP_URL", "smtp://"),
        ({"NATS_URL": "127.0.0.1:4222"}, "NATS_URL", "nats://host:port"),
        ({"MOLBRIDGE_MOLECULE_ADDR": "50052"}, "MOLBRIDGE_MOLECULE_ADDR='50052'", "host:port"),
        ({"MOLBRIDGE_CSV_PROCESSES": "0"}, "MOLBRIDGE_CSV_PROCESSES='0'", "greater than or equal to 1"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_accepts(env: dict[str, str], named: str, accepts: str) -> None:
    with pytest.raises(SettingsError) as error:
        ToySettings.from_env("molecule", env)
    assert named in str(error.value) and accepts in str(error.value)


def test_secrets_are_not_echoed_in_errors() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env("identity", {"DATABASE_URL": "mysql://root:hunter2@db/x"})
    assert "DATABASE_URL" in str(error.value) and "hunter2" not in str(error.value)


def test_replicas_are_a_comma_list_each_binding_its_own_address() -> None:
    env = {"MOLBRIDGE_MOLECULE_ADDR": "127.0.0.1:7001, 127.0.0.1:7002", "MOLBRIDGE_LISTEN_ADDR": "127.0.0.1:7002"}
    settings = Settings.from_env("molecule", env)
    assert settings.listen_addr == "127.0.0.1:7002"
    assert grpc_target(settings.addr_of("molecule")) == "ipv4:127.0.0.1:7001,127.0.0.1:7002"
    assert grpc_target("[::1]:7001,[::1]:7002") == "ipv6:[::1]:7001,[::1]:7002"
    assert grpc_target("molecule.internal:50052") == "molecule.internal:50052"  # DNS: every address it resolves to
    assert GRPC_BALANCED == (("grpc.lb_policy_name", "round_robin"),)


@pytest.mark.parametrize(("env", "says"), [
    ({"MOLBRIDGE_MOLECULE_ADDR": "127.0.0.1:7001,127.0.0.1:7002"}, "set MOLBRIDGE_LISTEN_ADDR"),
    ({"MOLBRIDGE_LISTEN_ADDR": "7002"}, "MOLBRIDGE_LISTEN_ADDR='7002': expected host:port"),
])
def test_a_server_needs_one_address_of_its_own(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        Settings.from_env("molecule", env)


@pytest.mark.parametrize(("value", "says"), [
    ("molecule-a:1,molecule-b:1", "must be IP addresses"),
    ("127.0.0.1:1,[::1]:1", "cannot be mixed"),
])
def test_a_list_of_replicas_that_grpc_cannot_dial_is_refused(value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        grpc_target(value)


def test_retention_defaults_and_values() -> None:
    defaults = Settings.from_env("cro", {})
    assert defaults.retention.outbox_s == 7 * 86_400 and defaults.retention.processed_events_s == 45 * 86_400
    assert defaults.retention.interval_s == 3600 and defaults.retention.batch == 1000
    assert defaults.stream_policy.max_age_s == 30 * 86_400 and defaults.stream_policy.max_bytes == 10 << 30
    assert defaults.stream_policy.replicas == 1
    chosen = Settings.from_env(
        "cro",
        {"MOLBRIDGE_EVENTS_MAX_AGE_DAYS": "14", "MOLBRIDGE_PROCESSED_EVENTS_RETENTION_DAYS": "20",
         "MOLBRIDGE_EVENTS_MAX_BYTES": "2147483648", "MOLBRIDGE_RETENTION_BATCH": "500",
         "MOLBRIDGE_STREAM_REPLICAS": "3"},
    )
    assert chosen.stream_policy.max_age_s == 14 * 86_400 and chosen.stream_policy.max_bytes == 2 << 30
    assert chosen.stream_policy.replicas == 3
    assert chosen.retention.processed_events_s == 20 * 86_400 and chosen.retention.batch == 500


def test_markers_must_be_kept_longer_than_the_stream_keeps_events() -> None:
    with pytest.raises(SettingsError, match="MOLBRIDGE_PROCESSED_EVENTS_RETENTION_DAYS must exceed"):
        Settings.from_env("cro", {"MOLBRIDGE_PROCESSED_EVENTS_RETENTION_DAYS": "30"})

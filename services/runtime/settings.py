"""Settings from the environment: one reader, so every service and tool agrees on names and defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every service of the mesh with its default gRPC port; an address is overridden by
# MOLBRIDGE_<NAME>_ADDR. Adding a service is one line here.
SERVICE_PORTS: dict[str, int] = {
    "identity": 50051,
    "molecule": 50052,
    "cro": 50053,
    "document": 50054,
    "prediction": 50055,
}


def service_addr(name: str, env: Mapping[str, str] = os.environ) -> str:
    return env.get(f"MOLBRIDGE_{name.upper()}_ADDR", f"127.0.0.1:{SERVICE_PORTS[name]}")


@dataclass(frozen=True)
class Settings:
    service_name: str
    data_dir: Path
    database_url: str
    nats_url: str
    listen_addr: str
    otlp_endpoint: str | None
    log_level: str
    env: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_env(cls, service_name: str, env: Mapping[str, str] = os.environ) -> Settings:
        data_dir = Path(env.get("MOLBRIDGE_DATA_DIR", str(REPO_ROOT / ".data"))).resolve()
        return cls(
            service_name=service_name,
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL", ""),
            nats_url=env.get("NATS_URL", "nats://127.0.0.1:4222"),
            listen_addr=service_addr(service_name, env),
            otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            log_level=env.get("MOLBRIDGE_LOG_LEVEL", "INFO"),
            env=dict(env),
        )

    def get(self, name: str, default: str = "") -> str:
        return self.env.get(name, default)

    def addr_of(self, service: str) -> str:
        return service_addr(service, self.env)

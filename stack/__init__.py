"""The local mesh: PostgreSQL, NATS, Envoy and every service as supervised child processes."""

import services  # noqa: F401  (before grpc is imported: turns off gRPC's fork handlers, see services/__init__.py)

"""What the services depend on goes away while an import, a prediction job, submission journeys and webhook
deliveries are in flight: PostgreSQL crashes (SIGKILL) and comes back, the AI engine is stopped for a while,
the webhook receiver answers 503 for a while, nats-server restarts.

Afterwards everything equals the same work done with no fault (workload.py's checks), and clients saw only
2xx or 503 SERVICE_UNAVAILABLE with Retry-After (502 INTEGRATION_ERROR while an external system is away),
never a 500 and never a hang.
"""

from __future__ import annotations

import time

from tests.faults.workload import Workload, prove

OUTAGE_S = 5.0  # how long each dependency stays away


def take_dependencies_away(w: Workload) -> None:
    with w.fault("engine stopped", external=True):
        engine = w.mesh.supervisor.get("engine")
        engine.stop()
        time.sleep(OUTAGE_S)
        engine.start()
    with w.fault("kill -9 postgres"):
        w.mesh.kill("postgres")
        time.sleep(OUTAGE_S)
        w.mesh.restart("postgres")
    with w.fault("webhook receiver 503", external=True):
        w.receiver.fail(1_000_000, status=503)
        time.sleep(OUTAGE_S * 3)
        w.receiver.fail(0)
    with w.fault("restart nats"):
        w.mesh.restart("nats")


def test_dependencies_going_away_lose_and_duplicate_nothing(workload: Workload) -> None:
    prove(workload, take_dependencies_away, "dependency_outages")

"""Every service and every worker is killed with SIGKILL in turn (then restarted), and nats-server is
restarted, while an import, a prediction job, submission journeys and webhook deliveries are in flight.

Afterwards everything equals the same work done with no fault (workload.py's checks), and clients saw only
2xx or 503 SERVICE_UNAVAILABLE with Retry-After, never a 500 and never a hang.
"""

from __future__ import annotations

from stack.mesh import SERVICES
from tests.faults.workload import Workload, prove

# The import's and the prediction's workers first, while their work is surely in flight.
ORDER = ["molecule-worker", "prediction-worker", "molecule", "prediction", "identity", "document", "cro",
         "cro-worker", "notification", "notification-worker"]


def crash_everything(w: Workload) -> None:
    for name in ORDER:
        w.kill_and_restart(name)
    with w.fault("restart nats"):
        w.mesh.restart("nats")


def test_every_process_killed_in_turn_loses_and_duplicates_nothing(workload: Workload) -> None:
    assert sorted(ORDER) == sorted(s.name for s in SERVICES)  # every process of the mesh
    prove(workload, crash_everything, "process_crashes")

"""The notification service's subscriptions and the delivery worker's entry point.

The server (`python -m services.notification`): identity's UserChanged → the directory; the other
services' events (domain/vocabulary.py SOURCES) → notifications. The worker
(`python -m services.notification.worker`): sends queued emails and webhook deliveries.

Handlers only translate between the bus and the use cases: no SQL here.
"""

from __future__ import annotations

if __name__ == "__main__":  # importing this module must not start a worker
    from services.notification.bootstrap import MIGRATIONS, NotificationSettings, build_worker
    from services.runtime.process import run_process

    run_process("notification-worker", build_worker, settings=NotificationSettings, migrations=MIGRATIONS)

from bus.tables import outbox_table, processed_events_table
from services.notification.store.tables import SCHEMA, metadata
from services.runtime.idempotency import metadata as idempotency_metadata
from services.runtime.migrations import run_env, service_metadata

run_env(service_metadata(metadata, idempotency_metadata, outbox_table(SCHEMA), processed_events_table(SCHEMA)))

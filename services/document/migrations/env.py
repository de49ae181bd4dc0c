from bus.tables import outbox_table, processed_events_table
from services.document.store import SCHEMA, metadata
from services.runtime.migrations import run_env, service_metadata

run_env(service_metadata(metadata, outbox_table(SCHEMA), processed_events_table(SCHEMA)))

import pytest
from molbridge.events.v1.audit_pb2 import AuditRecorded

from bus.subjects import event_subject, snake_case, source_events, work_subject


def test_event_subject_is_prefix_source_and_snake_case_type() -> None:
    assert event_subject("identity", AuditRecorded) == "molbridge.events.identity.audit_recorded"
    assert event_subject("identity", AuditRecorded(action="user.created")) == event_subject("identity", AuditRecorded)
    assert event_subject("identity", AuditRecorded.DESCRIPTOR) == "molbridge.events.identity.audit_recorded"


def test_work_subject_and_source_filter() -> None:
    assert work_subject("csv_chunks") == "molbridge.work.csv_chunks"
    assert work_subject("prediction_batches") == "molbridge.work.prediction_batches"
    assert source_events("identity") == "molbridge.events.identity.>"


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("AuditRecorded", "audit_recorded"),
        ("UserCreated", "user_created"),
        ("CSVChunkReady", "csv_chunk_ready"),
        ("Upload2Done", "upload2_done"),
        ("token", "token"),
    ],
)
def test_snake_case(name: str, snake: str) -> None:
    assert snake_case(name) == snake


@pytest.mark.parametrize("bad", ["", "Identity", "id.entity", "*", ">", "has space", "1st"])
def test_tokens_that_would_break_subjects_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        event_subject(bad, AuditRecorded)
    with pytest.raises(ValueError):
        work_subject(bad)

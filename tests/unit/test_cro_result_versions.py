"""Result versions' rules (services/cro/domain/result_versions.py) and the requested properties of a
submission's specifications (domain/results.py, Submission.create/edit)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.cro.domain.result_versions import (
    Decision,
    Mode,
    QcFlag,
    ResultStatus,
    ResultVersion,
    check_upload,
    input_sha256,
    parse_mode,
    qc_flag_of,
    uploader,
)
from services.cro.domain.results import (
    RESULT_PROPERTIES,
    Sample,
    SubmissionFacts,
    requested_properties,
    requested_property_violations,
    validate_results,
)
from services.cro.domain.submissions import ServiceFacts, Submission
from services.cro.domain.vocabulary import SubmissionStatus
from services.runtime.auth import Principal
from services.runtime.errors import AuthorizationError, NotFoundError, PreconditionError, ValidationError

AT = datetime(2026, 12, 1, tzinfo=UTC)
PHARMA, CRO, OTHER = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", "3" * 8
SCIENTIST = Principal("scientist", PHARMA, "PHARMA", frozenset({"pharma_scientist"}))
TECHNICIAN = Principal("technician", CRO, "CRO", frozenset({"cro_technician"}))
CRO_ADMIN = Principal("cro-admin", CRO, "CRO", frozenset({"cro_admin"}))
AUDITOR = Principal("auditor", PHARMA, "PHARMA", frozenset({"auditor"}))
OUTSIDER = Principal("outsider", OTHER, "PHARMA", frozenset({"pharma_admin"}))


def submission(status: SubmissionStatus = SubmissionStatus.IN_PROGRESS, **specifications: object) -> Submission:
    created, _ = Submission.create(
        SCIENTIST,
        service=ServiceFacts("svc", CRO, "BINDING_ASSAY", "USD", True),
        name="Panel",
        sample_prefix="ABCD",
        at=AT,
        specifications=specifications,
    )
    created.status = status
    return created


def version(**changes: object) -> ResultVersion:
    base = ResultVersion(
        id="r1", submission_id="s1", organization_id=PHARMA, cro_organization_id=CRO, version=1,
        status=ResultStatus.COMPLETED, storage_key="k", file_sha256="f", input_sha256="i", mode=Mode.KEEP_VALID,
        uploaded_by="technician", current=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# -- requested properties ------------------------------------------------------------------------------


def test_requested_properties_are_read_from_the_specifications() -> None:
    assert requested_properties({"properties": ["ic50", "solubility"]}) == {"ic50", "solubility"}
    assert requested_properties({}) == frozenset()
    assert requested_property_violations({}) == []
    assert requested_property_violations({"properties": ["ic50"]}) == []


def test_unknown_requested_properties_are_named() -> None:
    [(field, problem)] = requested_property_violations({"properties": ["ic50", "colour", "custom_x"]})
    assert field == "specifications.properties"
    assert "colour" in problem and "custom_x" in problem and "ic50," not in problem.split("(")[0]
    [(_, shape)] = requested_property_violations({"properties": "ic50"})
    assert "list" in shape


def test_a_submission_refuses_unknown_requested_properties_on_create_and_edit() -> None:
    with pytest.raises(ValidationError) as created:
        submission(SubmissionStatus.DRAFT, properties=["ic50", "nope"])
    problem = dict(created.value.field_violations)["specifications.properties"]
    assert problem.startswith("unknown result properties: nope")
    draft = submission(SubmissionStatus.DRAFT)
    with pytest.raises(ValidationError):
        draft.edit(SCIENTIST, at=AT, specifications={"properties": ["nope"]})
    assert draft.edit(SCIENTIST, at=AT, specifications={"properties": ["ic50"]}) is not None


def test_without_requested_properties_every_result_property_is_accepted_and_none_missing() -> None:
    sample = Sample("m1", "ABCD-0001")
    rows = [(1, ["ABCD-0001", "IC50", "5", "nM"]), (2, ["ABCD-0001", "logD", "2.1", ""])]
    mapping = {"sample": "sample_code", "property": "property", "value": "value", "units": "units"}
    everything = validate_results(["sample", "property", "value", "units"], rows, mapping,
                                  SubmissionFacts((sample,), frozenset()))
    assert everything.qc.values_accepted == 2 and everything.qc.missing == () and everything.qc.clean
    only_ic50 = validate_results(["sample", "property", "value", "units"], rows, mapping,
                                 SubmissionFacts((sample,), frozenset({"ic50", "solubility"})))
    assert [e.code for e in only_ic50.errors] == ["PROPERTY_NOT_REQUESTED"]
    assert only_ic50.qc.missing == (("ABCD-0001", "solubility"),)
    assert "ic50" in RESULT_PROPERTIES


# -- upload ---------------------------------------------------------------------------------------------


def test_only_the_cro_side_uploads_while_the_experiment_runs_or_results_are_uploaded() -> None:
    for status in (SubmissionStatus.IN_PROGRESS, SubmissionStatus.RESULTS_UPLOADED):
        check_upload(TECHNICIAN, submission(status))
        check_upload(CRO_ADMIN, submission(status))
    with pytest.raises(AuthorizationError):
        check_upload(SCIENTIST, submission())
    with pytest.raises(NotFoundError):
        check_upload(OUTSIDER, submission())
    for status in (SubmissionStatus.APPROVED, SubmissionStatus.RESULTS_REVIEWED, SubmissionStatus.CANCELLED):
        with pytest.raises(PreconditionError) as refused:
            check_upload(TECHNICIAN, submission(status))
        assert refused.value.detail == "SUBMISSION_STATE"


def test_mode_and_input_hash() -> None:
    assert parse_mode("") is Mode.KEEP_VALID and parse_mode("REJECT_ALL") is Mode.REJECT_ALL
    with pytest.raises(ValidationError):
        parse_mode("strict")
    one = input_sha256("f", {"a": "value", "b": "sample_code"}, {}, Mode.KEEP_VALID)
    assert one == input_sha256("f", {"b": "sample_code", "a": "value"}, {}, Mode.KEEP_VALID)
    assert one != input_sha256("f", {"a": "value", "b": "sample_code"}, {}, Mode.REJECT_ALL)
    assert one != input_sha256("g", {"a": "value", "b": "sample_code"}, {}, Mode.KEEP_VALID)


def test_the_uploader_is_the_actor_of_the_submission_step() -> None:
    actor = uploader(version())
    assert (actor.subject, actor.organization_id, actor.organization_kind) == ("technician", CRO, "CRO")
    events = submission().upload_results(actor, at=AT)
    assert [getattr(e, "to_status", None) for e in events] == [SubmissionStatus.RESULTS_UPLOADED]
    assert qc_flag_of(True) is QcFlag.PASSED and qc_flag_of(False) is QcFlag.WARNING


# -- the CRO's changes ---------------------------------------------------------------------------------


def test_the_cro_updates_notes_and_flags_with_a_note_before_review() -> None:
    v = version()
    assert v.update(TECHNICIAN, notes=" plate 2 re-read ", qc_flag=None, qc_note="", at=AT) == ["notes"]
    assert v.notes == "plate 2 re-read"
    with pytest.raises(ValidationError) as no_note:
        v.update(TECHNICIAN, notes=None, qc_flag=QcFlag.FAILED, qc_note=" ", at=AT)
    assert "qc_note" in dict(no_note.value.field_violations)
    assert v.update(TECHNICIAN, notes=None, qc_flag=QcFlag.FAILED, qc_note="control out of range", at=AT) == ["qc_flag"]
    assert v.update(TECHNICIAN, notes="plate 2 re-read", qc_flag=None, qc_note="", at=AT) == []
    with pytest.raises(AuthorizationError):
        v.update(SCIENTIST, notes="x", qc_flag=None, qc_note="", at=AT)
    with pytest.raises(PreconditionError) as processing:
        version(status=ResultStatus.PROCESSING).update(TECHNICIAN, notes="x", qc_flag=None, qc_note="", at=AT)
    assert processing.value.detail == "RESULT_PROCESSING"
    with pytest.raises(PreconditionError) as reviewed:
        version(review_decision="ACCEPTED").update(TECHNICIAN, notes="x", qc_flag=None, qc_note="", at=AT)
    assert reviewed.value.detail == "RESULT_REVIEWED"


def test_withdrawing_before_review_only_and_once() -> None:
    v = version()
    assert v.withdraw(TECHNICIAN, at=AT) and v.withdrawn and not v.current
    assert v.withdraw(TECHNICIAN, at=AT) is False  # a retried call
    with pytest.raises(AuthorizationError):
        version().withdraw(SCIENTIST, at=AT)
    with pytest.raises(PreconditionError):
        version(review_decision="REJECTED", status=ResultStatus.REJECTED).withdraw(TECHNICIAN, at=AT)


# -- review ---------------------------------------------------------------------------------------------


def test_the_pharma_side_reviews_the_current_completed_version_once() -> None:
    accepted = version()
    accepted.review(SCIENTIST, decision=Decision.ACCEPTED, reason="", at=AT)
    assert (accepted.status, accepted.review_decision, accepted.reviewed_by) == (
        ResultStatus.COMPLETED, "ACCEPTED", "scientist"
    )
    with pytest.raises(PreconditionError) as twice:
        accepted.review(SCIENTIST, decision=Decision.REJECTED, reason="again", at=AT)
    assert twice.value.detail == "RESULT_REVIEWED"

    rejected = version()
    with pytest.raises(ValidationError):
        rejected.review(SCIENTIST, decision=Decision.REJECTED, reason="  ", at=AT)
    rejected.review(SCIENTIST, decision=Decision.REJECTED, reason="plate effects", at=AT)
    assert (rejected.status, rejected.review_reason) == (ResultStatus.REJECTED, "plate effects")

    for who in (TECHNICIAN, AUDITOR, OUTSIDER):
        with pytest.raises(AuthorizationError):
            version().review(who, decision=Decision.ACCEPTED, reason="", at=AT)
    for v in (version(current=False), version(status=ResultStatus.FAILED), version(status=ResultStatus.PENDING)):
        with pytest.raises(PreconditionError) as state:
            v.review(SCIENTIST, decision=Decision.ACCEPTED, reason="", at=AT)
        assert state.value.detail == "RESULT_STATE"


def test_visibility_is_the_two_parties() -> None:
    v = version()
    assert v.visible_to(SCIENTIST) and v.visible_to(TECHNICIAN) and not v.visible_to(OUTSIDER)

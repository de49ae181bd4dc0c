"""Every action of POST /submissions/{id}/actions by every role, in every state one submission passes
through, through Envoy: the answer each gets is derived from the domain's own tables (TRANSITIONS,
WHO_MAY, rule_text), so a rule that changes changes what this test expects.

The callers: the pharma organization's scientist and admin, the CRO organization's technician and admin,
a platform auditor (read-only: not a party), a third pharma organization and the system admin. In each
state every caller tries every action: one the rules allow is not taken (but must be among the
submission's `permitted_actions` for that caller), except the one that takes the journey on; a refused one
answers the documented envelope — 404 RESOURCE_NOT_FOUND for a non-party (and for the CRO on a DRAFT),
403 AUTHORIZATION_ERROR naming the rule, 409 RESOURCE_CONFLICT naming the allowed actions — and leaves
the submission as it was (same status, same updated_at).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum

import httpx

from services.cro.domain.submissions import THROUGH_RESULTS, TRANSITIONS, WHO_MAY, allowed_actions, rule_text
from services.cro.domain.vocabulary import VISIBLE_TO_CRO, Action, Side, SubmissionStatus
from services.runtime.auth import Principal
from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import (
    Parties,
    act,
    new_service,
    sample_codes,
    sign,
    signed_by,
    upload,
    upload_results,
    wait_for_status,
)
from tests.e2e.molecule_rest import assert_error, created, data
from tests.e2e.test_identity_gateway import PASSWORD, bearer, login

api = test_identity_gateway.api
admin = test_identity_gateway.admin

S = SubmissionStatus
A = Action

# A valid body for each action, so that a refusal is the rules' and never the input's.
FIELDS: dict[Action, dict[str, object]] = {
    A.PROVIDE_PRICING: {"price": "4200.00", "currency": "USD", "turnaround_days": 21,
                        "valid_until": (date.today() + timedelta(days=30)).isoformat()},
    A.REJECT: {"reason": "tried by the access matrix"},
    A.REQUEST_CHANGES: {"text": "tried by the access matrix"},
    A.CANCEL: {"reason": "tried by the access matrix"},
}


class Answer(Enum):
    ALLOWED = 0
    NOT_FOUND = 404  # not a party, or the CRO before the submission was sent to it
    NOT_BY_ROLE = 403  # no rule of the action gives the caller's role on its side
    WRONG_STATE = 409  # the state machine has no such step here
    NOT_IN_STATE = 4031  # the caller's rule does not cover this state (403 too)


@dataclass(frozen=True)
class Caller:
    name: str
    principal: Principal
    headers: dict[str, str]


def caller(name: str, session: dict, kind: str) -> Caller:
    user = session["user"]
    return Caller(name, Principal(user["id"], user["organization_id"], kind, frozenset(user["roles"])),
                  bearer(session))


def error_info(error: dict) -> dict[str, str]:
    """The metadata of the envelope's google.rpc.ErrorInfo (its `detail` is the domain's finer reason)."""
    infos = [d for d in error.get("details", []) if d.get("@type", "").endswith("google.rpc.ErrorInfo")]
    assert len(infos) == 1 and infos[0]["reason"] == error["code"], error
    return dict(infos[0].get("metadata", {}))


def expected(who: Principal, side: Side | None, status: SubmissionStatus, action: Action) -> Answer:
    """What the domain answers, in its order: party, role, state, the rule's states."""
    if (side is None or (side is Side.CRO and status not in VISIBLE_TO_CRO)) and not who.is_system_admin:
        return Answer.NOT_FOUND
    rules = WHO_MAY[action]
    if not any(rule.holds_role(who, side) for rule in rules):
        return Answer.NOT_BY_ROLE
    if action not in TRANSITIONS[status]:
        return Answer.WRONG_STATE
    if not any(rule.admits(who, side, status) for rule in rules):
        return Answer.NOT_IN_STATE
    return Answer.ALLOWED


class Matrix:
    def __init__(self, api: httpx.Client, parties: Parties, callers: list[Caller], submission_id: str) -> None:
        self.api, self.parties, self.callers, self.id = api, parties, callers, submission_id
        self.tried: Counter[Answer] = Counter()
        self.states: list[SubmissionStatus] = []

    def side(self, who: Principal) -> Side | None:
        return {self.parties.pharma.id: Side.PHARMA, self.parties.cro.id: Side.CRO}.get(who.organization_id)

    def submission(self, headers: dict[str, str]) -> httpx.Response:
        return self.api.get(f"/submissions/{self.id}", headers=headers)

    def check(self, status: SubmissionStatus) -> None:
        """Every caller tries every action in `status`."""
        before = data(self.submission(self.parties.scientist_headers))
        assert before["status"] == status, before
        self.states.append(status)
        for who in self.callers:
            allowed = set()
            for action in Action:
                answer = expected(who.principal, self.side(who.principal), status, action)
                self.tried[answer] += 1
                if answer is Answer.ALLOWED:
                    allowed.add(action.value)
                    if action in THROUGH_RESULTS:
                        self.through_results(who, status, action, before)
                    continue
                self.refused(who, status, action, answer, before)
            shown = self.submission(who.headers)
            if expected(who.principal, self.side(who.principal), status, A.CANCEL) is Answer.NOT_FOUND:
                assert_error(shown, 404, "RESOURCE_NOT_FOUND")
            else:
                assert set(data(shown)["permitted_actions"]) == allowed, (who.name, status)

    def refused(self, who: Caller, status: SubmissionStatus, action: Action, answer: Answer, before: dict) -> None:
        response = act(self.api, who.headers, self.id, action, **FIELDS.get(action, {}))
        where = f"{action} by {who.name} in {status}"
        if answer is Answer.NOT_FOUND:
            assert_error(response, 404, "RESOURCE_NOT_FOUND")
        elif answer is Answer.WRONG_STATE:
            error = assert_error(response, 409, "RESOURCE_CONFLICT")
            listed = error["message"].partition("allowed actions: ")[2]
            permitted = ", ".join(allowed_actions(status)) or "none: it is final"
            assert listed == permitted, (where, error)
            assert error_info(error) == {"detail": "SUBMISSION_STATE", "status": status.value, "action": action.value,
                                         "allowed_actions": ",".join(allowed_actions(status))}, (where, error)
        else:
            error = assert_error(response, 403, "AUTHORIZATION_ERROR")
            assert rule_text(action) in error["message"], (where, error)
            assert error_info(error) == {"detail": "SUBMISSION_ROLE", "action": action.value,
                                         "rule": rule_text(action)}, (where, error)
        after = data(self.submission(self.parties.scientist_headers))
        assert (after["status"], after["updated_at"]) == (before["status"], before["updated_at"]), where

    def through_results(self, who: Caller, status: SubmissionStatus, action: Action, before: dict) -> None:
        """An allowed results step asked of the actions endpoint: 409 pointing at the results API, nothing moved."""
        error = assert_error(act(self.api, who.headers, self.id, action, **FIELDS.get(action, {})), 409,
                             "RESOURCE_CONFLICT")
        assert THROUGH_RESULTS[action] in error["message"], (action, who.name, error)
        assert error_info(error)["detail"] == "USE_RESULTS_API", error
        after = data(self.submission(self.parties.scientist_headers))
        assert (after["status"], after["updated_at"]) == (before["status"], before["updated_at"]), (action, status)

    def advance(self, who: Caller, action: Action, **fields: object) -> dict:
        """The one action that takes the journey on, which the rules must allow `who` here."""
        status = S(data(self.submission(self.parties.scientist_headers))["status"])
        assert expected(who.principal, self.side(who.principal), status, action) is Answer.ALLOWED
        moved = data(act(self.api, who.headers, self.id, action, request_id=uuid.uuid4().hex,
                         **(FIELDS.get(action, {}) | fields)))
        assert moved["status"] == TRANSITIONS[status][action], moved
        return dict(moved)


def auditor(api: httpx.Client, admin: dict) -> dict:
    """A platform auditor (the role belongs to PLATFORM organizations), logged in."""
    email = f"auditor-{uuid.uuid4().hex[:8]}@e2e.test"
    made = api.post("/users", json={"email": email, "full_name": "Auditor", "password": PASSWORD,
                                    "roles": ["auditor"]}, headers=bearer(admin))
    assert made.status_code == 201, made.text
    return login(api, email, PASSWORD)


def test_every_action_by_every_role_in_every_state(api: httpx.Client, admin: dict) -> None:
    p = Parties(api, admin)
    scientist = caller("pharma_scientist", p.scientist, "PHARMA")
    pharma_admin = caller("pharma_admin", p.pharma.session, "PHARMA")
    technician = caller("cro_technician", p.technician, "CRO")
    cro_admin = caller("cro_admin", p.cro.session, "CRO")
    callers = [scientist, pharma_admin, technician, cro_admin, caller("auditor", auditor(api, admin), "PLATFORM"),
               caller("third organization", p.outsider.session, "PHARMA"), caller("system_admin", admin, "PLATFORM")]

    service = new_service(api, p.cro, name=f"Matrix panel {uuid.uuid4().hex[:6]}")
    molecules = created(api.post("/molecules/batch", json={"molecules": [{"smiles": "CCO"}]},
                                 headers=p.scientist_headers))
    draft = created(api.post("/submissions", json={
        "name": "Access matrix", "cro_service_id": service["id"], "budget": "5000",
        "molecules": [{"molecule_id": molecules[0]["molecule_id"], "concentration": "10 mM"}],
        "specifications": {"temperature": 37}, "request_id": uuid.uuid4().hex,
    }, headers=p.scientist_headers))
    matrix = Matrix(api, p, callers, draft["id"])
    for document_type in ("NON_DISCLOSURE_AGREEMENT", "MATERIAL_TRANSFER_AGREEMENT"):
        signed_by(api, p.scientist_headers, upload(api, p.scientist_headers, draft["id"], document_type), p.pharma)
    upload(api, p.scientist_headers, draft["id"], "EXPERIMENT_SPECIFICATION")

    matrix.check(S.DRAFT)
    matrix.advance(scientist, A.SUBMIT)
    wait_for_status(api, p.scientist_headers, draft["id"], S.PENDING_REVIEW)  # the package worker's step
    matrix.check(S.PENDING_REVIEW)
    matrix.advance(cro_admin, A.PROVIDE_PRICING)
    matrix.check(S.PRICING_PROVIDED)
    matrix.advance(pharma_admin, A.APPROVE)
    matrix.check(S.APPROVED)
    agreement = upload(api, p.scientist_headers, draft["id"], "SERVICE_AGREEMENT")
    sign(api, p.scientist_headers, agreement, [
        (p.pharma, {"user_id": p.pharma.user_id, "routing_order": 1}),
        (p.cro, {"organization_id": p.cro.id, "role": "cro_admin", "routing_order": 2}),
    ])
    matrix.advance(technician, A.START_EXPERIMENT)
    matrix.check(S.IN_PROGRESS)
    # The two results steps are taken by the results flow: the CRO's upload, the pharma side's review.
    codes = sample_codes(api, p.technician_headers, draft["id"])
    version = upload_results(api, p.technician_headers, draft["id"],
                             [["sample_code", "property", "value", "units"], [codes[0], "ic50", "42", "nM"]])
    assert version["status"] == "COMPLETED", version
    wait_for_status(api, p.scientist_headers, draft["id"], S.RESULTS_UPLOADED)
    matrix.check(S.RESULTS_UPLOADED)
    data(api.put(f"/results/{version['id']}/status", json={"decision": "ACCEPTED"}, headers=scientist.headers))
    wait_for_status(api, p.scientist_headers, draft["id"], S.RESULTS_REVIEWED)
    matrix.check(S.RESULTS_REVIEWED)
    matrix.advance(scientist, A.COMPLETE)
    matrix.check(S.COMPLETED)

    # Not vacuous: every kind of answer was met, and every caller tried every action in every state.
    assert set(matrix.tried) == set(Answer), matrix.tried
    assert sum(matrix.tried.values()) == len(matrix.states) * len(callers) * len(Action)

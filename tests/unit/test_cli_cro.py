"""`molbridge cro-services …`, `submissions …` and `messages unread` without a gateway: argument parsing
(money, days, dates, molecule:concentration, line items, specifications), the requests the commands send,
what the tables show, and how `--watch` follows a thread."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from molbridge.cro.v1 import cro_service_pb2 as pb
from molbridge.cro.v1 import cro_service_pb2_grpc as pb_grpc

from cli import cro_services, submissions
from cli.client import CliError
from cli.main import build_parser
from cli.submissions import (
    LINE_HEADERS,
    MESSAGE_HEADERS,
    QUOTE_HEADERS,
    REQUIREMENT_HEADERS,
    SUBMISSION_HEADERS,
    follow,
    line_rows,
    lines_total,
    message_json,
    message_line,
    message_rows,
    molecule_table,
    parse_line_item,
    parse_molecule,
    quote_date,
    quote_rows,
    requirement_rows,
    spec_fields,
    status_text,
    submission_rows,
    submission_text,
)
from molbridge_client import Client, NotFoundError, Unavailable

PROTO = Path(__file__).parents[2] / "protos/molbridge/cro/v1/cro_service.proto"
SUBMISSION_ID = "3f1c2b4a-5d6e-4f70-8a9b-0c1d2e3f4a5b"
MOLECULE_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
SERVICE_ID = "1b2c3d4e-5f60-4718-9a0b-c1d2e3f4a5b6"


def parse(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


def at(iso: str) -> Timestamp:
    stamp = Timestamp()
    stamp.FromJsonString(iso)
    return stamp


# --- arguments -------------------------------------------------------------------------------------------


def test_cro_service_options_are_checked_and_normalized() -> None:
    args = parse("cro-services", "create", "--name", "Kinase panel", "--type", "binding-assay", "--price", "1250.00",
                 "--currency", "eur", "--turnaround", "14", "--description", "10 kinases")
    request = cro_services.create_request(args)
    assert (request.name, request.service_type, request.base_price, request.currency, request.turnaround_days,
            request.description) == ("Kinase panel", pb.CroService.BINDING_ASSAY, "1250.00", "EUR", 14, "10 kinases")
    assert not request.HasField("specification_schema")
    assert str(uuid.UUID(request.request_id)) == request.request_id
    assert cro_services.create_request(args).request_id != request.request_id  # a fresh key per command
    assert cro_services.money("1e3") == "1000" and cro_services.money(" 0 ") == "0"


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["cro-services", "list", "--type", "assay"], "unknown service type 'assay' (choose from binding-assay, adme"),
        (["cro-services", "list", "--max-price", "cheap"], "'cheap' is not an amount"),
        (["cro-services", "list", "--max-price", "-5"], "'-5' is not an amount"),
        (["cro-services", "list", "--max-price", "NaN"], "'NaN' is not an amount"),
        (["cro-services", "list", "--max-turnaround", "0"], "'0' is not a number of days"),
        (["cro-services", "list", "--sort", "cost"], "invalid choice: 'cost'"),
        (["cro-services", "create", "--name", "X", "--type", "adme", "--price", "1", "--currency", "euro",
          "--turnaround", "3"], "'euro' is not a currency code"),
        (["cro-services", "update", SERVICE_ID, "--activate", "--deactivate"], "not allowed with argument"),
        (["submissions", "list", "--status", "waiting"], "unknown status 'waiting' (choose from draft, submitted"),
        (["submissions", "list", "--from", "03/12/2026"], "'03/12/2026' is not a date (YYYY-MM-DD)"),
        (["submissions", "create", "--name", "N", "--service", SERVICE_ID, "--molecule", ":10 mM"],
         "expected MOLECULE_ID[:CONCENTRATION]"),
        (["submissions", "create", "--name", "N", "--service", SERVICE_ID, "--spec", "s.json", "--spec-field", "a=1"],
         "not allowed with argument"),
        (["submissions", "quote", SUBMISSION_ID, "--price", "10", "--turnaround", "5"],
         "the following arguments are required: --valid-until"),
        (["submissions", "quote", SUBMISSION_ID, "--turnaround", "5", "--valid-until", "2030-01-01", "--line", "S-1:3"],
         "expected MOLECULE:ASSAY:REPLICATES:UNIT_PRICE"),
        (["submissions", "reject", SUBMISSION_ID], "the following arguments are required: --reason"),
        (["submissions", "act", SUBMISSION_ID, "dance"], "unknown action 'dance' (choose from submit, provide-pricing"),
        (["submissions", "update", SUBMISSION_ID, "--budget", "lots"], "'lots' is not an amount"),
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_status:
        parse(*argv)
    assert exit_status.value.code == 2
    assert complaint in capsys.readouterr().err


def test_list_filters_become_the_request() -> None:
    services = cro_services.list_request(parse("cro-services", "list", "--type", "ADME", "--cro", "org-1",
                                               "--max-price", "500", "--max-turnaround", "10", "--sort=-price"))
    assert services == pb.ListCroServicesRequest(service_type=pb.CroService.ADME, organization_id="org-1",
                                                 max_price="500", max_turnaround_days=10, sort="-price", page=1)
    listed = submissions.list_request(parse("submissions", "list", "--status", "pricing-provided", "--cro", "org-2",
                                            "--service", SERVICE_ID, "--from", "2026-01-01", "--to", "2026-12-31"))
    assert listed == pb.ListSubmissionsRequest(status=pb.Submission.PRICING_PROVIDED, cro_organization_id="org-2",
                                               cro_service_id=SERVICE_ID, created_from="2026-01-01",
                                               created_to="2026-12-31", page=1)
    with pytest.raises(CliError, match="--from 2026-12-31 is after --to 2026-01-01"):
        submissions.list_request(parse("submissions", "list", "--from", "2026-12-31", "--to", "2026-01-01"))


def test_a_service_update_sends_only_what_changes(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["temperature_c"]}), encoding="utf-8")
    request = cro_services.update_request(parse("cro-services", "update", SERVICE_ID, "--price", "99.50",
                                                "--deactivate", "--schema", str(schema)))
    assert (request.id, request.base_price, request.active, request.name, request.turnaround_days) == (
        SERVICE_ID, "99.50", "false", "", 0)
    assert json_format.MessageToDict(request.specification_schema) == {"type": "object",
                                                                       "required": ["temperature_c"]}
    assert cro_services.update_request(parse("cro-services", "update", SERVICE_ID, "--activate")).active == "true"
    assert cro_services.update_request(parse("cro-services", "update", SERVICE_ID, "--name", "New")).active == ""


def test_json_files_must_hold_an_object(tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]", encoding="utf-8")
    broken = tmp_path / "broken.json"
    broken.write_text("{'type': 'object'}", encoding="utf-8")
    with pytest.raises(CliError, match=r"--schema .*list\.json: expected a JSON object, found list"):
        cro_services.read_json_object(listed, "--schema")
    with pytest.raises(CliError, match=r"--spec .*broken\.json: not JSON"):
        cro_services.read_json_object(broken, "--spec")
    with pytest.raises(CliError, match="cannot read it"):
        cro_services.read_json_object(tmp_path / "absent.json", "--spec")


# --- molecules, specifications, quotes, dates ------------------------------------------------------------


def test_molecule_with_an_optional_concentration() -> None:
    assert parse_molecule(MOLECULE_ID) == pb.SubmissionMoleculeInput(molecule_id=MOLECULE_ID)
    assert parse_molecule(f"{MOLECULE_ID}: 10 mM ") == pb.SubmissionMoleculeInput(molecule_id=MOLECULE_ID,
                                                                                 concentration="10 mM")
    assert parse_molecule("m1:1:2 v/v").concentration == "1:2 v/v"  # only the first colon splits


def test_specification_fields_become_a_typed_struct() -> None:
    spec = spec_fields(["temperature_c=37", "replicates=3", "buffer=PBS pH 7.4", "blind=true", "notes=",
                        "assay.readout=fluorescence", "assay.wavelengths=[485, 535]", 'lot="0042"', "ratio=NaN"])
    assert json_format.MessageToDict(spec) == {
        "temperature_c": 37, "replicates": 3, "buffer": "PBS pH 7.4", "blind": True, "notes": "",
        "assay": {"readout": "fluorescence", "wavelengths": [485, 535]}, "lot": "0042", "ratio": "NaN",
    }
    for values, complaint in (
        (["temperature"], "expected KEY=VALUE"),
        (["=3"], "expected KEY=VALUE"),
        (["a..b=3"], "expected KEY=VALUE"),
        (["a=1", "a=2"], "--spec-field a is given twice"),
        (["a=1", "a.b=2"], "a is already a value"),
    ):
        with pytest.raises(CliError, match=complaint):
            spec_fields(values)


def test_a_submission_is_created_with_molecules_spec_and_budget(tmp_path: Path) -> None:
    args = parse("submissions", "create", "--name", "Kinase round 1", "--service", SERVICE_ID,
                 "--molecule", f"{MOLECULE_ID}:10 mM", "--molecule", "m2", "--spec-field", "temperature_c=37",
                 "--budget", "5000")
    request = submissions.create_request(args)
    assert (request.name, request.cro_service_id, request.budget) == ("Kinase round 1", SERVICE_ID, "5000")
    assert [(m.molecule_id, m.concentration) for m in request.molecules] == [(MOLECULE_ID, "10 mM"), ("m2", "")]
    assert json_format.MessageToDict(request.specifications) == {"temperature_c": 37}
    assert uuid.UUID(request.request_id)
    spec = tmp_path / "spec.json"
    spec.write_text('{"temperature_c": 25, "medium": "DMSO"}', encoding="utf-8")
    from_file = submissions.create_request(parse("submissions", "create", "--name", "N", "--service", SERVICE_ID,
                                                 "--spec", str(spec)))
    assert json_format.MessageToDict(from_file.specifications) == {"temperature_c": 25, "medium": "DMSO"}
    bare = submissions.create_request(parse("submissions", "create", "--name", "N", "--service", SERVICE_ID))
    assert not bare.HasField("specifications") and not bare.molecules


def test_an_update_replaces_molecules_only_when_asked() -> None:
    unchanged = submissions.update_request(parse("submissions", "update", SUBMISSION_ID, "--name", "Renamed",
                                                 "--budget", "none"))
    assert (unchanged.name, unchanged.budget, unchanged.replace_molecules) == ("Renamed", "none", False)
    replaced = submissions.update_request(parse("submissions", "update", SUBMISSION_ID, "--molecule", "m3:5 mg"))
    assert replaced.replace_molecules and [m.molecule_id for m in replaced.molecules] == ["m3"]
    emptied = submissions.update_request(parse("submissions", "update", SUBMISSION_ID, "--no-molecules"))
    assert emptied.replace_molecules and not emptied.molecules
    with pytest.raises(CliError, match="choose one"):
        submissions.update_request(parse("submissions", "update", SUBMISSION_ID, "--no-molecules", "--molecule", "m"))


def test_line_items() -> None:
    assert parse_line_item("S-7F3K-01:IC50:3:120.00") == pb.QuoteLineItem(
        molecule="S-7F3K-01", assay="IC50", replicates=3, unit_price="120.00")
    assert parse_line_item("S-1:LC-MS:MS quant:2:10").assay == "LC-MS:MS quant"  # the assay keeps its colons
    for bad, complaint in (
        ("S-1:IC50:3", "expected MOLECULE:ASSAY:REPLICATES:UNIT_PRICE"),
        (":IC50:3:1", "expected MOLECULE:ASSAY"),
        ("S-1::3:1", "expected MOLECULE:ASSAY"),
        ("S-1:IC50:0:1", "replicates must be a whole number from 1"),
        ("S-1:IC50:two:1", "replicates must be a whole number from 1"),
        ("S-1:IC50:2:free", "the unit price 'free' is not an amount"),
        ("S-1:IC50:2:", "the unit price '' is not an amount"),
    ):
        with pytest.raises(Exception, match=complaint):
            parse_line_item(bad)
    assert lines_total([parse_line_item("S-1:IC50:3:120.00"), parse_line_item("S-2:IC50:2:0.25")]) == "360.50"


def test_quote_dates_absolute_or_in_days() -> None:
    today = datetime.date(2026, 12, 3)
    assert quote_date("2027-01-31", today) == "2027-01-31"
    assert quote_date("+30", today) == quote_date("+30d", today) == "2027-01-02"
    with pytest.raises(Exception, match="is not a date"):
        quote_date("in a month", today)


def test_a_quote_request_and_its_price_from_the_lines() -> None:
    args = parse("submissions", "quote", SUBMISSION_ID, "--turnaround", "21", "--valid-until", "2030-06-30",
                 "--line", "S-1:IC50:3:100", "--line", "S-2:IC50:3:100", "--note", "incl. QC", "--currency", "usd")
    request = args.build_action(args)
    assert (request.id, request.action, request.price, request.currency, request.turnaround_days,
            request.valid_until, request.note) == (SUBMISSION_ID, "PROVIDE_PRICING", "600", "USD", 21,
                                                   "2030-06-30", "incl. QC")
    assert [i.molecule for i in request.line_items] == ["S-1", "S-2"]
    priced = parse("submissions", "quote", SUBMISSION_ID, "--price", "650", "--turnaround", "21", "--valid-until",
                   "2030-06-30", "--line", "S-1:IC50:3:100")
    assert priced.build_action(priced).price == "650"  # given: the service checks it against the lines
    bare = parse("submissions", "quote", SUBMISSION_ID, "--turnaround", "21", "--valid-until", "2030-06-30")
    with pytest.raises(CliError, match="--price is required"):
        bare.build_action(bare)


@pytest.mark.parametrize(
    ("argv", "action", "fields"),
    [
        (["submit", SUBMISSION_ID], "SUBMIT", {}),
        (["approve", SUBMISSION_ID], "APPROVE", {}),
        (["reject", SUBMISSION_ID, "--reason", "out of scope"], "REJECT", {"reason": "out of scope"}),
        (["cancel", SUBMISSION_ID], "CANCEL", {}),
        (["cancel", SUBMISSION_ID, "--reason", "budget cut"], "CANCEL", {"reason": "budget cut"}),
        (["request-changes", SUBMISSION_ID, "--text", "3 replicates please"], "REQUEST_CHANGES",
         {"text": "3 replicates please"}),
        (["start", SUBMISSION_ID], "START_EXPERIMENT", {}),
        (["complete", SUBMISSION_ID], "COMPLETE", {}),
        (["act", SUBMISSION_ID, "review-results"], "REVIEW_RESULTS", {}),
        (["act", SUBMISSION_ID, "UPLOAD_RESULTS", "--text", "v2"], "UPLOAD_RESULTS", {"text": "v2"}),
        (["act", SUBMISSION_ID, "reject", "--reason", "no"], "REJECT", {"reason": "no"}),
        (["act", SUBMISSION_ID, "quote", "--price", "10", "--turnaround", "2", "--valid-until", "2030-01-01"],
         "PROVIDE_PRICING", {"price": "10", "turnaround_days": 2, "valid_until": "2030-01-01"}),
    ],
)
def test_each_action_command_sends_its_action_with_a_fresh_key(argv: list[str], action: str,
                                                               fields: dict[str, Any]) -> None:
    args = parse("submissions", *argv)
    first, again = args.build_action(args), args.build_action(args)
    assert args.gateway_handler is submissions.take_action
    assert (first.id, first.action) == (SUBMISSION_ID, action)
    sent = json_format.MessageToDict(first, preserving_proto_field_name=True)  # the fields set, no defaults
    assert sent == {"id": SUBMISSION_ID, "action": action, "request_id": first.request_id, **fields}
    assert uuid.UUID(first.request_id) and again.request_id != first.request_id


def test_the_actions_are_the_contracts() -> None:
    contract = PROTO.read_text()
    comment = contract.split("message ActOnSubmissionRequest")[1].split("string action")[0]
    assert all(action in comment for action in submissions.ACTIONS)


def test_every_command_is_registered() -> None:
    commands = {
        ("cro-services", "list"), ("cro-services", "get", SERVICE_ID), ("cro-services", "delete", SERVICE_ID),
        ("submissions", "get", SUBMISSION_ID), ("submissions", "status", SUBMISSION_ID),
        ("submissions", "status-counts"), ("submissions", "quotes", SUBMISSION_ID),
        ("submissions", "package", SUBMISSION_ID, "--out", "m.json"), ("submissions", "requirements", SUBMISSION_ID),
        ("submissions", "reveal", SUBMISSION_ID, "--hide"), ("submissions", "messages", SUBMISSION_ID, "--watch"),
        ("submissions", "post", SUBMISSION_ID, "Samples shipped", "--document", "d1"),
        ("submissions", "read", SUBMISSION_ID, "--up-to", "m1"), ("messages", "unread"),
    }
    for argv in commands:
        args = parse(*argv, "--json")
        assert args.gateway_handler is not None and args.json, argv
    assert parse("submissions", "reveal", SUBMISSION_ID, "--hide").hide
    assert parse("submissions", "messages", SUBMISSION_ID, "--watch").watch


def test_the_partner_client_has_the_cro_stubs() -> None:
    with Client("127.0.0.1:9") as client:  # channels connect lazily: nothing is called
        assert isinstance(client.catalogue, pb_grpc.CatalogueServiceStub)
        assert isinstance(client.submissions, pb_grpc.SubmissionServiceStub)
        assert isinstance(client.messages, pb_grpc.MessageServiceStub)
        assert client.submissions is client.submissions


# --- output ----------------------------------------------------------------------------------------------


def test_the_molecules_table_shows_what_the_caller_may_see() -> None:
    pharma = [pb.SubmissionMolecule(molecule_id=MOLECULE_ID, sample_code="S-7F3K-01", registration_number="MB-000042",
                                    smiles="CCO", formula="C2H6O", molecular_weight=46.069, concentration="10 mM")]
    headers, rows = molecule_table(pharma)
    assert headers == ["SAMPLE", "MOLECULE", "FORMULA", "MW", "CONCENTRATION", "SMILES"]
    assert rows == [["S-7F3K-01", "MB-000042", "C2H6O", "46.07", "10 mM", "CCO"]]
    cro = [pb.SubmissionMolecule(sample_code="S-7F3K-01", formula="C2H6O", molecular_weight=46.069)]
    assert molecule_table(cro) == (["SAMPLE", "FORMULA", "MW", "CONCENTRATION"], [["S-7F3K-01", "C2H6O", "46.07",
                                                                                   "-"]])
    revealed = [pb.SubmissionMolecule(sample_code="S-1", smiles="c1ccccc1", notes="light sensitive")]
    assert molecule_table(revealed)[0] == ["SAMPLE", "FORMULA", "MW", "CONCENTRATION", "NOTES", "SMILES"]


def _submission() -> pb.Submission:
    quote = pb.Quote(number=2, price="600.00", currency="EUR", turnaround_days=21, valid_until="2030-06-30",
                     over_budget=True, line_items=[pb.QuoteLineItem(molecule="S-1", assay="IC50", replicates=3,
                                                                   unit_price="200.00", amount="600.00")])
    return pb.Submission(
        id=SUBMISSION_ID, name="Kinase round 1", status=pb.Submission.PRICING_PROVIDED, cro_service_name="Kinase panel",
        service_type=pb.CroService.BINDING_ASSAY, budget="500.00", currency="EUR", price="600.00",
        turnaround_days=21, current_quote=quote, permitted_actions=["APPROVE", "REJECT", "CANCEL"],
        step_times=[pb.StepTime(status="DRAFT", at=at("2026-12-01T09:00:00Z")),
                    pb.StepTime(status="PRICING_PROVIDED", at=at("2026-12-02T10:30:00Z"))],
        molecules=[pb.SubmissionMolecule(sample_code="S-1", formula="C2H6O", molecular_weight=46.07)],
    )


def test_status_shows_steps_quote_and_permitted_actions() -> None:
    text = status_text(_submission())
    assert "status:" in text and "PRICING_PROVIDED" in text
    assert "600.00 EUR, 21 days (quote 2, valid until 2030-06-30; over the budget of 500.00 EUR)" in text
    assert "may now:              APPROVE, REJECT, CANCEL" in text
    assert "DRAFT             2026-12-01 09:00:00 UTC" in text
    assert "S-1       IC50   3           200.00      600.00" in text
    assert "nothing" in status_text(pb.Submission(id="s", status=pb.Submission.COMPLETED))


def test_submission_tables() -> None:
    submission = _submission()
    text = submission_text(submission)
    assert "hidden from the CRO" in text and "S-1     C2H6O    46.07" in text
    assert "No molecules yet" in submission_text(pb.Submission(id="s"))
    rows = submission_rows([submission])
    assert rows == [[SUBMISSION_ID, "Kinase round 1", "Kinase panel", "PRICING_PROVIDED", "600.00 EUR", "-"]]
    assert len(rows[0]) == len(SUBMISSION_HEADERS)
    quote_row = quote_rows([submission.current_quote])[0]
    assert quote_row[:5] == ["2", "600.00 EUR", "21 d", "2030-06-30", "yes"] and len(quote_row) == len(QUOTE_HEADERS)
    assert len(line_rows(submission.current_quote.line_items)[0]) == len(LINE_HEADERS)
    requirement = pb.SubmissionDocumentRequirement(document_type="NON_DISCLOSURE_AGREEMENT", signature_required=True,
                                                   document_id="d1", present=True, signed_by_owner=True)
    row = requirement_rows([requirement])[0]
    assert row == ["NON_DISCLOSURE_AGREEMENT", "required", "d1", "yes", "yes", "no", "no"]
    assert len(row) == len(REQUIREMENT_HEADERS)
    services = cro_services.service_rows([pb.CroService(id="c1", name="Kinase panel", organization_name="Acme Labs",
                                                        service_type=pb.CroService.ADME, base_price="99.50",
                                                        currency="USD", turnaround_days=7, active=True)])
    assert services == [["c1", "Kinase panel", "ADME", "Acme Labs", "99.50 USD", "7 d", "yes"]]
    assert len(services[0]) == len(cro_services.SERVICE_HEADERS)


def test_messages_as_transcript_csv_and_json_lines() -> None:
    message = pb.Message(id="m1", submission_id=SUBMISSION_ID, author_id="u1", side="CRO", text="Need 3 replicates?",
                         document_id="d9", change_request=True, created_at=at("2026-12-03T16:00:00Z"))
    assert message_line(message) == ("[2026-12-03 16:00:00 UTC] CRO u1: Need 3 replicates? "
                                     "(document d9; change request)")
    row = message_rows([message])[0]
    assert row[:5] == ["m1", "2026-12-03 16:00:00 UTC", "CRO", "u1", "Need 3 replicates?"]
    assert len(row) == len(MESSAGE_HEADERS)
    line = message_json(message)
    assert "\n" not in line and json.loads(line)["change_request"] is True


# --- --watch ---------------------------------------------------------------------------------------------


def _message(message_id: str) -> pb.WatchMessagesResponse:
    return pb.WatchMessagesResponse(message=pb.Message(id=message_id, text=f"text {message_id}"))


HEARTBEAT = pb.WatchMessagesResponse()


class Thread:
    """The server side of WatchMessages as `follow` sees it: one script per opening of the stream (a list of
    responses, or an error raised when opened); once the scripts run out, Ctrl-C."""

    def __init__(self, *scripts: list[pb.WatchMessagesResponse] | Exception) -> None:
        self.scripts = list(scripts)
        self.opened_after: list[str] = []

    def open(self, after_id: str) -> Iterator[pb.WatchMessagesResponse]:
        self.opened_after.append(after_id)
        if not self.scripts:
            raise KeyboardInterrupt
        script = self.scripts.pop(0)
        if isinstance(script, Exception):
            raise script
        return iter(script)


def test_watch_prints_messages_skips_heartbeats_and_reopens_after_the_last() -> None:
    shown: list[str] = []
    pauses: list[float] = []
    thread = Thread(
        [HEARTBEAT, _message("m2"), HEARTBEAT, _message("m3")],  # then the gateway ends the stream
        Unavailable("upstream reset", code=grpc.StatusCode.UNAVAILABLE),
        [HEARTBEAT],
        [_message("m4")],
    )
    with pytest.raises(KeyboardInterrupt):
        follow(thread.open, "m1", lambda m: shown.append(m.id), pause=pauses.append)
    assert shown == ["m2", "m3", "m4"]
    assert thread.opened_after == ["m1", "m3", "m3", "m3", "m4"]
    assert pauses == [1.0, 2.0, 1.0, 1.0]  # longer after a failure, back to 1 s once the stream answers


def test_watch_gives_up_after_repeated_failures_and_never_retries_refusals() -> None:
    down = Unavailable("gateway down", code=grpc.StatusCode.UNAVAILABLE)
    thread = Thread(*([down] * 4))
    with pytest.raises(Unavailable):
        follow(thread.open, "", print, pause=lambda _: None, retries=3)
    assert len(thread.opened_after) == 4
    missing = Thread(NotFoundError("no such submission", code=grpc.StatusCode.NOT_FOUND))
    with pytest.raises(NotFoundError):
        follow(missing.open, "", print, pause=lambda _: None)
    assert missing.opened_after == [""]

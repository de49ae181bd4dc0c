"""A submission's message thread through the real gateway over REST, as a browser calls it: the pharma and
the CRO side list, post (201; a document reference checked with the document service), mark read and count
unread; an open page watches the thread as server-sent events and sees what the other side posts; another
organization sees nothing (404 envelopes).

The submission is written SUBMITTED with the CRO service's own repository into the mesh's database: the
journey there (molecules, signed documents, gates) is the submission tests' business.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from services.cro.domain.vocabulary import SubmissionStatus
from services.cro.store import SCHEMA as CRO_SCHEMA
from services.runtime.auth import Principal
from services.runtime.db import make_engine
from tests.e2e import test_identity_gateway
from tests.e2e.molecule_rest import Org, assert_error, created, data, field_violations
from tests.e2e.test_documents_rest import new_document
from tests.e2e.test_identity_gateway import new_org
from tests.integration.test_cro_messages import write_submission

api = test_identity_gateway.api
admin = test_identity_gateway.admin

EVENT_WAIT_S = 60.0  # generous: the wait ends as soon as the event is there


@dataclass(frozen=True)
class Thread:
    pharma: Org  # pharma_admin
    scientist: dict  # a pharma_scientist's session
    cro: Org  # cro_admin
    technician: dict  # a cro_technician's session
    stranger: Org  # another pharma organization
    submission_id: str

    def path(self, tail: str = "") -> str:
        return f"/submissions/{self.submission_id}/messages{tail}"


def headers(session: dict) -> dict[str, str]:
    return {"authorization": f"Bearer {session['access_token']}"}


@pytest.fixture(scope="module")
def thread(api: httpx.Client, admin: dict, mesh) -> Thread:  # type: ignore[no-untyped-def]
    pharma = Org.create(api, admin)
    cro_id, cro_session = new_org(api, admin, "CRO")
    cro = Org(cro_id, cro_session)
    scientist = pharma.add_user(api, "pharma_scientist")
    author = Principal(scientist["user"]["id"], pharma.id, "PHARMA", frozenset({"pharma_scientist"}))

    async def write() -> str:
        engine = make_engine(mesh.database_url, CRO_SCHEMA)
        try:
            return await write_submission(engine, pharma.id, cro.id, SubmissionStatus.SUBMITTED, author)
        finally:
            await engine.dispose()

    return Thread(
        pharma, scientist, cro, cro.add_user(api, "cro_technician"), Org.create(api, admin), asyncio.run(write())
    )


class Watch:
    """A server-sent event stream read on its own thread, as an open page's EventSource reads it."""

    def __init__(self, api: httpx.Client, path: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue[dict] = queue.Queue()
        self.status_code = 0
        self.content_type = ""
        self._opened = threading.Event()
        self._response: httpx.Response | None = None
        self._reader = threading.Thread(target=self._read, args=(api, path, headers), daemon=True)
        self._reader.start()
        assert self._opened.wait(EVENT_WAIT_S), "the watch did not answer"

    def _read(self, api: httpx.Client, path: str, headers: dict[str, str]) -> None:
        try:
            with api.stream(
                "GET", path, headers={**headers, "accept": "text/event-stream"}, timeout=httpx.Timeout(30, read=None)
            ) as response:
                self._response = response
                self.status_code, self.content_type = response.status_code, response.headers.get("content-type", "")
                self._opened.set()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.put(json.loads(line.removeprefix("data: ")))
        except (httpx.HTTPError, RuntimeError):  # closed by the test
            pass
        finally:
            self._opened.set()

    def next_message(self) -> dict:
        """The next pushed message, skipping heartbeats (`{}`)."""
        while True:
            event = self.events.get(timeout=EVENT_WAIT_S)
            if event.get("message"):
                return dict(event["message"])

    def close(self) -> None:
        if self._response is not None:
            # The reader thread, blocked reading, would not notice close() before the next heartbeat (15 s):
            # shutting the socket down ends its read now.
            stream = self._response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._response.close()
        self._reader.join(EVENT_WAIT_S)
        assert not self._reader.is_alive(), "the watch's reader did not stop"


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    opened: list[Watch] = []
    yield opened
    for watch in opened:
        watch.close()


def post(api: httpx.Client, thread: Thread, session: dict, text: str, **fields: str) -> dict:
    return dict(created(api.post(thread.path(), json={"text": text, **fields}, headers=headers(session))))


def test_both_sides_post_list_mark_read_and_count_unread(api: httpx.Client, thread: Thread) -> None:
    asked = post(api, thread, thread.scientist, "Can you run the panel at 37 °C?", request_id="ask-1")
    again = post(api, thread, thread.scientist, "Can you run the panel at 37 °C?", request_id="ask-1")
    assert again["id"] == asked["id"]
    answered = post(api, thread, thread.technician, "Yes: 37 °C is our default.")
    assert (asked["side"], answered["side"]) == ("PHARMA", "CRO")
    assert asked["author_id"] == thread.scientist["user"]["id"] and asked["created_at"]

    listed = api.get(thread.path(), params={"page_size": 100}, headers=thread.cro.headers)
    assert [m["id"] for m in data(listed)][-2:] == [asked["id"], answered["id"]]
    assert listed.json()["meta"]["page_size"] == 100

    counts = data(api.get("/messages/unread-counts", headers=thread.cro.headers))
    mine = {c["submission_id"]: c["unread"] for c in counts}
    assert mine[thread.submission_id] >= 2  # the question and the answer (posts of the admin's own never count)
    marked = api.post(thread.path("/read"), json={"up_to_message_id": asked["id"]}, headers=thread.cro.headers)
    assert marked.status_code == 200 and marked.json() == {"unread": 1}  # the answer came after the question
    everything = api.post(thread.path("/read"), json={}, headers=thread.cro.headers)
    assert everything.status_code == 200 and everything.json() == {"unread": 0}
    older = api.post(thread.path("/read"), json={"up_to_message_id": asked["id"]}, headers=thread.cro.headers)
    assert older.status_code == 200 and older.json() == {"unread": 0}  # a read mark never moves back
    after = api.get("/messages/unread-counts", headers=thread.cro.headers).json()
    assert thread.submission_id not in {c["submission_id"] for c in after["data"]}


def test_a_document_reference_must_be_a_readable_document_of_the_submission(
    api: httpx.Client, thread: Thread
) -> None:
    spec = new_document(api, thread.pharma, submission_id=thread.submission_id)
    referenced = post(api, thread, thread.scientist, "The specification is attached.", document_id=spec["id"])
    assert referenced["document_id"] == spec["id"]
    elsewhere = new_document(api, thread.pharma, submission_id="another-submission")
    for document_id in (elsewhere["id"], "not-a-document", "00000000-0000-4000-8000-000000000000"):
        refused = api.post(
            thread.path(), json={"text": "see this", "document_id": document_id}, headers=headers(thread.scientist)
        )
        assert "document_id" in field_violations(assert_error(refused, 400, "VALIDATION_ERROR"))
    too_long = api.post(thread.path(), json={"text": "x" * 5001}, headers=headers(thread.scientist))
    assert "text" in field_violations(assert_error(too_long, 400, "VALIDATION_ERROR"))


def test_an_open_page_sees_what_the_other_side_posts(api: httpx.Client, thread: Thread, watches: list[Watch]) -> None:
    earlier = post(api, thread, thread.technician, "Samples received.")
    watch = Watch(api, thread.path("/watch") + f"?after_id={earlier['id']}", headers(thread.scientist))
    watches.append(watch)
    assert watch.status_code == 200 and watch.content_type.startswith("text/event-stream")
    assert watch.events.get(timeout=EVENT_WAIT_S) == {}  # the first heartbeat: watching from now on
    posted = post(api, thread, thread.technician, "Plate 1 is running.")
    pushed = watch.next_message()
    assert (pushed["id"], pushed["text"], pushed["side"]) == (posted["id"], "Plate 1 is running.", "CRO")


def test_another_organization_sees_nothing(api: httpx.Client, thread: Thread) -> None:
    stranger = thread.stranger.headers
    assert_error(api.get(thread.path(), headers=stranger), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.post(thread.path(), json={"text": "hi"}, headers=stranger), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.post(thread.path("/read"), json={}, headers=stranger), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.get(thread.path("/watch"), headers=stranger), 404, "RESOURCE_NOT_FOUND")
    counts = api.get("/messages/unread-counts", headers=stranger)
    assert counts.status_code == 200 and thread.submission_id not in counts.text

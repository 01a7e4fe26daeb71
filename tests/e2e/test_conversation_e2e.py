"""The conversation over the real broker and real processes: a rider's 催办 flags the case in the
closer (one `case.nudged` on `cases.events`), a public update and a question reach the tracking page,
a rider's reply reaches the closer, and an internal note's words never reach the reporter."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer

from gridloop.demo import DEMO_PLACES
from gridloop.stack import Stack
from gridloop.topics import CASES_EVENTS
from schemas.envelope import CloudEvent
from schemas.reference import load_places
from tests.support.reporter import case_of
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PLACES = load_places(DEMO_PLACES)
NOTE = "内部备注-骑手不可见-" + uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One embedded stack for this module, on the session's Kafka."""
    prefix = f"conv{uuid.uuid4().hex[:6]}."
    s = start_stack(stack_settings(tmp_path_factory.mktemp("conv"), kafka_bootstrap, prefix))
    yield s
    s.stop()


def case_events(stack: Stack, case_id: str, until_type: str, at_least: int = 1) -> list[CloudEvent]:
    """A case's `cases.events` from the topic's start, once `until_type` came `at_least` times."""
    consumer = KafkaConsumer(
        stack.settings.topic_prefix + CASES_EVENTS,
        bootstrap_servers=stack.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        found: list[CloudEvent] = []

        def read() -> bool:
            for record in consumer:
                event = CloudEvent.model_validate_json(record.value)
                if event.subject == case_id:
                    found.append(event)
            return sum(e.type == until_type for e in found) >= at_least

        wait_for(read, timeout=60, every=0.2, what=f"{until_type} on cases.events")
        return found
    finally:
        consumer.close()


def test_nudge_update_question_reply_and_note(stack: Stack) -> None:
    """The whole conversation across the three services."""
    reporter, closer = stack.url("reporter"), stack.url("closer")
    place = next(p for p in PLACES if p.grid_id == "yh-g1")
    phone = httpx.Client(timeout=15)
    r = phone.post(f"{reporter}/api/v1/reports", json={"code": place.code, "category": "manhole_cover"})
    assert r.status_code == 202, r.text
    report_id = r.json()["report_id"]
    case_id = case_of(reporter, report_id, timeout=60)
    centre = {"Authorization": f"Bearer {staff_token(closer, 'yh-centre')}"}
    station = {"Authorization": f"Bearer {staff_token(closer, 'yh-s1')}"}

    # 催办: the case shows on the centre's supervision list; exactly one case.nudged goes out
    assert phone.post(f"{reporter}/api/v1/reports/{report_id}/nudge").status_code == 201
    assert phone.post(f"{reporter}/api/v1/reports/{report_id}/nudge").status_code == 429

    def supervised() -> list[dict[str, Any]]:
        items = httpx.get(f"{closer}/api/v1/queue", params={"view": "supervision"}, headers=centre).json()[
            "items"
        ]
        return [i for i in items if i["case_id"] == case_id]

    flagged = wait_for(supervised, timeout=60, every=0.3, what="the nudged case on supervision")
    assert (flagged[0]["supervised"], flagged[0]["nudges"]) == (True, 1)
    nudged = [
        e
        for e in case_events(stack, case_id, "gridloop.case.nudged.v1")
        if e.type == "gridloop.case.nudged.v1"
    ]
    assert len(nudged) == 1
    assert (nudged[0].source, nudged[0].data["station_id"], nudged[0].data["nudges"]) == (
        "gridloop/closer",
        "yh-s1",
        1,
    )

    def say(kind: str, words: str) -> dict[str, Any]:
        version = httpx.get(f"{closer}/api/v1/cases/{case_id}", headers=station).json()["version"]
        answer = httpx.post(
            f"{closer}/api/v1/cases/{case_id}/messages",
            json={"kind": kind, "text": words, "version": version},
            headers=station,
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json()["message"])

    say("note", NOTE)
    say("public", "已联系养护单位，明天更换井盖")
    question = say("question", "是北门还是南门？")

    def shown() -> list[dict[str, Any]] | None:
        updates: list[dict[str, Any]] = httpx.get(f"{reporter}/api/v1/reports/{report_id}").json()["updates"]
        return updates if len(updates) == 2 else None

    updates = wait_for(shown, timeout=60, every=0.3, what="the update and the question on the tracking view")
    assert [(u["kind"], u["text"]) for u in updates] == [
        ("public", "已联系养护单位，明天更换井盖"),
        ("question", "是北门还是南门？"),
    ]
    assert updates[1]["id"] == question["id"]
    page = phone.get(f"{reporter}/t/{report_id}").text
    assert "明天更换井盖" in page and f'id="reply-question" value="{question["id"]}"' in page

    # the rider answers; the closer shows the answer with the question it answers
    reply = phone.post(
        f"{reporter}/api/v1/reports/{report_id}/replies", json={"text": "北门", "question_id": question["id"]}
    )
    assert reply.status_code == 201, reply.text

    def answered() -> dict[str, Any] | None:
        messages = httpx.get(f"{closer}/api/v1/cases/{case_id}/messages", headers=station).json()["messages"]
        return next((m for m in messages if m["kind"] == "reply"), None)

    got = wait_for(answered, timeout=60, every=0.3, what="the reply in the closer")
    assert (got["text"], got["question_id"], got["report_id"]) == ("北门", question["id"], report_id)
    events = case_events(stack, case_id, "gridloop.case.rider_replied.v1")
    assert [e.type for e in events].count("gridloop.case.commented.v1") == 1
    assert not any(NOTE in e.model_dump_json() for e in events)

    # the note's words are nowhere on the rider's side: not the page, not the API, not the database
    assert NOTE not in page and NOTE not in phone.get(f"{reporter}/api/v1/reports/{report_id}").text
    db_url = stack.settings.db_url("reporter")
    assert db_url.startswith("sqlite:///"), db_url
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dump = "\n".join(str(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"'))
    assert "已联系养护单位" in dump and NOTE not in dump

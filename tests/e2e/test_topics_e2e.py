"""Topics (议题) over the real broker and real processes: the demo's hot spot (four riders at a metro
exit) becomes a suggestion, the centre opens a topic, records the meeting and closes it; exactly
three events on `topics.events` keyed by the topic, and every rider's tracking page shows the outcome
with their case resolved for them to confirm."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer

from gridloop import hotspot
from gridloop.stack import Stack
from gridloop.topics import TOPICS_EVENTS
from schemas.envelope import CloudEvent
from tests.support.reporter import case_of
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
OUTCOME = "地铁口已划定停放区，企业每日两次清运"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One embedded stack for this module, on the session's Kafka."""
    prefix = f"topics{uuid.uuid4().hex[:6]}."
    s = start_stack(stack_settings(tmp_path_factory.mktemp("topics"), kafka_bootstrap, prefix))
    yield s
    s.stop()


def topic_events(stack: Stack, until: int) -> list[tuple[str, CloudEvent]]:
    """(key, event) on `topics.events` from the start, once `until` events are there (and no more come)."""
    consumer = KafkaConsumer(
        stack.settings.topic_prefix + TOPICS_EVENTS,
        bootstrap_servers=stack.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        found: list[tuple[str, CloudEvent]] = []

        def read() -> bool:
            for record in consumer:
                found.append((record.key.decode(), CloudEvent.model_validate_json(record.value)))
            return len(found) >= until

        wait_for(read, timeout=60, every=0.2, what=f"{until} events on topics.events")
        return found
    finally:
        consumer.close()


def test_hot_spot_to_closed_topic_on_every_tracking_page(stack: Stack) -> None:
    """Suggestion → topic → meeting → closed, across the services."""
    reporter, closer = stack.url("reporter"), stack.url("closer")
    report_ids = hotspot.send(reporter)
    cases = [case_of(reporter, rid, timeout=60) for rid in report_ids]
    assert len(set(cases)) == 4  # four points over 80 m apart: four cases, none merged
    centre = {"Authorization": f"Bearer {staff_token(closer, 'yh-centre')}"}

    def suggestion() -> dict[str, Any] | None:
        listed = httpx.get(f"{closer}/api/v1/topics", headers=centre, timeout=15).json()["suggestions"]
        return next((s for s in listed if sorted(s["case_ids"]) == sorted(cases)), None)

    s = wait_for(suggestion, timeout=60, every=0.3, what="the hot spot's suggestion")
    assert (s["kind"], s["category"], s["street_id"]) == ("radius", "shared_bikes", "yinhang")
    r = httpx.post(
        f"{closer}/api/v1/topics",
        json={
            "title": "地铁市光路站共享单车堆积",
            "body": "街区治理委员会",
            "case_ids": s["case_ids"],
            "suggestion": s["key"],
        },
        headers=centre,
    )
    assert r.status_code == 201, r.text
    tid = r.json()["topic_id"]
    meeting = {
        "version": 1,
        "held_on": "2026-11-25",
        "participants": "街区治理委员会、美团、哈啰、商户",
        "decision": "划定停放区，企业每日清运",
    }
    assert (
        httpx.post(f"{closer}/api/v1/topics/{tid}/meetings", json=meeting, headers=centre).status_code == 200
    )
    closed = httpx.post(
        f"{closer}/api/v1/topics/{tid}/close",
        json={"version": 2, "outcome": OUTCOME, "resolves": True},
        headers=centre,
        timeout=30,
    )
    assert closed.status_code == 200, closed.text
    assert sorted(closed.json()["resolved"]) == sorted(cases)

    def shown(rid: str) -> dict[str, Any] | None:
        view = httpx.get(f"{reporter}/api/v1/reports/{rid}", timeout=15).json()
        topic = view["topic"]
        return view if topic and topic["status"] == "closed" and view["status"] == "resolved" else None

    for rid in report_ids:
        view = wait_for(partial(shown, rid), timeout=60, every=0.3, what=f"the outcome for {rid}")
        assert (view["topic"]["topic_id"], view["topic"]["outcome"], view["topic"]["held_on"]) == (
            tid, OUTCOME, "2026-11-25"
        )  # fmt: skip
        assert [u["text"] for u in view["updates"]] == [f"议题结论：{OUTCOME}"]
        page = httpx.get(f"{reporter}/t/{rid}", timeout=15).text
        assert page.count('id="topic-outcome"') == 1 and OUTCOME in page

    events = topic_events(stack, 3)
    assert [(k, e.type) for k, e in events] == [
        (tid, "gridloop.topic.opened.v1"),
        (tid, "gridloop.topic.meeting_recorded.v1"),
        (tid, "gridloop.topic.closed.v1"),
    ]
    assert "participants" not in events[1][1].data

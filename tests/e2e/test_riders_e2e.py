"""Riders recognised over the real broker and real processes: a station's thank-you goes out as one
`case.riders_thanked`, reaches the reporter once and shows on the rider's own tracking page and /my;
the rider number the rider gave is on no topic in clear."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator

import httpx
import pytest
from kafka import KafkaConsumer

from gridloop.demo import DEMO_PLACES
from gridloop.stack import Stack
from gridloop.topics import CASES_EVENTS, REPORTS_SUBMITTED
from schemas.reference import load_places
from tests.e2e.test_conversation_e2e import case_events
from tests.support.reporter import case_of
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PLACES = load_places(DEMO_PLACES)
DIGITS = uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One embedded stack for this module, on the session's Kafka."""
    prefix = f"riders{uuid.uuid4().hex[:6]}."
    s = start_stack(stack_settings(tmp_path_factory.mktemp("riders"), kafka_bootstrap, prefix))
    yield s
    s.stop()


def topic_text(stack: Stack, topic: str) -> str:
    """Every message on a topic from its start, as text."""
    consumer = KafkaConsumer(
        stack.settings.topic_prefix + topic,
        bootstrap_servers=stack.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        return "\n".join(record.value.decode() for record in consumer)
    finally:
        consumer.close()


def test_a_thank_you_reaches_the_rider_once(stack: Stack) -> None:
    """The station thanks the riders (a second time is 409); exactly one `case.riders_thanked` is on
    `cases.events`, the reporter keeps exactly one, the rider's page and /my show it, a stranger's
    page does not; the rider number is on neither topic nor in the reporter's database."""
    reporter, closer = stack.url("reporter"), stack.url("closer")
    place = next(p for p in PLACES if p.grid_id == "yh-g1")
    phone = httpx.Client(timeout=15)
    body = {"code": place.code, "category": "manhole_cover", "platform": "美团", "rider_no": f"MT-{DIGITS}"}
    r = phone.post(f"{reporter}/api/v1/reports", json=body)
    assert r.status_code == 202, r.text
    report_id = r.json()["report_id"]
    case_id = case_of(reporter, report_id, timeout=60)
    station = {"Authorization": f"Bearer {staff_token(closer, 'yh-s1')}"}
    thanks = {"preset": "reported", "text": "井盖已更换，谢谢！"}
    sent = httpx.post(f"{closer}/api/v1/cases/{case_id}/thanks", json=thanks, headers=station)
    assert sent.status_code == 201, sent.text
    again = httpx.post(f"{closer}/api/v1/cases/{case_id}/thanks", json=thanks, headers=station)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_thanked"

    def shown() -> str | None:
        page = phone.get(f"{reporter}/t/{report_id}").text
        return page if 'id="thanks"' in page else None

    page = wait_for(shown, timeout=60, every=0.3, what="the thank-you on the rider's tracking page")
    assert "感谢您及时上报，问题已经处理。" in page and "井盖已更换，谢谢！" in page
    assert 'id="n-thanks">1<' in phone.get(f"{reporter}/my").text
    assert 'id="thanks"' not in httpx.get(f"{reporter}/t/{report_id}").text
    events = case_events(stack, case_id, "gridloop.case.riders_thanked.v1")
    assert [e.type for e in events].count("gridloop.case.riders_thanked.v1") == 1
    db_url = stack.settings.db_url("reporter")
    assert db_url.startswith("sqlite:///"), db_url
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        kept = conn.execute("SELECT case_id, preset, text FROM rider_thanks").fetchall()
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dump = "\n".join(str(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"'))
    assert kept == [(case_id, "reported", "井盖已更换，谢谢！")]
    assert DIGITS not in dump
    submitted = topic_text(stack, REPORTS_SUBMITTED)
    assert report_id in submitted and DIGITS not in submitted
    assert DIGITS not in topic_text(stack, CASES_EVENTS)

"""Topics (议题) on the riders' side, on SQLite and PostgreSQL: `topics.events` kept per topic version
(redelivered and older events change nothing), shown on every linked case's tracking page and API,
never the meeting's participants."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from gridloop.clock import FrozenClock, SystemClock, set_clock
from schemas.events import CaseOpened, TopicCasesLinked, TopicClosed, TopicMeetingRecorded, TopicOpened
from schemas.reference import Place
from tests.support.reporter import apply_event, reporter_app

START = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen."""
    c = FrozenClock(START)
    set_clock(c)
    yield c
    set_clock(SystemClock())


@pytest.fixture
def reporter(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[tuple[FastAPI, dict[str, Place]]]:
    """The reporter app and its demo places by id."""
    app, places = reporter_app(db_url, tmp_path / "var")
    yield app, {p.place_id: p for p in places}
    app.state.reporter.runtime.db.dispose()


def report_in_case(app: FastAPI, rider: TestClient, places: dict[str, Place], case_id: str) -> str:
    """A rider's shared-bikes report and its case (as `case.opened` makes it)."""
    r = rider.post("/api/v1/reports", json={"code": places["yh-p01"].code, "category": "shared_bikes"})
    assert r.status_code == 202, r.text
    report_id = str(r.json()["report_id"])
    data = CaseOpened(
        case_id=case_id, report_id=report_id, station_id="yh-s1", category="shared_bikes", opened_at=START
    )
    apply_event(app, "case.opened", data, case_id)
    return report_id


def rows(app: FastAPI, sql: str) -> list[tuple[object, ...]]:
    """A query's rows."""
    with app.state.reporter.runtime.db.session() as s:
        return [tuple(r) for r in s.execute(text(sql)).all()]


def test_a_topic_reaches_every_linked_tracking_page(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """Opened on C1 and C2, C3 linked and C2 taken off, meeting, closed: C1's and C3's riders see the
    outcome, C2's nothing; redelivered and stale events change nothing."""
    app, places = reporter
    r1, r2, r3 = (report_in_case(app, TestClient(app), places, f"C{n}") for n in (1, 2, 3))
    at = START + timedelta(hours=1)
    opened = TopicOpened(
        topic_id="T1", street_id="yinhang", centre_station_id="yh-centre", category="shared_bikes",
        title="殷高东路地铁站共享单车堆积", body="街区治理委员会", case_ids=["C1", "C2"], version=1, at=at,
    )  # fmt: skip
    apply_event(app, "topic.opened", opened, "T1")
    apply_event(app, "topic.opened", opened, "T1")
    linked = TopicCasesLinked(
        topic_id="T1", added=["C3"], removed=["C2"], case_ids=["C1", "C3"], version=2, at=at
    )
    apply_event(app, "topic.cases_linked", linked, "T1")
    meeting = TopicMeetingRecorded(
        topic_id="T1", meeting_id=1, held_on=date(2026, 11, 25), decision="划定停放区，企业每日清运",
        follow_up_due=date(2026, 12, 5), case_ids=["C1", "C3"], version=3, at=at,
    )  # fmt: skip
    apply_event(app, "topic.meeting_recorded", meeting, "T1")
    stranger = TestClient(app)
    before = stranger.get(f"/api/v1/reports/{r1}").json()["topic"]
    assert (before["status"], before["outcome"], before["held_on"]) == ("open", None, "2026-11-25")

    closed = TopicClosed(
        topic_id="T1", street_id="yinhang", centre_station_id="yh-centre", outcome="停放区已划定，每日清运",
        resolves=True, case_ids=["C1", "C3"], version=4, at=at,
    )  # fmt: skip
    apply_event(app, "topic.closed", closed, "T1")
    apply_event(app, "topic.meeting_recorded", meeting, "T1")  # older: changes nothing
    apply_event(app, "topic.cases_linked", linked.model_copy(update={"case_ids": ["C2"]}), "T1")

    assert rows(app, "SELECT case_id, topic_id FROM topic_case_view ORDER BY case_id") == [
        ("C1", "T1"),
        ("C3", "T1"),
    ]
    assert rows(app, "SELECT status, version, outcome FROM topic_view") == [
        ("closed", 4, "停放区已划定，每日清运")
    ]
    topic = stranger.get(f"/api/v1/reports/{r3}").json()["topic"]
    assert topic == {
        "topic_id": "T1",
        "title": "殷高东路地铁站共享单车堆积",
        "body": "街区治理委员会",
        "status": "closed",
        "held_on": "2026-11-25",
        "decision": "划定停放区，企业每日清运",
        "follow_up_due": "2026-12-05",
        "outcome": "停放区已划定，每日清运",
        "resolves": True,
        "updated_at": at.isoformat(),
    }
    assert stranger.get(f"/api/v1/reports/{r2}").json()["topic"] is None
    page = stranger.get(f"/t/{r1}").text
    assert page.count('id="topic-outcome"') == 1 and "停放区已划定，每日清运" in page
    assert "会议" in page and "2026-11-25" in page and "街区治理委员会" in page
    assert 'id="topic"' not in stranger.get(f"/t/{r2}").text

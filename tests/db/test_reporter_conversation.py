"""The rider's side of the conversation in the reporter, on SQLite and PostgreSQL: public updates and
questions from `cases.events` on the tracking page and API, replies with words or a photo, 催办 once
per 24 hours (a frozen clock), the tracking credential, and nothing half-written on bad input."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from gridloop.clock import FrozenClock, SystemClock, set_clock
from schemas.envelope import CloudEvent
from schemas.events import CaseCommented, CaseOpened, CaseQuestionAsked, CaseTransitioned, CaseUpdatedPublic
from schemas.reference import Place
from services.reporter.handlers import handlers
from tests.support.reporter import apply_event, make_jpeg, reporter_app

START = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen; the tests move it."""
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


def opened(app: FastAPI, rider: TestClient, places: dict[str, Place], case_id: str = "C1") -> tuple[str, str]:
    """A report and its case (as `case.opened` makes it); (report id, tracking key)."""
    r = rider.post("/api/v1/reports", json={"code": places["yh-p01"].code, "category": "manhole_cover"})
    assert r.status_code == 202, r.text
    report_id = r.json()["report_id"]
    key = parse_qs(urlsplit(r.json()["tracking_url"]).query)["k"][0]
    data = CaseOpened(
        case_id=case_id, report_id=report_id, station_id="yh-s1", category="manhole_cover", opened_at=START
    )
    apply_event(app, "case.opened", data, case_id)
    return report_id, key


def sent(app: FastAPI, event_type: str) -> list[CloudEvent]:
    """The events of a type in the reporter's outbox."""
    with app.state.reporter.runtime.db.session() as s:
        rows = s.execute(text("SELECT topic, payload FROM outbox ORDER BY id")).all()
    events = [(t, CloudEvent.model_validate_json(p)) for t, p in rows]
    assert all(t.endswith("reports.feedback") for t, e in events if e.type == event_type)
    return [e for _t, e in events if e.type == event_type]


def count(app: FastAPI, table: str) -> int:
    """Rows in a reporter table."""
    with app.state.reporter.runtime.db.session() as s:
        return int(s.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)


def test_public_updates_and_questions_show_but_notes_never_do(
    reporter: tuple[FastAPI, dict[str, Place]],
) -> None:
    """An update and a question reach the page and the API for anyone (escaped); a note's event has
    no words and no handler; a redelivered update is kept once."""
    app, places = reporter
    rider = TestClient(app)
    report_id, _key = opened(app, rider, places)
    update = CaseUpdatedPublic(
        case_id="C1",
        station_id="yh-s1",
        version=2,
        at=START,
        message_id=11,
        text="<b>明天</b>更换井盖",
        report_ids=[report_id],
    )
    apply_event(app, "case.updated_public", update, "C1")
    apply_event(app, "case.updated_public", update, "C1")  # the consumer's ledger aside: kept once
    question = CaseQuestionAsked(
        case_id="C1", station_id="yh-s1", version=3, at=START, message_id=12, text="是哪个井盖？"
    )
    apply_event(app, "case.question_asked", question, "C1")
    assert "case.commented" not in handlers()
    CaseCommented(case_id="C1", station_id="yh-s1", version=4, at=START, actor="yh-s1", message_id=13)

    stranger = TestClient(app)
    view = stranger.get(f"/api/v1/reports/{report_id}").json()
    assert view["updates"] == [
        {"id": 11, "kind": "public", "text": "<b>明天</b>更换井盖", "at": START.isoformat()},
        {"id": 12, "kind": "question", "text": "是哪个井盖？", "at": START.isoformat()},
    ]
    assert view["replies"] is None and view["next_nudge_at"] is None  # the rider's own: credential only
    page = stranger.get(f"/t/{report_id}").text
    assert "&lt;b&gt;明天&lt;/b&gt;更换井盖" in page and "<b>明天</b>" not in page
    assert page.count('data-kind="question"') == 1
    assert 'id="reply"' not in page and 'id="nudge"' not in page  # no credential: no forms
    owner_page = rider.get(f"/t/{report_id}").text
    assert 'id="reply-question" value="12"' in owner_page and 'id="nudge-btn"' in owner_page
    assert count(app, "case_message") == 2


def test_a_reply_with_words_and_a_photo(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """The tracking secret lets a reply in (403 without it); words and a cleaned photo are stored with
    one `case.rider_replied` on reports.feedback; the owner sees the reply, strangers do not."""
    app, places = reporter
    report_id, key = opened(app, TestClient(app), places)
    other = TestClient(app)
    url = f"/api/v1/reports/{report_id}/replies"
    assert other.post(url, json={"text": "x"}).json()["error"]["code"] == "not_your_report"
    assert other.post(url, json={"text": "x"}, headers={"X-Tracking-Key": "x" * 22}).status_code == 403
    r = other.post(
        url,
        data={"text": "北门左边那个", "question_id": "12"},
        files={"photo": ("a.jpg", make_jpeg(1600, 1200), "image/jpeg")},
        headers={"X-Tracking-Key": key},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["text"], body["question_id"], body["case_id"], len(body["photo_ids"])) == (
        "北门左边那个",
        12,
        "C1",
        1,
    )
    photo = other.get(f"/api/v1/photos/{body['photo_ids'][0]}")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    events = sent(app, "gridloop.case.rider_replied.v1")
    assert len(events) == 1 and events[0].subject == "C1"
    assert {
        k: events[0].data[k] for k in ("report_id", "case_id", "reply_id", "question_id", "text", "photo_ids")
    } == {
        "report_id": report_id,
        "case_id": "C1",
        "reply_id": body["reply_id"],
        "question_id": 12,
        "text": "北门左边那个",
        "photo_ids": body["photo_ids"],
    }
    owner = other.get(f"/api/v1/reports/{report_id}", headers={"X-Tracking-Key": key}).json()
    assert [(x["text"], len(x["photo_urls"])) for x in owner["replies"]] == [("北门左边那个", 1)]
    assert owner["timeline"][-1]["action"] == "rider_reply"
    page = other.get(f"/t/{report_id}?k={key}").text
    assert "北门左边那个" in page and page.count('class="thumb"') == 1
    assert "北门左边那个" not in TestClient(app).get(f"/t/{report_id}").text


def test_bad_replies_write_nothing(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """Empty, oversize, a fake image, unknown fields, no case yet: refused with nothing stored;
    the eleventh reply in a day is 429 with Retry-After."""
    app, places = reporter
    rider = TestClient(app)
    report_id, _key = opened(app, rider, places)
    url = f"/api/v1/reports/{report_id}/replies"
    refusals = [
        (rider.post(url, json={"text": "   "}), 422, "text_required"),
        (rider.post(url, json={"text": "字" * 501}), 422, "invalid"),
        (rider.post(url, json={"text": "x", "extra": 1}), 422, "invalid"),
        (
            rider.post(
                url, data={"text": "看图"}, files={"photo": ("a.jpg", b"GIF89a not a photo", "image/jpeg")}
            ),
            415,
            None,
        ),
        (
            rider.post(url, content=b"text=x", headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
    ]
    for r, status, code in refusals:
        assert r.status_code == status, r.text
        if code:
            assert r.json()["error"]["code"] == code
    assert (count(app, "rider_reply"), count(app, "photo"), sent(app, "gridloop.case.rider_replied.v1")) == (
        0,
        0,
        [],
    )
    waiting = rider.post(
        "/api/v1/reports", json={"code": places["yh-p01"].code, "category": "sanitation"}
    ).json()
    early = rider.post(f"/api/v1/reports/{waiting['report_id']}/replies", json={"text": "x"})
    assert early.status_code == 409 and early.json()["error"]["code"] == "no_case"
    for n in range(10):
        assert rider.post(url, json={"text": f"补充 {n}"}).status_code == 201
    over = rider.post(url, json={"text": "再补充"})
    assert over.status_code == 429 and over.headers["Retry-After"] == "86400"
    assert count(app, "rider_reply") == 10


def test_nudge_once_a_day(reporter: tuple[FastAPI, dict[str, Place]], clock: FrozenClock) -> None:
    """催办: 201 and one `case.nudged`; again within 24 h 429 with the exact Retry-After and nothing
    written; allowed again at 24 h; refused (409) once the case is resolved; credential needed."""
    app, places = reporter
    rider = TestClient(app)
    report_id, _key = opened(app, rider, places)
    url = f"/api/v1/reports/{report_id}/nudge"
    assert TestClient(app).post(url).status_code == 403
    first = rider.post(url)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "report_id": report_id,
        "case_id": "C1",
        "nudged_at": START.isoformat(),
        "next_nudge_at": (START + timedelta(hours=24)).isoformat(),
    }
    clock.advance(timedelta(hours=23, minutes=30))
    again = rider.post(url)
    assert again.status_code == 429 and again.headers["Retry-After"] == "1800"
    assert again.json()["error"]["code"] == "nudge_limited"
    assert len(sent(app, "gridloop.case.nudged.v1")) == 1
    assert (
        rider.get(f"/api/v1/reports/{report_id}").json()["next_nudge_at"]
        == (START + timedelta(hours=24)).isoformat()
    )
    assert "disabled" in rider.get(f"/t/{report_id}").text.split('id="nudge-btn"', 1)[1].split(">", 1)[0]
    clock.advance(timedelta(minutes=30))
    assert rider.post(url).status_code == 201
    events = sent(app, "gridloop.case.nudged.v1")
    assert [(e.subject, e.data["report_id"], e.data["case_id"]) for e in events] == [
        ("C1", report_id, "C1")
    ] * 2
    steps = [s["action"] for s in rider.get(f"/api/v1/reports/{report_id}").json()["timeline"]]
    assert steps.count("nudge") == 2
    resolved = CaseTransitioned(
        case_id="C1", action="resolve", status="resolved", station_id="yh-s1", version=5, at=clock.now()
    )
    apply_event(app, "case.resolved", resolved, "C1")
    clock.advance(timedelta(hours=25))
    late = rider.post(url)
    assert late.status_code == 409 and late.json()["error"]["code"] == "not_open"
    assert 'id="nudge"' not in rider.get(f"/t/{report_id}").text

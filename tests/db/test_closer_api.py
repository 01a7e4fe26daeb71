"""The closer's API in process, on SQLite and PostgreSQL: lifecycle, events, SLA, scheduler, security.

The app is the real one (`build()`), its database migrated with Alembic; Kafka is not needed here
because events are checked where they are written (the outbox). The end-to-end module runs the
same flows over a real broker and real processes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import event, select, text
from sqlmodel import col

from gridloop import demo, metrics, migrate
from gridloop.clock import FrozenClock, SystemClock, set_clock
from gridloop.consumer import Incoming, _Raw
from gridloop.db import Database
from gridloop.errors import ApiError
from gridloop.photos import MAX_PHOTO_BYTES
from gridloop.settings import Settings
from schemas.envelope import CloudEvent
from schemas.events import Decision, Location, ReportFeedback, ReportRouted, make_event
from services.closer import actions, photostore, queue, stream
from services.closer import cli as closer_cli
from services.closer import staff as staff_accounts
from services.closer.app import build
from services.closer.auth import hash_password
from services.closer.cli import load_demo_staff
from services.closer.config import CloserConfig
from services.closer.context import Closer
from services.closer.models import Base, Case, Escalation, Staff
from services.closer.scheduler import Scheduler

MONDAY_9 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai, a working Monday
SECRET = "test-signing-key-" + "x" * 32


def frozen(at: datetime) -> Iterator[FrozenClock]:
    """The process clock frozen at `at` for a fixture's test, the system clock again after it."""
    c = FrozenClock(at)
    set_clock(c)
    yield c
    set_clock(SystemClock())


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen at a working Monday morning, moved by the tests."""
    yield from frozen(MONDAY_9)


def make_app(db_url: str, var_dir: Path, **config: Any) -> FastAPI:
    """The real closer app on a migrated database with the demo accounts."""
    settings = Settings(
        var_dir=var_dir, closer_database_url=db_url, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", jwt_secret=SECRET
    )
    migrate.upgrade("closer", db_url)
    app = build(settings, CloserConfig(**config))
    ctx: Closer = app.state.closer
    load_demo_staff(ctx.runtime.db, ctx.jurisdiction)
    return app


def running(db_url: str, var_dir: Path, **config: Any) -> Iterator[FastAPI]:
    """A closer app for a fixture's test, its database disposed after it."""
    a = make_app(db_url, var_dir, **config)
    yield a
    a.state.closer.runtime.db.dispose()


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[FastAPI]:
    """The closer on SQLite and on PostgreSQL."""
    yield from running(db_url, tmp_path)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    """An HTTPS test client (the console's cookies are Secure)."""
    return TestClient(app, base_url="https://testserver")


def open_case(
    app: FastAPI,
    station: str = "yh-s1",
    category: str = "manhole_cover",
    submitted_at: datetime = MONDAY_9,
    decision: Decision = "open",
    case_id: str | None = None,
    grid_id: str = "yh-g1",
    **routed: Any,
) -> str:
    """Feed the intake a router decision, as the consumer would; returns the case id (`routed`: more
    fields of the decision, e.g. priority)."""
    case_id = case_id or "C" + uuid.uuid4().hex[:10].upper()
    data = ReportRouted(
        report_id="R" + uuid.uuid4().hex[:10],
        case_id=case_id,
        decision=decision,
        category=category,
        station_id=station,
        grid_id=grid_id,
        location=Location(lat=31.335, lon=121.515),
        place_name="开鲁新村一村北门",
        description="井盖破损 <script>alert(1)</script>",
        rider_ref="rider-" + uuid.uuid4().hex[:6],
        submitted_at=submitted_at,
        photo_ids=["p1"],
        **routed,
    )
    event = make_event("report.routed", data, source="router", subject=case_id, time=submitted_at)
    db = app.state.closer.runtime.db
    with db.session(write=True) as s:
        app.state.handlers.on_routed(s, Incoming(event, data, "reports.routed", 0, 0, case_id))
    return case_id


def feedback(app: FastAPI, case_id: str, fixed: bool, rating: int | None = None, comment: str = "") -> None:
    """Feed the consumer a rider's answer."""
    db = app.state.closer.runtime.db
    with db.session() as s:
        report_id = s.execute(
            text("SELECT report_id FROM case_report WHERE case_id = :c"), {"c": case_id}
        ).scalar()
    data = ReportFeedback(
        report_id=report_id, case_id=case_id, fixed=fixed, rating=rating, comment=comment, at=MONDAY_9
    )
    event = make_event("report.feedback", data, source="reporter", subject=case_id, time=MONDAY_9)
    with db.session(write=True) as s:
        app.state.handlers.on_feedback(s, Incoming(event, data, "reports.feedback", 0, 0, case_id))


def login(client: TestClient, username: str) -> dict[str, str]:
    """Bearer headers for a demo account."""
    r = client.post("/api/v1/auth/token", data={"username": username, "password": demo.DEMO_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def act(client: TestClient, who: dict[str, str], case_id: str, action: str, **body: Any) -> Any:
    """POST a transition with the case's current version unless one is given."""
    if "version" not in body:
        got = client.get(f"/api/v1/cases/{case_id}", headers=who).json()
        assert "version" in got, got
        body["version"] = got["version"]
    return client.post(f"/api/v1/cases/{case_id}/transitions", json={"action": action, **body}, headers=who)


def outbox(app: FastAPI, case_id: str) -> list[CloudEvent]:
    """The events written for a case, in order."""
    with app.state.closer.runtime.db.session() as s:
        rows = s.execute(text("SELECT key, payload FROM outbox ORDER BY id")).all()
    events = [CloudEvent.model_validate_json(p) for k, p in rows if k == case_id]
    return [e for e in events if e.subject == case_id]


def jpeg_with_gps() -> bytes:
    """A real photo carrying EXIF with a GPS position (which must not leak)."""
    img = Image.new("RGB", (800, 600), (200, 60, 40))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (31.0, 20.0, 0.0), 3: "E", 4: (121.0, 31.0, 0.0)}
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    return out.getvalue()


def counter(c: Any, *labels: str) -> float:
    """The current value of a labelled counter."""
    return float(c.labels(*labels)._value.get())


# ---- the lifecycle ------------------------------------------------------------------------------


def test_a_case_from_new_to_closed(app: FastAPI, client: TestClient, clock: FrozenClock) -> None:
    """Sign for, dispatch, resolve with a photo, rider confirms: stamps, timeline, events, metrics."""
    cid = open_case(app)
    s1 = login(client, "yh-s1")
    acks = counter(metrics.case_transitions, "acknowledge")
    case = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    assert case["status"] == "new" and case["allowed_actions"] == ["acknowledge", "return", "transfer"]
    assert case["ack_due"] == "2026-11-23T03:00:00+00:00"  # manhole_cover normal: 2 working hours

    clock.advance(timedelta(minutes=20))
    r = act(client, s1, cid, "acknowledge")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "acknowledged" and r.json()["acknowledged_at"]
    assert counter(metrics.case_transitions, "acknowledge") == acks + 1
    assert act(client, s1, cid, "dispatch", assignee="王师傅").json()["assignee"] == "王师傅"

    no_photo = act(client, s1, cid, "resolve", note="已更换井盖")
    assert no_photo.status_code == 422 and no_photo.json()["error"]["details"]["field"] == "photo"
    version = client.get(f"/api/v1/cases/{cid}", headers=s1).json()["version"]
    r = client.post(
        f"/api/v1/cases/{cid}/transitions",
        data={"action": "resolve", "version": str(version), "note": "已更换井盖"},
        files={"photo": ("after.jpg", jpeg_with_gps(), "image/jpeg")},
        headers=s1,
    )
    assert r.status_code == 200, r.text
    resolved = r.json()
    assert resolved["status"] == "resolved" and len(resolved["after_photo_ids"]) == 1
    photo_id = resolved["after_photo_ids"][0]
    assert len(photo_id) >= 20  # unguessable
    served = client.get(f"/photos/{photo_id}.jpg")
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(served.content)) as img:
        assert img.format == "JPEG" and not img.getexif() and "exif" not in img.info
    assert client.get("/photos/" + "A" * 22 + ".jpg").status_code == 404

    feedback(app, cid, fixed=True, rating=5)
    done = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    assert done["status"] == "closed" and done["rating"] == 5 and done["closed_at"]
    assert done["allowed_actions"] == []
    assert [e["action"] for e in done["timeline"]] == [
        "opened", "acknowledge", "dispatch", "resolve", "confirm"
    ]  # fmt: skip
    assert "<script>" in done["description"]  # stored as typed; the console escapes it

    events = outbox(app, cid)
    assert [e.type for e in events] == [
        "gridloop.case.opened.v1",
        "gridloop.case.acknowledged.v1",
        "gridloop.case.dispatched.v1",
        "gridloop.case.resolved.v1",
        "gridloop.case.closed.v1",
    ]
    resolved_event = events[3].data
    assert resolved_event["after_photo_ids"] == [photo_id] and resolved_event["report_ids"]
    assert [e.data.get("version") for e in events[1:]] == [2, 3, 4, 5]


FRIDAY_22 = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai


def test_urgent_hazards_run_on_calendar_time(app: FastAPI, client: TestClient, clock: FrozenClock) -> None:
    """A gas leak on Friday at 22:00 is due at 22:15 and escalated that night; a sanitation report of the
    same moment waits for Monday. The clock shows in the API, the console and every case event."""
    clock.set(FRIDAY_22)
    gas = open_case(
        app, category="gas_hazard", submitted_at=FRIDAY_22, priority="urgent", street_id="yinhang"
    )
    litter = open_case(app, category="sanitation", submitted_at=FRIDAY_22, street_id="yinhang")
    s1 = login(client, "yh-s1")
    g, n = (client.get(f"/api/v1/cases/{c}", headers=s1).json() for c in (gas, litter))
    assert (g["clock"], g["ack_due"], g["resolve_due"]) == (
        "calendar",
        "2026-11-27T14:15:00+00:00",
        "2026-11-27T16:00:00+00:00",
    )
    assert (n["clock"], n["ack_due"], n["resolve_due"]) == (
        "working",
        "2026-11-30T10:00:00+00:00",
        "2026-12-02T10:00:00+00:00",
    )
    items = client.get("/api/v1/queue", headers=s1).json()["items"]
    assert {c["case_id"]: c["clock"] for c in items} == {gas: "calendar", litter: "working"}

    assert console_sign_in(client, "yh-s1", demo.DEMO_PASSWORD).status_code == 303
    gas_page, litter_page = (client.get(f"/console/cases/{c}").text for c in (gas, litter))
    assert 'data-clock="calendar"' in gas_page and gas_page.count("24 小时处置") == 1
    assert 'data-clock="working"' in litter_page and "24 小时处置" not in litter_page
    assert client.get("/console/queue").text.count("24 小时处置") == 1  # the gas row's tag

    clock.set(FRIDAY_22 + timedelta(minutes=15, seconds=1))
    assert app.state.scheduler.tick().escalated == 1
    events = outbox(app, gas)
    assert [(e.type, e.data["clock"]) for e in events] == [
        ("gridloop.case.opened.v1", "calendar"),
        ("gridloop.case.on_duty.v1", "calendar"),  # out of hours: to the centre on duty (no roster)
        ("gridloop.case.escalated.v1", "calendar"),
        ("gridloop.case.on_duty.v1", "calendar"),
    ]
    assert [(e.type, e.data["clock"]) for e in outbox(app, litter)] == [
        ("gridloop.case.opened.v1", "working")
    ]


def test_a_merge_that_makes_a_hazard_urgent_moves_it_to_calendar_time(
    app: FastAPI, client: TestClient
) -> None:
    """A manhole case on working time; a further report flagged danger now (urgent) recomputes it on
    calendar time, and a later plain merge says so too."""
    saturday = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # 10:00 on a Saturday in Shanghai
    cid = open_case(app, category="manhole_cover", submitted_at=saturday)
    s1 = login(client, "yh-s1")
    before = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    assert (before["clock"], before["ack_due"]) == ("working", "2026-11-30T03:00:00+00:00")
    open_case(
        app, category="manhole_cover", decision="merge", case_id=cid, priority="urgent", danger_now=True
    )
    open_case(app, category="manhole_cover", decision="merge", case_id=cid, priority="urgent")
    after = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    assert (after["clock"], after["ack_due"], after["report_count"], after["danger_now"]) == (
        "calendar",
        "2026-11-28T02:30:00+00:00",
        3,
        True,
    )
    assert [(e.type, e.data["clock"]) for e in outbox(app, cid)] == [
        ("gridloop.case.opened.v1", "working"),
        ("gridloop.case.report_merged.v1", "calendar"),
        ("gridloop.case.report_merged.v1", "calendar"),
    ]


def test_illegal_and_stale_transitions_are_409(app: FastAPI, client: TestClient) -> None:
    """An action the state does not allow names the allowed ones; a stale version is refused."""
    cid = open_case(app)
    s1 = login(client, "yh-s1")
    r = act(client, s1, cid, "resolve", note="x")
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "transition_not_allowed"
    assert err["details"]["allowed"] == ["acknowledge", "return", "transfer"]
    assert "acknowledge" in err["message"]
    assert act(client, s1, cid, "acknowledge", version=1).status_code == 200
    stale = act(client, s1, cid, "dispatch", version=1, assignee="x")
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_version"
    assert stale.json()["error"]["details"]["version"] == 2
    assert act(client, s1, cid, "fly").status_code == 422
    r = client.post(f"/api/v1/cases/{cid}/transitions", content=b"{", headers=s1)
    assert r.status_code == 400
    assert act(client, s1, cid, "reject", reason="invalid").status_code == 403  # a supervisor's action


def test_returns_rulings_and_no_ping_pong(app: FastAPI, client: TestClient) -> None:
    """Return with a reason; the centre sends it back or reassigns; twice moved, staff cannot move it."""
    cid = open_case(app)
    s1, s2, centre = login(client, "yh-s1"), login(client, "yh-s2"), login(client, "yh-centre")
    r = act(client, s1, cid, "return", reason="wrong_area", note="在国和路一侧")
    assert (
        r.status_code == 200
        and r.json()["status"] == "returned"
        and r.json()["return_reason"] == "wrong_area"
    )
    returns = client.get("/api/v1/queue", params={"view": "returns"}, headers=centre).json()["items"]
    assert [c["case_id"] for c in returns] == [cid]
    assert client.get("/api/v1/queue", params={"view": "returns"}, headers=s1).status_code == 403
    r = act(client, centre, cid, "reassign", to_station="yh-s2")
    assert r.status_code == 200 and r.json()["station_id"] == "yh-s2" and r.json()["status"] == "new"
    assert client.get(f"/api/v1/cases/{cid}", headers=s1).status_code == 404  # gone from yh-s1
    r = act(client, s2, cid, "transfer", to_station="yh-s1")
    assert r.status_code == 200 and r.json()["moves"] == 2
    blocked = act(client, s1, cid, "return", reason="unclear_ownership")
    assert blocked.status_code == 409 and "supervisor" in blocked.json()["error"]["message"]
    assert act(client, s1, cid, "transfer", to_station="yh-s3").status_code == 409
    assert act(client, s1, cid, "acknowledge").status_code == 200
    assert act(client, centre, cid, "transfer", to_station="yh-s3").status_code == 200
    transferred = [e for e in outbox(app, cid) if e.type == "gridloop.case.transferred.v1"]
    assert [(e.data["from_station"], e.data["station_id"]) for e in transferred] == [
        ("yh-s1", "yh-s2"), ("yh-s2", "yh-s1"), ("yh-s1", "yh-s3")
    ]  # fmt: skip


def test_send_back_returns_the_case_where_it_was(app: FastAPI, client: TestClient) -> None:
    """A return ruled 'send back' puts the case back in the state it was returned from."""
    cid = open_case(app)
    s1, centre = login(client, "yh-s1"), login(client, "yh-centre")
    act(client, s1, cid, "acknowledge")
    act(client, s1, cid, "return", reason="overlapping_duties")
    r = act(client, centre, cid, "send_back", note="属于本站职责")
    assert r.status_code == 200 and r.json()["status"] == "acknowledged" and r.json()["station_id"] == "yh-s1"


def test_triage_to_a_station(app: FastAPI, client: TestClient) -> None:
    """An unroutable report sits with the centre until a supervisor triages it."""
    cid = open_case(app, station="yh-centre", category="other", decision="triage")
    centre, s4 = login(client, "yh-centre"), login(client, "yh-s4")
    assert [
        c["case_id"]
        for c in client.get("/api/v1/queue", params={"view": "triage"}, headers=centre).json()["items"]
    ] == [cid]
    r = act(client, centre, cid, "triage", to_station="yh-s4")
    assert r.status_code == 200 and r.json()["triage"] is False
    assert [c["case_id"] for c in client.get("/api/v1/queue", headers=s4).json()["items"]] == [cid]


def test_extensions_and_holds_move_deadlines(app: FastAPI, client: TestClient, clock: FrozenClock) -> None:
    """Two extensions move the resolve deadline in working time; a third is refused; holds stop the clock."""
    cid = open_case(app, category="sanitation")
    s1, centre = login(client, "yh-s1"), login(client, "yh-centre")
    act(client, s1, cid, "acknowledge")
    act(client, s1, cid, "dispatch", assignee="保洁组")
    before = client.get(f"/api/v1/cases/{cid}", headers=s1).json()["resolve_due"]
    for n in (1, 2):
        assert act(client, s1, cid, "request_extension", hours=8, note="等物业配合").status_code == 200
        assert act(client, s1, cid, "request_extension", hours=8, note="again").status_code == 409
        extensions = client.get("/api/v1/queue", params={"view": "extensions"}, headers=centre).json()[
            "items"
        ]
        assert [c["case_id"] for c in extensions] == [cid]
        r = act(client, centre, cid, "approve_extension")
        assert r.status_code == 200 and r.json()["extensions_granted"] == n
    after = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    # 16 working hours = two working days later, same time of day (no holiday in between)
    assert datetime.fromisoformat(after["resolve_due"]) - datetime.fromisoformat(before) == timedelta(days=2)
    third = act(client, s1, cid, "request_extension", hours=8, note="third")
    assert third.status_code == 409 and "2 extensions" in third.json()["error"]["message"]

    held = act(client, centre, cid, "hold", note="待区里协调")
    assert held.status_code == 200 and held.json()["due_at"] is None and held.json()["status"] == "on_hold"
    clock.advance(timedelta(days=7))  # a whole working week on hold costs nothing
    centre = login(client, "yh-centre")  # the old token expired meanwhile
    released = act(client, centre, cid, "release")
    assert released.status_code == 200 and released.json()["status"] == "dispatched"
    shift = datetime.fromisoformat(released.json()["resolve_due"]) - datetime.fromisoformat(
        after["resolve_due"]
    )
    assert shift == timedelta(days=7)
    assert [e.type.split(".")[2] for e in outbox(app, cid)][-2:] == ["on_hold", "released"]


def test_rider_denies_reopens_and_silence_closes(
    app: FastAPI, client: TestClient, clock: FrozenClock
) -> None:
    """'Not fixed' reopens to dispatched (counted), rating kept; no answer in 72 h closes the case."""
    cid = open_case(app, category="estate_access")  # no after-photo needed
    s1 = login(client, "yh-s1")
    for action, extra in (
        ("acknowledge", {}),
        ("dispatch", {"assignee": "a"}),
        ("resolve", {"note": "已沟通"}),
    ):
        assert act(client, s1, cid, action, **extra).status_code == 200
    feedback(app, cid, fixed=False, rating=2, comment="门还是进不去")
    case = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    assert case["status"] == "dispatched" and case["reopen_count"] == 1 and case["rating"] == 2
    assert case["timeline"][-1]["note"] == "门还是进不去"
    assert act(client, s1, cid, "resolve", note="再次沟通").status_code == 200
    scheduler: Scheduler = app.state.scheduler
    clock.advance(timedelta(hours=71))
    assert scheduler.tick().closed == 0
    clock.advance(timedelta(hours=2))
    assert scheduler.tick().closed == 1
    s1 = login(client, "yh-s1")  # the old token expired meanwhile
    assert client.get(f"/api/v1/cases/{cid}", headers=s1).json()["status"] == "closed"
    assert outbox(app, cid)[-1].data["action"] == "auto_close"


def test_feedback_effects_count_after_commit_and_once(app: FastAPI, client: TestClient) -> None:
    """The rider's confirm counts its metric once the consumer batch committed, and once only, although
    a poison event in the batch makes the consumer apply it twice (fast pass, then careful pass)."""
    cid = open_case(app, category="estate_access")  # no after-photo needed
    s1 = login(client, "yh-s1")
    for action, extra in (("acknowledge", {}), ("dispatch", {"assignee": "a"}), ("resolve", {"note": "ok"})):
        assert act(client, s1, cid, action, **extra).status_code == 200
    with app.state.closer.runtime.db.session() as s:
        report_id = s.execute(
            text("SELECT report_id FROM case_report WHERE case_id = :c"), {"c": cid}
        ).scalar()
    good = ReportFeedback(report_id=report_id, case_id=cid, fixed=True, rating=4, at=MONDAY_9)
    poison = ReportFeedback(report_id="R-nobody", case_id="C-NOWHERE", fixed=True, at=MONDAY_9)
    records = [
        _Raw(
            "reports.feedback",
            0,
            i,
            d.case_id,
            make_event("report.feedback", d, source="reporter", subject=d.case_id, time=MONDAY_9)
            .model_dump_json()
            .encode(),
        )
        for i, d in enumerate((good, poison))
    ]
    consumer = app.state.closer.runtime.consumers[0]
    consumer.max_attempts = 1  # the poison event is dead-lettered on its first careful try
    handle = consumer.handlers["report.feedback"]
    confirms = counter(metrics.case_transitions, "confirm")
    during: list[float] = []

    def spy(session: Any, item: Incoming) -> None:
        handle(session, item)
        during.append(counter(metrics.case_transitions, "confirm"))

    consumer.handlers["report.feedback"] = spy
    consumer.apply_batch(records)
    assert during == [confirms, confirms]  # applied twice, counted by neither attempt before commit
    assert counter(metrics.case_transitions, "confirm") == confirms + 1
    assert client.get(f"/api/v1/cases/{cid}", headers=s1).json()["status"] == "closed"


# ---- SLA and the scheduler ----------------------------------------------------------------------


def test_untouched_case_turns_yellow_red_and_is_escalated_once(
    app: FastAPI, db_url: str, tmp_path: Path, client: TestClient, clock: FrozenClock
) -> None:
    """80 % of the sign-for time: yellow; past it: red, one case.escalated, the supervision list.

    A second scheduler on the same database (a restarted process) escalates nothing again.
    """
    cid = open_case(app)  # 2 working hours to sign for: due 11:00, yellow from 10:36
    s1, centre = login(client, "yh-s1"), login(client, "yh-centre")

    def colour() -> str:
        items = client.get("/api/v1/queue", headers=s1).json()["items"]
        return next(c["colour"] for c in items if c["case_id"] == cid)

    assert colour() == "green"
    clock.set(MONDAY_9 + timedelta(minutes=96))
    assert colour() == "yellow"
    counts = client.get("/api/v1/queue/counts", headers=s1).json()
    assert counts["yellow"] == 1 and counts["red"] == 0 and counts["states"]["new"] == 1
    first: Scheduler = app.state.scheduler
    assert first.tick().escalated == 0
    breaches = counter(metrics.sla_breaches, "yh-s1", "ack")
    clock.set(MONDAY_9 + timedelta(hours=2, seconds=1))
    assert colour() == "red"
    assert first.tick().escalated == 1
    assert counter(metrics.sla_breaches, "yh-s1", "ack") == breaches + 1
    supervision = client.get("/api/v1/queue", params={"view": "supervision"}, headers=centre).json()["items"]
    assert [c["case_id"] for c in supervision] == [cid] and supervision[0]["supervised"]

    restarted = make_app(db_url, tmp_path)  # a new process on the same database
    try:
        again: Scheduler = restarted.state.scheduler
        clock.advance(timedelta(minutes=30))
        assert again.tick().escalated == 0 and first.tick().escalated == 0
        escalated = [e for e in outbox(app, cid) if e.type == "gridloop.case.escalated.v1"]
        assert [e.data["deadline"] for e in escalated] == ["ack"]
        # the resolve deadline (24 working hours: Wednesday 18:00) escalates once more, by itself
        resolve_due = datetime.fromisoformat(supervision[0]["resolve_due"])
        assert resolve_due == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
        clock.set(resolve_due + timedelta(seconds=1))
        assert again.tick().escalated == 1 and first.tick().escalated == 0
        with restarted.state.closer.runtime.db.session() as s:
            rows = s.exec(select(Escalation.deadline).where(Escalation.case_id == cid)).all()  # type: ignore[call-overload]
        assert sorted(r[0] for r in rows) == ["ack", "resolve"]
    finally:
        restarted.state.closer.runtime.db.dispose()


def test_late_sign_for_counts_a_breach_once(app: FastAPI, client: TestClient, clock: FrozenClock) -> None:
    """Signing for late, before the scheduler noticed, counts the breach once and ends that escalation."""
    cid = open_case(app)
    s1 = login(client, "yh-s1")
    breaches = counter(metrics.sla_breaches, "yh-s1", "ack")
    clock.advance(timedelta(hours=3))
    assert act(client, s1, cid, "acknowledge").status_code == 200
    assert counter(metrics.sla_breaches, "yh-s1", "ack") == breaches + 1
    assert app.state.scheduler.tick().escalated == 0


def test_two_staff_sign_for_at_once_one_wins(app: FastAPI) -> None:
    """A race on the database: both send version 1; exactly one signs for, the other gets 409."""
    cid = open_case(app)
    ctx: Closer = app.state.closer
    from gridloop.tokens import Principal

    staff = [Principal("yh-s1", "staff", ("yh-s1",)), Principal("yh-s1-b", "staff", ("yh-s1",))]
    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def sign(i: int) -> None:
        barrier.wait()
        try:
            results[i] = actions.take_action(
                ctx, staff[i], cid, actions.TransitionBody(action="acknowledge", version=1)
            )
        except ApiError as exc:
            results[i] = exc

    threads = [threading.Thread(target=sign, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    wins = [r for r in results if isinstance(r, dict)]
    losses = [r for r in results if isinstance(r, ApiError)]
    assert len(wins) == 1 and len(losses) == 1, results
    assert losses[0].status == 409 and losses[0].code == "stale_version"
    assert [e.type for e in outbox(app, cid)].count("gridloop.case.acknowledged.v1") == 1


# ---- security -----------------------------------------------------------------------------------


def test_authorisation_matrix(app: FastAPI, client: TestClient, clock: FrozenClock) -> None:
    """Another station's case is 404; expired, forged, tampered or missing tokens are 401."""
    cid = open_case(app)
    s1, s2, centre, admin = (login(client, u) for u in ("yh-s1", "yh-s2", "yh-centre", "admin"))
    for path in (f"/api/v1/cases/{cid}", f"/api/v1/cases/{cid}/timeline"):
        assert client.get(path, headers=s2).status_code == 404
        assert client.get(path, headers=s1).status_code == 200
        assert client.get(path, headers=centre).status_code == 200
    r = act(client, s2, cid, "acknowledge", version=1)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/queue", params={"station": "yh-s1"}, headers=s2).status_code == 404
    assert client.get(f"/api/v1/cases/{cid}").status_code == 401
    assert act(client, admin, cid, "acknowledge", version=1).status_code == 403

    token = s1["Authorization"].split()[1]
    claims = jwt.decode(
        token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
    )
    forged = jwt.encode({**claims, "stations": ["yh-s2"]}, "not-the-key", algorithm="HS256")
    r = client.get(f"/api/v1/cases/{cid}", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
    head, _, sig = token.split(".")
    tampered = jwt.utils.base64url_encode(json.dumps({**claims, "role": "supervisor"}).encode()).decode()
    r = client.get(f"/api/v1/cases/{cid}", headers={"Authorization": f"Bearer {head}.{tampered}.{sig}"})
    assert r.status_code == 401
    none_alg = (
        jwt.encode(claims, "", algorithm="none")  # "" is the none algorithm's only key
        if "none" in jwt.algorithms.get_default_algorithms()
        else forged
    )
    assert (
        client.get(f"/api/v1/cases/{cid}", headers={"Authorization": f"Bearer {none_alg}"}).status_code == 401
    )

    street_matrix(app, client, cid)

    clock.advance(timedelta(hours=8, seconds=1))
    r = client.get(f"/api/v1/cases/{cid}", headers=s1)
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"


def ids(client: TestClient, who: dict[str, str], **params: str) -> set[str]:
    """The case ids of a queue list."""
    r = client.get(
        "/api/v1/queue", params={"status": "all", **params} if "view" not in params else params, headers=who
    )
    assert r.status_code == 200, r.text
    return {c["case_id"] for c in r.json()["items"]}


def street_matrix(app: FastAPI, client: TestClient, yh: str) -> None:
    """Street scoping (issue 17): 殷行's centre gets 404 on 彭浦's cases and never lists or counts them;
    the city account sees both streets; staff stay on their station; a street change revokes tokens."""
    pp = open_case(app, station="pp-s1", grid_id="pp-g1")
    pp_triage = open_case(app, station="pp-centre", grid_id="pp-g1", category="other", decision="triage")
    pp_back = open_case(app, station="pp-s2", grid_id="pp-g1")
    pp_watched = open_case(app, station="pp-s3", grid_id="pp-g1")
    yh_watched = open_case(app, station="yh-s2")
    with app.state.closer.runtime.db.session(write=True) as s:
        s.execute(
            text('UPDATE "case" SET supervised = :t WHERE case_id IN (:a, :b)'),
            {"t": True, "a": pp_watched, "b": yh_watched},
        )
    ps2 = login(client, "pp-s2")
    assert act(client, ps2, pp_back, "return", reason="wrong_area").status_code == 200
    centre, pp_centre, city, s1 = (login(client, u) for u in ("yh-centre", "pp-centre", "city", "yh-s1"))

    # another street's case is 404, exactly like another station's for staff
    for path in (f"/api/v1/cases/{pp}", f"/api/v1/cases/{pp}/timeline", f"/api/v1/cases/{pp}/messages"):
        r = client.get(path, headers=centre)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
        assert client.get(path, headers=city).status_code == 200
        assert client.get(path, headers=pp_centre).status_code == 200
    r = act(client, centre, pp, "acknowledge", version=1)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    photo = client.post(
        f"/api/v1/cases/{pp}/transitions",
        data={"action": "resolve", "version": "1"},
        files={"photo": ("after.jpg", jpeg_with_gps(), "image/jpeg")},
        headers=centre,
    )
    assert (photo.status_code, photo.json()["error"]["code"]) == (404, "not_found")
    said = client.post(
        f"/api/v1/cases/{pp}/messages", json={"kind": "note", "text": "看一下", "version": 1}, headers=centre
    )
    assert (said.status_code, said.json()["error"]["code"]) == (404, "not_found")
    for params in ({"station": "pp-s1"}, {"street": "pengpu"}, {"street": "nowhere"}):
        assert client.get("/api/v1/queue", params=params, headers=centre).status_code == 404
        assert client.get("/api/v1/queue/stream", params=params, headers=centre).status_code == 404

    # the lists: 殷行's centre has none of 彭浦's cases; 彭浦's centre none of 殷行's; city has both
    pp_all, yh_all = {pp, pp_triage, pp_back, pp_watched}, {yh, yh_watched}
    assert ids(client, centre) == yh_all
    assert ids(client, pp_centre) == pp_all
    assert ids(client, city) == pp_all | yh_all
    assert ids(client, city, street="pengpu") == pp_all
    assert ids(client, centre, view="triage") == set()
    assert ids(client, city, view="triage") == ids(client, pp_centre, view="triage") == {pp_triage}
    assert ids(client, centre, view="returns") == set()
    assert ids(client, city, view="returns") == ids(client, pp_centre, view="returns") == {pp_back}
    assert ids(client, centre, view="supervision") == {yh_watched}
    assert ids(client, pp_centre, view="supervision") == {pp_watched}
    assert ids(client, city, view="supervision") == {pp_watched, yh_watched}
    # staff unchanged: their own station only
    assert ids(client, s1) == {yh}
    assert client.get(f"/api/v1/cases/{pp}", headers=s1).status_code == 404

    # the numbers: counts and the overview count only the caller's street
    counts = client.get("/api/v1/queue/counts", headers=centre).json()
    assert sum(counts["states"].values()) == 2
    assert sum(client.get("/api/v1/queue/counts", headers=city).json()["states"].values()) == 6
    yh_view = client.get("/api/v1/overview", headers=centre).json()
    assert (yh_view["open"], yh_view["today"]["reports"], yh_view["today"]["opened"]) == (2, 2, 2)
    assert {s["station_id"] for s in yh_view["stations"]} <= {
        s.id for s in app.state.closer.jurisdiction.stations_of("yinhang")
    }
    assert client.get("/api/v1/overview", headers=pp_centre).json()["open"] == 4
    assert client.get("/api/v1/overview", headers=city).json()["open"] == 6
    assert client.get("/api/v1/overview", params={"street": "pengpu"}, headers=centre).status_code == 404
    csv = client.get(
        "/api/v1/cases/export.csv", params={"from": "2026-01-01", "to": "2026-12-31"}, headers=centre
    )
    assert csv.status_code == 200 and yh in csv.text and pp not in csv.text
    csv = client.get(
        "/api/v1/cases/export.csv", params={"from": "2026-01-01", "to": "2026-12-31"}, headers=city
    )
    assert yh in csv.text and pp in csv.text

    # a token issued before a street change is refused (the version unchanged: the streets differ)
    with app.state.closer.runtime.db.session(write=True) as s:
        s.execute(text("UPDATE staff SET streets = 'pengpu' WHERE username = 'yh-centre'"))
    r = client.get("/api/v1/queue", headers=centre)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "token_revoked")
    moved = login(client, "yh-centre")
    assert ids(client, moved) == pp_all


def test_admin_manages_accounts_and_disabling_ends_tokens(app: FastAPI, client: TestClient) -> None:
    """Only an admin creates and disables accounts; a disabled account's token stops at once."""
    admin, s1 = login(client, "admin"), login(client, "yh-s1")
    body = {"username": "li.wei", "password": "long-enough-pw", "role": "staff", "stations": ["yh-s3"]}
    assert client.post("/api/v1/staff", json=body, headers=s1).status_code == 403
    assert (
        client.post("/api/v1/staff", json={**body, "stations": ["nowhere"]}, headers=admin).status_code == 422
    )
    assert client.post("/api/v1/staff", json={**body, "password": "short"}, headers=admin).status_code == 422
    created = client.post("/api/v1/staff", json=body, headers=admin)
    assert created.status_code == 200 and "password_hash" not in created.json()
    li = client.post("/api/v1/auth/token", data={"username": "li.wei", "password": "long-enough-pw"}).json()
    li_auth = {"Authorization": f"Bearer {li['access_token']}"}
    assert client.get("/api/v1/queue", headers=li_auth).status_code == 200
    assert client.post("/api/v1/staff/li.wei/disable", headers=admin).status_code == 200
    gone = client.get("/api/v1/queue", headers=li_auth)
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "token_revoked"
    names = [s["username"] for s in client.get("/api/v1/staff", headers=admin).json()["staff"]]
    assert "li.wei" in names and "yh-s1" in names


def test_console_cookie_and_csrf(app: FastAPI, client: TestClient, clock: FrozenClock) -> None:
    """Login sets a Secure, HttpOnly, SameSite=Strict cookie; a form without its CSRF token is 403."""
    cid = open_case(app)
    page = client.get("/console/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    bad = client.post(
        "/console/login",
        data={"username": "yh-s1", "password": "wrong", "csrf": csrf},
        follow_redirects=False,
    )
    assert bad.status_code == 401 and "gl_session" not in bad.cookies
    r = client.post(
        "/console/login",
        data={"username": "yh-s1", "password": demo.DEMO_PASSWORD, "csrf": "forged"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    clock.advance(timedelta(seconds=1))  # the wait after the failed sign-in
    page = client.get("/console/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    r = client.post(
        "/console/login",
        data={"username": "yh-s1", "password": demo.DEMO_PASSWORD, "csrf": csrf},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert (
        "gl_session=" in cookie
        and "HttpOnly" in cookie
        and "Secure" in cookie
        and "SameSite=strict" in cookie
    )
    queue_page = client.get("/console/queue")
    assert queue_page.status_code == 200 and cid in queue_page.text
    assert "<script>alert(1)</script>" not in queue_page.text and "&lt;script&gt;" in queue_page.text
    assert "script-src 'self'" in queue_page.headers["content-security-policy"]
    form = {"action": "acknowledge", "version": "1"}
    missing = client.post(
        f"/console/cases/{cid}/act", files={"x": ("", b"")}, data=form, follow_redirects=False
    )
    assert missing.status_code == 403
    wrong = client.post(f"/console/cases/{cid}/act", data={**form, "csrf": "0" * 64}, files={"x": ("", b"")})
    assert wrong.status_code == 403
    detail = client.get(f"/console/cases/{cid}")
    token = detail.text.split('name="csrf" value="')[1].split('"')[0]
    ok = client.post(
        f"/console/cases/{cid}/act",
        data={**form, "csrf": token},
        files={"x": ("", b"")},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"].endswith("done=acknowledge")
    # the cookie does not authorise state changes on the JSON API (no CSRF there: bearer only)
    assert (
        client.post(
            f"/api/v1/cases/{cid}/transitions", json={"action": "dispatch", "version": 2, "assignee": "x"}
        ).status_code
        == 401
    )
    assert client.post("/console/logout", data={}, follow_redirects=False).status_code == 403


def test_photo_checks(db_url: str, tmp_path: Path, clock: FrozenClock) -> None:
    """Oversize is 413, a file that is not an image is 415, and nothing is left half-written."""
    app = make_app(db_url, tmp_path)
    try:
        client = TestClient(app, base_url="https://testserver")
        cid = open_case(app)
        s1 = login(client, "yh-s1")
        act(client, s1, cid, "acknowledge")
        act(client, s1, cid, "dispatch", assignee="a")
        big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_PHOTO_BYTES)  # past gridloop.photos' one limit

        def resolve(payload: bytes, name: str) -> Any:
            return client.post(
                f"/api/v1/cases/{cid}/transitions",
                data={"action": "resolve", "version": "3", "note": "ok"},
                files={"photo": (name, payload, "image/jpeg")},
                headers=s1,
            )

        assert resolve(big, "big.png").status_code == 413
        fake = resolve(b"<?php system($_GET[c]); ?>" + b"\xff" * 100, "evil.jpg")
        assert fake.status_code == 415 and fake.json()["error"]["code"] == "not_an_image"
        with app.state.closer.runtime.db.session() as s:
            assert s.execute(text("SELECT count(*) FROM case_photo")).scalar() == 0
            assert s.execute(text("SELECT count(*) FROM case_photo_data")).scalar() == 0
        assert client.get(f"/api/v1/cases/{cid}", headers=s1).json()["status"] == "dispatched"
        assert not (tmp_path / "closer-photos").exists()  # no replica's disk holds photos any more
    finally:
        app.state.closer.runtime.db.dispose()


def resolve_with_photo(client: TestClient, who: dict[str, str], case_id: str, photo: bytes) -> Any:
    """Resolve a dispatched case with an after-photo (multipart, the case's current version)."""
    version = client.get(f"/api/v1/cases/{case_id}", headers=who).json()["version"]
    return client.post(
        f"/api/v1/cases/{case_id}/transitions",
        data={"action": "resolve", "version": str(version), "note": "已更换"},
        files={"photo": ("after.jpg", photo, "image/jpeg")},
        headers=who,
    )


def test_a_photo_uploaded_to_one_replica_is_served_by_another(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    """Two closers (own state, own var dir) on one database: the photo one stored, the other serves,
    byte for byte, with the same headers; a failed resolve stores nothing on either."""
    one, two = make_app(db_url, tmp_path / "one"), make_app(db_url, tmp_path / "two")
    try:
        c1 = TestClient(one, base_url="https://testserver")
        c2 = TestClient(two, base_url="https://testserver")
        cid = open_case(one)
        s1 = login(c1, "yh-s1")
        act(c1, s1, cid, "acknowledge")
        act(c1, s1, cid, "dispatch", assignee="王师傅")
        stale = c1.post(
            f"/api/v1/cases/{cid}/transitions",
            data={"action": "resolve", "version": "2", "note": "x"},
            files={"photo": ("after.jpg", jpeg_with_gps(), "image/jpeg")},
            headers=s1,
        )
        assert stale.status_code == 409
        r = resolve_with_photo(c1, s1, cid, jpeg_with_gps())
        assert r.status_code == 200, r.text
        photo_id = r.json()["after_photo_ids"][0]

        mine, theirs = c1.get(f"/photos/{photo_id}.jpg"), c2.get(f"/photos/{photo_id}.jpg")
        assert mine.status_code == theirs.status_code == 200
        assert theirs.content == mine.content and theirs.content[:3] == b"\xff\xd8\xff"  # a JPEG
        for served in (mine, theirs):
            assert served.headers["content-type"] == "image/jpeg"
            assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert served.headers["x-content-type-options"] == "nosniff"
            assert served.headers["etag"] == f'"{photo_id}"'
        again = c2.get(f"/photos/{photo_id}.jpg", headers={"If-None-Match": f'"{photo_id}"'})
        assert again.status_code == 304 and again.content == b""
        assert c2.get("/photos/" + "A" * 22 + ".jpg").status_code == 404
        assert c2.get("/photos/..%2F..%2Fetc.jpg").status_code == 404
        with one.state.closer.runtime.db.session() as s:
            assert s.execute(text("SELECT count(*) FROM case_photo")).scalar() == 1
            assert s.execute(text("SELECT count(*) FROM case_photo_data")).scalar() == 1
        assert not (tmp_path / "one" / "closer-photos").exists()
    finally:
        one.state.closer.runtime.db.dispose()
        two.state.closer.runtime.db.dispose()


def test_import_photos_copies_old_files_once(
    app: FastAPI, client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gridloop closer import-photos`: a file of a known photo goes in (once), others are skipped."""
    cid = open_case(app)
    s1 = login(client, "yh-s1")
    act(client, s1, cid, "acknowledge")
    act(client, s1, cid, "dispatch", assignee="a")
    photo_id = resolve_with_photo(client, s1, cid, jpeg_with_gps()).json()["after_photo_ids"][0]
    old_id = "B" * 22  # a photo stored on disk before the change: its row, no bytes
    with app.state.closer.runtime.db.session(write=True) as s:
        s.execute(
            text(
                "INSERT INTO case_photo (photo_id, case_id, kind, width, height, size, uploaded_by,"
                " created_at) VALUES (:p, :c, 'after', 8, 6, 5, 'yh-s1', :t)"
            ),
            {"p": old_id, "c": cid, "t": MONDAY_9},
        )
    folder = tmp_path / "closer-photos"
    folder.mkdir()
    (folder / f"{old_id}.jpg").write_bytes(b"\xff\xd8old!")
    (folder / f"{photo_id}.jpg").write_bytes(b"not this one")
    (folder / f"{'C' * 22}.jpg").write_bytes(b"nobody's")
    db = app.state.closer.runtime.db
    monkeypatch.setattr(closer_cli, "_database", lambda: Database(db.url, Base.metadata))
    assert client.get(f"/photos/{old_id}.jpg").status_code == 404
    assert closer_cli.cmd_import_photos(argparse.Namespace(dir=str(folder))) == 0
    assert client.get(f"/photos/{old_id}.jpg").content == b"\xff\xd8old!"
    assert client.get(f"/photos/{photo_id}.jpg").content != b"not this one"
    assert client.get(f"/photos/{'C' * 22}.jpg").status_code == 404
    assert closer_cli.cmd_import_photos(argparse.Namespace(dir=str(folder))) == 0
    with db.session() as s:
        assert s.execute(text("SELECT count(*) FROM case_photo_data")).scalar() == 2


# ---- the queue ----------------------------------------------------------------------------------


def test_queue_sort_pagination_filters_and_export(
    app: FastAPI, client: TestClient, clock: FrozenClock
) -> None:
    """Most urgent first, cursor pages without gaps or repeats, state and category filters, CSV export."""
    kinds = ["road_incident", "sanitation", "manhole_cover", "facility_damage", "other"] * 3
    ids = [
        open_case(app, category=c, submitted_at=MONDAY_9 + timedelta(minutes=i)) for i, c in enumerate(kinds)
    ]
    s1 = login(client, "yh-s1")
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/queue", params=params, headers=s1).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(c["case_id"] for c in seen) == sorted(ids)
    dues = [(c["due_at"], c["case_id"]) for c in seen]
    assert dues == sorted(dues)
    only = client.get("/api/v1/queue", params={"category": "sanitation"}, headers=s1).json()["items"]
    assert len(only) == 3 and {c["category"] for c in only} == {"sanitation"}
    act(client, s1, ids[0], "acknowledge")
    acked = client.get("/api/v1/queue", params={"status": "acknowledged"}, headers=s1).json()["items"]
    assert [c["case_id"] for c in acked] == [ids[0]]
    assert client.get("/api/v1/queue", params={"status": "bogus"}, headers=s1).status_code == 422
    assert client.get("/api/v1/queue", params={"cursor": "garbage"}, headers=s1).status_code == 400

    # a description typed like a spreadsheet formula is neutralised in the export
    cid = open_case(app)
    with app.state.closer.runtime.db.session(write=True) as s:
        row = s.get(Case, cid)
        assert row is not None
        row.description = '=HYPERLINK("http://evil")'
    r = client.get("/api/v1/cases/export.csv", params={"from": "2026-11-23", "to": "2026-11-23"}, headers=s1)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.lstrip("\ufeff").splitlines()
    assert lines[0].startswith("case_id,station_id") and len(lines) == 1 + 16
    assert "'=HYPERLINK" in r.text
    empty = client.get(
        "/api/v1/cases/export.csv", params={"from": "2026-11-24", "to": "2026-11-30"}, headers=s1
    )
    assert len(empty.text.lstrip("\ufeff").splitlines()) == 1
    assert (
        client.get(
            "/api/v1/cases/export.csv", params={"from": "2026-11-24", "to": "2026-11-01"}, headers=s1
        ).status_code
        == 422
    )


def test_bulk_sign_for(app: FastAPI, client: TestClient) -> None:
    """Several cases signed for at once; a stale one fails alone."""
    ids = [open_case(app) for _ in range(3)]
    s1 = login(client, "yh-s1")
    act(client, s1, ids[2], "acknowledge")
    body = {"items": [{"case_id": i, "version": 1} for i in ids]}
    results = client.post("/api/v1/cases/bulk-acknowledge", json=body, headers=s1).json()["results"]
    assert [r["ok"] for r in results] == [True, True, False]
    assert results[2]["code"] == "stale_version"


# ---- issue 12: sign-in throttling, token revocation, streams, export, photos, demo accounts --------


def https_client(app: FastAPI, address: str) -> TestClient:
    """A test client connecting from a given address (sign-ins are throttled per address)."""
    return TestClient(app, base_url="https://testserver", client=(address, 50000))


def sign_in(c: TestClient, username: str, password: str) -> Any:
    """POST the token form."""
    return c.post("/api/v1/auth/token", data={"username": username, "password": password})


def console_sign_in(c: TestClient, username: str, password: str) -> Any:
    """Submit the console's login form (with its CSRF double-submit)."""
    page = c.get("/console/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    return c.post(
        "/console/login",
        data={"username": username, "password": password, "csrf": csrf},
        follow_redirects=False,
    )


def staff_events(app: FastAPI, username: str) -> list[CloudEvent]:
    """The staff.events messages written for an account, in order."""
    with app.state.closer.runtime.db.session() as s:
        rows = s.execute(
            text("SELECT payload FROM outbox WHERE topic = 'staff.events' AND key = :k ORDER BY id"),
            {"k": username},
        ).all()
    return [CloudEvent.model_validate_json(p) for (p,) in rows]


def test_sign_in_backs_off_instead_of_locking_out(app: FastAPI, clock: FrozenClock) -> None:
    """A failed sign-in makes the account's next attempt wait 1, 2, 4 … s (429, Retry-After); the right
    password after the wait works, however many failures came before (no lock-out, admin included)."""
    clients = iter(https_client(app, f"10.1.0.{i}") for i in range(1, 60))  # one address each
    bad = sign_in(next(clients), "admin", "wrong-password")
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "bad_credentials"
    early = sign_in(next(clients), "admin", demo.DEMO_PASSWORD)
    assert early.status_code == 429 and early.headers["retry-after"] == "1"
    assert early.json()["error"]["code"] == "too_many_attempts"
    clock.advance(timedelta(seconds=1))
    assert sign_in(next(clients), "admin", demo.DEMO_PASSWORD).status_code == 200
    waits: list[int] = []
    for _ in range(7):
        assert sign_in(next(clients), "admin", "wrong-password").status_code == 401
        throttled = sign_in(next(clients), "admin", "wrong-password")
        assert throttled.status_code == 429
        waits.append(int(throttled.headers["retry-after"]))
        clock.advance(timedelta(seconds=waits[-1]))
    assert waits == [1, 2, 4, 8, 16, 32, 64]
    assert sign_in(next(clients), "admin", demo.DEMO_PASSWORD).status_code == 200
    # the success starts the account afresh: one failure waits one second again
    assert sign_in(next(clients), "admin", "wrong-password").status_code == 401
    assert sign_in(next(clients), "admin", "wrong-password").headers["retry-after"] == "1"


def test_sign_in_backs_off_per_address(app: FastAPI, clock: FrozenClock) -> None:
    """Failures from one address (an IPv6 client by its /64) make that address wait for every account;
    another address is not held up."""
    here, there = https_client(app, "203.0.113.7"), https_client(app, "203.0.113.8")
    assert sign_in(here, "nobody-at-all", "some-password").status_code == 401
    held = sign_in(here, "yh-s1", demo.DEMO_PASSWORD)
    assert held.status_code == 429 and held.headers["retry-after"] == "1"
    assert sign_in(there, "yh-s1", demo.DEMO_PASSWORD).status_code == 200
    clock.advance(timedelta(seconds=1))
    assert sign_in(here, "yh-s1", demo.DEMO_PASSWORD).status_code == 200
    v6a, v6b = https_client(app, "2001:db8:1:2::10"), https_client(app, "2001:db8:1:2:ffff::1")
    assert sign_in(v6a, "nobody-else", "some-password").status_code == 401
    assert sign_in(v6b, "yh-s2", demo.DEMO_PASSWORD).status_code == 429
    assert sign_in(https_client(app, "2001:db8:1:3::10"), "yh-s2", demo.DEMO_PASSWORD).status_code == 200


def test_parallel_guesses_are_counted_atomically(app: FastAPI, clock: FrozenClock) -> None:
    """Six guesses at once at one account from six addresses: one is checked (401), five wait (429), the
    counter says 1; six right passwords at once from one address all sign in."""
    n = 6
    barrier = threading.Barrier(n)
    statuses = [0] * n

    def guess(i: int) -> None:
        c = https_client(app, f"192.0.2.{i + 1}")
        barrier.wait()
        statuses[i] = sign_in(c, "yh-s1", f"guess-number-{i}").status_code

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [401] + [429] * (n - 1)
    with app.state.closer.runtime.db.session() as s:
        failures = s.execute(text("SELECT failures FROM login_throttle WHERE key = 'user:yh-s1'")).scalar()
    assert failures == 1

    # colleagues behind one address signing in at once are queued, not refused
    names = ["yh-s2", "yh-s3", "yh-centre", "admin", "yh-s4", "yh-s5"]
    barrier = threading.Barrier(n)

    def colleague(i: int) -> None:
        office = https_client(app, "192.0.2.200")
        barrier.wait()
        statuses[i] = sign_in(office, names[i], demo.DEMO_PASSWORD).status_code

    threads = [threading.Thread(target=colleague, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * n


@pytest.mark.usefixtures("real_argon2")  # it times sign-ins: the production cost
def test_unknown_and_known_accounts_answer_alike(
    app: FastAPI, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown user, disabled account and wrong password: the same status, code, message and headers,
    one argon2 check each and about the same time."""
    checks: list[str] = []
    real = staff_accounts.verify_password

    def counted(password_hash: str, password: str) -> bool:
        checks.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(staff_accounts, "verify_password", counted)
    with app.state.closer.runtime.db.session(write=True) as s:
        row = s.execute(select(Staff).where(col(Staff.username) == "yh-s3")).scalar_one()
        row.active = False
    cases = {
        "unknown": ("no-such-user", demo.DEMO_PASSWORD),
        "wrong": ("yh-s1", "wrong-password"),
        "disabled": ("yh-s3", demo.DEMO_PASSWORD),
    }
    answers: dict[str, Any] = {}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for round_ in range(3):
        for i, (kind, (username, password)) in enumerate(cases.items()):
            c = https_client(app, f"198.51.100.{round_ * 10 + i + 1}")
            checks.clear()
            start = time.perf_counter()
            r = sign_in(c, username, password)
            times[kind].append(time.perf_counter() - start)
            answers[kind] = (r.status_code, r.json(), r.headers.get("www-authenticate"))
            assert len(checks) == 1, kind
        clock.advance(timedelta(hours=2))  # every wait is over and forgotten
    assert answers["unknown"] == answers["wrong"] == answers["disabled"]
    assert answers["wrong"][0] == 401 and answers["wrong"][1]["error"]["code"] == "bad_credentials"
    # the fastest of three (noise only adds time): no path is a sleep or a hash cheaper than another
    fastest = [min(v) for v in times.values()]
    assert max(fastest) - min(fastest) < 0.15, times


def test_console_sign_in_is_throttled_too(app: FastAPI, client: TestClient, clock: FrozenClock) -> None:
    """The console's login form answers a sign-in inside the wait with 429 and Retry-After, no cookie."""
    assert console_sign_in(client, "yh-s1", "wrong-password").status_code == 401
    early = console_sign_in(client, "yh-s1", demo.DEMO_PASSWORD)
    assert early.status_code == 429 and early.headers["retry-after"] == "1"
    assert "gl_session" not in early.cookies
    clock.advance(timedelta(seconds=1))
    assert console_sign_in(client, "yh-s1", demo.DEMO_PASSWORD).status_code == 303


def test_tokens_are_revoked_by_disable_password_change_and_logout(
    app: FastAPI, client: TestClient, clock: FrozenClock, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disable (API and command), password change (API and `staff add`) and logout (API and console)
    raise the token version: older tokens are 401 token_revoked, and staff.tokens_revoked goes out."""
    admin = login(client, "admin")
    body = {"username": "root2", "password": "long-enough-pw", "role": "admin", "stations": []}
    assert client.post("/api/v1/staff", json=body, headers=admin).status_code == 200
    root2 = sign_in(client, "root2", "long-enough-pw").json()["access_token"]
    root2_auth = {"Authorization": f"Bearer {root2}"}
    assert client.get("/api/v1/staff", headers=root2_auth).status_code == 200
    assert client.post("/api/v1/staff/root2/disable", headers=admin).json()["token_version"] == 1
    r = client.get("/api/v1/staff", headers=root2_auth)
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_revoked"
    assert client.post("/api/v1/staff", json=body, headers=root2_auth).status_code == 401
    [event] = staff_events(app, "root2")
    assert event.type == "gridloop.staff.tokens_revoked.v1"
    assert (event.data["username"], event.data["token_version"], event.data["active"]) == ("root2", 1, False)

    # a password change: the old token dies, the answer carries a working one
    s1 = login(client, "yh-s1")
    new_pw = {"current_password": "not-my-password", "new_password": "a-brand-new-password"}
    wrong = client.post("/api/v1/auth/password", json=new_pw, headers=s1)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_password"
    clock.advance(timedelta(seconds=1))  # a wrong current password waits like a failed sign-in
    changed = client.post(
        "/api/v1/auth/password", json={**new_pw, "current_password": demo.DEMO_PASSWORD}, headers=s1
    )
    assert changed.status_code == 200, changed.text
    fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    r = client.get("/api/v1/queue", headers=s1)
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_revoked"
    assert client.get("/api/v1/queue", headers=fresh).status_code == 200
    assert sign_in(client, "yh-s1", "a-brand-new-password").status_code == 200

    # logout: every token of the account stops (this one and the one just signed in)
    out = client.post("/api/v1/auth/logout", headers=fresh)
    assert out.status_code == 200 and out.json() == {"username": "yh-s1", "token_version": 2}
    r = client.get("/api/v1/queue", headers=fresh)
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_revoked"
    assert [(e.data["token_version"], e.data["active"]) for e in staff_events(app, "yh-s1")] == [
        (1, True),
        (2, True),
    ]

    # the console's logout revokes the cookie's token: a copied cookie is dead too
    assert console_sign_in(client, "yh-s2", demo.DEMO_PASSWORD).status_code == 303
    cookie = client.cookies["gl_session"]
    page = client.get("/console/queue")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    r = client.get("/api/v1/queue", headers={"Authorization": f"Bearer {cookie}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_revoked"

    # the command line: `staff add` on an existing account (a password reset) and `staff disable`
    monkeypatch.setattr(closer_cli, "_database", lambda: Database(db_url, Base.metadata))
    s3, centre = login(client, "yh-s3"), login(client, "yh-centre")
    reset = argparse.Namespace(
        username="yh-s3", password="reset-password", role="staff", station=["yh-s3"], name=None
    )
    assert closer_cli.cmd_staff_add(reset) == 0
    assert client.get("/api/v1/queue", headers=s3).json()["error"]["code"] == "token_revoked"
    assert closer_cli.cmd_staff_disable(argparse.Namespace(username="yh-centre")) == 0
    assert client.get("/api/v1/queue", headers=centre).json()["error"]["code"] == "token_revoked"
    assert [e.data["active"] for e in staff_events(app, "yh-centre")] == [False]


def test_streams_end_when_the_token_is_revoked_or_expires(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    """An open queue stream re-checks its token every poll: a disabled account or an expired token
    ends it with a last `end` event."""
    app = make_app(db_url, tmp_path, stream_poll_seconds=0.05)
    try:
        client = TestClient(app, base_url="https://testserver")

        def listen(headers: dict[str, str], into: dict[str, str]) -> threading.Thread:
            def run() -> None:
                into["body"] = client.get("/api/v1/queue/stream", headers=headers).text

            t = threading.Thread(target=run, daemon=True)
            t.start()
            return t

        revoked: dict[str, str] = {}
        t = listen(login(client, "yh-s1"), revoked)
        time.sleep(0.5)
        assert t.is_alive()  # the stream is open while the token holds
        with app.state.closer.runtime.db.session(write=True) as s:
            staff_accounts.disable_staff(
                s, s.execute(select(Staff).where(col(Staff.username) == "yh-s1")).scalar_one()
            )
        t.join(15)
        assert not t.is_alive()
        assert revoked["body"].startswith("retry: 2000")
        assert revoked["body"].endswith('event: end\ndata: {"reason": "token_revoked"}\n\n')

        expired: dict[str, str] = {}
        t = listen(login(client, "yh-s2"), expired)
        time.sleep(0.5)
        assert t.is_alive()
        clock.advance(timedelta(hours=8, seconds=1))
        t.join(15)
        assert not t.is_alive()
        assert expired["body"].endswith('event: end\ndata: {"reason": "token_expired"}\n\n')
    finally:
        app.state.closer.runtime.db.dispose()


class TimelineReads:
    """Counts the SELECTs on the timeline table (a SQLAlchemy event listener on the engine)."""

    def __init__(self, app: FastAPI) -> None:
        self.engine = app.state.closer.runtime.db.engine
        self.count = 0
        event.listen(self.engine, "before_cursor_execute", self.note)

    def note(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        """One statement about to run."""
        if statement.lstrip().upper().startswith("SELECT") and "FROM timeline" in statement:
            self.count += 1

    def close(self) -> None:
        """Stop counting."""
        event.remove(self.engine, "before_cursor_execute", self.note)


async def until(check: Any, within: float = 10.0) -> None:
    """Wait until check() holds (fails the test after `within` seconds)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def never_disconnected() -> bool:
    """A client that stays."""
    return False


def listen(app: FastAPI, station: str | None, into: list[str]) -> asyncio.Task[None]:
    """Open one live queue stream of the app (as the route does) and collect its events."""
    ctx: Closer = app.state.closer
    poll = ctx.config.stream_poll_seconds

    async def run() -> None:
        async for chunk in stream.queue_events(
            ctx.runtime.db,
            ctx.poller,
            frozenset({station}) if station else None,
            None,
            poll,
            never_disconnected,
        ):
            into.append(chunk)

    return asyncio.create_task(run())


def got(chunks: list[str], case_id: str, action: str) -> bool:
    """Whether a stream sent the change `action` of a case."""
    return any(f'"case_id": "{case_id}", "action": "{action}"' in c for c in chunks if c.startswith("id: "))


def test_one_poller_reads_the_timeline_for_every_stream(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    """Five open streams: each reads the timeline twice to start (newest id, history); then the
    process's one poller reads it once per wake-up, not once per stream, hands each stream its
    station's changes, and stops reading when the last stream closes."""
    app = make_app(db_url, tmp_path, stream_poll_seconds=3600.0)  # no timed polls: only wake-ups
    ctx: Closer = app.state.closer
    reads = TimelineReads(app)
    streams = 5

    async def scenario() -> None:
        chunks: list[list[str]] = [[] for _ in range(streams)]
        stations = ["yh-s1"] * (streams - 1) + [None]  # four station streams, one supervisor's
        tasks = [listen(app, station, chunks[i]) for i, station in enumerate(stations)]
        await until(lambda: ctx.poller.streams == streams and reads.count == 2 * streams + 1)
        await asyncio.sleep(0.2)
        assert reads.count == 2 * streams + 1  # start-ups, and the poller's first read
        for n, station in enumerate(["yh-s1", "yh-s2", "yh-s1"], start=1):
            cid = await asyncio.to_thread(open_case, app, station)
            ctx.changed()  # what the consumer does after its commit
            shown = [i for i, s in enumerate(stations) if s in (None, station)]
            await until(lambda cid=cid, shown=shown: all(got(chunks[i], cid, "opened") for i in shown))
            await asyncio.sleep(0.2)
            assert reads.count == 2 * streams + 1 + n  # one read per change, not one per stream
            assert [got(c, cid, "opened") for c in chunks] == [i in shown for i in range(streams)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await until(lambda: not ctx.poller.running)
        before = reads.count
        ctx.changed()
        await asyncio.sleep(0.3)
        assert ctx.poller.streams == 0 and reads.count == before  # idle: nothing read

    try:
        asyncio.run(scenario())
    finally:
        reads.close()
        ctx.runtime.db.dispose()


def test_a_change_on_another_replica_reaches_this_ones_streams(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    """Two closers on one database: a sign-for taken through the second reaches the first's open
    streams through its poll (nothing in the first process was told)."""
    one = make_app(db_url, tmp_path / "one", stream_poll_seconds=0.05)
    two = make_app(db_url, tmp_path / "two", stream_poll_seconds=0.05)
    c2 = TestClient(two, base_url="https://testserver")
    cid = open_case(two)
    s1 = login(c2, "yh-s1")

    async def scenario() -> None:
        station: list[str] = []
        everything: list[str] = []
        tasks = [listen(one, "yh-s1", station), listen(one, None, everything)]
        await until(lambda: one.state.closer.poller.streams == 2)
        assert (await asyncio.to_thread(act, c2, s1, cid, "acknowledge")).status_code == 200
        await until(lambda: got(station, cid, "acknowledge") and got(everything, cid, "acknowledge"))
        assert not two.state.closer.poller.running  # the second closer has no stream open
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(scenario())
    finally:
        one.state.closer.runtime.db.dispose()
        two.state.closer.runtime.db.dispose()


def test_the_poller_looks_back_for_rows_that_commit_out_of_order(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    """On PostgreSQL a lower id can commit after a higher one: the poller reads back over its cursor
    and hands the late row out once; rows it handed out are not sent again."""
    app = make_app(db_url, tmp_path, stream_poll_seconds=3600.0)
    ctx: Closer = app.state.closer
    cid = open_case(app)

    def commit_timeline_row(row_id: int, action: str) -> None:
        with ctx.runtime.db.session(write=True) as s:
            s.execute(
                text(
                    "INSERT INTO timeline (id, case_id, at, action, status, actor, station_id, version)"
                    " VALUES (:i, :c, :t, :a, 'new', 'system', 'yh-s1', 1)"
                ),
                {"i": row_id, "c": cid, "t": MONDAY_9, "a": action},
            )

    async def scenario() -> None:
        chunks: list[str] = []
        task = listen(app, "yh-s1", chunks)
        await until(lambda: ctx.poller.running and any("event: hello" in c for c in chunks))
        with ctx.runtime.db.session() as s:
            newest = int(s.execute(text("SELECT max(id) FROM timeline")).scalar_one())
        await asyncio.to_thread(commit_timeline_row, newest + 2, "later")
        ctx.changed()
        await until(lambda: got(chunks, cid, "later"))
        await asyncio.to_thread(commit_timeline_row, newest + 1, "earlier")  # committed late
        ctx.changed()
        await until(lambda: got(chunks, cid, "earlier"))
        ctx.changed()
        await asyncio.sleep(0.2)
        changes = [c.split("\n")[0] for c in chunks if c.startswith("id: ")]
        assert changes == [f"id: {newest + 2}", f"id: {newest + 1}"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(scenario())
    finally:
        ctx.runtime.db.dispose()


def test_export_streams_in_batches_with_the_same_bytes(
    app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSV export reads a batch of rows per query (never the whole range at once); the bytes are
    what the one-piece export produced: BOM, header, one line per case, formulas neutralised."""
    ids = [open_case(app, submitted_at=MONDAY_9 + timedelta(minutes=i % 5)) for i in range(9)]
    with app.state.closer.runtime.db.session(write=True) as s:
        row = s.get(Case, ids[0])
        assert row is not None
        row.description = "=SUM(A1)"
    monkeypatch.setattr(queue, "EXPORT_BATCH", 4, raising=False)
    queries: list[Any] = []
    real = queue.export_statement

    def counted(*args: Any) -> Any:
        queries.append(args)
        return real(*args)

    monkeypatch.setattr(queue, "export_statement", counted)
    s1 = login(client, "yh-s1")
    r = client.get("/api/v1/cases/export.csv", params={"from": "2026-11-23", "to": "2026-11-23"}, headers=s1)
    assert r.status_code == 200
    assert len(queries) == 3  # 4 + 4 + 1 rows

    # the same bytes as before, written independently here
    with app.state.closer.runtime.db.session() as s:
        rows = s.execute(select(Case).order_by(col(Case.submitted_at), col(Case.case_id))).scalars().all()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(queue.EXPORT_COLUMNS)
    for c in rows:
        cells = []
        for name in queue.EXPORT_COLUMNS:
            v = getattr(c, name)
            if v is None:
                cells.append("")
            elif isinstance(v, datetime):
                cells.append(v.replace(tzinfo=v.tzinfo or UTC).astimezone(UTC).isoformat())
            else:
                text_ = str(v)
                cells.append("'" + text_ if text_[:1] in ("=", "+", "-", "@", "\t", "\r") else text_)
        writer.writerow(cells)
    assert r.content == ("\ufeff" + out.getvalue()).encode()
    assert len(r.text.splitlines()) == 1 + 9 and "'=SUM(A1)" in r.text


def test_after_photo_is_decoded_only_for_a_caller_who_may_act(
    app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another station's staff, a stale version or an action not allowed now: refused before the
    photo is decoded (404, 409, 409); the allowed upload is decoded once."""
    decoded: list[int] = []
    real = photostore.clean_photo

    def spy(data: bytes) -> Any:
        decoded.append(len(data))
        return real(data)

    monkeypatch.setattr(photostore, "clean_photo", spy)
    cid, fresh = open_case(app), open_case(app)
    s1, s2 = login(client, "yh-s1"), login(client, "yh-s2")
    act(client, s1, cid, "acknowledge")
    act(client, s1, cid, "dispatch", assignee="王师傅")

    def resolve(who: dict[str, str], case_id: str, version: int) -> Any:
        return client.post(
            f"/api/v1/cases/{case_id}/transitions",
            data={"action": "resolve", "version": str(version), "note": "已更换"},
            files={"photo": ("after.jpg", jpeg_with_gps(), "image/jpeg")},
            headers=who,
        )

    other = resolve(s2, cid, 3)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    stale = resolve(s1, cid, 2)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_version"
    early = resolve(s1, fresh, 1)
    assert early.status_code == 409 and early.json()["error"]["code"] == "transition_not_allowed"
    assert decoded == []
    assert resolve(s1, cid, 3).status_code == 200
    assert len(decoded) == 1


DEMO_NAMES = ["admin", "yh-s1", "yh-centre"]


def test_closer_refuses_to_start_with_demo_passwords(
    db_url: str, tmp_path: Path, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An active account with the demo password stops the start (a clear message) unless GRIDLOOP_DEV
    is set; with the passwords changed it starts."""
    monkeypatch.delenv("GRIDLOOP_DEV", raising=False)
    app = make_app(db_url, tmp_path)
    ctx: Closer = app.state.closer
    try:
        with pytest.raises(RuntimeError, match="demo password") as refused:
            with TestClient(app):
                pass
        assert "admin" in str(refused.value) and "GRIDLOOP_DEV=1" in str(refused.value)
        ctx.settings = ctx.settings.model_copy(update={"dev_mode": True})
        staff_accounts.refuse_demo_passwords(
            ctx.runtime.db, ctx.settings, DEMO_NAMES
        )  # the dev flag lets them run
        ctx.settings = ctx.settings.model_copy(update={"dev_mode": False})
        changed = hash_password("not-the-demo-password")  # one argon2 hash for every account
        with ctx.runtime.db.session(write=True) as s:
            for row in s.execute(select(Staff)).scalars():
                row.password_hash = changed
        staff_accounts.refuse_demo_passwords(ctx.runtime.db, ctx.settings, DEMO_NAMES)  # nothing to refuse
    finally:
        ctx.runtime.db.dispose()


def test_case_detail_shows_no_rider_secret(app: FastAPI, client: TestClient) -> None:
    """Staff see report ids and a six-character rider tag, never the rider's full pseudonym."""
    cid = open_case(app)
    with app.state.closer.runtime.db.session() as s:
        rider_ref = s.execute(
            text("SELECT rider_ref FROM case_report WHERE case_id = :c"), {"c": cid}
        ).scalar()
    detail = client.get(f"/api/v1/cases/{cid}", headers=login(client, "yh-s1"))
    assert detail.status_code == 200
    assert rider_ref not in detail.text and detail.json()["reports"][0]["rider"] == rider_ref[-6:]


def test_streets_of_accounts(
    app: FastAPI,
    client: TestClient,
    clock: FrozenClock,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The admin API and `gridloop staff add` take streets (an unknown one: a clear 422, exit 2); an
    admin manages its own streets' accounts only; a street change revokes the account's tokens; an
    old supervisor with neither streets nor stations gets the default street, with a warning."""
    yh, pp = open_case(app), open_case(app, station="pp-s1", grid_id="pp-g1")
    admin = login(client, "admin")
    body = {"username": "zhao.li", "password": "long-enough-pw", "role": "supervisor", "streets": ["nowhere"]}
    r = client.post("/api/v1/staff", json=body, headers=admin)
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "unknown_street",
        "message": "No such street: nowhere (streets: yinhang, pengpu).",
        "details": {"field": "streets"},
    }
    made = client.post("/api/v1/staff", json={**body, "streets": ["pengpu"]}, headers=admin)
    assert made.status_code == 200 and made.json()["streets"] == ["pengpu"]
    answer = sign_in(client, "zhao.li", "long-enough-pw").json()
    assert (answer["role"], answer["stations"], answer["streets"]) == ("supervisor", [], ["pengpu"])
    zhao = {"Authorization": f"Bearer {answer['access_token']}"}
    assert ids(client, zhao) == {pp}

    # a street change revokes: the old token is refused, a new one sees the new street
    assert (
        client.post("/api/v1/staff", json={**body, "streets": ["yinhang"]}, headers=admin).status_code == 200
    )
    assert client.get("/api/v1/queue", headers=zhao).json()["error"]["code"] == "token_revoked"
    zhao = {"Authorization": f"Bearer {sign_in(client, 'zhao.li', 'long-enough-pw').json()['access_token']}"}
    assert ids(client, zhao) == {yh}

    # an admin of 彭浦 manages 彭浦's accounts only; a city account is made on the command line
    pp_admin = {"username": "pp.admin", "password": "long-enough-pw", "role": "admin", "streets": ["pengpu"]}
    assert client.post("/api/v1/staff", json=pp_admin, headers=admin).status_code == 200
    ppa = {"Authorization": f"Bearer {sign_in(client, 'pp.admin', 'long-enough-pw').json()['access_token']}"}
    r = client.post(
        "/api/v1/staff", json={**body, "username": "wu.fang", "streets": ["yinhang"]}, headers=ppa
    )
    assert (r.status_code, r.json()["error"]["message"]) == (
        403,
        "An admin manages the accounts of its own streets only.",
    )
    r = client.post("/api/v1/staff", json={**body, "streets": ["pengpu"]}, headers=ppa)  # 殷行's zhao.li
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    assert client.post("/api/v1/staff/yh-s1/disable", headers=ppa).status_code == 404
    assert client.post("/api/v1/staff/yh-s1/unlock", headers=ppa).status_code == 404
    r = client.post(
        "/api/v1/staff", json={**pp_admin, "username": "town", "role": "city", "streets": []}, headers=ppa
    )
    assert r.status_code == 403
    names = [s["username"] for s in client.get("/api/v1/staff", headers=ppa).json()["staff"]]
    assert names == ["pp-centre", "pp-gas", *(f"pp-s{i}" for i in range(1, 10)), "pp.admin"]

    # an account from before streets: a supervisor with no station and no street
    with app.state.closer.runtime.db.session(write=True) as s:
        staff_accounts.add_staff(s, "old.sup", "long-enough-pw", "supervisor", [])
    caplog.set_level(logging.WARNING, logger="services.closer.context")
    old = sign_in(client, "old.sup", "long-enough-pw").json()
    assert old["streets"] == ["yinhang"]
    assert [r.getMessage() for r in caplog.records if r.name == "services.closer.context"] == [
        "staff old.sup (supervisor) has no street and no station: it sees the default street yinhang; "
        "give it one (`gridloop staff add old.sup --role supervisor --street <street>`)"
    ]
    assert ids(client, {"Authorization": f"Bearer {old['access_token']}"}) == {yh}

    # the command line: an unknown street is refused before anything is written
    monkeypatch.setattr(closer_cli, "_database", lambda: Database(db_url, Base.metadata))
    args = {
        "username": "sun.yu",
        "password": "long-enough-pw",
        "role": "supervisor",
        "station": None,
        "name": None,
    }
    assert closer_cli.cmd_staff_add(argparse.Namespace(**args, street=["nowhere"])) == 2
    assert capsys.readouterr().err == "error: unknown street: nowhere (streets: yinhang, pengpu)\n"
    assert sign_in(client, "sun.yu", "long-enough-pw").status_code == 401
    clock.advance(timedelta(seconds=1))  # the wait after the failed sign-in
    assert closer_cli.cmd_staff_add(argparse.Namespace(**args, street=["pengpu"])) == 0
    assert capsys.readouterr().out == "sun.yu: supervisor (no station) · pengpu\n"
    assert sign_in(client, "sun.yu", "long-enough-pw").json()["streets"] == ["pengpu"]
    city = {**args, "username": "town", "role": "city"}
    assert closer_cli.cmd_staff_add(argparse.Namespace(**city, street=None)) == 0
    assert capsys.readouterr().out == "town: city (no station) · every street\n"
    assert closer_cli.cmd_staff_list(argparse.Namespace()) == 0
    listed = {line.split()[0]: " ".join(line.split()[3:]) for line in capsys.readouterr().out.splitlines()}
    assert [listed[n] for n in ("town", "sun.yu", "old.sup", "zhao.li", "admin", "pp-s1")] == [
        "every street active",
        "pengpu active",
        "yinhang (the default street) active",
        "yinhang active",
        "yinhang,pengpu active",
        "pengpu active",
    ]


def test_console_shows_the_street_and_city_picks_one(app: FastAPI, client: TestClient) -> None:
    """The console names the signed-in account's street; a city account picks a street on the queue
    and the overview; 殷行's centre never sees 彭浦's case there."""
    yh, pp = open_case(app), open_case(app, station="pp-s1", grid_id="pp-g1")
    assert console_sign_in(client, "yh-centre", demo.DEMO_PASSWORD).status_code == 303
    page = client.get("/console/queue").text
    assert '<span class="street" id="my-street">殷行街道</span>' in page
    assert yh in page and pp not in page and 'id="filter-street"' not in page
    assert "彭浦" not in page.split('name="station"')[1].split("</select>")[0]  # its own stations to pick
    overview = client.get("/overview").text
    assert "殷行街道" in overview and "彭浦新村街道" not in overview

    assert console_sign_in(client, "city", demo.DEMO_PASSWORD).status_code == 303
    page = client.get("/console/queue").text
    assert '<span class="street" id="my-street">全部街道</span>' in page and 'id="filter-street"' in page
    assert yh in page and pp in page
    picked = client.get("/console/queue", params={"street": "pengpu"}).text
    assert pp in picked and yh not in picked
    assert "/api/v1/queue/stream?street=pengpu" in picked
    overview = client.get("/overview", params={"street": "pengpu"}).text
    assert (
        "<figcaption>彭浦新村街道</figcaption>" in overview
        and "<figcaption>殷行街道</figcaption>" not in overview
    )

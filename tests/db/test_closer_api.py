"""The closer's API in process, on SQLite and PostgreSQL: lifecycle, events, SLA, scheduler, security.

The app is the real one (`build()`), its database migrated with Alembic; Kafka is not needed here
because events are checked where they are written (the outbox). The end-to-end module runs the
same flows over a real broker and real processes.
"""

from __future__ import annotations

import io
import json
import threading
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
from sqlalchemy import select, text

from gridloop import demo, metrics, migrate
from gridloop.clock import FrozenClock, SystemClock, set_clock
from gridloop.consumer import Incoming, _Raw
from gridloop.errors import ApiError
from gridloop.photos import MAX_PHOTO_BYTES
from gridloop.settings import Settings
from schemas.envelope import CloudEvent
from schemas.events import Decision, Location, ReportFeedback, ReportRouted, make_event
from services.closer import actions, staff
from services.closer.app import build
from services.closer.cli import load_demo_staff
from services.closer.config import CloserConfig
from services.closer.context import Closer
from services.closer.models import Case, Escalation
from services.closer.scheduler import Scheduler

MONDAY_9 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai, a working Monday
SECRET = "test-signing-key-" + "x" * 32


@pytest.fixture(scope="module", autouse=True)
def one_hash_per_password() -> Iterator[None]:
    """Hash each password once for the module: argon2 is slow on purpose, and every test's app
    creates all the demo accounts (same password); logins still verify real argon2 hashes."""
    hashes: dict[str, str] = {}
    real = staff.hash_password

    def cached(password: str) -> str:
        if password not in hashes:
            hashes[password] = real(password)
        return hashes[password]

    patch = pytest.MonkeyPatch()
    patch.setattr(staff, "hash_password", cached)
    yield
    patch.undo()


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen at a working Monday morning, moved by the tests."""
    c = FrozenClock(MONDAY_9)
    set_clock(c)
    yield c
    set_clock(SystemClock())


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


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[FastAPI]:
    """The closer on SQLite and on PostgreSQL."""
    a = make_app(db_url, tmp_path)
    yield a
    a.state.closer.runtime.db.dispose()


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
) -> str:
    """Feed the intake a router decision, as the consumer would; returns the case id."""
    case_id = case_id or "C" + uuid.uuid4().hex[:10].upper()
    data = ReportRouted(
        report_id="R" + uuid.uuid4().hex[:10],
        case_id=case_id,
        decision=decision,
        category=category,
        station_id=station,
        grid_id="yh-g1",
        location=Location(lat=31.335, lon=121.515),
        place_name="开鲁新村一村北门",
        description="井盖破损 <script>alert(1)</script>",
        rider_ref="rider-" + uuid.uuid4().hex[:6],
        submitted_at=submitted_at,
        photo_ids=["p1"],
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
        jwt.encode(claims, None, algorithm="none")
        if "none" in jwt.algorithms.get_default_algorithms()
        else forged
    )
    assert (
        client.get(f"/api/v1/cases/{cid}", headers={"Authorization": f"Bearer {none_alg}"}).status_code == 401
    )

    clock.advance(timedelta(hours=8, seconds=1))
    r = client.get(f"/api/v1/cases/{cid}", headers=s1)
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"


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
    assert client.get("/api/v1/queue", headers=li_auth).status_code == 401
    names = [s["username"] for s in client.get("/api/v1/staff", headers=admin).json()["staff"]]
    assert "li.wei" in names and "yh-s1" in names


def test_console_cookie_and_csrf(app: FastAPI, client: TestClient) -> None:
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
        assert (
            not list((tmp_path / "closer-photos").glob("*"))
            if (tmp_path / "closer-photos").exists()
            else True
        )
        assert client.get(f"/api/v1/cases/{cid}", headers=s1).json()["status"] == "dispatched"
    finally:
        app.state.closer.runtime.db.dispose()


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

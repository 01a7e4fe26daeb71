"""The notifier's deliveries scoped by street (gridloop/scope.py), on SQLite and PostgreSQL: who lists
which rows, who may retry which, and migration 0002 filling the scope of rows written before it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from sqlmodel import select

from gridloop import migrate
from gridloop.clock import FrozenClock
from gridloop.db import Database
from gridloop.settings import Settings
from schemas.cases import CaseStatus
from schemas.envelope import CloudEvent
from schemas.events import TopicOpened, make_event
from services.closer.auth import issue_token
from services.notifier.app import build
from services.notifier.config import NotifierConfig
from services.notifier.models import Base, Delivery
from tests.db.test_notifier_db import clock  # noqa: F401  (the module's frozen clock fixture)
from tests.support.notifier import T0, Fed, opened, transitioned

SECRET = "notifier-scope-test-secret-0123456789abcdef"
SINK = "json://127.0.0.1:9/hook"


def opened_in_pengpu(case_id: str) -> CloudEvent:
    """`case.opened` of an urgent case of 彭浦's first station."""
    return opened(case_id, station_id="pp-s1", street_id="pengpu", grid_id="pp-g1")


def upgraded_scopes(db_url: str) -> list[tuple[str, str, str | None, str | None]]:
    """Migrate to the head, then each delivery's case, target, station and street, in id order."""
    migrate.upgrade("notifier", db_url)
    db = Database(db_url, Base.metadata)
    try:
        with db.session() as session:
            return [
                (d.case_id, d.target, d.station_id, d.street_id)
                for d in session.exec(select(Delivery).order_by(Delivery.id))  # type: ignore[arg-type]
            ]
    finally:
        db.dispose()


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[FastAPI]:  # noqa: F811
    """The notifier's app on a migrated database (no lifespan: no broker, no sender loop)."""
    migrate.upgrade("notifier", db_url)
    settings = Settings(
        var_dir=tmp_path,
        notifier_database_url=db_url,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        jwt_secret=SECRET,
    )
    built = build(settings, NotifierConfig(fallback_url=SINK, hold_seconds=0, max_attempts=1))
    yield built
    built.state.notifier.runtime.db.dispose()


def failed_deliveries(app: FastAPI) -> dict[str, list[int]]:
    """Three urgent cases of 殷行 (yh-s1), two of 彭浦 (pp-s1), a 彭浦 topic (its centre) and a row of
    no station (a literal URL's delivery from before migration 0002), all failed; their ids by street."""
    parts = app.state.notifier
    consumer = Fed(parts.runtime.db, parts.config)
    consumer.feed(*[opened(f"Y-{i}") for i in range(3)], *[opened_in_pengpu(f"P-{i}") for i in range(2)])
    topic = TopicOpened(
        topic_id="T-pp",
        street_id="pengpu",
        centre_station_id="pp-centre",
        at=T0,
        category="shared_bikes",
        title="地铁口单车堆积",
        body="街区治理委员会",
        case_ids=["P-0", "P-1", "P-2"],
        version=1,
    )
    consumer.feed(make_event("topic.opened", topic, source="closer", subject="T-pp", time=T0))
    with parts.runtime.db.session(write=True) as session:
        (model,) = session.exec(select(Delivery).where(Delivery.case_id == "Y-0"))
        stray = model.model_dump(exclude={"id", "station_id", "street_id"})
        session.add(Delivery(**{**stray, "event_id": "e-stray", "case_id": "X-1", "target": "url"}))
    parts.sender.send = lambda url, title, body: (False, "HTTP 503 from the robot")
    assert parts.sender.tick().failed == 7
    by_street: dict[str, list[int]] = {"yinhang": [], "pengpu": [], "none": []}
    with parts.runtime.db.session() as session:
        for d in session.exec(select(Delivery).order_by(Delivery.id)):  # type: ignore[arg-type]
            assert d.id is not None and d.status == "failed"
            by_street[d.street_id or "none"].append(d.id)
    return by_street


def bearer(username: str, role: str, stations: list[str], streets: list[str]) -> dict[str, str]:
    """A staff bearer token as the closer issues it (its `streets` claim decides the scope)."""
    return {"Authorization": f"Bearer {issue_token(username, role, stations, SECRET, 3600, 0, streets)}"}  # type: ignore[arg-type]


YH_CENTRE = bearer("yh-centre", "supervisor", ["yh-centre"], ["yinhang"])
PP_CENTRE = bearer("pp-centre", "supervisor", ["pp-centre"], ["pengpu"])
PP_ADMIN = bearer("pp-admin", "admin", [], ["pengpu"])
CITY = bearer("city", "city", [], [])


def listed(client: TestClient, headers: dict[str, str]) -> list[tuple[int, str | None, str | None]]:
    """(id, station, street) of the failed list the caller gets, newest first."""
    r = client.get("/api/v1/deliveries", headers=headers)
    assert r.status_code == 200, r.text
    return [(d["id"], d["station_id"], d["street_id"]) for d in r.json()["items"]]


def test_each_street_lists_only_its_own_deliveries(app: FastAPI) -> None:
    """彭浦's supervisor and admin see none of 殷行's rows, only its two cases' and its topic's; 殷行's centre
    exactly its three; city (and an admin of every street) all seven, the row of no station too; the
    limit counts after the filter."""
    ids = failed_deliveries(app)
    assert [len(ids[s]) for s in ("yinhang", "pengpu", "none")] == [3, 3, 1]
    client = TestClient(app)
    yh = [(i, "yh-s1", "yinhang") for i in reversed(ids["yinhang"])]
    pp_cases, pp_topic = ids["pengpu"][:2], ids["pengpu"][2]
    pp = [(pp_topic, "pp-centre", "pengpu"), *[(i, "pp-s1", "pengpu") for i in reversed(pp_cases)]]
    assert listed(client, YH_CENTRE) == yh
    first = client.get("/api/v1/deliveries", headers=YH_CENTRE).json()["items"][0]
    # times with their offset on both engines (SQLite hands them back naive: a fuzz finding)
    assert (first["event_time"], first["created_at"]) == ("2026-11-24T02:00:00Z", "2026-11-24T02:01:00Z")
    assert listed(client, PP_CENTRE) == pp
    assert listed(client, PP_ADMIN) == pp
    assert listed(client, CITY) == sorted([*yh, *pp, (ids["none"][0], None, None)], reverse=True)
    one = client.get("/api/v1/deliveries?limit=1", headers=PP_CENTRE).json()["items"]
    assert [d["id"] for d in one] == [pp_topic]  # the newest of its own, not the newest row (the stray)
    every_street = bearer("admin", "admin", [], ["yinhang", "pengpu"])
    assert listed(client, every_street) == listed(client, CITY)
    streetless = bearer("old-admin", "admin", [], [])  # a token from before streets: sees nothing
    assert listed(client, streetless) == []


def test_an_admin_retries_only_its_streets_deliveries(app: FastAPI) -> None:
    """彭浦's admin retrying 殷行's row or the row of no station gets 404 not_found (never 409), and the
    rows stay failed; its own row goes back to pending; an admin of every street may retry the row of no
    station (a city account sees it but retries nothing: retrying is for admins)."""
    ids = failed_deliveries(app)
    client = TestClient(app)
    for other in (ids["yinhang"][0], ids["none"][0]):
        r = client.post(f"/api/v1/deliveries/{other}/retry", headers=PP_ADMIN)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    own = client.post(f"/api/v1/deliveries/{ids['pengpu'][0]}/retry", headers=PP_ADMIN)
    assert (own.status_code, own.json()["status"]) == (200, "pending")
    again = client.post(f"/api/v1/deliveries/{ids['pengpu'][0]}/retry", headers=PP_ADMIN)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "not_failed")
    past_bigint = client.post(f"/api/v1/deliveries/{2**63}/retry", headers=PP_ADMIN)  # a fuzz finding: 500
    assert (past_bigint.status_code, past_bigint.json()["error"]["code"]) == (422, "invalid")
    everywhere = bearer("admin", "admin", [], ["yinhang", "pengpu"])
    assert client.post(f"/api/v1/deliveries/{ids['none'][0]}/retry", headers=everywhere).status_code == 200
    with app.state.notifier.runtime.db.session() as session:
        statuses = {d.id: d.status for d in session.exec(select(Delivery))}
    assert sorted(i for i, s in statuses.items() if s == "pending") == [ids["pengpu"][0], ids["none"][0]]


def test_migration_0002_fills_the_scope_of_existing_rows(db_url: str) -> None:
    """Rows written at 0001 get their case's station and street from case_info, a topic's row its
    centre from its target; a case the notifier never saw, or saw with no station yet, stays NULL;
    downgrade drops the columns and their index, keeping the rows."""
    migrate.upgrade("notifier", db_url, "0001")
    db = Database(db_url, Base.metadata)
    try:
        with db.session(write=True) as session:
            for case_id, station, street in (("C-1", "yh-s1", "yinhang"), ("C-2", "", None)):
                session.execute(
                    text(
                        "INSERT INTO case_info (case_id, category, station_id, street_id, priority, clock,"
                        " status, common_issue, version) VALUES (:c, 'manhole_cover', :s, :st, 'urgent',"
                        " 'working', 'new', :f, 1)"
                    ),
                    {"c": case_id, "s": station, "st": street, "f": False},
                )
            for n, (event_type, case_id, target) in enumerate(
                [
                    ("case.opened", "C-1", "station:yh-s1"),
                    ("case.escalated", "C-1", "centre:yh-centre"),
                    ("case.escalated", "C-2", "station:yh-s1"),
                    ("case.opened", "C-3", "station:pp-s1"),
                    ("topic.opened", "T-1", "centre:pp-centre"),
                    ("topic.closed", "T-1", "url"),
                ]
            ):
                session.execute(
                    text(
                        "INSERT INTO delivery (event_id, event_type, case_id, rule_id, channel,"
                        " channel_kind, target, title, body, link, event_time, created_at,"
                        " next_attempt_at, status, attempts) VALUES (:e, :t, :c, 'r', :ch, 'json', :tg,"
                        " 't', 'b', 'l', :at, :at, :at, 'failed', 1)"
                    ),
                    {"e": f"e-{n}", "t": event_type, "c": case_id, "ch": SINK, "tg": target, "at": T0},
                )
    finally:
        db.dispose()
    found = upgraded_scopes(db_url)
    expected = [
        ("C-1", "station:yh-s1", "yh-s1", "yinhang"),
        ("C-1", "centre:yh-centre", "yh-s1", "yinhang"),
        ("C-2", "station:yh-s1", None, None),
        ("C-3", "station:pp-s1", None, None),
        ("T-1", "centre:pp-centre", "pp-centre", None),
        ("T-1", "url", None, None),
    ]
    assert found == expected
    # and back: 0001's table again, the rows kept; up again fills them the same way
    db = Database(db_url, Base.metadata)
    try:
        cfg = migrate.alembic_config("notifier", db_url)
        with db.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0001")
        columns = {c["name"] for c in inspect(db.engine).get_columns("delivery")}
        indexes = {i["name"] for i in inspect(db.engine).get_indexes("delivery")}
        assert "station_id" not in columns and "street_id" not in columns
        assert "ix_delivery_station_status" not in indexes
    finally:
        db.dispose()
    again = upgraded_scopes(db_url)
    assert again == expected


def test_a_case_first_seen_by_a_later_event_takes_its_stations_street(app: FastAPI) -> None:
    """An escalation of a case whose case.opened the notifier never got (it names the station, not the
    street): the delivery's street is the station's, so 殷行 lists it and 彭浦 does not."""
    parts = app.state.notifier
    Fed(parts.runtime.db, parts.config).feed(
        transitioned("escalated", "Y-late", CaseStatus.NEW, deadline="ack", reason="ack")
    )
    with parts.runtime.db.session() as session:
        made = [(d.case_id, d.target, d.station_id, d.street_id) for d in session.exec(select(Delivery))]
    assert made == [("Y-late", "station:yh-s1", "yh-s1", "yinhang")]
    client = TestClient(app)
    pending = "/api/v1/deliveries?status=pending"
    assert [d["case_id"] for d in client.get(pending, headers=YH_CENTRE).json()["items"]] == ["Y-late"]
    assert client.get(pending, headers=PP_CENTRE).json()["items"] == []


def test_a_case_moved_to_another_street_is_that_streets(app: FastAPI) -> None:
    """A case opened at 殷行's yh-s1, then transferred to 彭浦's pp-s1, then returned: the return goes to
    彭浦's centre (not 殷行's, which no longer has the case), and the delivery is 彭浦's to list."""
    parts = app.state.notifier
    consumer = Fed(parts.runtime.db, parts.config)
    consumer.feed(opened("M-1", priority="normal"))
    consumer.feed(
        transitioned("transferred", "M-1", CaseStatus.NEW, station_id="pp-s1", from_station="yh-s1"),
        transitioned("returned", "M-1", CaseStatus.RETURNED, station_id="pp-s1"),
    )
    with parts.runtime.db.session() as session:
        made = [(d.event_type, d.target, d.station_id, d.street_id) for d in session.exec(select(Delivery))]
    assert made == [("case.returned", "centre:pp-centre", "pp-s1", "pengpu")]
    client = TestClient(app)
    pending = "/api/v1/deliveries?status=pending"
    assert [d["case_id"] for d in client.get(pending, headers=PP_CENTRE).json()["items"]] == ["M-1"]
    assert client.get(pending, headers=YH_CENTRE).json()["items"] == []

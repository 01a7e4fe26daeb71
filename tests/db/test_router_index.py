"""The router's case index on a real database (SQLite and PostgreSQL), through the real consumer.

Merging, common issues, redelivery, `cases.events` upkeep, the close/merge race, and the race-free
guarantee when two router replicas decide concurrently from one database.
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlmodel import select as orm_select

from gridloop import metrics, migrate
from gridloop.db import Database
from gridloop.rawsql import Raw
from schemas.envelope import CloudEvent
from schemas.events import CaseTransitioned, make_event
from schemas.reference import Place
from services.router import index
from services.router.areas import lock_key
from services.router.decisions import Plan
from services.router.index import CaseRow
from services.router.models import PLUMBING, Base, CaseRider, OpenCase, RouteDecision
from services.router.routing import Assessment, distance_m
from tests.support.databases import new_pg_database
from tests.support.router import MANHOLE, PLACES, T0, J, Router, submitted


@pytest.fixture
def router(db_url: str) -> Iterator[Router]:
    """A migrated router database (SQLite, then PostgreSQL) and one replica on it."""
    migrate.upgrade("router", db_url)
    r = Router(db_url)
    yield r
    r.close()


def transition(
    case_id: str, action: str, status: str, version: int, station: str, reports: list[str]
) -> CloudEvent:
    """A closer `case.<action>` event."""
    data = CaseTransitioned(
        case_id=case_id,
        action=action,
        status=status,
        station_id=station,
        version=version,
        at=T0,
        report_ids=reports,
    )
    name = {"close": "case.closed", "reject": "case.rejected", "transfer": "case.transferred"}[action]
    return make_event(name, data, source="closer", subject=case_id, time=T0)


def decisions(db: Database) -> dict[str, dict[str, object]]:
    """Every routed event's data by report id, as stored with the decision."""
    with db.session() as s:
        rows = s.exec(orm_select(RouteDecision))
        return {r.report_id: json.loads(r.envelope)["data"] for r in rows}


def outbox_routed(db: Database) -> list[tuple[str, str]]:
    """(event id, key) of every `reports.routed` outbox row, in order."""
    ob = PLUMBING.outbox
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(ob.c.event_id, ob.c.key).where(ob.c.topic == "reports.routed").order_by(ob.c.id)
        )
        return [(r.event_id, r.key) for r in rows]


# --- merging and common issues ---------------------------------------------------------------


def test_three_riders_at_one_code_make_one_common_issue(router: Router) -> None:
    """Three riders scan the same manhole's code: one case, three riders, 共性问题, priority kept urgent."""
    router.feed([submitted("r1", "rider-a", place=MANHOLE)])
    router.feed([submitted("r2", "rider-b", place=MANHOLE, at=T0 + timedelta(minutes=5))])
    router.feed([submitted("r3", "rider-b", place=MANHOLE, at=T0 + timedelta(minutes=6))])  # same rider again
    router.feed([submitted("r4", "rider-c", place=MANHOLE, at=T0 + timedelta(minutes=9))])
    d = decisions(router.db)
    assert [d[r]["decision"] for r in ("r1", "r2", "r3", "r4")] == ["open", "merge", "merge", "merge"]
    assert len({d[r]["case_id"] for r in d}) == 1
    assert [d[r]["distinct_riders"] for r in ("r1", "r2", "r3", "r4")] == [1, 2, 2, 3]
    assert [d[r]["common_issue"] for r in ("r1", "r2", "r3", "r4")] == [False, False, False, True]
    assert "共性问题" in str(d["r4"]["reason"])
    assert d["r4"]["station_id"] == "yh-s1"
    with router.db.session() as s:
        case = s.get(OpenCase, d["r1"]["case_id"])
        assert case is not None and case.common_issue and case.open


def test_common_issue_raises_priority(router: Router) -> None:
    """Sanitation is normal; the third distinct rider makes it a common issue at high priority."""
    place = PLACES[3]
    for i, rider in enumerate(("a", "b", "c")):
        router.feed(
            [submitted(f"s{i}", rider, place=place, category="sanitation", at=T0 + timedelta(hours=i))]
        )
    d = decisions(router.db)
    assert [d[f"s{i}"]["priority"] for i in range(3)] == ["normal", "normal", "high"]


def test_gps_outside_every_grid_goes_to_triage_and_never_merges(router: Router) -> None:
    """A GPS report outside the street is triaged at the centre; a second one there is its own case."""
    router.feed([submitted("t1", "a", lat=31.36, lon=121.52)])
    router.feed([submitted("t2", "b", lat=31.36, lon=121.52)])
    d = decisions(router.db)
    assert d["t1"]["decision"] == d["t2"]["decision"] == "triage"
    assert d["t1"]["station_id"] == "yh-centre"
    assert d["t1"]["case_id"] != d["t2"]["case_id"]
    assert "outside every grid" not in str(d["t1"]["reason"])  # the event's reason speaks Chinese
    assert "不在任何网格内" in str(d["t1"]["reason"])


def test_redelivery_gives_the_same_answer(router: Router) -> None:
    """The same event again, or the same report under a new event id: no second decision, same event."""
    first = submitted("r1", "a", place=MANHOLE)
    router.feed([first])
    router.feed([first])  # redelivered: skipped by the ledger, its stored decision re-published
    again = submitted("r1", "a", place=MANHOLE)  # re-driven under another event id
    assert again.id != first.id
    router.feed([again])
    assert len(decisions(router.db)) == 1
    rows = outbox_routed(router.db)
    assert len(rows) == 3 and len({event_id for event_id, _ in rows}) == 1
    with router.db.session() as s:
        assert s.execute(select(func.count()).select_from(OpenCase)).scalar_one() == 1


def test_plus_one_into_a_far_case_of_another_category_does_not_merge(router: Router) -> None:
    """Issue 12's repro: a 殷行 manhole report '+1'-ing a 彭浦 fire-lane case 7 km away opens its own
    case; a '+1' on the manhole case at the same place is honoured."""
    router.feed([submitted("f1", "a", lat=31.3108, lon=121.4400, category="fire_lane_blocked")])
    far_case = _case_of(router, "f1")
    assert decisions(router.db)["f1"]["station_id"] != "yh-s1"
    assert distance_m(31.3108, 121.4400, MANHOLE.lat, MANHOLE.lon) > 7000
    router.feed(
        [submitted("m1", "b", place=MANHOLE, at=T0 + timedelta(minutes=1), plus_one_case_id=far_case)]
    )
    d = decisions(router.db)
    assert (d["m1"]["decision"], d["m1"]["station_id"]) == ("open", "yh-s1")
    assert d["m1"]["case_id"] != far_case
    router.feed(
        [
            submitted(
                "m2", "c", place=MANHOLE, at=T0 + timedelta(minutes=2), plus_one_case_id=d["m1"]["case_id"]
            )
        ]
    )
    d = decisions(router.db)
    assert (d["m2"]["decision"], d["m2"]["case_id"]) == ("merge", d["m1"]["case_id"])
    with router.db.session() as s:
        assert s.execute(select(func.count()).select_from(OpenCase)).scalar_one() == 2


# --- cases.events -------------------------------------------------------------------------------


def _case_of(router: Router, report_id: str) -> str:
    return str(decisions(router.db)[report_id]["case_id"])


def test_closed_case_leaves_the_index_and_the_next_report_is_recurring(router: Router) -> None:
    """After case.closed a new report opens a new case, marked recurring (same place within 30 days)."""
    place = PLACES[5]
    router.feed([submitted("a1", "a", place=place, category="sanitation")])
    case = _case_of(router, "a1")
    router.feed([transition(case, "close", "closed", 5, "yh-s1", ["a1"])], "cases.events")
    router.feed([submitted("a2", "b", place=place, category="sanitation", at=T0 + timedelta(days=3))])
    d = decisions(router.db)
    assert d["a2"]["decision"] == "open" and d["a2"]["case_id"] != case
    assert d["a2"]["priority"] == "high"  # normal + recurring hazard
    assert "30天内" in str(d["a2"]["reason"])


def test_rejected_case_leaves_and_is_not_a_recurrence(router: Router) -> None:
    """A rejected case (invalid) takes no merges and does not count as a recurring hazard."""
    place = PLACES[6]
    router.feed([submitted("b1", "a", place=place, category="sanitation")])
    router.feed(
        [transition(_case_of(router, "b1"), "reject", "rejected", 2, "yh-s1", ["b1"])], "cases.events"
    )
    router.feed([submitted("b2", "b", place=place, category="sanitation", at=T0 + timedelta(hours=1))])
    d = decisions(router.db)
    assert d["b2"]["decision"] == "open" and d["b2"]["priority"] == "normal"


def test_transfer_moves_the_case_and_stale_events_are_ignored(router: Router) -> None:
    """A transfer moves the case (later merges follow it); an older event after it changes nothing."""
    router.feed([submitted("c1", "a", place=MANHOLE)])
    case = _case_of(router, "c1")
    router.feed([transition(case, "transfer", "new", 3, "yh-s2", ["c1"])], "cases.events")
    router.feed([transition(case, "close", "closed", 2, "yh-s1", ["c1"])], "cases.events")  # stale
    router.feed([submitted("c2", "b", place=MANHOLE, at=T0 + timedelta(minutes=1))])
    d = decisions(router.db)
    assert d["c2"]["case_id"] == case and d["c2"]["station_id"] == "yh-s2"


def test_triage_case_sent_to_a_station_joins_the_index(router: Router) -> None:
    """A supervisor triages a case to a station: later reports nearby merge into it."""
    router.feed([submitted("d1", "a", lat=31.36, lon=121.52)])  # outside: triage
    case = _case_of(router, "d1")
    router.feed([submitted("d2", "b", lat=31.36, lon=121.52)])
    assert _case_of(router, "d2") != case
    router.feed([transition(case, "transfer", "new", 2, "yh-s2", ["d1"])], "cases.events")
    with router.db.session() as s:
        row = s.get(OpenCase, case)
        assert row is not None and row.open and not row.triage and row.station_id == "yh-s2"
    # outside every grid, a report is still triaged; it is the index that changed (explain shows it)


def test_late_merge_into_a_closed_case_is_counted(router: Router) -> None:
    """The closer closed the case before a merged report reached it: the router counts the late merge."""
    router.feed([submitted("e1", "a", place=MANHOLE)])
    case = _case_of(router, "e1")
    router.feed([submitted("e2", "b", place=MANHOLE, at=T0 + timedelta(minutes=1))])  # merged, in flight
    before = metrics.route_late_merges._value.get()
    router.feed([transition(case, "close", "closed", 4, "yh-s1", ["e1"])], "cases.events")
    assert metrics.route_late_merges._value.get() == before + 1
    with router.db.session() as s:
        row = s.get(OpenCase, case)
        assert row is not None and row.late_reports == 1 and not row.open
        assert row.status == "closed" and row.version == 4  # the state as its value, on either database
    router.feed([submitted("e3", "c", place=MANHOLE, at=T0 + timedelta(minutes=2))])
    assert _case_of(router, "e3") != case  # the decision of e2 stands; e3 opens a new case


# --- replicas: no in-memory state, race-free -------------------------------------------------


def test_two_replicas_alternating_agree_with_one(db_url: str) -> None:
    """Reports split between two replicas in any interleaving group exactly as with one replica."""
    migrate.upgrade("router", db_url)
    a, b = Router(db_url), Router(db_url)
    try:
        for i in range(12):
            place = PLACES[i % 3]
            (a if i % 2 else b).feed(
                [submitted(f"x{i}", f"rider{i % 4}", place=place, at=T0 + timedelta(minutes=i))]
            )
        groups: dict[object, set[str]] = {}
        for report_id, data in decisions(a.db).items():
            groups.setdefault(data["case_id"], set()).add(report_id)
        assert sorted(map(sorted, groups.values())) == sorted(
            [sorted(f"x{i}" for i in range(12) if i % 3 == k) for k in range(3)]
        )
    finally:
        a.close()
        b.close()


def test_a_replica_waits_for_another_deciding_the_same_place(db_url: str) -> None:
    """While replica A holds a decision for a place uncommitted, replica B's report there waits for it
    and merges into A's case: the routing lock, taken as each batch begins, keeps them from both opening
    one (on SQLite the write transaction alone does)."""
    migrate.upgrade("router", db_url)
    a, b = Router(db_url), Router(db_url)
    decided, release = threading.Event(), threading.Event()
    route = a.logic.on_submitted

    def slow(session: object, item: object) -> None:
        route(session, item)  # type: ignore[arg-type]
        decided.set()
        release.wait(timeout=30)  # A's transaction stays open, its case not yet visible to others

    a.reports.handlers = {"report.submitted": slow}
    errors: list[BaseException] = []

    def feed(replica: Router, event: CloudEvent) -> None:
        try:
            replica.feed([event])
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=feed, args=(a, submitted("w1", "rider-a", place=MANHOLE)))
    # by GPS, a few metres off: nothing but the lock orders the two (no code, so no shared place row)
    near = submitted(
        "w2", "rider-b", lat=MANHOLE.lat + 0.00003, lon=MANHOLE.lon, at=T0 + timedelta(minutes=1)
    )
    second = threading.Thread(target=feed, args=(b, near))
    try:
        first.start()
        assert decided.wait(timeout=30)
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive(), "B decided while A's decision was still open"
        release.set()
        first.join(timeout=30)
        second.join(timeout=30)
        assert not errors, errors
        d = decisions(a.db)
        assert d["w1"]["case_id"] == d["w2"]["case_id"]
        assert (d["w1"]["decision"], d["w2"]["decision"]) == ("open", "merge")
    finally:
        release.set()
        a.close()
        b.close()


def test_concurrent_replicas_never_double_a_case(db_url: str) -> None:
    """Two replicas route one cluster's reports at the same time (different partitions): one case each."""
    migrate.upgrade("router", db_url)
    replicas = [Router(db_url), Router(db_url)]
    clusters = PLACES[:10]
    work: list[list[CloudEvent]] = [[], []]
    for k, place in enumerate(clusters):
        for n in range(4):  # each cluster's reports are spread over both replicas
            work[n % 2].append(submitted(f"p{k}-{n}", f"rider{n}", place=place, at=T0 + timedelta(seconds=n)))
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(replica: Router, events: list[CloudEvent]) -> None:
        try:
            barrier.wait()
            for i in range(0, len(events), 2):
                replica.feed(events[i : i + 2])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r, w)) for r, w in zip(replicas, work, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not errors, errors
        d = decisions(replicas[0].db)
        assert len(d) == 40
        for k in range(10):
            cases = {d[f"p{k}-{n}"]["case_id"] for n in range(4)}
            assert len(cases) == 1, f"cluster {k} split into {cases}"
            assert sorted(str(d[f"p{k}-{n}"]["decision"]) for n in range(4)) == [
                "merge",
                "merge",
                "merge",
                "open",
            ]
        with replicas[0].db.session() as s:
            assert s.execute(select(func.count()).select_from(OpenCase)).scalar_one() == 10
            assert s.execute(select(func.count()).select_from(CaseRider)).scalar_one() == 40
            assert all(c.common_issue for c in s.exec(orm_select(OpenCase)))
    finally:
        for r in replicas:
            r.close()


# --- PostgreSQL: one lock per merge area, so replicas deciding apart run side by side ---------

FAR = next(p for p in PLACES if p.grid_id == "yh-g3")
# either side of the yh-g1 | yh-g2 border, 38 m apart: within safety_hazard's 50 m radius
BORDER_G1 = (31.336, 121.5186)
BORDER_G2 = (31.336, 121.5190)
_WAITING = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
    "AND classid = :cls AND objid = :key AND objsubid = 2"
)


@pytest.fixture
def pg_url(pg_server_url: str) -> str:
    """A migrated router database on PostgreSQL."""
    url = new_pg_database(pg_server_url)
    migrate.upgrade("router", url)
    return url


def _waiting(db: Database, area: str) -> int:
    """How many transactions wait for an area's routing lock (pg_locks shows the keys unsigned)."""
    params = {"cls": index.ROUTING_LOCK_CLASS, "key": lock_key(area) & 0xFFFFFFFF}
    with db.engine.connect() as conn:
        return int(conn.execute(text(_WAITING), params).scalar_one())


def _until_waiting(db: Database, area: str, count: int) -> None:
    """Until exactly `count` transactions wait for the area's lock (at most 30 s)."""
    deadline = time.monotonic() + 30
    while _waiting(db, area) != count:
        assert time.monotonic() < deadline, f"{_waiting(db, area)} waiting for {area}, not {count}"
        time.sleep(0.02)


def _feeding(replica: Router, event: CloudEvent, errors: list[BaseException]) -> threading.Thread:
    """A started thread that feeds one event to a replica as its own batch."""

    def feed() -> None:
        try:
            replica.feed([event])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=feed)
    thread.start()
    return thread


@contextmanager
def _holding(db: Database, *areas: str) -> Iterator[None]:
    """Hold the routing locks of these areas in a transaction of their own, as a replica would."""
    with db.transaction(write=True) as tx:
        tx.info["after_commit"] = []  # its own wait (none) is no replica's: never observed
        index.lock_areas(tx, areas)
        yield


@pytest.mark.postgres
def test_replicas_deciding_different_grids_run_side_by_side(pg_url: str) -> None:
    """While replica A holds a decision in yh-g1 uncommitted, replica B decides a report in yh-g3 to the
    end, and replica C's report next to A's waits for yh-g1 until A commits, then merges into A's case."""
    a, b, c = Router(pg_url), Router(pg_url), Router(pg_url)
    decided, release = threading.Event(), threading.Event()
    route = a.logic.on_submitted

    def slow(session: object, item: object) -> None:
        route(session, item)  # type: ignore[arg-type]
        decided.set()
        release.wait(timeout=30)  # A's transaction stays open with yh-g1's lock

    a.reports.handlers = {"report.submitted": slow}
    errors: list[BaseException] = []
    try:
        first = _feeding(a, submitted("g1-a", "rider-a", place=MANHOLE), errors)
        assert decided.wait(timeout=30)
        elsewhere = _feeding(b, submitted("g3-b", "rider-b", place=FAR), errors)
        elsewhere.join(timeout=30)
        assert not elsewhere.is_alive(), "B waited for A although their grids cannot meet"
        assert decisions(b.db)["g3-b"]["decision"] == "open"
        assert set(decisions(b.db)) == {"g3-b"}  # A's decision is still uncommitted
        near = submitted("g1-c", "rider-c", place=MANHOLE, at=T0 + timedelta(minutes=1))
        same = _feeding(c, near, errors)
        _until_waiting(a.db, "yh-g1", 1)
        assert same.is_alive()
        release.set()
        first.join(timeout=30)
        same.join(timeout=30)
        assert not errors, errors
        d = decisions(a.db)
        assert {r: (x["decision"], x["grid_id"]) for r, x in d.items()} == {
            "g1-a": ("open", "yh-g1"),
            "g3-b": ("open", "yh-g3"),
            "g1-c": ("merge", "yh-g1"),
        }
        assert d["g1-c"]["case_id"] == d["g1-a"]["case_id"]
    finally:
        release.set()
        for r in (a, b, c):
            r.close()


@pytest.mark.postgres
def test_a_report_near_a_border_takes_the_lock_of_the_grid_across_it(pg_url: str) -> None:
    """A report in yh-g1 within its radius of a case anchored in yh-g2 waits for yh-g2's lock too (it
    could merge there), then merges across the border; one deep inside yh-g1 does not wait for it."""
    a, b, c = Router(pg_url), Router(pg_url), Router(pg_url)
    errors: list[BaseException] = []
    lat, lon = BORDER_G2
    a.feed([submitted("b-g2", "rider-a", lat=lat, lon=lon, category="safety_hazard")])
    lat, lon = BORDER_G1
    across = submitted(
        "b-g1", "rider-b", lat=lat, lon=lon, category="safety_hazard", at=T0 + timedelta(minutes=1)
    )
    inside = submitted("d-g1", "rider-c", lat=31.3395, lon=121.511, category="safety_hazard")
    try:
        with _holding(a.db, "yh-g2"):
            waiting = _feeding(b, across, errors)
            _until_waiting(a.db, "yh-g2", 1)
            deep = _feeding(c, inside, errors)
            deep.join(timeout=30)
            assert not deep.is_alive(), "a report far from yh-g2 waited for its lock"
            assert waiting.is_alive()
            assert "b-g1" not in decisions(a.db)
        waiting.join(timeout=30)
        assert not errors, errors
        d = decisions(a.db)
        assert {r: (x["decision"], x["grid_id"]) for r, x in d.items()} == {
            "b-g2": ("open", "yh-g2"),
            "b-g1": ("merge", "yh-g1"),
            "d-g1": ("open", "yh-g1"),
        }
        assert d["b-g1"]["case_id"] == d["b-g2"]["case_id"]
    finally:
        for r in (a, b, c):
            r.close()


@pytest.mark.postgres
def test_a_merge_never_reopens_a_case_closed_meanwhile(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replica A has read an open case to merge a report into it when replica B applies the case's
    `case.closed` (the `cases.events` consumer takes no routing lock): A's merge stands (the close/merge
    race), and the index keeps the case closed, at the closer's version, with A's report counted."""
    a, b = Router(pg_url), Router(pg_url)
    a.feed([submitted("o1", "rider-a", place=MANHOLE)])
    case = str(decisions(a.db)["o1"]["case_id"])
    read, release = threading.Event(), threading.Event()
    assessment = a.logic.decisions.assessment

    def paused(raw: Raw, plan: Plan, row: CaseRow | None) -> tuple[Assessment, index.Standing]:
        read.set()
        release.wait(timeout=30)  # A has read the case open and not yet written it; B closes it now
        return assessment(raw, plan, row)

    monkeypatch.setattr(a.logic.decisions, "assessment", paused)
    errors: list[BaseException] = []
    try:
        merging = _feeding(a, submitted("o2", "rider-b", place=MANHOLE, at=T0 + timedelta(minutes=1)), errors)
        assert read.wait(timeout=30)
        b.feed([transition(case, "close", "closed", 1, "yh-s1", ["o1"])], topic="cases.events")
        release.set()
        merging.join(timeout=30)
        assert not errors, errors
        assert (decisions(a.db)["o2"]["decision"], decisions(a.db)["o2"]["case_id"]) == ("merge", case)
        with a.db.session() as s:
            row = s.get(OpenCase, case)
            assert row is not None
            assert (row.open, row.status, row.version) == (False, "closed", 1)
            assert (row.distinct_riders, row.last_report_at) == (2, T0 + timedelta(minutes=1))
    finally:
        release.set()
        a.close()
        b.close()


def _lock_wait() -> tuple[float, float]:
    """(count, sum) of gridloop_route_lock_wait_seconds in this process."""
    name = "gridloop_route_lock_wait_seconds"
    count = metrics.REGISTRY.get_sample_value(f"{name}_count")
    total = metrics.REGISTRY.get_sample_value(f"{name}_sum")
    assert count is not None and total is not None
    return count, total


@pytest.mark.postgres
def test_the_lock_wait_is_observed_once_per_batch(pg_url: str) -> None:
    """A batch that waited while another transaction held its grid observes at least the hold, once."""
    hold = 0.5
    router = Router(pg_url)
    errors: list[BaseException] = []
    try:
        count, total = _lock_wait()
        with _holding(router.db, "yh-g1"):
            thread = _feeding(router, submitted("m1", "rider-a", place=MANHOLE), errors)
            _until_waiting(router.db, "yh-g1", 1)
            time.sleep(hold)
        thread.join(timeout=30)
        assert not errors, errors
        after_count, after_total = _lock_wait()
        assert after_count == count + 1
        assert after_total - total >= hold
        router.feed([submitted("m2", "rider-b", place=FAR)])  # nobody holds yh-g3
        assert _lock_wait()[0] == count + 2
        assert _lock_wait()[1] - after_total < hold
    finally:
        router.close()


def test_sqlite_observes_no_lock_wait(tmp_path: Path) -> None:
    """On SQLite the write transaction serialises routing; there are no routing locks to wait for."""
    url = f"sqlite:///{tmp_path / 'router.db'}"
    migrate.upgrade("router", url)
    router = Router(url)
    try:
        before = _lock_wait()
        router.feed([submitted("s1", "rider-a", place=MANHOLE), submitted("s2", "rider-b", place=FAR)])
        assert len(decisions(router.db)) == 2
        assert _lock_wait() == before
    finally:
        router.close()


# --- merging is independent of arrival order (hypothesis) ------------------------------------

SPOTS = PLACES[:8]
CATEGORIES = ["manhole_cover", "sanitation", "gas_hazard", "shared_bikes"]
_M_PER_DEG = 111_320.0


@st.composite
def report_sets(draw: st.DrawFn) -> list[dict[str, object]]:
    """Reports in well-separated clusters (spot, category), each within a third of the radius."""
    reports: list[dict[str, object]] = []
    count = draw(st.integers(1, 14))
    for i in range(count):
        spot = draw(st.sampled_from(SPOTS))
        category = draw(st.sampled_from(CATEGORIES))
        by_code = draw(st.booleans())
        radius = J.categories[category].dup_radius_m
        dy, dx = draw(st.tuples(st.floats(-1, 1), st.floats(-1, 1)))
        jitter = radius / 3 / 1.5  # both axes: at most radius/3 from the spot
        reports.append(
            {
                "id": f"q{i}",
                "spot": spot,
                "category": category,
                "by_code": by_code,
                "lat": spot.lat + dy * jitter / _M_PER_DEG,
                "lon": spot.lon + dx * jitter / _M_PER_DEG,
                "rider": draw(st.sampled_from(["a", "b", "c", "d", None])),
                "minute": draw(st.integers(0, 600)),
                "danger": draw(st.booleans()),
            }
        )
    return reports


def _route_all(reports: list[dict[str, object]]) -> dict[str, object]:
    """Route reports in the given order on a fresh database; the outcome in order-free terms."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'router.db'}"
        Database(url, Base.metadata).create_all()
        r = Router(url)
        try:
            for rep in reports:
                spot = rep["spot"]
                assert isinstance(spot, Place)
                event = submitted(
                    str(rep["id"]),
                    rep["rider"],  # type: ignore[arg-type]
                    place=spot if rep["by_code"] else None,
                    category=str(rep["category"]),
                    lat=rep["lat"],  # type: ignore[arg-type]
                    lon=rep["lon"],  # type: ignore[arg-type]
                    at=T0 + timedelta(minutes=int(rep["minute"])),  # type: ignore[call-overload]
                    danger_now=rep["danger"],
                )
                r.feed([event])
            d = decisions(r.db)
            with r.db.session() as s:
                common = {c.case_id: c.common_issue for c in s.exec(orm_select(OpenCase))}
        finally:
            r.close()
    groups: dict[str, set[str]] = {}
    rank = {"normal": 0, "high": 1, "urgent": 2}
    top: dict[str, int] = {}
    for report_id, data in d.items():
        case = str(data["case_id"])
        groups.setdefault(case, set()).add(report_id)
        top[case] = max(top.get(case, 0), rank[str(data["priority"])])
    return {
        "cases": sorted(
            (
                sorted(members),
                common[case],
                top[case],
                max(int(str(d[m]["distinct_riders"])) for m in members),
            )
            for case, members in groups.items()
        )
    }


def test_spots_are_far_apart() -> None:
    """The clusters cannot touch: spots are more than twice the largest radius apart."""
    largest = max(J.categories[c].dup_radius_m for c in CATEGORIES)
    for i, a in enumerate(SPOTS):
        for b in SPOTS[i + 1 :]:
            assert distance_m(a.lat, a.lon, b.lat, b.lon) > 2 * largest


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reports=report_sets(), seed=st.integers(0, 2**32 - 1))
def test_merging_is_independent_of_arrival_order(reports: list[dict[str, object]], seed: int) -> None:
    """Within a window, any arrival order gives the same cases, riders, common issues and top priority."""
    shuffled = list(reports)
    random.Random(seed).shuffle(shuffled)
    first, second = _route_all(reports), _route_all(shuffled)
    assert first == second
    expected = {(str(r["spot"].place_id), r["category"]) for r in reports}  # type: ignore[attr-defined]
    assert len(first["cases"]) == len(expected)  # type: ignore[arg-type]


# --- the kept standing of a case equals a recount (hypothesis) -------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    riders=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d", None]), st.integers(0, 72 * 60)), max_size=12
    ),
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 4),
)
def test_kept_riders_and_common_issue_equal_a_recount(
    riders: list[tuple[str | None, int]], seed: int, batch: int
) -> None:
    """Routing keeps a case's distinct riders on its row and tests for a common issue only around the new
    report; over any arrival order and batching that equals counting every report of the case again."""
    from services.router.routing import is_common_issue

    events = [
        submitted(f"s{i}", rider, place=MANHOLE, category="sanitation", at=T0 + timedelta(minutes=m))
        for i, (rider, m) in enumerate(riders)
    ]
    random.Random(seed).shuffle(events)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'router.db'}"
        migrate.upgrade("router", url)
        r = Router(url)
        try:
            for i in range(0, len(events), batch):
                r.feed(events[i : i + batch])
            with r.db.session() as s:
                cases = list(s.exec(orm_select(OpenCase)))
                rows = list(s.exec(orm_select(CaseRider)))
            routed = decisions(r.db)
        finally:
            r.close()
    for case in cases:
        reports = [(row.rider_ref, row.at.replace(tzinfo=UTC)) for row in rows if row.case_id == case.case_id]
        assert case.distinct_riders == len({rider for rider, _ in reports if rider})
        assert case.common_issue == is_common_issue(reports)
        # the last report routed into the case carried the count as it stood then
        assert max(
            int(str(d["distinct_riders"])) for d in routed.values() if d["case_id"] == case.case_id
        ) == max(len({rider for rider, _ in reports if rider}), 1)  # a case has one reporter at least


def test_known_place_follows_the_reports_without_a_write_each(router: Router) -> None:
    """The code's place is learnt from the first report, rewritten when the reports say something else,
    and otherwise touched at most once an hour (not once a report)."""
    from services.router.models import KnownPlace

    def row() -> KnownPlace:
        with router.db.session() as s:
            found = s.get(KnownPlace, MANHOLE.code)
            assert found is not None
            return found

    router.feed([submitted("k1", "a", place=MANHOLE)])
    assert (row().place_id, row().seen_at.replace(tzinfo=UTC)) == (MANHOLE.place_id, T0)
    router.feed([submitted("k2", "b", place=MANHOLE, at=T0 + timedelta(minutes=20))])
    assert row().seen_at.replace(tzinfo=UTC) == T0  # the same place: no write
    moved = submitted("k3", "c", place=MANHOLE, lat=MANHOLE.lat + 0.0001, at=T0 + timedelta(minutes=30))
    router.feed([moved])
    assert row().lat == pytest.approx(MANHOLE.lat + 0.0001)
    assert row().seen_at.replace(tzinfo=UTC) == T0 + timedelta(minutes=30)
    later = submitted("k4", "d", place=MANHOLE, lat=MANHOLE.lat + 0.0001, at=T0 + timedelta(hours=2))
    router.feed([later])
    assert row().seen_at.replace(tzinfo=UTC) == T0 + timedelta(hours=2)


def test_the_riders_platform_travels_with_the_decision(router: Router) -> None:
    """issue 17: the routed event carries the platform the rider gave (the closer's platform tallies)."""
    router.feed([submitted("p1", "rider-a", place=MANHOLE, platform="美团")])
    router.feed([submitted("p2", "rider-b", place=MANHOLE, at=T0 + timedelta(minutes=5))])
    d = decisions(router.db)
    assert (d["p1"]["platform"], d["p2"]["platform"]) == ("美团", None)

"""The reporter's read model, +1 query, feedback, rate limits and Open311 queries on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select

from gridloop import migrate
from gridloop.clock import FrozenClock, SystemClock, as_utc, set_clock
from gridloop.consumer import Incoming
from gridloop.db import Database
from gridloop.errors import ApiError
from gridloop.settings import REPO_ROOT
from schemas.events import CaseOpened, CaseReportMerged, CaseTransitioned, EventData, make_event
from schemas.reference import load_jurisdiction
from services.reporter.config import RateLimits
from services.reporter.handlers import handlers
from services.reporter.models import Base, CaseView, Place, Report, ReportCode, ReportEvent
from services.reporter.open311 import query_requests
from services.reporter.readmodel import open_cases
from services.reporter.reports import IntakeContext, ReportIn, accept_report
from services.reporter.rider_feedback import FeedbackIn, give_feedback, shown_feedback

J = load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")
T0 = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
CODE = "W7Q23QVD"


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated reporter database with one place and its code."""
    migrate.upgrade("reporter", db_url)
    database = Database(db_url, Base.metadata)
    with database.session(write=True) as s:
        s.add(
            Place(
                place_id="yh-p01",
                name_zh="北门",
                lat=31.3395,
                lon=121.511,
                grid_id="yh-g1",
                station_id="yh-s1",
                created_at=T0,
            )
        )
        s.flush()
        s.add(ReportCode(code=CODE, place_id="yh-p01", created_at=T0))
    clock = FrozenClock(T0)
    set_clock(clock)
    yield database
    set_clock(SystemClock())
    database.dispose()


def submit(db: Database, rider: str, **fields: object) -> str:
    """Accept one report from a rider."""
    body = ReportIn.model_validate({"code": CODE, "category": "manhole_cover", **fields})
    with db.session(write=True) as s:
        answer, _ = accept_report(
            s, body, IntakeContext("scan", rider, limits=RateLimits()), J, None, "http://x"
        )
    return answer.report_id


def apply(db: Database, name: str, data: EventData, at: datetime = T0) -> None:
    """Apply one `cases.events` event through the reporter's handlers."""
    subject = str(data.model_dump()["case_id"])
    item = Incoming(
        make_event(name, data, source="closer", subject=subject, time=at), data, "cases.events", 0, 0, subject
    )
    with db.session(write=True) as s:
        handlers()[name](s, item)


def moved(case_id: str, action: str, status: str, version: int, **extra: object) -> CaseTransitioned:
    """A transition event."""
    return CaseTransitioned(
        case_id=case_id,
        action=action,
        status=status,
        station_id="yh-s1",
        version=version,
        at=T0 + timedelta(minutes=version),
        **extra,
    )


def test_read_model_open_cases_feedback_and_open311(db: Database) -> None:
    """Cases from events; +1 candidates with distinct riders; stale events ignored; feedback; Open311."""
    first = submit(db, "rider-a")
    second = submit(db, "rider-b", description="我也看到")
    apply(
        db,
        "case.opened",
        CaseOpened(
            case_id="c1",
            report_id=first,
            station_id="yh-s1",
            category="manhole_cover",
            opened_at=T0,
            resolve_due=T0 + timedelta(hours=8),
        ),
    )
    apply(
        db,
        "case.report_merged",
        CaseReportMerged(
            case_id="c1", report_id=second, station_id="yh-s1", status="new", distinct_riders=2, version=1
        ),
    )
    with db.session() as s:
        [(view, riders)] = open_cases(s, "yh-p01")
        assert view.case_id == "c1" and riders == 2
        assert s.get(Report, second).case_id == "c1"  # type: ignore[union-attr]

    apply(db, "case.resolved", moved("c1", "resolve", "resolved", 4, after_photo_ids=["a1"], note="已修"))
    apply(db, "case.acknowledged", moved("c1", "acknowledge", "acknowledged", 2))  # late: ignored
    with db.session() as s:
        assert s.get(Report, first).status == "resolved"  # type: ignore[union-attr]
        assert s.get(CaseView, "c1").after_photo_ids == "a1"  # type: ignore[union-attr]
        assert open_cases(s, "yh-p01") == []  # resolved waits for the rider: no +1

    with db.session(write=True) as s:
        with pytest.raises(ApiError) as caught:
            give_feedback(s, first, FeedbackIn(fixed=False))
        assert caught.value.code == "comment_required"
    with db.session(write=True) as s:
        row, created = give_feedback(s, first, FeedbackIn(fixed=False, comment="还在", rating=2))
        assert created and row.case_version == 4
    with db.session(write=True) as s:
        assert give_feedback(s, first, FeedbackIn(fixed=False, comment="还在", rating=2))[1] is False
        outbox = s.exec(select(Base.metadata.tables["outbox"].c.topic)).all()
        assert list(outbox).count("reports.feedback") == 1

    apply(db, "case.closed", moved("c1", "confirm", "closed", 7))
    with db.session() as s:
        shown = shown_feedback(s, s.get(Report, first))  # type: ignore[arg-type]
        assert shown is not None and shown.comment == "还在"
        params = {"start_date": "2026-11-01T00:00:00Z", "end_date": "2026-12-01T00:00:00Z"}
        everything = query_requests(s, params, J)
        assert {r["service_request_id"] for r in everything} == {first, second}
        assert {r["status"] for r in everything} == {"closed"}
        assert everything[0]["expected_datetime"] == "2026-11-24T09:00:00Z"
        assert query_requests(s, {**params, "status": "open"}, J) == []
        assert len(query_requests(s, {"service_request_id": first}, J)) == 1


def test_read_model_takes_events_in_any_order(db: Database) -> None:
    """A merge before its case's opening makes the view from the report; the opening then fills in the
    case's details without moving its state back; a late older merge only points the report at the case;
    an event about a report that is not ours still keeps the case's view."""
    first = submit(db, "rider-a")
    second = submit(db, "rider-b")
    merged = CaseReportMerged(
        case_id="c9", report_id=second, station_id="yh-s1", status="acknowledged", version=3
    )
    apply(db, "case.report_merged", merged, at=T0 + timedelta(minutes=3))
    opened = CaseOpened(
        case_id="c9",
        report_id=first,
        station_id="yh-s1",
        category="manhole_cover",
        opened_at=T0,
        resolve_due=T0 + timedelta(hours=8),
    )
    apply(db, "case.opened", opened)
    late = CaseReportMerged(case_id="c9", report_id=second, station_id="yh-s1", status="new", version=2)
    apply(db, "case.report_merged", late, at=T0 + timedelta(minutes=2))
    stranger = CaseReportMerged(
        case_id="c9", report_id="r_other", station_id="yh-s1", status="dispatched", version=4
    )
    apply(db, "case.report_merged", stranger, at=T0 + timedelta(minutes=4))
    with db.session() as s:
        view = s.get(CaseView, "c9")
        assert view is not None
        assert (view.status, view.version, view.category, view.place_id) == (
            "dispatched",
            4,
            "manhole_cover",
            "yh-p01",
        )
        assert as_utc(view.opened_at) == T0 and as_utc(view.resolve_due) == T0 + timedelta(hours=8)  # type: ignore[arg-type]
        one, two = s.get(Report, first), s.get(Report, second)
        assert one is not None and two is not None
        assert (one.case_id, one.status, one.case_version) == ("c9", "new", 1)
        assert (two.case_id, two.status, two.case_version) == ("c9", "acknowledged", 3)
        for report_id, expected in ((first, ["submitted", "opened"]), (second, ["submitted", "merged"])):
            steps = s.exec(
                select(ReportEvent.action)
                .where(ReportEvent.report_id == report_id)
                .order_by(col(ReportEvent.id))
            )
            assert list(steps) == expected  # the late merge added no step


def test_rate_limit_counts_recent_reports(db: Database) -> None:
    """The per-rider limit counts that rider's reports in the window, on either engine."""
    limits = RateLimits.model_validate({"per_rider": 2, "per_code": 0, "per_address": 0})
    body = ReportIn.model_validate({"code": CODE, "category": "other"})

    def one() -> None:
        with db.session(write=True) as s:
            accept_report(s, body, IntakeContext("scan", "rider-z", limits=limits), J, None, "http://x")

    one()
    one()
    with pytest.raises(ApiError) as caught:
        one()
    assert caught.value.status == 429 and caught.value.headers == {"Retry-After": "600"}


def test_redrive_runs_on_one_replica(db: Database, tmp_path: Path) -> None:
    """Two reporter replicas on one database: exactly one re-drives (each unfinished report once);
    when it stops, the other takes over."""
    from gridloop.service import Runtime
    from gridloop.settings import Settings
    from services.reporter.models import PLUMBING
    from services.reporter.redrive import redrive_tick

    reports = {submit(db, f"rider-{i}") for i in range(3)}
    clock = FrozenClock(T0 + timedelta(minutes=5))
    set_clock(clock)  # the fixture puts the system clock back
    settings = Settings(database_url=db.url, var_dir=tmp_path)
    replicas = [Runtime("reporter", Base.metadata, PLUMBING, settings) for _ in range(2)]
    try:
        first = [redrive_tick(r, 60.0, 500) for r in replicas]
        assert sorted(first, key=str) == [3, None]
        leader, follower = replicas if first[0] == 3 else replicas[::-1]
        assert redrive_tick(follower, 60.0, 500) is None
        clock.advance(timedelta(minutes=5))
        leader.leadership("redrive").release()  # the leader stops (or dies)
        assert redrive_tick(follower, 60.0, 500) == 3
        assert redrive_tick(leader, 60.0, 500) is None
    finally:
        for replica in replicas:
            for leadership in replica.leaders.values():
                leadership.release()
            replica.db.dispose()
    with db.engine.connect() as conn:
        payloads = conn.execute(select(PLUMBING.outbox.c.payload)).scalars().all()
    subjects = [json.loads(p)["subject"] for p in payloads]
    # each report: its intake event, then one re-drive per pass (two passes, one replica each)
    assert sorted(subjects) == sorted(list(reports) * 3)

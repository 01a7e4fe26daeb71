"""Issue 15 on the reporter (SQLite and PostgreSQL): the case's SLA clock reaches the rider's tracking
page and API through `cases.events`; events from before clock modes count as working time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from schemas.cases import ClockMode
from schemas.envelope import CloudEvent
from schemas.events import CaseOpened, CaseReportMerged, CaseTransitioned, make_event, parse_data
from schemas.reference import Place
from services.reporter.models import CaseView
from tests.support.reporter import apply_event, reporter_app

ROUND_THE_CLOCK = "24 小时处置"


@pytest.fixture
def reporter(db_url: str, tmp_path: Path) -> Iterator[tuple[FastAPI, dict[str, Place]]]:
    """The reporter app and its demo places by id."""
    app, places = reporter_app(db_url, tmp_path / "var")
    yield app, {p.place_id: p for p in places}
    app.state.reporter.runtime.db.dispose()


def submit(client: TestClient, places: dict[str, Place], category: str) -> str:
    """A rider's report; its id."""
    r = client.post("/api/v1/reports", json={"code": places["yh-p01"].code, "category": category})
    assert r.status_code == 202, r.text
    return str(r.json()["report_id"])


def clock_of(app: FastAPI, case_id: str) -> str:
    """The clock the riders' view of a case keeps."""
    with app.state.reporter.runtime.db.session() as s:
        view = s.get(CaseView, case_id)
        assert view is not None
        return view.clock


def test_the_tracking_page_says_round_the_clock(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """A gas case on calendar time shows 24 小时处置 on the page and `clock` in the API; a sanitation
    case on working time shows neither; a report without a case has no clock yet."""
    app, places = reporter
    rider = TestClient(app)
    gas, litter, waiting = (submit(rider, places, c) for c in ("gas_hazard", "sanitation", "sanitation"))
    now = datetime.now(UTC)
    for case_id, report_id, category, clock in (
        ("c_gas", gas, "gas_hazard", "calendar"),
        ("c_litter", litter, "sanitation", "working"),
    ):
        mode: ClockMode = "calendar" if clock == "calendar" else "working"
        opened = CaseOpened(
            case_id=case_id,
            report_id=report_id,
            station_id="yh-s1",
            category=category,
            opened_at=now,
            resolve_due=now + timedelta(hours=2),
            clock=mode,
        )
        apply_event(app, "case.opened", opened, case_id)
    gas_page, litter_page, waiting_page = (rider.get(f"/t/{r}").text for r in (gas, litter, waiting))
    assert gas_page.count(ROUND_THE_CLOCK) == 1 and 'data-clock="calendar"' in gas_page
    assert ROUND_THE_CLOCK not in litter_page and ROUND_THE_CLOCK not in waiting_page
    assert [rider.get(f"/api/v1/reports/{r}").json()["clock"] for r in (gas, litter, waiting)] == [
        "calendar",
        "working",
        None,
    ]


def test_the_view_follows_the_clock_of_newer_events(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """Opened on working time; a merge that made it urgent moves it to calendar time; an older event
    cannot move it back; an event written before clock modes (no `clock`) means working time."""
    app, places = reporter
    rider = TestClient(app)
    first, second = submit(rider, places, "manhole_cover"), submit(rider, places, "manhole_cover")
    now = datetime.now(UTC)
    opened = CaseOpened(
        case_id="c1", report_id=first, station_id="yh-s1", category="manhole_cover", opened_at=now
    )
    apply_event(app, "case.opened", opened, "c1")
    assert clock_of(app, "c1") == "working"
    merged = CaseReportMerged(
        case_id="c1", report_id=second, station_id="yh-s1", status="new", version=2, clock="calendar"
    )
    apply_event(app, "case.report_merged", merged, "c1")
    assert clock_of(app, "c1") == "calendar"
    apply_event(app, "case.opened", opened, "c1")  # a redelivered older event
    assert clock_of(app, "c1") == "calendar"
    acked = CaseTransitioned(
        case_id="c1",
        action="acknowledge",
        status="acknowledged",
        station_id="yh-s1",
        version=3,
        at=now,
        clock="calendar",
    )
    apply_event(app, "case.acknowledged", acked, "c1")
    assert clock_of(app, "c1") == "calendar" and ROUND_THE_CLOCK in rider.get(f"/t/{first}").text

    # an event from a closer before issue 15: parsed from JSON without the field
    later = acked.model_copy(update={"version": 4, "at": now + timedelta(minutes=1)})
    old = make_event("case.dispatched", later, source="closer", subject="c1", time=later.at)
    raw = old.model_dump(mode="json")
    raw["type"], raw["data"]["action"], raw["data"]["status"] = (
        "gridloop.case.dispatched.v1",
        "dispatch",
        "dispatched",
    )
    del raw["data"]["clock"]
    data = parse_data(CloudEvent.model_validate(raw))
    assert isinstance(data, CaseTransitioned) and data.clock == "working"
    apply_event(app, "case.dispatched", data, "c1")
    assert clock_of(app, "c1") == "working"

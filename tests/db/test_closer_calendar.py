"""Installing an official calendar year: the admin API and the CLI, re-planning open cases, replicas,
the confirmed-until gauge and the admin console's notice; on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from gridloop import demo, metrics
from gridloop.clock import FrozenClock
from gridloop.db import Database
from schemas.calendar import CalendarError
from services.closer import calendarcli
from services.closer.models import Base
from tests.db.test_closer_api import console_sign_in, frozen, login, make_app, open_case, outbox, running
from tests.unit.test_closer_calendar import official_2027

SH = ZoneInfo("Asia/Shanghai")
FEB_1 = datetime(2027, 2, 1, 1, 0, tzinfo=UTC)  # 09:00 Monday 1 February 2027 in Shanghai
EVE_EVE = datetime(2027, 2, 4, 17, 0, tzinfo=SH)  # Thursday 17:00, the day before the estimated holiday


def at(y: int, mo: int, d: int, h: int) -> datetime:
    """A Shanghai wall-clock time in UTC."""
    return datetime(y, mo, d, h, tzinfo=SH).astimezone(UTC)


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen on Monday 1 February 2027."""
    yield from frozen(FEB_1)


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[FastAPI]:
    """The closer on SQLite and on PostgreSQL."""
    yield from running(db_url, tmp_path)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """An HTTPS test client, its lifespan run (the start-up reads the imported years)."""
    with TestClient(app, base_url="https://testserver") as c:
        yield c


def deadlines(app: FastAPI, case_id: str) -> tuple[datetime, datetime]:
    """The stored sign-for and resolve deadlines of a case (UTC)."""
    with app.state.closer.runtime.db.session() as s:
        ack, resolve = s.execute(
            text('SELECT ack_due, resolve_due FROM "case" WHERE case_id = :c'), {"c": case_id}
        ).one()
    return _utc(ack), _utc(resolve)


def _utc(value: datetime | str) -> datetime:
    value = datetime.fromisoformat(value) if isinstance(value, str) else value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def count(app: FastAPI, sql: str) -> int:
    """One number from the closer's database."""
    with app.state.closer.runtime.db.session() as s:
        return int(s.execute(text(sql)).scalar() or 0)


def gauge() -> float:
    """gridloop_calendar_confirmed_until_timestamp_seconds."""
    return float(metrics.calendar_confirmed_until._value.get())


ESTIMATED = (at(2027, 2, 11, 10), at(2027, 2, 15, 17))  # the holiday estimated as 5–10 February
OFFICIAL = (at(2027, 2, 15, 10), at(2027, 2, 17, 17))  # the "published" one: 5–12 February


def test_admin_installs_a_year_and_open_cases_are_replanned(app: FastAPI, client: TestClient) -> None:
    """PUT 2027: the answers change, the open case's deadlines move with a timeline note and an event,
    a closed year's case does not move, the gauge moves a year; a second PUT changes nothing."""
    assert gauge() == at(2027, 1, 1, 0).timestamp()
    cid = open_case(app, submitted_at=EVE_EVE)
    early = open_case(app, submitted_at=at(2026, 12, 1, 10))  # due in 2026: not affected
    assert deadlines(app, cid) == ESTIMATED
    before_early = deadlines(app, early)
    admin = login(client, "admin")
    r = client.put(
        "/api/v1/admin/calendar/2027", headers=admin, json=json.loads(official_2027().model_dump_json())
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"year": 2027, "days": 12, "replanned": 1, "confirmed_until": 2027}
    assert deadlines(app, cid) == OFFICIAL
    assert deadlines(app, early) == before_early
    assert gauge() == at(2028, 1, 1, 0).timestamp()
    events = [e for e in outbox(app, cid) if e.type == "gridloop.case.replanned.v1"]
    assert len(events) == 1
    assert events[0].data["action"] == "replan"
    assert _utc(events[0].data["ack_due"]) == OFFICIAL[0]
    assert events[0].data["version"] == 2
    case = client.get(f"/api/v1/cases/{cid}", headers=admin).json()
    replans = [t for t in case["timeline"] if t["action"] == "replan"]
    assert len(replans) == 1
    assert replans[0]["note"].startswith("工作日历 2027 年更新,期限重算")
    assert "ack 2027-02-11T02:00:00+00:00 → 2027-02-15T02:00:00+00:00" in replans[0]["note"]
    shown = client.get("/api/v1/admin/calendar/2027", headers=admin).json()
    assert shown["estimated"] is False
    assert {d["source"] for d in shown["days"]} == {"official:admin-api:admin"}
    assert len(shown["days"]) == 12
    # the same file again: nothing moves, no event
    r = client.put(
        "/api/v1/admin/calendar/2027", headers=admin, json=json.loads(official_2027().model_dump_json())
    )
    assert r.json()["replanned"] == 0
    assert len([e for e in outbox(app, cid) if e.type == "gridloop.case.replanned.v1"]) == 1
    assert count(app, "SELECT count(*) FROM calendar_year") == 1


def test_only_an_admin_installs_and_a_bad_file_writes_nothing(app: FastAPI, client: TestClient) -> None:
    """401 without a token, 403 for a supervisor, 422 for a malformed file or another year: no row,
    no re-planned case, the answers unchanged."""
    cid = open_case(app, submitted_at=EVE_EVE)
    good = json.loads(official_2027().model_dump_json())
    assert client.put("/api/v1/admin/calendar/2027", json=good).status_code == 401
    sup = login(client, "yh-centre")
    assert client.put("/api/v1/admin/calendar/2027", headers=sup, json=good).status_code == 403
    admin = login(client, "admin")
    bad = json.loads(official_2027().model_dump_json())
    bad["days"][0]["kind"] = "workday"  # 1 January 2027 is a Friday: no make-up day
    r = client.put("/api/v1/admin/calendar/2027", headers=admin, json=bad)
    assert r.status_code == 422
    assert "not a Saturday or Sunday" in r.text
    r = client.put("/api/v1/admin/calendar/2028", headers=admin, json=good)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "year_mismatch"
    assert count(app, "SELECT count(*) FROM calendar_year") == 0
    assert deadlines(app, cid) == ESTIMATED
    assert not app.state.closer.calendar.is_workday(datetime(2027, 2, 10).date())
    assert app.state.closer.calendar.is_workday(datetime(2027, 2, 11).date())
    assert [e.type for e in outbox(app, cid)] == ["gridloop.case.opened.v1"]


def test_another_replica_uses_the_year_after_its_refresh(
    app: FastAPI, client: TestClient, db_url: str, tmp_path: Path
) -> None:
    """Replicas share the table: the second one answers with the imported year from its next refresh
    (and from its start-up), without a release; that refresh re-plans a case it opened meanwhile."""
    other = make_app(db_url, tmp_path / "other")
    try:
        day = datetime(2027, 2, 11).date()
        assert other.state.closer.calendar.is_workday(day)
        admin = login(client, "admin")
        good = json.loads(official_2027().model_dump_json())
        assert client.put("/api/v1/admin/calendar/2027", headers=admin, json=good).status_code == 200
        assert other.state.closer.calendar.is_workday(day)  # not refreshed yet
        late = open_case(other, submitted_at=EVE_EVE)  # opened there on the old calendar meanwhile
        assert deadlines(app, late) == ESTIMATED
        other.state.scheduler.refresh()
        assert not other.state.closer.calendar.is_workday(day)
        # its refresh re-planned the case it had opened with the old year (once)
        assert deadlines(app, late) == OFFICIAL
        assert [e.type for e in outbox(app, late)] == [
            "gridloop.case.opened.v1",
            "gridloop.case.replanned.v1",
        ]
        other.state.scheduler.refresh()
        assert len(outbox(app, late)) == 2
        third = make_app(db_url, tmp_path / "third")
        with TestClient(third, base_url="https://testserver"):
            assert not third.state.closer.calendar.is_workday(day)
        third.state.closer.runtime.db.dispose()
    finally:
        other.state.closer.runtime.db.dispose()


def test_cli_import_and_show(
    app: FastAPI,
    client: TestClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`gridloop calendar import FILE` re-plans like the API; `show` then prints the official year;
    a malformed file is refused by name with exit code 2 and changes nothing."""
    cid = open_case(app, submitted_at=EVE_EVE)
    db = app.state.closer.runtime.db
    monkeypatch.setattr(calendarcli, "_database", lambda: Database(db.url, Base.metadata))
    bad = tmp_path / "bad-2027.json"
    bad.write_text('{"year": 2027, "days": []}')
    assert calendarcli.cmd_import(argparse.Namespace(file=str(bad))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: ")
    assert "source: Field required" in err
    assert count(app, "SELECT count(*) FROM calendar_year") == 0
    good = tmp_path / "2027.json"
    good.write_text(official_2027().model_dump_json())
    assert calendarcli.cmd_import(argparse.Namespace(file=str(good))) == 0
    assert capsys.readouterr().out == (
        "2027: 12 official days installed from 2027.json; 1 open cases re-planned;"
        " confirmed until the end of 2027\n"
    )
    assert deadlines(app, cid) == OFFICIAL
    assert calendarcli.cmd_show(argparse.Namespace(year=2027)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2027: confirmed."
    assert out[1] == "2027-01-01  Fri  day off               official:2027.json        元旦 New Year's Day"
    assert len(out) == 14


def test_console_shows_admins_that_next_year_is_estimated(app: FastAPI, client: TestClient) -> None:
    """While 2028 is only estimated the admin's console says so; staff do not see it."""
    assert console_sign_in(client, "admin", demo.DEMO_PASSWORD).status_code == 303
    page = client.get("/console/queue")
    assert page.status_code == 200
    assert page.text.count('class="notice calendar-estimated"') == 1
    assert "2028 年工作日历仅为估算" in page.text
    staff = TestClient(app, base_url="https://testserver")
    assert console_sign_in(staff, "yh-s1", demo.DEMO_PASSWORD).status_code == 303
    assert "calendar-estimated" not in staff.get("/console/queue").text


def test_a_malformed_shipped_year_stops_the_closer(db_url: str, tmp_path: Path, clock: FrozenClock) -> None:
    """The closer refuses to start on a bad data/calendar file, naming it."""
    folder = tmp_path / "calendar"
    folder.mkdir()
    (folder / "2027.json").write_text(
        '{"year": 2027, "source": {"title": "x"}, "days": [{"date": "2027-13-01"}]}'
    )
    with pytest.raises(CalendarError, match=r"calendar/2027\.json: days\.0\.date"):
        make_app(db_url, tmp_path, calendar_dir=folder)

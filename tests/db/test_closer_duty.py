"""The duty roster (值班) end to end: out-of-hours routing of calendar-time cases, escalations, the
duty queue, the roster API's rules, CSV import (API and CLI) and the console's on-duty line."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from gridloop import demo
from gridloop.clock import FrozenClock
from gridloop.db import Database
from services.closer import dutycli
from services.closer.models import Base
from tests.db.test_closer_api import (
    MONDAY_9,
    console_sign_in,
    frozen,
    login,
    open_case,
    outbox,
    running,
)

FRIDAY_22 = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai
FRIDAY_17_55 = datetime(2026, 11, 27, 9, 55, tzinfo=UTC)
MONDAY_10 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
NIGHT = "street,date,start,end,station,staff\nyinhang,2026-11-27,18:00,09:00,yh-s2,\n"


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen at a working Monday morning, moved by the tests."""
    yield from frozen(MONDAY_9)


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[FastAPI]:
    """The closer on SQLite and on PostgreSQL."""
    yield from running(db_url, tmp_path)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    """An HTTPS test client (the console's cookies are Secure)."""
    return TestClient(app, base_url="https://testserver")


def gas(app: FastAPI, at: datetime) -> str:
    """An urgent gas report (calendar time) in yinhang."""
    return open_case(app, category="gas_hazard", submitted_at=at, priority="urgent", street_id="yinhang")


def duty_of(app: FastAPI, case_id: str) -> tuple[Any, Any]:
    """The stored duty holder of a case."""
    with app.state.closer.runtime.db.session() as s:
        row = s.execute(
            text('SELECT duty_station_id, duty_username FROM "case" WHERE case_id = :c'), {"c": case_id}
        ).one()
    return row[0], row[1]


def shifts(app: FastAPI) -> int:
    """How many shifts the roster holds."""
    with app.state.closer.runtime.db.session() as s:
        return int(s.execute(text("SELECT count(*) FROM duty_shift")).scalar() or 0)


def duty_queue(client: TestClient, who: dict[str, str], **params: str) -> list[str]:
    """The case ids of a duty view."""
    r = client.get("/api/v1/queue", params={"view": "duty", **params}, headers=who)
    assert r.status_code == 200, r.text
    return [c["case_id"] for c in r.json()["items"]]


def test_out_of_hours_calendar_cases_go_to_the_station_on_duty(
    app: FastAPI, client: TestClient, clock: FrozenClock
) -> None:
    """Friday 22:00 with yh-s2 on the night shift: the gas case goes to yh-s2's duty queue with a
    timeline note and one case.on_duty; a sanitation case of the same moment (working time) and a gas
    case in working hours do not."""
    admin = login(client, "admin")
    r = client.post("/api/v1/duty/yinhang/import", content=NIGHT, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"street_id": "yinhang", "shifts": 1}
    clock.set(FRIDAY_22)
    night_gas = gas(app, FRIDAY_22)
    litter = open_case(app, category="sanitation", submitted_at=FRIDAY_22, street_id="yinhang")
    clock.set(MONDAY_10)
    day_gas = gas(app, MONDAY_10)
    assert duty_of(app, night_gas) == ("yh-s2", None)
    assert duty_of(app, litter) == (None, None)
    assert duty_of(app, day_gas) == (None, None)

    s2, s1 = login(client, "yh-s2"), login(client, "yh-s1")
    assert duty_queue(client, s2) == [night_gas]
    assert duty_queue(client, s1) == []
    own = [c["case_id"] for c in client.get("/api/v1/queue", headers=s1).json()["items"]]
    assert sorted(own) == sorted([night_gas, litter, day_gas])  # the owner keeps it in its queue

    events = outbox(app, night_gas)
    assert [e.type for e in events] == ["gridloop.case.opened.v1", "gridloop.case.on_duty.v1"]
    on = events[1].data
    assert (on["action"], on["station_id"], on["duty_station_id"], on["duty_username"], on["version"]) == (
        "on_duty",
        "yh-s1",
        "yh-s2",
        None,
        2,
    )
    assert on["report_ids"] == [events[0].data["report_id"]]
    assert [e.type for e in outbox(app, litter)] == ["gridloop.case.opened.v1"]
    assert [e.type for e in outbox(app, day_gas)] == ["gridloop.case.opened.v1"]
    timeline = client.get(f"/api/v1/cases/{night_gas}", headers=s1).json()["timeline"]
    assert [(t["action"], t["version"]) for t in timeline] == [("opened", 1), ("on_duty", 2)]
    assert timeline[1]["note"] == "新案非工作时间转值班 (out of hours, to duty): yh-s2 (值班表 roster)"


def test_no_roster_means_the_centre_and_a_staff_account_on_duty_sees_its_cases(
    app: FastAPI, client: TestClient, clock: FrozenClock
) -> None:
    """Without a shift the street's operations centre is on duty; a shift held by an account puts the
    case in that account's duty view."""
    clock.set(FRIDAY_22)
    first = gas(app, FRIDAY_22)
    assert duty_of(app, first) == ("yh-centre", None)
    centre = login(client, "yh-centre")
    assert duty_queue(client, centre, station="yh-centre") == [first]
    assert duty_queue(client, centre) == [first]  # every duty case, for a supervisor
    supervisor = login(client, "yh-centre")
    r = client.post(
        "/api/v1/duty/yinhang/shifts",
        json={"start": "2026-11-27T22:30:00+08:00", "end": "2026-11-28T08:00:00+08:00", "username": "yh-s3"},
        headers=supervisor,
    )
    assert r.status_code == 201, r.text
    clock.set(FRIDAY_22 + timedelta(minutes=45))
    second = gas(app, FRIDAY_22 + timedelta(minutes=45))
    assert duty_of(app, second) == (None, "yh-s3")
    assert duty_queue(client, login(client, "yh-s3")) == [second]
    assert outbox(app, second)[1].data["duty_username"] == "yh-s3"


def test_an_escalation_out_of_hours_goes_to_duty(
    app: FastAPI, client: TestClient, clock: FrozenClock
) -> None:
    """A gas case opened at 17:55 on Friday stays with its station; its sign-for deadline (18:10) is
    missed after hours, so the escalation goes to the centre on duty too, once."""
    clock.set(FRIDAY_17_55)
    cid = gas(app, FRIDAY_17_55)
    assert duty_of(app, cid) == (None, None)
    clock.set(FRIDAY_17_55 + timedelta(minutes=15, seconds=1))
    assert app.state.scheduler.tick().escalated == 1
    assert duty_of(app, cid) == ("yh-centre", None)
    assert [e.type for e in outbox(app, cid)] == [
        "gridloop.case.opened.v1",
        "gridloop.case.escalated.v1",
        "gridloop.case.on_duty.v1",
    ]
    assert app.state.scheduler.tick().escalated == 0
    assert len(outbox(app, cid)) == 3
    note = client.get(f"/api/v1/cases/{cid}", headers=login(client, "yh-s1")).json()["timeline"][-1]["note"]
    assert (
        note
        == "超时升级非工作时间转值班 (out of hours, to duty): yh-centre (无排班: 城运中心 no roster: centre)"
    )


def test_an_escalation_in_working_hours_does_not(app: FastAPI, clock: FrozenClock) -> None:
    """Monday 10:00: the gas case's escalation at 10:15 is in working hours."""
    clock.set(MONDAY_10)
    cid = gas(app, MONDAY_10)
    clock.set(MONDAY_10 + timedelta(minutes=15, seconds=1))
    assert app.state.scheduler.tick().escalated == 1
    assert duty_of(app, cid) == (None, None)
    assert [e.type for e in outbox(app, cid)] == ["gridloop.case.opened.v1", "gridloop.case.escalated.v1"]


def test_roster_api_rules_and_whole_file_refusal(
    app: FastAPI, client: TestClient, clock: FrozenClock
) -> None:
    """Staff cannot edit (403), another street's supervisor gets 404, a file with a bad row adds nothing
    and names the row; the street's supervisor and an admin may edit; anyone signed in reads."""
    body = {"start": "2026-11-27T18:00:00+08:00", "end": "2026-11-28T09:00:00+08:00", "station_id": "yh-s2"}
    staff, other, mine = login(client, "yh-s1"), login(client, "pp-centre"), login(client, "yh-centre")
    assert client.post("/api/v1/duty/yinhang/shifts", json=body, headers=staff).status_code == 403
    assert client.post("/api/v1/duty/yinhang/import", content=NIGHT, headers=staff).status_code == 403
    assert client.post("/api/v1/duty/yinhang/shifts", json=body, headers=other).status_code == 404
    assert client.post("/api/v1/duty/yinhang/import", content=NIGHT, headers=other).status_code == 404
    assert client.post("/api/v1/duty/nowhere/shifts", json=body, headers=mine).status_code == 404
    assert client.post("/api/v1/duty/yinhang/shifts", json=body).status_code == 401
    assert shifts(app) == 0

    bad = NIGHT + "yinhang,2026-11-28,18:00,09:00,pp-s1,\nyinhang,2026-11-29,18:00,,yh-s2,\n"
    r = client.post("/api/v1/duty/yinhang/import", content=bad, headers=mine)
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        "line 3: station 'pp-s1' is not a station of 'yinhang'",
        "line 4: date must be YYYY-MM-DD and start, end HH:MM",
    ]
    assert shifts(app) == 0
    wrong = client.post("/api/v1/duty/yinhang/shifts", json={**body, "station_id": "pp-s1"}, headers=mine)
    assert wrong.status_code == 422 and shifts(app) == 0

    made = client.post("/api/v1/duty/yinhang/shifts", json=body, headers=mine)
    assert made.status_code == 201
    assert (
        client.post("/api/v1/duty/yinhang/import", content=NIGHT, headers=login(client, "admin")).status_code
        == 200
    )
    assert shifts(app) == 2
    clock.set(FRIDAY_22)
    staff, other, mine = login(client, "yh-s1"), login(client, "pp-centre"), login(client, "yh-centre")
    roster = client.get("/api/v1/duty/yinhang", headers=staff).json()
    assert roster["now"] == {
        "street_id": "yinhang",
        "station_id": "yh-s2",
        "username": None,
        "source": "roster",
        "until": "2026-11-28T01:00:00Z",
    }
    assert len(roster["shifts"]) == 2
    sid = made.json()["id"]
    assert client.delete(f"/api/v1/duty/pengpu/shifts/{sid}", headers=other).status_code == 404
    assert client.delete(f"/api/v1/duty/yinhang/shifts/{sid}", headers=staff).status_code == 403
    # an id past BIGINT is refused as input, never reaching the database (SQLite's driver: a 500)
    past = client.delete(f"/api/v1/duty/yinhang/shifts/{2**63}", headers=mine)
    assert (past.status_code, past.json()["error"]["code"]) == (422, "invalid")
    assert client.delete(f"/api/v1/duty/yinhang/shifts/{sid}", headers=mine).status_code == 204
    assert shifts(app) == 1


def test_cli_import(
    app: FastAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gridloop duty import FILE`: a good file is added whole, a bad one not at all, rows named."""
    db = app.state.closer.runtime.db
    monkeypatch.setattr(dutycli, "_database", lambda: Database(db.url, Base.metadata))
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(NIGHT + "yinhang,2026-11-28,09:00,24:00,,yh-s3\n", encoding="utf-8")
    bad.write_text(NIGHT + "yinhang,2026-11-28,09:00,24:00,,nobody\n", encoding="utf-8")
    assert dutycli.cmd_import(argparse.Namespace(file=str(bad), street=None)) == 2
    assert "line 3: no active staff account 'nobody'" in capsys.readouterr().err
    assert shifts(app) == 0
    assert dutycli.cmd_import(argparse.Namespace(file=str(good), street="yinhang")) == 0
    assert capsys.readouterr().out == "2 shifts imported from good.csv\n"
    assert shifts(app) == 2


def test_console_shows_who_is_on_duty(app: FastAPI, client: TestClient, clock: FrozenClock) -> None:
    """The queue page's line: the centre with no roster, the station on the night shift."""
    assert console_sign_in(client, "yh-s1", demo.DEMO_PASSWORD).status_code == 303
    page = client.get("/console/queue").text
    assert page.count('class="on-duty"') == 1
    assert "当前值班 · 殷行街道: <strong>" in page and "无排班，城运中心值班" in page
    client.post("/api/v1/duty/yinhang/import", content=NIGHT, headers=login(client, "admin"))
    clock.set(FRIDAY_22)
    assert console_sign_in(client, "yh-s1", demo.DEMO_PASSWORD).status_code == 303
    page = client.get("/console/queue").text
    assert page.count('class="on-duty"') == 1 and "值班表" in page and "至 11-28 09:00" in page
    gas_id = gas(app, FRIDAY_22)
    duty_page = client.get("/console/queue?view=duty").text  # yh-s1 is not on duty: an empty view
    assert gas_id not in duty_page


def test_console_roster_page(app: FastAPI, client: TestClient, clock: FrozenClock) -> None:
    """The street's supervisor adds a shift from the form (a bad one adds nothing and names the
    problem) and removes it; staff see the roster without the forms and cannot post."""
    assert console_sign_in(client, "yh-centre", demo.DEMO_PASSWORD).status_code == 303
    page = client.get("/console/duty")
    assert page.status_code == 200 and "添加班次" in page.text
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    form = {
        "csrf": csrf,
        "date": "2026-11-27",
        "start": "18:00",
        "end": "09:00",
        "station": "pp-s1",
        "staff": "",
    }
    r = client.post("/console/duty/yinhang/add", data=form, follow_redirects=False)
    assert r.status_code == 303 and shifts(app) == 0
    refused = client.get(r.headers["location"]).text
    assert "line 2: station &#39;pp-s1&#39; is not a station of &#39;yinhang&#39;" in refused
    r = client.post("/console/duty/yinhang/add", data={**form, "station": "yh-s2"}, follow_redirects=False)
    assert r.status_code == 303 and shifts(app) == 1
    upload = client.post(
        "/console/duty/yinhang/add",
        data={"csrf": csrf},
        files={"file": ("roster.csv", NIGHT.replace("2026-11-27", "2026-11-28").encode(), "text/csv")},
        follow_redirects=False,
    )
    assert upload.status_code == 303 and shifts(app) == 2
    listed = client.get("/console/duty").text
    assert listed.count("data-shift=") == 2
    sid = listed.split('data-shift="')[1].split('"')[0]
    assert (
        client.post(
            f"/console/duty/yinhang/remove/{sid}", data={"csrf": csrf}, follow_redirects=False
        ).status_code
        == 303
    )
    assert shifts(app) == 1
    assert client.post("/console/duty/yinhang/add", data={**form, "csrf": "forged"}).status_code == 403
    assert shifts(app) == 1

    assert console_sign_in(client, "yh-s1", demo.DEMO_PASSWORD).status_code == 303
    staff_page = client.get("/console/duty")
    assert staff_page.status_code == 200 and "添加班次" not in staff_page.text
    assert staff_page.text.count("data-shift=") == 1
    staff_csrf = staff_page.text.split('name="csrf" value="')[1].split('"')[0]
    denied = client.post("/console/duty/yinhang/add", data={**form, "csrf": staff_csrf, "station": "yh-s3"})
    assert denied.status_code == 403 and shifts(app) == 1

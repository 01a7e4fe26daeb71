"""The assessment figures (/api/v1/stats and its CSV/XLSX exports) on SQLite and PostgreSQL: exact rows
for a hand-made set of cases, each grouping, staff scoping, the period's time-zone edges and the 422s."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from gridloop import demo
from gridloop.clock import FrozenClock
from services.closer.models import Case, CaseReport
from tests.db.test_closer_api import (
    console_sign_in,
    feedback,
    frozen,
    login,
    open_case,
    running,
)

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 on 2 December in Shanghai
T = datetime(2026, 11, 10, 1, 0, tzinfo=UTC)  # 09:00 on 10 November in Shanghai
H = timedelta(hours=1)
NOVEMBER = {"from": "2026-11-01", "to": "2026-11-30"}


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen early in December."""
    yield from frozen(NOW)


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[FastAPI]:
    """The closer on SQLite and on PostgreSQL, with the hand-made cases."""
    for a in running(db_url, tmp_path):
        put_cases(a)
        yield a


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    """An HTTPS test client."""
    return TestClient(app, base_url="https://testserver")


def case(case_id: str, station: str, grid: str, category: str, at: datetime, **values: Any) -> Case:
    """A case as the lifecycle would have left it (only what the figures read matters)."""
    return Case(
        case_id=case_id,
        station_id=station,
        grid_id=grid,
        category=category,
        status=values.pop("status", "closed"),
        submitted_at=at,
        opened_at=at,
        updated_at=at,
        ack_due=values.pop("ack_due", at + 2 * H),
        resolve_due=values.pop("resolve_due", at + 24 * H),
        **values,
    )


def report(
    report_id: str, case_id: str, at: datetime, platform: str | None, fixed: bool | None = None
) -> Any:
    """A report in a case, from a rider of `platform`."""
    return CaseReport(
        report_id=report_id,
        case_id=case_id,
        submitted_at=at,
        event_id="e-" + report_id,
        envelope="{}",
        platform=platform,
        fixed=fixed,
    )


def put_cases(app: FastAPI) -> None:
    """Five cases in November (yh-s1: A, B, F; yh-s2: C, D), one the day before it and one the day after
    it begins in Shanghai (E, G: both out)."""
    late_night = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)  # 23:30 on 30 November in Shanghai
    rows: list[Any] = [
        case(
            "A", "yh-s1", "yh-g1", "manhole_cover", T, report_count=2, acknowledged_at=T + H,
            resolved_at=T + 20 * H, closed_at=T + 30 * H, rating=5, common_issue=True, nudges=1,
            rider_confirmed=True,
        ),
        case(
            "B", "yh-s1", "yh-g1", "sanitation", T, report_count=2, acknowledged_at=T + 3 * H,
            resolved_at=T + 48 * H, closed_at=T + 50 * H, reopen_count=1, rating=2,
            returned_at=T + H, extensions_granted=1,
        ),
        case(
            "F", "yh-s1", "yh-g1", "sanitation", late_night, acknowledged_at=late_night + H,
            resolved_at=late_night + 5 * H, closed_at=late_night + 10 * H,
        ),
        case(
            "C", "yh-s2", "yh-g2", "manhole_cover", T, status="new", ack_due=NOW + 5 * H,
            resolve_due=NOW + 48 * H,
        ),
        case(
            "D", "yh-s2", "yh-g2", "sanitation", T, status="new", nudges=2,
            resolve_due=NOW + 24 * H,
        ),
        case("E", "yh-s1", "yh-g1", "sanitation", datetime(2026, 10, 31, 15, 0, tzinfo=UTC), status="new"),
        case("G", "yh-s1", "yh-g1", "sanitation", datetime(2026, 11, 30, 16, 30, tzinfo=UTC), status="new"),
    ]  # fmt: skip
    rows += [
        report("rA1", "A", T, "美团", fixed=True),
        report("rA2", "A", T + H, "美团"),
        report("rB1", "B", T, "饿了么", fixed=False),
        report("rB2", "B", T + H, None),
        report("rC1", "C", T, "美团"),
        report("rD1", "D", T, "饿了么"),
        report("rF1", "F", late_night, None),
        report("rE1", "E", datetime(2026, 10, 31, 15, 0, tzinfo=UTC), "美团"),
    ]
    with app.state.closer.runtime.db.session(write=True) as s:
        for r in rows[:7]:
            s.add(r)
        s.flush()
        for r in rows[7:]:
            s.add(r)


S1 = {
    "reports": 5,
    "cases": 3,
    "on_time_ack_rate": 0.6667,
    "on_time_resolve_rate": 0.6667,
    "median_hours_to_close": 30.0,
    "reopen_rate": 0.3333,
    "avg_rating": 3.5,
    "returns": 1,
    "extensions": 1,
    "common_issues": 1,
    "nudges": 1,
    "closed": 3,
    "confirmed_fixes": 1,
}
S2 = {
    "reports": 2,
    "cases": 2,
    "on_time_ack_rate": 0.0,
    "on_time_resolve_rate": None,
    "median_hours_to_close": None,
    "reopen_rate": None,
    "avg_rating": None,
    "returns": 0,
    "extensions": 0,
    "common_issues": 0,
    "nudges": 2,
    "closed": 0,
    "confirmed_fixes": 0,
}
TOTAL = {
    **S1,
    "reports": 7,
    "cases": 5,
    "on_time_ack_rate": 0.5,
    "nudges": 3,
}


def get(client: TestClient, who: dict[str, str], **params: str) -> Any:
    """GET /api/v1/stats; asserts 200."""
    r = client.get("/api/v1/stats", params=params, headers=who)
    assert r.status_code == 200, r.text
    return r.json()


def test_november_by_station_for_the_centre(client: TestClient) -> None:
    """Each figure as defined: per station and in total, the Shanghai day deciding the edges."""
    got = get(client, login(client, "yh-centre"), **NOVEMBER, by="station")
    assert (got["from"], got["to"], got["by"], got["timezone"]) == (
        "2026-11-01",
        "2026-11-30",
        "station",
        "Asia/Shanghai",
    )
    assert got["rows"] == [
        {"key": "yh-s1", "name": "开鲁网格站", **S1},
        {"key": "yh-s2", "name": "国和网格站", **S2},
    ]
    assert got["total"] == TOTAL


def test_staff_see_their_own_station_only(client: TestClient) -> None:
    """yh-s2's staff get their row and a total of it alone, in the figures and the export."""
    s2 = login(client, "yh-s2")
    got = get(client, s2, **NOVEMBER, by="station")
    assert got["rows"] == [{"key": "yh-s2", "name": "国和网格站", **S2}]
    assert got["total"] == S2
    assert [r["key"] for r in get(client, s2, **NOVEMBER, by="platform")["rows"]] == ["美团", "饿了么"]


def test_grid_category_and_month_rows(client: TestClient) -> None:
    """The same cases grouped by grid, category and month (E falls in October, G in December)."""
    centre = login(client, "yh-centre")
    by_grid = get(client, centre, **NOVEMBER, by="grid")["rows"]
    assert [(r["key"], r["cases"], r["reports"]) for r in by_grid] == [("yh-g1", 3, 5), ("yh-g2", 2, 2)]
    by_category = get(client, centre, **NOVEMBER, by="category")["rows"]
    assert [(r["key"], r["cases"], r["closed"], r["median_hours_to_close"]) for r in by_category] == [
        ("manhole_cover", 2, 1, 30.0),
        ("sanitation", 3, 2, 30.0),
    ]
    months = get(client, centre, **{"from": "2026-10-01", "to": "2026-12-31"}, by="month")
    assert [(r["key"], r["cases"]) for r in months["rows"]] == [
        ("2026-10", 1),
        ("2026-11", 5),
        ("2026-12", 1),
    ]
    assert months["total"]["cases"] == 7


def test_platform_rows(client: TestClient) -> None:
    """Per platform: its reports in the period, the cases they are in, fixes confirmed, common issues."""
    got = get(client, login(client, "yh-centre"), **NOVEMBER, by="platform")
    picked = [
        (r["key"], r["name"], r["reports"], r["cases"], r["confirmed_fixes"], r["common_issues"])
        for r in got["rows"]
    ]
    assert picked == [
        ("", "未注明", 2, 2, 0, 0),
        ("美团", "美团", 3, 2, 1, 1),
        ("饿了么", "饿了么", 2, 2, 0, 0),
    ]
    assert (got["total"]["reports"], got["total"]["cases"]) == (7, 5)


def test_no_dates_mean_this_month(client: TestClient) -> None:
    """Without from and to: 1 December to today, where only G lies."""
    got = get(client, login(client, "yh-centre"))
    assert (got["from"], got["to"], got["by"]) == ("2026-12-01", "2026-12-02", "station")
    assert [(r["key"], r["cases"]) for r in got["rows"]] == [("yh-s1", 1)]


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({"from": "2026-11-30", "to": "2026-11-01"}, "invalid_range", "'to' is before 'from'."),
        ({"from": "2025-10-31", "to": "2026-11-01"}, "invalid_range", "Ask for at most 366 days at a time."),
        (
            {"from": "2026-13-01", "to": "2026-11-01"},
            "invalid_date",
            "'from' must be a date like 2026-11-01, not '2026-13-01'.",
        ),
        ({"from": "2026-11-01"}, "invalid_range", "Give both 'from' and 'to', or neither (this month)."),
        ({"by": "street"}, "invalid_group", "'by' must be one of station, grid, category, platform, month."),
    ],
)
def test_bad_input_is_422(client: TestClient, params: dict[str, str], code: str, message: str) -> None:
    """Each bad request is refused with its code and a message for people."""
    r = client.get("/api/v1/stats", params=params, headers=login(client, "yh-centre"))
    assert r.status_code == 422
    assert (r.json()["error"]["code"], r.json()["error"]["message"]) == (code, message)


def test_csv_and_xlsx_exports(client: TestClient) -> None:
    """CSV (BOM, Chinese headers) and XLSX (opened back with openpyxl) hold the same rows and total."""
    centre = login(client, "yh-centre")
    r = client.get("/api/v1/stats/export.csv", params={**NOVEMBER, "by": "station"}, headers=centre)
    assert r.status_code == 200
    assert (
        r.headers["content-disposition"]
        == 'attachment; filename="stats-station-all-2026-11-01-2026-11-30.csv"'
    )
    lines = r.content.decode("utf-8").splitlines()
    assert lines[0].startswith("\ufeff编号,名称,上报数,案件数,按时签收率,按时办结率,结案时长中位数(小时)")
    assert lines[1:] == [
        "yh-s1,开鲁网格站,5,3,0.6667,0.6667,30.0,0.3333,3.5,1,1,1,1,3,1",
        "yh-s2,国和网格站,2,2,0.0,,,,,0,0,0,2,0,0",
        ",合计,7,5,0.5,0.6667,30.0,0.3333,3.5,1,1,1,3,3,1",
    ]
    r = client.get(
        "/api/v1/stats/export.xlsx", params={**NOVEMBER, "by": "station", "lang": "en"}, headers=centre
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = openpyxl.load_workbook(io.BytesIO(r.content)).active
    assert sheet is not None
    cells = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert cells[0][:4] == ["key", "name", "reports", "cases"]
    assert cells[1] == [
        "yh-s1",
        "Kailu Grid Station",
        5,
        3,
        0.6667,
        0.6667,
        30,
        0.3333,
        3.5,
        1,
        1,
        1,
        1,
        3,
        1,
    ]
    assert cells[3][:4] == [None, "total", 7, 5]
    assert sheet["E2"].number_format == "0.0%"


def test_the_console_page(client: TestClient) -> None:
    """The centre's page: last month by station with its totals and export links, the 骑手/平台 tab,
    and a reversed custom period shown as a 422 with the reason; staff have no nav link."""
    assert console_sign_in(client, "yh-centre", demo.DEMO_PASSWORD).status_code == 303
    page = client.get("/console/stats", params={"period": "last_month"})
    assert page.status_code == 200
    assert '<a href="/console/stats" aria-current="page">考核统计</a>' in page.text
    assert '<tr data-key="yh-s1"><th scope="row">开鲁网格站</th>' in page.text
    assert '<td data-label="按时签收率">66.7%</td>' in page.text
    assert '<tr class="total"><th scope="row">合计</th>' in page.text
    assert (
        'href="/api/v1/stats/export.csv?from=2026-11-01&amp;to=2026-11-30&amp;by=station&amp;lang=zh"'
        in page.text
    )
    csv = client.get("/api/v1/stats/export.csv?from=2026-11-01&to=2026-11-30&by=station&lang=zh")
    assert csv.status_code == 200 and csv.content.decode().count("\r\n") == 4  # the cookie is enough
    platforms = client.get("/console/stats", params={"period": "last_month", "by": "platform"})
    assert '<tr data-key="美团"><th scope="row">美团</th>' in platforms.text
    assert "<th>骑手确认解决</th>" in platforms.text and "按时签收率" not in platforms.text
    bad = client.get("/console/stats", params={"period": "custom", "from": "2026-11-30", "to": "2026-11-01"})
    assert bad.status_code == 422
    assert '<p class="notice error" role="alert">&#39;to&#39; is before &#39;from&#39;.</p>' in bad.text
    client.cookies.clear()
    assert console_sign_in(client, "yh-s2", demo.DEMO_PASSWORD).status_code == 303
    mine = client.get("/console/stats", params={"period": "last_month"})
    assert 'href="/console/stats"' not in mine.text
    assert 'data-key="yh-s1"' not in mine.text and '<tr data-key="yh-s2">' in mine.text


def test_the_overview_period_switch(client: TestClient) -> None:
    """/overview counts today, the last 7 or the last 30 local days (today included); 7d and 30d also
    give reports per day. On 2 December: 7 days from 26 November hold F's report, F and G opened and F
    closed; 30 days from 3 November hold all of November's seven reports."""
    centre = login(client, "yh-centre")

    def counts(period: str) -> Any:
        r = client.get("/api/v1/overview", params={"period": period}, headers=centre)
        assert r.status_code == 200, r.text
        return r.json()

    today, week, month = counts("today"), counts("7d"), counts("30d")
    assert today["period"] == {
        "name": "today",
        "since": "2026-12-01T16:00:00+00:00",
        "reports": 0,
        "opened": 0,
        "closed": 0,
    }
    assert today["intake_by_day"] == []
    assert {k: week["period"][k] for k in ("since", "reports", "opened", "closed")} == {
        "since": "2026-11-25T16:00:00+00:00",
        "reports": 1,
        "opened": 2,
        "closed": 1,
    }
    assert [(d["day"], d["reports"]) for d in week["intake_by_day"]][-3:] == [
        ("2026-11-30", 1),
        ("2026-12-01", 0),
        ("2026-12-02", 0),
    ]
    assert len(month["intake_by_day"]) == 30 and month["intake_by_day"][0]["day"] == "2026-11-03"
    assert (month["period"]["reports"], month["period"]["opened"], month["period"]["closed"]) == (7, 6, 3)
    assert client.get("/api/v1/overview", params={"period": "1y"}, headers=centre).status_code == 422

    assert console_sign_in(client, "yh-centre", demo.DEMO_PASSWORD).status_code == 303
    page = client.get("/overview", params={"period": "30d"})
    assert '<a href="/overview?period=30d" aria-current="page">近30天</a>' in page.text
    assert '<span class="n" id="n-reports">7</span><span>近30天 · 上报</span>' in page.text
    assert 'data-refresh="/overview?part=body&amp;period=30d"' in page.text
    body = client.get("/overview", params={"period": "7d", "part": "body"})
    assert '<span class="n" id="n-closed">1</span>' in body.text


def test_a_riders_confirmation_counts_as_a_confirmed_fix(app: FastAPI, client: TestClient) -> None:
    """The rider's "fixed" on a resolved case closes it with rider_confirmed set; "not fixed" reopens
    it and counts nothing."""
    with app.state.closer.runtime.db.session(write=True) as s:
        for case_id in ("Y", "N"):
            s.add(case(case_id, "yh-s2", "yh-g2", "sanitation", NOW - 3 * H, status="resolved"))
            s.flush()
            s.add(report("r" + case_id, case_id, NOW - 3 * H, "顺丰"))
    feedback(app, "Y", fixed=True, rating=4)
    feedback(app, "N", fixed=False)
    december = {"from": "2026-12-01", "to": "2026-12-02", "by": "platform"}
    rows = get(client, login(client, "yh-centre"), **december)["rows"]
    assert [(r["key"], r["cases"], r["closed"], r["confirmed_fixes"], r["avg_rating"]) for r in rows] == [
        ("顺丰", 2, 1, 1, 4.0),  # G (also in December) has no report
    ]


def test_the_closer_keeps_the_platform_of_each_routed_report(app: FastAPI) -> None:
    """report.routed's platform lands on the closer's case_report (none given: NULL)."""
    given = open_case(app, station="yh-s2", submitted_at=NOW - H, platform="京东")
    none = open_case(app, station="yh-s2", submitted_at=NOW - H)
    with app.state.closer.runtime.db.session() as s:
        rows = s.execute(
            text("SELECT case_id, platform FROM case_report WHERE case_id IN (:a, :b)"),
            {"a": given, "b": none},
        )
        got = {case_id: platform for case_id, platform in rows}
    assert got == {given: "京东", none: None}

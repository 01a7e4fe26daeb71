"""Topics (议题) over the closer's API, on SQLite and PostgreSQL: a suggestion turned into a topic,
cases linked, the meeting recorded, the topic closed with its outcome carried to each linked case
(exact states and timelines), the events on `topics.events`, and the refusals (403, 404, 409, 422)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from gridloop import demo
from gridloop.clock import FrozenClock
from gridloop.consumer import Incoming
from gridloop.tokens import Principal
from schemas.envelope import CloudEvent
from schemas.events import Location, ReportRouted, make_event
from schemas.reference import Jurisdiction
from services.closer import scope
from tests.db.test_closer_api import (
    MONDAY_9,
    act,
    console_sign_in,
    frozen,
    login,
    running,
)

HOT_SPOT = (31.3300, 121.5150)  # by a metro exit in 殷行's 开鲁 grid
METRE_LAT = 1 / 111_195.0


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen at a working Monday morning."""
    yield from frozen(MONDAY_9)


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[FastAPI]:
    """The closer on SQLite and on PostgreSQL."""
    yield from running(db_url, tmp_path)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    """An HTTPS test client."""
    return TestClient(app, base_url="https://testserver")


def street_scope(who: Principal, j: Jurisdiction) -> frozenset[str] | None:
    """The street-aware rule the scope helper brings (a supervisor sees their stations' streets), so
    these tests prove the topics go through `scope` whatever its rule on this branch."""
    if who.role == "staff":
        return frozenset(s for s in who.stations if s in j.stations)
    streets = {j.stations[s].street_id for s in who.stations if s in j.stations}
    if not streets:
        return None
    return frozenset(s.id for s in j.stations.values() if s.street_id in streets)


@pytest.fixture(autouse=True)
def streets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Supervisors see their own street only."""
    monkeypatch.setattr(scope, "visible_stations", street_scope)


def bikes(
    app: FastAPI,
    north_m: float,
    minutes_ago: int,
    category: str = "shared_bikes",
    station: str = "yh-s1",
    street: str = "yinhang",
    grid: str = "yh-g1",
) -> str:
    """A case opened from one rider's report `north_m` metres north of the hot spot."""
    case_id = "C" + uuid.uuid4().hex[:10].upper()
    at = MONDAY_9 - timedelta(minutes=minutes_ago)
    data = ReportRouted(
        report_id="R" + uuid.uuid4().hex[:10],
        case_id=case_id,
        decision="open",
        category=category,
        station_id=station,
        grid_id=grid,
        street_id=street,
        location=Location(lat=HOT_SPOT[0] + north_m * METRE_LAT, lon=HOT_SPOT[1]),
        place_name="殷高东路地铁站 3 号口",
        description="共享单车堆满人行道",
        rider_ref="rider-" + uuid.uuid4().hex[:6],
        submitted_at=at,
    )
    event = make_event("report.routed", data, source="router", subject=case_id, time=at)
    with app.state.closer.runtime.db.session(write=True) as s:
        app.state.handlers.on_routed(s, Incoming(event, data, "reports.routed", 0, 0, case_id))
    return case_id


def topic_events(app: FastAPI) -> list[tuple[str, CloudEvent]]:
    """What the closer wrote on `topics.events`, in order: (key, event)."""
    with app.state.closer.runtime.db.session() as s:
        rows = s.execute(
            text("SELECT key, payload FROM outbox WHERE topic = 'topics.events' ORDER BY id")
        ).all()
    return [(k, CloudEvent.model_validate_json(p)) for k, p in rows]


def actions_of(client: TestClient, who: dict[str, str], case_id: str) -> list[str]:
    """A case's timeline, as its actions."""
    return [
        e["action"] for e in client.get(f"/api/v1/cases/{case_id}/timeline", headers=who).json()["timeline"]
    ]


def test_a_topic_from_suggestion_to_closed(app: FastAPI, client: TestClient) -> None:
    """Four piled-up-bikes cases near one point suggest a topic; the centre opens it, links a fifth
    (rejected) case by hand, records the meeting and closes it as fixed: new, acknowledged and
    dispatched cases are resolved for their riders to confirm, the held one gets the update only, the
    rejected one is left; four events on `topics.events`, keyed by the topic."""
    a, b, c, d = (bikes(app, n * 30, 60 - n) for n in range(4))
    e = bikes(app, 500, 30)  # too far for the circle, alone in nothing else
    other = bikes(app, 10, 20, category="sanitation")
    s1, centre = login(client, "yh-s1"), login(client, "yh-centre")
    assert act(client, s1, b, "acknowledge").status_code == 200
    assert act(client, s1, c, "acknowledge").status_code == 200
    assert act(client, s1, c, "dispatch", assignee="王师傅").status_code == 200
    assert act(client, centre, d, "hold", note="等待企业清运").status_code == 200
    assert act(client, centre, e, "reject", reason="duplicate").status_code == 200

    listed = client.get("/api/v1/topics", headers=centre).json()
    [suggestion] = listed["suggestions"]
    assert (suggestion["kind"], suggestion["category"], suggestion["street_id"]) == (
        "radius",
        "shared_bikes",
        "yinhang",
    )
    assert suggestion["case_ids"] == [a, b, c, d]
    assert (listed["open"], listed["closed"]) == ([], [])
    assert other not in suggestion["case_ids"]

    r = client.post(
        "/api/v1/topics",
        json={
            "title": "殷高东路地铁站共享单车堆积",
            "body": "街区治理委员会",
            "case_ids": suggestion["case_ids"],
            "suggestion": suggestion["key"],
        },
        headers=centre,
    )
    assert r.status_code == 201, r.text
    topic = r.json()
    tid = topic["topic_id"]
    assert (topic["status"], topic["version"], topic["cases"], topic["street_id"]) == (
        "open",
        1,
        4,
        "yinhang",
    )
    assert [x["case_id"] for x in topic["case_list"]] == [a, b, c, d]
    after = client.get("/api/v1/topics", headers=centre).json()
    assert after["suggestions"] == [] and [t["topic_id"] for t in after["open"]] == [tid]

    linked = client.post(f"/api/v1/topics/{tid}/cases", json={"version": 1, "add": [e]}, headers=centre)
    assert linked.status_code == 200, linked.text
    assert (linked.json()["version"], linked.json()["cases"]) == (2, 5)

    met = client.post(
        f"/api/v1/topics/{tid}/meetings",
        json={
            "version": 2,
            "held_on": "2026-11-25",
            "participants": "街区治理委员会、美团单车、哈啰、市容所、商户代表",
            "decision": "企业每日两次清运，地铁口划定停放区",
            "follow_up_owner": "市容所",
            "follow_up_due": "2026-12-05",
        },
        headers=centre,
    )
    assert met.status_code == 200, met.text
    [meeting] = met.json()["meetings"]
    assert (meeting["held_on"], meeting["follow_up_owner"], met.json()["version"]) == (
        "2026-11-25",
        "市容所",
        3,
    )

    closed = client.post(
        f"/api/v1/topics/{tid}/close",
        json={"version": 3, "outcome": "停放区已划定，企业每日清运", "resolves": True},
        headers=centre,
    )
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert (body["status"], body["version"], body["outcome"], body["resolves"]) == (
        "closed", 4, "停放区已划定，企业每日清运", True
    )  # fmt: skip
    assert (body["updated"], body["resolved"]) == ([a, b, c, d], [a, b, c])
    states = {x["case_id"]: x["status"] for x in body["case_list"]}
    assert states == {a: "resolved", b: "resolved", c: "resolved", d: "on_hold", e: "rejected"}
    assert actions_of(client, centre, a) == ["opened", "update_public", "acknowledge", "dispatch", "resolve"]
    assert actions_of(client, centre, b) == ["opened", "acknowledge", "update_public", "dispatch", "resolve"]
    assert actions_of(client, centre, c) == ["opened", "acknowledge", "dispatch", "update_public", "resolve"]
    assert actions_of(client, centre, d) == ["opened", "hold", "update_public"]
    assert actions_of(client, centre, e) == ["opened", "reject"]
    case_a = client.get(f"/api/v1/cases/{a}", headers=centre).json()
    assert case_a["assignee"] == "街区治理委员会"
    assert [m["text"] for m in case_a["messages"]] == ["议题结论：停放区已划定，企业每日清运"]

    events = topic_events(app)
    assert [(k, ev.type) for k, ev in events] == [
        (tid, "gridloop.topic.opened.v1"),
        (tid, "gridloop.topic.cases_linked.v1"),
        (tid, "gridloop.topic.meeting_recorded.v1"),
        (tid, "gridloop.topic.closed.v1"),
    ]
    assert events[0][1].data["case_ids"] == [a, b, c, d]
    assert events[0][1].data["centre_station_id"] == "yh-centre"
    assert (events[1][1].data["added"], events[1][1].data["case_ids"]) == ([e], [a, b, c, d, e])
    assert "participants" not in events[2][1].data and "follow_up_owner" not in events[2][1].data
    assert events[2][1].data["decision"] == "企业每日两次清运，地铁口划定停放区"
    assert (events[3][1].data["version"], events[3][1].data["resolves"]) == (4, True)

    # a closed topic takes nothing more; its cases are never suggested again
    again = client.post(f"/api/v1/topics/{tid}/close", json={"version": 4, "outcome": "x"}, headers=centre)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "topic_closed")
    final = client.get("/api/v1/topics", headers=centre).json()
    assert final["suggestions"] == [] and [t["topic_id"] for t in final["closed"]] == [tid]


def test_closing_without_a_fix_only_tells_the_riders(app: FastAPI, client: TestClient) -> None:
    """resolves=false: every open case gets the outcome as a public update and keeps its state."""
    ids = [bikes(app, n * 10, 10 - n) for n in range(3)]
    centre = login(client, "yh-centre")
    tid = client.post(
        "/api/v1/topics", json={"title": "单车堆积", "body": "市容所", "case_ids": ids}, headers=centre
    ).json()["topic_id"]
    r = client.post(
        f"/api/v1/topics/{tid}/close", json={"version": 1, "outcome": "企业已承诺加密巡查"}, headers=centre
    )
    assert r.status_code == 200, r.text
    assert (r.json()["updated"], r.json()["resolved"]) == (ids, [])
    assert [x["status"] for x in r.json()["case_list"]] == ["new", "new", "new"]
    assert actions_of(client, centre, ids[0]) == ["opened", "update_public"]


def bad(r: Any, status: int, code: str) -> None:
    """The exact refusal."""
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text


def test_refusals(app: FastAPI, client: TestClient) -> None:
    """403 for staff, 404 for another street's topic or case and an unknown topic, 409 for a stale
    version or a case in a topic already, 422 for bad input."""
    ids = [bikes(app, n * 10, 10 - n) for n in range(3)]
    pengpu = bikes(app, 0, 5, station="pp-s1", street="pengpu", grid="pp-g1")
    s1, centre, pp = login(client, "yh-s1"), login(client, "yh-centre"), login(client, "pp-centre")
    new = {"title": "单车堆积", "body": "街区治理委员会", "case_ids": ids}
    bad(client.post("/api/v1/topics", json=new, headers=s1), 403, "forbidden")
    bad(client.get("/api/v1/topics", headers=s1), 403, "forbidden")
    bad(client.post("/api/v1/topics", json={**new, "title": "  "}, headers=centre), 422, "invalid_input")
    bad(client.post("/api/v1/topics", json={**new, "case_ids": []}, headers=centre), 422, "invalid_input")
    bad(
        client.post("/api/v1/topics", json={**new, "case_ids": [*ids, pengpu]}, headers=centre),
        404,
        "not_found",
    )
    bad(client.post("/api/v1/topics", json={**new, "case_ids": ["CNOPE"]}, headers=centre), 404, "not_found")
    assert client.post("/api/v1/topics", json={**new, "body": 5}, headers=centre).status_code == 422
    tid = client.post("/api/v1/topics", json=new, headers=centre).json()["topic_id"]
    bad(
        client.post("/api/v1/topics", json={**new, "case_ids": ids[:1]}, headers=centre), 409, "case_in_topic"
    )

    bad(client.get(f"/api/v1/topics/{tid}", headers=pp), 404, "not_found")
    assert client.get("/api/v1/topics", headers=pp).json()["open"] == []
    bad(
        client.post(f"/api/v1/topics/{tid}/close", json={"version": 1, "outcome": "x"}, headers=pp),
        404,
        "not_found",
    )
    bad(client.get("/api/v1/topics/TNOPE", headers=centre), 404, "not_found")

    bad(
        client.post(f"/api/v1/topics/{tid}/cases", json={"version": 1, "add": [pengpu]}, headers=centre),
        404,
        "not_found",
    )
    bad(
        client.post(f"/api/v1/topics/{tid}/cases", json={"version": 1, "remove": ["CX"]}, headers=centre),
        422,
        "invalid_input",
    )
    bad(
        client.post(f"/api/v1/topics/{tid}/cases", json={"version": 1, "remove": ids}, headers=centre),
        422,
        "invalid_input",
    )
    removed = client.post(
        f"/api/v1/topics/{tid}/cases", json={"version": 1, "remove": ids[2:]}, headers=centre
    )
    assert (removed.status_code, removed.json()["cases"], removed.json()["version"]) == (200, 2, 2)
    bad(
        client.post(f"/api/v1/topics/{tid}/cases", json={"version": 1, "add": ids[2:]}, headers=centre),
        409,
        "stale_version",
    )

    meeting = {"version": 2, "held_on": "2026-11-25", "participants": "委员会", "decision": "清运"}
    bad(
        client.post(f"/api/v1/topics/{tid}/meetings", json={**meeting, "decision": ""}, headers=centre),
        422,
        "invalid_input",
    )
    late = {**meeting, "follow_up_due": "2026-11-24"}
    bad(client.post(f"/api/v1/topics/{tid}/meetings", json=late, headers=centre), 422, "invalid_input")
    assert (
        client.post(
            f"/api/v1/topics/{tid}/meetings", json={**meeting, "held_on": "soon"}, headers=centre
        ).status_code
        == 422
    )
    too_long = {"version": 2, "outcome": "很" * 496}
    bad(client.post(f"/api/v1/topics/{tid}/close", json=too_long, headers=centre), 422, "invalid_input")
    assert [ev.type for _k, ev in topic_events(app)] == [
        "gridloop.topic.opened.v1",
        "gridloop.topic.cases_linked.v1",
    ]


def csrf_of(html: str) -> str:
    """The page's CSRF token."""
    return html.split('name="csrf" value="')[1].split('"')[0]


def test_the_console_from_suggestion_to_closed(app: FastAPI, client: TestClient) -> None:
    """The centre's console: the suggestion on the list, opened by its form, the topic page's map with
    one dot per case, the meeting and closing forms; a forged form is 403 and changes nothing."""
    ids = [bikes(app, n * 25, 30 - n) for n in range(3)]
    assert console_sign_in(client, "yh-centre", demo.DEMO_PASSWORD).status_code == 303
    listing = client.get("/console/topics")
    assert listing.status_code == 200
    assert listing.text.count('class="suggestion"') == 1 and 'data-cases="3"' in listing.text
    assert "3 件同类案件在 200 米内" in listing.text
    csrf = csrf_of(listing.text)
    form = {"csrf": csrf, "title": "地铁口单车堆积", "body": "街区治理委员会", "case_ids": ",".join(ids)}
    assert client.post("/console/topics", data={**form, "csrf": "forged"}).status_code == 403
    assert topic_events(app) == []
    opened = client.post("/console/topics", data=form, follow_redirects=False)
    assert opened.status_code == 303
    where = opened.headers["location"]
    tid = where.split("/console/topics/")[1].split("?")[0]
    page = client.get(where).text
    assert page.count('class="map-case"') == 3 and page.count('data-case="') == 3
    assert 'id="meeting-form"' in page and 'id="close-form"' in page

    meeting = {
        "csrf": csrf,
        "version": "1",
        "held_on": "2026-11-25",
        "participants": "委员会、企业",
        "decision": "划区",
    }
    # a form that does not fit the model: the page again, naming the field, and nothing recorded
    misdated = client.post(f"/console/topics/{tid}/meetings", data={**meeting, "held_on": "25/11"})
    assert misdated.status_code == 422 and "The form is not valid: held_on:" in misdated.text
    assert len(topic_events(app)) == 1
    assert (
        client.post(f"/console/topics/{tid}/meetings", data=meeting, follow_redirects=False).status_code
        == 303
    )
    stale = client.post(
        f"/console/topics/{tid}/close", data={"csrf": csrf, "version": "1", "outcome": "好了"}
    )
    assert stale.status_code == 409 and 'id="error"' in stale.text
    done = client.post(
        f"/console/topics/{tid}/close",
        data={"csrf": csrf, "version": "2", "outcome": "停放区已划定", "resolves": "1"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    page = client.get(f"/console/topics/{tid}").text
    assert 'data-status="closed"' in page and 'id="topic-outcome">停放区已划定<' in page
    assert 'id="close-form"' not in page and page.count('data-status="resolved"') == 3
    assert [ev.type for _k, ev in topic_events(app)] == [
        "gridloop.topic.opened.v1", "gridloop.topic.meeting_recorded.v1", "gridloop.topic.closed.v1"
    ]  # fmt: skip
    listing = client.get("/console/topics").text
    assert 'class="suggestion"' not in listing and f'data-topic="{tid}"' in listing

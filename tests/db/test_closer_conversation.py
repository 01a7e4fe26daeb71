"""The conversation in the closer, on SQLite and PostgreSQL: notes, public updates and questions over
the API (roles, station scoping, stale versions, bad input), rider replies and nudges from the
reporter's events, the timeline, the live queue, the supervision list and the events sent."""

from __future__ import annotations

import asyncio
import json
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
from schemas.events import CaseNudged, CaseRiderReplied, EventData, make_event
from services.closer.context import Closer
from tests.db.test_closer_api import (
    MONDAY_9,
    console_sign_in,
    frozen,
    listen,
    login,
    open_case,
    outbox,
    running,
    until,
)


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
    """An HTTPS test client (the console's cookies are Secure)."""
    return TestClient(app, base_url="https://testserver")


def say(client: TestClient, who: dict[str, str], case_id: str, kind: str, words: str, **body: Any) -> Any:
    """POST a conversation entry with the case's current version unless one is given."""
    if "version" not in body:
        body["version"] = client.get(f"/api/v1/cases/{case_id}", headers=who).json()["version"]
    return client.post(
        f"/api/v1/cases/{case_id}/messages", json={"kind": kind, "text": words, **body}, headers=who
    )


def from_rider(app: FastAPI, name: str, data: EventData, case_id: str) -> None:
    """Feed the closer's consumer a rider's event from `reports.feedback`."""
    event = make_event(name, data, source="reporter", subject=case_id, time=MONDAY_9)
    handler = {
        "case.rider_replied": app.state.handlers.on_rider_replied,
        "case.nudged": app.state.handlers.on_nudged,
    }
    with app.state.closer.runtime.db.session(write=True) as s:
        handler[name](s, Incoming(event, data, "reports.feedback", 0, 0, case_id))


def report_of(app: FastAPI, case_id: str) -> str:
    """The case's (first) report id."""
    with app.state.closer.runtime.db.session() as s:
        return str(
            s.execute(text("SELECT report_id FROM case_report WHERE case_id = :c"), {"c": case_id}).scalar()
        )


def test_staff_write_notes_updates_and_questions(app: FastAPI, client: TestClient) -> None:
    """Each entry bumps the version, is a timeline row and an event; the note's event has no words;
    the detail and the conversation list show all three in order."""
    cid = open_case(app)
    s1 = login(client, "yh-s1")
    note = say(client, s1, cid, "note", "  骑手电话打不通,明早再去  ")
    assert note.status_code == 201, note.text
    assert note.json()["version"] == 2
    assert note.json()["message"]["kind"] == "note" and note.json()["message"]["public"] is False
    assert note.json()["message"]["text"] == "骑手电话打不通,明早再去"
    update = say(client, s1, cid, "public", "已联系养护单位,明天更换 <b>井盖</b>")
    question = say(client, s1, cid, "question", "是北门还是南门的井盖？")
    assert (update.status_code, question.status_code) == (201, 201)
    assert question.json()["version"] == 4

    detail = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    assert [(m["kind"], m["actor"], m["public"]) for m in detail["messages"]] == [
        ("note", "yh-s1", False),
        ("public", "yh-s1", True),
        ("question", "yh-s1", True),
    ]
    assert [(e["action"], e["version"]) for e in detail["timeline"]] == [
        ("opened", 1), ("comment", 2), ("update_public", 3), ("ask", 4)
    ]  # fmt: skip
    assert detail["timeline"][2]["note"] == "已联系养护单位,明天更换 <b>井盖</b>"  # stored as typed
    listed = client.get(f"/api/v1/cases/{cid}/messages", headers=s1).json()["messages"]
    assert listed == detail["messages"]

    events = outbox(app, cid)
    assert [e.type for e in events] == [
        "gridloop.case.opened.v1",
        "gridloop.case.commented.v1",
        "gridloop.case.updated_public.v1",
        "gridloop.case.question_asked.v1",
    ]
    commented = events[1].data
    assert commented == {
        "case_id": cid,
        "station_id": "yh-s1",
        "version": 2,
        "at": commented["at"],
        "actor": "yh-s1",
        "message_id": note.json()["message"]["id"],
    }
    with app.state.closer.runtime.db.session() as s:
        payloads = [p for (p,) in s.execute(text("SELECT payload FROM outbox")).all()]
    assert not any("骑手电话打不通" in p for p in payloads)  # the note's words never go to Kafka
    assert events[2].data["text"] == "已联系养护单位,明天更换 <b>井盖</b>"
    assert events[2].data["report_ids"] == [report_of(app, cid)]
    assert events[3].data["message_id"] == question.json()["message"]["id"]


def test_roles_scoping_versions_and_bad_input(app: FastAPI, client: TestClient) -> None:
    """Another station's staff get 404; an admin 403; no token 401; a stale version 409 naming the
    current one; empty or oversize text 422; a question on a closed case 409. Nothing was written."""
    cid = open_case(app, station="yh-s1")
    s1, s2 = login(client, "yh-s1"), login(client, "yh-s2")
    centre, admin = login(client, "yh-centre"), login(client, "admin")
    assert say(client, s2, cid, "note", "x", version=1).status_code == 404
    assert say(client, admin, cid, "note", "x", version=1).json()["error"]["code"] == "forbidden"
    assert (
        client.post(
            f"/api/v1/cases/{cid}/messages", json={"kind": "note", "text": "x", "version": 1}
        ).status_code
        == 401
    )
    stale = say(client, s1, cid, "note", "x", version=7)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_version"
    assert stale.json()["error"]["details"]["version"] == 1
    for kind, words, code in (
        ("note", "   ", "text_required"),
        ("public", "字" * 501, "text_too_long"),
        ("note", "字" * 2001, "text_too_long"),
        ("memo", "x", "invalid_kind"),
    ):
        r = say(client, s1, cid, kind, words, version=1)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert (
        client.post(
            f"/api/v1/cases/{cid}/messages", json={"kind": "note", "text": "x"}, headers=s1
        ).status_code
        == 422
    )  # no version
    assert client.get(f"/api/v1/cases/{cid}/messages", headers=s2).status_code == 404
    detail = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    assert detail["version"] == 1 and detail["messages"] == [] and len(outbox(app, cid)) == 1
    # the centre's supervisor writes on any station's case
    assert say(client, centre, cid, "public", "城运中心已督办").status_code == 201
    # a closed case takes notes and updates, but no more questions
    with app.state.closer.runtime.db.session(write=True) as s:
        s.execute(
            text("UPDATE \"case\" SET status = 'closed', is_active = false WHERE case_id = :c"), {"c": cid}
        )
    final = say(client, s1, cid, "question", "还有问题吗？")
    assert final.status_code == 409 and final.json()["error"]["code"] == "case_final"
    assert say(client, s1, cid, "note", "归档").status_code == 201


def test_a_rider_reply_answers_a_question(app: FastAPI, client: TestClient) -> None:
    """A reply from the reporter goes on the conversation (words, the reporter's photo URLs, the
    question) and the timeline; its `cases.events` copy carries ids, not the rider's words."""
    cid = open_case(app)
    s1 = login(client, "yh-s1")
    qid = say(client, s1, cid, "question", "是哪个井盖？").json()["message"]["id"]
    rid = report_of(app, cid)
    reply = CaseRiderReplied(
        report_id=rid,
        case_id=cid,
        reply_id="r" * 22,
        question_id=qid,
        text="北门左边那个",
        photo_ids=["p" * 22],
        at=MONDAY_9,
    )
    from_rider(app, "case.rider_replied", reply, cid)
    detail = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    last = detail["messages"][-1]
    assert (last["kind"], last["actor"], last["text"], last["report_id"], last["question_id"]) == (
        "reply", "rider", "北门左边那个", rid, qid
    )  # fmt: skip
    assert last["photo_urls"] == ["http://127.0.0.1:8001/api/v1/photos/" + "p" * 22]
    assert [e["action"] for e in detail["timeline"]][-1] == "rider_reply" and detail["version"] == 3
    sent = outbox(app, cid)[-1]
    assert sent.type == "gridloop.case.rider_replied.v1"
    assert sent.data["text"] == "" and sent.data["photo_ids"] == [] and sent.data["station_id"] == "yh-s1"
    assert (sent.data["reply_id"], sent.data["question_id"], sent.data["version"]) == ("r" * 22, qid, 3)
    # a question id that is not this case's question is kept as a plain reply
    other = CaseRiderReplied(
        report_id=rid, case_id=cid, reply_id="s" * 22, question_id=9999, text="补充", at=MONDAY_9
    )
    from_rider(app, "case.rider_replied", other, cid)
    assert (
        client.get(f"/api/v1/cases/{cid}/messages", headers=s1).json()["messages"][-1]["question_id"] is None
    )


def test_a_nudge_puts_the_case_on_supervision(app: FastAPI, client: TestClient, clock: FrozenClock) -> None:
    """A rider's 催办 flags the case for the centre (the supervision list shows it), counts it, and
    sends one case.nudged with what notification rules need."""
    cid = open_case(app)
    quiet = open_case(app)
    centre, s1 = login(client, "yh-centre"), login(client, "yh-s1")
    listed = client.get("/api/v1/queue", params={"view": "supervision"}, headers=centre).json()["items"]
    assert listed == []
    clock.advance(timedelta(minutes=5))
    from_rider(app, "case.nudged", CaseNudged(report_id=report_of(app, cid), case_id=cid, at=MONDAY_9), cid)
    listed = client.get("/api/v1/queue", params={"view": "supervision"}, headers=centre).json()["items"]
    assert [c["case_id"] for c in listed] == [cid]
    assert (listed[0]["supervised"], listed[0]["nudges"], listed[0]["nudged_at"]) == (
        True, 1, (MONDAY_9 + timedelta(minutes=5)).isoformat()
    )  # fmt: skip
    assert client.get(f"/api/v1/cases/{quiet}", headers=s1).json()["supervised"] is False
    detail = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    assert [(e["action"], e["actor"]) for e in detail["timeline"]][-1] == ("nudge", "rider")
    nudged = [e for e in outbox(app, cid) if e.type == "gridloop.case.nudged.v1"]
    assert len(nudged) == 1
    assert {
        k: nudged[0].data[k] for k in ("station_id", "category", "priority", "status", "version", "nudges")
    } == {
        "station_id": "yh-s1",
        "category": "manhole_cover",
        "priority": "normal",
        "status": "new",
        "version": 2,
        "nudges": 1,
    }


def test_entries_reach_the_live_queue(app: FastAPI, client: TestClient) -> None:
    """The station's stream gets a change for a note, an update, a question and a nudge — actions
    only, never the words."""
    ctx: Closer = app.state.closer
    cid = open_case(app)
    s1 = login(client, "yh-s1")

    async def scenario() -> list[str]:
        chunks: list[str] = []
        task = listen(app, "yh-s1", chunks)
        await until(lambda: ctx.poller.streams == 1)
        for kind in ("note", "public", "question"):
            await asyncio.to_thread(say, client, s1, cid, kind, f"秘密{kind}")
        await asyncio.to_thread(
            from_rider,
            app,
            "case.nudged",
            CaseNudged(report_id=report_of(app, cid), case_id=cid, at=MONDAY_9),
            cid,
        )
        ctx.changed()
        await until(lambda: sum('"action": "nudge"' in c for c in chunks) == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return chunks

    chunks = asyncio.run(scenario())
    changes = [json.loads(c.split("data: ", 1)[1]) for c in chunks if "event: change" in c]
    assert [(c["case_id"], c["action"]) for c in changes] == [
        (cid, "comment"), (cid, "update_public"), (cid, "ask"), (cid, "nudge")
    ]  # fmt: skip
    assert not any("秘密" in c for c in chunks)


def test_the_console_case_page_writes_and_escapes(app: FastAPI, client: TestClient) -> None:
    """The case page lists the conversation (HTML escaped) and its form writes an entry (CSRF-checked)."""
    cid = open_case(app)
    assert console_sign_in(client, "yh-s1", demo.DEMO_PASSWORD).status_code == 303
    page = client.get(f"/console/cases/{cid}").text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    forged = client.post(
        f"/console/cases/{cid}/say", data={"csrf": "x", "kind": "note", "text": "x", "version": "1"}
    )
    assert forged.status_code == 403
    done = client.post(
        f"/console/cases/{cid}/say",
        data={"csrf": csrf, "kind": "public", "text": "<script>alert(1)</script>明天修", "version": "1"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/console/cases/{cid}?done=say_public"
    page = client.get(done.headers["location"]).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;明天修" in page and "<script>alert(1)" not in page
    assert 'data-kind="public"' in page
    stale = client.post(
        f"/console/cases/{cid}/say", data={"csrf": csrf, "kind": "note", "text": "x", "version": "1"}
    )
    assert stale.status_code == 409 and 'id="error"' in stale.text

"""Staff thank a case's riders (致谢) in the closer, on SQLite and PostgreSQL: the API (201 with one
`case.riders_thanked` event naming the case's reports; 404 for an unknown case or another station's;
403 for an admin; 422 for a bad preset or words; 409 on a second thank-you or a rejected case) and
the console case page's form (CSRF-checked, escaped)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from gridloop import demo
from gridloop.clock import FrozenClock
from tests.db.test_closer_api import (
    MONDAY_9,
    console_sign_in,
    frozen,
    login,
    open_case,
    outbox,
    running,
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


def thank(client: TestClient, who: dict[str, str], case_id: str, **body: Any) -> Any:
    """POST a thank-you (preset `reported` unless given)."""
    return client.post(f"/api/v1/cases/{case_id}/thanks", json={"preset": "reported", **body}, headers=who)


def thanks_rows(app: FastAPI) -> int:
    """Rows in the closer's case_thanks."""
    with app.state.closer.runtime.db.session() as s:
        return int(s.execute(text("SELECT count(*) FROM case_thanks")).scalar() or 0)


def test_staff_thank_the_riders_once(app: FastAPI, client: TestClient) -> None:
    """The case's station thanks its riders: 201 with the thank-you and the new version, a timeline
    row and one `case.riders_thanked` naming every report; the detail shows it; a second one is 409
    `already_thanked` and writes nothing."""
    cid = open_case(app)
    second = open_case(app, decision="merge", case_id=cid)
    assert second == cid
    s1 = login(client, "yh-s1")
    r = thank(client, s1, cid, text="  谢谢您，井盖已更换  ")
    assert r.status_code == 201, r.text
    sent = {"preset": "reported", "text": "谢谢您，井盖已更换", "actor": "yh-s1", "at": MONDAY_9.isoformat()}
    assert r.json() == {"thanks": sent, "version": 3}
    detail = client.get(f"/api/v1/cases/{cid}", headers=s1).json()
    assert detail["thanks"] == r.json()["thanks"]
    assert [(e["action"], e["version"], e["note"]) for e in detail["timeline"]][-1] == (
        "thank_riders",
        3,
        "谢谢您，井盖已更换",
    )
    thanked = [e for e in outbox(app, cid) if e.type == "gridloop.case.riders_thanked.v1"]
    assert len(thanked) == 1
    assert thanked[0].data == {
        "case_id": cid,
        "station_id": "yh-s1",
        "version": 3,
        "at": thanked[0].data["at"],
        "preset": "reported",
        "text": "谢谢您，井盖已更换",
        "report_ids": detail["report_ids"],
    }
    assert len(detail["report_ids"]) == 2

    again = thank(client, login(client, "yh-centre"), cid, preset="safety")
    assert again.status_code == 409 and again.json()["error"] == {
        "code": "already_thanked",
        "message": "The riders of this case were already thanked.",
        "details": None,
    }
    assert thanks_rows(app) == 1 and len(outbox(app, cid)) == 3  # opened, merged, thanked


def test_scope_roles_and_bad_input(app: FastAPI, client: TestClient) -> None:
    """Unknown case and another station's staff: 404; admin: 403; no token: 401; an unknown preset,
    words over 200 characters or a missing preset: 422; a rejected case: 409. Nothing was written."""
    cid = open_case(app, station="yh-s1")
    s1, s2, admin = login(client, "yh-s1"), login(client, "yh-s2"), login(client, "admin")
    assert thank(client, s1, "C_NO_SUCH").status_code == 404
    hidden = thank(client, s2, cid)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    refused = thank(client, admin, cid)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert client.post(f"/api/v1/cases/{cid}/thanks", json={"preset": "reported"}).status_code == 401
    for body, code, field in (
        ({"preset": "medal"}, "invalid_preset", "preset"),
        ({"preset": "reported", "text": "谢" * 201}, "text_too_long", "text"),
    ):
        r = client.post(f"/api/v1/cases/{cid}/thanks", json=body, headers=s1)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
        assert r.json()["error"]["details"] == {"field": field}
    assert client.post(f"/api/v1/cases/{cid}/thanks", json={"text": "x"}, headers=s1).status_code == 422
    assert thanks_rows(app) == 0 and len(outbox(app, cid)) == 1
    with app.state.closer.runtime.db.session(write=True) as s:
        s.execute(
            text("UPDATE \"case\" SET status = 'rejected', is_active = false WHERE case_id = :c"), {"c": cid}
        )
    rejected = thank(client, s1, cid)
    assert rejected.status_code == 409 and rejected.json()["error"]["code"] == "case_rejected"
    assert thanks_rows(app) == 0


def test_the_console_form_thanks_the_riders(app: FastAPI, client: TestClient) -> None:
    """The case page's 致谢 form (CSRF-checked) sends it once: then the page shows the thank-you
    (escaped) instead of the form; a forged post is 403 and writes nothing."""
    cid = open_case(app)
    assert console_sign_in(client, "yh-s1", demo.DEMO_PASSWORD).status_code == 303
    page = client.get(f"/console/cases/{cid}").text
    assert 'id="thanks-form"' in page and page.count('name="preset"') == 3
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    forged = client.post(f"/console/cases/{cid}/thanks", data={"csrf": "x", "preset": "reported"})
    assert forged.status_code == 403 and thanks_rows(app) == 0
    done = client.post(
        f"/console/cases/{cid}/thanks",
        data={"csrf": csrf, "preset": "safety", "text": "<b>好样的</b>"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/console/cases/{cid}?done=thank_riders"
    page = client.get(done.headers["location"]).text
    assert 'id="thanks-form"' not in page and 'id="thanks-sent" data-preset="safety"' in page
    assert "&lt;b&gt;好样的&lt;/b&gt;" in page and "<b>好样的</b>" not in page
    assert "感谢您守护街道安全" in page
    again = client.post(f"/console/cases/{cid}/thanks", data={"csrf": csrf, "preset": "reported"})
    assert again.status_code == 409 and 'id="error"' in again.text
    assert thanks_rows(app) == 1

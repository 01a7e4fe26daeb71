"""The riders' JSON post served by plain ASGI (services.reporter.fastpath) answers as FastAPI's route does,
and reports arriving together share one transaction without mixing up their answers."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from gridloop import metrics, migrate
from gridloop.groupcommit import GroupCommit
from gridloop.settings import Settings
from schemas.reference import Place
from services.reporter import cli as reporter_cli
from services.reporter.app import build
from services.reporter.fastpath import JsonReportFastPath

SECRET = "test-signing-key-" + "y" * 32


def make_reporter(db_url: str, var_dir: Path, fast: bool) -> tuple[FastAPI, list[Place]]:
    """The real reporter app on a migrated database with the demo places; `fast=False` takes the
    fast path out, so FastAPI's own route answers."""
    settings = Settings(
        var_dir=var_dir,
        reporter_database_url=db_url,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        jwt_secret=SECRET,
    )
    migrate.upgrade("reporter", db_url)
    app = build(settings)
    if not fast:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not JsonReportFastPath]
    places = reporter_cli.load_places(app.state.reporter.runtime.db, app.state.jurisdiction)
    return app, places


@pytest.fixture
def apps(db_url: str, tmp_path: Path) -> Iterator[tuple[FastAPI, FastAPI, list[Place]]]:
    """The reporter with and without the fast path, each on a database of its own (SQLite, PostgreSQL)."""
    other = f"sqlite:///{tmp_path / 'slow.db'}"
    fast, places = make_reporter(db_url, tmp_path / "a", fast=True)
    slow, _ = make_reporter(other, tmp_path / "b", fast=False)
    yield fast, slow, places
    fast.state.reporter.runtime.db.dispose()
    slow.state.reporter.runtime.db.dispose()


def _shape(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    """Status, body with ids blanked, and the headers that matter, of one answer."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict) and "report_id" in body:
        body = {**body, "report_id": "R", "tracking_url": re.sub(r"/t/\S+$", "/t/R", body["tracking_url"])}
    cookie = response.headers.get("set-cookie", "")
    headers = {
        "content-type": response.headers.get("content-type", ""),
        "retry-after": response.headers.get("retry-after", ""),
        "set-cookie": re.sub(r"gl_rider=[^;]+", "gl_rider=T", cookie),
    }
    return response.status_code, body, headers


def test_fast_path_answers_as_the_fastapi_route(apps: tuple[FastAPI, FastAPI, list[Place]]) -> None:
    """Good reports, bad JSON, bad fields, bad keys, oversize bodies, unknown codes, replays, conflicts."""
    fast, slow, places = apps
    code = places[0].code
    key = str(uuid.uuid4())
    requests: list[tuple[dict[str, str], bytes]] = [
        ({}, b'{"code": "%s", "category": "manhole_cover", "description": "<b>x</b>"}' % code.encode()),
        ({"Cookie": "gl_rider=" + "k" * 24}, b'{"code": "%s", "category": "sanitation"}' % code.encode()),
        ({"Idempotency-Key": key}, b'{"code": "%s", "category": "sanitation"}' % code.encode()),
        ({"Idempotency-Key": key}, b'{"code": "%s", "category": "sanitation"}' % code.encode()),
        ({"Idempotency-Key": key}, b'{"code": "%s", "category": "other"}' % code.encode()),
        ({"Idempotency-Key": "k" * 101}, b'{"code": "%s", "category": "sanitation"}' % code.encode()),
        ({}, b"{nope"),
        ({}, b"[1, 2]"),
        ({}, b'{"code": "%s"}' % code.encode()),
        ({}, b'{"code": "%s", "category": "sanitation", "extra": 1}' % code.encode()),
        ({}, b'{"code": "HELLO", "category": "sanitation"}'),
        ({}, b'{"code": "2345678%s", "category": "sanitation"}' % b"X"),
        ({}, b'{"category": "other"}'),
        (
            {},
            b'{"code": "%s", "category": "sanitation", "description": "%s"}' % (code.encode(), b"x" * 70000),
        ),
    ]
    with TestClient(fast) as a, TestClient(slow) as b:
        for extra, body in requests:
            headers = {"Content-Type": "application/json", **extra}
            got = a.post("/api/v1/reports", content=body, headers=headers)
            want = b.post("/api/v1/reports", content=body, headers=headers)
            assert _shape(got) == _shape(want), body[:80]
        a.cookies.clear()
        first = a.post("/api/v1/reports", json={"code": code, "category": "sanitation"})
        assert first.status_code == 202 and "HttpOnly" in first.headers["set-cookie"]


def test_fast_path_counts_http_metrics_by_route(apps: tuple[FastAPI, FastAPI, list[Place]]) -> None:
    """The fast path's answers are in the HTTP metrics under the route template, by status class."""
    fast, _, places = apps

    def count(cls: str) -> float:
        value = metrics.REGISTRY.get_sample_value(
            "gridloop_http_requests_total",
            {"service": "reporter", "method": "POST", "route": "/api/v1/reports", "status": cls},
        )
        return value or 0.0

    before_2xx, before_4xx = count("2xx"), count("4xx")
    with TestClient(fast) as client:
        assert (
            client.post("/api/v1/reports", json={"code": places[1].code, "category": "other"}).status_code
            == 202
        )
        assert (
            client.post(
                "/api/v1/reports", content=b"{", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
    assert (count("2xx"), count("4xx")) == (before_2xx + 1, before_4xx + 1)


def test_reports_arriving_together_keep_their_own_answers(apps: tuple[FastAPI, FastAPI, list[Place]]) -> None:
    """A double tap (one Idempotency-Key sent many times at once, with the token the scan page gave)
    stores one report and answers it every time; other reports in the same transaction, good or
    refused, keep their own answers."""
    fast, _, places = apps
    code = places[2].code
    key = str(uuid.uuid4())
    intake = fast.state.reporter.intake

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=fast)
        async with httpx.AsyncClient(transport=transport, base_url="http://reporter") as client:
            assert (await client.get(f"/r/{code}")).status_code == 200  # the page gives the rider token
            same = {"code": code, "category": "sanitation", "description": "double tap"}
            posts = [
                client.post("/api/v1/reports", json=same, headers={"Idempotency-Key": key}) for _ in range(6)
            ]
            posts += [
                client.post(
                    "/api/v1/reports", json={"code": code, "category": "other", "description": f"r{i}"}
                )
                for i in range(6)
            ]
            posts.append(client.post("/api/v1/reports", json={"code": "HELLO", "category": "other"}))
            return list(await asyncio.gather(*posts))

    batches_before = intake.batches
    answers = asyncio.run(burst())
    assert [r.status_code for r in answers] == [202] * 12 + [422]
    taps = {r.json()["report_id"] for r in answers[:6]}
    others = {r.json()["report_id"] for r in answers[6:12]}
    assert len(taps) == 1 and len(others) == 6 and not taps & others
    assert intake.batches - batches_before < 13  # they shared transactions
    with fast.state.reporter.runtime.db.session() as s:
        stored = s.execute(text("SELECT count(*) FROM report WHERE description = 'double tap'")).scalar()
        outbox = s.execute(text("SELECT count(*) FROM outbox WHERE topic = 'reports.submitted'")).scalar()
    assert stored == 1
    assert outbox == 7  # one event per stored report, none for the replays or the refusal


def test_a_refusal_replayed_by_the_careful_pass_counts_once(
    apps: tuple[FastAPI, FastAPI, list[Place]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group commit runs a batch a second time, each work in its savepoint, when the straight pass
    fails; a refusal raised in both passes is one refused request, counted once (fast path and route)."""
    fast, slow, places = apps
    straight = GroupCommit._attempt

    def straight_then_careful(self: GroupCommit, works: Any, careful: bool) -> Any:
        outcome = straight(self, works, careful)
        if not careful:
            raise RuntimeError("the straight pass failed: the careful pass replays the batch")
        return outcome

    monkeypatch.setattr(GroupCommit, "_attempt", straight_then_careful)

    def refused() -> float:
        value = metrics.REGISTRY.get_sample_value(
            "gridloop_reports_rejected_total", {"reason": "unknown_category"}
        )
        return value or 0.0

    for app in (fast, slow):
        before = refused()
        with TestClient(app) as client:
            answer = client.post("/api/v1/reports", json={"code": places[0].code, "category": "no_such"})
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "unknown_category"
        assert refused() == before + 1

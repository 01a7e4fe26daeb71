"""Correlation ids and the access log on real databases and a real app, and a real service process
that logs JSON only (issue 14: JSON logs as an option, with the ids; an access log that can be on)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gridloop import migrate
from gridloop.consumer import IdempotentConsumer, Incoming, _Raw
from gridloop.db import Database
from gridloop.groupcommit import GroupCommit
from gridloop.logs import current_ids, log_context
from gridloop.rawsql import Tx
from gridloop.settings import Settings
from schemas.events import ReportFeedback, make_event
from tests.support.logs import captured_logs, ids_of, json_lines
from tests.support.plumbing import TABLES, Base
from tests.support.reporter import reporter_app
from tests.support.stacks import wait_for


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A fresh database with the plumbing tables."""
    database = Database(db_url, Base.metadata)
    database.create_all()
    yield database
    database.dispose()


def feedback(offset: int, name: str) -> _Raw:
    """A `report.feedback` record of report r-<name> on case c-<name>, with event id e-<name>."""
    at = datetime(2026, 11, 24, tzinfo=UTC)
    data = ReportFeedback(report_id=f"r-{name}", case_id=f"c-{name}", fixed=True, comment=name, at=at)
    event = make_event(
        "report.feedback", data, source="reporter", subject=f"c-{name}", time=at, event_id=f"e-{name}"
    )
    return _Raw("reports.feedback", 0, offset, f"c-{name}", event.model_dump_json().encode())


def of(name: str) -> dict[str, str]:
    """The ids of the record `feedback(_, name)`."""
    return {"event_id": f"e-{name}", "report_id": f"r-{name}", "case_id": f"c-{name}"}


def test_consumer_lines_carry_the_ids_of_their_event_only(db: Database) -> None:
    """Within one batch, what a handler logs carries its own event's ids and never the next one's;
    the consumer's batch-level line carries none; the dead-letter line names the poisoned event."""

    def handler(_session: Any, item: Incoming) -> None:
        logging.getLogger("gridloop.test").info("applying %s", item.data.comment)  # type: ignore[attr-defined]
        if item.data.comment == "poison":  # type: ignore[attr-defined]
            raise ValueError("cannot apply this one")

    consumer = IdempotentConsumer(
        group="g",
        topics=["reports.feedback"],
        db=db,
        tables=TABLES,
        handlers={"report.feedback": handler},
        service="test",
        attempts=1,
        plain_sql=True,
    )
    with captured_logs() as out:
        consumer.apply_batch([feedback(0, "a"), feedback(1, "poison"), feedback(2, "b")])
    seen = [(line["message"], ids_of(line)) for line in json_lines(out.getvalue())]
    assert seen == [
        ("applying a", of("a")),
        ("applying poison", of("poison")),
        ("g: batch of 3 needs a careful pass (cannot apply this one)", {}),
        ("applying a", of("a")),
        ("applying poison", of("poison")),
        ("applying b", of("b")),
        ("g: dead-lettered reports.feedback/0/1: ValueError: cannot apply this one", of("poison")),
    ]
    assert current_ids() == {}


def test_group_commit_work_runs_in_its_callers_context(db: Database) -> None:
    """Requests sharing one group-commit transaction each log with their own ids (the shared drainer
    task was started by the first of them and must not lend it its context)."""
    commit = GroupCommit(db)

    def work(_tx: Tx) -> dict[str, str]:
        return current_ids()

    async def request(request_id: str) -> dict[str, str]:
        with log_context(request_id=request_id):
            return await commit.run(work)

    async def both() -> list[dict[str, str]]:
        return list(await asyncio.gather(request("q-1"), request("q-2")))

    assert asyncio.run(both()) == [{"request_id": "q-1"}, {"request_id": "q-2"}]
    assert commit.batches == 1


def access_lines(text: str) -> list[dict[str, Any]]:
    """The access log's lines."""
    return [line for line in json_lines(text) if line["logger"] == "gridloop.access"]


def test_access_log_on_a_real_app(db_url: str, tmp_path: Path) -> None:
    """GRIDLOOP_ACCESS_LOG on: one line per request (the riders' fast path included), the route's
    report id on it, its request id echoed; no tracking secret, cookie or bearer token anywhere."""
    app, places = reporter_app(db_url, tmp_path / "var", access_log=True)
    client = TestClient(app)
    try:
        with captured_logs(service="reporter") as out:
            posted = client.post(
                "/api/v1/reports",
                json={"code": places[0].code, "category": "manhole_cover"},
                headers={"X-Request-ID": "rider-1"},
            )
            report_id, key = posted.json()["report_id"], posted.json()["tracking_url"].split("k=")[1]
            page = client.get(
                f"/t/{report_id}?k={key}",
                headers={"Authorization": "Bearer staff-token-123", "Cookie": "gl_session=session-456"},
            )
            missing = client.get("/api/v1/no-such-thing")
            health = client.get("/healthz", headers={"X-Request-ID": "bad id"})
        answers = [posted, page, missing, health]
        assert [r.status_code for r in answers] == [202, 200, 404, 200]
        assert posted.headers["X-Request-ID"] == "rider-1"
        assert len(health.headers["X-Request-ID"]) == 32 and health.headers["X-Request-ID"] != "bad id"
        lines = access_lines(out.getvalue())
        assert [(line["method"], line["path"], line["status"]) for line in lines] == [
            ("POST", "/api/v1/reports", 202),
            ("GET", f"/t/{report_id}", 200),
            ("GET", "/api/v1/no-such-thing", 404),
            ("GET", "/healthz", 200),
        ]
        assert [line["request_id"] for line in lines] == [r.headers["X-Request-ID"] for r in answers]
        assert [line.get("report_id") for line in lines] == [None, report_id, None, None]
        assert {line["client"] for line in lines} == {"testclient"}
        assert {line["service"] for line in lines} == {"reporter"}
        for secret in (key, "staff-token-123", "session-456"):
            assert secret not in out.getvalue()
    finally:
        app.state.reporter.runtime.db.dispose()


def test_access_log_is_off_by_default(db_url: str, tmp_path: Path) -> None:
    """Without GRIDLOOP_ACCESS_LOG no request is logged, yet each answer still carries its request id."""
    app, _places = reporter_app(db_url, tmp_path / "var")
    try:
        with captured_logs(service="reporter") as out:
            answers = [TestClient(app).get("/healthz") for _ in range(3)]
        assert access_lines(out.getvalue()) == []
        assert len({r.headers["X-Request-ID"] for r in answers}) == 3
    finally:
        app.state.reporter.runtime.db.dispose()


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_service_process_logs_only_json_lines(tmp_path: Path) -> None:
    """`gridloop reporter` with GRIDLOOP_LOG_FORMAT=json: every line on stderr, uvicorn's and the
    access log's included, is one JSON object of the reporter; nothing goes to stdout."""
    var = tmp_path / "var"
    migrate.upgrade("reporter", Settings(var_dir=var).db_url("reporter"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLOOP_") and k != "DATABASE_URL"}
    env.update(
        GRIDLOOP_VAR_DIR=str(var),
        GRIDLOOP_LOG_FORMAT="json",
        GRIDLOOP_ACCESS_LOG="true",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",  # nothing there: the broker's retries are logged too
    )
    with (tmp_path / "out").open("w+") as stdout, (tmp_path / "err").open("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridloop.cli", "reporter", "--port", str(port)],
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=tmp_path,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: httpx.get(f"{base}/healthz").status_code == 200, timeout=60, what="the reporter")
            assert httpx.get(f"{base}/healthz", headers={"X-Request-ID": "probe-1"}).status_code == 200
            assert httpx.get(f"{base}/api/v1/reports/R-1?k=secret-789").status_code == 404
        finally:
            proc.send_signal(signal.SIGTERM)
            # the handler main() installs turns it into a clean stop: status 0, not death by the signal
            assert proc.wait(timeout=30) == 0
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    assert out == ""
    lines = [json.loads(line) for line in err.splitlines()]  # raises on any line that is not JSON
    assert {line["service"] for line in lines} == {"reporter"}
    messages = [(line["logger"], line["message"]) for line in lines]
    assert ("uvicorn.error", "Application startup complete.") in messages
    assert ("uvicorn.error", f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)") in messages
    access = [line for line in lines if line["logger"] == "gridloop.access"]
    assert [(line["path"], line["status"], line.get("report_id")) for line in access] == [
        ("/healthz", 200, None),
        ("/healthz", 200, None),
        ("/api/v1/reports/R-1", 404, "R-1"),
    ]
    assert access[1]["request_id"] == "probe-1"
    assert "secret-789" not in err

"""Riders recognised in the reporter, on SQLite and PostgreSQL: the rider number kept only as a
keyed pseudonym (nowhere in clear: database, outbox, logs, public answers), migration 0010 on a
database holding clear numbers, staff's thank-you from `cases.events` (kept once, pushed once, on
the riders' own tracking pages only) and a rider's contributions on /my."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from gridloop import migrate
from gridloop.db import make_engine
from gridloop.settings import get_settings
from schemas.events import CaseReportMerged, CaseRidersThanked
from schemas.reference import Place
from services.reporter.models import Base
from services.reporter.reports import ReportIn, request_hash
from services.reporter.riders import rider_no_ref
from tests.db.test_reporter_push import SUBJECT, apply, moved, new_report, opened, rows
from tests.support.logs import captured_logs
from tests.support.pushservice import BrowserKeys
from tests.support.reporter import REPORTER_SECRET, reporter_app

NUMBER = "MT-20261203"
DIGITS = "20261203"


@pytest.fixture
def reporter(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FastAPI, dict[str, Place]]]:
    """The reporter app, with pushes allowed to loopback only."""
    monkeypatch.setenv("GRIDLOOP_PUSH_HOSTS", "127.0.0.1")
    monkeypatch.setenv("GRIDLOOP_VAPID_SUBJECT", SUBJECT)
    app, places = reporter_app(db_url, tmp_path / "var")
    yield app, {p.place_id: p for p in places}
    app.state.reporter.runtime.db.dispose()


def everything_stored(app: FastAPI) -> str:
    """Every row of every reporter table, as text."""
    out = []
    with app.state.reporter.runtime.db.session() as s:
        for table in Base.metadata.sorted_tables:
            out += [repr(tuple(r)) for r in s.execute(sa.select(table)).all()]
    return "\n".join(out)


def test_the_rider_number_is_kept_only_as_a_pseudonym(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """A report with a platform and rider number stores only the keyed pseudonym (the same for the
    same number however typed, another for another platform); the clear number is in no table (the
    outbox and the request hash included), no log line and no public or owner answer; a replay of the
    same request answers the same report."""
    app, places = reporter
    rider = TestClient(app)
    body = {
        "code": places["yh-p01"].code,
        "category": "manhole_cover",
        "platform": "美团",
        "rider_no": NUMBER,
    }
    with captured_logs("DEBUG") as logged:
        logging.getLogger("gridloop").setLevel(logging.DEBUG)
        first = rider.post("/api/v1/reports", json=body, headers={"Idempotency-Key": "k-1"})
        replay = rider.post("/api/v1/reports", json=body, headers={"Idempotency-Key": "k-1"})
        typed = rider.post("/api/v1/reports", json={**body, "rider_no": " mt-20261203 "})
        other = rider.post("/api/v1/reports", json={**body, "platform": "饿了么"})
    assert [r.status_code for r in (first, replay, typed, other)] == [202, 202, 202, 202]
    report_id = first.json()["report_id"]
    assert replay.json()["report_id"] == report_id
    refs = rows(
        app,
        "SELECT report_id, rider_no_ref, request_hash FROM report WHERE report_id IN (:a, :b, :c)",
        a=report_id,
        b=typed.json()["report_id"],
        c=other.json()["report_id"],
    )
    by_id = {r[0]: (r[1], r[2]) for r in refs}
    expected = rider_no_ref("美团", NUMBER, REPORTER_SECRET)
    assert expected is not None and len(expected) == 32
    assert by_id[report_id][0] == expected == by_id[typed.json()["report_id"]][0]
    assert by_id[other.json()["report_id"]][0] == rider_no_ref("饿了么", NUMBER, REPORTER_SECRET) != expected
    # the stored request hash is not a plain digest of the request that held the number
    assert by_id[report_id][1] != request_hash(ReportIn.model_validate(body))

    stored = everything_stored(app)
    assert DIGITS not in stored
    payloads = [p for (p,) in rows(app, "SELECT payload FROM outbox")]
    assert len(payloads) == 3 and not any(DIGITS in p for p in payloads)
    assert DIGITS not in logged.getvalue()

    stranger = TestClient(app)
    answers = [
        stranger.get(f"/api/v1/reports/{report_id}").text,
        stranger.get(f"/t/{report_id}").text,
        rider.get(f"/api/v1/reports/{report_id}").text,
        rider.get(f"/t/{report_id}").text,
        rider.get("/my").text,
        rider.get("/api/v1/me/reports").text,
        stranger.get("/open311/v2/requests.json").text,
        stranger.get(f"/open311/v2/requests/{report_id}.json").text,
    ]
    assert not [a for a in answers if DIGITS in a or "rider_no" in a]


def _filler(column: sa.Column[Any]) -> Any:
    """A value for a NOT NULL column of an old `report` row."""
    kind = column.type.python_type
    if kind is bool:
        return False
    if kind is int:
        return 0
    if kind is float:
        return 0.0
    if kind is datetime:
        return datetime(2026, 11, 1, tzinfo=UTC)
    return "x"


def test_migration_0010_converts_clear_numbers(db_url: str) -> None:
    """A database at 0008 with rider numbers in clear: after 0010 each row has the pseudonym the
    service computes, its request hash is re-keyed, the clear column is gone and the number is
    nowhere; a row without a number stays without one; downgrading brings back only an empty column."""
    migrate.upgrade("reporter", db_url, "0008")
    engine = make_engine(db_url)
    try:
        report = sa.Table("report", sa.MetaData(), autoload_with=engine)
        required = {c.name: _filler(c) for c in report.columns if not c.nullable}
        old = [
            {
                **required,
                "report_id": "r_a",
                "request_hash": "h" * 64,
                "platform": "美团",
                "rider_no": NUMBER,
            },
            {**required, "report_id": "r_b", "request_hash": "g" * 64, "platform": None, "rider_no": "SF-7"},
            {**required, "report_id": "r_c", "request_hash": "f" * 64, "platform": "顺丰", "rider_no": None},
        ]
        with engine.begin() as c:
            c.execute(report.insert(), old)
        migrate.upgrade("reporter", db_url, secret=REPORTER_SECRET)
        with engine.connect() as c:
            got = c.execute(
                text("SELECT report_id, rider_no_ref, request_hash FROM report ORDER BY report_id")
            ).all()
            columns = {col["name"] for col in sa.inspect(c).get_columns("report")}
            dump = "\n".join(repr(tuple(r)) for r in c.execute(text("SELECT * FROM report")).all())
        assert "rider_no" not in columns and "rider_no_ref" in columns
        assert [(r[0], r[1]) for r in got] == [
            ("r_a", rider_no_ref("美团", NUMBER, REPORTER_SECRET)),
            ("r_b", rider_no_ref(None, "SF-7", REPORTER_SECRET)),
            ("r_c", None),
        ]
        assert got[0][2] not in ("h" * 64,) and len(got[0][2]) == 64
        assert got[1][2] != "g" * 64 and got[2][2] == "f" * 64  # no number: the hash is kept
        assert DIGITS not in dump and "SF-7" not in dump
        cfg = migrate.alembic_config("reporter", db_url)
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0008")
        with engine.connect() as c:
            back = c.execute(text("SELECT report_id, rider_no FROM report ORDER BY report_id")).all()
        assert [tuple(r) for r in back] == [("r_a", None), ("r_b", None), ("r_c", None)]
    finally:
        engine.dispose()


def test_migration_0010_refuses_to_convert_without_the_secret(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With clear numbers to convert and no secret (none handed in, none configured, no
    var/jwt.secret), the migration stops and the database stays at 0008 with its numbers; a
    database without numbers needs no secret."""
    monkeypatch.delenv("GRIDLOOP_JWT_SECRET", raising=False)
    monkeypatch.setenv("GRIDLOOP_VAR_DIR", str(tmp_path / "empty-var"))
    get_settings.cache_clear()
    migrate.upgrade("reporter", db_url, "0008")
    engine = make_engine(db_url)
    try:
        report = sa.Table("report", sa.MetaData(), autoload_with=engine)
        required = {c.name: _filler(c) for c in report.columns if not c.nullable}
        with engine.begin() as c:
            c.execute(report.insert(), [{**required, "report_id": "r_a", "rider_no": NUMBER}])
        with pytest.raises(RuntimeError, match="GRIDLOOP_JWT_SECRET"):
            migrate.upgrade("reporter", db_url)
        with engine.connect() as c:
            assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0008"
            assert c.execute(text("SELECT rider_no FROM report")).scalar() == NUMBER
            c.execute(text("DELETE FROM report"))
            c.commit()
        migrate.upgrade("reporter", db_url)
        with engine.connect() as c:
            assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0010"
        assert not (tmp_path / "empty-var" / "jwt.secret").exists()
    finally:
        engine.dispose()
        get_settings.cache_clear()


def thanked(app: FastAPI, case_id: str, report_ids: list[str], event_id: str) -> None:
    """`case.riders_thanked` for a case, with its event id."""
    data = CaseRidersThanked(
        case_id=case_id,
        station_id="yh-s1",
        version=6,
        at=datetime.now(UTC),
        preset="safety",
        text="<b>谢谢</b>您",
        report_ids=report_ids,
    )
    apply(app, "case.riders_thanked", data, event_id)


def test_a_thank_you_reaches_every_rider_of_the_case_once(
    reporter: tuple[FastAPI, dict[str, Place]],
) -> None:
    """Both riders of a closed case see the thank-you (escaped) on their own tracking page, and /my
    counts it with their reports and the case fixed; strangers and the status API never see it; a
    redelivered or second event keeps the first and queues one push per following browser."""
    app, places = reporter
    first, first_id, _ = new_report(app, places["yh-p01"])
    second, second_id, key = new_report(app, places["yh-p01"])
    _alone, _alone_id, _ = new_report(app, places["yh-p02"])
    assert (
        first.post(
            f"/api/v1/reports/{first_id}/push", json=BrowserKeys().subscription("https://127.0.0.1/push/a")
        ).status_code
        == 201
    )
    opened(app, "c_t", first_id)
    merged = CaseReportMerged(
        case_id="c_t", report_id=second_id, station_id="yh-s1", status="new", version=2, distinct_riders=2
    )
    apply(app, "case.report_merged", merged, "ev-merge")
    moved(app, "c_t", "closed", 5, "ev-close")
    thanked(app, "c_t", [first_id, second_id], "ev-thanks")
    thanked(app, "c_t", [first_id, second_id], "ev-thanks")  # redelivered past the ledger
    thanked(app, "c_t", [first_id, second_id], "ev-thanks-2")  # a second one: the first stays

    assert rows(app, "SELECT case_id, preset, text, event_id FROM rider_thanks") == [
        ("c_t", "safety", "<b>谢谢</b>您", "ev-thanks")
    ]
    assert rows(app, "SELECT kind, event_id FROM push_message WHERE kind = 'thanked'") == [
        ("thanked", "ev-thanks")
    ]
    payload = json.loads(rows(app, "SELECT payload FROM push_message WHERE kind = 'thanked'")[0][0])
    assert payload["body"] == "街道感谢您的上报！" and payload["url"] == f"/t/{first_id}#thanks"

    for client, report_id in ((first, first_id), (second, second_id)):
        page = client.get(f"/t/{report_id}").text
        assert 'id="thanks-message" data-preset="safety">感谢您守护街道安全，您是我们的流动网格员！<' in page
        assert "&lt;b&gt;谢谢&lt;/b&gt;您" in page and "<b>谢谢</b>" not in page
        mine = client.get("/my").text
        assert 'id="n-reports">1<' in mine and 'id="n-fixed">1<' in mine and 'id="n-thanks">1<' in mine
    with_key = TestClient(app).get(f"/t/{second_id}?k={key}").text
    assert 'id="thanks"' in with_key  # the tracking link's secret is the owner's credential too
    stranger = TestClient(app)
    assert 'id="thanks"' not in stranger.get(f"/t/{first_id}").text
    for client in (stranger, first):
        status = client.get(f"/api/v1/reports/{first_id}").text
        assert "谢谢" not in status and "safety" not in status
    alone = _alone.get("/my").text
    assert 'id="n-reports">1<' in alone and 'id="n-fixed">0<' in alone and 'id="n-thanks">0<' in alone
    ref = rows(app, "SELECT rider_ref FROM report WHERE report_id = :r", r=first_id)[0][0]
    assert f'id="recognition">{ref[-6:]}<' in first.get("/my").text
    assert first.get("/api/v1/me/contributions").json() == {
        "reports": 1,
        "fixed": 1,
        "thanks": 1,
        "recognition_code": ref[-6:],
    }
    assert stranger.get("/api/v1/me/contributions").json() == {
        "reports": 0,
        "fixed": 0,
        "thanks": 0,
        "recognition_code": None,
    }
    assert 'id="contributions"' not in stranger.get("/my").text  # no rider cookie: nothing to show

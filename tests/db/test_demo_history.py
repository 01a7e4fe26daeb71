"""`gridloop demo load --history 30d`: deterministic weeks of history, each service writing its own
rows, in lifecycle order, loaded twice without doubling."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import MetaData, text

from gridloop import cli, demohistory, migrate
from gridloop.clock import FrozenClock
from gridloop.db import Database
from gridloop.settings import Settings
from schemas.reference import load_jurisdiction
from services.closer import figures, stats
from services.closer.models import Base
from tests.db.test_closer_api import frozen

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 on 2 December in Shanghai


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen early in December."""
    yield from frozen(NOW)


def counts(url: str, queries: dict[str, str]) -> dict[str, object]:
    """Each query's single value."""
    db = Database(url, MetaData())
    try:
        with db.engine.connect() as conn:
            return {name: conn.execute(text(q)).scalar() for name, q in queries.items()}
    finally:
        db.dispose()


def test_history_loads_twice_with_the_same_rows(tmp_path: Path, clock: FrozenClock) -> None:
    """30 days up to today: the closer's cases, reports and timeline, the reporter's reports, views and
    answers; the second load adds nothing."""
    settings = Settings(
        var_dir=tmp_path,
        closer_database_url=f"sqlite:///{tmp_path / 'closer.db'}",
        reporter_database_url=f"sqlite:///{tmp_path / 'reporter.db'}",
    )
    for service in ("closer", "reporter"):
        migrate.upgrade(service, settings.db_url(service))
    j = load_jurisdiction(settings.jurisdiction_dir)
    first = cli.load_demo_history(settings, j, "30d")
    again = cli.load_demo_history(settings, j, "30d")
    assert (first, again) == ((565, 770), (0, 0))
    closer = counts(
        settings.db_url("closer"),
        {
            "cases": 'SELECT count(*) FROM "case"',
            "closed": """SELECT count(*) FROM "case" WHERE status = 'closed'""",
            "open": """SELECT count(*) FROM "case" WHERE status IN ('new', 'acknowledged', 'dispatched')""",
            "rated": 'SELECT count(*) FROM "case" WHERE rating IS NOT NULL',
            "returned": 'SELECT count(*) FROM "case" WHERE returned_at IS NOT NULL',
            "extended": 'SELECT count(*) FROM "case" WHERE extensions_granted > 0',
            "reopened": 'SELECT count(*) FROM "case" WHERE reopen_count > 0',
            "late": 'SELECT count(*) FROM "case" WHERE resolved_at > resolve_due',
            "reports": "SELECT count(*) FROM case_report",
            "platforms": "SELECT count(DISTINCT platform) FROM case_report",
            "steps": "SELECT count(*) FROM timeline",
            "latest": 'SELECT max(submitted_at) FROM "case"',
        },
    )
    # kept in UTC like every time the services write: nothing after now (SQLite keeps no offset)
    stored = NOW.strftime("%Y-%m-%d %H:%M:%S")
    assert str(closer.pop("latest")) < stored
    assert closer == {
        "cases": 565,
        "closed": 526,
        "open": 9,
        "rated": 344,
        "returned": 26,
        "extended": 43,
        "reopened": 29,
        "late": 107,
        "reports": 770,
        "platforms": 5,
        "steps": 2969,
    }
    reporter = counts(
        settings.db_url("reporter"),
        {
            "reports": "SELECT count(*) FROM report",
            "views": "SELECT count(*) FROM case_view",
            "answers": "SELECT count(*) FROM feedback",
            "steps": "SELECT count(*) FROM report_event",
            "latest": "SELECT max(submitted_at) FROM report",
        },
    )
    assert str(reporter.pop("latest")) < stored
    assert reporter == {"reports": 770, "views": 565, "answers": 363, "steps": 3822}
    db = Database(settings.db_url("closer"), Base.metadata)
    try:
        with db.session() as session:
            period = figures.parse_period("2026-11-03", "2026-12-02", NOW.date(), "Asia/Shanghai")
            tallies = stats.compute(session, period, "platform", None, NOW, "Asia/Shanghai")
    finally:
        db.dispose()
    assert [k for k, _ in tallies.rows] == ["", "京东", "美团", "达达", "顺丰", "饿了么"]
    assert sum(v["reports"] for _, v in tallies.rows) == 770


def test_every_case_follows_the_lifecycle() -> None:
    """Steps in time order, milestones matching them, ratings only with a rider's confirmation."""
    j = load_jurisdiction(Settings().jurisdiction_dir)
    from gridloop import demo
    from schemas.reference import load_places

    cases = demohistory.history(j, load_places(demo.DEMO_PLACES), 30, NOW, "Asia/Shanghai")
    assert cases == demohistory.history(j, load_places(demo.DEMO_PLACES), 30, NOW, "Asia/Shanghai")
    for c in cases:
        times = [s.at for s in c.steps]
        assert times == sorted(times) and times[-1] < NOW, c.case_id
        assert c.status == c.steps[-1].status
        if c.status == "closed":
            assert c.submitted_at < c.acknowledged_at < c.resolved_at < c.closed_at  # type: ignore[operator]
            assert (c.rating is not None) == (c.steps[-1].action == "confirm")
        assert c.reports[0].submitted_at == c.submitted_at
    assert [demohistory.parse_days(s) for s in ("30d", "4w", "7")] == [30, 28, 7]
    with pytest.raises(ValueError):
        demohistory.parse_days("1y")


def test_a_bad_history_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`--history 1y` stops argparse with the reason; 4w is taken."""
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["demo", "load", "--history", "1y"])
    assert "argument --history: history like 30d or 4w, not '1y'" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["demo", "load", "--history", "4w"]).history == "4w"

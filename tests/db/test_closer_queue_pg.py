"""Queue at scale on PostgreSQL: EXPLAIN shows each queue query reads an index in order (no scan, no sort).

The million-case benchmark is separate; here 40,000 cases are enough for the planner to prefer
the indexes over a sequential scan, and the plans are what scale.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, insert, text
from sqlmodel import col, select

from gridloop import migrate
from gridloop.db import Database
from services.closer import queue
from services.closer.models import Base, Case
from services.closer.transitions import ACTIVE
from tests.support.databases import new_pg_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
N = 40_000
STATIONS = ["yh-s1", "yh-s2", "yh-s3", "yh-s4", "yh-s5", "yh-centre", "pp-s1", "pp-s2", "pp-centre"]
CATEGORIES = ["manhole_cover", "sanitation", "shared_bikes", "fire_lane_blocked", "other", "safety_hazard"]
STATES = ["closed"] * 12 + [
    "new",
    "acknowledged",
    "dispatched",
    "returned",
    "resolved",
    "on_hold",
    "rejected",
]
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(pg_server_url: str) -> Iterator[Database]:
    """A migrated closer database with N cases of every state, station and category."""
    url = new_pg_database(pg_server_url)
    migrate.upgrade("closer", url)
    database = Database(url, Base.metadata)
    rnd = random.Random(7)
    t0 = NOW - timedelta(days=200)
    rows: list[dict[str, Any]] = []
    for i in range(N):
        status = rnd.choice(STATES)
        submitted = t0 + timedelta(minutes=7 * i)
        active = status in ACTIVE
        due = submitted + timedelta(hours=rnd.randint(2, 80)) if active else None
        rows.append(
            {
                "case_id": f"C{i:09d}",
                "station_id": rnd.choice(STATIONS),
                "category": rnd.choice(CATEGORIES),
                "status": status,
                "is_active": active,
                "priority": "normal",
                "triage": False,
                "version": 1,
                "description": "",
                "route_reason": "",
                "danger_now": False,
                "submitted_at": submitted,
                "opened_at": submitted,
                "updated_at": submitted,
                "due_at": due,
                "warn_at": due - timedelta(hours=1) if due else None,
                "escalate_at": due if active and rnd.random() < 0.5 else None,
                "confirm_due": submitted + timedelta(hours=72) if status == "resolved" else None,
                "ack_hours": 2.0,
                "resolve_hours": 24.0,
                "extension_hours": 0.0,
                "supervised": rnd.random() < 0.05,
                "moves": 0,
                "extensions_granted": 0,
                "reopen_count": 0,
                "after_photo_ids": "",
                "distinct_riders": 1,
                "report_count": 1,
                "common_issue": rnd.random() < 0.02,
            }
        )
    with database.engine.begin() as conn:
        for start in range(0, N, 5000):
            conn.execute(insert(Case.__table__), rows[start : start + 5000])  # type: ignore[attr-defined]
        conn.execute(text('ANALYZE "case"'))
    yield database
    database.dispose()


def plan_of(conn: Connection, stmt: Any) -> dict[str, Any]:
    """EXPLAIN (FORMAT JSON) of a statement with its parameters."""
    compiled = stmt.compile(conn, compile_kwargs={"render_postcompile": True})
    result: Any = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar()
    plan: dict[str, Any] = result[0]["Plan"]
    return plan


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a plan tree."""
    out = [plan]
    for child in plan.get("Plans", []):
        out += nodes(child)
    return out


def assert_index_in_order(plan: dict[str, Any], index: str, ordered: bool = True) -> None:
    """The plan reads `index` (no sequential scan of case) and, when `ordered`, needs no sort step.

    A narrow filter (a few dozen rows) may be fetched by a bitmap scan of the index and sorted:
    the planner's right choice for a handful of rows, and still no table scan.
    """
    all_nodes = nodes(plan)
    kinds = [n["Node Type"] for n in all_nodes]
    used = [n.get("Index Name") for n in all_nodes if "Index" in n["Node Type"]]
    assert "Seq Scan" not in kinds, kinds
    if ordered:
        assert "Sort" not in kinds and "Incremental Sort" not in kinds, kinds
    assert index in used, (used, kinds)


YINHANG = frozenset({"yh-s1", "yh-s2", "yh-s3", "yh-s4", "yh-s5", "yh-centre", "yh-gas"})
"""殷行's stations: what its centre's supervisor sees (services/closer/scope.py)."""


@pytest.mark.parametrize(
    ("name", "qfilter", "with_cursor", "index", "ordered"),
    [
        (
            "station queue (open)",
            queue.QueueFilter(frozenset({"yh-s3"})),
            False,
            "ix_case_active_queue",
            True,
        ),
        (
            "station queue, next page",
            queue.QueueFilter(frozenset({"yh-s3"})),
            True,
            "ix_case_active_queue",
            True,
        ),
        (
            "one state",
            queue.QueueFilter(frozenset({"yh-s2"}), status="resolved"),
            False,
            "ix_case_queue",
            True,
        ),
        (
            "category",
            queue.QueueFilter(frozenset({"yh-s1"}), category="sanitation"),
            False,
            "ix_case_active_category",
            True,
        ),
        (
            "category and state",
            queue.QueueFilter(frozenset({"yh-s1"}), status="dispatched", category="sanitation"),
            False,
            "ix_case_status_category",
            False,
        ),
        ("all stations (centre)", queue.QueueFilter(None), False, "ix_case_all_active", True),
        ("all stations, next page", queue.QueueFilter(None), True, "ix_case_all_active", True),
        ("returns to rule", queue.QueueFilter(None, view="returns"), False, "ix_case_all_status", True),
        # street scoping (issue 17): a street's centre filters its stations on the all-stations walk
        ("a street (its centre)", queue.QueueFilter(YINHANG), False, "ix_case_all_active", True),
        ("a street, next page", queue.QueueFilter(YINHANG), True, "ix_case_all_active", True),
        ("a street's returns", queue.QueueFilter(YINHANG, view="returns"), False, "ix_case_all_status", True),
    ],
)
def test_queue_queries_use_an_index_in_due_order(
    db: Database, name: str, qfilter: queue.QueueFilter, with_cursor: bool, index: str, ordered: bool
) -> None:
    """Each queue query of the API walks its index in (due_at, case_id) order and stops at the limit."""
    with db.engine.connect() as conn:
        after = None
        if with_cursor:
            with db.session() as s:
                first, _ = queue.page(s, qfilter, None, 50)
            assert first[-1].due_at is not None
            after = (first[-1].due_at, first[-1].case_id)
        assert_index_in_order(plan_of(conn, queue.queue_statement(qfilter, after, 51)), index, ordered)


def test_pages_match_a_full_sort(db: Database) -> None:
    """Cursor pages over the real data equal one big sorted read (no gaps, no repeats)."""
    f = queue.QueueFilter(frozenset({"yh-s4"}))
    with db.session() as s:
        expected = [
            c.case_id
            for c in s.exec(
                select(Case)
                .where(Case.station_id == "yh-s4", col(Case.is_active).is_(True))
                .order_by(col(Case.due_at), col(Case.case_id))
            )
        ]
        got: list[str] = []
        cursor = None
        while True:
            rows, cursor = queue.page(s, f, cursor, 200)
            got += [c.case_id for c in rows]
            if cursor is None:
                break
    assert got == expected and len(got) > 500


def test_scheduler_and_counts_queries_use_indexes(db: Database) -> None:
    """The scheduler's due query and the per-state counts read indexes, not the table."""
    with db.engine.connect() as conn:
        due = (
            select(Case)
            .where(col(Case.escalate_at).is_not(None), col(Case.escalate_at) <= NOW - timedelta(days=150))
            .order_by(col(Case.escalate_at))
            .limit(200)
        )
        assert_index_in_order(plan_of(conn, due), "ix_case_escalate_at")
        closing = (
            select(Case)
            .where(Case.status == "resolved", col(Case.confirm_due) <= NOW - timedelta(days=150))
            .order_by(col(Case.confirm_due))
            .limit(200)
        )
        assert_index_in_order(plan_of(conn, closing), "ix_case_confirm_due", ordered=False)
    with db.session() as s:
        counts = queue.counts(s, frozenset({"yh-s1"}), NOW)
        assert sum(counts["states"].values()) > 1000

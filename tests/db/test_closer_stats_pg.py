"""The figures at scale on PostgreSQL: EXPLAIN shows every query of a month's figures reads index ranges
(ix_case_stats, ix_case_report_stats), never a sequential scan of the cases or reports.

The million-case timing is `scripts/bench stats`; here the 40,000 cases of the queue's plan test are
enough for the planner to prefer the indexes, and the plans are what scale.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import event

from gridloop.db import Database
from services.closer import figures, stats
from tests.db.test_closer_queue_pg import NOW, db, nodes  # noqa: F401  (the module's 40,000 cases)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def plans(database: Database, by: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each statement a month's figures run, with its plan's nodes."""
    seen: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    period = figures.parse_period("2026-10-01", "2026-10-31", date(2026, 11, 24), "Asia/Shanghai")
    event.listen(database.engine, "before_cursor_execute", keep)
    try:
        with database.session() as session:
            got = stats.compute(session, period, by, None, NOW, "Asia/Shanghai")
    finally:
        event.remove(database.engine, "before_cursor_execute", keep)
    assert got.total["cases"] == 6377  # one case every 7 minutes for 31 days
    out = []
    with database.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        for statement, parameters in seen:
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            row: Any = cursor.fetchone()
            out.append((statement, nodes(row[0][0]["Plan"])))
    return out


@pytest.mark.parametrize("by", ["station", "platform", "month"])
def test_a_months_figures_read_index_ranges(db: Database, by: str) -> None:  # noqa: F811
    """No statement scans the cases whole: they are read as a submitted_at range (ix_case_stats, or
    at this size the narrower ix_case_submitted; at a million cases the planner takes ix_case_stats
    index only, see bench/RESULTS.md), a platform's cases by their key. The reports table is empty
    here, its plan is not the one at scale."""
    got = plans(db, by)
    on_cases = [n for _, ns in got for n in ns if n.get("Relation Name") == "case"]
    assert on_cases and all(n["Node Type"] != "Seq Scan" for n in on_cases), on_cases
    assert {n["Index Name"] for n in on_cases} <= {"ix_case_stats", "ix_case_submitted", "case_pkey"}

"""The assessment figures from the database (the arithmetic is figures.py; definitions docs/stats.md).

Each grouping reads one period's cases by `submitted_at` (ix_case_stats: on PostgreSQL an
index-only scan, every grouped and counted column is included) and sums per group with CASE
expressions; on PostgreSQL GROUPING SETS gives the rows and the total in the same pass. The median
is a second query over the closed cases only (percentile_cont on PostgreSQL, Python on SQLite), so
the sums hash-aggregate without sorting wide rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select, text
from sqlalchemy.sql import Select
from sqlmodel import Session

from gridloop.clock import as_utc
from schemas.reference import Jurisdiction
from services.closer import figures
from services.closer.figures import NO_PLATFORM, Period, Tally
from services.closer.models import Case, CaseReport

C = Case.__table__.c  # type: ignore[attr-defined]
R = CaseReport.__table__.c  # type: ignore[attr-defined]


@dataclass
class Stats:
    """The figures of one period grouped one way: rows (sorted by key) and the total of them all."""

    period: Period
    by: str
    rows: list[tuple[str, dict[str, Any]]]
    total: dict[str, Any]


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _sums(now: datetime) -> list[ColumnElement[Any]]:
    """The per-group sums every row is made of (figures.Tally's fields), each as the definitions say."""
    return [
        func.count().label("cases"),
        func.coalesce(func.sum(C.report_count), 0).label("reports"),
        _count(and_(C.acknowledged_at.isnot(None), C.acknowledged_at <= C.ack_due)).label("ack_on_time"),
        _count(and_(C.ack_due.isnot(None), or_(C.acknowledged_at.isnot(None), C.ack_due <= now))).label(
            "ack_judged"
        ),
        _count(and_(C.resolved_at.isnot(None), C.resolved_at <= C.resolve_due)).label("resolve_on_time"),
        _count(and_(C.resolve_due.isnot(None), or_(C.resolved_at.isnot(None), C.resolve_due <= now))).label(
            "resolve_judged"
        ),
        _count(or_(C.resolved_at.isnot(None), C.reopen_count > 0)).label("resolved"),
        _count(C.reopen_count > 0).label("reopened"),
        func.coalesce(func.sum(C.rating), 0).label("rating_sum"),
        func.count(C.rating).label("rated"),
        _count(C.status == "closed").label("closed"),
        _count(C.rider_confirmed.is_(True)).label("confirmed_fixes"),
        _count(C.returned_at.isnot(None)).label("returns"),
        func.coalesce(func.sum(C.extensions_granted), 0).label("extensions"),
        _count(C.common_issue.is_(True)).label("common_issues"),
        func.coalesce(func.sum(C.nudges), 0).label("nudges"),
    ]


def _scoped(query: Select[Any], visible: frozenset[str] | None) -> Select[Any]:
    return query if visible is None else query.where(C.station_id.in_(sorted(visible)))


def _in(period: Period) -> ColumnElement[bool]:
    return and_(C.submitted_at >= period.lo, C.submitted_at < period.hi)


TOTAL = "\x00total"
"""The key of the all-rows total in the grouped results (no group key can be this)."""

Make = Callable[[ColumnElement[Any]], Select[Any]]
"""A query over some cases, given the key column to select first (labelled k); no GROUP BY yet."""


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _sql(session: Session, expr: ColumnElement[Any]) -> str:
    return str(expr.compile(dialect=session.get_bind().dialect))


def _grouped(session: Session, make: Make, key: ColumnElement[Any]) -> dict[str, dict[str, Any]]:
    """Rows of `make` per key and the total (under TOTAL): one pass with GROUPING SETS on PostgreSQL,
    a second query on SQLite."""
    if _postgres(session):
        query = make(key.label("k")).add_columns(func.grouping(key).label("g"))
        query = query.group_by(text(f"GROUPING SETS (({_sql(session, key)}), ())"))
        return {TOTAL if r["g"] else str(r["k"] or ""): dict(r) for r in session.execute(query).mappings()}
    out = {str(r["k"] or ""): dict(r) for r in session.execute(make(key.label("k")).group_by(key)).mappings()}
    total = session.execute(make(literal("").label("k"))).mappings().first()
    if total is not None:
        out[TOTAL] = dict(total)
    return out


def _medians(session: Session, make: Make, key: ColumnElement[Any]) -> dict[str, float | None]:
    """Median hours to close per key and in total, from `make` (key, submitted_at, closed_at of the
    closed cases).

    Its own query, apart from the sums: PostgreSQL then sorts only the closed cases' durations (the
    sums hash-aggregate without a sort); SQLite has no percentile_cont, the median is taken here."""
    if _postgres(session):
        sub = make(key.label("k")).subquery("closed")
        hours = func.extract("epoch", sub.c.closed_at - sub.c.submitted_at) / 3600
        query = select(
            sub.c.k, func.grouping(sub.c.k).label("g"), func.percentile_cont(0.5).within_group(hours)
        ).group_by(text("GROUPING SETS ((closed.k), ())"))
        return {
            TOTAL if g else str(k or ""): None if m is None else round(float(m), 2)
            for k, g, m in session.execute(query)
        }
    durations: defaultdict[str, list[float]] = defaultdict(list)
    for k, submitted, done in session.execute(make(key.label("k"))):
        hours_taken = figures.hours_between(as_utc(submitted), as_utc(done))
        durations[str(k or "")].append(hours_taken)
        durations[TOTAL].append(hours_taken)
    return {k: figures.median_hours(v) for k, v in durations.items()}


def _tallies(session: Session, sums: Make, closed: Make, key: ColumnElement[Any]) -> dict[str, Tally]:
    """Tallies per key and the total (TOTAL) from the sums' and the closed cases' queries."""
    out = {k: Tally.of(k, row) for k, row in _grouped(session, sums, key).items() if row["cases"]}
    for k, median in _medians(session, closed, key).items():
        if k in out:
            out[k].median_hours_to_close = median
    return out


def _case_tallies(
    session: Session, period: Period, key: ColumnElement[Any], visible: frozenset[str] | None, now: datetime
) -> dict[str, Tally]:
    """The period's cases grouped by a column of theirs (and the total)."""

    def sums(k: ColumnElement[Any]) -> Select[Any]:
        return _scoped(select(k, *_sums(now)).where(_in(period)), visible)

    def closed(k: ColumnElement[Any]) -> Select[Any]:
        query = select(k, C.submitted_at, C.closed_at).where(_in(period), C.closed_at.isnot(None))
        return _scoped(query, visible)

    return _tallies(session, sums, closed, key)


def _platform_tallies(
    session: Session, period: Period, visible: frozenset[str] | None, now: datetime
) -> dict[str, Tally]:
    """Per platform: the period's cases its riders reported in, and their reports in those cases.

    A case's reports are never older than the case, so only reports from the period's start on are
    read (ix_case_report_stats), and the cases side is the period's (ix_case_stats): both small."""
    platform = func.coalesce(R.platform, NO_PLATFORM)
    joined = CaseReport.__table__.join(Case.__table__, C.case_id == R.case_id)  # type: ignore[attr-defined]
    theirs = and_(_in(period), R.submitted_at >= period.lo)
    pairs = select(R.case_id, platform.label("platform"), func.count().label("n")).select_from(joined)
    pairs_q = _scoped(pairs.where(theirs), visible).group_by(R.case_id, platform).subquery("pairs")
    cases = pairs_q.join(Case.__table__, C.case_id == pairs_q.c.case_id)  # type: ignore[attr-defined]

    def sums(k: ColumnElement[Any]) -> Select[Any]:
        their_reports = func.coalesce(func.sum(pairs_q.c.n), 0).label("their_reports")
        return select(k, *_sums(now), their_reports).select_from(cases).where(_in(period))

    def closed(k: ColumnElement[Any]) -> Select[Any]:
        query = select(k, C.submitted_at, C.closed_at).select_from(cases)
        return query.where(_in(period), C.closed_at.isnot(None))

    out = {
        k: Tally.of(k, {**row, "reports": row["their_reports"]})
        for k, row in _grouped(session, sums, pairs_q.c.platform).items()
    }
    for k, median in _medians(session, closed, pairs_q.c.platform).items():
        if k in out:
            out[k].median_hours_to_close = median
    # a case reported from two platforms is in both rows, once in the total: the period's cases
    out[TOTAL] = _one(session, period, visible, now) or Tally(TOTAL)
    out[TOTAL].reports = sum(t.reports for k, t in out.items() if k != TOTAL)
    return out


def _median_of(session: Session, period: Period, visible: frozenset[str] | None) -> float | None:
    """The median hours to close of all the period's closed cases."""
    closed = and_(_in(period), C.closed_at.isnot(None))
    if _postgres(session):
        hours = func.extract("epoch", C.closed_at - C.submitted_at) / 3600
        query = _scoped(select(func.percentile_cont(0.5).within_group(hours)).where(closed), visible)
        median = session.execute(query).scalar()
        return None if median is None else round(float(median), 2)
    rows = session.execute(_scoped(select(C.submitted_at, C.closed_at).where(closed), visible))
    return figures.median_hours(figures.hours_between(as_utc(a), as_utc(b)) for a, b in rows)


def _one(session: Session, period: Period, visible: frozenset[str] | None, now: datetime) -> Tally | None:
    """The tally of all the period's cases; None without any."""
    row = session.execute(_scoped(select(*_sums(now)).where(_in(period)), visible)).mappings().one()
    if not row["cases"]:
        return None
    tally = Tally.of(TOTAL, dict(row))
    tally.median_hours_to_close = _median_of(session, period, visible)
    return tally


def _month_tallies(
    session: Session, period: Period, visible: frozenset[str] | None, now: datetime, tz: str
) -> dict[str, Tally]:
    """One tally per calendar month of the period (each an index range), the total from them all."""
    out: dict[str, Tally] = {}
    for month, part in figures.months(period, tz):
        got = _one(session, part, visible, now)
        if got is not None:
            got.key = month
            out[month] = got
    if out:
        out[TOTAL] = figures.added(list(out.values()), TOTAL)
        out[TOTAL].median_hours_to_close = _median_of(session, period, visible)
    return out


def compute(
    session: Session,
    period: Period,
    by: str,
    visible: frozenset[str] | None,
    now: datetime,
    tz: str,
) -> Stats:
    """The figures of a period grouped `by` (figures.GROUPS), for the stations in `visible` (None: all)."""
    figures.check_group(by)
    if by == "platform":
        tallies = _platform_tallies(session, period, visible, now)
    elif by == "month":
        tallies = _month_tallies(session, period, visible, now, tz)
    else:
        column = {"station": C.station_id, "grid": C.grid_id, "category": C.category}[by]
        tallies = _case_tallies(session, period, column, visible, now)
    total = tallies.pop(TOTAL, None) or Tally("")
    rows = [(k, figures.figures(tallies[k])) for k in sorted(tallies)]
    return Stats(period, by, rows, figures.figures(total))


def label(j: Jurisdiction, by: str, key: str, lang: str = "zh") -> str:
    """A row's name for people: the station's, grid's or category's name, the platform, the month."""
    if by == "station" and key in j.stations:
        return j.stations[key].name(lang)
    if by == "grid" and key in j.grids:
        return j.grids[key].name(lang)
    if by == "category" and key in j.categories:
        return j.categories[key].name(lang)
    if by == "platform" and key == NO_PLATFORM:
        return "未注明" if lang == "zh" else "not given"
    if by == "grid" and not key:
        return "无网格" if lang == "zh" else "no grid"
    return key


def as_json(stats: Stats, j: Jurisdiction, tz: str) -> dict[str, Any]:
    """The figures for the JSON API."""
    return {
        "from": stats.period.start.isoformat(),
        "to": stats.period.end.isoformat(),
        "by": stats.by,
        "timezone": tz,
        "rows": [{"key": k, "name": label(j, stats.by, k), **values} for k, values in stats.rows],
        "total": stats.total,
    }


def table(stats: Stats, j: Jurisdiction, lang: str) -> Iterable[list[Any]]:
    """The figures as rows of cells for CSV and XLSX: one per group, then the total."""
    for k, values in stats.rows:
        yield [k, label(j, stats.by, k, lang), *(values[f] for f in figures.FIGURES)]
    yield ["", "合计" if lang == "zh" else "total", *(stats.total[f] for f in figures.FIGURES)]

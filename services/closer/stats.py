"""The assessment figures from the database: one grouped query per period (the arithmetic is figures.py).

Each query reads one period's cases by `submitted_at` (ix_case_stats: on PostgreSQL an index-only
scan, its grouped and counted columns are included) and sums per group with CASE expressions, so a
month of a million-case street is one short scan. The median is percentile_cont on PostgreSQL and
computed here from the closed cases' durations on SQLite.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
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


def _medians(session: Session, query: Select[Any]) -> dict[str, float | None]:
    """Median hours to close per key, from `query` (key, submitted_at, closed_at over closed cases).

    Its own query, apart from the sums: PostgreSQL then sorts only the closed cases' durations (the
    sums hash-aggregate without a sort); SQLite has no percentile_cont, the median is taken here."""
    if session.get_bind().dialect.name == "postgresql":
        sub = query.subquery()
        hours = func.extract("epoch", sub.c[2] - sub.c[1]) / 3600
        grouped = select(sub.c[0], func.percentile_cont(0.5).within_group(hours)).group_by(sub.c[0])
        return {str(k or ""): None if m is None else round(float(m), 2) for k, m in session.execute(grouped)}
    durations: defaultdict[str, list[float]] = defaultdict(list)
    for k, submitted, done in session.execute(query):
        durations[str(k or "")].append(figures.hours_between(as_utc(submitted), as_utc(done)))
    return {k: figures.median_hours(v) for k, v in durations.items()}


def _tallies(
    session: Session,
    period: Period,
    key: ColumnElement[Any] | None,
    visible: frozenset[str] | None,
    now: datetime,
) -> dict[str, Tally]:
    """Tallies of a period's cases grouped by `key` (None: one tally under "")."""
    k = (key if key is not None else literal("")).label("k")
    query = _scoped(select(k, *_sums(now)).where(_in(period)), visible)
    if key is not None:
        query = query.group_by(key)
    out = {}
    for row in session.execute(query).mappings():
        if row["cases"]:
            out[row["k"] or ""] = Tally.of(row["k"] or "", dict(row))
    closed = _scoped(
        select(k, C.submitted_at, C.closed_at).where(_in(period), C.closed_at.isnot(None)), visible
    )
    for kk, median in _medians(session, closed).items():
        if kk in out:
            out[kk].median_hours_to_close = median
    return out


def _platform_tallies(
    session: Session, period: Period, visible: frozenset[str] | None, now: datetime
) -> dict[str, Tally]:
    """Per platform: its reports in the period, and the figures of the cases they are in."""
    platform = func.coalesce(R.platform, NO_PLATFORM)
    in_period = and_(R.submitted_at >= period.lo, R.submitted_at < period.hi)
    pairs = select(R.case_id.label("case_id"), platform.label("platform")).where(in_period).distinct()
    pairs_q = pairs.subquery()
    cases = pairs_q.join(Case.__table__, C.case_id == pairs_q.c.case_id)  # type: ignore[attr-defined]
    query = _scoped(
        select(pairs_q.c.platform.label("k"), *_sums(now)).select_from(cases).group_by(pairs_q.c.platform),
        visible,
    )
    out = {str(r["k"]): Tally.of(str(r["k"]), dict(r)) for r in session.execute(query).mappings()}
    reports = _scoped(
        select(platform, func.count())
        .select_from(CaseReport.__table__.join(Case.__table__, C.case_id == R.case_id))  # type: ignore[attr-defined]
        .where(in_period)
        .group_by(platform),
        visible,
    )
    for name, n in session.execute(reports):
        out.setdefault(str(name), Tally(str(name))).reports = int(n)
    closed = _scoped(
        select(pairs_q.c.platform, C.submitted_at, C.closed_at)
        .select_from(cases)
        .where(C.closed_at.isnot(None)),
        visible,
    )
    for name, median in _medians(session, closed).items():
        if name in out:
            out[name].median_hours_to_close = median
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
        tallies = {}
        for month, part in figures.months(period, tz):
            got = _tallies(session, part, None, visible, now).get("")
            if got is not None:
                got.key = month
                tallies[month] = got
    else:
        column = {"station": C.station_id, "grid": C.grid_id, "category": C.category}[by]
        tallies = _tallies(session, period, column, visible, now)
    total = _tallies(session, period, None, visible, now).get("") or Tally("")
    if by == "platform":
        # a case reported from two platforms is in both rows, once in the total
        total.reports = sum(t.reports for t in tallies.values())
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

"""The queue: filters, the due-time sort with cursor pagination, counts, supervisor lists, CSV export.

Every query here is shaped for an index of `models.Case` (see its table args): equality filters
first, then (due_at, case_id) which is both the sort and the cursor.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, tuple_
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from gridloop.clock import as_utc
from gridloop.db import Database
from gridloop.errors import ApiError
from schemas.cases import CaseStatus
from services.closer import sla
from services.closer.models import Case
from services.closer.transitions import ACTIVE, OPEN, STATES

VIEWS = ("queue", "triage", "returns", "extensions", "supervision", "common", "duty")
STAFF_VIEWS = ("queue", "duty")
"""The views grid staff may open; the others are the centre's supervisors' lists."""


@dataclass(frozen=True)
class QueueFilter:
    """What a queue request asks for."""

    stations: frozenset[str] | None = (
        None  # the caller's scope (services/closer/scope.py); None: every station
    )
    status: str = "open"  # "open" (the SLA clock runs), "all", or one state
    category: str | None = None
    view: str = "queue"
    duty_username: str | None = None  # the duty view: also the cases this account got on duty


def in_scope(column: Any, stations: frozenset[str]) -> ColumnElement[bool]:
    """`column` is one of the stations (an equality for one station: the station index's plan)."""
    if len(stations) == 1:
        return column == next(iter(stations))
    return column.in_(sorted(stations))


def encode_cursor(case_row: Case) -> str:
    """An opaque cursor after this case in the due-time order."""
    due = as_utc(case_row.due_at).isoformat() if case_row.due_at else None
    raw = json.dumps([due, case_row.case_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime | None, str]:
    """The (due_at, case_id) a cursor points after; 400 when it is not one of ours."""
    try:
        due, case_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return (datetime.fromisoformat(due) if due else None), str(case_id)
    except Exception as exc:
        raise ApiError(400, "bad_cursor", "The cursor is not valid.") from exc


def check_status(status: str) -> None:
    """422 for a status filter that is not a state, "open" or "all"."""
    if status not in ("open", "all", *STATES):
        raise ApiError(422, "invalid_status", f"status must be open, all or one of {', '.join(STATES)}.")


def queue_statement(
    f: QueueFilter, after: tuple[datetime | None, str] | None = None, limit: int = 50
) -> SelectOfScalar[Case]:
    """The SELECT for one page of a queue, most urgent first."""
    q = select(Case)
    if f.view == "duty":
        # out of hours (值班): what went to this station or account on duty, whichever station owns it
        mine: list[ColumnElement[bool]]
        if f.stations is None:  # every station (city): whatever went to duty
            mine = [col(Case.duty_station_id).is_not(None), col(Case.duty_username).is_not(None)]
        elif f.duty_username is None:  # a supervisor's streets: what went to their duty stations or accounts
            mine = [
                in_scope(col(Case.duty_station_id), f.stations),
                and_(col(Case.duty_username).is_not(None), in_scope(col(Case.station_id), f.stations)),
            ]
        else:
            mine = [
                in_scope(col(Case.duty_station_id), f.stations),
                col(Case.duty_username) == f.duty_username,
            ]
        q = q.where(or_(*mine))
    elif f.stations is not None:
        q = q.where(in_scope(col(Case.station_id), f.stations))
    if f.category:
        q = q.where(Case.category == f.category)
    nulls_possible = True
    if f.view == "triage":
        q = q.where(Case.status == CaseStatus.NEW, col(Case.triage).is_(True))
        nulls_possible = False
    elif f.view == "returns":
        q = q.where(Case.status == CaseStatus.RETURNED)
        nulls_possible = False
    elif f.view == "extensions":
        q = q.where(col(Case.is_active).is_(True), col(Case.extension_pending_hours).is_not(None))
        nulls_possible = False
    elif f.view == "supervision":
        q = q.where(col(Case.is_active).is_(True), col(Case.supervised).is_(True))
        nulls_possible = False
    elif f.view == "duty":
        q = q.where(col(Case.is_active).is_(True))
        nulls_possible = False
    elif f.view == "common":
        q = q.where(col(Case.status).in_(OPEN), col(Case.common_issue).is_(True))
    elif f.status == "open":
        # a boolean column, not status IN (...): one index range, and plans that stay generic
        q = q.where(col(Case.is_active).is_(True))
        nulls_possible = False  # an active case always has a due time
    elif f.status != "all":
        q = q.where(Case.status == f.status)
    if after is not None:
        due, cid = after
        if due is None:
            q = q.where(col(Case.due_at).is_(None), col(Case.case_id) > cid)
        else:
            later = tuple_(col(Case.due_at), col(Case.case_id)) > tuple_(due, cid)
            q = q.where(or_(later, col(Case.due_at).is_(None)) if nulls_possible else later)
    return q.order_by(col(Case.due_at).asc().nulls_last(), col(Case.case_id)).limit(limit)


def page(session: Session, f: QueueFilter, cursor: str | None, limit: int) -> tuple[list[Case], str | None]:
    """One page of cases and the cursor of the next page (None at the end)."""
    after = decode_cursor(cursor) if cursor else None
    rows = list(session.exec(queue_statement(f, after, limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]) if more and rows else None)


def counts(session: Session, stations: frozenset[str] | None, now: datetime) -> dict[str, Any]:
    """Cases per state (open ones), and how many of the active ones are yellow or red."""
    by_state = select(Case.status, func.count()).where(col(Case.status).in_(OPEN))
    colours = select(
        func.count(case((col(Case.due_at) <= now, 1))),
        func.count(case((and_(col(Case.warn_at) <= now, col(Case.due_at) > now), 1))),
    ).where(col(Case.is_active).is_(True))
    if stations is not None:
        by_state = by_state.where(in_scope(col(Case.station_id), stations))
        colours = colours.where(in_scope(col(Case.station_id), stations))
    states: dict[str, int] = {s.value: 0 for s in OPEN}
    for status, n in session.exec(by_state.group_by(Case.status)).all():
        states[status] = int(n)
    red, yellow = session.exec(colours).one()
    return {
        "states": states,
        "red": int(red),
        "yellow": int(yellow),
        "active": sum(states[s] for s in ACTIVE),
    }


def open_by_station(session: Session) -> dict[tuple[str, str], int]:
    """Open cases per (station, state), for the gridloop_cases_open gauge."""
    q = (
        select(Case.station_id, Case.status, func.count())
        .where(col(Case.status).in_(OPEN))
        .group_by(Case.station_id, Case.status)
    )
    return {(st, s): int(n) for st, s, n in session.exec(q).all()}


def red_by_station(session: Session, now: datetime) -> dict[str, int]:
    """Active cases past their due time per station (an index range scan on is_active, due_at)."""
    q = (
        select(Case.station_id, func.count())
        .where(col(Case.is_active) == True, col(Case.due_at) < now)  # noqa: E712
        .group_by(Case.station_id)
    )
    return {st: int(n) for st, n in session.exec(q).all()}


def colour_of(c: Case, now: datetime) -> sla.Colour:
    """The SLA colour of a case now."""
    return sla.colour(c.due_at, c.warn_at, now)


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value else None


def case_view(c: Case, now: datetime) -> dict[str, Any]:
    """A case as the queue and the detail API show it."""
    return {
        "case_id": c.case_id,
        "station_id": c.station_id,
        "category": c.category,
        "status": c.status,
        "priority": c.priority,
        "clock": c.clock,
        "triage": c.triage,
        "version": c.version,
        "place_name": c.place_name,
        "description": c.description,
        "lat": c.lat,
        "lon": c.lon,
        "grid_id": c.grid_id,
        "submitted_at": as_utc(c.submitted_at).isoformat(),
        "ack_due": _iso(c.ack_due),
        "resolve_due": _iso(c.resolve_due),
        "due_at": _iso(c.due_at),
        "warn_at": _iso(c.warn_at),
        "colour": colour_of(c, now),
        "supervised": c.supervised,
        "nudges": c.nudges,
        "nudged_at": _iso(c.nudged_at),
        "assignee": c.assignee,
        "moves": c.moves,
        "return_reason": c.return_reason,
        "reject_reason": c.reject_reason,
        "extensions_granted": c.extensions_granted,
        "extension_hours": c.extension_hours,
        "extension_pending_hours": c.extension_pending_hours,
        "confirm_due": _iso(c.confirm_due),
        "acknowledged_at": _iso(c.acknowledged_at),
        "dispatched_at": _iso(c.dispatched_at),
        "resolved_at": _iso(c.resolved_at),
        "closed_at": _iso(c.closed_at),
        "reopen_count": c.reopen_count,
        "rating": c.rating,
        "after_photo_ids": [p for p in c.after_photo_ids.split(",") if p],
        "distinct_riders": c.distinct_riders,
        "report_count": c.report_count,
        "common_issue": c.common_issue,
        "danger_now": c.danger_now,
        "route_reason": c.route_reason,
    }


EXPORT_COLUMNS = (
    "case_id",
    "station_id",
    "category",
    "priority",
    "status",
    "place_name",
    "description",
    "submitted_at",
    "acknowledged_at",
    "dispatched_at",
    "resolved_at",
    "closed_at",
    "ack_due",
    "resolve_due",
    "supervised",
    "moves",
    "return_reason",
    "reject_reason",
    "extensions_granted",
    "reopen_count",
    "rating",
    "report_count",
    "distinct_riders",
    "common_issue",
)


EXPORT_BATCH = 500
"""Rows per query of a CSV export: a year is streamed a batch at a time, never held whole."""


def export_statement(
    stations: frozenset[str] | None,
    start: datetime,
    end: datetime,
    after: tuple[datetime, str] | None = None,
    limit: int | None = None,
) -> SelectOfScalar[Case]:
    """Cases submitted in [start, end), oldest first; `after` (submitted_at, case_id) continues from
    the last row of the previous batch (the ix_case_submitted index serves the order)."""
    q = select(Case).where(col(Case.submitted_at) >= start, col(Case.submitted_at) < end)
    if stations is not None:
        q = q.where(in_scope(col(Case.station_id), stations))
    if after is not None:
        at, case_id = after
        q = q.where(
            or_(col(Case.submitted_at) > at, and_(col(Case.submitted_at) == at, col(Case.case_id) > case_id))
        )
    q = q.order_by(col(Case.submitted_at), col(Case.case_id))
    return q.limit(limit) if limit is not None else q


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    text = str(value)
    # a cell starting like a formula runs in a spreadsheet: neutralise it (CSV injection)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def csv_text(rows: Iterable[Case], header: bool = False) -> str:
    """CSV lines of rows; with the header, preceded by a BOM (spreadsheet software then reads the
    Chinese right) and the column names."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        out.write("\ufeff")
        writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        writer.writerow([_cell(getattr(row, name)) for name in EXPORT_COLUMNS])
    return out.getvalue()


def export_csv(
    db: Database, stations: frozenset[str] | None, start: datetime, end: datetime
) -> Iterator[str]:
    """The CSV of an export, one chunk per batch of rows; each batch is its own short read (a
    streaming response pulls the next chunk only when the last one was sent)."""
    yield csv_text((), header=True)
    after: tuple[datetime, str] | None = None
    while True:
        with db.session() as session:
            rows = list(session.exec(export_statement(stations, start, end, after, EXPORT_BATCH)))
        if rows:
            yield csv_text(rows)
        if len(rows) < EXPORT_BATCH:
            return
        after = (rows[-1].submitted_at, rows[-1].case_id)


def as_list(rows: Sequence[Case], now: datetime) -> list[dict[str, Any]]:
    """Case views of rows."""
    return [case_view(c, now) for c in rows]

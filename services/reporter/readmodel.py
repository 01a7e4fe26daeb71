"""The riders' read model, kept from `cases.events`: each report's status and timeline, and the cases.

The changes run inside the consumer's batch transaction (services.reporter.handlers), in plain SQL
(``gridloop.rawsql``: this is a hot path, one event per report); an event older than what a row
already shows (a lower case version) never moves it back. The tables are the ORM models of
``services.reporter.models``; `open_cases` reads them for the scan page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from gridloop.rawsql import Raw, in_list, insert_row, insert_sql, read_ts
from schemas.events import CaseOpened, CaseReportMerged, CaseTransitioned
from services.reporter.models import CaseView, Report

OPEN_STATES = ("new", "acknowledged", "dispatched", "returned", "on_hold")
"""Case states a rider can still '+1' (resolved waits for the rider; closed and rejected are final)."""
FINAL_STATES = ("closed", "rejected")
NOTE_ACTIONS = ("resolve", "resolved", "reject", "rejected")
"""Staff notes shown to riders: what was done, or why the report was not taken up."""


@dataclass
class _Report:
    """What the read model needs of a report row."""

    report_id: str
    category: str
    place_id: str | None
    submitted_at: datetime


@dataclass
class _View:
    """A case_view row."""

    case_id: str
    station_id: str
    category: str
    status: str
    version: int
    place_id: str | None
    opened_at: datetime
    updated_at: datetime
    resolve_due: datetime | None
    after_photo_ids: str = ""
    status_note: str | None = None
    stored: bool = True


_REPORT_COLUMNS = "report_id, category, place_id, submitted_at"
_VIEW_COLUMNS = (
    "case_id, station_id, category, status, version, place_id, opened_at, updated_at, resolve_due, "
    "after_photo_ids, status_note"
)
_VIEW_FIELDS = [c.strip() for c in _VIEW_COLUMNS.split(",")]


def _report(row: tuple[Any, ...]) -> _Report:
    return _Report(row[0], row[1], row[2], read_ts(row[3]))  # type: ignore[arg-type]


def _load_report(raw: Raw, report_id: str) -> _Report | None:
    row = raw.first(f"SELECT {_REPORT_COLUMNS} FROM report WHERE report_id = :id", {"id": report_id})
    return _report(row) if row else None


def _load_view(raw: Raw, case_id: str) -> _View | None:
    row = raw.first(f"SELECT {_VIEW_COLUMNS} FROM case_view WHERE case_id = :id", {"id": case_id})
    if row is None:
        return None
    view = _View(*row)
    view.opened_at, view.updated_at = read_ts(view.opened_at), read_ts(view.updated_at)  # type: ignore[assignment]
    view.resolve_due = read_ts(view.resolve_due)
    return view


def _save_view(raw: Raw, view: _View) -> None:
    values = {f: getattr(view, f) for f in _VIEW_FIELDS}
    for f in ("opened_at", "updated_at", "resolve_due"):
        values[f] = raw.ts(values[f])
    if view.stored:
        sets = ", ".join(f"{f} = :{f}" for f in _VIEW_FIELDS[1:])
        raw.run(f"UPDATE case_view SET {sets} WHERE case_id = :case_id", values)
    else:
        raw.run(insert_sql("case_view", _VIEW_FIELDS), values)
        view.stored = True


def set_status(
    raw: Raw,
    report_id: str,
    case_id: str,
    status: str,
    action: str,
    at: datetime,
    version: int,
    note: str | None = None,
) -> None:
    """Point a report at its case; move it to the case's new status and add the step to its timeline
    (unless the event is older than what the report shows: a late event must not move it back)."""
    params = {"case": case_id, "status": status, "at": raw.ts(at), "version": version, "id": report_id}
    if raw.run(_REPORT_MOVE, params):
        insert_row(
            raw,
            "report_event",
            {"report_id": report_id, "status": status, "action": action, "at": at, "note": note},
        )
    else:
        raw.run("UPDATE report SET case_id = :case WHERE report_id = :id", params)


# version 0 is an event without one: it always applies
_REPORT_MOVE = (
    "UPDATE report SET case_id = :case, status = :status, status_at = :at, "
    "case_version = CASE WHEN :version > case_version THEN :version ELSE case_version END "
    "WHERE report_id = :id AND (:version = 0 OR case_version <= :version)"
)
_VIEW_MOVE = (
    "UPDATE case_view SET status = :status, updated_at = :at, "
    "version = CASE WHEN :version > version THEN :version ELSE version END "
    "WHERE case_id = :case AND (:version = 0 OR version <= :version)"
)


def _update_view(view: _View, status: str, version: int, at: datetime) -> bool:
    """Apply a newer state to a case view; False when the event is older than the view."""
    if version and version < view.version:
        return False
    view.status = status
    view.version = max(version, view.version)
    view.updated_at = at
    return True


def case_opened(raw: Raw, data: CaseOpened) -> None:
    """A case was opened for one of our reports: the receipt now points at it."""
    report = _load_report(raw, data.report_id)
    view = _load_view(raw, data.case_id)
    if view is None:
        view = _View(
            case_id=data.case_id,
            station_id=data.station_id,
            category=data.category,
            status=data.status,
            version=data.version,
            place_id=report.place_id if report else None,
            opened_at=data.opened_at,
            updated_at=data.opened_at,
            resolve_due=data.resolve_due,
            stored=False,
        )
    else:
        view.station_id, view.category = data.station_id, data.category
        view.resolve_due = data.resolve_due or view.resolve_due
        view.opened_at = data.opened_at
        _update_view(view, data.status, data.version, data.opened_at)
    _save_view(raw, view)
    if report is not None:
        set_status(raw, report.report_id, data.case_id, data.status, "opened", data.opened_at, data.version)


def report_merged(raw: Raw, data: CaseReportMerged, at: datetime) -> None:
    """Our report joined an existing case (`at`: the event's time)."""
    # usually the case's view is there and this is newer: one update (a storm is mostly merges)
    moved = raw.run(
        _VIEW_MOVE, {"case": data.case_id, "status": data.status, "version": data.version, "at": raw.ts(at)}
    )
    if not moved and _load_view(raw, data.case_id) is None:
        report = _load_report(raw, data.report_id)
        view = _View(
            case_id=data.case_id,
            station_id=data.station_id,
            category=report.category if report else "other",
            status=data.status,
            version=data.version,
            place_id=report.place_id if report else None,
            opened_at=at,
            updated_at=at,
            resolve_due=None,
            stored=False,
        )
        _save_view(raw, view)
    set_status(raw, data.report_id, data.case_id, data.status, "merged", at, data.version)


def _optional(data: Any, name: str) -> Any:
    """An optional field, declared or not (payloads keep unknown fields), None when absent."""
    value = getattr(data, name, None)
    if value is None:
        value = (getattr(data, "model_extra", None) or {}).get(name)
    return value


def case_moved(raw: Raw, data: CaseTransitioned) -> None:
    """A case moved on: its view and every report in it show the new status."""
    note = (
        data.note[:500] if data.note and (data.action in NOTE_ACTIONS or data.status == "rejected") else None
    )
    view = _load_view(raw, data.case_id)
    reports = [
        _report(r)
        for r in raw.all(
            f"SELECT {_REPORT_COLUMNS} FROM report WHERE case_id = :case ORDER BY submitted_at, report_id",
            {"case": data.case_id},
        )
    ]
    known = {r.report_id for r in reports}
    extra = sorted({rid for rid in data.report_ids if rid not in known})
    if extra:
        params: dict[str, Any] = {}
        reports += [
            _report(r)
            for r in raw.all(
                f"SELECT {_REPORT_COLUMNS} FROM report WHERE report_id IN {in_list('id', extra, params)}",
                params,
            )
        ]
    if view is None and reports:
        first = reports[0]
        view = _View(
            case_id=data.case_id,
            station_id=data.station_id,
            category=first.category,
            status=data.status,
            version=0,
            place_id=first.place_id,
            opened_at=first.submitted_at,
            updated_at=data.at,
            resolve_due=None,
            stored=False,
        )
    if view is not None:
        if _update_view(view, data.status, data.version, data.at):
            view.station_id = data.station_id
            if data.after_photo_ids:
                view.after_photo_ids = ",".join(data.after_photo_ids)[:500]
            if note is not None:
                view.status_note = note
            due = _optional(data, "resolve_due")
            if isinstance(due, str):
                due = datetime.fromisoformat(due)
            if isinstance(due, datetime):
                view.resolve_due = due
        _save_view(raw, view)
    for report in reports:
        set_status(raw, report.report_id, data.case_id, data.status, data.action, data.at, data.version, note)


def open_cases(session: Session, place_id: str) -> list[tuple[CaseView, int]]:
    """Open cases with a report at this place, newest first, with their count of distinct riders."""
    rows = session.exec(
        select(CaseView, func.count(func.distinct(Report.rider_ref)))
        .join(Report, col(Report.case_id) == col(CaseView.case_id))
        .where(col(CaseView.status).in_(OPEN_STATES))
        .where(
            (col(CaseView.place_id) == place_id)
            | col(CaseView.case_id).in_(select(Report.case_id).where(Report.place_id == place_id))
        )
        .group_by(col(CaseView.case_id))
        .order_by(col(CaseView.opened_at).desc())
        .limit(5)
    ).all()
    return [(view, int(riders)) for view, riders in rows]

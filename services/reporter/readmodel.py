"""The riders' read model, kept from `cases.events`: each report's status and timeline, and the cases.

The changes run inside the consumer's batch transaction (services.reporter.handlers), in plain SQL
(``gridloop.rawsql``: this is a hot path, one event per report); an event older than what a row
already shows (a lower case version) never moves it back. Rows are read and written as records of
the tables of ``services.reporter.models`` (by column name); `open_cases` reads them for the scan page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from gridloop.rawsql import Raw, in_list, insert_row, record_type, select_sql, statement, table_of
from schemas.cases import OPEN_STATUSES, CaseStatus
from schemas.events import CaseOpened, CaseReportMerged, CaseTransitioned
from services.reporter.models import CaseView, Report

PLUS_ONE_STATUSES = tuple(sorted(OPEN_STATUSES - {CaseStatus.RESOLVED}))
"""Case states a rider can still '+1' (resolved waits for the rider; closed and rejected are final)."""
NOTE_ACTIONS = ("resolve", "resolved", "reject", "rejected")
"""Staff notes shown to riders: what was done, or why the report was not taken up."""

VIEW = table_of(CaseView)
REPORT = table_of(Report)
ViewRow = record_type(VIEW)
"""A `case_view` row, by column name."""

_ONE_VIEW = "WHERE case_id = :id"
_ONE_REPORT = "WHERE report_id = :id"
_CASE_REPORTS = "WHERE case_id = :case ORDER BY submitted_at, report_id"
for _where in (_ONE_REPORT, _CASE_REPORTS):
    statement(select_sql(REPORT, _where))
statement(select_sql(VIEW, _ONE_VIEW))
_VIEW_UPDATE = statement(
    "UPDATE case_view SET "
    + ", ".join(f"{c.name} = :{c.name}" for c in VIEW.columns if not c.primary_key)
    + " WHERE case_id = :case_id"
)
# version 0 is an event without one: it always applies
_REPORT_MOVE = statement(
    "UPDATE report SET case_id = :case, status = :status, status_at = :at, "
    "case_version = CASE WHEN :version > case_version THEN :version ELSE case_version END "
    "WHERE report_id = :id AND (:version = 0 OR case_version <= :version)"
)
_REPORT_CASE = statement("UPDATE report SET case_id = :case WHERE report_id = :id")
_VIEW_MOVE = statement(
    "UPDATE case_view SET status = :status, updated_at = :at, clock = :clock, "
    "version = CASE WHEN :version > version THEN :version ELSE version END "
    "WHERE case_id = :case AND (:version = 0 OR version <= :version)"
)


def _save_view(raw: Raw, view: Any, stored: bool) -> None:
    """Write a case view back (UPDATE), or store it for the first time (INSERT)."""
    if stored:
        values = {k: raw.ts(v) if isinstance(v, datetime) else v for k, v in view._asdict().items()}
        raw.run(_VIEW_UPDATE, values)
    else:
        insert_row(raw, VIEW, view._asdict())


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
        raw.run(_REPORT_CASE, params)


def _newer(view: Any, status: str, version: int, at: datetime) -> Any | None:
    """The view moved to a newer state; None when the event is older than the view."""
    if version and version < view.version:
        return None
    return view._replace(status=status, version=max(version, view.version), updated_at=at)


def case_opened(raw: Raw, data: CaseOpened) -> None:
    """A case was opened for one of our reports: the receipt now points at it."""
    report = raw.record(REPORT, _ONE_REPORT, {"id": data.report_id})
    view = raw.record(VIEW, _ONE_VIEW, {"id": data.case_id})
    stored = view is not None
    if view is None:
        view = ViewRow(
            case_id=data.case_id,
            station_id=data.station_id,
            category=data.category,
            status=data.status,
            version=data.version,
            place_id=report.place_id if report else None,
            opened_at=data.opened_at,
            updated_at=data.opened_at,
            resolve_due=data.resolve_due,
            clock=data.clock,
            after_photo_ids="",
        )
    else:
        view = view._replace(
            station_id=data.station_id,
            category=data.category,
            resolve_due=data.resolve_due or view.resolve_due,
            opened_at=data.opened_at,
        )
        newer = _newer(view, data.status, data.version, data.opened_at)
        view = newer._replace(clock=data.clock) if newer is not None else view
    _save_view(raw, view, stored)
    if report is not None:
        set_status(raw, report.report_id, data.case_id, data.status, "opened", data.opened_at, data.version)


def report_merged(raw: Raw, data: CaseReportMerged, at: datetime) -> None:
    """Our report joined an existing case (`at`: the event's time)."""
    # usually the case's view is there and this is newer: one update (a storm is mostly merges)
    moved = raw.run(
        _VIEW_MOVE,
        {
            "case": data.case_id,
            "status": data.status,
            "version": data.version,
            "at": raw.ts(at),
            "clock": data.clock,
        },
    )
    if not moved and raw.record(VIEW, _ONE_VIEW, {"id": data.case_id}) is None:
        report = raw.record(REPORT, _ONE_REPORT, {"id": data.report_id})
        view = ViewRow(
            case_id=data.case_id,
            station_id=data.station_id,
            category=report.category if report else "other",
            status=data.status,
            version=data.version,
            place_id=report.place_id if report else None,
            opened_at=at,
            updated_at=at,
            resolve_due=None,
            clock=data.clock,
            after_photo_ids="",
        )
        _save_view(raw, view, stored=False)
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
        data.note[:500]
        if data.note and (data.action in NOTE_ACTIONS or data.status == CaseStatus.REJECTED)
        else None
    )
    view = raw.record(VIEW, _ONE_VIEW, {"id": data.case_id})
    stored = view is not None
    reports = raw.records(REPORT, _CASE_REPORTS, {"case": data.case_id})
    known = {r.report_id for r in reports}
    extra = sorted({rid for rid in data.report_ids if rid not in known})
    if extra:
        params: dict[str, Any] = {}
        reports += raw.records(REPORT, f"WHERE report_id IN {in_list('id', extra, params)}", params)
    if view is None and reports:
        first = reports[0]
        view = ViewRow(
            case_id=data.case_id,
            station_id=data.station_id,
            category=first.category,
            status=data.status,
            version=0,
            place_id=first.place_id,
            opened_at=first.submitted_at,
            updated_at=data.at,
            resolve_due=None,
            clock=data.clock,
            after_photo_ids="",
        )
    if view is not None:
        newer = _newer(view, data.status, data.version, data.at)
        if newer is not None:
            changes: dict[str, Any] = {"station_id": data.station_id, "clock": data.clock}
            if data.after_photo_ids:
                changes["after_photo_ids"] = ",".join(data.after_photo_ids)[:500]
            if note is not None:
                changes["status_note"] = note
            due = _optional(data, "resolve_due")
            if isinstance(due, str):
                due = datetime.fromisoformat(due)
            if isinstance(due, datetime):
                changes["resolve_due"] = due
            view = newer._replace(**changes)
        _save_view(raw, view, stored)
    for report in reports:
        set_status(raw, report.report_id, data.case_id, data.status, data.action, data.at, data.version, note)


def open_cases(session: Session, place_id: str) -> list[tuple[CaseView, int]]:
    """Open cases with a report at this place, newest first, with their count of distinct riders."""
    rows = session.exec(
        select(CaseView, func.count(func.distinct(Report.rider_ref)))
        .join(Report, col(Report.case_id) == col(CaseView.case_id))
        .where(col(CaseView.status).in_(PLUS_ONE_STATUSES))
        .where(
            (col(CaseView.place_id) == place_id)
            | col(CaseView.case_id).in_(select(Report.case_id).where(Report.place_id == place_id))
        )
        .group_by(col(CaseView.case_id))
        .order_by(col(CaseView.opened_at).desc())
        .limit(5)
    ).all()
    return [(view, int(riders)) for view, riders in rows]

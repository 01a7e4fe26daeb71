"""The riders' read model, kept from `cases.events`: each report's status and timeline, and the cases.

Handlers run inside the consumer's batch transaction; an event older than what a row already shows
(a lower case version) never moves it back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from gridloop.clock import as_utc
from gridloop.consumer import Handler, Incoming
from schemas.events import REGISTRY, CaseOpened, CaseReportMerged, CaseTransitioned
from services.reporter.models import CaseView, Report, ReportEvent

OPEN_STATES = ("new", "acknowledged", "dispatched", "returned", "on_hold")
"""Case states a rider can still '+1' (resolved waits for the rider; closed and rejected are final)."""
FINAL_STATES = ("closed", "rejected")
NOTE_ACTIONS = ("resolve", "resolved", "reject", "rejected")
"""Staff notes shown to riders: what was done, or why the report was not taken up."""
TRANSITIONS = tuple(
    name.removeprefix("case.")
    for name, (_version, model) in REGISTRY.items()
    if name.startswith("case.") and model is CaseTransitioned
)


def set_status(
    session: Session,
    report: Report,
    status: str,
    action: str,
    at: datetime,
    version: int,
    note: str | None = None,
) -> None:
    """Move a report to the case's new status and add the step to its timeline (unless stale)."""
    if version and version < report.case_version:
        return  # an older event arriving late must not move the status back
    report.status = status
    report.status_at = at
    report.case_version = max(version, report.case_version)
    session.add(report)
    session.add(ReportEvent(report_id=report.report_id, status=status, action=action, at=at, note=note))


def _view(session: Session, case_id: str) -> CaseView | None:
    return session.get(CaseView, case_id)


def _update_view(view: CaseView, status: str, version: int, at: datetime) -> bool:
    """Apply a newer state to a case view; False when the event is older than the view."""
    if version and version < view.version:
        return False
    view.status = status
    view.version = max(version, view.version)
    view.updated_at = at
    return True


def on_case_opened(session: Session, item: Incoming) -> None:
    """A case was opened for one of our reports: the receipt now points at it."""
    data = item.data
    assert isinstance(data, CaseOpened)
    report = session.get(Report, data.report_id)
    view = _view(session, data.case_id)
    if view is None:
        view = CaseView(
            case_id=data.case_id,
            station_id=data.station_id,
            category=data.category,
            status=data.status,
            version=data.version,
            place_id=report.place_id if report else None,
            opened_at=data.opened_at,
            updated_at=data.opened_at,
            resolve_due=data.resolve_due,
        )
    else:
        view.station_id, view.category = data.station_id, data.category
        view.resolve_due = data.resolve_due or view.resolve_due
        view.opened_at = data.opened_at
        _update_view(view, data.status, data.version, data.opened_at)
    session.add(view)
    if report is None:
        return
    report.case_id = data.case_id
    set_status(session, report, data.status, "opened", data.opened_at, data.version)


def on_report_merged(session: Session, item: Incoming) -> None:
    """Our report joined an existing case."""
    data = item.data
    assert isinstance(data, CaseReportMerged)
    at = item.event.time
    report = session.get(Report, data.report_id)
    view = _view(session, data.case_id)
    if view is None:
        view = CaseView(
            case_id=data.case_id,
            station_id=data.station_id,
            category=report.category if report else "other",
            status=data.status,
            version=data.version,
            place_id=report.place_id if report else None,
            opened_at=at,
            updated_at=at,
        )
    else:
        _update_view(view, data.status, data.version, at)
    session.add(view)
    if report is None:
        return
    report.case_id = data.case_id
    set_status(session, report, data.status, "merged", at, data.version)


def _optional(data: Any, name: str) -> Any:
    """An optional field, declared or not (payloads keep unknown fields), None when absent."""
    value = getattr(data, name, None)
    if value is None:
        value = (getattr(data, "model_extra", None) or {}).get(name)
    return value


def on_case_transition(session: Session, item: Incoming) -> None:
    """A case moved on: its view and every report in it show the new status."""
    data = item.data
    assert isinstance(data, CaseTransitioned)
    note = (
        data.note[:500] if data.note and (data.action in NOTE_ACTIONS or data.status == "rejected") else None
    )
    view = _view(session, data.case_id)
    reports = list(session.exec(select(Report).where(Report.case_id == data.case_id)).all())
    known = {r.report_id for r in reports}
    extra = [rid for rid in data.report_ids if rid not in known]
    if extra:
        reports += list(session.exec(select(Report).where(col(Report.report_id).in_(extra))).all())
    if view is None and reports:
        first = reports[0]
        view = CaseView(
            case_id=data.case_id,
            station_id=data.station_id,
            category=first.category,
            status=data.status,
            version=0,
            place_id=first.place_id,
            opened_at=as_utc(first.submitted_at),
            updated_at=data.at,
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
        session.add(view)
    for report in reports:
        report.case_id = data.case_id
        set_status(session, report, data.status, data.action, data.at, data.version, note)


def handlers() -> dict[str, Handler]:
    """The `cases.events` handlers of the reporter's consumer."""
    return {
        "case.opened": on_case_opened,
        "case.report_merged": on_report_merged,
        **{f"case.{name}": on_case_transition for name in TRANSITIONS},
    }

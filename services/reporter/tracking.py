"""What a rider sees of their reports: the public status and timeline of one, and this phone's list.

Public (no credential): status, timeline (with the notes staff published), after-photos. The
rider's own words, photos and answers only with the report's credential (Reporter.owns).
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from gridloop.clock import as_utc
from services.reporter import conversation, nudges, topics
from services.reporter.models import CaseView, Place, Report, ReportEvent
from services.reporter.rider_feedback import feedback_json, shown_feedback
from services.reporter.wording import action_text, status_text


def public_report(
    report: Report, events: list[ReportEvent], view: CaseView | None, base_url: str, closer_url: str
) -> dict[str, Any]:
    """The public view of a report: status and timeline, no personal data."""
    after = view.after_photo_ids.split(",") if view and view.after_photo_ids else []
    return {
        "report_id": report.report_id,
        "case_id": report.case_id,
        "status": report.status,
        "status_text": status_text(report.status, "zh"),
        "category": report.category,
        "place_id": report.place_id,
        "submitted_at": as_utc(report.submitted_at).isoformat(),
        "tracking_url": f"{base_url.rstrip('/')}/t/{report.report_id}",
        "station_id": view.station_id if view else None,
        "resolve_due": as_utc(view.resolve_due).isoformat() if view and view.resolve_due else None,
        "clock": view.clock if view else None,
        "after_photo_urls": [f"{closer_url.rstrip('/')}/photos/{p}.jpg" for p in after],
        "timeline": [
            {
                "status": e.status,
                "action": e.action,
                "text": action_text(e.action, "zh"),
                "at": as_utc(e.at).isoformat(),
                "note": e.note,
            }
            for e in events
        ],
    }


def timeline(session: Session, report_id: str) -> list[ReportEvent]:
    """A report's timeline steps, oldest first."""
    return list(
        session.exec(
            select(ReportEvent).where(ReportEvent.report_id == report_id).order_by(col(ReportEvent.id))
        )
    )


def load_public_report(
    session: Session, report: Report, base_url: str, closer_url: str, owner: bool
) -> dict[str, Any]:
    """The public view of a report with the updates and questions staff published; the rider's shown
    answer, replies and next nudge time (their own doings) only for its `owner`."""
    view = session.get(CaseView, report.case_id) if report.case_id else None
    out = public_report(report, timeline(session, report.report_id), view, base_url, closer_url)
    feedback = shown_feedback(session, report) if owner else None
    out["feedback"] = feedback_json(feedback) if feedback else None
    out["updates"] = conversation.updates(session, report.case_id)
    out["topic"] = topics.for_case(session, report.case_id)
    out["replies"] = conversation.replies(session, report.report_id) if owner else None
    following = nudges.next_nudge_at(report.nudged_at) if owner else None
    out["next_nudge_at"] = following.isoformat() if following else None
    return out


def my_report_rows(
    session: Session, rider_ref: str | None, limit: int = 50
) -> list[tuple[Report, Place | None]]:
    """A rider's reports with their places, newest first."""
    if rider_ref is None:
        return []
    rows = session.exec(
        select(Report, Place)
        .join(Place, col(Place.place_id) == col(Report.place_id), isouter=True)
        .where(Report.rider_ref == rider_ref)
        .order_by(col(Report.submitted_at).desc())
        .limit(limit)
    ).all()
    return [(r, p) for r, p in rows]

"""The rider's closing step: fixed or not, a rating, a comment; sent on as `report.feedback`."""

from __future__ import annotations

from pydantic import ConfigDict, Field
from sqlmodel import Session, col, select

from gridloop.clock import utcnow
from gridloop.errors import ApiError
from gridloop.outbox import add_event
from gridloop.topics import REPORTS_FEEDBACK
from schemas.cases import CaseStatus
from schemas.events import ReportFeedback, make_event
from services.reporter.credentials import PlainIn
from services.reporter.models import PLUMBING, Feedback, Report, ReportEvent

SERVICE = "reporter"


class FeedbackIn(PlainIn):
    """What the tracking page sends (stored plain: services.reporter.credentials)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    fixed: bool = Field(description="The rider says it is fixed (true) or not (false).")
    rating: int | None = Field(None, ge=1, le=5, description="1–5 stars, optional.")
    comment: str = Field("", max_length=500, description="Required when not fixed.")


def feedback_json(row: Feedback) -> dict[str, object]:
    """A stored answer as the API shows it."""
    return {
        "report_id": row.report_id,
        "case_id": row.case_id,
        "fixed": row.fixed,
        "rating": row.rating,
        "comment": row.comment,
        "at": row.at.isoformat(),
    }


def current_feedback(session: Session, report: Report) -> Feedback | None:
    """The rider's answer on the case's current resolution, if given."""
    return session.exec(
        select(Feedback)
        .where(Feedback.report_id == report.report_id, Feedback.case_version == report.case_version)
        .order_by(col(Feedback.id).desc())
    ).first()


def latest_feedback(session: Session, report_id: str) -> Feedback | None:
    """The rider's most recent answer on a report, whatever resolution it was for."""
    return session.exec(
        select(Feedback).where(Feedback.report_id == report_id).order_by(col(Feedback.id).desc())
    ).first()


def shown_feedback(session: Session, report: Report) -> Feedback | None:
    """The answer to show: while a resolution waits, only an answer to it; afterwards the latest."""
    if report.case_id is None:
        return None
    if report.status == CaseStatus.RESOLVED:
        return current_feedback(session, report)
    return latest_feedback(session, report.report_id)


def _same(row: Feedback, body: FeedbackIn) -> bool:
    return row.fixed == body.fixed and row.rating == body.rating and row.comment == body.comment


def give_feedback(session: Session, report_id: str, body: FeedbackIn) -> tuple[Feedback, bool]:
    """Store the answer and its event in one transaction; (row, created). A repeat is harmless."""
    report = session.get(Report, report_id)
    if report is None:
        raise ApiError(404, "not_found", "No such report.")
    last = latest_feedback(session, report_id)
    repeat = last is not None and _same(last, body)
    if (
        last is not None
        and repeat
        and (last.case_version == report.case_version or report.status != CaseStatus.RESOLVED)
    ):
        return last, False  # a double tap, or the case already moved on because of this very answer
    if report.case_id is None or report.status != CaseStatus.RESOLVED:
        raise ApiError(
            409,
            "not_resolved",
            "Feedback is asked for once the case is resolved.",
            {"status": report.status},
        )
    if current_feedback(session, report) is not None:
        raise ApiError(409, "feedback_given", "This resolution was answered already.")
    if not body.fixed and not body.comment:
        raise ApiError(
            422, "comment_required", "没修好时请写明原因 — say what is still wrong.", {"field": "comment"}
        )
    now = utcnow()
    data = ReportFeedback(
        report_id=report_id,
        case_id=report.case_id,
        fixed=body.fixed,
        rating=body.rating,
        comment=body.comment,
        at=now,
    )
    event = make_event("report.feedback", data, source=SERVICE, subject=report.case_id, time=now)
    row = Feedback(
        report_id=report_id,
        case_id=report.case_id,
        case_version=report.case_version,
        fixed=body.fixed,
        rating=body.rating,
        comment=body.comment,
        at=now,
        event_id=event.id,
    )
    session.add(row)
    action = "feedback_fixed" if body.fixed else "feedback_not_fixed"
    session.add(ReportEvent(report_id=report_id, status=report.status, action=action, at=now))
    add_event(session, PLUMBING, REPORTS_FEEDBACK, report.case_id, event)
    return row, True

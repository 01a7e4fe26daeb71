"""The rider's answer on a resolved case (`reports.feedback`): confirmed closes, denied reopens."""

from __future__ import annotations

import logging

from sqlmodel import Session, select

from gridloop.clock import utcnow
from gridloop.consumer import Incoming
from schemas.events import ReportFeedback
from services.closer.lifecycle import Lifecycle
from services.closer.models import Case, CaseReport, TimelineEntry
from services.closer.transitions import Request

log = logging.getLogger(__name__)


class UnknownCase(LookupError):
    """Feedback for a case this closer does not have (it goes to the dead letters)."""


class FeedbackHandler:
    """Applies `report.feedback` events inside the consumer's batch transaction."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def on_feedback(self, session: Session, item: Incoming) -> None:
        """Keep the rating and comment; close a resolved case on yes, reopen it on no."""
        d = item.data
        assert isinstance(d, ReportFeedback)
        case = session.exec(select(Case).where(Case.case_id == d.case_id).with_for_update()).first()
        if case is None:
            raise UnknownCase(f"no case {d.case_id}")
        now = utcnow()
        report = session.get(CaseReport, d.report_id)
        if report is not None and report.case_id == case.case_id:
            report.fixed, report.rating = d.fixed, d.rating
            report.comment = d.comment or None
            report.feedback_at = d.at
            session.add(report)
        if d.rating is not None:
            case.rating = d.rating
        comment = d.comment.strip()
        if case.status == "resolved":
            if d.fixed:
                req = Request("confirm", note=comment or None)
            else:
                # the reporter requires a comment to deny; an empty one still reopens the case
                req = Request("reopen", note=comment or "骑手反馈未解决 (rider says not fixed)")
            result = self.lifecycle.transition(session, case, "system", "rider", req, now)
            result.done()  # the batch commits right after; a retried batch may count twice, rarely
            return
        # late or repeated feedback: the rating is kept, the state does not change
        case.version += 1
        case.updated_at = now
        session.add(case)
        session.add(
            TimelineEntry(
                case_id=case.case_id,
                at=now,
                action="feedback",
                status=case.status,
                actor="rider",
                note=comment or None,
                station_id=case.station_id,
                version=case.version,
            )
        )
        log.info("feedback on %s in state %s: kept, no transition", case.case_id, case.status)

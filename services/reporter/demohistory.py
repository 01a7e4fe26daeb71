"""The reporter's rows of the demo history (gridloop/demohistory.py): the riders' reports, their public
steps, the case views and the riders' answers, so riders' pages agree with the closer's cases."""

from __future__ import annotations

from sqlmodel import col, select

from gridloop.db import Database
from gridloop.demohistory import HistoricCase
from services.reporter.models import CaseView, Feedback, Report, ReportEvent


def load(db: Database, cases: list[HistoricCase]) -> int:
    """Write the history's reports that are not there yet (by report id); returns how many were added."""
    added = 0
    with db.session(write=True) as session:
        ids = [r.report_id for c in cases for r in c.reports]
        have: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            have.update(session.exec(select(Report.report_id).where(col(Report.report_id).in_(chunk))))
        views = {c.case_id for c in cases}
        stored_views: set[str] = set()
        for start in range(0, len(cases), 500):
            chunk = [c.case_id for c in cases[start : start + 500]]
            stored_views.update(
                session.exec(select(CaseView.case_id).where(col(CaseView.case_id).in_(chunk)))
            )
        for c in cases:
            if c.case_id in views and c.case_id not in stored_views:
                session.add(
                    CaseView(
                        case_id=c.case_id,
                        station_id=c.station_id,
                        category=c.category,
                        status=c.status,
                        version=c.version,
                        place_id=c.place.place_id,
                        opened_at=c.submitted_at,
                        updated_at=c.updated_at,
                        resolve_due=c.resolve_due,
                        clock="calendar",
                    )
                )
            for r in c.reports:
                if r.report_id in have:
                    continue
                added += 1
                session.add(
                    Report(
                        report_id=r.report_id,
                        request_hash="demo-history",
                        channel="code",
                        category=c.category,
                        code=c.place.code,
                        place_id=c.place.place_id,
                        grid_id=c.grid_id,
                        lat=c.place.lat,
                        lon=c.place.lon,
                        description="历史演示数据 (demo history)",
                        platform=r.platform,
                        rider_ref=r.rider_ref,
                        submitted_at=r.submitted_at,
                        submitted_event_id=f"demo-history-{r.report_id}",
                        last_published_at=r.submitted_at,
                        case_id=c.case_id,
                        status=c.status,
                        status_at=c.updated_at,
                        case_version=c.version,
                    )
                )
                session.flush()  # the report before the rows that point at it
                for step in c.steps:
                    if step.at >= r.submitted_at:
                        session.add(
                            ReportEvent(
                                report_id=r.report_id, status=step.status, action=step.action, at=step.at
                            )
                        )
                if r.fixed is not None and r.feedback_at is not None:
                    session.add(
                        Feedback(
                            report_id=r.report_id,
                            case_id=c.case_id,
                            case_version=c.version,
                            fixed=r.fixed,
                            rating=r.rating,
                            at=r.feedback_at,
                            event_id=f"demo-history-feedback-{r.report_id}",
                        )
                    )
    return added

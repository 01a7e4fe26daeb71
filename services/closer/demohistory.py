"""The closer's rows of the demo history (gridloop/demohistory.py): cases, their reports and timeline."""

from __future__ import annotations

from sqlmodel import col, select

from gridloop.db import Database
from gridloop.demohistory import HistoricCase
from services.closer.models import Case, CaseReport, TimelineEntry


def load(db: Database, cases: list[HistoricCase]) -> int:
    """Write the history's cases that are not there yet (by case id); returns how many were added."""
    added = 0
    with db.session(write=True) as session:
        ids = [c.case_id for c in cases]
        have: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            have.update(session.exec(select(Case.case_id).where(col(Case.case_id).in_(chunk))))
        for c in cases:
            if c.case_id in have:
                continue
            added += 1
            session.add(
                Case(
                    case_id=c.case_id,
                    station_id=c.station_id,
                    street_id=c.street_id,
                    grid_id=c.grid_id,
                    category=c.category,
                    status=c.status,
                    is_active=c.status in ("new", "acknowledged", "dispatched", "returned"),
                    version=c.version,
                    place_id=c.place.place_id,
                    place_name=c.place.name_zh,
                    lat=c.place.lat,
                    lon=c.place.lon,
                    description="历史演示数据 (demo history)",
                    route_reason="演示 (demo)",
                    submitted_at=c.submitted_at,
                    opened_at=c.submitted_at,
                    updated_at=c.updated_at,
                    clock="calendar",
                    ack_hours=2.0,
                    resolve_hours=24.0,
                    extension_hours=24.0 * c.extensions_granted,
                    ack_due=c.ack_due,
                    resolve_due=c.resolve_due,
                    due_at=None if c.acknowledged_at else c.ack_due,
                    acknowledged_at=c.acknowledged_at,
                    dispatched_at=c.dispatched_at,
                    resolved_at=c.resolved_at,
                    closed_at=c.closed_at,
                    returned_at=c.returned_at,
                    reopened_at=c.reopened_at,
                    assignee=c.assignee,
                    moves=c.moves,
                    extensions_granted=c.extensions_granted,
                    reopen_count=c.reopen_count,
                    rating=c.rating,
                    distinct_riders=len({r.rider_ref for r in c.reports}),
                    report_count=len(c.reports),
                    common_issue=c.common_issue,
                    nudges=c.nudges,
                    rider_confirmed=c.steps[-1].action == "confirm",
                )
            )
            for r in c.reports:
                session.add(
                    CaseReport(
                        report_id=r.report_id,
                        case_id=c.case_id,
                        rider_ref=r.rider_ref,
                        submitted_at=r.submitted_at,
                        event_id=f"demo-history-{r.report_id}",
                        envelope="{}",
                        description="历史演示数据 (demo history)",
                        fixed=r.fixed,
                        rating=r.rating,
                        feedback_at=r.feedback_at,
                        platform=r.platform,
                    )
                )
            for version, step in enumerate(c.steps, start=1):
                session.add(
                    TimelineEntry(
                        case_id=c.case_id,
                        at=step.at,
                        action=step.action,
                        status=step.status,
                        actor=step.actor,
                        note=step.note,
                        station_id=c.station_id,
                        version=version,
                    )
                )
    return added

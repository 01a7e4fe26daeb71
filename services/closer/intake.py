"""Opening cases and merging reports into them, from the router's decisions."""

from __future__ import annotations

from sqlmodel import Session

from gridloop import metrics
from gridloop.clock import as_utc, utcnow
from gridloop.consumer import Incoming, after_commit
from gridloop.db import insert_row
from gridloop.outbox import add_event, add_raw
from gridloop.topics import CASES_EVENTS
from schemas.events import CaseOpened, CaseReportMerged, ReportRouted, make_event
from schemas.reference import Jurisdiction
from services.closer.lifecycle import Lifecycle
from services.closer.models import PLUMBING, Case, CaseReport, TimelineEntry

SERVICE = "closer"
_RANK = {"normal": 0, "high": 1, "urgent": 2}


class CaseIntake:
    """Applies `report.routed` decisions: a new case, or one more report on an existing one."""

    def __init__(self, jurisdiction: Jurisdiction, lifecycle: Lifecycle) -> None:
        self.j = jurisdiction
        self.lifecycle = lifecycle

    def on_routed(self, session: Session, item: Incoming) -> None:
        """Open the case (or add the report to it) and tell the reporter on `cases.events`."""
        d = item.data
        assert isinstance(d, ReportRouted)
        if session.get(CaseReport, d.report_id) is not None:
            self.replay(session, item)
            return
        now = utcnow()
        case = session.get(Case, d.case_id)
        if case is None:
            # a merge that arrives for a case we never saw (redelivery order) opens it just the same
            case = Case(
                case_id=d.case_id,
                station_id=d.station_id,
                category=d.category,
                status="new",
                priority=d.priority,
                triage=d.decision == "triage",
                version=1,
                grid_id=d.grid_id,
                street_id=d.street_id,
                place_id=d.place_id,
                place_name=d.place_name,
                lat=d.location.lat if d.location else None,
                lon=d.location.lon if d.location else None,
                description=d.description,
                danger_now=d.danger_now,
                route_reason=d.reason,
                submitted_at=d.submitted_at,
                opened_at=now,
                updated_at=now,
                distinct_riders=d.distinct_riders,
                report_count=1,
                common_issue=d.common_issue,
            )
            self.lifecycle.set_budget(case)
            self.lifecycle.refresh_sla(session, case)
            session.add(case)
            session.flush()
            action = "triage" if case.triage else "opened"
            insert_row(
                session,
                TimelineEntry(
                    case_id=case.case_id,
                    at=now,
                    action=action,
                    status=case.status,
                    note=d.reason,
                    station_id=case.station_id,
                    version=case.version,
                ),
            )
            opened = CaseOpened(
                case_id=case.case_id,
                report_id=d.report_id,
                station_id=case.station_id,
                category=case.category,
                status=case.status,
                priority=d.priority,
                triage=case.triage,
                version=case.version,
                opened_at=now,
                ack_due=case.ack_due,
                resolve_due=case.resolve_due,
            )
            event = make_event("case.opened", opened, source=SERVICE, subject=case.case_id, time=now)
        else:
            case.report_count += 1
            case.distinct_riders = max(case.distinct_riders, d.distinct_riders)
            case.common_issue = case.common_issue or d.common_issue
            if _RANK.get(d.priority, 0) > _RANK.get(case.priority, 0):
                # a higher priority (a common issue, a danger) tightens the deadlines
                case.priority = d.priority
                self.lifecycle.set_budget(case)
                self.lifecycle.refresh_sla(session, case)
            case.version += 1
            case.updated_at = now
            session.add(case)
            note = "共性问题" if d.common_issue else None
            insert_row(
                session,
                TimelineEntry(
                    case_id=case.case_id,
                    at=now,
                    action="report_merged",
                    status=case.status,
                    note=note,
                    station_id=case.station_id,
                    version=case.version,
                ),
            )
            merged = CaseReportMerged(
                case_id=case.case_id,
                report_id=d.report_id,
                station_id=case.station_id,
                status=case.status,
                distinct_riders=case.distinct_riders,
                common_issue=case.common_issue,
                version=case.version,
            )
            event = make_event("case.report_merged", merged, source=SERVICE, subject=case.case_id, time=now)
        insert_row(
            session,
            CaseReport(
                report_id=d.report_id,
                case_id=case.case_id,
                rider_ref=d.rider_ref,
                submitted_at=d.submitted_at,
                event_id=event.id,
                envelope=event.model_dump_json(),
                description=d.description,
                photo_ids=",".join(d.photo_ids)[:400],
            ),
        )
        add_event(session, PLUMBING, CASES_EVENTS, case.case_id, event)
        submitted = as_utc(d.submitted_at)
        # measured when the transaction has committed: that is when the case shows in the queue
        after_commit(
            session,
            lambda: metrics.report_to_queue.observe(max((utcnow() - submitted).total_seconds(), 0.0)),
        )

    def replay(self, session: Session, item: Incoming) -> None:
        """A decision seen before: send the reporter the same answer again (it dedupes by id)."""
        d = item.data
        assert isinstance(d, ReportRouted)
        row = session.get(CaseReport, d.report_id)
        if row is not None:
            add_raw(session, PLUMBING, CASES_EVENTS, row.case_id, row.event_id, row.envelope)

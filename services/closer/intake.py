"""Opening cases and merging reports into them, from the router's decisions."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from gridloop import metrics
from gridloop.clock import as_utc, utcnow
from gridloop.consumer import Incoming, after_commit
from gridloop.outbox import add_raw
from gridloop.rawsql import Raw, insert_model, insert_row
from gridloop.topics import CASES_EVENTS
from schemas.envelope import CloudEvent
from schemas.events import CaseOpened, CaseReportMerged, ReportRouted, make_event
from schemas.reference import Jurisdiction
from services.closer.lifecycle import Lifecycle
from services.closer.models import PLUMBING, Case

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
        raw = Raw(session)
        # one round trip: is the report known already (a redelivery), and the case's priority if any
        seen, priority = raw.first(
            "SELECT (SELECT 1 FROM case_report WHERE report_id = :report), "
            '(SELECT priority FROM "case" WHERE case_id = :case)',
            {"report": d.report_id, "case": d.case_id},
        ) or (None, None)
        if seen:
            self.replay(session, item)
            return
        now = utcnow()
        if priority is None:
            # a merge that arrives for a case we never saw (redelivery order) opens it just the same
            event = self._open(raw, d, now)
        elif _RANK.get(d.priority, 0) > _RANK.get(priority, 0):
            event = self._merge_raising_priority(session, d, now)
        else:
            event = self._merge(raw, d, now)
        envelope = event.model_dump_json()
        insert_row(
            raw,
            "case_report",
            {
                "report_id": d.report_id,
                "case_id": d.case_id,
                "rider_ref": d.rider_ref,
                "submitted_at": d.submitted_at,
                "event_id": event.id,
                "envelope": envelope,
                "description": d.description,
                "photo_ids": ",".join(d.photo_ids)[:400],
            },
        )
        add_raw(session, PLUMBING, CASES_EVENTS, d.case_id, event.id, envelope)
        submitted = as_utc(d.submitted_at)
        # measured when the transaction has committed: that is when the case shows in the queue
        after_commit(
            session,
            lambda: metrics.report_to_queue.observe(max((utcnow() - submitted).total_seconds(), 0.0)),
        )

    def _open(self, raw: Raw, d: ReportRouted, now: datetime) -> CloudEvent:
        """A new case (立案, or the centre's triage queue) from the report that opened it."""
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
        self.lifecycle.refresh_sla(None, case)
        insert_model(raw, case)
        self._timeline(
            raw,
            case.case_id,
            now,
            "triage" if case.triage else "opened",
            case.status,
            d.reason,
            case.station_id,
            case.version,
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
        return make_event("case.opened", opened, source=SERVICE, subject=case.case_id, time=now)

    def _merge(self, raw: Raw, d: ReportRouted, now: datetime) -> CloudEvent:
        """One more report on a case: one atomic update (staff may be changing the case meanwhile)."""
        row = raw.first(
            _MERGE,
            {"id": d.case_id, "riders": d.distinct_riders, "common": d.common_issue, "now": raw.ts(now)},
        )
        assert row is not None
        station_id, status, version, riders, common = row
        return self._merged(raw, d, now, station_id, status, version, riders, bool(common))

    def _merge_raising_priority(self, session: Session, d: ReportRouted, now: datetime) -> CloudEvent:
        """One more report that raises the case's priority (a common issue, a danger): the deadlines
        tighten, so the case is recomputed whole, under a row lock."""
        case = session.exec(select(Case).where(Case.case_id == d.case_id).with_for_update()).one()
        case.report_count += 1
        case.distinct_riders = max(case.distinct_riders, d.distinct_riders)
        case.common_issue = case.common_issue or d.common_issue
        case.priority = d.priority
        self.lifecycle.set_budget(case)
        self.lifecycle.refresh_sla(session, case)
        case.version += 1
        case.updated_at = now
        session.add(case)
        session.flush()
        session.expunge(case)  # the next event may change this row in plain SQL
        return self._merged(
            Raw(session),
            d,
            now,
            case.station_id,
            case.status,
            case.version,
            case.distinct_riders,
            case.common_issue,
        )

    def _merged(
        self,
        raw: Raw,
        d: ReportRouted,
        now: datetime,
        station_id: str,
        status: str,
        version: int,
        riders: int,
        common: bool,
    ) -> CloudEvent:
        self._timeline(
            raw,
            d.case_id,
            now,
            "report_merged",
            status,
            "共性问题" if d.common_issue else None,
            station_id,
            version,
        )
        merged = CaseReportMerged(
            case_id=d.case_id,
            report_id=d.report_id,
            station_id=station_id,
            status=status,
            distinct_riders=riders,
            common_issue=common,
            version=version,
        )
        return make_event("case.report_merged", merged, source=SERVICE, subject=d.case_id, time=now)

    @staticmethod
    def _timeline(
        raw: Raw,
        case_id: str,
        at: datetime,
        action: str,
        status: str,
        note: str | None,
        station_id: str,
        version: int,
    ) -> None:
        insert_row(
            raw,
            "timeline",
            {
                "case_id": case_id,
                "at": at,
                "action": action,
                "status": status,
                "actor": "system",
                "note": note,
                "station_id": station_id,
                "version": version,
            },
        )

    def replay(self, session: Session, item: Incoming) -> None:
        """A decision seen before: send the reporter the same answer again (it dedupes by id)."""
        d = item.data
        assert isinstance(d, ReportRouted)
        row = Raw(session).first(
            "SELECT case_id, event_id, envelope FROM case_report WHERE report_id = :id", {"id": d.report_id}
        )
        if row is not None:
            case_id, event_id, envelope = row
            add_raw(session, PLUMBING, CASES_EVENTS, case_id, event_id, envelope)


# atomic next to staff transitions of the same case (PostgreSQL takes the row lock); the larger of
# the rider counts, a sticky common-issue flag
_MERGE = (
    'UPDATE "case" SET report_count = report_count + 1, '
    "distinct_riders = CASE WHEN distinct_riders < :riders THEN :riders ELSE distinct_riders END, "
    "common_issue = (common_issue OR :common), version = version + 1, updated_at = :now "
    "WHERE case_id = :id RETURNING station_id, status, version, distinct_riders, common_issue"
)

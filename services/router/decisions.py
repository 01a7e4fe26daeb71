"""A report's route decided from the case index and written: its case, its decision, `report.routed`.

The pure rules are in ``services.router.routing`` (the areas a report's locks cover in
``services.router.areas``); the index lookups and the routing locks in ``services.router.index``.
Here they meet: `Decisions.lock_batch` takes a batch's locks as it begins; `Decisions.route` plans a
report from the index as it stands in the consumer's transaction, opens or updates its case, keeps
the decision (so a re-driven report gets the same answer) and queues `report.routed` in the outbox.
The explain endpoint asks the same questions without writing anything (`Decisions.what_if`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from gridloop import metrics
from gridloop.clock import as_utc, utcnow
from gridloop.consumer import Incoming
from gridloop.outbox import add_raw
from gridloop.rawsql import Raw, Tx, after_commit, insert_row, statement
from gridloop.topics import REPORTS_ROUTED
from schemas.cases import CaseStatus
from schemas.events import ReportRouted, ReportSubmitted, make_event
from schemas.reference import Jurisdiction
from services.router import index
from services.router.areas import MergeAreas
from services.router.index import CaseRow
from services.router.models import PLUMBING, ROUTE_DECISION
from services.router.places import PlaceBook
from services.router.routing import (
    Assessment,
    Candidate,
    ReportFacts,
    RouteResult,
    assess,
    decide,
    is_recurring,
    reason_text,
)

SERVICE = "router"
_DECIDED = statement("SELECT 1 FROM route_decision WHERE report_id = :id")
_DECISION = statement("SELECT case_id, event_id, envelope FROM route_decision WHERE report_id = :id")


def new_case_id() -> str:
    """A new case id (the router names cases so later reports can merge before the closer answers)."""
    return "c_" + uuid.uuid4().hex[:16]


def facts_of(data: ReportSubmitted) -> ReportFacts:
    """What routing needs from a submitted report."""
    loc = data.location
    return ReportFacts(
        category=data.category,
        grid_id=data.grid_id,
        lat=loc.lat if loc else None,
        lon=loc.lon if loc else None,
        place_id=data.place_id,
        danger_now=data.danger_now,
        rider_ref=data.rider_ref,
        submitted_at=as_utc(data.submitted_at),
        plus_one_case_id=data.plus_one_case_id,
        place_name=data.place_name,
    )


@dataclass(frozen=True)
class Plan:
    """A routing decision before it is written: the decision, and the cases near the report it chose
    from (candidates) and judges recurrence by (history)."""

    facts: ReportFacts
    result: RouteResult
    candidates: list[Candidate]
    history: list[Candidate]
    cases: dict[str, CaseRow]


@dataclass(frozen=True)
class WhatIf:
    """What a report would get, for explain: the plan, the standing it would give, the case it would join."""

    plan: Plan
    assessment: Assessment
    duplicate: CaseRow | None


class Decisions:
    """Applies routing decisions to the router's database (inside consumer transactions)."""

    def __init__(self, jurisdiction: Jurisdiction) -> None:
        self.j = jurisdiction
        self.centre_ids = tuple(s.id for s in jurisdiction.stations.values() if s.kind == "centre")
        self.areas = MergeAreas(jurisdiction)

    def lock_batch(self, session: Tx, items: Sequence[Incoming]) -> None:
        """The routing locks of every area a batch's reports may read or change, as it begins."""
        reports = [i.data for i in items if isinstance(i.data, ReportSubmitted)]
        index.lock_batch(session, set().union(*(self.areas.of(facts_of(r)) for r in reports)))

    def plan(self, raw: Raw, facts: ReportFacts) -> Plan:
        """Decide a report from the index as it stands in this transaction (reads only)."""
        category = self.j.categories.get(facts.category)
        found = index.Nearby({}, [], [])
        if category is not None:
            found = index.nearby(
                raw, facts, category.dup_radius_m, timedelta(hours=category.dup_window_hours)
            )
        result = decide(self.j, facts, found.candidates)
        return Plan(facts, result, found.candidates, found.history, found.cases)

    def assessment(self, raw: Raw, plan: Plan, case: CaseRow | None) -> tuple[Assessment, index.Standing]:
        """Riders, common issue and priority of the case (None: a new one) once this report joins it."""
        facts, result = plan.facts, plan.result
        category = self.j.categories.get(facts.category)
        recurring = None
        if category is not None and result.decision != "triage":
            recurring = is_recurring(
                category, facts, plan.history, exclude_case=case.case_id if case is not None else None
            )
        standing = index.standing(raw, case, facts.rider_ref, facts.submitted_at)
        return assess(category, facts, standing.distinct_riders, standing.common_issue, recurring), standing

    def what_if(self, raw: Raw, facts: ReportFacts) -> WhatIf:
        """The decision a report would get now, and the case it would join, without writing anything."""
        plan = self.plan(raw, facts)
        merge_id = plan.result.merge_case_id
        duplicate = plan.cases.get(merge_id) if merge_id else None
        assessment, _ = self.assessment(raw, plan, duplicate)
        return WhatIf(plan, assessment, duplicate)

    def route(self, session: Tx, data: ReportSubmitted) -> None:
        """Decide one report's case and queue `report.routed` (a report decided before: the same answer)."""
        started = time.perf_counter()
        raw = Raw(session)
        if not session.info.get(index.BATCH_LOCKED):  # a batch took its reports' locks as it began
            index.lock_areas(session, self.areas.of(facts_of(data)))
        if raw.first(_DECIDED, {"id": data.report_id}):
            self.replay(session, data)  # the same report under another event id: same answer
            return
        PlaceBook.learn(raw, data, as_utc(data.submitted_at))
        facts = facts_of(data)
        plan = self.plan(raw, facts)
        result = plan.result
        merged: CaseRow | None = None
        if result.decision == "merge":
            assert result.merge_case_id is not None
            merged = plan.cases[result.merge_case_id]
        standing, riders = self.assessment(raw, plan, merged)
        if merged is not None:
            case = merged._replace(
                last_report_at=max(merged.last_report_at, facts.submitted_at),
                common_issue=standing.common_issue,
                distinct_riders=merged.distinct_riders + int(riders.new_rider),
            )
            index.update_routed(raw, case)
        else:
            case = index.new_case_row(
                case_id=new_case_id(),
                category=data.category,
                station_id=result.station_id,
                grid_id=result.grid_id,
                street_id=result.street_id,
                place_id=data.place_id,
                lat=facts.lat,
                lon=facts.lon,
                opened_at=facts.submitted_at,
                last_report_at=facts.submitted_at,
                open=result.decision == "open",
                status=CaseStatus.NEW,
                triage=result.decision == "triage",
                common_issue=standing.common_issue,
                version=0,
                late_reports=0,
                distinct_riders=int(riders.new_rider),
            )
            index.insert_case(raw, case)
        case_id = case.case_id
        index.add_report(raw, data.report_id, case_id, data.rider_ref, facts.submitted_at)
        reasons = result.reasons + standing.reasons
        routed = ReportRouted(
            report_id=data.report_id,
            case_id=case_id,
            decision=result.decision,
            category=data.category,
            station_id=result.station_id,
            grid_id=result.grid_id,
            street_id=result.street_id,
            location=data.location,
            place_id=data.place_id,
            place_name=data.place_name,
            description=data.description,
            danger_now=data.danger_now,
            photo_ids=data.photo_ids,
            rider_ref=data.rider_ref,
            priority=standing.priority,
            submitted_at=data.submitted_at,
            reason=reason_text(reasons),
            rule_id=result.rule_id,
            distinct_riders=standing.distinct_riders,
            common_issue=standing.common_issue,
            platform=data.platform,
        )
        now = utcnow()
        event = make_event("report.routed", routed, source=SERVICE, subject=case_id, time=now)
        envelope = event.model_dump_json()
        add_raw(session, PLUMBING, REPORTS_ROUTED, case_id, event.id, envelope)
        insert_row(
            raw,
            ROUTE_DECISION,
            {
                "report_id": data.report_id,
                "case_id": case_id,
                "decision": result.decision,
                "event_id": event.id,
                "envelope": envelope,
                "decided_at": now,
            },
        )
        elapsed = time.perf_counter() - started
        decision = result.decision

        def count() -> None:
            # counted once the decision is committed: a retried batch must not count twice
            metrics.route_decisions.labels(decision).inc()
            metrics.route_duration.observe(elapsed)

        after_commit(session, count)

    def replay(self, session: Tx, data: ReportSubmitted) -> None:
        """A report seen before: publish the stored decision again (downstream dedupes by id)."""
        row = Raw(session).first(_DECISION, {"id": data.report_id})
        if row is not None:
            case_id, event_id, envelope = row
            add_raw(session, PLUMBING, REPORTS_ROUTED, case_id, event_id, envelope)

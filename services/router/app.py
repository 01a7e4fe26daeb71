"""The router service: consumes submitted reports, decides their case, publishes `reports.routed`.

The router names cases (so a later report can merge before the closer has answered) and keeps the
index of cases in its own database (``services.router.index``). It learns from `cases.events` which
cases closed, were rejected or moved.

The close/merge race. The router hears of a closure only when `case.closed` (or `case.rejected`)
reaches it; a report routed in between merges into a case the closer has just closed. The router's
decision stands: a report gets exactly one answer, and re-routing it would give it two (the rider's
receipt would point at one case, the closer and the reporter dedupe by report id and would keep
the other). The closer, which owns case state, receives it as a report on a closed case. The router
spots these late merges when the closure event arrives (its ``report_ids`` lack a report the
router had merged), counts them in ``gridloop_route_late_merges_total``, keeps the count on the
case row and logs them, so operators see how often the window bites; from then on the case is out
of the index, and the next report there opens a new case.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Query

from gridloop import metrics
from gridloop.clock import as_utc, utcnow
from gridloop.consumer import Incoming, after_commit
from gridloop.demo import DEMO_PLACES
from gridloop.errors import ApiError
from gridloop.outbox import add_raw
from gridloop.rawsql import Raw, Tx, insert_row
from gridloop.service import Runtime, create_app
from gridloop.settings import Settings, get_settings
from gridloop.topics import CASES_EVENTS, REPORTS_ROUTED, REPORTS_SUBMITTED
from schemas.events import REGISTRY, CaseTransitioned, ReportRouted, ReportSubmitted, make_event
from schemas.reference import Jurisdiction, load_jurisdiction
from services.router import index
from services.router.index import IndexCase
from services.router.models import PLUMBING, Base
from services.router.places import CodePlace, PlaceBook
from services.router.routing import (
    Assessment,
    Candidate,
    ReportFacts,
    RouteResult,
    assess_case,
    decide,
    is_recurring,
    reason_text,
)

SERVICE = "router"
log = logging.getLogger(__name__)
CASE_STATE_EVENTS = tuple(name for name, (_, model) in REGISTRY.items() if model is CaseTransitioned)


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
    cases: dict[str, IndexCase]


class RouterLogic:
    """Applies routing decisions to the router's database (called inside consumer transactions)."""

    def __init__(self, jurisdiction: Jurisdiction) -> None:
        self.j = jurisdiction
        self.centre_ids = tuple(s.id for s in jurisdiction.stations.values() if s.kind == "centre")

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

    def assessment(self, raw: Raw, plan: Plan, case: IndexCase | None) -> tuple[Assessment, index.Standing]:
        """Riders, common issue and priority of the case (None: a new one) once this report joins it."""
        facts, result = plan.facts, plan.result
        category = self.j.categories.get(facts.category)
        recurring = None
        if category is not None and result.decision != "triage":
            recurring = is_recurring(
                category, facts, plan.history, exclude_case=case.case_id if case is not None else None
            )
        standing = index.standing(raw, case, facts.rider_ref, facts.submitted_at)
        return (
            assess_case(category, facts, standing.distinct_riders, standing.common_issue, recurring),
            standing,
        )

    def on_submitted(self, session: Tx, item: Incoming) -> None:
        """Decide one report's case and queue `report.routed`."""
        started = time.perf_counter()
        data = item.data
        assert isinstance(data, ReportSubmitted)
        raw = Raw(session)
        if not session.info.get(index.BATCH_LOCKED):
            index.lock_for_routing(raw)
        if raw.first("SELECT 1 FROM route_decision WHERE report_id = :id", {"id": data.report_id}):
            self.replay(session, item)  # the same report under another event id: same answer
            return
        PlaceBook.learn(raw, data, as_utc(data.submitted_at))
        facts = facts_of(data)
        plan = self.plan(raw, facts)
        result = plan.result
        merged: IndexCase | None = None
        if result.decision == "merge":
            assert result.merge_case_id is not None
            merged = plan.cases[result.merge_case_id]
        standing, riders = self.assessment(raw, plan, merged)
        if merged is not None:
            case = merged
            case.last_report_at = max(case.last_report_at, facts.submitted_at)
            case.common_issue = standing.common_issue
            case.distinct_riders += int(riders.new_rider)
            index.update_case(raw, case)
        else:
            case = IndexCase(
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
                triage=result.decision == "triage",
                common_issue=standing.common_issue,
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
        )
        now = utcnow()
        event = make_event("report.routed", routed, source=SERVICE, subject=case_id, time=now)
        envelope = event.model_dump_json()
        add_raw(session, PLUMBING, REPORTS_ROUTED, case_id, event.id, envelope)
        insert_row(
            raw,
            "route_decision",
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

    def replay(self, session: Tx, item: Incoming) -> None:
        """A report seen before: publish the stored decision again (downstream dedupes by id)."""
        data = item.data
        assert isinstance(data, ReportSubmitted)
        row = Raw(session).first(
            "SELECT case_id, event_id, envelope FROM route_decision WHERE report_id = :id",
            {"id": data.report_id},
        )
        if row is not None:
            case_id, event_id, envelope = row
            add_raw(session, PLUMBING, REPORTS_ROUTED, case_id, event_id, envelope)

    def on_case_event(self, session: Tx, item: Incoming) -> None:
        """Keep the index current: closed and rejected cases leave it, transfers move it."""
        data = item.data
        if not isinstance(data, CaseTransitioned):
            return
        raw = Raw(session)
        case = index.load_case(raw, data.case_id)
        if case is None:
            log.warning("case event %s for case %s the router never named", item.event.type, data.case_id)
            return
        if not index.apply_case_state(case, data.status, data.station_id, data.version, self.centre_ids):
            return  # an older event than one already applied
        if data.status in index.FINAL_STATES and data.report_ids:
            late = sorted(set(index.report_ids(raw, case.case_id)) - set(data.report_ids))
            if late:
                case.late_reports += len(late)
                after_commit(session, lambda: metrics.route_late_merges.inc(len(late)))
                log.warning(
                    "case %s was %s before reports %s merged into it reached the closer",
                    case.case_id,
                    data.status,
                    ", ".join(late),
                )
        index.update_case(raw, case)


def explain_view(
    j: Jurisdiction,
    plan: Plan,
    standing: Assessment,
    place: CodePlace | None,
    duplicate: IndexCase | None,
) -> dict[str, Any]:
    """The explain answer: where, who, which rule, which duplicate, and why, in zh and en."""
    result, facts = plan.result, plan.facts
    category = j.categories.get(facts.category)
    grid = j.grids.get(result.grid_id) if result.grid_id else None
    street = j.streets.get(result.street_id) if result.street_id else None
    station = j.stations[result.station_id]
    rule = next((r for r in j.rules if r.id == result.rule_id), None)
    reasons = result.reasons + standing.reasons
    return {
        "decision": result.decision,
        "category": {"id": category.id, "name_zh": category.name_zh, "name_en": category.name_en}
        if category
        else None,
        "place": {
            "code": place.code,
            "place_id": place.place_id,
            "name": place.name,
            "source": place.source,
        }
        if place
        else None,
        "point": {"lat": facts.lat, "lon": facts.lon} if facts.lat is not None else None,
        "grid": {"id": grid.id, "name_zh": grid.name_zh, "name_en": grid.name_en} if grid else None,
        "street": {"id": street.id, "name_zh": street.name_zh, "name_en": street.name_en} if street else None,
        "station": {
            "id": station.id,
            "name_zh": station.name_zh,
            "name_en": station.name_en,
            "kind": station.kind,
        },
        "rule": {"id": rule.id, "reason_zh": rule.reason_zh, "reason_en": rule.reason_en} if rule else None,
        "duplicate": {
            "case_id": duplicate.case_id,
            "distance_m": round(result.distance_m or 0.0, 1),
            "station_id": duplicate.station_id,
            "status": duplicate.status,
            "last_report_at": duplicate.last_report_at.isoformat(),
            "distinct_riders": standing.distinct_riders,
            "common_issue": standing.common_issue,
        }
        if duplicate
        else None,
        "priority": standing.priority,
        "reason": reason_text(reasons, "zh"),
        "reason_en": reason_text(reasons, "en"),
        "reasons": [{"zh": r.zh, "en": r.en} for r in reasons],
        "data_version": j.version,
    }


def build(settings: Settings | None = None) -> FastAPI:
    """Create the router's app and its consumers."""
    settings = settings or get_settings()
    runtime = Runtime(SERVICE, Base.metadata, PLUMBING, settings)
    jurisdiction = load_jurisdiction(settings.jurisdiction_dir)
    logic = RouterLogic(jurisdiction)
    places = PlaceBook(jurisdiction, DEMO_PLACES)
    runtime.consumer(
        "router",
        [REPORTS_SUBMITTED],
        {"report.submitted": logic.on_submitted},
        replays={"report.submitted": logic.replay},
        plain_sql=True,
        on_begin=index.lock_batch,
    )
    runtime.consumer(
        "router-cases",
        [CASES_EVENTS],
        {name: logic.on_case_event for name in CASE_STATE_EVENTS},
        plain_sql=True,
    )
    runtime.document_publication(REPORTS_ROUTED, ReportRouted, "One decision per report, keyed by case id.")
    for decision in ("open", "merge", "triage"):
        metrics.route_decisions.labels(decision)  # every series exists from the start, at 0
    app = create_app(runtime, "GridLoop router", "Routes reports to grid stations; explains decisions.")
    app.state.jurisdiction = jurisdiction
    app.state.logic = logic

    @app.get("/api/v1/route/explain", tags=["routing"])
    def explain(
        category: str = Query(..., min_length=1, max_length=40, description="Category id."),
        lat: float | None = Query(None, ge=-90, le=90, description="Latitude (WGS84)."),
        lon: float | None = Query(None, ge=-180, le=180, description="Longitude (WGS84)."),
        code: str | None = Query(None, min_length=1, max_length=20, description="A report code."),
    ) -> dict[str, Any]:
        """Which grid, station, rule and duplicate candidate a report here would get, and why."""
        if (lat is None) != (lon is None):
            raise ApiError(422, "invalid", "Give both lat and lon, or neither.")
        if code is None and lat is None:
            raise ApiError(422, "invalid", "Give a report code (code=) or a point (lat= and lon=).")
        with runtime.db.session() as session:
            raw = Raw(session)
            place = places.resolve(raw, code) if code is not None else None
            facts = ReportFacts(
                category=category,
                grid_id=place.grid_id if place else None,
                lat=lat if lat is not None else (place.lat if place else None),
                lon=lon if lon is not None else (place.lon if place else None),
                place_id=place.place_id if place else None,
                place_name=place.name if place else None,
                danger_now=False,
                rider_ref=None,
                submitted_at=utcnow(),
            )
            plan = logic.plan(raw, facts)
            duplicate = plan.cases.get(plan.result.merge_case_id) if plan.result.merge_case_id else None
            standing, _ = logic.assessment(raw, plan, duplicate)
        return explain_view(jurisdiction, plan, standing, place, duplicate)

    return app

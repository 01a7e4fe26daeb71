"""The router service: consumes submitted reports, decides their case, publishes `reports.routed`."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from fastapi import FastAPI, Query
from sqlmodel import Session, col, select

from gridloop import metrics
from gridloop.clock import as_utc, utcnow
from gridloop.consumer import Incoming
from gridloop.errors import ApiError
from gridloop.outbox import add_event, add_raw
from gridloop.service import Runtime, create_app
from gridloop.settings import Settings, get_settings
from gridloop.topics import CASES_EVENTS, REPORTS_ROUTED, REPORTS_SUBMITTED
from schemas.events import CaseTransitioned, Location, ReportRouted, ReportSubmitted, make_event
from schemas.reference import Jurisdiction, load_jurisdiction
from services.router.models import PLUMBING, Base, CaseRider, OpenCase, RouteDecision
from services.router.routing import COMMON_ISSUE_RIDERS, COMMON_ISSUE_WINDOW, Candidate, ReportFacts, decide

SERVICE = "router"
CLOSED_STATES = {"closed", "rejected"}


def new_case_id() -> str:
    """A new case id (the router names cases so later reports can merge before the closer answers)."""
    return "c_" + uuid.uuid4().hex[:16]


class RouterLogic:
    """Applies routing decisions to the router's database (called inside consumer transactions)."""

    def __init__(self, jurisdiction: Jurisdiction) -> None:
        self.j = jurisdiction

    def _candidates(self, session: Session, data: ReportSubmitted) -> list[Candidate]:
        category = self.j.categories.get(data.category)
        window = timedelta(hours=category.dup_window_hours if category else 72)
        query = select(OpenCase).where(
            OpenCase.open == True,  # noqa: E712
            OpenCase.category == data.category,
            OpenCase.last_report_at >= data.submitted_at - window,
        )
        cases = list(session.exec(query))
        if data.plus_one_case_id:
            plus = session.get(OpenCase, data.plus_one_case_id)
            if plus is not None and plus.open and plus not in cases:
                cases.append(plus)
        return [
            Candidate(
                c.case_id,
                c.category,
                c.station_id,
                c.lat,
                c.lon,
                c.place_id,
                as_utc(c.last_report_at),
                frozenset(self._riders(session, c.case_id, data)),
            )
            for c in cases
        ]

    def _riders(self, session: Session, case_id: str, data: ReportSubmitted) -> set[str]:
        since = data.submitted_at - COMMON_ISSUE_WINDOW
        rows = session.exec(
            select(CaseRider.rider_ref).where(
                CaseRider.case_id == case_id,
                col(CaseRider.at) >= since,
                col(CaseRider.rider_ref).is_not(None),
            )
        )
        return {r for r in rows if r}

    def on_submitted(self, session: Session, item: Incoming) -> None:
        """Decide one report's case and queue `report.routed`."""
        started = time.perf_counter()
        data = item.data
        assert isinstance(data, ReportSubmitted)
        if session.get(RouteDecision, data.report_id) is not None:
            self.replay(session, item)  # the same report under another event id: same answer
            return
        loc = data.location
        facts = ReportFacts(
            category=data.category,
            grid_id=data.grid_id,
            lat=loc.lat if loc else None,
            lon=loc.lon if loc else None,
            place_id=data.place_id,
            danger_now=data.danger_now,
            rider_ref=data.rider_ref,
            submitted_at=data.submitted_at,
            plus_one_case_id=data.plus_one_case_id,
        )
        result = decide(self.j, facts, self._candidates(session, data))
        case_id = result.merge_case_id or new_case_id()
        if result.decision == "merge":
            case = session.get(OpenCase, case_id)
            assert case is not None
            case.last_report_at = max(as_utc(case.last_report_at), data.submitted_at)
        else:
            case = OpenCase(
                case_id=case_id,
                category=data.category,
                station_id=result.station_id,
                grid_id=result.grid_id,
                street_id=result.street_id,
                place_id=data.place_id,
                lat=facts.lat,
                lon=facts.lon,
                opened_at=data.submitted_at,
                last_report_at=data.submitted_at,
                open=result.decision == "open",
                triage=result.decision == "triage",
            )
        session.add(
            CaseRider(
                report_id=data.report_id, case_id=case_id, rider_ref=data.rider_ref, at=data.submitted_at
            )
        )
        session.add(case)
        session.flush()
        riders = self._riders(session, case_id, data)
        distinct = max(len(riders), 1)
        common = distinct >= COMMON_ISSUE_RIDERS
        case.common_issue = case.common_issue or common
        routed = ReportRouted(
            report_id=data.report_id,
            case_id=case_id,
            decision=result.decision,
            category=data.category,
            station_id=result.station_id,
            grid_id=result.grid_id,
            street_id=result.street_id,
            location=Location(lat=facts.lat, lon=facts.lon)
            if facts.lat is not None and facts.lon is not None
            else None,
            place_id=data.place_id,
            place_name=data.place_name,
            description=data.description,
            danger_now=data.danger_now,
            photo_ids=data.photo_ids,
            rider_ref=data.rider_ref,
            priority=result.priority,
            submitted_at=data.submitted_at,
            reason=result.reason,
            rule_id=result.rule_id,
            distinct_riders=distinct,
            common_issue=case.common_issue,
        )
        event = make_event("report.routed", routed, source=SERVICE, subject=case_id, time=utcnow())
        add_event(session, PLUMBING, REPORTS_ROUTED, case_id, event)
        session.add(
            RouteDecision(
                report_id=data.report_id,
                case_id=case_id,
                decision=result.decision,
                event_id=event.id,
                envelope=event.model_dump_json(),
                decided_at=utcnow(),
            )
        )
        metrics.route_decisions.labels(result.decision).inc()
        metrics.route_duration.observe(time.perf_counter() - started)

    def replay(self, session: Session, item: Incoming) -> None:
        """A report seen before: publish the stored decision again (downstream dedupes by id)."""
        data = item.data
        assert isinstance(data, ReportSubmitted)
        decision = session.get(RouteDecision, data.report_id)
        if decision is not None:
            add_raw(session, PLUMBING, REPORTS_ROUTED, decision.case_id, decision.event_id, decision.envelope)

    def on_case_event(self, session: Session, item: Incoming) -> None:
        """Keep the open-case index current: closed and rejected cases leave it, transfers move it."""
        data = item.data
        if not isinstance(data, CaseTransitioned):
            return
        case = session.get(OpenCase, data.case_id)
        if case is None:
            return
        case.status = data.status
        case.station_id = data.station_id
        case.open = data.status not in CLOSED_STATES and not case.triage
        session.add(case)


def build(settings: Settings | None = None) -> FastAPI:
    """Create the router's app and its consumers."""
    settings = settings or get_settings()
    runtime = Runtime(SERVICE, Base.metadata, PLUMBING, settings)
    jurisdiction = load_jurisdiction(settings.jurisdiction_dir)
    logic = RouterLogic(jurisdiction)
    runtime.consumer(
        "router",
        [REPORTS_SUBMITTED],
        {"report.submitted": logic.on_submitted},
        replays={"report.submitted": logic.replay},
    )
    case_handlers = {
        name: logic.on_case_event
        for name in ("case.closed", "case.rejected", "case.transferred", "case.reopened", "case.triaged")
    }
    runtime.consumer("router-cases", [CASES_EVENTS], case_handlers)
    runtime.document_publication(REPORTS_ROUTED, ReportRouted, "One decision per report, keyed by case id.")
    app = create_app(runtime, "GridLoop router", "Routes reports to grid stations; explains decisions.")
    app.state.jurisdiction = jurisdiction

    @app.get("/api/v1/route/explain", tags=["routing"])
    async def explain(
        lat: float | None = Query(None, ge=-90, le=90),
        lon: float | None = Query(None, ge=-180, le=180),
        category: str = Query(..., min_length=1, max_length=40),
    ) -> dict[str, object]:
        """Which grid, station, rule and duplicate candidate a report here would get, and why."""
        if (lat is None) != (lon is None):
            raise ApiError(422, "invalid", "Give both lat and lon, or neither.")
        now = utcnow()
        data = ReportSubmitted(
            report_id="explain",
            channel="manual",
            category=category,
            location=Location(lat=lat, lon=lon) if lat is not None and lon is not None else None,
            submitted_at=now,
        )
        with runtime.db.session() as session:
            candidates = logic._candidates(session, data)
        facts = ReportFacts(
            category=category,
            grid_id=None,
            lat=lat,
            lon=lon,
            place_id=None,
            danger_now=False,
            rider_ref=None,
            submitted_at=now,
        )
        result = decide(jurisdiction, facts, candidates)
        return {
            "decision": result.decision,
            "grid_id": result.grid_id,
            "street_id": result.street_id,
            "station_id": result.station_id,
            "station_name": jurisdiction.stations[result.station_id].name_zh,
            "rule_id": result.rule_id,
            "duplicate_case_id": result.merge_case_id,
            "duplicate_distance_m": result.distance_m,
            "priority": result.priority,
            "reasons": result.reasons,
        }

    return app

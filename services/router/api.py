"""The router's HTTP API: `GET /api/v1/route/explain`, what a report here would get and why."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gridloop.clock import utcnow
from gridloop.errors import ApiError
from gridloop.rawsql import Raw
from schemas.cases import Priority
from schemas.events import Decision
from schemas.reference import Jurisdiction
from services.router.context import Ctx
from services.router.decisions import WhatIf
from services.router.places import CodePlace
from services.router.routing import ReportFacts, reason_text

router = APIRouter()


class Named(BaseModel):
    """A reference entry (category, grid, street) by id, with its names."""

    id: str
    name_zh: str
    name_en: str


class ExplainedPlace(BaseModel):
    """The place of the code asked about, and where the router knows it from."""

    code: str
    place_id: str
    name: str | None
    source: Literal["reports", "reference"] = Field(
        description="reference: the reference places file; reports: the place last seen on a report."
    )


class Point(BaseModel):
    """A WGS84 point."""

    lat: float
    lon: float


class ExplainedStation(Named):
    """The station that would get the report (the centre for triage)."""

    kind: str


class ExplainedRule(BaseModel):
    """The routing rule that named the station."""

    id: str
    reason_zh: str
    reason_en: str


class Duplicate(BaseModel):
    """The open case the report would merge into, as it would stand with the report."""

    case_id: str
    distance_m: float = Field(description="Metres from the case's anchor (0 at the same place).")
    station_id: str
    status: str
    last_report_at: str = Field(description="When the case last had a report (ISO 8601, UTC).")
    distinct_riders: int
    common_issue: bool


class ReasonText(BaseModel):
    """One step of the decision, in Chinese and English."""

    zh: str
    en: str


class Explanation(BaseModel):
    """Where a report would go, who would get it, which rule and duplicate, and why, in zh and en."""

    decision: Decision
    category: Named | None = Field(description="None for a category the router does not know (triage).")
    place: ExplainedPlace | None
    point: Point | None
    grid: Named | None
    street: Named | None
    station: ExplainedStation
    rule: ExplainedRule | None
    duplicate: Duplicate | None
    priority: Priority
    reason: str = Field(description="The reasons in Chinese.")
    reason_en: str = Field(description="The reasons in English.")
    reasons: list[ReasonText]
    data_version: str = Field(description="The version of the reference data the decision used.")


def explanation(j: Jurisdiction, found: WhatIf, place: CodePlace | None) -> Explanation:
    """The explain answer from what the report would get."""
    plan, standing, duplicate = found.plan, found.assessment, found.duplicate
    result, facts = plan.result, plan.facts
    category = j.categories.get(facts.category)
    grid = j.grids.get(result.grid_id) if result.grid_id else None
    street = j.streets.get(result.street_id) if result.street_id else None
    station = j.stations[result.station_id]
    rule = next((r for r in j.rules if r.id == result.rule_id), None)
    reasons = result.reasons + standing.reasons
    return Explanation(
        decision=result.decision,
        category=Named(id=category.id, name_zh=category.name_zh, name_en=category.name_en)
        if category
        else None,
        place=ExplainedPlace(code=place.code, place_id=place.place_id, name=place.name, source=place.source)
        if place
        else None,
        point=Point(lat=facts.lat, lon=facts.lon)
        if facts.lat is not None and facts.lon is not None
        else None,
        grid=Named(id=grid.id, name_zh=grid.name_zh, name_en=grid.name_en) if grid else None,
        street=Named(id=street.id, name_zh=street.name_zh, name_en=street.name_en) if street else None,
        station=ExplainedStation(
            id=station.id, name_zh=station.name_zh, name_en=station.name_en, kind=station.kind
        ),
        rule=ExplainedRule(id=rule.id, reason_zh=rule.reason_zh, reason_en=rule.reason_en) if rule else None,
        duplicate=Duplicate(
            case_id=duplicate.case_id,
            distance_m=round(result.distance_m or 0.0, 1),
            station_id=duplicate.station_id,
            status=duplicate.status,
            last_report_at=duplicate.last_report_at.isoformat(),
            distinct_riders=standing.distinct_riders,
            common_issue=standing.common_issue,
        )
        if duplicate
        else None,
        priority=standing.priority,
        reason=reason_text(reasons, "zh"),
        reason_en=reason_text(reasons, "en"),
        reasons=[ReasonText(zh=r.zh, en=r.en) for r in reasons],
        data_version=j.version,
    )


@router.get("/api/v1/route/explain", tags=["routing"], response_model=Explanation)
def explain(
    ctx: Ctx,
    category: Annotated[str, Query(min_length=1, max_length=40, description="Category id.")],
    lat: Annotated[float | None, Query(ge=-90, le=90, description="Latitude (WGS84).")] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180, description="Longitude (WGS84).")] = None,
    code: Annotated[str | None, Query(min_length=1, max_length=20, description="A report code.")] = None,
) -> Explanation:
    """Which grid, station, rule and duplicate candidate a report here would get, and why."""
    if (lat is None) != (lon is None):
        raise ApiError(422, "invalid", "Give both lat and lon, or neither.")
    if code is None and lat is None:
        raise ApiError(422, "invalid", "Give a report code (code=) or a point (lat= and lon=).")
    with ctx.runtime.db.session() as session:
        raw = Raw(session)
        place = ctx.places.resolve(raw, code) if code is not None else None
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
        found = ctx.decisions.what_if(raw, facts)
    return explanation(ctx.jurisdiction, found, place)

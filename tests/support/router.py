"""One router replica on a database fed through the real consumer, and `report.submitted` events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from gridloop.consumer import IdempotentConsumer, _Raw
from gridloop.db import Database
from gridloop.demo import DEMO_PLACES
from gridloop.settings import REPO_ROOT
from schemas.envelope import CloudEvent
from schemas.events import Location, ReportSubmitted, make_event
from schemas.reference import Jurisdiction, Place, load_jurisdiction, load_places
from services.router.decisions import Decisions
from services.router.handlers import CASE_STATE_EVENTS, Handlers
from services.router.models import PLUMBING, Base

J: Jurisdiction = load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")
PLACES: list[Place] = load_places(DEMO_PLACES, J)
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
MANHOLE = next(p for p in PLACES if p.grid_id == "yh-g1")


@dataclass
class Router:
    """One router replica: its own engine and logic on a shared database, fed through the real consumer."""

    url: str
    db: Database = field(init=False)
    logic: Handlers = field(init=False)
    reports: IdempotentConsumer = field(init=False)
    cases: IdempotentConsumer = field(init=False)
    offset: int = 0

    def __post_init__(self) -> None:
        self.db = Database(self.url, Base.metadata)
        self.logic = Handlers(Decisions(J))
        self.reports = IdempotentConsumer(
            group="router",
            topics=["reports.submitted"],
            db=self.db,
            tables=PLUMBING,
            handlers={"report.submitted": self.logic.on_submitted},
            replays={"report.submitted": self.logic.replay},
            service="router",
            plain_sql=True,  # as the router runs them
            on_begin=self.logic.decisions.lock_batch,
        )
        self.cases = IdempotentConsumer(
            group="router-cases",
            topics=["cases.events"],
            db=self.db,
            tables=PLUMBING,
            handlers={name: self.logic.on_case_event for name in CASE_STATE_EVENTS},
            service="router",
            plain_sql=True,  # as the router runs them
        )

    def feed(self, events: list[CloudEvent], topic: str = "reports.submitted") -> None:
        """Apply events as one consumer batch (one transaction)."""
        raws = []
        for event in events:
            self.offset += 1
            raws.append(_Raw(topic, 0, self.offset, event.subject, event.model_dump_json().encode()))
        (self.reports if topic == "reports.submitted" else self.cases).apply_batch(raws)

    def close(self) -> None:
        """Release the engine."""
        self.db.dispose()


def submitted(
    report_id: str,
    rider: str | None,
    *,
    place: Place | None = None,
    at: datetime = T0,
    category: str = "manhole_cover",
    lat: float | None = None,
    lon: float | None = None,
    **extra: object,
) -> CloudEvent:
    """A `report.submitted` event shaped as the reporter builds it (code → place, grid, point)."""
    if place is not None:
        lat = place.lat if lat is None else lat
        lon = place.lon if lon is None else lon
    data = ReportSubmitted(
        report_id=report_id,
        channel="scan" if place else "manual",
        category=category,
        code=place.code if place else None,
        place_id=place.place_id if place else None,
        place_name=place.name_zh if place else None,
        grid_id=place.grid_id if place else None,
        location=Location(lat=lat, lon=lon) if lat is not None and lon is not None else None,
        rider_ref=rider,
        submitted_at=at,
        **extra,
    )
    return make_event("report.submitted", data, source="reporter", subject=report_id, time=at)

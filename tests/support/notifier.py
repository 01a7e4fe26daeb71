"""Case events as the closer publishes them, and the notifier fed through its real consumer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gridloop.consumer import IdempotentConsumer, _Raw
from gridloop.db import Database
from gridloop.settings import REPO_ROOT
from schemas.cases import CaseStatus
from schemas.envelope import CloudEvent
from schemas.events import CaseOpened, CaseReportMerged, CaseTransitioned, make_event
from schemas.reference import Jurisdiction, load_jurisdiction
from services.notifier.config import NotifierConfig
from services.notifier.handlers import CASE_EVENTS, TOPIC_EVENTS, Handlers
from services.notifier.models import PLUMBING
from services.notifier.rules import load_rules

J: Jurisdiction = load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")
RULES = load_rules(REPO_ROOT / "data" / "notify" / "rules.json", J)
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Tuesday
CONSOLE = "https://closer.example.cn"


def opened(case_id: str, priority: str = "urgent", at: datetime = T0, **extra: Any) -> CloudEvent:
    """`case.opened` of a manhole case at 开鲁新村 for 开鲁网格站 (yh-s1)."""
    values: dict[str, Any] = {
        "case_id": case_id,
        "report_id": f"R-{case_id}",
        "station_id": "yh-s1",
        "category": "manhole_cover",
        "priority": priority,
        "opened_at": at,
        "ack_due": at + timedelta(hours=1),
        "resolve_due": at + timedelta(hours=4),
        "street_id": "yinhang",
        "grid_id": "yh-g1",
        "place_name": "开鲁新村 3 号门",
        **extra,
    }
    return make_event("case.opened", CaseOpened(**values), source="closer", subject=case_id, time=at)


def merged(case_id: str, riders: int, common: bool, at: datetime = T0) -> CloudEvent:
    """`case.report_merged`: one more rider's report joined the case."""
    data = CaseReportMerged(
        case_id=case_id,
        report_id=f"R-{case_id}-{riders}",
        station_id="yh-s1",
        status=CaseStatus.NEW,
        distinct_riders=riders,
        common_issue=common,
        version=riders,
    )
    return make_event("case.report_merged", data, source="closer", subject=case_id, time=at)


def transitioned(
    name: str, case_id: str, status: CaseStatus, at: datetime = T0, station_id: str = "yh-s1", **extra: Any
) -> CloudEvent:
    """A transition event (`case.escalated`, `case.returned`, `case.on_duty`, …), the case at `station_id`
    after it."""
    data = CaseTransitioned(
        case_id=case_id, action=name, status=status, station_id=station_id, version=2, at=at, **extra
    )
    return make_event(f"case.{name}", data, source="closer", subject=case_id, time=at)


@dataclass
class Fed:
    """The notifier's consumer on a database, fed records by hand (offsets count up)."""

    db: Database
    config: NotifierConfig
    consumer: IdempotentConsumer = field(init=False)
    offset: int = 0

    def __post_init__(self) -> None:
        handlers = Handlers(RULES, J, self.config, CONSOLE)
        self.consumer = IdempotentConsumer(
            group="notifier",
            topics=["cases.events", "topics.events"],
            db=self.db,
            tables=PLUMBING,
            handlers={
                **{name: handlers.on_case_event for name in CASE_EVENTS},
                **{name: handlers.on_topic_event for name in TOPIC_EVENTS},
            },
            service="notifier",
            skip_unknown=True,
        )

    def feed(self, *events: CloudEvent, offset: int | None = None) -> None:
        """Apply events as one batch (`offset`: the first record's, to play a redelivery)."""
        raws = []
        for event in events:
            if offset is None:
                self.offset += 1
                at = self.offset
            else:
                at, offset = offset, offset + 1
            topic = "topics.events" if event.name.startswith("topic.") else "cases.events"
            raws.append(_Raw(topic, 0, at, event.subject, event.model_dump_json().encode()))
        self.consumer.apply_batch(raws)

    def feed_raw(self, value: bytes) -> None:
        """Apply one record as it is (an event type this code does not know)."""
        self.offset += 1
        self.consumer.apply_batch([_Raw("cases.events", 0, self.offset, "k", value)])

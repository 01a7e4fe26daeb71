"""The notifier's Kafka entry points: `cases.events` become deliveries; `staff.events` keep token state.

Each runs inside the consumer's batch transaction (group ``notifier``). A case event first updates
what the notifier knows of the case (``case_info``: category, place, station, deadlines, common
issue), then is matched against the rules; each channel it resolves to gets one delivery row, with
its message rendered now and the case's station and street (who may list the row,
gridloop/scope.py). Event types this code does not parse are skipped by the consumer (`skip_unknown`);
a parsed type without a case id is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlmodel import Session

from gridloop import metrics, revocations
from gridloop.clock import as_utc, utcnow
from gridloop.consumer import Incoming
from gridloop.rawsql import Raw, after_commit
from schemas.events import (
    REGISTRY,
    CaseOpened,
    CaseReportMerged,
    CaseTransitioned,
    StaffTokensRevoked,
    TopicCasesLinked,
    TopicClosed,
    TopicMeetingRecorded,
    TopicOpened,
)
from schemas.reference import Jurisdiction
from services.notifier import channels, deliveries
from services.notifier.config import NotifierConfig
from services.notifier.messages import Message, case_link, render, render_topic, topic_link
from services.notifier.models import CaseInfo, Delivery
from services.notifier.rules import Rule, Signal, routes

log = logging.getLogger(__name__)

CASE_EVENTS = tuple(name for name in REGISTRY if name.startswith("case."))
"""The `cases.events` types the notifier parses (newer ones are skipped until this code knows them)."""
TOPIC_EVENTS = tuple(name for name in REGISTRY if name.startswith("topic."))
"""The `topics.events` types (议题): routed by the same rules, as the topic's street's centre."""


def _remember(info: CaseInfo | None, item: Incoming) -> tuple[CaseInfo | None, bool]:
    """The case as known after this event, and whether the event made it a common issue."""
    d = item.data
    if isinstance(d, CaseOpened):
        info = info or CaseInfo(case_id=d.case_id, station_id=d.station_id)
        info.category, info.station_id, info.priority = d.category, d.station_id, d.priority
        info.street_id, info.place_name, info.clock = d.street_id, d.place_name, d.clock
        info.status, info.ack_due, info.resolve_due = d.status.value, d.ack_due, d.resolve_due
        info.version = d.version
        return info, False
    case_id = getattr(d, "case_id", None)
    if not isinstance(case_id, str):
        return None, False
    station_id = getattr(d, "station_id", None)
    info = info or CaseInfo(case_id=case_id, station_id=station_id or "")
    if isinstance(station_id, str) and station_id:
        info.station_id = station_id
    became = False
    if isinstance(d, CaseReportMerged):
        became = d.common_issue and not info.common_issue
        info.common_issue = info.common_issue or d.common_issue
        info.status, info.clock, info.version = d.status.value, d.clock, d.version
    elif isinstance(d, CaseTransitioned):
        info.status, info.clock, info.version = d.status.value, d.clock, d.version
        info.ack_due = d.ack_due or info.ack_due
        info.resolve_due = d.resolve_due or info.resolve_due
    return info, became


def signal_of(info: CaseInfo, item: Incoming, became_common: bool) -> Signal:
    """What the rules see of this event (from the event and what is known of its case)."""
    d = item.data
    return Signal(
        event=item.event.name,
        event_id=item.event.id,
        case_id=info.case_id,
        time=as_utc(item.event.time),
        station_id=info.station_id,
        category=info.category,
        street_id=info.street_id,
        place_name=info.place_name,
        priority=info.priority,  # type: ignore[arg-type]
        clock=info.clock,  # type: ignore[arg-type]
        status=info.status,
        became_common_issue=became_common,
        distinct_riders=int(getattr(d, "distinct_riders", 0) or 0),
        deadline=getattr(d, "deadline", None),
        ack_due=as_utc(info.ack_due) if info.ack_due else None,
        resolve_due=as_utc(info.resolve_due) if info.resolve_due else None,
        duty_station_id=getattr(d, "duty_station_id", None),
    )


class Handlers:
    """Case events to deliveries, by the rules; staff token state."""

    def __init__(
        self,
        rules: list[Rule],
        jurisdiction: Jurisdiction,
        config: NotifierConfig,
        console_base: str,
        on_new: Callable[[], None] | None = None,
    ) -> None:
        self.rules = rules
        self.jurisdiction = jurisdiction
        self.config = config
        self.console_base = console_base
        self.on_new = on_new  # wakes the sender once the batch committed

    def on_case_event(self, session: Session, item: Incoming) -> None:
        """A case event: remember the case, match the rules, record one delivery per channel."""
        case_id = getattr(item.data, "case_id", None)
        known = session.get(CaseInfo, case_id) if isinstance(case_id, str) else None
        info, became_common = _remember(known, item)
        if info is None:
            return
        station = self.jurisdiction.stations.get(info.station_id)
        if station is not None:
            # the street follows the station: a transfer to another street's station moves the case
            # there, and its centre (and who lists its deliveries) with it
            info.street_id = station.street_id
        session.add(info)
        signal = signal_of(info, item, became_common)
        self._deliver(
            session,
            signal,
            lambda: render(signal, self.jurisdiction, self.console_base, self.config.english),
            case_link(self.console_base, signal.case_id),
        )

    def on_topic_event(self, session: Session, item: Incoming) -> None:
        """A `topics.events` event: matched like a case event, as its street's centre (the topic id
        stands in for the case id; the message and link are the topic's)."""
        d = item.data
        if not isinstance(d, TopicOpened | TopicCasesLinked | TopicMeetingRecorded | TopicClosed):
            return
        signal = Signal(
            event=item.event.name,
            event_id=item.event.id,
            case_id=d.topic_id,
            time=as_utc(item.event.time),
            station_id=getattr(d, "centre_station_id", ""),
            category=getattr(d, "category", None) or "",
            street_id=getattr(d, "street_id", None),
            status="closed" if isinstance(d, TopicClosed) else "open",
        )
        self._deliver(
            session,
            signal,
            lambda: render_topic(signal, d, self.console_base, self.config.english),
            topic_link(self.console_base, d.topic_id),
        )

    def _deliver(
        self, session: Session, signal: Signal, message_of: Callable[[], Message], link: str
    ) -> None:
        """One delivery row per channel the rules route this signal to (its message rendered now)."""
        now = utcnow()
        station_id, street_id = self._scope_of(signal)
        unrouted: list[str] = []
        added = 0
        for rule_id, channel in routes(self.rules, signal):
            target = channels.resolve(channel, signal, self.jurisdiction, self.config.fallback_url)
            if target is None:
                unrouted.append(channel)
                continue
            message = message_of()
            delivery = Delivery(
                event_id=signal.event_id,
                event_type=signal.event,
                case_id=signal.case_id,
                rule_id=rule_id,
                channel=target.url,
                channel_kind=channels.kind_of(target.url),
                target=target.label,
                title=message.title,
                body=message.body,
                link=link,
                event_time=signal.time,
                station_id=station_id,
                street_id=street_id,
                created_at=now,
                next_attempt_at=now + timedelta(seconds=self.config.hold_seconds),
            )
            if deliveries.add(session, delivery):
                added += 1
                session.flush()  # two roles resolving to one URL in this event: the second sees the first

        def count() -> None:
            for channel in unrouted:
                log.warning("%s %s: channel %s has no URL; not sent", signal.event, signal.case_id, channel)
                metrics.notifications.labels(channel, "unrouted").inc()
            if added and self.on_new:
                self.on_new()

        after_commit(session, count)

    def _scope_of(self, signal: Signal) -> tuple[str | None, str | None]:
        """The station and street a delivery of this signal belongs to (who may list it): the case's,
        or the topic's centre's; the street is the station's (the event's only for a station unknown)."""
        station = self.jurisdiction.stations.get(signal.station_id)
        if station is not None:
            return station.id, station.street_id
        street = signal.street_id if signal.street_id in self.jurisdiction.streets else None
        return signal.station_id or None, street

    def on_tokens_revoked(self, session: Session, item: Incoming) -> None:
        """`staff.tokens_revoked`: keep the account's newest token state."""
        d = item.data
        assert isinstance(d, StaffTokensRevoked)
        revocations.tokens_revoked(Raw(session), d)

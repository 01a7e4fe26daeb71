"""The delivery table's reads and writes: record, take what is due, settle attempts, list failures.

A delivery is written in the consumer's batch transaction with the event's ledger row, so an event is
turned into deliveries once; the unique (event_id, channel) makes a second row for the same pair
impossible even so. Sending happens outside any transaction (sender.py); its outcome is settled here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from gridloop.clock import as_utc
from gridloop.scope import Scope
from services.notifier.backoff import after_failure
from services.notifier.models import FAILED, PENDING, SENT, Delivery


@dataclass(frozen=True)
class Due:
    """A snapshot of one due delivery, read in one transaction and sent after it."""

    id: int
    channel: str
    channel_kind: str
    title: str
    body: str
    link: str
    attempts: int
    event_time: datetime
    created_at: datetime


@dataclass(frozen=True)
class Settled:
    """What an attempt did to one delivery (for the metrics, counted after the commit)."""

    id: int
    channel_kind: str
    outcome: str  # sent, retry, failed
    latency: float | None = None


def exists(session: Session, event_id: str, channel: str) -> bool:
    """Whether the event already has a delivery to this channel."""
    q = select(Delivery.id).where(Delivery.event_id == event_id, Delivery.channel == channel)
    return session.exec(q).first() is not None


def add(session: Session, delivery: Delivery) -> bool:
    """Add a delivery unless its (event, channel) has one; True when added."""
    if exists(session, delivery.event_id, delivery.channel):
        return False
    session.add(delivery)
    return True


def due(session: Session, now: datetime, limit: int = 500) -> list[Due]:
    """Pending deliveries whose next attempt time has come, oldest first."""
    q = (
        select(Delivery)
        .where(Delivery.status == PENDING, col(Delivery.next_attempt_at) <= now)
        .order_by(col(Delivery.id))
        .limit(limit)
    )
    return [
        Due(
            d.id or 0,
            d.channel,
            d.channel_kind,
            d.title,
            d.body,
            d.link,
            d.attempts,
            as_utc(d.event_time),
            as_utc(d.created_at),
        )
        for d in session.exec(q)
    ]


@dataclass(frozen=True)
class Backoff:
    """The retry policy: attempts before giving up, first wait, longest wait."""

    max_attempts: int
    base: float
    cap: float


def settle(
    session: Session,
    ids: Sequence[int],
    ok: bool,
    error: str,
    now: datetime,
    policy: Backoff,
    digest_size: int | None = None,
) -> list[Settled]:
    """Record one attempt's outcome on each of these deliveries (one send: one row, or a digest's rows)."""
    out: list[Settled] = []
    for delivery in session.exec(select(Delivery).where(col(Delivery.id).in_(list(ids)))):
        if delivery.status != PENDING:
            continue  # settled meanwhile (an admin's retry of another row): leave it
        delivery.attempts += 1
        if ok:
            delivery.status = SENT
            delivery.sent_at = now
            delivery.last_error = None
            delivery.digest_size = digest_size
            latency = max((now - as_utc(delivery.event_time)).total_seconds(), 0.0)
            out.append(Settled(delivery.id or 0, delivery.channel_kind, "sent", latency))
        else:
            delivery.last_error = error
            retry_at = after_failure(delivery.attempts, policy.max_attempts, now, policy.base, policy.cap)
            if retry_at is None:
                delivery.status = FAILED
                out.append(Settled(delivery.id or 0, delivery.channel_kind, "failed"))
            else:
                delivery.next_attempt_at = retry_at
                out.append(Settled(delivery.id or 0, delivery.channel_kind, "retry"))
        session.add(delivery)
    return out


def listed(session: Session, status: str | None, limit: int = 100, stations: Scope = None) -> list[Delivery]:
    """Deliveries in one state (or all) of these stations (None: every row, station or not), newest
    first; the limit applies after the filter."""
    q = select(Delivery)
    if status:
        q = q.where(Delivery.status == status)
    if stations is not None:
        q = q.where(col(Delivery.station_id).in_(sorted(stations)))
    return list(session.exec(q.order_by(col(Delivery.id).desc()).limit(limit)))


def retry(session: Session, delivery_id: int, now: datetime) -> Delivery | None:
    """Put a failed delivery back to pending, due now, with its attempts counted afresh."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.status != FAILED:
        return delivery
    delivery.status = PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    session.add(delivery)
    return delivery


__all__ = [
    "FAILED",
    "PENDING",
    "SENT",
    "Backoff",
    "Due",
    "Settled",
    "add",
    "due",
    "listed",
    "retry",
    "settle",
]

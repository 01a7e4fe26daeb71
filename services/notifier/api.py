"""The notifier's HTTP API: a test send, the deliveries (the failed list for admins), and a retry."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from gridloop.clock import as_utc, utcnow
from gridloop.errors import ApiError
from gridloop.plumbing import RowId
from gridloop.scope import Scope, visible_stations
from gridloop.tokens import Principal
from schemas.reference import Jurisdiction
from services.notifier import channels, deliveries
from services.notifier.context import Admin, Ctx, Overseer
from services.notifier.models import Delivery

router = APIRouter(tags=["notifications"])

TEST_TITLE = "GridLoop 测试通知"
TEST_BODY = (
    "这是一条测试通知：此渠道可以收到网格站的案件提醒。\n"
    "A test notification: this channel receives GridLoop alerts."
)


class TestSend(BaseModel):
    """A channel to try, and optionally the words to send."""

    url: str = Field(min_length=4, max_length=500, description="An Apprise URL (wecombot://, json://, …).")
    title: str = Field(TEST_TITLE, max_length=200)
    body: str = Field(TEST_BODY, max_length=2000)


class TestSent(BaseModel):
    """What Apprise said."""

    sent: bool
    channel: str = Field(description="The URL with its secrets hidden.")
    error: str | None = None


class DeliveryOut(BaseModel):
    """One delivery as admins see it (the channel's secrets hidden)."""

    id: int
    event_id: str
    event_type: str
    case_id: str
    rule_id: str
    target: str
    channel_kind: str
    channel: str
    title: str
    status: str
    attempts: int
    last_error: str | None
    event_time: datetime
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None
    digest_size: int | None
    station_id: str | None = Field(description="The case's station (a topic's: its centre); null if unknown.")
    street_id: str | None

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        """The API form of a row (times in UTC with their offset: SQLite gives them back naive)."""
        return cls(
            id=d.id or 0,
            event_id=d.event_id,
            event_type=d.event_type,
            case_id=d.case_id,
            rule_id=d.rule_id,
            target=d.target,
            channel_kind=d.channel_kind,
            channel=channels.masked(d.channel),
            title=d.title,
            status=d.status,
            attempts=d.attempts,
            last_error=d.last_error,
            event_time=as_utc(d.event_time),
            created_at=as_utc(d.created_at),
            next_attempt_at=as_utc(d.next_attempt_at),
            sent_at=as_utc(d.sent_at) if d.sent_at else None,
            digest_size=d.digest_size,
            station_id=d.station_id,
            street_id=d.street_id,
        )


class DeliveryList(BaseModel):
    """Deliveries, newest first."""

    items: list[DeliveryOut]


def delivery_scope(who: Principal, j: Jurisdiction) -> Scope:
    """The stations whose deliveries `who` sees (gridloop/scope.py); None: every row, those of no
    station too (a fallback or literal URL's delivery of an event that named none). Only an account
    that sees every station gets those: a city account, or an admin of every street, who would see
    whatever street such a row was about anyway."""
    visible = visible_stations(who, j)
    return None if visible is not None and visible >= j.stations.keys() else visible


@router.post("/api/v1/notify/test", response_model=TestSent)
async def test_send(body: TestSend, ctx: Ctx, _who: Admin) -> TestSent:
    """Send a test message to an Apprise URL now (admins); the answer says whether it went."""
    if not channels.is_sendable(body.url):
        raise ApiError(
            422, "bad_channel", "Not a URL Apprise can send to.", {"channel": channels.masked(body.url)}
        )
    # the sender's own send (Apprise; tests put an offline one in its place)
    ok, error = await asyncio.to_thread(ctx.sender.send, body.url, body.title, body.body)
    return TestSent(sent=ok, channel=channels.masked(body.url), error=error or None)


@router.get("/api/v1/deliveries", response_model=DeliveryList)
async def list_deliveries(
    ctx: Ctx,
    who: Overseer,
    status: Annotated[Literal["pending", "sent", "failed"] | None, Query()] = "failed",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    """Deliveries in one state, newest first (default: the failed ones), of the caller's streets: a
    supervisor's or admin's stations, every row for a city account (gridloop/scope.py)."""
    stations = delivery_scope(who, ctx.jurisdiction)

    def read() -> list[DeliveryOut]:
        with ctx.runtime.db.session() as session:
            return [DeliveryOut.of(d) for d in deliveries.listed(session, status, limit, stations)]

    return DeliveryList(items=await asyncio.to_thread(read))


@router.post("/api/v1/deliveries/{delivery_id}/retry", response_model=DeliveryOut)
async def retry_delivery(
    delivery_id: Annotated[RowId, Path(description="A delivery's id.")], ctx: Ctx, who: Admin
) -> DeliveryOut:
    """Put a failed delivery back to pending, due now (admins): after fixing a channel's URL or key;
    another street's delivery is 404, as if it did not exist."""

    def work() -> tuple[DeliveryOut | None, bool]:
        with ctx.runtime.db.session(write=True) as session:
            before = session.get(Delivery, delivery_id)
            scope = delivery_scope(who, ctx.jurisdiction)
            if before is None or not (scope is None or before.station_id in scope):
                return None, False
            # read before the change: a row already pending (retried twice) is not failed either
            was_failed = before is not None and before.status == deliveries.FAILED
            found = deliveries.retry(session, delivery_id, utcnow())
            return (DeliveryOut.of(found) if found is not None else None), was_failed

    out, was_failed = await asyncio.to_thread(work)
    if out is None:
        raise ApiError(404, "not_found", "No such delivery.")
    if not was_failed:
        raise ApiError(409, "not_failed", f"The delivery is {out.status}, not failed.")
    ctx.sender.wake()
    return out

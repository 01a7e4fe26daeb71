"""Riders' Web Push: the VAPID public key, and following (or no longer following) one report.

Following a report needs its credential, as its feedback does (the rider cookie that sent it, or
the tracking secret: X-Tracking-Key or ?k=); the credential is checked before the body is read.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from gridloop.errors import ApiError
from services.reporter import push
from services.reporter.api.reports import json_body_doc, owned_report, read_model
from services.reporter.context import Ctx

router = APIRouter(tags=["push"])


class PushKey(BaseModel):
    """What a browser subscribes with."""

    public_key: str
    """The VAPID public key (uncompressed P-256 point, base64url): PushManager's applicationServerKey."""


class Subscribed(BaseModel):
    """A browser follows a report."""

    report_id: str
    subscribed: bool


class Unsubscribed(BaseModel):
    """A browser stopped following a report."""

    report_id: str
    removed: int


@router.get("/api/v1/push/key", response_model=PushKey)
async def push_key(ctx: Ctx) -> dict[str, Any]:
    """The VAPID public key browsers subscribe with."""
    assert ctx.vapid is not None
    return {"public_key": ctx.vapid.public_key}


@router.post(
    "/api/v1/reports/{report_id}/push",
    response_model=Subscribed,
    openapi_extra=json_body_doc(push.SubscriptionIn),
    responses={201: {"model": Subscribed, "description": "The browser now follows the report."}},
)
async def subscribe(ctx: Ctx, report_id: str, request: Request, response: Response) -> dict[str, Any]:
    """Follow this report with a browser's push subscription (`PushSubscription.toJSON()` and `lang`):
    pushes come when the case is signed for, resolved and closed. 201 new, 200 the same browser again.
    Needs the report's credential (403 `not_your_report`); the endpoint must be https on a push
    service of GRIDLOOP_PUSH_HOSTS (422 `push_host_refused`); at most 5 browsers per report (409)."""
    await owned_report(ctx, request, report_id)
    body = await read_model(request, push.SubscriptionIn, push.PUSH_BODY_BYTES)
    assert body is not None
    if not push.host_allowed(body.endpoint, ctx.config.push_host_list()):
        raise ApiError(
            422,
            "push_host_refused",
            "The endpoint is not on a known push service.",
            {"field": "endpoint"},
        )
    _row, created = await ctx.write(lambda s: push.subscribe(s, report_id, body))
    response.status_code = 201 if created else 200
    return {"report_id": report_id, "subscribed": True}


@router.delete(
    "/api/v1/reports/{report_id}/push",
    response_model=Unsubscribed,
    openapi_extra=json_body_doc(push.UnsubscribeIn),
)
async def unsubscribe(ctx: Ctx, report_id: str, request: Request) -> dict[str, Any]:
    """Stop following this report with a browser (`{"endpoint": …}`); its queued pushes are dropped.
    Needs the report's credential, as following does."""
    await owned_report(ctx, request, report_id)
    body = await read_model(request, push.UnsubscribeIn, push.PUSH_BODY_BYTES)
    assert body is not None
    removed = await ctx.write(lambda s: push.unsubscribe(s, report_id, body.endpoint))
    return {"report_id": report_id, "removed": removed}

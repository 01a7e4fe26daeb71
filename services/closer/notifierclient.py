"""The closer's calls to the notifier's API (the console's 通知 page): the failed list and a retry,
made with the signed-in staff member's own token, so the notifier decides who may see and retry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

# a console page waits for this at most: an unreachable notifier is a message in the page, not a hang
TIMEOUT = httpx.Timeout(3.0, connect=1.0)


class FailedDelivery(BaseModel):
    """One delivery as the console shows it (the notifier has already hidden the channel's secrets)."""

    id: int
    event_type: str
    case_id: str
    channel_kind: str
    channel: str
    attempts: int
    last_error: str | None
    event_time: datetime


class NotifierDown(Exception):
    """The notifier did not answer (refused, timed out, or answered with nonsense)."""


class NotifierRefused(Exception):
    """The notifier answered with an error: its status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _refused(response: httpx.Response) -> NotifierRefused:
    """The error envelope of an answer (`{"error": {"code", "message"}}`), or the bare status."""
    try:
        error = response.json().get("error") or {}
        return NotifierRefused(response.status_code, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return NotifierRefused(response.status_code, "error", f"HTTP {response.status_code}")


async def _call(base_url: str, token: str, method: str, path: str) -> Any:
    """One call with the staff member's bearer token; the JSON answer, else NotifierDown/Refused."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client:
            response = await client.request(method, path, headers=headers)
    except httpx.HTTPError as exc:
        raise NotifierDown(type(exc).__name__) from exc
    if response.status_code >= 500:
        raise NotifierDown(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        raise _refused(response)
    try:
        return response.json()
    except ValueError as exc:
        raise NotifierDown("not JSON") from exc


async def failed(base_url: str, token: str, limit: int = 100) -> list[FailedDelivery]:
    """The notifier's failed deliveries, newest first."""
    body = await _call(base_url, token, "GET", f"/api/v1/deliveries?status=failed&limit={limit}")
    try:
        return [FailedDelivery.model_validate(item) for item in body["items"]]
    except (KeyError, TypeError, ValidationError) as exc:
        raise NotifierDown("unexpected answer") from exc


async def retry(base_url: str, token: str, delivery_id: int) -> None:
    """Ask the notifier to send a failed delivery again (it answers 404 or 409 when it cannot)."""
    await _call(base_url, token, "POST", f"/api/v1/deliveries/{delivery_id}/retry")

"""The rider's side of the conversation over HTTP: reply (words or a photo) and 催办 (nudge).

Both need the report's credential, as feedback does (the rider cookie that sent it, or the tracking
secret in X-Tracking-Key or ?k=): without it 403 `not_your_report`, before the body is read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from gridloop.clock import utcnow
from gridloop.errors import ApiError, size_text
from gridloop.photos import MAX_PHOTO_BYTES, CleanPhoto, clean_photo, photo_form_bytes
from services.reporter.api.reports import capped_body, owned_report, parse_json
from services.reporter.context import Ctx
from services.reporter.conversation import ReplyIn, nudge, nudge_json, reply

router = APIRouter(tags=["conversation"])

_REPLY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON (ReplyIn), or multipart/form-data with the same fields and one file `photo`.",
        "content": {
            "application/json": {"schema": ReplyIn.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object"}},
        },
    }
}


class ReplyOut(BaseModel):
    """A stored reply."""

    reply_id: str
    report_id: str
    case_id: str
    question_id: int | None
    text: str
    photo_ids: list[str]
    at: str


class NudgeOut(BaseModel):
    """A nudge taken: when, and when the next one is allowed."""

    report_id: str
    case_id: str | None
    nudged_at: str | None
    next_nudge_at: str | None = Field(description="Another nudge is refused (429) before this time.")


def _valid(fields: Any) -> ReplyIn:
    if not isinstance(fields, dict):
        raise ApiError(422, "invalid", "The body must be a JSON object.")
    try:
        return ReplyIn.model_validate(fields)
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise ApiError(422, "invalid", "The reply is not valid.", details) from exc


async def read_reply(request: Request, max_json_bytes: int) -> tuple[ReplyIn, CleanPhoto | None]:
    """A reply from JSON, or from a multipart form with at most one photo (checked and re-encoded)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return _valid(parse_json(await capped_body(request, max_json_bytes))), None
    if ctype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "Send JSON, or a multipart form (with a photo).")
    request._body = await capped_body(request, photo_form_bytes(1))  # form() reads the capped copy
    form = await request.form(max_files=1, max_fields=5)
    fields = {k: v for k, v in form.items() if isinstance(v, str) and k != "photo" and v != ""}
    body = _valid(fields)
    upload = form.get("photo")
    if not isinstance(upload, UploadFile):
        return body, None
    raw = await upload.read(MAX_PHOTO_BYTES + 1)
    await upload.close()
    if not raw:
        return body, None
    if len(raw) > MAX_PHOTO_BYTES:
        raise ApiError(413, "photo_too_large", f"The photo is larger than {size_text(MAX_PHOTO_BYTES)}.")
    return body, await asyncio.to_thread(clean_photo, raw)


@router.post(
    "/api/v1/reports/{report_id}/replies", status_code=201, response_model=ReplyOut, openapi_extra=_REPLY_DOC
)
async def post_reply(ctx: Ctx, report_id: str, request: Request) -> dict[str, Any]:
    """The rider adds words or a photo to their report, usually answering a question staff asked;
    at most 10 a day (429 with Retry-After). Sent on to the closer as `case.rider_replied`."""
    await owned_report(ctx, request, report_id)
    body, photo = await read_reply(request, ctx.config.max_form_bytes)
    answer: dict[str, Any] = await ctx.write(lambda s: reply(s, report_id, body, photo, utcnow()))
    return answer


@router.post("/api/v1/reports/{report_id}/nudge", status_code=201, response_model=NudgeOut)
async def post_nudge(ctx: Ctx, report_id: str, request: Request, response: Response) -> dict[str, Any]:
    """The rider's 催办: once per 24 hours per report (429 `nudge_limited` with Retry-After), only
    while the case is being worked (409 `not_open`). The case goes on the centre's supervision list."""
    await owned_report(ctx, request, report_id)
    now = utcnow()
    report = await ctx.write(lambda s: nudge(s, report_id, now))
    response.headers["Cache-Control"] = "no-store"
    return nudge_json(report, now)

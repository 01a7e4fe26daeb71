"""Admin routes for Open311 API keys: issue (the secret is shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select

from gridloop.clock import as_utc, utcnow
from gridloop.errors import ApiError
from services.reporter import open311
from services.reporter.api.reports import json_body_doc, read_model
from services.reporter.context import Admin, Ctx
from services.reporter.credentials import PlainIn
from services.reporter.models import ApiKey

router = APIRouter(tags=["admin"])


class ApiKeyIn(PlainIn):
    """Who the key is for."""

    model_config = ConfigDict(str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100, description="The integrator, e.g. '12345 hotline'.")


class ApiKeyIssued(BaseModel):
    """A new key with its secret (shown this once; only its digest is kept)."""

    key_id: str
    name: str
    api_key: str


class ApiKeyOut(BaseModel):
    """A key without its secret."""

    key_id: str
    name: str
    created_by: str
    created_at: str
    revoked: bool


class ApiKeyList(BaseModel):
    """The keys, oldest first."""

    items: list[ApiKeyOut]


@router.post(
    "/api/v1/open311/keys",
    status_code=201,
    response_model=ApiKeyIssued,
    openapi_extra=json_body_doc(ApiKeyIn),
)
async def issue_api_key(ctx: Ctx, who: Admin, request: Request) -> dict[str, Any]:
    """Issue an Open311 API key (shown once; only its digest is kept). The body is read after the
    bearer token is checked, up to the form cap."""
    body = await read_model(request, ApiKeyIn, ctx.config.max_form_bytes)
    assert body is not None
    name = body.name
    key_id, secret = open311.new_api_key()

    def work(session: Session) -> None:
        session.add(
            ApiKey(
                key_id=key_id,
                key_hash=open311.key_digest(secret),
                name=name,
                created_by=who.username,
                created_at=utcnow(),
            )
        )

    await ctx.write(work)
    return {"key_id": key_id, "name": name, "api_key": secret}


@router.get("/api/v1/open311/keys", response_model=ApiKeyList)
async def list_api_keys(ctx: Ctx, _who: Admin) -> dict[str, Any]:
    """The Open311 API keys (without the secrets)."""

    def work(session: Session) -> list[dict[str, Any]]:
        rows = session.exec(select(ApiKey).order_by(col(ApiKey.created_at)))
        return [
            {
                "key_id": k.key_id,
                "name": k.name,
                "created_by": k.created_by,
                "created_at": as_utc(k.created_at).isoformat(),
                "revoked": k.revoked_at is not None,
            }
            for k in rows
        ]

    return {"items": await ctx.read(work)}


@router.delete("/api/v1/open311/keys/{key_id}", status_code=204)
async def revoke_api_key(ctx: Ctx, _who: Admin, key_id: str) -> Response:
    """Revoke an Open311 API key."""

    def work(session: Session) -> bool:
        row = session.get(ApiKey, key_id)
        if row is None:
            return False
        row.revoked_at = row.revoked_at or utcnow()
        session.add(row)
        return True

    if not await ctx.write(work):
        raise ApiError(404, "not_found", "No such key.")
    return Response(status_code=204)

"""After-photos, read from the database (public: the unguessable id is the capability)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from gridloop.errors import ApiError
from services.closer import photostore
from services.closer.context import Ctx

router = APIRouter(tags=["photos"])

# a photo never changes under its id: cache it for a year, and its id is its validator
CACHING = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}


@router.get(
    "/photos/{photo_id}.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The photo (JPEG)."}},
)
async def photo(ctx: Ctx, request: Request, photo_id: str) -> Response:
    """An after-photo (public: the unguessable id is the capability; riders see it when confirming)."""
    if not photostore.valid_id(photo_id):
        raise ApiError(404, "not_found", "No such photo.")

    def read() -> bytes | None:
        with ctx.runtime.db.session() as session:
            return photostore.load(session, photo_id)

    data = await asyncio.to_thread(read)
    if data is None:
        raise ApiError(404, "not_found", "No such photo.")
    etag = f'"{photo_id}"'
    if request.headers.get("If-None-Match") == etag:
        return Response(status_code=304, headers={**CACHING, "ETag": etag})
    return Response(data, media_type="image/jpeg", headers={**CACHING, "ETag": etag})

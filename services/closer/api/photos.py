"""After-photos as files (public: the unguessable id is the capability; riders see it when confirming)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import FileResponse

from gridloop.errors import ApiError
from services.closer import photostore
from services.closer.context import Ctx

router = APIRouter(tags=["photos"])


@router.get("/photos/{photo_id}.jpg", response_class=FileResponse)
async def photo(ctx: Ctx, photo_id: str) -> FileResponse:
    """An after-photo (public: the unguessable id is the capability; riders see it when confirming)."""
    path = photostore.photo_path(ctx.settings.var_dir, photo_id)
    if path is None or not await asyncio.to_thread(path.is_file):
        raise ApiError(404, "not_found", "No such photo.")
    return FileResponse(
        path,
        media_type="image/jpeg",
        headers={"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"},
    )

"""The console's topic pages (议题): the list (suggestions on top, open topics, closed ones) and a topic's
page with a map of its cases and the forms to open from a suggestion, add or remove cases, record the
meeting and close with an outcome. Every form is CSRF-checked; the rules and writes are the API's
(services/closer/api/topics.py, services/closer/topics.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gridloop.errors import ApiError
from gridloop.tokens import Principal
from services.closer import topics
from services.closer.api import topics as api
from services.closer.console.routes import form_csrf, form_model, lang_of, page_base, render, user
from services.closer.console.svgmap import svg_map
from services.closer.context import Closer, closer

router = APIRouter(include_in_schema=False)
HOT_SPOT_DEGREES = 0.005
"""Cases spread less than this (about 500 m) are drawn without their grid's outline."""


def _error(request: Request, ctx: Closer, who: Principal, exc: ApiError) -> Response:
    message = lang_of(request)("not_found") if exc.status == 404 else exc.message
    return render(request, "error.html", exc.status, message=message, **page_base(ctx, who))


@router.get("/console/topics")
async def topics_page(request: Request) -> Response:
    """Suggestions on top, then open topics, then closed ones."""
    ctx = closer(request)
    who = await user(request)
    try:
        data = await asyncio.to_thread(api.overview, ctx, who)
    except ApiError as exc:
        return _error(request, ctx, who, exc)
    return render(
        request,
        "topics.html",
        nav="topics",
        data=data,
        bodies=topics.BODIES,
        writer=who.role in topics.WRITERS,
        **page_base(ctx, who),
    )


def _topic_page(
    request: Request, ctx: Closer, who: Principal, topic_id: str, status: int = 200, error: str | None = None
) -> Response:
    topics.check_reader(who)
    with ctx.runtime.db.session() as session:
        view = topics.topic_detail(session, topics.load(session, who, ctx.jurisdiction, topic_id))
    points = [
        (c["lat"], c["lon"]) for c in view["case_list"] if c["lat"] is not None and c["lon"] is not None
    ]
    grids = {c["grid_id"] for c in view["case_list"] if c["grid_id"]}
    grid = ctx.jurisdiction.grids.get(grids.pop()) if len(grids) == 1 else None
    spread = max((max(p[i] for p in points) - min(p[i] for p in points) for i in (0, 1)), default=0.0)
    if spread < HOT_SPOT_DEGREES:
        grid = None  # a hot spot: its cases fill the map (in the whole grid they would be one dot)
    centre = (view["lat"], view["lon"]) if view["lat"] is not None and view["lon"] is not None else None
    return render(
        request,
        "topic.html",
        status,
        nav="topics",
        topic=view,
        svg=svg_map(grid.polygon if grid else None, centre, view["title"], others=points),
        writer=who.role in topics.WRITERS and view["status"] == "open",
        bodies=topics.BODIES,
        error=error,
        done=request.query_params.get("done"),
        **page_base(ctx, who),
    )


@router.get("/console/topics/{topic_id}")
async def topic_page(request: Request, topic_id: str) -> Response:
    """A topic: its map, cases, meetings and (while open) the forms."""
    ctx = closer(request)
    who = await user(request)
    try:
        return await asyncio.to_thread(_topic_page, request, ctx, who, topic_id)
    except ApiError as exc:
        return _error(request, ctx, who, exc)


def _fields(form: Any, *names: str) -> dict[str, str]:
    return {n: v.strip() for n in names if isinstance(v := form.get(n), str)}


def _ids(text: str) -> list[str]:
    return [p.strip() for p in text.replace("，", ",").replace(" ", ",").split(",") if p.strip()]


@router.post("/console/topics")
async def create_topic(request: Request) -> Response:
    """Open a topic from a suggestion's form (its cases and key) or from case ids typed in."""
    ctx = closer(request)
    who = await user(request)
    try:
        form = await form_csrf(request, ctx, who)
        f = _fields(form, "title", "body", "suggestion", "case_ids")
        values = {
            "title": f.get("title", ""),
            "body": f.get("body", ""),
            "case_ids": _ids(f.get("case_ids", "")),
            "suggestion": f.get("suggestion") or None,
        }
        body = form_model(api.NewTopic, values)
        view = await asyncio.to_thread(api.create, ctx, who, body)
    except ApiError as exc:
        return _error(request, ctx, who, exc)
    return RedirectResponse(f"/console/topics/{view['topic_id']}?done=opened", status_code=303)


async def _write(request: Request, topic_id: str, names: tuple[str, ...], done: str, apply: Any) -> Response:
    """A topic form: CSRF, the fields, the API's write; the page again with the refusal, if any."""
    ctx = closer(request)
    who = await user(request)
    try:
        form = await form_csrf(request, ctx, who)
        fields = _fields(form, "version", *names)
        await asyncio.to_thread(apply, ctx, who, topic_id, fields)
    except ApiError as exc:
        if exc.status in (403, 404):
            return _error(request, ctx, who, exc)
        return await asyncio.to_thread(_topic_page, request, ctx, who, topic_id, exc.status, exc.message)
    return RedirectResponse(f"/console/topics/{topic_id}?done={done}", status_code=303)


@router.post("/console/topics/{topic_id}/cases")
async def topic_cases(request: Request, topic_id: str) -> Response:
    """Add cases (ids typed in) or remove one (its button)."""

    def apply(ctx: Closer, who: Principal, tid: str, f: dict[str, str]) -> None:
        body = form_model(
            api.Linking,
            {"version": f.get("version"), "add": _ids(f.get("add", "")), "remove": _ids(f.get("remove", ""))},
        )
        api.relink(ctx, who, tid, body)

    return await _write(request, topic_id, ("add", "remove"), "linked", apply)


@router.post("/console/topics/{topic_id}/meetings")
async def topic_meeting(request: Request, topic_id: str) -> Response:
    """Record the meeting."""

    def apply(ctx: Closer, who: Principal, tid: str, f: dict[str, str]) -> None:
        values: dict[str, Any] = {k: v for k, v in f.items() if v}
        api.meet(ctx, who, tid, form_model(api.Meeting, values))

    names = ("held_on", "participants", "decision", "follow_up_owner", "follow_up_due")
    return await _write(request, topic_id, names, "met", apply)


@router.post("/console/topics/{topic_id}/close")
async def topic_close(request: Request, topic_id: str) -> Response:
    """Close with the outcome (and whether it fixes the cases)."""

    def apply(ctx: Closer, who: Principal, tid: str, f: dict[str, str]) -> None:
        values = {
            "version": f.get("version"),
            "outcome": f.get("outcome", ""),
            "resolves": f.get("resolves") == "1",
        }
        api.finish(ctx, who, tid, form_model(api.Closing, values))

    return await _write(request, topic_id, ("outcome", "resolves"), "closed", apply)

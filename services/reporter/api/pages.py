"""The rider's pages: /r/{code} (scan), /r (typed code or GPS), /t/{report_id} (tracking), /my.

Server-rendered with Jinja2 (autoescaping on: everything a rider typed is escaped), one small
script and one stylesheet shared by all pages, no framework: the scan page is a few kilobytes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlmodel import Session, col, select

from gridloop.clock import as_utc, utcnow
from gridloop.service import page_security_headers
from schemas import codes
from schemas.cases import CaseStatus
from services.reporter import conversation, nudges, recognition, topics
from services.reporter.api.reports import open_cases_json
from services.reporter.context import LANG_COOKIE, Ctx, Lang, Reporter, RiderRef, language
from services.reporter.credentials import tracking_key_matches
from services.reporter.models import CaseView, Photo, Place, Report
from services.reporter.place_codes import CodeLookup, lookup_code
from services.reporter.qr import env
from services.reporter.readmodel import open_cases
from services.reporter.reports import PLATFORMS
from services.reporter.rider_feedback import shown_feedback
from services.reporter.riders import recognition_code
from services.reporter.tracking import my_report_rows, timeline
from services.reporter.wording import STATUS, action_text, local_time, status_text, t

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSET_VERSION = "6"
JS_TEXT = (
    "offline_saved",
    "offline_pending",
    "sending",
    "error",
    "pick_category",
    "photo_removed",
    "rate_limited",
    "retry_later",
    "locating",
    "location_failed",
    "your_location",
    "outside",
    "comment_required",
    "thanks_feedback",
    "reply_sent",
    "reply_empty",
    "nudge_sent",
    "nudge_wait",
    "notify_on",
    "notify_stopped",
    "notify_unsupported",
    "notify_denied",
)

# a rider's error is a page in their language, not the API's envelope
router = APIRouter(
    tags=["rider pages"], responses={"4XX": {"content": {"text/html": {}}, "description": "An error page."}}
)


def mount_static(app: FastAPI) -> None:
    """Serve the pages' script and stylesheet under /static."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def page_headers(ctx: Reporter) -> dict[str, str]:
    """Security headers of the rider pages: scripts and styles from here, after-photos from the closer."""
    return page_security_headers(f"data: blob: {ctx.settings.closer_public_url.rstrip('/')}")


def page(
    ctx: Reporter, request: Request, template: str, http_status: int = 200, **values: Any
) -> HTMLResponse:
    """Render a rider page in the rider's language; keeps a chosen language and gives a signed rider
    token to a phone without one (new riders are counted per address when they report)."""
    lang = language(request)
    config = {
        "lang": lang,
        "text": {k: t(k, lang) for k in JS_TEXT},
        "status": {k: (zh if lang == "zh" else en) for k, (zh, en) in STATUS.items()},
        "sw": f"/sw.js?v={ASSET_VERSION}",
        "vapidKey": ctx.vapid.public_key if ctx.vapid else None,
        **values.pop("config", {}),
    }
    html = env.get_template(template).render(
        lang=lang,
        t=lambda key, **kw: t(key, lang, **kw),
        asset_version=ASSET_VERSION,
        config=config,
        categories=[
            {"id": c.id, "icon": c.icon, "name": c.name(lang)} for c in ctx.jurisdiction.categories.values()
        ],
        platforms=PLATFORMS,
        **values,
    )
    response = HTMLResponse(html, status_code=http_status, headers=page_headers(ctx))
    if request.query_params.get("lang"):
        response.set_cookie(
            LANG_COOKIE, lang, max_age=3600 * 24 * 365, samesite="lax", secure=ctx.secure_cookie
        )
    ctx.rider_token(request, response)
    return response


def problem_page(ctx: Reporter, request: Request, found: CodeLookup, typed: str) -> HTMLResponse:
    """The typed-code page explaining a mistyped, unknown or deactivated code."""
    lang = language(request)
    kind = found.problem or "unknown"
    titles = {
        "check": ("check_title", "check_hint"),
        "deactivated": ("deactivated_title", "deactivated_hint"),
    }
    title, hint = titles.get(kind, ("unknown_title", "manual_hint"))
    status = {"check": 422, "deactivated": 410}.get(kind, 404)
    problem = {
        "kind": kind,
        "title": t(title, lang),
        "hint": t(hint, lang),
        "replaced_by": found.replaced_by,
        "replaced_printed": codes.format_code(found.replaced_by) if found.replaced_by else None,
    }
    return page(ctx, request, "manual.html", status, problem=problem, typed=typed, config={"via": "manual"})


@router.get(
    "/sw.js",
    response_class=Response,
    responses={200: {"content": {"text/javascript": {}}, "description": "The service worker."}},
)
async def service_worker() -> Response:
    """The riders' service worker (scope /): the scan page's shell offline, and Web Push."""
    return Response(
        (STATIC / "sw.js").read_bytes(),
        media_type="text/javascript",
        # a browser checks for a new worker on every visit; the worker's own caches keep the shell
        headers={
            "Cache-Control": "no-cache",
            "Service-Worker-Allowed": "/",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/r", response_class=HTMLResponse)
async def manual(
    ctx: Ctx, request: Request, code: Annotated[str | None, Query(max_length=40)] = None
) -> Response:
    """Type the short code of a damaged QR sign, or report at your GPS location."""
    if code:
        found = await ctx.read(lambda s: lookup_code(s, code))
        if found.problem is None and found.code:
            return RedirectResponse(f"/r/{found.code}?via=manual", status_code=303)
        return problem_page(ctx, request, found, code)
    return page(ctx, request, "manual.html", problem=None, typed="", config={"via": "manual"})


@router.get("/r/{code}", response_class=HTMLResponse)
async def scan(ctx: Ctx, request: Request, code: str, lang: Lang) -> Response:
    """The page a report code's QR opens: where you are, what is wrong, one tap sends."""

    def load(session: Session) -> tuple[CodeLookup, list[tuple[CaseView, int]]]:
        found = lookup_code(session, code)
        cases = open_cases(session, found.place.place_id) if found.place and not found.problem else []
        return found, cases

    found, cases = await ctx.read(load)
    if found.problem or found.place is None or found.code is None:
        return problem_page(ctx, request, found, code)
    place = found.place
    station = ctx.jurisdiction.stations.get(place.station_id or "")
    via = "manual" if request.query_params.get("via") == "manual" else "scan"
    return page(
        ctx,
        request,
        "report.html",
        place_name=place.name_en if lang == "en" and place.name_en else place.name_zh,
        station_name=station.name(lang) if station else "",
        printed_code=codes.format_code(found.code),
        open_cases=[
            {**c, "name": c["category_name"], "riders": c["distinct_riders"]}
            for c in open_cases_json(ctx, cases, lang)
        ],
        config={"code": found.code, "via": via, "placeId": place.place_id},
    )


def _track_rows(session: Session, report_id: str, lang: str) -> dict[str, Any] | None:
    """Everything the tracking page shows of a report (None for an unknown one)."""
    report = session.get(Report, report_id)
    if report is None:
        return None
    view = session.get(CaseView, report.case_id) if report.case_id else None
    place = session.get(Place, report.place_id) if report.place_id else None
    photos = session.exec(
        select(Photo.photo_id)
        .where(Photo.report_id == report_id, col(Photo.reply_id).is_(None))
        .order_by(col(Photo.position))
    ).all()
    return {
        "report": report,
        "events": timeline(session, report_id),
        "view": view,
        "place": place,
        "photos": list(photos),
        "feedback": shown_feedback(session, report),
        "updates": conversation.updates(session, report.case_id),
        "replies": conversation.replies(session, report_id),
        "topic": topics.for_case(session, report.case_id),
        "thanks": recognition.thanks_of(session, report.case_id, lang),
    }


@router.get("/t/{report_id}", response_class=HTMLResponse)
async def track(
    ctx: Ctx,
    request: Request,
    report_id: str,
    lang: Lang,
    k: Annotated[str | None, Query(description="The report's tracking secret.")] = None,
) -> Response:
    """The tracking page: status, timeline in plain words, after-photo; with the report's credential
    (the rider cookie that sent it, or `?k=` its tracking secret) also the rider's words, photos and
    the confirm-or-deny step."""
    j = ctx.jurisdiction
    data = await ctx.read(lambda s: _track_rows(s, report_id, lang))
    if data is None:
        return page(ctx, request, "notfound.html", 404)
    report: Report = data["report"]
    view: CaseView | None = data["view"]
    place: Place | None = data["place"]
    category = j.categories.get(report.category)
    station_id = view.station_id if view else (place.station_id if place else None)
    station = j.stations.get(station_id or "")
    owner = ctx.owns(request, report)
    after = [
        f"{ctx.settings.closer_public_url.rstrip('/')}/photos/{pid}.jpg"
        for pid in (view.after_photo_ids.split(",") if view and view.after_photo_ids else [])
    ]
    steps = [
        {
            "action": e.action,
            "label": action_text(e.action, lang),
            "at": local_time(as_utc(e.at), lang),
            "note": e.note,
        }
        for e in data["events"]
    ]
    updates = [{**u, "at": local_time(datetime.fromisoformat(u["at"]), lang)} for u in data["updates"]]
    replies = [{**r, "at": local_time(datetime.fromisoformat(r["at"]), lang)} for r in data["replies"]]
    next_nudge = nudges.next_nudge_at(report.nudged_at)
    can_nudge = owner and report.case_id is not None and report.status in nudges.NUDGE_STATUSES
    return page(
        ctx,
        request,
        "track.html",
        report_id=report.report_id,
        status=report.status,
        status_label=status_text(report.status, lang),
        icon=category.icon if category else "❓",
        category_name=category.name(lang) if category else report.category,
        place_name=(place.name_en if lang == "en" and place.name_en else place.name_zh) if place else None,
        submitted=local_time(as_utc(report.submitted_at), lang),
        agency=station.name(lang) if station else None,
        expected=local_time(as_utc(view.resolve_due), lang) if view and view.resolve_due else None,
        round_the_clock=bool(view and view.clock == "calendar"),
        after_photos=after if report.status in (CaseStatus.RESOLVED, CaseStatus.CLOSED) else [],
        ask_feedback=owner and report.status == CaseStatus.RESOLVED and data["feedback"] is None,
        feedback=data["feedback"] if owner else None,
        timeline=steps,
        owner=owner,
        description=report.description if owner else None,
        photos=[f"/api/v1/photos/{p}" for p in data["photos"]] if owner else [],
        updates=updates,
        topic=data["topic"],
        replies=replies if owner else [],
        # staff's thank-you is the riders' own: only with the report's credential
        thanks={**data["thanks"], "at": local_time(datetime.fromisoformat(data["thanks"]["at"]), lang)}
        if owner and data["thanks"]
        else None,
        can_nudge=can_nudge,
        case_known=report.case_id is not None,
        next_nudge=local_time(next_nudge, lang)
        if can_nudge and next_nudge and next_nudge > utcnow()
        else None,
        # the secret from the link goes along with the rider's answer (X-Tracking-Key), never elsewhere
        config={
            "reportId": report.report_id,
            "reportStatus": report.status,
            "trackingKey": k if tracking_key_matches(k, report.tracking_hash, ctx.secret) else None,
        },
    )


@router.get("/my", response_class=HTMLResponse)
async def my_reports(ctx: Ctx, request: Request, lang: Lang, rider: RiderRef) -> Response:
    """This phone's reports (the rider cookie), newest first; no account needed."""
    rows, mine = await ctx.read(lambda s: (my_report_rows(s, rider), recognition.contributions(s, rider)))
    items = []
    for report, place in rows:
        category = ctx.jurisdiction.categories.get(report.category)
        items.append(
            {
                "report_id": report.report_id,
                "icon": category.icon if category else "❓",
                "name": category.name(lang) if category else report.category,
                "place": (place.name_en if lang == "en" and place.name_en else place.name_zh)
                if place
                else "📍",
                "at": local_time(as_utc(report.submitted_at), lang),
                "status": status_text(report.status, lang),
            }
        )
    return page(
        ctx, request, "my.html", reports=items, contributions=mine, recognition=recognition_code(rider)
    )

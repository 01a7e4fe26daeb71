"""The rider's pages: /r/{code} (scan), /r (typed code or GPS), /t/{report_id} (tracking), /my.

Server-rendered with Jinja2 (autoescaping on: everything a rider typed is escaped), one small
script and one stylesheet shared by all pages, no framework: the scan page is a few kilobytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func
from sqlmodel import Session, col, select

from gridloop.clock import as_utc, utcnow
from gridloop.errors import ApiError
from schemas import codes
from services.reporter.deps import LANG_COOKIE, Deps
from services.reporter.feedback import shown_feedback
from services.reporter.intake import PLATFORMS
from services.reporter.models import CaseView, Photo, Place, Report, ReportCode, ReportEvent
from services.reporter.qr import env
from services.reporter.readmodel import OPEN_STATES
from services.reporter.wording import STATUS, action_text, ago, lang_of, local_time, status_text, t

STATIC = Path(__file__).resolve().parent / "static"
ASSET_VERSION = "3"
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
)


@dataclass(frozen=True)
class CodeLookup:
    """What a code leads to: a place, or why not (unknown, mistyped, deactivated)."""

    code: str | None
    place: Place | None
    problem: str | None = None
    replaced_by: str | None = None


def page_headers(deps: Any) -> dict[str, str]:
    """Security headers of the rider pages: scripts and styles from here, after-photos from the closer."""
    closer = deps.settings.closer_public_url.rstrip("/")
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            f"default-src 'self'; img-src 'self' data: blob: {closer}; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


def lookup_code(session: Session, raw: str) -> CodeLookup:
    """Resolve a typed or scanned code without raising: the page explains what is wrong."""
    try:
        code = codes.validate(raw)
    except codes.CodeError as exc:
        return CodeLookup(None, None, "check" if exc.reason == "check" else "unknown")
    row = session.get(ReportCode, code)
    place = session.get(Place, row.place_id) if row else None
    if row is None or place is None or not place.active:
        return CodeLookup(code, None, "unknown")
    if not row.active:
        return CodeLookup(code, place, "deactivated", row.replaced_by)
    return CodeLookup(code, place)


def open_cases(session: Session, place_id: str) -> list[tuple[CaseView, int]]:
    """Open cases with a report at this place, newest first, with their count of distinct riders."""
    rows = session.exec(
        select(CaseView, func.count(func.distinct(Report.rider_ref)))
        .join(Report, col(Report.case_id) == col(CaseView.case_id))
        .where(col(CaseView.status).in_(OPEN_STATES))
        .where(
            (col(CaseView.place_id) == place_id)
            | col(CaseView.case_id).in_(select(Report.case_id).where(Report.place_id == place_id))
        )
        .group_by(col(CaseView.case_id))
        .order_by(col(CaseView.opened_at).desc())
        .limit(5)
    ).all()
    return [(view, int(riders)) for view, riders in rows]


def open_cases_json(deps: Deps, rows: list[tuple[CaseView, int]], lang: str) -> list[dict[str, Any]]:
    """The open cases as the API shows them (no rider's words or details)."""
    now = utcnow()
    out = []
    for view, riders in rows:
        category = deps.jurisdiction.categories.get(view.category)
        out.append(
            {
                "case_id": view.case_id,
                "category": view.category,
                "category_name": category.name(lang) if category else view.category,
                "icon": category.icon if category else "❓",
                "status": view.status,
                "opened_at": as_utc(view.opened_at).isoformat(),
                "ago": ago(as_utc(view.opened_at), now, lang),
                "distinct_riders": riders,
            }
        )
    return out


def install(app: FastAPI, deps: Deps) -> None:
    """Add the rider pages and their small APIs to the reporter's app."""
    j = deps.jurisdiction
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def language(request: Request) -> str:
        return lang_of(request.query_params.get("lang") or request.cookies.get(LANG_COOKIE))

    def page(request: Request, template: str, http_status: int = 200, **values: Any) -> HTMLResponse:
        lang = language(request)
        config = {
            "lang": lang,
            "text": {k: t(k, lang) for k in JS_TEXT},
            "status": {k: (zh if lang == "zh" else en) for k, (zh, en) in STATUS.items()},
            **values.pop("config", {}),
        }
        html = env.get_template(template).render(
            lang=lang,
            t=lambda key, **kw: t(key, lang, **kw),
            asset_version=ASSET_VERSION,
            config=config,
            categories=[{"id": c.id, "icon": c.icon, "name": c.name(lang)} for c in j.categories.values()],
            platforms=PLATFORMS,
            **values,
        )
        response = HTMLResponse(html, status_code=http_status, headers=page_headers(deps))
        if request.query_params.get("lang"):
            response.set_cookie(LANG_COOKIE, lang, max_age=3600 * 24 * 365, samesite="lax")
        deps.rider_token(request, response)
        return response

    def problem_page(request: Request, found: CodeLookup, typed: str) -> HTMLResponse:
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
        return page(request, "manual.html", status, problem=problem, typed=typed, config={"via": "manual"})

    @app.get("/r", response_class=HTMLResponse, tags=["rider pages"])
    async def manual(request: Request, code: str | None = Query(None, max_length=40)) -> Response:
        """Type the short code of a damaged QR sign, or report at your GPS location."""
        if code:
            found = await deps.read(lambda s: lookup_code(s, code))
            if found.problem is None and found.code:
                return RedirectResponse(f"/r/{found.code}?via=manual", status_code=303)
            return problem_page(request, found, code)
        return page(request, "manual.html", problem=None, typed="", config={"via": "manual"})

    @app.get("/r/{code}", response_class=HTMLResponse, tags=["rider pages"])
    async def scan(request: Request, code: str) -> Response:
        """The page a report code's QR opens: where you are, what is wrong, one tap sends."""

        def load(session: Session) -> tuple[CodeLookup, list[tuple[CaseView, int]]]:
            found = lookup_code(session, code)
            cases = open_cases(session, found.place.place_id) if found.place and not found.problem else []
            return found, cases

        found, cases = await deps.read(load)
        if found.problem or found.place is None or found.code is None:
            return problem_page(request, found, code)
        lang = language(request)
        place = found.place
        station = j.stations.get(place.station_id or "")
        via = "manual" if request.query_params.get("via") == "manual" else "scan"
        return page(
            request,
            "report.html",
            place_name=place.name_en if lang == "en" and place.name_en else place.name_zh,
            station_name=station.name(lang) if station else "",
            printed_code=codes.format_code(found.code),
            open_cases=[
                {**c, "name": c["category_name"], "riders": c["distinct_riders"]}
                for c in open_cases_json(deps, cases, lang)
            ],
            config={"code": found.code, "via": via, "placeId": place.place_id},
        )

    @app.get("/api/v1/places/{place_id}/open-cases", tags=["reports"])
    async def place_open_cases(place_id: str, request: Request) -> JSONResponse:
        """Open cases at a place, to offer '+1' instead of a duplicate report."""

        def load(session: Session) -> list[tuple[CaseView, int]] | None:
            place = session.get(Place, place_id)
            return open_cases(session, place_id) if place else None

        rows = await deps.read(load)
        if rows is None:
            raise ApiError(404, "unknown_place", "No such place.")
        return JSONResponse({"place_id": place_id, "items": open_cases_json(deps, rows, language(request))})

    @app.get("/api/v1/locate", tags=["reports"])
    async def locate(
        lat: float = Query(ge=-90, le=90), lon: float = Query(ge=-180, le=180)
    ) -> dict[str, Any]:
        """Which grid and station a point falls in (the GPS fallback shows it before sending)."""
        grid = j.grid_at(lat, lon)
        station = j.stations.get(grid.station_id) if grid else None
        return {
            "lat": lat,
            "lon": lon,
            "grid_id": grid.id if grid else None,
            "station_id": station.id if station else None,
            "station_name": station.name_zh if station else None,
        }

    @app.get("/t/{report_id}", response_class=HTMLResponse, tags=["rider pages"])
    async def track(request: Request, report_id: str) -> Response:
        """The tracking page: status, timeline in plain words, after-photo, confirm or deny."""
        lang = language(request)
        rider_ref = deps.rider_ref(request)

        def load(session: Session) -> dict[str, Any] | None:
            report = session.get(Report, report_id)
            if report is None:
                return None
            events = session.exec(
                select(ReportEvent).where(ReportEvent.report_id == report_id).order_by(col(ReportEvent.id))
            ).all()
            view = session.get(CaseView, report.case_id) if report.case_id else None
            place = session.get(Place, report.place_id) if report.place_id else None
            photos = session.exec(
                select(Photo.photo_id).where(Photo.report_id == report_id).order_by(col(Photo.position))
            ).all()
            feedback = shown_feedback(session, report)
            return {
                "report": report,
                "events": list(events),
                "view": view,
                "place": place,
                "photos": list(photos),
                "feedback": feedback,
            }

        data = await deps.read(load)
        if data is None:
            return page(request, "notfound.html", 404)
        report: Report = data["report"]
        view: CaseView | None = data["view"]
        place: Place | None = data["place"]
        category = j.categories.get(report.category)
        station_id = view.station_id if view else (place.station_id if place else None)
        station = j.stations.get(station_id or "")
        owner = rider_ref is not None and rider_ref == report.rider_ref
        after = [
            f"{deps.settings.closer_public_url.rstrip('/')}/photos/{pid}.jpg"
            for pid in (view.after_photo_ids.split(",") if view and view.after_photo_ids else [])
        ]
        timeline = [
            {
                "action": e.action,
                "label": action_text(e.action, lang),
                "at": local_time(as_utc(e.at), lang),
                "note": e.note,
            }
            for e in data["events"]
        ]
        return page(
            request,
            "track.html",
            report_id=report.report_id,
            status=report.status,
            status_label=status_text(report.status, lang),
            icon=category.icon if category else "❓",
            category_name=category.name(lang) if category else report.category,
            place_name=(place.name_en if lang == "en" and place.name_en else place.name_zh)
            if place
            else None,
            submitted=local_time(as_utc(report.submitted_at), lang),
            agency=station.name(lang) if station else None,
            expected=local_time(as_utc(view.resolve_due), lang) if view and view.resolve_due else None,
            after_photos=after if report.status in ("resolved", "closed") else [],
            ask_feedback=report.status == "resolved" and data["feedback"] is None,
            feedback=data["feedback"],
            timeline=timeline,
            owner=owner,
            description=report.description if owner else None,
            photos=[f"/api/v1/photos/{p}" for p in data["photos"]] if owner else [],
            config={"reportId": report.report_id, "reportStatus": report.status},
        )

    @app.get("/my", response_class=HTMLResponse, tags=["rider pages"])
    async def my_reports(request: Request) -> Response:
        """This phone's reports (the rider cookie), newest first; no account needed."""
        lang = language(request)
        rows = await deps.read(lambda s: my_report_rows(s, deps.rider_ref(request)))
        items = []
        for report, place in rows:
            category = j.categories.get(report.category)
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
        return page(request, "my.html", reports=items)

    @app.get("/api/v1/me/reports", tags=["reports"])
    async def my_reports_api(request: Request) -> dict[str, Any]:
        """This rider's reports (by the rider cookie), newest first."""
        rows = await deps.read(lambda s: my_report_rows(s, deps.rider_ref(request)))
        return {
            "items": [
                {
                    "report_id": r.report_id,
                    "category": r.category,
                    "place_id": r.place_id,
                    "status": r.status,
                    "case_id": r.case_id,
                    "submitted_at": as_utc(r.submitted_at).isoformat(),
                    "tracking_url": f"{deps.base_url}/t/{r.report_id}",
                }
                for r, _place in rows
            ]
        }


def my_report_rows(
    session: Session, rider_ref: str | None, limit: int = 50
) -> list[tuple[Report, Place | None]]:
    """A rider's reports with their places, newest first."""
    if rider_ref is None:
        return []
    rows = session.exec(
        select(Report, Place)
        .join(Place, col(Place.place_id) == col(Report.place_id), isouter=True)
        .where(Report.rider_ref == rider_ref)
        .order_by(col(Report.submitted_at).desc())
        .limit(limit)
    ).all()
    return [(r, p) for r, p in rows]

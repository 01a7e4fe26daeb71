"""Console pages: sign-in with a secure HTTP-only cookie, CSRF on every form, queue, case, lists."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from gridloop.clock import as_utc, utcnow
from gridloop.errors import ApiError, invalid_form
from gridloop.service import page_security_headers
from gridloop.tokens import Principal
from schemas.reference import Station
from schemas.thanks import MAX_THANKS_TEXT, PRESETS
from services.closer import actions, duty, dutystore, queue
from services.closer.api.auth import login, new_token
from services.closer.api.cases import read_transition
from services.closer.console.i18n import Translator
from services.closer.console.svgmap import svg_map
from services.closer.context import SESSION_COOKIE, Closer, closer, identify
from services.closer.conversation import WRITERS
from services.closer.scope import oversees, visible_stations, visible_streets
from services.closer.staff import sign_out
from services.closer.transitions import OPEN, REJECT_REASONS, RETURN_REASONS, STATES

HERE = Path(__file__).parent
LANG_COOKIE = "gl_lang"
LOGIN_CSRF_COOKIE = "gl_login_csrf"

router = APIRouter(include_in_schema=False)
env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))


def mount_static(app: FastAPI) -> None:
    """Serve the console's CSS and JS, and send pages without a session to the login page."""
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    async def sign_in_again(request: Request, _exc: Exception) -> Response:
        return to_login(request)

    # every console page calls user(); one handler here instead of a try/except in each page
    app.add_exception_handler(SignIn, sign_in_again)


class SignIn(Exception):
    """The console needs a (new) sign-in: redirect to the login page."""


def lang_of(request: Request) -> Translator:
    """The page language: the cookie, else Chinese."""
    return Translator(request.cookies.get(LANG_COOKIE, "zh"))


def local(ctx: Closer, value: datetime | str | None) -> str:
    """A time as the station reads it: local, to the minute."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value).astimezone(ZoneInfo(ctx.config.work_timezone)).strftime("%m-%d %H:%M")


def render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A page with the console's security headers."""
    ctx = closer(request)
    t = lang_of(request)
    html = env.get_template(name).render(
        t=t,
        lang=t.lang,
        local=lambda v: local(ctx, v),
        j=ctx.jurisdiction,
        **values,
    )
    response = HTMLResponse(html, status_code=status)
    # no inline script, no external origin; images also from the reporter (QR codes)
    response.headers.update(page_security_headers(f"data: {ctx.settings.public_base_url}"))
    return response


async def user(request: Request) -> Principal:
    """The console user from the session cookie (never a bearer header here); SignIn without one."""
    if not request.cookies.get(SESSION_COOKIE):
        raise SignIn()
    try:
        return await identify(request, allow_cookie=True)
    except ApiError as exc:
        raise SignIn() from exc


def to_login(request: Request) -> RedirectResponse:
    """Send the browser to the login page (and drop a dead session cookie)."""
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def form_csrf(request: Request, ctx: Closer, who: Principal) -> Any:
    """Read a posted form and check its CSRF token (403 otherwise)."""
    form = await request.form(max_files=1, max_fields=250)
    token = form.get("csrf")
    ctx.check_csrf(who, token if isinstance(token, str) else None)
    return form


def _my_stations(ctx: Closer, who: Principal) -> list[Station]:
    """The stations the caller sees, for the station filter (services/closer/scope.py)."""
    visible = visible_stations(who, ctx.jurisdiction)
    return [s for s in ctx.jurisdiction.stations.values() if visible is None or s.id in visible]


def page_base(ctx: Closer, who: Principal) -> dict[str, Any]:
    """What every signed-in page shows; an admin also sees whether next year is only estimated."""
    next_year = utcnow().astimezone(ZoneInfo(ctx.config.work_timezone)).year + 1
    return {
        "who": who,
        "csrf": ctx.csrf_token(who),
        "supervisor": oversees(who),
        # the signed-in account's streets (the header shows them) and the streets it may pick from
        "my_streets": visible_streets(who, ctx.jurisdiction),
        "pick_street": who.role == "city",
        "my_stations": _my_stations(ctx, who),
        "states": STATES,
        "calendar_estimated": next_year
        if who.role == "admin" and ctx.calendar.estimated(next_year)
        else None,
    }


@router.get("/console")
async def console_home(request: Request) -> Response:
    """The queue when signed in, else the login page."""
    return RedirectResponse(
        "/console/queue" if request.cookies.get(SESSION_COOKIE) else "/console/login", 303
    )


@router.get("/console/lang")
async def switch_lang(to: str = "zh", back: str = "/console/queue") -> Response:
    """Switch the console language (a preference cookie)."""
    target = back if back.startswith("/console") and "//" not in back else "/console/queue"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(LANG_COOKIE, "en" if to == "en" else "zh", max_age=365 * 86400, samesite="lax")
    return response


def _login_page(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", status, csrf=token, error=error)
    ctx = closer(request)
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, secure=ctx.settings.cookie_secure, samesite="strict",
        path="/console/login", max_age=3600,
    )  # fmt: skip
    return response


@router.get("/console/login")
async def login_page(request: Request) -> Response:
    """The sign-in form."""
    return _login_page(request)


@router.post("/console/login")
async def login_submit(request: Request) -> Response:
    """Check the login (with its CSRF double-submit), set the session cookie."""
    ctx = closer(request)
    t = lang_of(request)
    form = await request.form(max_files=0, max_fields=10)
    given, expected = form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)
    if not isinstance(given, str) or not expected or not secrets.compare_digest(given, expected):
        return _login_page(request, t("stale"), 403)
    username, password = str(form.get("username") or "")[:60], str(form.get("password") or "")[:200]
    try:
        signed = await login(ctx, request, username, password)
    except ApiError as exc:
        if exc.status == 429:
            page = _login_page(request, t("locked"), 429)
            page.headers.update(exc.headers or {})  # Retry-After
            return page
        return _login_page(request, t("login_failed"), exc.status)
    ttl = ctx.settings.token_ttl_seconds
    response = RedirectResponse("/console/queue", status_code=303)
    response.set_cookie(
        SESSION_COOKIE, new_token(ctx, signed),
        max_age=ttl, httponly=True, secure=ctx.settings.cookie_secure, samesite="strict", path="/",
    )  # fmt: skip
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console/login")
    return response


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    """End the session (CSRF-checked, so another site cannot sign the user out): every token of the
    account is revoked, so a copied cookie dies with it."""
    ctx = closer(request)
    who = await user(request)
    await form_csrf(request, ctx, who)
    await asyncio.to_thread(sign_out, ctx.runtime.db, who.username, who.version)
    ctx.runtime.relay.wake()
    return to_login(request)


def _queue_params(request: Request, who: Principal, ctx: Closer) -> tuple[queue.QueueFilter, dict[str, str]]:
    q = request.query_params
    view = q.get("view", "queue")
    if view not in queue.VIEWS:
        view = "queue"
    if view not in queue.STAFF_VIEWS and not oversees(who):
        raise ApiError(403, "forbidden", lang_of(request)("forbidden"))
    status = q.get("status") or "open"
    queue.check_status(status)
    station = q.get("station") or None
    street = (q.get("street") or None) if station is None else None
    stations = ctx.scope(who, station, street)
    category = q.get("category") or None
    params = {
        k: v
        for k, v in {
            "view": view,
            "status": status,
            "station": station or "",
            "street": street or "",
            "category": category or "",
        }.items()
        if v
    }
    # grid staff's duty list also holds what they got on duty themselves; an overseer's is their streets'
    duty_user = who.username if view == "duty" and who.role == "staff" else None
    return queue.QueueFilter(stations, status, category, view, duty_user), params


def _one_station(f: queue.QueueFilter) -> str | None:
    """The one station a queue shows (its rows then need no station column), else None."""
    return next(iter(f.stations)) if f.stations is not None and len(f.stations) == 1 else None


def _rows(
    ctx: Closer, f: queue.QueueFilter, cursor: str | None
) -> tuple[list[Any], str | None, dict[str, Any]]:
    with ctx.runtime.db.session() as session:
        rows, next_cursor = queue.page(session, f, cursor, 100)
        counts = queue.counts(session, f.stations, utcnow())
    return queue.as_list(rows, utcnow()), next_cursor, counts


def _on_duty(ctx: Closer, who: Principal) -> list[duty.OnDuty]:
    """Who is on duty now in the caller's streets (services/closer/scope.py; city: every street)."""
    j = ctx.jurisdiction
    streets = visible_streets(who, j)
    now = utcnow()
    with ctx.runtime.db.session() as session:
        return [dutystore.current(session, j, street, now) for street in streets]


@router.get("/console/queue")
async def queue_page(request: Request) -> Response:
    """The queue (or a supervisor list), most urgent first, live."""
    ctx = closer(request)
    who = await user(request)
    try:
        f, params = _queue_params(request, who, ctx)
    except ApiError as exc:
        return render(request, "error.html", exc.status, message=exc.message, **page_base(ctx, who))
    items, next_cursor, counts = await asyncio.to_thread(_rows, ctx, f, request.query_params.get("cursor"))
    on_duty = await asyncio.to_thread(_on_duty, ctx, who)
    stream_params: dict[str, str] = {k: params[k] for k in ("station", "street") if k in params}
    return render(
        request,
        "queue.html",
        items=items,
        next_cursor=next_cursor,
        counts=counts,
        f=f,
        station=_one_station(f),
        street=params.get("street"),
        on_duty=on_duty,
        tz=ZoneInfo(ctx.config.work_timezone),
        params=params,
        query=urlencode(params),
        stream_url="/api/v1/queue/stream?" + urlencode(stream_params),
        open_states=OPEN,
        acked=request.query_params.get("acked"),
        failed=request.query_params.get("failed"),
        back_url=str(request.url.path) + ("?" + str(request.url.query) if request.url.query else ""),
        **page_base(ctx, who),
    )


@router.get("/console/queue/rows")
async def queue_rows(request: Request) -> Response:
    """The queue's rows and counts only, for the live refresh."""
    ctx = closer(request)
    try:
        who = await user(request)
    except SignIn:
        return Response(status_code=401)
    f, _ = _queue_params(request, who, ctx)
    items, _cursor, counts = await asyncio.to_thread(_rows, ctx, f, None)
    return render(
        request,
        "rows.html",
        items=items,
        counts=counts,
        f=f,
        station=_one_station(f),
        **page_base(ctx, who),
    )


def _case_page(
    request: Request, ctx: Closer, who: Principal, case_id: str, status: int = 200, **extra: Any
) -> HTMLResponse:
    with ctx.runtime.db.session() as session:
        case = actions.load_visible(session, who, case_id, j=ctx.jurisdiction)
        view = actions.detail_view(ctx, session, who, case, utcnow())
    grid = ctx.jurisdiction.grids.get(view["grid_id"] or "")
    point = (view["lat"], view["lon"]) if view["lat"] is not None and view["lon"] is not None else None
    label = f"{grid.name(lang_of(request).lang) if grid else ''} {view['place_name'] or ''}".strip()
    targets = [
        s for s in ctx.jurisdiction.stations.values() if s.kind != "centre" and s.id != view["station_id"]
    ]
    return render(
        request,
        "case.html",
        status,
        c=view,
        svg=svg_map(grid.polygon if grid else None, point, label),
        targets=targets,
        return_reasons=RETURN_REASONS,
        reject_reasons=REJECT_REASONS,
        reporter=ctx.settings.public_base_url.rstrip("/"),
        done=request.query_params.get("done"),
        thanks_presets=list(PRESETS),
        thanks_max=MAX_THANKS_TEXT,
        may_thank=who.role in WRITERS,
        **extra,
        **page_base(ctx, who),
    )


@router.get("/console/cases/{case_id}")
async def case_page(request: Request, case_id: str) -> Response:
    """A case: map, photos, riders, timeline and the actions the user may take."""
    ctx = closer(request)
    who = await user(request)
    try:
        return await asyncio.to_thread(_case_page, request, ctx, who, case_id)
    except ApiError as exc:
        return render(
            request, "error.html", exc.status, message=lang_of(request)("not_found"), **page_base(ctx, who)
        )


async def _case_form(
    request: Request, case_id: str, work: Callable[[Closer, Principal], Awaitable[str]]
) -> Response:
    """One of the case page's forms: `work` checks the CSRF token and acts, naming what was done; then
    the case with `?done=`, or the case again with the error (an unknown case: the error page)."""
    ctx = closer(request)
    who = await user(request)
    try:
        done = await work(ctx, who)
    except ApiError as exc:
        if exc.status == 404:
            return render(
                request, "error.html", 404, message=lang_of(request)("not_found"), **page_base(ctx, who)
            )
        return await asyncio.to_thread(
            _case_page, request, ctx, who, case_id, exc.status, error=exc.message, error_code=exc.code
        )
    return RedirectResponse(f"/console/cases/{case_id}?done={done}", status_code=303)


FormModel = TypeVar("FormModel", bound=BaseModel)


def form_model(model: type[FormModel], values: Mapping[str, Any]) -> FormModel:
    """A form's values as `model`: 422 `invalid` naming the fields that do not fit it."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise invalid_form(exc) from exc


def _form_body(form: Mapping[str, Any], model: type[FormModel], names: tuple[str, ...]) -> FormModel:
    """A form's text fields `names` as `model`."""
    return form_model(model, {k: v for k, v in form.items() if k in names and isinstance(v, str)})


@router.post("/console/cases/{case_id}/act")
async def case_act(request: Request, case_id: str) -> Response:
    """Take an action from the case page's form (CSRF-checked), then show the case again."""

    async def work(ctx: Closer, who: Principal) -> str:
        await form_csrf(request, ctx, who)  # parsed once; read_transition reuses the parsed form
        body, photo = await read_transition(request)
        await asyncio.to_thread(actions.take_action, ctx, who, case_id, body, photo)
        return body.action

    return await _case_form(request, case_id, work)


@router.post("/console/cases/{case_id}/say")
async def case_say(request: Request, case_id: str) -> Response:
    """Write a note, a public update or a question from the case page's form (CSRF-checked)."""

    async def work(ctx: Closer, who: Principal) -> str:
        form = await form_csrf(request, ctx, who)
        body = _form_body(form, actions.MessageBody, ("kind", "text", "version"))
        await asyncio.to_thread(actions.say, ctx, who, case_id, body)
        return f"say_{body.kind}"

    return await _case_form(request, case_id, work)


@router.post("/console/cases/{case_id}/thanks")
async def case_thanks(request: Request, case_id: str) -> Response:
    """Thank the case's riders (致谢) from the case page's form (CSRF-checked)."""

    async def work(ctx: Closer, who: Principal) -> str:
        form = await form_csrf(request, ctx, who)
        body = _form_body(form, actions.ThanksBody, ("preset", "text"))
        await asyncio.to_thread(actions.thank, ctx, who, case_id, body)
        return "thank_riders"

    return await _case_form(request, case_id, work)


@router.post("/console/bulk-ack")
async def bulk_ack(request: Request) -> Response:
    """Sign for the selected cases (each at the version shown), then back to the queue."""
    ctx = closer(request)
    who = await user(request)
    form = await form_csrf(request, ctx, who)
    items: list[tuple[str, int]] = []
    for value in form.getlist("case"):
        if isinstance(value, UploadFile):
            continue
        case_id, _, version = value.partition(":")
        if case_id and version.isdigit():
            items.append((case_id[:40], int(version)))
    results = await asyncio.to_thread(actions.bulk_acknowledge, ctx, who, items[:100])
    ok = sum(1 for r in results if r["ok"])
    back = str(form.get("back") or "/console/queue")
    if not back.startswith("/console/queue"):
        back = "/console/queue"
    sep = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{sep}acked={ok}&failed={len(results) - ok}", status_code=303)

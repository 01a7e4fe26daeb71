"""The console's 通知 page: the notifier's failed deliveries for admins and supervisors, and a retry for
admins. The closer calls the notifier's API (GRIDLOOP_NOTIFIER_URL) with the session's own staff token:
the console session is a staff JWT signed with the shared key, so the notifier checks who may do what."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gridloop.tokens import Principal
from services.closer import notifierclient
from services.closer.console.routes import SignIn, form_csrf, lang_of, page_base, render, user
from services.closer.context import SESSION_COOKIE, Closer, closer

router = APIRouter(include_in_schema=False)

PATH = "/console/notifications"
OVERSEERS = ("admin", "supervisor", "city")


def _token(request: Request) -> str:
    """The session's staff token (user() has checked it), forwarded to the notifier as a bearer."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignIn()
    return token


def _refused_text(request: Request, exc: notifierclient.NotifierRefused) -> str:
    """The console's words for a refusal the notifier explains with a code."""
    t = lang_of(request)
    key = f"notify_{exc.code}"
    return t(key) if t(key) != key else f"{t('notify_refused')}: {exc.message}"


def _forbidden(request: Request, ctx: Closer, who: Principal, key: str) -> HTMLResponse:
    return render(request, "error.html", 403, message=lang_of(request)(key), **page_base(ctx, who))


async def _page(
    request: Request,
    ctx: Closer,
    who: Principal,
    status: int = 200,
    error: str | None = None,
) -> HTMLResponse:
    """The failed list as the notifier has it now; its being down is said in the page (503)."""
    items: list[notifierclient.FailedDelivery] = []
    down = False
    try:
        items = await notifierclient.failed(ctx.settings.notifier_base_url(), _token(request))
    except notifierclient.NotifierDown:
        down, status = True, 503
    except notifierclient.NotifierRefused as exc:
        error, status = _refused_text(request, exc), exc.status
    return render(
        request,
        "notifications.html",
        status,
        items=items,
        down=down,
        error=error,
        admin=who.role == "admin",
        retried=request.query_params.get("retried"),
        back_url=PATH,
        **page_base(ctx, who),
    )


@router.get(PATH)
async def notifications_page(request: Request) -> Response:
    """The failed notifications, newest first (admins and supervisors)."""
    ctx = closer(request)
    who = await user(request)
    if who.role not in OVERSEERS:
        return _forbidden(request, ctx, who, "forbidden")
    return await _page(request, ctx, who)


@router.post(PATH + "/{delivery_id}/retry")
async def retry_notification(request: Request, delivery_id: int) -> Response:
    """Send a failed notification again (admins, CSRF-checked), then back to the list."""
    ctx = closer(request)
    who = await user(request)
    await form_csrf(request, ctx, who)
    if who.role != "admin":
        return _forbidden(request, ctx, who, "notify_admins_only")
    try:
        await notifierclient.retry(ctx.settings.notifier_base_url(), _token(request), delivery_id)
    except notifierclient.NotifierDown:
        return await _page(request, ctx, who, 503)
    except notifierclient.NotifierRefused as exc:
        return await _page(request, ctx, who, exc.status, _refused_text(request, exc))
    return RedirectResponse(f"{PATH}?retried={delivery_id}", status_code=303)

"""The console's duty roster page (值班): who is on duty now and the coming shifts of a street; an
admin or the street's supervisor adds a shift, uploads a roster CSV or removes a shift (the same rules
and storage as the API, services/closer/api/duty.py)."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from gridloop.clock import utcnow
from gridloop.errors import ApiError
from gridloop.plumbing import RowId
from gridloop.tokens import Principal
from services.closer import duty, dutystore
from services.closer.api.duty import MAX_CSV, add_roster, may_edit
from services.closer.console.routes import form_csrf, page_base, render, user
from services.closer.context import Closer, closer
from services.closer.scope import visible_streets

router = APIRouter(include_in_schema=False)


def _home_street(ctx: Closer, who: Principal) -> str:
    """The street a signed-in account looks after (its first in scope), else the first street."""
    mine = visible_streets(who, ctx.jurisdiction)
    return mine[0] if mine else ctx.jurisdiction.default_street_id


@router.get("/console/duty")
async def duty_page(request: Request) -> Response:
    """A street's duty now and its shifts not over yet; the forms for those who may change them."""
    ctx = closer(request)
    who = await user(request)
    street = request.query_params.get("street") or _home_street(ctx, who)
    if street not in visible_streets(who, ctx.jurisdiction):  # another street's roster: the caller's own
        street = _home_street(ctx, who)
    try:
        may_edit(ctx, who, street)
        editor = True
    except ApiError:
        editor = False
    now = utcnow()

    def work() -> tuple[duty.OnDuty, list[duty.Shift]]:
        with ctx.runtime.db.session() as session:
            return dutystore.current(session, ctx.jurisdiction, street, now), dutystore.upcoming(
                session, street, now
            )

    on, shifts = await asyncio.to_thread(work)
    return render(
        request,
        "duty.html",
        street=street,
        on=on,
        shifts=shifts,
        editor=editor,
        columns=",".join(duty.CSV_COLUMNS),
        done=request.query_params.get("done"),
        problems=request.query_params.getlist("problem"),
        **page_base(ctx, who),
    )


def _back(street: str, done: str | None = None, problems: list[str] | None = None) -> RedirectResponse:
    query = f"street={quote(street)}"
    if done:
        query += f"&done={quote(done)}"
    for p in (problems or [])[:20]:
        query += f"&problem={quote(p)}"
    return RedirectResponse(f"/console/duty?{query}", status_code=303)


async def _change(request: Request, street: str) -> tuple[Closer, Principal, str]:
    """The caller may change this street's roster, and the CSV text their form carries."""
    ctx = closer(request)
    who = await user(request)
    form = await form_csrf(request, ctx, who)
    may_edit(ctx, who, street)
    upload = form.get("file")
    if isinstance(upload, UploadFile):
        data = await upload.read(MAX_CSV + 1)
        if len(data) > MAX_CSV:
            raise ApiError(413, "too_large", "A roster file is at most 1 MB.")
        return ctx, who, data.decode("utf-8", errors="replace")
    # one shift from the form's fields, as a one-row CSV: the same checks as a file (the street: the URL's)
    fields = [street] + [str(form.get(c) or "").strip().replace(",", " ") for c in duty.CSV_COLUMNS[1:]]
    return ctx, who, ",".join(duty.CSV_COLUMNS) + "\n" + ",".join(fields) + "\n"


@router.post("/console/duty/{street}/add")
async def add_shifts(request: Request, street: str) -> Response:
    """Add one shift (the form's fields) or a whole CSV (its file): all rows or none."""
    ctx, who, text = await _change(request, street)
    try:
        n = await add_roster(ctx, who, street, text)
    except duty.RosterError as exc:
        return _back(street, problems=exc.problems)
    return _back(street, done=str(n))


@router.post("/console/duty/{street}/remove/{shift_id}")
async def remove_shift(request: Request, street: str, shift_id: RowId) -> Response:
    """Remove one shift."""
    ctx = closer(request)
    who = await user(request)
    await form_csrf(request, ctx, who)
    may_edit(ctx, who, street)

    def work() -> bool:
        with ctx.runtime.db.session(write=True) as session:
            return dutystore.remove(session, street, shift_id)

    if not await asyncio.to_thread(work):
        raise ApiError(404, "not_found", "No such shift.")
    return _back(street, done="0")

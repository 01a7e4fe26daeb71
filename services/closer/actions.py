"""Taking an action on a case for a signed-in caller (shared by the API and the console)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from gridloop.clock import as_utc, utcnow
from gridloop.errors import ApiError
from gridloop.scope import can_see
from gridloop.tokens import Principal
from schemas.reference import Jurisdiction
from schemas.thanks import MAX_THANKS_TEXT, PRESETS
from services.closer import conversation, photostore, queue, scope, thanks
from services.closer.context import Closer
from services.closer.lifecycle import facts
from services.closer.models import Case, CaseMessage, CaseReport, CaseThanks, TimelineEntry
from services.closer.transitions import Actor, Refused, Request, allowed_actions, decide

log = logging.getLogger(__name__)


class TransitionBody(BaseModel):
    """POST /api/v1/cases/{id}/transitions (JSON, or the same fields as a multipart form with `photo`)."""

    action: str = Field(max_length=30, description="e.g. acknowledge, dispatch, resolve, return.")
    version: int = Field(ge=1, description="The case version the caller saw; a stale one is 409.")
    note: str | None = Field(None, max_length=1000)
    assignee: str | None = Field(None, max_length=60)
    to_station: str | None = Field(None, max_length=40)
    reason: str | None = Field(None, max_length=40)
    hours: float | None = Field(None, description="Working hours of an extension request.")

    def request(self, has_photo: bool) -> Request:
        """The table's view of this body."""
        return Request(
            self.action,
            note=self.note,
            assignee=self.assignee,
            to_station=self.to_station,
            reason=self.reason,
            hours=self.hours,
            has_photo=has_photo,
        )


def actor(who: Principal) -> Actor:
    """The table's actor for a signed-in role: a city account acts as a supervisor (of any street)."""
    return "supervisor" if who.role == "city" else who.role


def load_visible(
    session: Session, who: Principal, case_id: str, lock: bool = False, *, j: Jurisdiction
) -> Case:
    """A case the caller may see (services/closer/scope.py); another station's or another street's
    case is 404, not 403 (its existence is private)."""
    q = select(Case).where(Case.case_id == case_id)
    case = session.exec(q.with_for_update() if lock else q).first()
    if case is None or not can_see(who, j, case.station_id):
        raise ApiError(404, "not_found", "No such case.")
    return case


def refused(exc: Refused) -> ApiError:
    """The HTTP error of a refusal, naming the allowed actions."""
    return ApiError(exc.status, exc.code, exc.message, {"allowed": exc.allowed, "field": exc.field})


def check_fresh(ctx: Closer, who: Principal, case: Case, version: int) -> None:
    """409 `stale_version` when the caller saw an older version of the case than there is."""
    if version != case.version:
        allowed = allowed_actions(facts(case, ctx.jurisdiction), actor(who))
        raise ApiError(
            409,
            "stale_version",
            f"The case changed (version {case.version}, you sent {version}); reload it.",
            {"version": case.version, "status": case.status, "allowed": allowed},
        )


def _check_version(
    ctx: Closer, who: Principal, case: Case, body: TransitionBody, require_allowed: bool = False
) -> None:
    """409 `stale_version` for an old version; with `require_allowed`, also the table's refusal when
    the caller may not take the action now."""
    f = facts(case, ctx.jurisdiction)
    check_fresh(ctx, who, case, body.version)
    if require_allowed:
        try:  # the table's own answer (403, 409 naming the allowed actions, 422 for inputs)
            decide(f, actor(who), body.request(has_photo=True), ctx.lifecycle.stations)
        except Refused as exc:
            raise refused(exc) from exc


def take_action(
    ctx: Closer, who: Principal, case_id: str, body: TransitionBody, photo: bytes | None = None
) -> dict[str, Any]:
    """Check and apply one action in one transaction; a photo is decoded only once the caller may take
    the action (a read-only check first) and stored in the same transaction as the change."""
    if photo is not None and body.action != "resolve":
        raise ApiError(422, "invalid_input", "photo: only a resolve takes a photo.", {"field": "photo"})
    if photo:
        # decoding an image costs memory and time: only for a visible case, at the version shown,
        # in a state where this caller may resolve it (the transaction below checks again)
        with ctx.runtime.db.session() as session:
            _check_version(
                ctx, who, load_visible(session, who, case_id, j=ctx.jurisdiction), body, require_allowed=True
            )
    new = photostore.prepare(photo) if photo else None
    with ctx.runtime.db.session(write=True) as session:
        case = load_visible(session, who, case_id, lock=True, j=ctx.jurisdiction)
        _check_version(ctx, who, case, body)
        now = utcnow()
        try:
            ctx.lifecycle.transition(
                session,
                case,
                actor(who),
                who.username,
                body.request(new is not None),
                now,
                photo_ids=[new.photo_id] if new else None,
            )
        except Refused as exc:
            raise refused(exc) from exc
        if new is not None:
            photostore.add(session, new, case.case_id, who.username, now)
        view = detail_view(ctx, session, who, case, now, with_related=False)
    # committed: the lifecycle's metrics have run (rawsql.after_commit); wake the streams and relay
    ctx.changed()
    return view


class MessageBody(BaseModel):
    """POST /api/v1/cases/{id}/messages: an internal note, a public update or a question to the riders."""

    kind: str = Field(max_length=10, description="note (internal), public (an update riders see), question.")
    text: str = Field(
        max_length=4000, description="Plain text; note ≤ 2000, public and question ≤ 500 characters."
    )
    version: int = Field(ge=1, description="The case version the caller saw; a stale one is 409.")


def say(ctx: Closer, who: Principal, case_id: str, body: MessageBody) -> dict[str, Any]:
    """Write a staff entry on a case in one transaction (station scoping, role, text and version
    checked first); the entry and the case's new version."""
    with ctx.runtime.db.session(write=True) as session:
        case = load_visible(session, who, case_id, lock=True, j=ctx.jurisdiction)
        try:
            text = conversation.check_entry(body.kind, body.text, case.status, actor(who))
        except conversation.Unacceptable as exc:
            raise ApiError(exc.status, exc.code, exc.message, {"field": "text"}) from exc
        check_fresh(ctx, who, case, body.version)
        message = ctx.lifecycle.converse(session, case, body.kind, who.username, text, utcnow())
        answer = {"message": message_view(message, ctx.settings.public_base_url), "version": case.version}
    ctx.changed()
    return answer


def message_view(m: CaseMessage, reporter_url: str) -> dict[str, Any]:
    """A conversation entry as the API and console show it (a reply's photos are the reporter's)."""
    base = reporter_url.rstrip("/")
    return {
        "id": m.id,
        "kind": m.kind,
        "public": m.kind in ("public", "question"),
        "text": m.text,
        "actor": m.actor,
        "at": as_utc(m.at).isoformat(),
        "report_id": m.report_id,
        "question_id": m.question_id,
        "photo_urls": [f"{base}/api/v1/photos/{p}" for p in m.photo_ids.split(",") if p],
    }


def messages(session: Session, case_id: str, reporter_url: str) -> list[dict[str, Any]]:
    """A case's conversation, oldest first."""
    rows = session.exec(
        select(CaseMessage).where(CaseMessage.case_id == case_id).order_by(col(CaseMessage.id))
    )
    return [message_view(m, reporter_url) for m in rows]


def bulk_acknowledge(ctx: Closer, who: Principal, items: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Sign for several cases; each succeeds or fails on its own (version checked per case)."""
    results: list[dict[str, Any]] = []
    for case_id, version in items:
        try:
            view = take_action(ctx, who, case_id, TransitionBody(action="acknowledge", version=version))
            results.append({"case_id": case_id, "ok": True, "version": view["version"]})
        except ApiError as exc:
            results.append({"case_id": case_id, "ok": False, "code": exc.code, "message": exc.message})
    return results


def detail_view(
    ctx: Closer, session: Session, who: Principal, case: Case, now: Any, with_related: bool = True
) -> dict[str, Any]:
    """A case with the actions the caller may take; with reports, photos and timeline on request."""
    view = queue.case_view(case, now)
    view["allowed_actions"] = allowed_actions(facts(case, ctx.jurisdiction), actor(who))
    category = ctx.jurisdiction.categories.get(case.category)
    view["needs_after_photo"] = bool(category and category.needs_after_photo)
    if not with_related:
        return view
    reports = session.exec(
        select(CaseReport).where(CaseReport.case_id == case.case_id).order_by(col(CaseReport.submitted_at))
    ).all()
    view["reports"] = [
        {
            "report_id": r.report_id,
            "submitted_at": as_utc(r.submitted_at).isoformat(),
            # a short, stable rider tag: enough to tell riders apart, nothing that identifies one
            "rider": (r.rider_ref or r.report_id)[-6:],
            "description": r.description,
            "photo_ids": [p for p in r.photo_ids.split(",") if p],
            "fixed": r.fixed,
            "rating": r.rating,
            "comment": r.comment,
        }
        for r in reports
    ]
    view["report_ids"] = [r["report_id"] for r in view["reports"]]
    view["timeline"] = timeline(session, case.case_id)
    view["messages"] = messages(session, case.case_id, ctx.settings.public_base_url)
    view["thanks"] = thanks_view(session.get(CaseThanks, case.case_id))
    return view


def timeline(session: Session, case_id: str) -> list[dict[str, Any]]:
    """A case's history, oldest first."""
    rows = session.exec(
        select(TimelineEntry).where(TimelineEntry.case_id == case_id).order_by(col(TimelineEntry.id))
    )
    return [
        {
            "at": as_utc(r.at).isoformat(),
            "action": r.action,
            "status": r.status,
            "actor": r.actor,
            "note": r.note,
            "reason": r.reason,
            "station_id": r.station_id,
            "prev_station_id": r.prev_station_id,
            "version": r.version,
        }
        for r in rows
    ]


# --- issue 17: staff thank the riders (致谢) ------------------------------------------------------


class ThanksBody(BaseModel):
    """POST /api/v1/cases/{id}/thanks: a preset message and optional words of the sender's own."""

    preset: str = Field(max_length=20, description=f"One of {', '.join(PRESETS)} (schemas/thanks.py).")
    text: str = Field(
        "", max_length=1000, description=f"Optional plain text, ≤ {MAX_THANKS_TEXT} characters."
    )


def thanks_view(row: CaseThanks | None) -> dict[str, Any] | None:
    """A case's thank-you as the API and console show it (None before one is sent)."""
    if row is None:
        return None
    return {
        "preset": row.preset,
        "text": row.text,
        "actor": row.actor,
        "at": as_utc(row.at).isoformat(),
    }


def thank(ctx: Closer, who: Principal, case_id: str, body: ThanksBody) -> dict[str, Any]:
    """Thank a case's riders in one transaction (scope, role, words and once-per-case checked first);
    the thank-you and the case's new version."""
    with ctx.runtime.db.session(write=True) as session:
        case = session.exec(select(Case).where(Case.case_id == case_id).with_for_update()).first()
        if case is None or not scope.can_see(who, ctx.jurisdiction, case.station_id):
            raise ApiError(404, "not_found", "No such case.")
        already = session.get(CaseThanks, case_id) is not None
        try:
            text = thanks.check_thanks(body.preset, body.text, case.status, who.role, already)
        except conversation.Unacceptable as exc:
            # the field at fault, for a form to point at (a refusal of the case itself has none)
            field = {"invalid_preset": "preset", "text_too_long": "text"}.get(exc.code)
            raise ApiError(exc.status, exc.code, exc.message, {"field": field} if field else None) from exc
        row = ctx.lifecycle.thank(session, case, body.preset, text, who.username, utcnow())
        answer = {"thanks": thanks_view(row), "version": case.version}
    ctx.changed()
    return answer

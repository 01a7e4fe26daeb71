"""Riders' Web Push: a subscription belongs to one report, and pushes wait in a push outbox.

A subscription is stored only for a report whose credential the caller holds (the rider cookie
that sent it, or its tracking secret), and names a push service on the allowed list, over https: the
reporter never posts to a host a rider picked. Pushes are queued in the transaction of the event
that causes them (`queue_for_case`, `queue_for_report`), so none is lost if the process dies; one
replica sends them (services.reporter.push_sender). Payloads are small JSON: title, body, url.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, delete, func, select

from gridloop.clock import utcnow
from gridloop.errors import ApiError
from gridloop.rawsql import Raw, insert_row, statement
from services.reporter.models import PushMessage, PushSubscription
from services.reporter.vapid import b64url_decode
from services.reporter.wording import LANGS, t

MAX_ENDPOINT = 2048
"""Longest endpoint accepted (the push services' own are a few hundred characters)."""
MAX_PER_REPORT = 5
"""Browsers that may follow one report (a phone, a rider's second phone, a reinstall or two)."""
PUSH_BODY_BYTES = 4096
"""Largest subscribe or unsubscribe body (413 above): a subscription is a few hundred bytes."""
PUSH_TTL_SECONDS = 3 * 86_400
"""How long a push service keeps a push for a phone that is off: the rider's confirm window."""

PUSH_KINDS: dict[str, str] = {
    "case.acknowledged": "acknowledged",
    "case.resolved": "resolved",
    "case.closed": "closed",
}
"""The `cases.events` types that push to the case's riders, and the text each sends."""
PUSH_TEXT_KEYS: dict[str, str] = {
    "acknowledged": "push_acknowledged",
    "resolved": "push_resolved",
    "closed": "push_closed",
    "updated_public": "push_updated_public",
    "question_asked": "push_question_asked",
    "thanked": "push_thanked",  # issue 17: staff thanked the case's riders
}
"""The wording key (services.reporter.wording) of each kind's body."""
URL_ANCHORS: dict[str, str] = {
    "resolved": "#feedback",
    "updated_public": "#updates",
    "question_asked": "#reply",
    "thanked": "#thanks",
}
"""Where on the tracking page a push opens: a resolution the confirm step, a question the reply form."""


class PushKeys(BaseModel):
    """The browser's encryption keys of a subscription (RFC 8291)."""

    model_config = ConfigDict(extra="forbid")

    p256dh: str = Field(max_length=100, description="The browser's P-256 public key, base64url.")
    auth: str = Field(max_length=40, description="The 16-byte authentication secret, base64url.")

    @field_validator("p256dh")
    @classmethod
    def _point(cls, value: str) -> str:
        try:
            raw = b64url_decode(value)
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except (ValueError, TypeError) as exc:
            raise ValueError("p256dh is not a P-256 public key in base64url") from exc
        if len(raw) != 65:
            raise ValueError("p256dh is not an uncompressed P-256 point")
        return value

    @field_validator("auth")
    @classmethod
    def _secret(cls, value: str) -> str:
        try:
            raw = b64url_decode(value)
        except ValueError as exc:
            raise ValueError("auth is not base64url") from exc
        if len(raw) != 16:
            raise ValueError("auth is not 16 bytes")
        return value


class SubscriptionIn(BaseModel):
    """What `PushSubscription.toJSON()` gives in the browser, and the page's language."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(max_length=MAX_ENDPOINT, description="The push service URL (https).")
    expirationTime: int | None = Field(None, description="Ignored: an expired endpoint answers 404/410.")
    keys: PushKeys
    lang: str = Field("zh", description="The language of the pushes: zh or en.")

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("the endpoint must be an https URL")
        if parts.username or parts.password:
            raise ValueError("the endpoint must not carry a login")
        return value

    @field_validator("lang")
    @classmethod
    def _lang(cls, value: str) -> str:
        if value not in LANGS:
            raise ValueError(f"lang is one of {', '.join(LANGS)}")
        return value


class UnsubscribeIn(BaseModel):
    """Which browser stops following the report."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(max_length=MAX_ENDPOINT)


def host_allowed(endpoint: str, hosts: Sequence[str]) -> bool:
    """The endpoint's host is on the list (an entry with a leading dot allows its subdomains)."""
    host = (urlsplit(endpoint).hostname or "").lower()
    return any(host.endswith(h) if h.startswith(".") else host == h for h in hosts)


def endpoint_hash(endpoint: str) -> str:
    """The unique key of an endpoint."""
    return hashlib.sha256(endpoint.encode()).hexdigest()


def subscribe(session: Session, report_id: str, body: SubscriptionIn) -> tuple[PushSubscription, bool]:
    """Store the subscription for this report; (row, created). The same browser again refreshes its
    keys and language; more than MAX_PER_REPORT browsers is 409."""
    digest = endpoint_hash(body.endpoint)
    row = session.exec(
        select(PushSubscription).where(
            PushSubscription.report_id == report_id, PushSubscription.endpoint_hash == digest
        )
    ).first()
    if row is not None:
        row.p256dh, row.auth, row.lang = body.keys.p256dh, body.keys.auth, body.lang
        session.add(row)
        return row, False
    count = session.exec(
        select(func.count()).select_from(PushSubscription).where(PushSubscription.report_id == report_id)
    ).one()
    if count >= MAX_PER_REPORT:
        raise ApiError(
            409,
            "too_many_subscriptions",
            f"At most {MAX_PER_REPORT} browsers can follow one report.",
            {"limit": MAX_PER_REPORT},
        )
    row = PushSubscription(
        report_id=report_id,
        endpoint=body.endpoint,
        endpoint_hash=digest,
        p256dh=body.keys.p256dh,
        auth=body.keys.auth,
        lang=body.lang,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row, True


def forget(session: Session, subscription_ids: Sequence[int]) -> int:
    """Delete subscriptions and their queued pushes; the subscriptions deleted."""
    if not subscription_ids:
        return 0
    session.exec(delete(PushMessage).where(col(PushMessage.subscription_id).in_(subscription_ids)))
    result = session.exec(delete(PushSubscription).where(col(PushSubscription.id).in_(subscription_ids)))
    return int(result.rowcount)


def unsubscribe(session: Session, report_id: str, endpoint: str) -> int:
    """This browser stops following the report: its subscription and queued pushes go (0 or 1)."""
    ids = session.exec(
        select(PushSubscription.id).where(
            PushSubscription.report_id == report_id,
            PushSubscription.endpoint_hash == endpoint_hash(endpoint),
        )
    ).all()
    return forget(session, [i for i in ids if i is not None])


def payload(kind: str, report_id: str, lang: str) -> str:
    """The JSON a push carries: a title, a line of text, the page it opens. No personal data."""
    return json.dumps(
        {
            "title": t("push_title", lang),
            "body": t(PUSH_TEXT_KEYS[kind], lang),
            "url": f"/t/{report_id}{URL_ANCHORS.get(kind, '')}",
            "tag": f"gl-{report_id}",
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


# --- queueing, in the transaction of the event (plain SQL: it runs in the consumer's batch) -----------

_CASE_SUBSCRIBERS = statement(
    "SELECT s.id, s.report_id, s.lang FROM push_subscription s JOIN report r ON r.report_id = s.report_id "
    "WHERE r.case_id = :case AND r.status = :status ORDER BY s.id"
)
_CASE_SUBSCRIBERS_ANY = statement(
    "SELECT s.id, s.report_id, s.lang FROM push_subscription s JOIN report r ON r.report_id = s.report_id "
    "WHERE r.case_id = :case ORDER BY s.id"
)
_REPORT_SUBSCRIBERS = statement(
    "SELECT id, report_id, lang FROM push_subscription WHERE report_id = :report ORDER BY id"
)
_QUEUED = statement("SELECT 1 FROM push_message WHERE subscription_id = :sub AND event_id = :event")


def _queue(raw: Raw, rows: list[tuple[Any, ...]], event_id: str, kind: str, now: datetime) -> int:
    """One push per subscription for this event; an event already queued for it adds nothing."""
    queued = 0
    for sub_id, report_id, lang in rows:
        if raw.first(_QUEUED, {"sub": sub_id, "event": event_id}) is not None:
            continue
        insert_row(
            raw,
            "push_message",
            {
                "subscription_id": sub_id,
                "event_id": event_id,
                "kind": kind,
                "payload": payload(kind, report_id, lang),
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            },
        )
        queued += 1
    return queued


def queue_for_case(raw: Raw, case_id: str, event_id: str, kind: str, status: str | None = None) -> int:
    """Queue a push to every browser following a report of the case (with `status`: only reports
    that show it, so a late event that did not move a report pushes nothing); the pushes queued."""
    if status is None:
        rows = raw.all(_CASE_SUBSCRIBERS_ANY, {"case": case_id})
    else:
        rows = raw.all(_CASE_SUBSCRIBERS, {"case": case_id, "status": status})
    return _queue(raw, rows, event_id, kind, utcnow())


def queue_for_report(raw: Raw, report_id: str, event_id: str, kind: str) -> int:
    """Queue a push to every browser following one report; the pushes queued."""
    return _queue(raw, raw.all(_REPORT_SUBSCRIBERS, {"report": report_id}), event_id, kind, utcnow())

"""Accepting a report: check it, store it with its photos, timeline step and outbox event in the
caller's transaction (a group commit), and answer 202."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.outbox import add_event
from gridloop.photos import CleanPhoto
from gridloop.rawsql import Bind, Raw, after_commit, insert_row, record_type, statement, table_of
from gridloop.settings import derive_key
from gridloop.topics import REPORTS_SUBMITTED
from schemas import codes
from schemas.events import Location, ReportSubmitted, make_event
from schemas.reference import Jurisdiction
from services.reporter.credentials import PlainIn, http_url, tracking_hash, tracking_secret
from services.reporter.models import PLUMBING, Photo, Report, ReportEvent
from services.reporter.ratelimit import RateLimits, check, check_new_rider, limits_for
from services.reporter.readmodel import PLUS_ONE_STATUSES
from services.reporter.refusals import Refusal
from services.reporter.riders import rider_no_ref

SERVICE = "reporter"
PLATFORMS = ("饿了么", "美团", "顺丰", "京东", "达达", "滴滴", "其他")


class ReportIn(PlainIn):
    """What a rider (or a client) sends (every string stored plain: services.reporter.credentials)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: str | None = Field(None, max_length=20, description="The report code on the sign.")
    category: str = Field(min_length=1, max_length=40, description="Category id.")
    description: str = Field("", max_length=500, description="Optional words, plain text.")
    danger_now: bool = Field(False, description="An immediate danger.")
    platform: str | None = Field(None, max_length=20)
    rider_no: str | None = Field(
        None, max_length=40, description="The platform's rider number: stored only as a keyed pseudonym."
    )
    location: Location | None = Field(None, description="GPS or map pin, for reports without a code.")
    plus_one_case_id: str | None = Field(None, max_length=40, description="+1 on this open case.")
    website: str | None = Field(None, max_length=200, description="Honeypot: humans leave it empty.")
    via: Literal["scan", "manual"] | None = Field(
        None, description="How the code was entered on the page: scanned (QR) or typed by hand."
    )
    address: str | None = Field(None, max_length=200, description="A street address (Open311).")
    media_url: str | None = Field(None, max_length=500, description="A link to a photo (Open311).")

    @field_validator("media_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        """Only http(s) links: the URL is handed on to integrators."""
        return http_url(value)


class ReportAccepted(BaseModel):
    """The 202 answer."""

    report_id: str
    case_id: str | None
    status: str
    tracking_url: str


@dataclass
class IntakeContext:
    """Who is sending: the channel, the rider's pseudonymous reference, the caller's credential."""

    channel: Literal["scan", "manual", "open311"]
    rider_ref: str | None
    client_ref: str | None = None
    photos: Sequence[CleanPhoto] = field(default_factory=tuple)
    limits: RateLimits | None = None
    token: str | None = None
    """The rider's token (the tracking secret is derived from it); None for Open311 clients."""
    caller: str | None = None
    """Whose Idempotency-Keys these are: the rider reference, or the Open311 API key."""
    secret: str = ""
    """The service secret the tracking secret and its stored hash are keyed with."""


def rider_ref_for(token: str, secret: str) -> str:
    """A stable pseudonym for a rider token; the token itself is never stored."""
    return hmac.new(derive_key(secret, "rider-pseudonym"), token.encode(), hashlib.sha256).hexdigest()[:32]


def new_report_id() -> str:
    """A public report id (feeds, events, staff); never a credential (see the tracking secret)."""
    return "r_" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")


def new_photo_id() -> str:
    """A public, unguessable photo id."""
    return "p_" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")


def request_hash(body: ReportIn, photo_digests: Sequence[str] = (), number_ref: str | None = None) -> str:
    """A digest of the request (fields and photos as sent), to tell a retry from a different request;
    the rider number enters only as its keyed pseudonym (a plain digest of it could be guessed back)."""
    fields = body.model_dump(mode="json")
    if fields.get("rider_no") is not None:
        fields["rider_no"] = number_ref
    if photo_digests:
        fields["_photos"] = list(photo_digests)
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PlaceRef:
    """The place behind a report code, as intake needs it."""

    place_id: str
    name_zh: str
    lat: float
    lon: float
    grid_id: str | None


_CODE_PLACE = statement(
    "SELECT c.active, c.replaced_by, p.place_id, p.name_zh, p.lat, p.lon, p.grid_id, p.active "
    "FROM report_code c LEFT JOIN place p ON p.place_id = c.place_id WHERE c.code = :code"
)


def resolve_place(session: Bind, raw_code: str) -> tuple[str, PlaceRef]:
    """The place behind a code; mistyped, unknown and deactivated codes are clear errors."""
    try:
        code = codes.validate(raw_code)
    except codes.CodeError as exc:
        if exc.reason == "check":
            raise Refusal(
                "mistyped_code", 422, "check_the_code", "请核对报告码 — check the code: it has a typo."
            ) from exc
        raise Refusal("bad_code", 422, "bad_code", "This is not a report code.") from exc
    row = Raw(session).first(_CODE_PLACE, {"code": code})
    if row is None:
        raise Refusal("unknown_code", 404, "unknown_code", "No place has this report code.")
    code_active, replaced_by, place_id, name_zh, lat, lon, grid_id, place_active = row
    if not code_active:
        raise Refusal(
            "code_deactivated",
            410,
            "code_deactivated",
            "This report code is no longer in use.",
            {"replaced_by": replaced_by},
        )
    if place_id is None or not place_active:
        raise Refusal("unknown_code", 404, "unknown_code", "No place has this report code.")
    return code, PlaceRef(place_id, name_zh, lat, lon, grid_id)


REPORT = table_of(Report)
PHOTO = table_of(Photo)
REPORT_EVENT = table_of(ReportEvent)
ReportRow = record_type(REPORT)
"""A `report` row being accepted, built by column name (no ORM object on the hot path)."""


def event_description(report: Any) -> str:
    """The rider's words, with the Open311 address appended when there is room."""
    if not report.address:
        return report.description
    return (report.description + "\n地址：" + report.address).strip()[:500]


def submitted_event(
    report: Any, place_name: str | None, event_time: Any, photo_ids: Sequence[str] = ()
) -> Any:
    """The `report.submitted` event of a stored report (same id every time it is built)."""
    data = ReportSubmitted(
        report_id=report.report_id,
        channel=report.channel,
        category=report.category,
        code=report.code,
        place_id=report.place_id,
        place_name=place_name,
        grid_id=report.grid_id,
        location=Location(lat=report.lat, lon=report.lon)
        if report.lat is not None and report.lon is not None
        else None,
        description=event_description(report),
        danger_now=report.danger_now,
        photo_ids=list(photo_ids),
        rider_ref=report.rider_ref,
        platform=report.platform,
        submitted_at=report.submitted_at,
        plus_one_case_id=report.plus_one_case_id,
    )
    return make_event(
        "report.submitted",
        data,
        source=SERVICE,
        subject=report.report_id,
        time=event_time,
        event_id=report.submitted_event_id,
    )


_BY_KEY = statement(
    "SELECT report_id, request_hash, case_id, status, rider_ref FROM report WHERE idempotency_key = :key"
)
_RIDER_SEEN = statement("SELECT 1 FROM report WHERE rider_ref = :rider LIMIT 1")
_PLUS_ONE_CASE = statement("SELECT status, category, place_id FROM case_view WHERE case_id = :case")
_PLUS_ONE_REPORTS = statement(
    "SELECT place_id, lat, lon FROM report WHERE case_id = :case ORDER BY submitted_at LIMIT 200"
)


def scoped_key(caller: str | None, key: str) -> str:
    """An Idempotency-Key as stored: scoped to its caller, so another caller's same key is a new report."""
    return hashlib.sha256(f"{caller or ''}\x00{key}".encode()).hexdigest()


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(a)))


def check_plus_one(
    raw: Raw,
    case_id: str,
    category: str,
    place_id: str | None,
    point: tuple[float, float] | None,
    radius_m: float,
) -> None:
    """A '+1' joins an open case of the same category at the same place or within the category's
    duplicate radius of the report; otherwise 422 `plus_one_mismatch`."""
    case = raw.first(_PLUS_ONE_CASE, {"case": case_id})
    fits = False
    if case is not None and case[0] in PLUS_ONE_STATUSES and case[1] == category:
        rows = raw.all(_PLUS_ONE_REPORTS, {"case": case_id})
        same_place = place_id is not None and (case[2] == place_id or any(r[0] == place_id for r in rows))
        near = point is not None and any(
            r[1] is not None and r[2] is not None and distance_m(point[0], point[1], r[1], r[2]) <= radius_m
            for r in rows
        )
        fits = same_place or near
    if not fits:
        raise Refusal(
            "plus_one_mismatch",
            422,
            "plus_one_mismatch",
            "This '+1' is not an open case of the same kind here.",
            {"case_id": case_id},
        )


def accept_report(
    session: Bind,
    body: ReportIn,
    ctx: IntakeContext,
    jurisdiction: Jurisdiction,
    idempotency_key: str | None,
    base_url: str,
) -> tuple[ReportAccepted, bool]:
    """Store a report and its event in the caller's transaction; returns (answer, created)."""
    number_ref = rider_no_ref(body.platform, body.rider_no, ctx.secret)
    digest = request_hash(body, [p.upload_sha256 for p in ctx.photos], number_ref)
    raw = Raw(session)
    stored_key = scoped_key(ctx.caller or ctx.rider_ref, idempotency_key) if idempotency_key else None
    if stored_key:
        previous = raw.first(_BY_KEY, {"key": stored_key})
        if previous is not None:
            report_id, previous_hash, case_id, status, rider_ref = previous
            if previous_hash != digest:
                raise Refusal(
                    "idempotency_conflict",
                    409,
                    "idempotency_key_reused",
                    "This Idempotency-Key was used for a different report.",
                )
            # the key is the caller's own; the link's secret only ever goes back to the same rider
            same_rider = ctx.token is not None and rider_ref is not None and rider_ref == ctx.rider_ref
            key = tracking_secret(ctx.token, report_id, ctx.secret) if same_rider and ctx.token else None
            return _answer(report_id, case_id, status, base_url, key), False
    if body.website:
        raise Refusal("honeypot", 422, "invalid", "The request is not valid.")
    if body.category not in jurisdiction.categories:
        raise Refusal(
            "unknown_category",
            422,
            "unknown_category",
            f"Unknown category {body.category!r}.",
            {"known": sorted(jurisdiction.categories)},
        )
    if body.platform is not None and body.platform not in PLATFORMS:
        raise Refusal("bad_platform", 422, "invalid", "Unknown platform.", {"known": list(PLATFORMS)})
    place: PlaceRef | None = None
    code: str | None = None
    if body.code:
        code, place = resolve_place(session, body.code)
    elif body.location is None and not (ctx.channel == "open311" and body.address):
        raise Refusal(
            "no_location", 422, "code_or_location_required", "Give the report code, or your location."
        )
    lat = body.location.lat if body.location else (place.lat if place else None)
    lon = body.location.lon if body.location else (place.lon if place else None)
    if body.plus_one_case_id:
        check_plus_one(
            raw,
            body.plus_one_case_id,
            body.category,
            place.place_id if place else None,
            (lat, lon) if lat is not None and lon is not None else None,
            jurisdiction.categories[body.category].dup_radius_m,
        )
    # a rider token never seen on a report is a new rider (a page may have issued it long ago)
    new_rider = (
        ctx.channel != "open311"
        and ctx.rider_ref is not None
        and raw.first(_RIDER_SEEN, {"rider": ctx.rider_ref}) is None
    )
    now = utcnow()
    if ctx.limits is not None:
        limits = limits_for(ctx.limits, code, ctx.rider_ref, ctx.client_ref)
        verdict = check(session, ctx.limits, limits, now)
        if verdict.allowed and new_rider:
            verdict = check_new_rider(session, ctx.limits, ctx.client_ref, now)
        if not verdict.allowed:
            raise Refusal(
                "rate_limited",
                429,
                "rate_limited",
                f"Too many reports (per {verdict.limit}); try again in {verdict.retry_after} s.",
                {"limit": verdict.limit, "retry_after": verdict.retry_after},
                headers={"Retry-After": str(verdict.retry_after)},
            )
    if ctx.channel == "open311":
        channel: Literal["scan", "manual", "open311"] = "open311"
    elif place is not None and body.via != "manual":
        channel = "scan"
    else:
        channel = "manual"
    report_id = new_report_id()
    # Open311 clients read their requests through Open311: their secret is made and thrown away
    key = tracking_secret(ctx.token or secrets.token_urlsafe(18), report_id, ctx.secret)
    report = ReportRow(
        report_id=report_id,
        idempotency_key=stored_key,
        request_hash=digest,
        channel=channel,
        category=body.category,
        code=code,
        place_id=place.place_id if place else None,
        grid_id=place.grid_id if place else None,
        lat=lat,
        lon=lon,
        description=body.description,
        danger_now=body.danger_now,
        platform=body.platform,
        rider_no_ref=number_ref,
        rider_ref=ctx.rider_ref,
        plus_one_case_id=body.plus_one_case_id,
        submitted_at=now,
        submitted_event_id="",
        last_published_at=now,
        status="received",
        status_at=now,
        client_ref=ctx.client_ref,
        address=body.address,
        media_url=body.media_url,
        case_version=0,
        tracking_hash=tracking_hash(key, ctx.secret),
        new_rider=new_rider,
    )
    photo_ids = [new_photo_id() for _ in ctx.photos]
    event = submitted_event(report, place.name_zh if place else None, now, photo_ids)
    report = report._replace(submitted_event_id=event.id)
    # plain SQL on the driver: the ORM's unit of work was the largest cost of intake
    insert_row(raw, REPORT, report._asdict())
    for position, (photo_id, photo) in enumerate(zip(photo_ids, ctx.photos, strict=True)):
        insert_row(
            raw,
            PHOTO,
            {
                "photo_id": photo_id,
                "report_id": report.report_id,
                "position": position,
                "content_type": "image/jpeg",
                "width": photo.width,
                "height": photo.height,
                "size": len(photo.data),
                "data": photo.data,
                "created_at": now,
            },
        )
    insert_row(
        raw,
        REPORT_EVENT,
        {"report_id": report.report_id, "status": "received", "action": "submitted", "at": now},
    )
    add_event(session, PLUMBING, REPORTS_SUBMITTED, report.grid_id or "none", event)
    # counted once stored: a group commit that runs the batch a second time must not count it twice
    counter = metrics.reports_received.labels(report.category, report.channel)
    after_commit(session, counter.inc)
    return _answer(
        report.report_id, report.case_id, report.status, base_url, key if ctx.token else None
    ), True


def tracking_url(base_url: str, report_id: str, key: str | None = None) -> str:
    """A report's tracking page; with its secret, the link that unlocks the owner's view."""
    url = f"{base_url.rstrip('/')}/t/{report_id}"
    return f"{url}?k={key}" if key else url


def _answer(
    report_id: str, case_id: str | None, status: str, base_url: str, key: str | None
) -> ReportAccepted:
    return ReportAccepted(
        report_id=report_id,
        case_id=case_id,
        status=status,
        tracking_url=tracking_url(base_url, report_id, key),
    )

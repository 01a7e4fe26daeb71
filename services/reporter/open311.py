"""Open311 GeoReport v2: how reports map to service requests, in JSON and XML (routes: api/open311.py).

Mapping: a service is a category (service_code = category id); a service request is a report
(service_request_id = report id, issued at once, so POST answers with it and a token is simply
that id); `status` is open/closed from the case state; `expected_datetime` is the case's resolve
deadline (from `case.opened`); `agency_responsible` is the grid station. Personal fields a client
may send (email, names, phone) are not stored: riders stay anonymous here too.

The feed is public (no key needed to read), so it carries nothing a rider typed or photographed:
`description` is empty, `address` is the place's name or an integrator's address_string (never a
rider's), and `media_url` is never a rider's photo (only an integrator's own http(s) link sent with
its request); what staff publish (the resolution or rejection note) shows in
`status_notes`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

from fastapi.responses import Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

from gridloop.clock import as_utc, utcnow
from schemas.cases import FINAL_STATUSES, CaseStatus
from schemas.events import Location
from schemas.reference import Jurisdiction
from services.reporter.models import ApiKey, CaseView, Place, Report
from services.reporter.reports import ReportIn
from services.reporter.wording import status_text

SPEC = "http://wiki.open311.org/GeoReport_v2"
CONTENT_TYPES = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
DEFAULT_DAYS = 90
MAX_RESULTS = 1000
# XML element names of list items, by the name of the list
ITEM_TAGS = {
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
}


class Open311Error(Exception):
    """An error answered as the spec shows: a list of {code, description}."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


# characters XML 1.0 cannot carry: one stored before the input rules were strict must not break the feed
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


# --- shaping ---------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return w3c(value)
    return _NOT_XML.sub("", str(value))


def _fill(element: ET.Element, value: Any) -> None:
    """Write a JSON-like value into an XML element (lists as repeated child elements)."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            _fill(ET.SubElement(element, key), child)
    elif isinstance(value, list):
        tag = ITEM_TAGS.get(element.tag, "item")
        for child in value:
            _fill(ET.SubElement(element, tag), child)
    else:
        element.text = _text(value)


def to_xml(root: str, value: Any) -> bytes:
    """A document with the XML declaration and UTF-8, as the spec asks (text is escaped)."""
    element = ET.Element(root)
    _fill(element, value)
    body: bytes = ET.tostring(element, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


def render(fmt: str, root: str, value: Any, status: int = 200) -> Response:
    """Answer in the requested format: JSON as is, XML under `root`."""
    if fmt == "xml":
        return Response(to_xml(root, value), status_code=status, media_type=CONTENT_TYPES["xml"])
    body = json.dumps(value, ensure_ascii=False, default=_text).encode()
    return Response(body, status_code=status, media_type=CONTENT_TYPES["json"])


def error_response(fmt: str, status: int, description: str) -> Response:
    """The spec's error shape: [{code, description}] / <errors><error>…</error></errors>."""
    return render(
        fmt if fmt in CONTENT_TYPES else "json",
        "errors",
        [{"code": status, "description": description}],
        status,
    )


def w3c(value: datetime) -> str:
    """A W3C date-time with its UTC offset."""
    return as_utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_w3c(value: str, name: str) -> datetime:
    """A W3C/ISO 8601 date or date-time from a query (400 when malformed or outside 1970 to 9000;
    naive means UTC)."""
    try:
        parsed = as_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "+")))
    except (ValueError, OverflowError) as exc:
        raise Open311Error(400, f"{name} is not a W3C date-time (e.g. 2010-01-01T00:00:00Z)") from exc
    if not EARLIEST <= parsed <= LATEST:
        raise Open311Error(400, f"{name} must be between 1970 and 9000")
    return parsed


def service_list(j: Jurisdiction) -> list[dict[str, Any]]:
    """The categories as Open311 services."""
    return [
        {
            "service_code": c.id,
            "service_name": c.name_zh,
            "description": f"{c.name_zh} ({c.name_en})",
            "metadata": True,
            "type": "realtime",
            "keywords": f"{c.name_en.lower()}, {c.id}",
            "group": "danger" if c.default_priority in ("high", "urgent") else "maintenance",
        }
        for c in j.categories.values()
    ]


def service_definition(j: Jurisdiction, code: str) -> dict[str, Any]:
    """The one attribute every service takes: is there an immediate danger."""
    if code not in j.categories:
        raise Open311Error(404, f"service_code {code} was not found")
    return {
        "service_code": code,
        "attributes": [
            {
                "variable": True,
                "code": "danger_now",
                "datatype": "singlevaluelist",
                "required": False,
                "datatype_description": "yes or no",
                "order": 1,
                "description": "有危险，需要马上处理吗？ Is there an immediate danger?",
                "values": [{"key": "yes", "name": "是 Yes"}, {"key": "no", "name": "否 No"}],
            }
        ],
    }


def public_media_url(report: Report) -> str | None:
    """The only media_url the public feed shows: an integrator's own http(s) link, never a rider's photo."""
    url = report.media_url
    if report.channel != "open311" or not url or not url.lower().startswith(("http://", "https://")):
        return None
    return url


def request_json(
    report: Report, view: CaseView | None, place: Place | None, j: Jurisdiction
) -> dict[str, Any]:
    """One report as a public Open311 service request (no rider words or photos: see the module)."""
    category = j.categories.get(report.category)
    station_id = view.station_id if view else (place.station_id if place else None)
    station = j.stations.get(station_id) if station_id else None
    notes = status_text(report.status, "zh")
    if view is not None and view.status_note and report.status in FINAL_STATUSES | {CaseStatus.RESOLVED}:
        notes = f"{notes}：{view.status_note}"
    return {
        "service_request_id": report.report_id,
        "status": "closed" if report.status in FINAL_STATUSES else "open",
        "status_notes": notes,
        "service_name": category.name_zh if category else report.category,
        "service_code": report.category,
        "description": "",
        "agency_responsible": station.name_zh if station else None,
        "service_notice": None,
        "requested_datetime": w3c(report.submitted_at),
        "updated_datetime": w3c(report.status_at or report.submitted_at),
        "expected_datetime": w3c(view.resolve_due) if view and view.resolve_due else None,
        # an integrator's address_string is where, like lat/long; a rider's typed address stays private
        "address": (report.address if report.channel == "open311" else None)
        or (place.name_zh if place else None),
        "address_id": report.place_id,
        "zipcode": None,
        "lat": report.lat,
        "long": report.lon,
        "media_url": public_media_url(report),
    }


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def query_requests(session: Session, params: Mapping[str, str], j: Jurisdiction) -> list[dict[str, Any]]:
    """GET requests with the spec's filters (ids override the rest; 90 days and 1000 results by default)."""
    query = select(Report)
    ids = _csv(params.get("service_request_id"))
    if ids:
        query = query.where(col(Report.report_id).in_(ids[:MAX_RESULTS]))
    else:
        codes = _csv(params.get("service_code"))
        if codes:
            query = query.where(col(Report.category).in_(codes))
        end = parse_w3c(params["end_date"], "end_date") if params.get("end_date") else utcnow()
        start = (
            parse_w3c(params["start_date"], "start_date")
            if params.get("start_date")
            else end - timedelta(days=DEFAULT_DAYS)
        )
        if start > end:
            raise Open311Error(400, "start_date is after end_date")
        query = query.where(col(Report.submitted_at) >= start, col(Report.submitted_at) <= end)
        statuses = {s.lower() for s in _csv(params.get("status"))}
        if statuses - {"open", "closed"}:
            raise Open311Error(400, "status must be open, closed, or both separated by a comma")
        if statuses == {"open"}:
            query = query.where(col(Report.status).not_in(sorted(FINAL_STATUSES)))
        elif statuses == {"closed"}:
            query = query.where(col(Report.status).in_(sorted(FINAL_STATUSES)))
    reports = list(session.exec(query.order_by(col(Report.submitted_at).desc()).limit(MAX_RESULTS)).all())
    return shape_requests(session, reports, j)


def shape_requests(session: Session, reports: Iterable[Report], j: Jurisdiction) -> list[dict[str, Any]]:
    """Reports as service requests, with their cases and places in two queries."""
    reports = list(reports)
    case_ids = {r.case_id for r in reports if r.case_id}
    place_ids = {r.place_id for r in reports if r.place_id}
    views = {v.case_id: v for v in session.exec(select(CaseView).where(col(CaseView.case_id).in_(case_ids)))}
    places = {p.place_id: p for p in session.exec(select(Place).where(col(Place.place_id).in_(place_ids)))}
    return [
        request_json(
            r,
            views.get(r.case_id) if r.case_id else None,
            places.get(r.place_id) if r.place_id else None,
            j,
        )
        for r in reports
    ]


def key_digest(api_key: str) -> str:
    """How an API key is stored."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A new key id and the secret key itself (shown once)."""
    return "k_" + secrets.token_hex(4), "o311_" + secrets.token_urlsafe(24)


def check_api_key(session: Session, api_key: str | None) -> ApiKey:
    """The active key, or a 403 the spec's way."""
    if not api_key:
        raise Open311Error(403, "api_key was not provided")
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == key_digest(api_key))).first()
    if row is None or row.revoked_at is not None:
        raise Open311Error(403, "Invalid api_key received -- can't proceed with create_request.")
    return row


def report_from_form(form: Mapping[str, str], j: Jurisdiction) -> ReportIn:
    """A POST requests form as a report (400 for what the spec requires and is missing)."""
    code = (form.get("service_code") or "").strip()
    if not code:
        raise Open311Error(400, "service_code was not provided")
    if code not in j.categories:
        raise Open311Error(404, f"service_code {code} was not found")
    lat, lon = form.get("lat"), form.get("long")
    location = None
    if lat or lon:
        try:
            location = Location(lat=float(lat or ""), lon=float(lon or ""))
        except (ValueError, ValidationError) as exc:
            raise Open311Error(400, "lat and long must both be decimal degrees (WGS84)") from exc
    address = (form.get("address_string") or "").strip() or None
    if location is None and not address and not form.get("address_id"):
        raise Open311Error(400, "a location is required: lat and long, address_string or address_id")
    danger = (form.get("attribute[danger_now]") or "").strip().lower() in ("yes", "true", "1")
    try:
        return ReportIn(
            category=code,
            description=form.get("description") or "",
            danger_now=danger,
            location=location,
            address=address or (form.get("address_id") or None),
            media_url=(form.get("media_url") or "").strip() or None,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise Open311Error(400, f"{field}: {first['msg']}") from exc

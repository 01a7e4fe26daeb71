"""Helpers for the reporter's process-level tests: photos, reports, waiting for cases, case events."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from kafka import KafkaProducer
from PIL import Image

from gridloop.stack import Stack
from gridloop.topics import CASES_EVENTS
from schemas.events import CaseTransitioned, make_event
from tests.support.stacks import wait_for

# rate limits no test reaches, for stacks whose tests post many reports from one address
LOOSE_LIMITS = {
    "GRIDLOOP_RATE_PER_CODE": "100000",
    "GRIDLOOP_RATE_PER_RIDER": "100000",
    "GRIDLOOP_RATE_PER_ADDRESS": "100000",
}


def make_jpeg(width: int = 2400, height: int = 1800, gps: bool = True) -> bytes:
    """A camera-like JPEG with EXIF (camera make, GPS position, orientation)."""
    image = Image.new("RGB", (width, height), (200, 60, 40))
    for x in range(0, width, 97):
        image.paste((20, 20, 20), (x, 0, x + 9, height))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0112] = 1  # Orientation
    if gps:
        exif[0x8825] = {1: "N", 2: (31.0, 20.0, 2.0), 3: "E", 4: (121.0, 30.0, 40.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92, exif=exif)
    return out.getvalue()


def report(
    base: str,
    code: str | None,
    category: str = "manhole_cover",
    key: str | None = None,
    client: httpx.Client | None = None,
    photos: list[tuple[str, bytes, str]] | None = None,
    **fields: Any,
) -> httpx.Response:
    """POST a report: JSON without photos, multipart with them."""
    headers = {"Idempotency-Key": key or str(uuid.uuid4())}
    http = client or httpx.Client(timeout=30)
    body = {"category": category, **fields}
    if code is not None:
        body["code"] = code
    if photos is None:
        return http.post(f"{base}/api/v1/reports", json=body, headers=headers)
    form = {k: (json.dumps(v) if isinstance(v, bool) else str(v)) for k, v in body.items()}
    files = [("photos", p) for p in photos]
    return http.post(f"{base}/api/v1/reports", data=form, files=files, headers=headers)


def case_of(base: str, report_id: str, timeout: float = 40) -> str:
    """Wait until the reporter's read model gives the report a case; return the case id."""

    def check() -> str | None:
        found: str | None = httpx.get(f"{base}/api/v1/reports/{report_id}").json()["case_id"]
        return found

    case_id: str = wait_for(check, timeout=timeout, every=0.3, what=f"a case for {report_id}")
    return case_id


def status_of(base: str, report_id: str) -> str:
    """The public status of a report."""
    return str(httpx.get(f"{base}/api/v1/reports/{report_id}").json()["status"])


def publish_case_events(stack: Stack, case_id: str, steps: list[tuple[str, str, int]], **extra: Any) -> None:
    """Publish case transitions as the closer would: (event name, status after, version)."""
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    try:
        for name, status, version in steps:
            data = CaseTransitioned(
                case_id=case_id,
                action=name,
                status=status,
                station_id=extra.get("station_id", "yh-s1"),
                version=version,
                at=datetime.now(UTC),
                note=extra.get("note"),
                after_photo_ids=extra.get("after_photo_ids", []) if name == "resolved" else [],
            )
            event = make_event(f"case.{name}", data, source="closer", subject=case_id, time=data.at)
            producer.send(
                stack.settings.topic_prefix + CASES_EVENTS,
                key=case_id.encode(),
                value=event.model_dump_json().encode(),
            ).get(timeout=30)
    finally:
        producer.close()

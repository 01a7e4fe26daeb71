"""Helpers for the reporter's tests: photos, reports, waiting for cases, case events, the app in process."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from kafka import KafkaProducer
from PIL import Image

from gridloop.settings import Settings
from gridloop.stack import Stack
from gridloop.tokens import ALGORITHM, ISSUER
from gridloop.topics import CASES_EVENTS
from schemas.events import CaseTransitioned, EventData, make_event
from schemas.reference import Place
from tests.support.stacks import wait_for

# rate limits no test reaches, for stacks whose tests post many reports from one address
LOOSE_LIMITS = {
    "GRIDLOOP_RATE_PER_CODE": "100000",
    "GRIDLOOP_RATE_PER_RIDER": "100000",
    "GRIDLOOP_RATE_PER_ADDRESS": "100000",
    "GRIDLOOP_RATE_NEW_RIDERS_PER_ADDRESS": "100000",
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


# --- the reporter app in process (TestClient), for the security tests ------------------------------

REPORTER_SECRET = "test-signing-key-" + "y" * 32


def reporter_app(db_url: str, var_dir: Path, **settings: Any) -> tuple[FastAPI, list[Place]]:
    """The real reporter app on a migrated database with the demo places (no broker reachable)."""
    from gridloop import migrate
    from services.reporter import cli as reporter_cli
    from services.reporter.app import build

    config = Settings(
        var_dir=var_dir,
        reporter_database_url=db_url,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        jwt_secret=REPORTER_SECRET,
        **settings,
    )
    migrate.upgrade("reporter", db_url, secret=REPORTER_SECRET)
    app = build(config)
    places = reporter_cli.load_places(app.state.reporter.runtime.db, app.state.jurisdiction)
    return app, places


def apply_event(app: FastAPI, name: str, data: EventData, key: str) -> None:
    """Apply one event through the reporter's Kafka handlers, as its consumer would."""
    from gridloop.consumer import Incoming
    from services.reporter.handlers import handlers

    at = getattr(data, "at", None) or datetime.now(UTC)
    item = Incoming(make_event(name, data, source="closer", subject=key, time=at), data, "x", 0, 0, key)
    with app.state.reporter.runtime.db.session(write=True) as session:
        handlers()[name](session, item)


def staff_token(
    username: str,
    role: str = "admin",
    version: int = 0,
    secret: str = REPORTER_SECRET,
    streets: list[str] | None = None,
) -> str:
    """A staff bearer token as the closer issues it, with the account's token version (claim `ver`)
    and, given, its streets (claim `streets`)."""
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, object] = {
        "sub": username,
        "role": role,
        "stations": [],
        "iat": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "iss": ISSUER,
        "ver": version,
    }
    if streets is not None:
        claims["streets"] = streets
    return str(jwt.encode(claims, secret, algorithm=ALGORITHM))

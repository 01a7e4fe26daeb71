"""The four services built in process for fuzzing and hostile inputs: SQLite, demo data, no broker.

`Apps` holds the reporter, router, closer and notifier on migrated SQLite databases sharing one
signing key, the demo places and codes (reporter) and staff accounts (closer), a few reports and
cases to find, the notifier's failed deliveries of those cases (sent through an offline send), and an
admin's bearer token from the closer's real login (the reporter's admin routes take the same tokens).
`envelope_problems` is the contract's error shape as a check, used by the schemathesis run and the
hostile-inputs table alike.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from gridloop import demo, migrate
from gridloop.consumer import Incoming
from gridloop.settings import Settings
from schemas.events import Location, ReportRouted, make_event
from schemas.reference import Place
from services.closer.app import build as build_closer
from services.closer.cli import load_demo_staff
from services.notifier.app import build as build_notifier
from services.notifier.config import NotifierConfig
from services.reporter import cli as reporter_cli
from services.reporter.app import build as build_reporter
from services.reporter.config import RateLimits
from services.router.app import build as build_router
from tests.support.notifier import Fed, opened

SECRET = "fuzz-signing-key-" + "f" * 32
# the broker is never contacted: the apps' lifespans are not run (port 9 is discard)
NO_BROKER = "127.0.0.1:9"
OFFLINE = "json://127.0.0.1:9/fuzz"
"""The notifier's fallback channel (never reached: its send is offline_send)."""
SUBMITTED = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Any, Any], Awaitable[None]]


def without_lifespan(app: FastAPI) -> ASGI:
    """The app with its lifespan turned away, so no relay, consumer or broker task starts: the HTTP
    routes answer from the database alone, as they do under an unentered TestClient."""

    async def asgi(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return  # refused before asking for a message: the ASGI way of saying "no lifespan"
        await app(scope, receive, send)

    return asgi


@dataclass
class Apps:
    """The four services on one signing key, with demo data and an admin token."""

    reporter: FastAPI
    router: FastAPI
    closer: FastAPI
    notifier: FastAPI
    places: list[Place]
    admin_token: str
    case_ids: list[str] = field(default_factory=list)

    @property
    def admin(self) -> dict[str, str]:
        """Bearer headers of the demo admin."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def dispose(self) -> None:
        """Close the database pools."""
        for app in (self.reporter, self.router, self.closer, self.notifier):
            app.state.runtime.db.dispose()


def login(closer: FastAPI, username: str) -> str:
    """A demo account's bearer token from the closer's login route."""
    client = TestClient(closer, base_url="https://testserver")
    r = client.post("/api/v1/auth/token", data={"username": username, "password": demo.DEMO_PASSWORD})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def open_case(closer: FastAPI, station: str = "yh-s1", category: str = "manhole_cover") -> str:
    """Feed the closer's intake one router decision (as its consumer would); returns the case id."""
    case_id = "C" + uuid.uuid4().hex[:10].upper()
    data = ReportRouted(
        report_id="R" + uuid.uuid4().hex[:10],
        case_id=case_id,
        decision="open",
        category=category,
        station_id=station,
        grid_id="yh-g1",
        location=Location(lat=31.335, lon=121.515),
        place_name="开鲁新村一村北门",
        description="井盖破损",
        rider_ref="rider-" + uuid.uuid4().hex[:6],
        submitted_at=SUBMITTED,
        photo_ids=[],
    )
    event = make_event("report.routed", data, source="router", subject=case_id, time=SUBMITTED)
    with closer.state.closer.runtime.db.session(write=True) as s:
        closer.state.handlers.on_routed(s, Incoming(event, data, "reports.routed", 0, 0, case_id))
    return case_id


def offline_send(url: str, title: str, body: str) -> tuple[bool, str]:
    """The notifier's send, never leaving the process: every channel is down."""
    return False, "fuzz: channels are offline"


def build_notifier_offline(settings: Settings) -> FastAPI:
    """The notifier, sending nowhere (its test send too), one attempt per delivery, no hold."""
    app = build_notifier(settings, NotifierConfig(fallback_url=OFFLINE, hold_seconds=0, max_attempts=1))
    app.state.notifier.sender.send = offline_send
    return app


def fail_deliveries(notifier: FastAPI, case_ids: list[str], stations: list[str]) -> None:
    """The urgent-case notifications of these cases, as the notifier's consumer records them, sent
    (offline) and so failed: the deliveries list has rows, and a retry a row to act on."""
    parts = notifier.state.notifier
    events = [
        opened(case_id, station_id=station, street_id=parts.jurisdiction.stations[station].street_id)
        for case_id, station in zip(case_ids, stations, strict=True)
    ]
    Fed(parts.runtime.db, parts.config).feed(*events)
    parts.sender.tick()


def build_apps(var_dir: Path) -> Apps:
    """The reporter, router, closer and notifier on fresh SQLite databases with the demo data."""
    names = ("reporter", "router", "closer", "notifier")
    urls = {name: f"sqlite:///{var_dir / (name + '.db')}" for name in names}
    for name, url in urls.items():
        migrate.upgrade(name, url)
    settings = Settings(
        var_dir=var_dir,
        reporter_database_url=urls["reporter"],
        router_database_url=urls["router"],
        closer_database_url=urls["closer"],
        notifier_database_url=urls["notifier"],
        KAFKA_BOOTSTRAP_SERVERS=NO_BROKER,
        jwt_secret=SECRET,
    )
    reporter = build_reporter(settings)
    # the fuzzer posts many reports from one address; the limits are tested elsewhere
    reporter.state.reporter.limits = RateLimits(
        per_code=0, per_rider=0, per_address=0, new_riders_per_address=0
    )
    places = reporter_cli.load_places(reporter.state.reporter.runtime.db, reporter.state.jurisdiction)
    router = build_router(settings)
    closer = build_closer(settings)
    load_demo_staff(closer.state.closer.runtime.db, closer.state.closer.jurisdiction)
    notifier = build_notifier_offline(settings)
    apps = Apps(reporter, router, closer, notifier, places, login(closer, "admin"))
    stations = ["yh-s1", "yh-s1", "pp-s1"]
    apps.case_ids = [open_case(closer, station) for station in stations]
    fail_deliveries(notifier, apps.case_ids, stations)
    return apps


def envelope_problems(status: int, body: Any) -> list[str]:
    """What is wrong with an error answer's body against the contract's envelope (empty: nothing)."""
    if not 400 <= status < 600:
        return []
    if not isinstance(body, dict) or set(body) != {"error"}:
        return [f"{status}: the body is not {{'error': {{...}}}}: {str(body)[:200]!r}"]
    error = body["error"]
    if not isinstance(error, dict) or set(error) != {"code", "message", "details"}:
        return [f"{status}: error keys are not code, message, details: {str(error)[:200]!r}"]
    problems = []
    if not isinstance(error["code"], str) or not error["code"]:
        problems.append(f"{status}: error.code is not a non-empty string: {error['code']!r}")
    if not isinstance(error["message"], str) or not error["message"]:
        problems.append(f"{status}: error.message is not a non-empty string: {error['message']!r}")
    return problems


def openapi_of(service: str) -> dict[str, Any]:
    """A service's OpenAPI document, from an app built on a throwaway directory (no database touched)."""
    builders: dict[str, Callable[[Settings], FastAPI]] = {
        "reporter": build_reporter,
        "router": build_router,
        "closer": build_closer,
        "notifier": build_notifier_offline,
    }
    with tempfile.TemporaryDirectory() as var_dir:
        settings = Settings(var_dir=Path(var_dir), KAFKA_BOOTSTRAP_SERVERS=NO_BROKER, jwt_secret=SECRET)
        app = builders[service](settings)
        try:
            return app.openapi()
        finally:
            app.state.runtime.db.dispose()

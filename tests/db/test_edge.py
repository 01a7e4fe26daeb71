"""The ASGI edge of the real apps (issue 12): every body is capped before a route reads it, photo
forms get their own cap, and every HTML page carries the same CSP and security headers."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from gridloop import demo, migrate
from gridloop.errors import too_large_message
from gridloop.photos import MAX_PHOTO_BYTES, MAX_REQUEST_BYTES, photo_form_bytes
from gridloop.service import DEFAULT_BODY_CAP, BodyCap, page_security_headers
from gridloop.settings import Settings, UnsafeSettingsError
from services.closer.app import build as build_closer
from services.closer.cli import load_demo_staff
from services.reporter import cli as reporter_cli
from services.reporter.app import build as build_reporter

SECRET = "test-signing-key-" + "e" * 32
TWO_MB = 2 * 1024 * 1024


def settings(db_url: str, var_dir: Path, service: str) -> Settings:
    """A service's settings on its own database, the broker unreachable (not needed here)."""
    return Settings(
        var_dir=var_dir,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        jwt_secret=SECRET,
        **{f"{service}_database_url": db_url},  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def reporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The real reporter app with the demo places (on SQLite: the edge is the same on any engine)."""
    tmp_path = tmp_path_factory.mktemp("reporter")
    db_url = f"sqlite:///{tmp_path / 'reporter.db'}"
    migrate.upgrade("reporter", db_url)
    app = build_reporter(settings(db_url, tmp_path, "reporter"))
    places = reporter_cli.load_places(app.state.reporter.runtime.db, app.state.jurisdiction)
    app.state.demo_code = places[0].code
    yield app
    app.state.reporter.runtime.db.dispose()


@pytest.fixture(scope="module")
def closer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The real closer app with the demo accounts (on SQLite)."""
    tmp_path = tmp_path_factory.mktemp("closer")
    db_url = f"sqlite:///{tmp_path / 'closer.db'}"
    migrate.upgrade("closer", db_url)
    app = build_closer(settings(db_url, tmp_path, "closer"))
    load_demo_staff(app.state.closer.runtime.db, app.state.jurisdiction)
    yield app
    app.state.closer.runtime.db.dispose()


class Behind:
    """Counts the requests that get past the BodyCap to the app behind it, by path."""

    def __init__(self, app: FastAPI) -> None:
        TestClient(app).get("/healthz")  # builds the middleware stack
        layer: Any = app.middleware_stack
        while not isinstance(layer, BodyCap):
            layer = layer.app
        self.inner = layer.app
        self.paths: list[str] = []
        layer.app = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await self.inner(scope, receive, send)


def all_routes(routes: list[Any]) -> Iterator[Route]:
    """Every route of an app, inside included routers too."""
    for route in routes:
        if isinstance(route, Route):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI's included router
            yield from all_routes(route.original_router.routes)


def post_chunked(app: FastAPI, path: str, total: int, chunk: int = 4096) -> tuple[int, dict[str, Any], int]:
    """POST `total` bytes without a Content-Length, as a client streaming chunks; the status, the
    JSON answer and how many bytes the app pulled."""
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        if pulled >= total:
            return {"type": "http.disconnect"}
        pulled += chunk
        return {"type": "http.request", "body": b"x" * chunk, "more_body": pulled < total}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/x-www-form-urlencoded")],
        "client": ("203.0.113.7", 50000),
        "server": ("testserver", 443),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


def assert_413(response: Any, cap: int) -> None:
    """The edge's 413: the error envelope, stating the cap."""
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["details"] == {"max_bytes": cap}
    assert error["message"] == too_large_message(cap)


def test_two_megabytes_to_feedback_and_login_are_refused_unread(reporter: FastAPI, closer: FastAPI) -> None:
    """Issue 12: a 2 MB anonymous body to the riders' feedback route and to the console's login form
    is 413 at the edge (64 KB), and neither handler runs."""
    riders, staff = Behind(reporter), Behind(closer)
    big = json.dumps({"fixed": True, "comment": "x" * TWO_MB})
    r = TestClient(reporter).post(
        "/api/v1/reports/r_xxxxxxxxxxxxxxxx/feedback",
        content=big,
        headers={"Content-Type": "application/json"},
    )
    assert_413(r, DEFAULT_BODY_CAP)
    c = TestClient(closer, base_url="https://testserver").post(
        "/console/login", data={"username": "admin", "password": "p" * TWO_MB, "csrf": "x"}
    )
    assert_413(c, DEFAULT_BODY_CAP)
    token = TestClient(closer).post(
        "/api/v1/auth/token", data={"username": "admin", "password": "p" * TWO_MB}
    )
    assert_413(token, DEFAULT_BODY_CAP)
    assert (riders.paths, staff.paths) == ([], [])
    # a normal body still reaches them
    small = TestClient(reporter).post("/api/v1/reports/r_xxxxxxxxxxxxxxxx/feedback", json={"fixed": True})
    assert small.status_code != 413 and riders.paths == ["/api/v1/reports/r_xxxxxxxxxxxxxxxx/feedback"]


def test_a_chunked_body_is_cut_off_at_the_cap(reporter: FastAPI, closer: FastAPI) -> None:
    """Without a Content-Length the body is counted as it streams: 413 once it passes the cap, and
    the rest is never pulled from the client."""
    # (the riders' feedback refuses an unknown report before it reads a byte, so the closer's forms)
    del reporter
    for app, path in ((closer, "/console/login"), (closer, "/api/v1/auth/token")):
        status, answer, pulled = post_chunked(app, path, TWO_MB)
        assert status == 413, (path, answer)
        assert answer["error"]["details"] == {"max_bytes": DEFAULT_BODY_CAP}
        assert DEFAULT_BODY_CAP < pulled <= DEFAULT_BODY_CAP + 4096, (path, pulled)


def _caps(app: FastAPI) -> BodyCap:
    """The app's BodyCap, as built from its middleware list."""
    middleware = next(m for m in app.user_middleware if m.cls is BodyCap)
    kwargs: dict[str, Any] = dict(middleware.kwargs)
    return BodyCap(app, **kwargs)


def test_photo_routes_have_the_photo_cap_and_nothing_else_does(reporter: FastAPI, closer: FastAPI) -> None:
    """Reports with photos: 3 photos and a form; closer transitions: 1 photo; everything else 64 KB."""
    r, c = _caps(reporter), _caps(closer)
    assert r.cap_for("POST", "/api/v1/reports") == MAX_REQUEST_BYTES == photo_form_bytes(3)
    assert c.cap_for("POST", "/api/v1/cases/c_abc/transitions") == photo_form_bytes(1)
    assert c.cap_for("POST", "/console/cases/c_abc/act") == MAX_PHOTO_BYTES + 256 * 1024
    for cap, method, path in [
        (r, "POST", "/api/v1/reports/r_abc/feedback"),
        (r, "GET", "/api/v1/reports"),
        (r, "POST", "/open311/v2/requests.json"),
        (r, "POST", "/api/v1/open311/keys"),
        (c, "POST", "/api/v1/cases/c_abc/transitions/extra"),
        (c, "POST", "/api/v1/auth/token"),
        (c, "POST", "/api/v1/staff"),
        (c, "POST", "/console/login"),
        (c, "POST", "/console/bulk-ack"),
    ]:
        assert cap.cap_for(method, path) == DEFAULT_BODY_CAP, path


def test_a_photo_report_passes_the_edge(reporter: FastAPI) -> None:
    """A multipart report of 1.5 MB is over the default cap but within the photo cap: not 413."""
    photo = b"\xff\xd8" + b"\0" * 1_500_000  # not a real JPEG: the route answers 415, not the edge
    r = TestClient(reporter).post(
        "/api/v1/reports",
        data={"category": "manhole_cover"},
        files=[("photos", ("a.jpg", photo, "image/jpeg"))],
        headers={"Idempotency-Key": "k-edge-1"},
    )
    assert r.status_code == 415, r.text


# --- security headers on every HTML page ------------------------------------------------------------


def html_answers(client: TestClient, app: FastAPI, params: dict[str, str]) -> dict[str, Any]:
    """Every GET route of the app, called with sample path parameters; the answers that are HTML."""
    found: dict[str, Any] = {}
    for route in all_routes(app.router.routes):
        if "GET" not in (route.methods or ()) or getattr(route, "response_class", None) is StreamingResponse:
            continue  # live streams never end; they are not pages
        if route.path in ("/metrics", "/readyz", "/asyncapi", "/redoc") or route.path.startswith("/docs"):
            continue
        path = route.path.format_map(defaultdict(lambda: "unknown", params))
        response = client.get(path, follow_redirects=False)
        if response.headers.get("content-type", "").startswith("text/html"):
            found[route.path] = response
    return found


def assert_page_headers(pages: dict[str, Any], expected: dict[str, str]) -> None:
    """Each page answers with exactly the expected security headers."""
    for path, response in pages.items():
        for name, value in expected.items():
            assert response.headers.get(name) == value, (path, response.status_code, name)


def test_every_rider_page_has_the_csp_and_security_headers(reporter: FastAPI) -> None:
    """The rider pages (scan, typed code, tracking, my reports; found and not found) all answer with
    the one CSP: scripts and styles from here, after-photos from the closer, never framed."""
    client = TestClient(reporter)
    code = reporter.state.demo_code
    found = html_answers(client, reporter, {"code": code, "report_id": "r_unknownxxxxxxxx"})
    missing = html_answers(client, reporter, {"code": "ZZZZZZZZ", "report_id": "r_unknownxxxxxxxx"})
    expected = page_security_headers(f"data: blob: {reporter.state.reporter.settings.closer_public_url}")
    assert set(found) == {"/r", "/r/{code}", "/t/{report_id}", "/my"}
    assert_page_headers(found, expected)
    assert_page_headers(missing, expected)
    assert found["/r/{code}"].status_code == 200 and found["/t/{report_id}"].status_code == 404


def test_every_console_page_has_the_csp_and_security_headers(closer: FastAPI) -> None:
    """The console's pages (login, queue, rows, case, overview; signed in and not, found and not)
    all answer with the one CSP: images also from the reporter, never framed."""
    client = TestClient(closer, base_url="https://testserver")
    expected = page_security_headers(f"data: {closer.state.closer.settings.public_base_url}")
    signed_out = html_answers(client, closer, {"case_id": "c_unknown"})
    assert "/console/login" in signed_out
    assert_page_headers(signed_out, expected)
    page = client.get("/console/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    login = client.post(
        "/console/login",
        data={"username": "yh-centre", "password": demo.DEMO_PASSWORD, "csrf": csrf},
        follow_redirects=False,
    )
    assert login.status_code == 303
    signed_in = html_answers(client, closer, {"case_id": "c_unknown"})
    assert {"/console/queue", "/console/cases/{case_id}", "/overview"} <= set(signed_in)
    assert_page_headers(signed_in, expected)


def test_every_service_refuses_to_build_with_unsafe_settings(tmp_path: Path) -> None:
    """Outside dev mode the app factory of each service stops with the problems named."""
    from services.router.app import build as build_router

    for service, build in (("reporter", build_reporter), ("router", build_router), ("closer", build_closer)):
        unsafe = Settings(
            var_dir=tmp_path,
            dev_mode=False,
            jwt_secret="change-me-in-production",
            public_base_url="http://gridloop.example.org",
            KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
            **{f"{service}_database_url": f"sqlite:///{tmp_path / service}.db"},  # type: ignore[arg-type]
        )
        with pytest.raises(UnsafeSettingsError) as refused:
            build(unsafe)
        message = str(refused.value)
        assert message.startswith(f"the {service} refuses to start with unsafe settings:"), message
        assert message.count("\n  - ") == 2

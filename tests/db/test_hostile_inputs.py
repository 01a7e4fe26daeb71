"""A hand-written table of hostile requests against the real apps (issue 12, item 4): each row is one
request with the status and error code it must get, in the contract's envelope (Open311 in the spec's
error list). Oversize and deeply nested bodies, control and bidi characters, a huge pixel count,
forged and expired tokens, another station's case, unknown codes, wrong types, a stale version.

Rows whose fix another helper of issue 12 is making are `xfail(strict=True)` naming the finding: when
the fix merges, the row passes, strict xfail fails, and the mark comes off.
"""

from __future__ import annotations

import io
import random
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import text

from schemas import codes
from services.closer.auth import issue_token
from tests.support.fuzz import SECRET, Apps, build_apps, envelope_problems, login

pytestmark = pytest.mark.fuzz

KIB = 1024
MIB = 1024 * KIB


def huge_png(side: int = 7000) -> bytes:
    """A PNG of side×side pixels that is small on the wire (one colour, 1 bit): a decompression bomb."""
    out = io.BytesIO()
    Image.new("1", (side, side), 0).save(out, "PNG", optimize=True)
    return out.getvalue()


def nested(depth: int = 30_000) -> bytes:
    """JSON arrays nested `depth` deep (well under the 64 KiB cap)."""
    return b"[" * depth + b"]" * depth


def forged_token() -> str:
    """An admin token signed with a key that is not the service's."""
    return issue_token("admin", "admin", [], "not-the-signing-key-" + "k" * 32, 3600, 0)


def expired_token() -> str:
    """An admin token with the right key that expired an hour ago."""
    now = datetime.now(UTC)
    claims = {
        "sub": "admin",
        "role": "admin",
        "stations": [],
        "iss": "gridloop-closer",
        "iat": int((now - timedelta(hours=2)).timestamp()),
        "exp": int((now - timedelta(hours=1)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def unsigned_token() -> str:
    """An admin token with `alg: none`."""
    claims = {"sub": "admin", "role": "admin", "iss": "gridloop-closer", "exp": 4_102_444_800}
    return jwt.encode(claims, "", algorithm="none")  # "" is the none algorithm's only key


def bearer(token: str) -> dict[str, str]:
    """Bearer headers."""
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Row:
    """One hostile request: which service, what to send, what must come back."""

    service: str
    method: str
    path: str
    send: Callable[[Apps], dict[str, Any]]
    status: int
    code: str | None
    """The envelope's error.code; None for Open311, whose errors are the spec's [{code, description}]."""


def report(apps: Apps, **fields: Any) -> dict[str, Any]:
    """A valid JSON report at the first demo place, with `fields` over it."""
    return {"code": apps.places[0].code, "category": "manhole_cover", "description": "井盖破损", **fields}


def unused_code(apps: Apps) -> str:
    """A well-formed report code that no place has."""
    taken = {p.code for p in apps.places}
    rng = random.Random(12)
    while (code := codes.new_code(rng)) in taken:
        pass
    return code


def mistyped(apps: Apps) -> str:
    """A demo place's code with its last character changed: the check character catches it."""
    code = apps.places[0].code
    return code[:-1] + next(c for c in codes.ALPHABET if c != code[-1])


def as_staff(station: str) -> Callable[[Apps], dict[str, str]]:
    """Bearer headers of a station's demo account (logged in once per module)."""

    def headers(apps: Apps) -> dict[str, str]:
        return bearer(login(apps.closer, station))

    return headers


REPORTS = "/api/v1/reports"
EDGE_CAP = "body-size cap at the ASGI edge for every route (issue 12 finding: bodies read whole)"

ROWS = {
    # -- oversize bodies ------------------------------------------------------------------------
    "json report over 64 KiB": Row(
        "reporter",
        "POST",
        REPORTS,
        lambda a: {"json": report(a, description="x" * (65 * KIB))},
        413,
        "payload_too_large",
    ),
    # a report may carry photos, so its body is capped at the photos' size; one 2 MB text field is
    # refused by the form parser's per-field limit (1 MB)
    "2 MB form field in a report": Row(
        "reporter",
        "POST",
        REPORTS,
        lambda a: {"data": {"category": "manhole_cover", "description": "x" * (2 * MIB)}},
        400,
        "bad_request",
    ),
    "2 MB feedback body": pytest.param(
        Row(
            "reporter",
            "POST",
            REPORTS + "/R0000000000/feedback",
            lambda a: {
                "content": b'{"fixed": true, "comment": "' + b"x" * (2 * MIB) + b'"}',
                "headers": {"Content-Type": "application/json"},
            },
            413,
            "payload_too_large",
        ),
    ),
    "2 MB form to the login": pytest.param(
        Row(
            "closer",
            "POST",
            "/api/v1/auth/token",
            lambda a: {"data": {"username": "admin", "password": "x" * (2 * MIB)}},
            413,
            "payload_too_large",
        ),
    ),
    "2 MB JSON to an admin POST": pytest.param(
        Row(
            "closer",
            "POST",
            "/api/v1/staff",
            lambda a: {"json": {"username": "x" * (2 * MIB)}, "headers": a.admin},
            413,
            "payload_too_large",
        ),
    ),
    "2 MB form to Open311": pytest.param(
        Row(
            "reporter",
            "POST",
            "/open311/v2/requests.json",
            lambda a: {"data": {"service_code": "manhole_cover", "description": "x" * (2 * MIB)}},
            413,
            "payload_too_large",  # the edge's cap answers before Open311 is reached: the envelope
        ),
    ),
    # -- deeply nested JSON ---------------------------------------------------------------------
    "30,000 [ as a report": pytest.param(
        Row(
            "reporter",
            "POST",
            REPORTS,
            lambda a: {"content": nested(), "headers": {"Content-Type": "application/json"}},
            400,
            "invalid_json",
        ),
    ),
    "30,000 [ as a transition": pytest.param(
        Row(
            "closer",
            "POST",
            "/api/v1/cases/{case}/transitions",
            lambda a: {"content": nested(), "headers": {"Content-Type": "application/json", **a.admin}},
            400,
            "invalid_json",
        ),
    ),
    # FastAPI's own body parser turns the RecursionError into a 400
    "30,000 [ as an admin POST": Row(
        "closer",
        "POST",
        "/api/v1/staff",
        lambda a: {"content": nested(), "headers": {"Content-Type": "application/json", **a.admin}},
        400,
        "bad_request",
    ),
    # -- huge pixel count -----------------------------------------------------------------------
    "7000×7000 PNG photo on a report": Row(
        "reporter",
        "POST",
        REPORTS,
        lambda a: {
            "data": {"code": a.places[0].code, "category": "manhole_cover"},
            "files": [("photos", ("bomb.png", huge_png(), "image/png"))],
        },
        413,
        "photo_too_large",
    ),
    "7000×7000 after-photo on another station's case": pytest.param(
        Row(
            "closer",
            "POST",
            "/api/v1/cases/{other_case}/transitions",
            lambda a: {
                "data": {"action": "resolve", "version": "1", "note": "done"},
                "files": [("photo", ("bomb.png", huge_png(), "image/png"))],
                "headers": as_staff("yh-s1")(a),
            },
            404,
            "not_found",
        ),
    ),
    # -- tokens ---------------------------------------------------------------------------------
    "forged token on the closer": Row(
        "closer", "GET", "/api/v1/staff", lambda a: {"headers": bearer(forged_token())}, 401, "invalid_token"
    ),
    "expired token on the closer": Row(
        "closer", "GET", "/api/v1/staff", lambda a: {"headers": bearer(expired_token())}, 401, "token_expired"
    ),
    "alg none token on the closer": Row(
        "closer",
        "GET",
        "/api/v1/staff",
        lambda a: {"headers": bearer(unsigned_token())},
        401,
        "invalid_token",
    ),
    "forged token on the reporter's admin": Row(
        "reporter",
        "GET",
        "/api/v1/open311/keys",
        lambda a: {"headers": bearer(forged_token())},
        401,
        "invalid_token",
    ),
    "expired token on the reporter's admin": Row(
        "reporter",
        "GET",
        "/api/v1/open311/keys",
        lambda a: {"headers": bearer(expired_token())},
        401,
        "token_expired",
    ),
    "no token on the reporter's admin": Row(
        "reporter", "POST", "/api/v1/codes", lambda a: {"json": {"place_id": "x"}}, 401, "unauthorized"
    ),
    # -- other stations' ids --------------------------------------------------------------------
    "another station's case": Row(
        "closer",
        "GET",
        "/api/v1/cases/{other_case}",
        lambda a: {"headers": as_staff("yh-s1")(a)},
        404,
        "not_found",
    ),
    "another station's case timeline": Row(
        "closer",
        "GET",
        "/api/v1/cases/{other_case}/timeline",
        lambda a: {"headers": as_staff("yh-s1")(a)},
        404,
        "not_found",
    ),
    "a transition on another station's case": Row(
        "closer",
        "POST",
        "/api/v1/cases/{other_case}/transitions",
        lambda a: {"json": {"action": "acknowledge", "version": 1}, "headers": as_staff("yh-s1")(a)},
        404,
        "not_found",
    ),
    "another station's queue": Row(
        "closer",
        "GET",
        "/api/v1/queue?station=pp-s1",
        lambda a: {"headers": as_staff("yh-s1")(a)},
        404,
        "not_found",
    ),
    # -- unknown codes and ids ------------------------------------------------------------------
    "unknown report code": Row(
        "reporter", "POST", REPORTS, lambda a: {"json": report(a, code=unused_code(a))}, 404, "unknown_code"
    ),
    "mistyped report code (check character)": Row(
        "reporter", "POST", REPORTS, lambda a: {"json": report(a, code=mistyped(a))}, 422, "check_the_code"
    ),
    "report code with foreign characters": Row(
        "reporter", "POST", REPORTS, lambda a: {"json": report(a, code="井盖-1234")}, 422, "bad_code"
    ),
    "unknown report id": Row("reporter", "GET", REPORTS + "/R0000000000", lambda a: {}, 404, "not_found"),
    "unknown route": Row("reporter", "GET", "/api/v1/nothing-here", lambda a: {}, 404, "not_found"),
    "wrong method": Row("closer", "DELETE", "/api/v1/staff", lambda a: {}, 405, "method_not_allowed"),
    # -- wrong types ----------------------------------------------------------------------------
    "report body is a list": Row("reporter", "POST", REPORTS, lambda a: {"json": [1, 2]}, 422, "invalid"),
    "danger_now is a list": Row(
        "reporter", "POST", REPORTS, lambda a: {"json": report(a, danger_now=[True])}, 422, "invalid"
    ),
    "location is a string": Row(
        "reporter", "POST", REPORTS, lambda a: {"json": report(a, location="31.3,121.5")}, 422, "invalid"
    ),
    "transition version is text": Row(
        "closer",
        "POST",
        "/api/v1/cases/{case}/transitions",
        lambda a: {"json": {"action": "acknowledge", "version": "one"}, "headers": a.admin},
        422,
        "invalid",
    ),
    "queue limit is text": Row(
        "closer", "GET", "/api/v1/queue?limit=many", lambda a: {"headers": a.admin}, 422, "invalid"
    ),
    "explain lat is text": Row(
        "router", "GET", "/api/v1/route/explain?lat=north&lon=121.5", lambda a: {}, 422, "invalid"
    ),
    # -- stale version --------------------------------------------------------------------------
    "stale case version": Row(
        "closer",
        "POST",
        "/api/v1/cases/{case}/transitions",
        lambda a: {"json": {"action": "acknowledge", "version": 99}, "headers": a.admin},
        409,
        "stale_version",
    ),
    # -- Open311 dates out of range -------------------------------------------------------------
    "Open311 end_date at the end of time": pytest.param(
        Row(
            "reporter",
            "GET",
            "/open311/v2/requests.json?end_date=9999-12-31T23:59:59-05:00",
            lambda a: {},
            400,
            None,
        ),
    ),
    "Open311 end_date at year 1": pytest.param(
        Row("reporter", "GET", "/open311/v2/requests.json?end_date=0001-01-01", lambda a: {}, 400, None),
    ),
}


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    """The three services, built once for the table."""
    built = build_apps(tmp_path_factory.mktemp("hostile"))
    yield built
    built.dispose()


def client(apps: Apps, service: str) -> TestClient:
    """An HTTPS client of one service, raising nothing: a 500 is an answer here."""
    return TestClient(getattr(apps, service), base_url="https://testserver", raise_server_exceptions=False)


def error_of(response: Any) -> Any:
    """The answer's body as JSON, or its text."""
    try:
        return response.json()
    except ValueError:
        return response.text


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_hostile_request(apps: Apps, row: Row) -> None:
    """The row's status and error code, in the envelope (Open311: the spec's error list)."""
    path = row.path.format(case=apps.case_ids[0], other_case=apps.case_ids[2])
    r = client(apps, row.service).request(row.method, path, **row.send(apps))
    body = error_of(r)
    assert r.status_code == row.status, (r.status_code, str(body)[:300])
    if row.code is None:
        assert body == [{"code": row.status, "description": body[0]["description"]}], body
    else:
        assert envelope_problems(r.status_code, body) == [], body
        assert body["error"]["code"] == row.code, body


def test_the_413_message_names_the_real_cap(apps: Apps) -> None:
    """The fast path's 413 says 64 KB, the cap it applies."""
    r = client(apps, "reporter").post(REPORTS, json=report(apps, description="x" * (65 * KIB)))
    assert r.status_code == 413
    assert "64 KB" in r.json()["error"]["message"], r.json()


# -- control and bidi characters in every rider text field ---------------------------------------

# C0/C1 controls, an escape sequence, and the bidi overrides, isolates and marks
HOSTILE_TEXT = "井盖\x00\x07坏了\x1b[31m\u0085!\u202e\u2066\u200f\u061c修"
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
STRIPPING = (
    "issue 12 finding: control characters stripped from every stored string (reporter); "
    "today only the description drops C0 controls, not C1 or bidi"
)


def unsafe(value: str) -> list[str]:
    """The control and bidi characters left in a stored string (newlines and tabs are text)."""
    return [
        f"U+{ord(ch):04X}"
        for ch in value
        if (unicodedata.category(ch) == "Cc" and ch not in "\n\t") or ch in BIDI
    ]


@pytest.mark.parametrize(
    "field",
    [
        pytest.param("description"),
        pytest.param("address"),
    ],
)
def test_rider_text_is_stored_stripped(apps: Apps, field: str) -> None:
    """A report carrying controls and bidi overrides in one text field is accepted and stored without
    them, its words kept."""
    r = client(apps, "reporter").post(REPORTS, json=report(apps, **{field: HOSTILE_TEXT}))
    assert r.status_code == 202, r.text
    with apps.reporter.state.reporter.runtime.db.session() as s:
        stored = s.execute(
            text(f"SELECT {field} FROM report WHERE report_id = :r"), {"r": r.json()["report_id"]}
        ).scalar_one()
    assert unsafe(stored) == [], stored
    assert "井盖" in stored and "坏了" in stored and "修" in stored


def test_open311_text_is_stored_stripped(apps: Apps) -> None:
    """The same through Open311's form, with a real API key."""
    issued = client(apps, "reporter").post("/api/v1/open311/keys", json={"name": "fuzz"}, headers=apps.admin)
    assert issued.status_code == 201, issued.text
    form = {
        "api_key": issued.json()["api_key"],
        "service_code": "manhole_cover",
        "description": HOSTILE_TEXT,
        "address_string": HOSTILE_TEXT,
        "lat": "31.3395",
        "long": "121.511",
    }
    r = client(apps, "reporter").post("/open311/v2/requests.json", data=form)
    assert r.status_code in (200, 201), r.text
    report_id = r.json()[0]["service_request_id"]
    with apps.reporter.state.reporter.runtime.db.session() as s:
        description, address = s.execute(
            text("SELECT description, address FROM report WHERE report_id = :r"), {"r": report_id}
        ).one()
    assert (unsafe(description), unsafe(address or "")) == ([], []), (description, address)


def test_feedback_comment_is_stored_stripped(apps: Apps) -> None:
    """A rider's comment on a resolved case, with controls and bidi overrides, is stored without them."""
    rider = client(apps, "reporter")
    r = rider.post(REPORTS, json=report(apps))
    assert r.status_code == 202, r.text
    report_id = r.json()["report_id"]
    # the read model as the closer's case.resolved would leave it (the events are tested elsewhere)
    with apps.reporter.state.reporter.runtime.db.session(write=True) as s:
        s.execute(
            text(
                "UPDATE report SET case_id = 'CHOSTILE', status = 'resolved', case_version = 4"
                " WHERE report_id = :r"
            ),
            {"r": report_id},
        )
    answer = rider.post(f"{REPORTS}/{report_id}/feedback", json={"fixed": False, "comment": HOSTILE_TEXT})
    assert answer.status_code == 201, answer.text
    with apps.reporter.state.reporter.runtime.db.session() as s:
        stored = s.execute(
            text("SELECT comment FROM feedback WHERE report_id = :r"), {"r": report_id}
        ).scalar_one()
    assert unsafe(stored) == [], stored
    assert "井盖" in stored and "修" in stored

"""Schemathesis against the OpenAPI of the reporter, router, closer and notifier, in process (issue 12,
item 4; the notifier since the issue 16 review).

Each service is the real app (`build()`) on SQLite with the demo data, reached through ASGI with no
lifespan (no broker, no network). Every operation gets a bounded, reproducible run: the examples and
coverage phases plus `MAX_EXAMPLES` generated cases, derandomized under a fixed seed. Staff routes are
called with the demo admin's real token, so the fuzzer gets past 401 to the handlers.

Checks: no 5xx; each status is documented; each body matches its documented schema and content type;
each error (4xx) is the contract's envelope {"error": {"code", "message", "details"}}; data the schema
calls invalid is refused; an undocumented method is 405. Stateful runs follow OpenAPI links (a report
read back by its id; a case acted on with the version just read), and real resources a random id
never reaches are checked too.
"""

from __future__ import annotations

import copy
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from PIL import Image
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from sqlalchemy import text
from sqlmodel import select

from services.closer import transitions
from services.closer.api.auth import new_token
from services.closer.models import Staff
from services.closer.staff import SignedIn
from tests.support.fuzz import Apps, build_apps, envelope_problems, login, openapi_of, without_lifespan

pytestmark = pytest.mark.fuzz

# bounded for CI (about 1.5 min for the services on 2 cores); a deeper run sets these
MAX_EXAMPLES = int(os.environ.get("GRIDLOOP_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("GRIDLOOP_FUZZ_SEED", "20261202"))

CONFIG = {
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    "request-timeout": 10,
    # the queue's event stream never ends: its first event (hello) is enough to check
    "max-stream-events": 1,
}


def documented_error(case: schemathesis.Case, status: int) -> Any:
    """The response the operation documents for an error status (exact first, then "4XX")."""
    responses = case.operation.definition.raw.get("responses", {})
    return responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")


@schemathesis.check
def error_envelope(
    ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Every 4xx body is {"error": {"code", "message", "details"}} with a code and a message, unless the
    operation documents another error shape (rider pages answer error pages, Open311 the spec's list)."""
    if not 400 <= response.status_code < 500:
        return None
    documented = documented_error(case, response.status_code)
    if documented is not None and "ErrorEnvelope" not in json.dumps(documented):
        return None  # the schema conformance checks hold it to the shape it documents
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    problems = envelope_problems(response.status_code, body)
    if problems:
        raise AssertionError("; ".join(problems))
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_envelope,
    negative_data_rejection,
    unsupported_method,
]


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    """The three services, built once for the module."""
    built = build_apps(tmp_path_factory.mktemp("fuzz"))
    yield built
    built.dispose()


def _schema(name: str) -> Any:
    """A service's OpenAPI as schemathesis reads it (the document depends on the code alone)."""
    return schemathesis.openapi.from_dict(openapi_of(name), config=schemathesis.Config.from_dict(CONFIG))


# loaded at import, each case sent to the module's apps with `app=`: schemathesis' from_fixture would
# build the schema from the apps fixture, but it renames pytest nodes through `_nodeid`, which
# pytest 9.2 no longer has
reporter = _schema("reporter")
router = _schema("router")
closer = _schema("closer")
notifier = _schema("notifier")

# `/readyz` answers 503 by design while the broker is unreachable, as it always is here (documented)
NO_BROKER_CHECKS = [c for c in CHECKS if c is not not_a_server_error]


def checks_for(case: schemathesis.Case) -> list[Any]:
    """The checks of one case."""
    return NO_BROKER_CHECKS if case.operation.path == "/readyz" else CHECKS


# the stateful runs narrow the documents to the demo data (required station, enums of codes): what the
# narrowed document calls invalid the service may rightly accept, so negative data is not judged there
STATEFUL_CHECKS = [c for c in CHECKS if c is not negative_data_rejection]


FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@reporter.parametrize()
@FUZZ
def test_reporter(case: schemathesis.Case, apps: Apps) -> None:
    """The reporter's operations, riders' and admin's."""
    case.call_and_validate(app=without_lifespan(apps.reporter), headers=apps.admin, checks=checks_for(case))


@router.parametrize()
@FUZZ
def test_router(case: schemathesis.Case, apps: Apps) -> None:
    """The router's operations."""
    case.call_and_validate(app=without_lifespan(apps.router), checks=checks_for(case))


def current_token(apps: Apps, username: str) -> str:
    """A token at the account's current version, issued directly: the fuzzer's failed sign-ins have
    throttled the test client's address, so signing in again would be refused."""
    ctx = apps.closer.state.closer
    with ctx.runtime.db.session() as session:
        staff = session.exec(select(Staff).where(Staff.username == username)).one()
        who = SignedIn(
            staff.username, staff.role, staff.stations.split(","), staff.token_version, staff.street_ids
        )
    return new_token(ctx, who)


SESSION_ENDING = {"/api/v1/auth/logout", "/api/v1/auth/password"}
"""Operations that revoke the caller's tokens: fuzzed with a fresh token of an account no other test
uses, so the admin's token the rest of the run relies on stays valid."""


@closer.parametrize()
@FUZZ
def test_closer(case: schemathesis.Case, apps: Apps) -> None:
    """The closer's operations, as the demo admin (the session-ending ones as a staff member)."""
    headers = apps.admin
    if case.operation.path in SESSION_ENDING:
        headers = {"Authorization": f"Bearer {current_token(apps, 'yh-s5')}"}
    case.call_and_validate(app=without_lifespan(apps.closer), headers=headers, checks=checks_for(case))


@notifier.parametrize()
@FUZZ
def test_notifier(case: schemathesis.Case, apps: Apps) -> None:
    """The notifier's operations, as the demo admin (its sends never leave the process)."""
    case.call_and_validate(app=without_lifespan(apps.notifier), headers=apps.admin, checks=checks_for(case))


# -- stateful: create a report, then follow it by its report_id -----------------------------------

REPORT = "/api/v1/reports"
FOLLOW = {
    "ReadReport": ("/api/v1/reports/{report_id}", "get"),
    "TrackingPage": ("/t/{report_id}", "get"),
    "Feedback": ("/api/v1/reports/{report_id}/feedback", "post"),
}


def reporter_with_links(apps: Apps) -> dict[str, Any]:
    """The reporter's OpenAPI with links from a report's 202 to the operations that take its id, and
    the report body narrowed to the demo codes and categories, so most generated reports are taken
    (the honeypot field is left out: a filled one is answered 202 and dropped, on purpose)."""
    spec = copy.deepcopy(openapi_of("reporter"))
    post = spec["paths"][REPORT]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    body["properties"]["code"] = {"enum": sorted(p.code for p in apps.places)}
    body["properties"]["category"] = {"enum": sorted(apps.reporter.state.jurisdiction.categories)}
    body["properties"].pop("website")
    body["required"] = ["code", "category"]
    post["responses"]["202"]["links"] = {
        name: {
            "operationId": spec["paths"][path][method]["operationId"],
            "parameters": {"report_id": "$response.body#/report_id"},
        }
        for name, (path, method) in FOLLOW.items()
    }
    return spec


def test_reports_are_read_back_by_their_id(apps: Apps) -> None:
    """Schemathesis' state machine posts reports and follows each 202 to reading it back (JSON and the
    tracking page) and to feedback: every step passes the checks, and a report answered 202 is there
    to read (ensure_resource_availability)."""
    config = schemathesis.Config.from_dict({**CONFIG, "phases": {"stateful": {"enabled": True}}})
    linked = schemathesis.openapi.from_dict(reporter_with_links(apps), config=config)
    schema = linked.include(path_regex=r"^/(api/v1/reports|t/)")
    asgi = without_lifespan(apps.reporter)
    with apps.reporter.state.reporter.runtime.db.session() as s:
        before = s.execute(text("SELECT count(*) FROM report")).scalar_one()

    seen: Counter[tuple[str, str, int]] = Counter()

    class Reports(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"app": asgi}

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            seen[(case.method, case.operation.path, response.status_code)] += 1

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            case.validate_response(
                response, checks=[*STATEFUL_CHECKS, ensure_resource_availability], transport_kwargs=kwargs
            )

    Reports.run(
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=6,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    with apps.reporter.state.reporter.runtime.db.session() as s:
        after = s.execute(text("SELECT count(*) FROM report")).scalar_one()
    assert after > before  # the run did create reports to follow
    # and followed them: read back by id, as JSON and as the tracking page
    assert seen[("GET", "/api/v1/reports/{report_id}", 200)] > 0, seen
    assert seen[("GET", "/t/{report_id}", 200)] > 0, seen


# -- known findings, replayed through the same checks ---------------------------------------------

OVERFLOW = "issue 12 finding: Open311 date OverflowError 500 (fix in flight)"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"end_date": "9999-12-31T23:59:59-05:00"}),
        pytest.param({"end_date": "0001-01-01"}),
        {"start_date": "0001-01-01"},
    ],
    ids=["end of time", "year 1 end", "year 1 start"],
)
def test_open311_dates_at_the_ends_of_time(apps: Apps, query: dict[str, str]) -> None:
    """Dates at the edges of what Python holds pass every check (a 400 in the spec's shape, or an answer)."""
    case = reporter["/open311/v2/requests.{fmt}"]["GET"].Case(path_parameters={"fmt": "json"}, query=query)
    case.call_and_validate(app=without_lifespan(apps.reporter), checks=CHECKS)


# -- stateful: a station's queue -> a case -> actions on it with its current version --------------

CASE = "/api/v1/cases/{case_id}"
STATION = "yh-s1"  # the station of two of the demo cases; its demo account acts on them
ACT = "/api/v1/cases/{case_id}/transitions"


def closer_with_links(apps: Apps) -> dict[str, Any]:
    """The closer's OpenAPI with links queue -> case -> transition (carrying the case's version) ->
    case, the queue narrowed to the demo station's staff views and actions to the table's."""
    spec = copy.deepcopy(openapi_of("closer"))
    paths = spec["paths"]
    # the walk is about acting with a version: its queue is the staff's own list, read as they read it
    # (the queue's bad filters are the generic fuzz's), so that it reaches cases
    queue_params = paths["/api/v1/queue"]["get"]["parameters"]
    queue_params[:] = [p for p in queue_params if p["name"] != "street"]
    narrowed = {"station": [STATION], "status": ["open", "all"], "view": ["queue"]}
    for param in queue_params:
        if param["name"] in narrowed:
            param["schema"] = {"enum": narrowed[param["name"]]}
            param["required"] = True
    body = paths[ACT]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body["properties"]["action"] = {"enum": list(transitions.ACTIONS)}

    def link(path: str, method: str, case_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "operationId": paths[path][method]["operationId"],
            "parameters": {"case_id": case_id},
            **extra,
        }

    paths["/api/v1/queue"]["get"]["responses"]["200"]["links"] = {
        "FirstCase": link(CASE, "get", "$response.body#/items/0/case_id")
    }
    paths[CASE]["get"]["responses"]["200"]["links"] = {
        "Act": link(
            ACT, "post", "$response.body#/case_id", requestBody={"version": "$response.body#/version"}
        ),
        "Timeline": link(CASE + "/timeline", "get", "$response.body#/case_id"),
    }
    paths[ACT]["post"]["responses"]["200"]["links"] = {"Reread": link(CASE, "get", "$response.body#/case_id")}
    return spec


def test_cases_are_acted_on_with_their_version(apps: Apps) -> None:
    """Schemathesis' state machine, as a station's staff, walks its queue to a case and takes actions
    with the version it just read: every answer (200, 403, 409 wrong state or stale) passes the checks."""
    config = schemathesis.Config.from_dict({**CONFIG, "phases": {"stateful": {"enabled": True}}})
    linked = schemathesis.openapi.from_dict(closer_with_links(apps), config=config)
    # the thank-you takes no version and is once per case: the generic fuzz covers it, not this walk
    schema = linked.include(path_regex=r"^/api/v1/(queue$|cases/\{case_id\})").exclude(path_regex=r"/thanks$")
    asgi = without_lifespan(apps.closer)
    staff = {"Authorization": f"Bearer {login(apps.closer, STATION)}"}
    seen: Counter[tuple[str, str, int]] = Counter()

    class Cases(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"app": asgi, "headers": staff}

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            seen[(case.method, case.operation.path, response.status_code)] += 1

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            case.validate_response(response, checks=STATEFUL_CHECKS, transport_kwargs=kwargs)

    Cases.run(
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=6,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    assert seen[("GET", CASE, 200)] > 0, seen
    # the links reached real cases: an action taken, or refused for the case's state or version
    assert seen[("POST", ACT, 200)] + seen[("POST", ACT, 409)] > 0, seen


# -- real resources: the answers a random id never reaches, held to the same checks ----------------


def _photo_of_a_report(apps: Apps) -> str:
    """Post a report with one photo; the id of its cleaned photo."""
    image = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 60, 40)).save(image, "JPEG")
    r = TestClient(apps.reporter).post(
        REPORT,
        data={"code": apps.places[0].code, "category": "manhole_cover"},
        files=[("photos", ("p.jpg", image.getvalue(), "image/jpeg"))],
    )
    assert r.status_code == 202, r.text
    with apps.reporter.state.reporter.runtime.db.session() as s:
        photo_id: str = s.execute(
            text("SELECT photo_id FROM photo WHERE report_id = :r"), {"r": r.json()["report_id"]}
        ).scalar_one()
    return photo_id


REAL = {
    "QR as SVG": ("/api/v1/codes/{code}.{fmt}", {"fmt": "svg"}),
    "QR as PNG": ("/api/v1/codes/{code}.{fmt}", {"fmt": "png"}),
    "a rider's photo": ("/api/v1/photos/{photo_id}", {}),
    "a station's code sheet": ("/api/v1/stations/{station_id}/codes/sheet", {"station_id": "yh-s1"}),
    "the scan page": ("/r/{code}", {}),
}


@pytest.mark.parametrize("name", list(REAL))
def test_real_resources_answer_as_documented(apps: Apps, name: str) -> None:
    """A real code's QR images, a real photo, a station's sheet and a scan page pass every check."""
    path, params = REAL[name]
    known = {"code": apps.places[0].code, **params}
    if "{photo_id}" in path:
        known["photo_id"] = _photo_of_a_report(apps)
    case = reporter[path]["GET"].Case(path_parameters=known)
    response = case.call_and_validate(app=without_lifespan(apps.reporter), headers=apps.admin, checks=CHECKS)
    assert response.status_code == 200


def test_first_feedback_answers_as_documented(apps: Apps) -> None:
    """A rider's first answer to a resolved case (201) and its repeat (200) pass every check."""
    rider = TestClient(apps.reporter)
    r = rider.post(REPORT, json={"code": apps.places[0].code, "category": "manhole_cover"})
    assert r.status_code == 202, r.text
    report_id = r.json()["report_id"]
    # the read model as the closer's case.resolved would leave it (the events are tested elsewhere)
    with apps.reporter.state.reporter.runtime.db.session(write=True) as s:
        s.execute(
            text(
                "UPDATE report SET case_id = 'CFUZZ1', status = 'resolved', case_version = 4"
                " WHERE report_id = :r"
            ),
            {"r": report_id},
        )
    operation = reporter["/api/v1/reports/{report_id}/feedback"]["POST"]
    statuses = []
    for _ in range(2):
        case = operation.Case(path_parameters={"report_id": report_id}, body={"fixed": True, "rating": 5})
        response = case.call_and_validate(
            app=without_lifespan(apps.reporter), cookies=dict(rider.cookies), checks=CHECKS
        )
        statuses.append(response.status_code)
    assert statuses == [201, 200]


def test_a_delivery_retry_answers_as_documented(apps: Apps) -> None:
    """A real failed delivery's retry (200) and its repeat (409, not failed any more), and the list
    with rows in it, pass every check."""
    listing = notifier["/api/v1/deliveries"]["GET"].Case(query={"status": "failed"})
    listed = listing.call_and_validate(app=without_lifespan(apps.notifier), headers=apps.admin, checks=CHECKS)
    failed = [d["id"] for d in listed.json()["items"]]
    assert len(failed) >= 1
    operation = notifier["/api/v1/deliveries/{delivery_id}/retry"]["POST"]
    statuses = []
    for _ in range(2):
        case = operation.Case(path_parameters={"delivery_id": failed[-1]})
        response = case.call_and_validate(
            app=without_lifespan(apps.notifier), headers=apps.admin, checks=CHECKS
        )
        statuses.append(response.status_code)
    assert statuses == [200, 409]


# -- the documents themselves ---------------------------------------------------------------------


@pytest.mark.parametrize("service", ["reporter", "router", "closer", "notifier"])
def test_every_operation_documents_its_errors(service: str) -> None:
    """Every operation documents its client errors (the envelope, or its own shape), a 422 envelope
    wherever it takes input, and FastAPI's own 422 shape ({"detail": [...]}) is gone."""
    spec = openapi_of(service)
    assert "HTTPValidationError" not in json.dumps(spec)
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert any(status.startswith("4") for status in responses), (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert responses["422"]["content"]["application/json"]["schema"] == envelope, (method, path)

"""Schemathesis against the OpenAPI of the reporter, router and closer, in process (issue 12, item 4).

Each service is the real app (`build()`) on SQLite with the demo data, reached through ASGI with no
lifespan (no broker, no network). Every operation gets a bounded, reproducible run: the examples and
coverage phases plus `MAX_EXAMPLES` generated cases, derandomized under a fixed seed. Staff routes are
called with the demo admin's real token, so the fuzzer gets past 401 to the handlers.

Checks: no 5xx; each status is documented; each body matches its documented schema and content type;
each error (4xx) is the contract's envelope {"error": {"code", "message", "details"}}.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.fuzz import Apps, build_apps, envelope_problems, openapi_of, without_lifespan

MAX_EXAMPLES = 25
SEED = 20261202

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


reporter = _schema("reporter")
router = _schema("router")
closer = _schema("closer")

# `/readyz` answers 503 by design while the broker is unreachable, as it always is here (documented)
NO_BROKER_CHECKS = [c for c in CHECKS if c is not not_a_server_error]


def checks_for(case: schemathesis.Case) -> list[Any]:
    """The checks of one case."""
    return NO_BROKER_CHECKS if case.operation.path == "/readyz" else CHECKS


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


@closer.parametrize()
@FUZZ
def test_closer(case: schemathesis.Case, apps: Apps) -> None:
    """The closer's operations, as the demo admin."""
    case.call_and_validate(app=without_lifespan(apps.closer), headers=apps.admin, checks=checks_for(case))

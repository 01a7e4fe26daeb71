"""Rate limits per code, per rider and per address, held across two reporter replicas on one database.

Two instances of the reporter app (as two replicas would be) share one database and a real Kafka;
the injectable clock moves time past the window instead of sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gridloop import demo, migrate
from gridloop.clock import FrozenClock, SystemClock, set_clock
from gridloop.db import Database
from gridloop.settings import Settings
from gridloop.topics import ensure_topics
from schemas.reference import load_jurisdiction, load_places
from services.reporter import cli as reporter_cli
from services.reporter.app import build
from services.reporter.config import RateLimits
from services.reporter.credentials import new_rider_token
from services.reporter.models import Base

pytestmark = [pytest.mark.kafka]
PLACES = load_places(demo.DEMO_PLACES)


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """A frozen process clock for the test."""
    frozen = FrozenClock()
    set_clock(frozen)
    yield frozen
    set_clock(SystemClock())


@pytest.fixture
def replicas(kafka_bootstrap: str, tmp_path: Path, clock: FrozenClock) -> Iterator[list[TestClient]]:
    """Two reporter replicas sharing one database."""
    prefix = f"lim{uuid.uuid4().hex[:6]}."
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        var_dir=tmp_path,
        topic_prefix=prefix,
        jwt_secret="test-secret",
        session_timeout_ms=6000,
    )
    ensure_topics(kafka_bootstrap, 2, 1, prefix=prefix)
    migrate.upgrade("reporter", settings.db_url("reporter"))
    db = Database(settings.db_url("reporter"), Base.metadata)
    reporter_cli.load_places(db, load_jurisdiction(settings.jurisdiction_dir))
    db.dispose()
    apps = [build(settings), build(settings)]
    clients = [TestClient(app) for app in apps]
    for client in clients:
        client.__enter__()
    try:
        yield clients
    finally:
        for client in clients:
            client.__exit__(None, None, None)


def limit(clients: list[TestClient], **values: int) -> None:
    """Set the same limits on every replica (as the same environment would)."""
    for client in clients:
        config = RateLimits.model_validate(
            {"per_code": 0, "per_rider": 0, "per_address": 0, "new_riders_per_address": 0, **values}
        )
        client.app.state.reporter.limits = config  # type: ignore[attr-defined]


def post(
    client: TestClient, rider: str, code: str, key: str | None = None
) -> tuple[int, dict[str, Any], str]:
    """One report from a rider (by cookie); (status, body, Retry-After)."""
    client.cookies.set("gl_rider", rider)
    r = client.post(
        "/api/v1/reports",
        json={"code": code, "category": "sanitation"},
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )
    return r.status_code, r.json(), r.headers.get("Retry-After", "")


def rider() -> str:
    """A fresh rider token, signed as the reporter signs them (made-up cookies make no riders)."""
    return new_rider_token("test-secret")


def test_per_rider_limit_holds_across_replicas(replicas: list[TestClient], clock: FrozenClock) -> None:
    """Two reports per rider per window, whichever replica takes them; a retry is never limited."""
    a, b = replicas
    limit(replicas, per_rider=2)
    me = rider()
    first = post(a, me, PLACES[0].code, key="first-key")
    assert first[0] == 202
    clock.advance(timedelta(seconds=100))
    assert post(b, me, PLACES[1].code)[0] == 202
    status, body, retry = post(a, me, PLACES[2].code)
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert body["error"]["details"]["limit"] == "rider"
    assert retry == "500"  # the first report leaves the 600 s window in 500 s
    again = post(b, me, PLACES[0].code, key="first-key")  # a retry of an accepted report
    assert again[0] == 202 and again[1]["report_id"] == first[1]["report_id"]
    assert post(b, rider(), PLACES[2].code)[0] == 202  # someone else is not limited
    clock.advance(timedelta(seconds=501))
    assert post(b, me, PLACES[2].code)[0] == 202


def test_per_code_and_per_address_limits(replicas: list[TestClient], clock: FrozenClock) -> None:
    """A flood on one code, or from one address, is stopped with 429 and Retry-After."""
    a, b = replicas
    limit(replicas, per_code=3)
    hot = PLACES[5].code
    for i in range(3):
        assert post((a, b)[i % 2], rider(), hot)[0] == 202
    status, body, retry = post(a, rider(), hot)
    assert status == 429 and body["error"]["details"]["limit"] == "code" and retry == "600"
    assert post(a, rider(), PLACES[6].code)[0] == 202
    metrics = a.get("/metrics").text
    assert 'gridloop_reports_rejected_total{reason="rate_limited"}' in metrics

    clock.advance(timedelta(hours=1))
    limit(replicas, per_address=4)
    for i in range(4):
        assert post((a, b)[i % 2], rider(), PLACES[10 + i].code)[0] == 202
    status, body, retry = post(b, rider(), PLACES[20].code)
    assert status == 429 and body["error"]["details"]["limit"] == "address" and int(retry) > 0

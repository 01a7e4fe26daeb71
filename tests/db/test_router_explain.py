"""`GET /api/v1/route/explain` on the router's real app and database (no broker needed to explain)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gridloop import migrate
from gridloop.clock import FrozenClock, SystemClock, set_clock, utcnow
from gridloop.db import Database
from gridloop.settings import Settings
from schemas import codes
from schemas.events import Location
from services.router.app import build
from services.router.models import Base, KnownPlace
from tests.support.router import MANHOLE, PLACES, Router, submitted

EXPLAIN = "/api/v1/route/explain"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Router]]:
    """The router app on a migrated SQLite database, with a replica to put cases into its index."""
    clock = FrozenClock()
    set_clock(clock)
    url = f"sqlite:///{tmp_path / 'router.db'}"
    migrate.upgrade("router", url)
    # port 9 (discard): the broker is never contacted, the app's lifespan is not run
    app = build(Settings(router_database_url=url, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", var_dir=tmp_path))
    replica = Router(url)
    try:
        yield TestClient(app), replica
    finally:
        replica.close()
        app.state.runtime.db.dispose()
        set_clock(SystemClock())


def explain(client: TestClient, **params: Any) -> dict[str, Any]:
    """GET explain, expecting 200."""
    r = client.get(EXPLAIN, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_explain_a_point_inside_a_grid(client: tuple[TestClient, Router]) -> None:
    """A point in 开鲁网格: its grid, station, no rule, no duplicate, a new case, and why in zh and en."""
    body = explain(client[0], lat=31.3395, lon=121.511, category="manhole_cover")
    assert body["decision"] == "open"
    assert body["grid"]["id"] == "yh-g1" and body["grid"]["name_zh"] == "开鲁网格"
    assert body["street"]["id"] == "yinhang"
    assert body["station"] == {
        "id": "yh-s1",
        "name_zh": "开鲁网格站",
        "name_en": "Kailu Grid Station",
        "kind": "grid_station",
    }
    assert body["rule"] is None and body["duplicate"] is None
    assert body["priority"] == "urgent"
    assert "开鲁网格" in body["reason"] and "新立案" in body["reason"]
    assert "lies in Kailu Grid" in body["reason_en"] and "a new case" in body["reason_en"]
    assert body["data_version"]


def test_explain_by_code(client: tuple[TestClient, Router]) -> None:
    """?code= gives the printed place, its grid and station, without asking the reporter."""
    body = explain(client[0], code=MANHOLE.code, category="manhole_cover")
    assert body["place"] == {
        "code": MANHOLE.code,
        "place_id": MANHOLE.place_id,
        "name": MANHOLE.name_zh,
        "source": "reference",
    }
    assert body["grid"]["id"] == MANHOLE.grid_id
    assert MANHOLE.name_zh in body["reason"]
    # typed the way riders type it: lower case with a dash
    lowered = explain(client[0], code=codes.format_code(MANHOLE.code).lower(), category="manhole_cover")
    assert lowered["place"]["place_id"] == MANHOLE.place_id


def test_explain_a_code_learned_from_reports(client: tuple[TestClient, Router]) -> None:
    """A code an admin made at run time (not in the reference file) is known once a report used it."""
    app, replica = client
    code = codes.new_code(random.Random(42))
    assert app.get(EXPLAIN, params={"code": code, "category": "other"}).status_code == 404
    event = submitted("k1", "a", category="other", lat=31.337, lon=121.540)
    data = event.data | {"code": code, "place_id": "yh-new", "place_name": "新设报告点", "grid_id": "yh-g3"}
    replica.feed([event.model_copy(update={"data": data})])
    body = explain(app, code=code, category="other")
    assert body["place"]["source"] == "reports" and body["place"]["name"] == "新设报告点"
    assert body["grid"]["id"] == "yh-g3"


def test_explain_outside_every_grid(client: tuple[TestClient, Router]) -> None:
    """Outside the street: triage at the centre, and the reason says the point is outside every grid."""
    body = explain(client[0], lat=31.36, lon=121.52, category="manhole_cover")
    assert body["decision"] == "triage" and body["grid"] is None
    assert body["station"]["id"] == "yh-centre" and body["station"]["kind"] == "centre"
    assert "outside every grid" in body["reason_en"] and "triage" in body["reason_en"]
    assert "不在任何网格内" in body["reason"]


def test_explain_a_rule_and_an_unknown_category(client: tuple[TestClient, Router]) -> None:
    """A gas hazard names the rule and the gas unit; an unknown category is triage with the reason."""
    gas = explain(client[0], lat=31.337, lon=121.540, category="gas_hazard")
    assert gas["station"]["id"] == "yh-gas" and gas["rule"]["id"] == "yh-r1"
    assert "燃气" in gas["rule"]["reason_zh"] and "yh-r1" in gas["reason_en"]
    unknown = explain(client[0], lat=31.337, lon=121.540, category="ufo_landing")
    assert unknown["decision"] == "triage" and unknown["category"] is None
    assert "unknown category 'ufo_landing'" in unknown["reason_en"]


def test_explain_names_the_duplicate_and_its_distance(client: tuple[TestClient, Router]) -> None:
    """With an open case 11 m away, explain names it, its distance and its riders."""
    app, replica = client
    now = utcnow()
    for i, rider in enumerate(("a", "b", "c")):
        replica.feed([submitted(f"m{i}", rider, place=MANHOLE, at=now - timedelta(minutes=10 - i))])
    body = explain(app, lat=MANHOLE.lat + 0.0001, lon=MANHOLE.lon, category="manhole_cover")
    dup = body["duplicate"]
    assert body["decision"] == "merge" and dup is not None
    assert 10 < dup["distance_m"] < 12
    assert dup["distinct_riders"] == 3 and dup["common_issue"] is True
    assert dup["case_id"] in body["reason"] and "共性问题" in body["reason"]
    # another category at the same point is not a duplicate
    assert explain(app, lat=MANHOLE.lat, lon=MANHOLE.lon, category="sanitation")["duplicate"] is None


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"category": "manhole_cover"}, 422, "invalid"),
        ({"category": "manhole_cover", "lat": 31.33}, 422, "invalid"),
        ({"category": "manhole_cover", "lat": 91, "lon": 121.5}, 422, "invalid"),
        ({"lat": 31.33, "lon": 121.5}, 422, "invalid"),
        ({"category": "manhole_cover", "code": "W7Q23QVE"}, 422, "check_the_code"),
        ({"category": "manhole_cover", "code": "HELLO"}, 422, "bad_code"),
        ({"category": "manhole_cover", "code": codes.new_code(random.Random(7))}, 404, "unknown_code"),
    ],
)
def test_explain_bad_input(
    client: tuple[TestClient, Router], params: dict[str, Any], status: int, code: str
) -> None:
    """Bad input is a clear error in the JSON envelope with the right status."""
    r = client[0].get(EXPLAIN, params=params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


def test_metrics_show_every_decision_series(client: tuple[TestClient, Router]) -> None:
    """/metrics has the contract names; each decision series exists before the first report."""
    text = client[0].get("/metrics").text
    for decision in ("open", "merge", "triage"):
        assert f'gridloop_route_decisions_total{{decision="{decision}"}}' in text
    assert "gridloop_route_duration_seconds_bucket" in text
    assert "gridloop_route_lock_wait_seconds_bucket" in text
    assert "gridloop_route_late_merges_total" in text


def test_learned_place_keeps_the_latest_point(tmp_path: Path) -> None:
    """The place book updates a code's place from each report that used it."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Database(url, Base.metadata).create_all()
    replica = Router(url)
    try:
        place = PLACES[0]
        replica.feed([submitted("l1", "a", place=place)])
        replica.feed([submitted("l2", "a", place=place, lat=place.lat + 0.0001, lon=place.lon)])
        with replica.db.session() as s:
            row = s.get(KnownPlace, place.code)
            assert row is not None and row.lat == pytest.approx(place.lat + 0.0001)
            assert Location(lat=row.lat, lon=row.lon)
    finally:
        replica.close()

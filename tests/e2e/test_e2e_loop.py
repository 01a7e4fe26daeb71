"""The minimal loop, end to end, with the three services as real processes on Apache Kafka."""

from __future__ import annotations

import concurrent.futures
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gridloop.demo import DEMO_PLACES
from gridloop.stack import Stack
from schemas.reference import load_places
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PLACES = load_places(DEMO_PLACES)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One embedded stack for this module, on the session's Kafka."""
    prefix = f"e2e{uuid.uuid4().hex[:6]}."
    settings = stack_settings(
        tmp_path_factory.mktemp("e2e"), kafka_bootstrap, prefix, redrive_after_seconds=5
    )
    s = start_stack(settings)
    yield s
    s.stop()


def post_report(
    base: str,
    code: str,
    category: str = "manhole_cover",
    key: str | None = None,
    phone: httpx.Client | None = None,
    **extra: object,
) -> httpx.Response:
    """POST one report (from `phone`, which keeps its rider cookie, or from a new caller)."""
    headers = {"Idempotency-Key": key} if key else {}
    body = {"code": code, "category": category, **extra}
    post = phone.post if phone is not None else httpx.post
    return post(f"{base}/api/v1/reports", json=body, headers=headers, timeout=10)


def test_report_reaches_station_queue_and_rider_sees_case(stack: Stack) -> None:
    """POST a report; it shows in that grid station's queue; the reporter shows the case, status new."""
    place = next(p for p in PLACES if p.grid_id == "yh-g2")
    reporter, closer = stack.url("reporter"), stack.url("closer")
    r = post_report(
        reporter, place.code, "fire_lane_blocked", key=str(uuid.uuid4()), description="消防通道被三轮车堵住"
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["case_id"] is None and body["status"] == "received"
    # the tracking link carries the secret only this phone got (the report id alone unlocks nothing)
    assert re.search(rf"/t/{body['report_id']}\?k=[\w-]{{22}}$", body["tracking_url"]), body["tracking_url"]

    token = staff_token(closer, "yh-s2")
    auth = {"Authorization": f"Bearer {token}"}

    def in_queue() -> dict[str, object] | None:
        items = httpx.get(f"{closer}/api/v1/queue", params={"station": "yh-s2"}, headers=auth).json()["items"]
        return next((i for i in items if i["description"] == "消防通道被三轮车堵住"), None)

    case = wait_for(in_queue, timeout=20, what="the case in yh-s2's queue")
    assert case["status"] == "new" and case["category"] == "fire_lane_blocked"

    def rider_view() -> dict[str, object] | None:
        view = httpx.get(f"{reporter}/api/v1/reports/{body['report_id']}").json()
        return view if view["case_id"] else None

    view = wait_for(rider_view, timeout=20, what="the case id on the reporter")
    assert view["case_id"] == case["case_id"]
    assert view["status"] == "new"
    assert "rider_ref" not in view and "rider_no" not in view

    # another station's staff cannot see it: 404, not 403
    other = {"Authorization": f"Bearer {staff_token(closer, 'yh-s1')}"}
    assert httpx.get(f"{closer}/api/v1/cases/{case['case_id']}", headers=other).status_code == 404
    assert httpx.get(f"{closer}/api/v1/cases/{case['case_id']}", headers=auth).status_code == 200


def test_idempotency_key_returns_same_answer(stack: Stack) -> None:
    """The same key and body from the same phone answer the same report; another body under that key
    is 409; another caller with the same key gets a report of its own."""
    place = PLACES[3]
    key = str(uuid.uuid4())
    base = stack.url("reporter")
    with httpx.Client() as phone:
        first = post_report(base, place.code, "sanitation", key=key, phone=phone)
        again = post_report(base, place.code, "sanitation", key=key, phone=phone)
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json()
        other = post_report(base, place.code, "other", key=key, phone=phone)
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_key_reused"
    stranger = post_report(base, place.code, "sanitation", key=key)
    assert stranger.status_code == 202
    assert stranger.json()["report_id"] != first.json()["report_id"]


def test_bad_codes_are_clear_errors(stack: Stack) -> None:
    """A mistyped code says 'check the code'; an unknown code is 404; a bad category 422."""
    base = stack.url("reporter")
    good = PLACES[0].code
    typo = good[:-1] + ("2" if good[-1] != "2" else "3")
    r = post_report(base, typo)
    assert r.status_code == 422 and r.json()["error"]["code"] == "check_the_code"
    r = post_report(base, good, category="no_such_category")
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_category"
    r = httpx.post(f"{base}/api/v1/reports", json={"code": good, "category": 5})
    assert r.status_code == 422 and "error" in r.json()


def test_every_service_exports_contract_metrics(stack: Stack) -> None:
    """Each /metrics serves the contract names; readiness reports database and broker."""
    assert post_report(stack.url("reporter"), PLACES[5].code, "sanitation").status_code == 202
    wait_for(
        lambda: (
            "gridloop_report_to_queue_seconds_count" in httpx.get(stack.url("closer") + "/metrics").text
            and "gridloop_route_decisions_total{" in httpx.get(stack.url("router") + "/metrics").text
        ),
        timeout=30,
        what="the report routed and queued",
    )
    reporter = httpx.get(stack.url("reporter") + "/metrics").text
    assert "gridloop_reports_received_total{" in reporter
    assert 'gridloop_outbox_pending{service="reporter"}' in reporter
    router = httpx.get(stack.url("router") + "/metrics").text
    assert "gridloop_route_decisions_total{" in router
    closer = httpx.get(stack.url("closer") + "/metrics").text
    assert "gridloop_report_to_queue_seconds_bucket" in closer
    for service in ("reporter", "router", "closer"):
        ready = httpx.get(stack.url(service) + "/readyz").json()
        assert ready["checks"] == {"database": True, "broker": True}
        assert httpx.get(stack.url(service) + "/asyncapi").json()["asyncapi"]


def test_consumer_lag_is_measured_per_group_and_topic(stack: Stack) -> None:
    """Each consuming service exports lag per group and topic, back to zero once it caught up."""
    import re

    def lags() -> dict[tuple[str, str], float]:
        found: dict[tuple[str, str], float] = {}
        for service in ("reporter", "router", "closer"):
            text = httpx.get(stack.url(service) + "/metrics").text
            for group, topic, value in re.findall(
                r'gridloop_consumer_lag\{group="([^"]+)",topic="([^"]+)"\} (\S+)', text
            ):
                found[(group, topic)] = float(value)
        return found

    expected = {
        ("router", "reports.submitted"),
        ("router-cases", "cases.events"),
        ("closer", "reports.routed"),
        ("reporter", "cases.events"),
    }
    wait_for(lambda: expected <= set(lags()), timeout=30, what="lag series for every group")
    wait_for(lambda: all(v == 0 for v in lags().values()), timeout=30, what="lag back to zero")


def _closer_reports(stack: Stack) -> dict[str, str]:
    db = Path(stack.settings.db_url("closer").split("///", 1)[1])
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT report_id, case_id FROM case_report").fetchall())


def test_kill_router_mid_stream_loses_nothing(stack: Stack) -> None:
    """kill -9 of the router while reports are posted, then a restart: each report in exactly one case."""
    base = stack.url("reporter")
    accepted: list[str] = []

    def send(i: int) -> str:
        place = PLACES[i % len(PLACES)]
        r = post_report(base, place.code, ("sanitation", "shared_bikes", "other")[i % 3], key=f"kill-{i}")
        assert r.status_code == 202, r.text
        return str(r.json()["report_id"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        first = list(pool.map(send, range(60)))
        stack.kill("router")
        second = list(pool.map(send, range(60, 120)))  # intake goes on with the router dead
        stack.restart("router")
        third = list(pool.map(send, range(120, 150)))
    accepted = first + second + third
    assert len(set(accepted)) == 150

    def all_cased() -> bool:
        return set(accepted) <= set(_closer_reports(stack))

    wait_for(all_cased, timeout=60, every=0.5, what="every report in a case")
    in_cases = _closer_reports(stack)
    assert len([r for r in accepted if r in in_cases]) == 150  # primary key: at most one case each

    def rider_sees_all() -> bool:
        return all(
            httpx.get(f"{base}/api/v1/reports/{rid}").json()["case_id"] == in_cases[rid]
            for rid in accepted[::10]
        )

    wait_for(rider_sees_all, timeout=30, every=0.5, what="the reporter's read model")


def test_simulate_drives_realistic_traffic(stack: Stack) -> None:
    """`gridloop simulate` sends a category mix with duplicates and a few bad inputs; intake answers all."""
    import asyncio

    from gridloop.simulate import simulate

    tally = asyncio.run(
        simulate(stack.url("reporter"), stack.url("closer"), rate=20, duration=4, seed=7, staff=False)
    )
    accepted = sum(v for k, v in tally.sent.items() if k.endswith(":202"))
    assert accepted >= 60
    assert not [k for k in tally.sent if ":5" in k or "error" in k], tally.sent
    assert tally.sent["hot:202"] > 5  # hot places draw duplicates
    wait_for(
        lambda: (
            'gridloop_route_decisions_total{decision="merge"}'
            in httpx.get(stack.url("router") + "/metrics").text
        ),
        timeout=30,
        what="merges from the hot places",
    )


CONTRACT: dict[str, tuple[str, set[str]]] = {
    # family name (as the parser reports it) -> (the service that produces it, its label names)
    "gridloop_reports_received": ("reporter", {"category", "channel"}),
    "gridloop_reports_rejected": ("reporter", {"reason"}),
    "gridloop_outbox_pending": ("reporter", {"service"}),
    "gridloop_route_decisions": ("router", {"decision"}),
    "gridloop_route_duration_seconds": ("router", set()),
    "gridloop_route_lock_wait_seconds": ("router", set()),
    "gridloop_cases_open": ("closer", {"station", "status"}),
    "gridloop_case_transitions": ("closer", {"action"}),
    "gridloop_case_ack_seconds": ("closer", {"category"}),
    "gridloop_case_resolve_seconds": ("closer", {"category"}),
    "gridloop_sla_breaches": ("closer", {"station", "deadline"}),
    "gridloop_report_to_queue_seconds": ("closer", set()),
    "gridloop_consumer_lag": ("router", {"group", "topic"}),
    "gridloop_deadletter": ("router", {"topic"}),
    "gridloop_http_requests": ("closer", {"service", "method", "route", "status"}),
    "gridloop_http_request_duration_seconds": ("closer", {"service", "method", "route"}),
}


def test_contract_metric_names_and_labels(stack: Stack) -> None:
    """Every contract metric of DESIGN.md is exported with exactly its contract labels, no per-case labels."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    place = next(p for p in PLACES if p.grid_id == "yh-g5")
    assert (
        post_report(stack.url("reporter"), place.code, "estate_access", description="contract").status_code
        == 202
    )
    assert post_report(stack.url("reporter"), "ZZZZZZZZ", "other").status_code in (404, 422)  # a rejection
    closer = stack.url("closer")
    auth = {"Authorization": f"Bearer {staff_token(closer, 'yh-s5')}"}

    def find() -> dict[str, object] | None:
        items = httpx.get(f"{closer}/api/v1/queue", params={"station": "yh-s5"}, headers=auth).json()["items"]
        return next((i for i in items if i["description"] == "contract"), None)

    case = wait_for(find, timeout=30, what="the case")
    r = httpx.post(
        f"{closer}/api/v1/cases/{case['case_id']}/transitions",
        json={"action": "acknowledge", "version": case["version"]},
        headers=auth,
    )
    assert r.status_code == 200, r.text

    def families(service: str) -> dict[str, Metric]:
        text = httpx.get(stack.url(service) + "/metrics").text
        return {f.name: f for f in text_string_to_metric_families(text)}

    wait_for(
        lambda: families("closer")["gridloop_case_ack_seconds"].samples,
        timeout=30,
        what="the sign-for histogram",
    )
    wait_for(
        lambda: families("closer")["gridloop_cases_open"].samples,
        timeout=30,
        what="the open-case gauge",
    )
    for name, (service, labels) in CONTRACT.items():
        fams = families(service)
        assert name in fams, f"{service} does not export {name}"
        for sample in fams[name].samples:
            got = set(sample.labels) - {"le"}
            assert got == labels, f"{name} has labels {got}, contract says {labels}"
            assert not {"case_id", "report_id", "rider_ref", "rider"} & got

"""The router's "done when", as a new user tries it on the whole stack (three real processes, Kafka).

Three riders (three phones: three `gl_rider` cookies) report the same manhole from the same code:
one case marked 共性问题 with three riders. A GPS report outside the street: the centre's triage
queue. The explain endpoint tells why, by point and by code.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

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
    """The embedded stack on the session's Kafka, with its own data and topics."""
    prefix = f"rt{uuid.uuid4().hex[:6]}."
    s = start_stack(stack_settings(tmp_path_factory.mktemp("router-e2e"), kafka_bootstrap, prefix))
    yield s
    s.stop()


def _case(closer: str, token: str, case_id: str) -> dict[str, Any]:
    r = httpx.get(
        f"{closer}/api/v1/cases/{case_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def _case_id(reporter: str, report_id: str) -> str | None:
    view = httpx.get(f"{reporter}/api/v1/reports/{report_id}", timeout=10).json()
    case_id: str | None = view.get("case_id")
    return case_id


def test_three_riders_one_manhole_make_one_common_issue(stack: Stack) -> None:
    """Three phones, one code, one manhole: one case, three riders, 共性问题; explain by code shows it."""
    reporter, closer, router = stack.url("reporter"), stack.url("closer"), stack.url("router")
    place = next(p for p in PLACES if p.grid_id == "yh-g1")
    phones = [httpx.Client(timeout=10) for _ in range(3)]
    report_ids = []
    try:
        for phone in phones:
            r = phone.post(
                f"{reporter}/api/v1/reports",
                json={
                    "code": place.code,
                    "category": "manhole_cover",
                    "description": "井盖破损，有人差点踩空",
                },
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            assert r.status_code == 202, r.text
            report_ids.append(r.json()["report_id"])
        assert len({phone.cookies.get("gl_rider") for phone in phones}) == 3  # three riders
    finally:
        for phone in phones:
            phone.close()

    def one_case() -> str | None:
        cases = {_case_id(reporter, rid) for rid in report_ids}
        return cases.pop() if len(cases) == 1 and None not in cases else None

    case_id = wait_for(one_case, timeout=60, every=0.5, what="all three reports in one case")
    token = staff_token(closer, "yh-s1")

    def common() -> dict[str, Any] | None:
        case = _case(closer, token, case_id)
        return case if case["common_issue"] and case["distinct_riders"] == 3 else None

    case = wait_for(common, timeout=60, every=0.5, what="the case marked 共性问题 with three riders")
    assert case["station_id"] == "yh-s1" and case["category"] == "manhole_cover"
    assert case["report_count"] == 3 and case["priority"] == "urgent"

    explained = httpx.get(
        f"{router}/api/v1/route/explain", params={"code": place.code, "category": "manhole_cover"}, timeout=10
    ).json()
    assert explained["decision"] == "merge"
    assert explained["place"]["name"] == place.name_zh and explained["grid"]["id"] == "yh-g1"
    assert explained["duplicate"]["case_id"] == case_id
    assert explained["duplicate"]["distinct_riders"] == 3 and explained["duplicate"]["common_issue"] is True
    assert "共性问题" in explained["reason"] and "common issue" in explained["reason_en"]


def test_gps_report_outside_the_street_goes_to_triage_and_explain_says_why(stack: Stack) -> None:
    """A GPS point north of the street goes to triage; explain says it is outside every grid."""
    reporter, closer, router = stack.url("reporter"), stack.url("closer"), stack.url("router")
    point = {"lat": 31.36, "lon": 121.52}
    r = httpx.post(
        f"{reporter}/api/v1/reports",
        json={"category": "manhole_cover", "location": point, "description": "路口井盖松动"},
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    report_id = r.json()["report_id"]
    case_id = wait_for(
        lambda: _case_id(reporter, report_id), timeout=60, every=0.5, what="a case for the report"
    )
    token = staff_token(closer, "yh-centre")
    case = wait_for(
        lambda: _case(closer, token, case_id), timeout=30, every=0.5, what="the case at the centre"
    )
    assert case["triage"] is True and case["station_id"] == "yh-centre"
    assert "不在任何网格内" in case["route_reason"]

    explained = httpx.get(
        f"{router}/api/v1/route/explain", params={**point, "category": "manhole_cover"}, timeout=10
    ).json()
    assert explained["decision"] == "triage" and explained["grid"] is None
    assert explained["station"]["id"] == "yh-centre"
    assert "outside every grid" in explained["reason_en"] and "不在任何网格内" in explained["reason"]
    metrics = httpx.get(f"{router}/metrics", timeout=10).text
    triaged = next(
        line
        for line in metrics.splitlines()
        if line.startswith('gridloop_route_decisions_total{decision="triage"}')
    )
    assert float(triaged.rsplit(" ", 1)[1]) >= 1

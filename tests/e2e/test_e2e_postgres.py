"""The minimal loop with every service on its own PostgreSQL database (production's engine)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from gridloop.demo import DEMO_PLACES
from schemas.reference import load_places
from tests.support.databases import new_pg_database
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


def test_loop_on_postgres(kafka_bootstrap: str, pg_server_url: str, tmp_path: Path) -> None:
    """Report → router → closer → queue → reporter shows the case, each service on PostgreSQL."""
    urls = {f"{s}_database_url": new_pg_database(pg_server_url) for s in ("reporter", "router", "closer")}
    settings = stack_settings(tmp_path, kafka_bootstrap, f"pg{uuid.uuid4().hex[:6]}.", **urls)
    stack = start_stack(settings)
    try:
        place = next(p for p in load_places(DEMO_PLACES) if p.grid_id == "yh-g4")
        r = httpx.post(
            f"{stack.url('reporter')}/api/v1/reports",
            json={"code": place.code, "category": "facility_damage", "description": "栏杆倒了"},
        )
        assert r.status_code == 202
        report_id = r.json()["report_id"]
        auth = {"Authorization": f"Bearer {staff_token(stack.url('closer'), 'yh-s4')}"}

        def queued() -> list[dict[str, object]]:
            items = httpx.get(f"{stack.url('closer')}/api/v1/queue", headers=auth).json()["items"]
            return [i for i in items if i["description"] == "栏杆倒了"]

        [case] = wait_for(queued, timeout=30, what="the case in yh-s4's queue")

        def rider_view() -> bool:
            view = httpx.get(f"{stack.url('reporter')}/api/v1/reports/{report_id}").json()
            return view["case_id"] == case["case_id"] and view["status"] == "new"

        wait_for(rider_view, timeout=30, what="the case on the reporter")
        assert "postgresql" in stack.service_env("closer")["DATABASE_URL"]
    finally:
        stack.stop()

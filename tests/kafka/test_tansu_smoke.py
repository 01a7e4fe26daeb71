"""The embedded default's own broker (Tansu): the loop works, and a full restart re-drives lost work."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from gridloop.brokers import free_port
from gridloop.demo import DEMO_PLACES
from schemas.reference import load_places
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.tansu, pytest.mark.slow]


def queue_descriptions(closer: str, station: str) -> set[str]:
    """Descriptions of the open cases in a station's queue."""
    auth = {"Authorization": f"Bearer {staff_token(closer, station)}"}
    items = httpx.get(f"{closer}/api/v1/queue", params={"station": station}, headers=auth).json()["items"]
    return {i["description"] for i in items}


def test_tansu_stack_loop_and_restart_redrive(tmp_path: Path) -> None:
    """Report → queue on Tansu; a report stranded by a broker restart still ends in a case."""
    place = next(p for p in load_places(DEMO_PLACES) if p.grid_id == "yh-g3")
    settings = stack_settings(tmp_path / "var", f"127.0.0.1:{free_port()}", "", redrive_after_seconds=3)
    stack = start_stack(settings, broker="tansu")
    try:
        reporter, closer = stack.url("reporter"), stack.url("closer")
        r = httpx.post(
            f"{reporter}/api/v1/reports",
            json={"code": place.code, "category": "sanitation", "description": "垃圾满溢 A"},
        )
        assert r.status_code == 202
        wait_for(lambda: "垃圾满溢 A" in queue_descriptions(closer, "yh-s3"), timeout=40, what="report A")

        stack.kill("router")  # B is accepted and published, but nobody routes it …
        b = httpx.post(
            f"{reporter}/api/v1/reports",
            json={"code": place.code, "category": "other", "description": f"B {uuid.uuid4().hex[:4]}"},
        )
        assert b.status_code == 202
        b_id = b.json()["report_id"]
    finally:
        stack.stop()  # … and the memory-only broker forgets it

    stack = start_stack(settings, broker="tansu")
    try:
        reporter, closer = stack.url("reporter"), stack.url("closer")
        assert "垃圾满溢 A" in queue_descriptions(closer, "yh-s3")  # the databases kept their data

        def b_has_case() -> bool:
            return bool(httpx.get(f"{reporter}/api/v1/reports/{b_id}").json()["case_id"])

        wait_for(b_has_case, timeout=60, every=0.5, what="report B re-driven into a case")
    finally:
        stack.stop()

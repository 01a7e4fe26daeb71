"""The assessment figures page (/console/stats) in headless Chromium on a phone: the 殷行 centre opens it
from the nav over weeks of demo history, changes the period, opens the 骑手/平台 tab and downloads the
CSV. The closer runs in process, served by uvicorn on a loopback port (no broker needed).

Screenshots land in the artifacts directory (test-artifacts/stats-*.png).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from gridloop import demo, demohistory, migrate
from gridloop.clock import utcnow
from gridloop.settings import Settings
from schemas.reference import load_places
from services.closer import demohistory as closer_history
from services.closer.app import build
from services.closer.cli import load_demo_staff
from services.closer.config import CloserConfig
from tests.db.test_closer_api import SECRET
from tests.support.served import serving

pytestmark = [pytest.mark.browser]


@pytest.fixture
def closer(tmp_path: Path) -> Iterator[FastAPI]:
    """The closer on SQLite with the demo accounts and 45 days of demo history."""
    url = f"sqlite:///{tmp_path / 'closer.db'}"
    migrate.upgrade("closer", url)
    settings = Settings(
        var_dir=tmp_path,
        closer_database_url=url,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        jwt_secret=SECRET,
        cookie_secure=False,
    )
    app = build(settings, CloserConfig())
    ctx = app.state.closer
    load_demo_staff(ctx.runtime.db, ctx.jurisdiction)
    history = demohistory.history(
        ctx.jurisdiction, load_places(demo.DEMO_PLACES), 45, utcnow(), ctx.config.work_timezone
    )
    closer_history.load(ctx.runtime.db, history)
    yield app
    ctx.runtime.db.dispose()


def test_the_centre_reads_and_exports_the_figures_on_a_phone(
    closer: FastAPI, phone: Any, artifacts: Path
) -> None:
    """Nav → this month by station; last month; the 骑手/平台 tab; the CSV link downloads the figures."""
    with serving(closer) as base:
        page = phone.new_page()
        page.goto(f"{base}/console/login")
        page.fill("input[name=username]", "yh-centre")
        page.fill("input[name=password]", demo.DEMO_PASSWORD)
        page.locator("form button[type=submit]").first.click()
        page.wait_for_url(f"{base}/console/queue")
        page.locator("nav a[href='/console/stats']").click()
        page.wait_for_url(f"{base}/console/stats")
        assert page.locator("h1").inner_text() == "考核统计"
        assert page.locator("#stats-period").input_value() == "this_month"
        assert page.locator("table.stats tfoot th").inner_text() == "合计"
        page.screenshot(path=str(artifacts / "stats-this-month.png"), full_page=True)

        page.select_option("#stats-period", "last_month")
        page.locator("form.stats-period button[type=submit]").click()
        page.wait_for_url("**/console/stats?*period=last_month*")
        stations = page.locator("table.stats tbody tr")
        assert stations.count() >= 2
        assert page.locator("table.stats tbody tr[data-key='yh-s1'] th").inner_text() == "开鲁网格站"
        assert page.locator("svg.hbars rect").count() >= 2
        page.screenshot(path=str(artifacts / "stats-last-month.png"), full_page=True)

        page.locator("nav.stats-by a", has_text="骑手/平台").click()
        page.wait_for_url("**/console/stats?*by=platform*")
        platforms = [t.strip() for t in page.locator("table.stats tbody th").all_inner_texts()]
        assert {"美团", "饿了么"} <= set(platforms)
        assert page.locator("table.stats thead th").all_inner_texts() == [
            "骑手/平台",
            "上报数",
            "案件数",
            "结案数",
            "骑手确认解决",
            "共性问题",
        ]
        page.screenshot(path=str(artifacts / "stats-platforms.png"), full_page=True)

        with page.expect_download() as got:
            page.locator("#export-csv").click()
        download = got.value
        assert download.suggested_filename.startswith("stats-platform-all-")
        lines = Path(download.path()).read_text(encoding="utf-8-sig").splitlines()
        assert lines[0].startswith("编号,名称,上报数,案件数")
        assert lines[-1].startswith(",合计,")
        assert len(lines) == len(platforms) + 2

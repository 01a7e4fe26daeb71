"""`gridloop up` as a new user runs it: banner, a working rider code, the station's notification printed,
and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from gridloop.brokers import free_port
from tests.support.stacks import staff_token, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _ignore_sigint() -> None:
    """The child's SIGINT disposition as `cmd &` leaves it: ignored, inherited through exec."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_up_prints_working_urls_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """The printed rider code takes a report that shows in the printed station's queue; an urgent one
    prints the station's notification in the terminal; SIGINT cleans up, even sent to an `up` started
    with SIGINT ignored."""
    ports = {s: free_port() for s in ("REPORTER", "ROUTER", "CLOSER", "NOTIFIER")}
    # as on a fresh machine: no dev flag from the suite; `up` with its demo data runs as a dev stack
    dropped = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "GRIDLOOP_DEV")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update({f"GRIDLOOP_{s}_PORT": str(p) for s, p in ports.items()})
    env.update(
        {
            "GRIDLOOP_VAR_DIR": str(tmp_path / "var"),
            "GRIDLOOP_SESSION_TIMEOUT_MS": "6000",
            "GRIDLOOP_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['REPORTER']}",
        }
    )
    out = tmp_path / "up.out"
    with out.open("wb") as sink:
        # started with SIGINT ignored on purpose, as a shell starts a background job and some supervisors
        # (and CI runners) start their children: `up` must still stop on Ctrl-C's signal
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridloop.cli", "up"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=_ignore_sigint,
        )
    try:
        wait_for(lambda: "Press Ctrl-C" in out.read_text(), timeout=150, every=0.5, what="the banner")
        text = out.read_text()
        assert "broker: kafka" in text
        assert "dev mode: the demo accounts are loaded" in text
        rider = re.search(r"Rider page \(scan this code\):\s+(\S+)/r/(\w+)", text)
        login = re.search(r"sign in as (\S+) / (\S+)", text)
        assert rider and login, text
        base, code = rider.groups()
        assert "█" in text  # the QR in the terminal
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5  # broker + four services
        assert f"failed: http://127.0.0.1:{ports['NOTIFIER']}/api/v1/deliveries" in text

        r = httpx.post(
            f"{base}/api/v1/reports",
            json={"code": code, "category": "ebike_flying_wire", "description": "飞线充电 from up"},
        )
        assert r.status_code == 202, r.text
        closer = f"http://127.0.0.1:{ports['CLOSER']}"
        auth = {"Authorization": f"Bearer {staff_token(closer, login.group(1), login.group(2))}"}

        def queued() -> bool:
            items = httpx.get(f"{closer}/api/v1/queue", headers=auth).json()["items"]
            return any(i["description"] == "飞线充电 from up" for i in items)

        wait_for(queued, timeout=30, what="the report in the printed station's queue")

        urgent = httpx.post(
            f"{base}/api/v1/reports",
            json={
                "code": code,
                "category": "manhole_cover",
                "danger_now": True,
                "description": "井盖 from up",
            },
        )
        assert urgent.status_code == 202, urgent.text
        wait_for(
            lambda: "🔔 通知 【紧急】新案件 · 井盖缺失或破损" in out.read_text(),
            timeout=30,
            what="the station's notification printed",
        )
        printed = out.read_text().split("🔔", 1)[1]
        assert "网格站：" in printed and "/console/cases/c_" in printed
        assert "from up" not in printed  # the rider's words stay out of notifications
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, out.read_text()[-2000:]
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left behind: {alive}"

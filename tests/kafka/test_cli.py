"""The `gridloop` command: topics, migrations, demo data and staff accounts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from kafka import KafkaAdminClient

from gridloop.brokers import free_port
from gridloop.topics import ALL_TOPICS
from tests.support.stacks import wait_for

GRIDLOOP = [sys.executable, "-m", "gridloop.cli"]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess, as a user would."""
    return subprocess.run(
        [*GRIDLOOP, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.kafka
def test_topics_created_with_explicit_partitions(kafka_bootstrap: str, topic_prefix: str) -> None:
    """`gridloop topics` creates every topic with the configured partitions; a second run verifies."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GRIDLOOP_TOPIC_PREFIX": topic_prefix,
        "GRIDLOOP_TOPIC_PARTITIONS": "4",
    }
    first = run(["topics"], env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == len(ALL_TOPICS) == 7
    second = run(["topics"], env)
    assert second.stdout.count("exists") == 7
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
    finally:
        admin.close()
    for name in ALL_TOPICS:
        assert described[topic_prefix + name] == 4
    grown = run(["topics", "--partitions", "6"], env)
    assert grown.stdout.count("grown") == 7


@pytest.mark.kafka
def test_topics_wait_for_the_brokers_replication_needs(kafka_bootstrap: str, topic_prefix: str) -> None:
    """On a one-broker cluster, `gridloop topics` asked for replication 2 (or for 2 brokers) waits,
    then exits 1 naming the one live broker, and creates nothing; with 1 it creates at once."""
    from gridloop.topics import live_brokers

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        live = live_brokers(admin.describe_cluster())
        assert len(live) == 1

        def ours() -> set[str]:
            return {t for t in admin.list_topics() if t.startswith(topic_prefix)}

        env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "GRIDLOOP_TOPIC_PREFIX": topic_prefix}
        expected = (
            f"error: Kafka at {kafka_bootstrap} has 1 of the 2 live brokers the topics need "
            f"(live: {live[0]}) after waiting 2 s; start the missing brokers, or lower "
            "GRIDLOOP_TOPIC_REPLICATION / --wait-brokers\n"
        )
        for args in (["--replication", "2"], ["--wait-brokers", "2"]):
            refused = run(["topics", *args, "--wait", "2"], env)
            assert (refused.returncode, refused.stdout) == (1, "")
            assert refused.stderr.endswith(expected), refused.stderr
            assert ours() == set()
        created = run(["topics", "--wait-brokers", "1"], env)
        assert created.returncode == 0, created.stderr
        assert len(ours()) == len(ALL_TOPICS)
    finally:
        admin.close()


def test_db_upgrade_demo_and_staff(tmp_path: Path) -> None:
    """`db upgrade` migrates the four databases; `demo load` and `staff add` fill them."""
    env = {"GRIDLOOP_VAR_DIR": str(tmp_path), "GRIDLOOP_STAFF_PASSWORD": "s3cret-pass"}
    up = run(["db", "upgrade"], env)
    assert up.returncode == 0, up.stderr
    assert {p.name for p in tmp_path.glob("*.db")} == {"reporter.db", "router.db", "closer.db", "notifier.db"}
    demo = run(["demo", "load"], env)
    assert demo.returncode == 0 and "places with codes" in demo.stdout
    added = run(["staff", "add", "wang", "--role", "staff", "--station", "yh-s1"], env)
    assert added.returncode == 0, added.stderr
    short = run(["staff", "add", "li", "--password", "short"], env)
    assert short.returncode == 2 and "8 characters" in short.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "closer.db") as conn:
        row = conn.execute("SELECT role, stations, password_hash FROM staff WHERE username='wang'").fetchone()
    assert row[0] == "staff" and row[1] == "yh-s1" and row[2].startswith("$argon2id$")


@pytest.mark.parametrize("command", [["reporter"], ["router"], ["closer"], ["notifier"], ["up", "--no-demo"]])
def test_production_refuses_a_known_secret(command: list[str], tmp_path: Path) -> None:
    """Outside dev mode a service (and `gridloop up`) stops at once with a message naming the problem."""
    env = {
        "GRIDLOOP_DEV": "0",
        "GRIDLOOP_VAR_DIR": str(tmp_path),
        "GRIDLOOP_JWT_SECRET": "change-me-in-production",
        "GRIDLOOP_PUBLIC_BASE_URL": "http://gridloop.example.org",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }
    refused = run(command, env)
    assert refused.returncode == 2, refused.stderr
    assert "refuses to start with unsafe settings" in refused.stderr
    assert "GRIDLOOP_JWT_SECRET is the published example 'change-me-in-production'" in refused.stderr
    assert "GRIDLOOP_PUBLIC_BASE_URL is http://gridloop.example.org" in refused.stderr
    assert not list(tmp_path.iterdir())  # nothing was started or written


def _ignore_sigint() -> None:
    """How a shell starts a background job (`gridloop closer &`) and some supervisors start a child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("service", "sig", "sigint_ignored"),
    # each service shares the one entry point (gridloop.cli.main installs the handlers): one service
    # per signal keeps the suite's time; test_up covers `up` and its children with SIGINT ignored
    [
        ("closer", signal.SIGINT, True),
        ("reporter", signal.SIGTERM, True),
    ],
)
def test_a_service_stops_cleanly_on_sigint_and_sigterm(
    service: str,
    sig: signal.Signals,
    sigint_ignored: bool,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    """A service started with SIGINT ignored still stops on SIGINT, and SIGTERM ends it with status 0
    after its shutdown (not killed by the signal, -15, as uvicorn's hand-back to the default did)."""
    env = {
        **os.environ,
        "GRIDLOOP_VAR_DIR": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GRIDLOOP_TOPIC_PREFIX": topic_prefix,
        f"GRIDLOOP_{service.upper()}_PORT": str(port := free_port()),
    }
    assert run(["db", "upgrade"], env).returncode == 0
    assert run(["topics"], env).returncode == 0
    out = tmp_path / "service.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [*GRIDLOOP, service],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=_ignore_sigint if sigint_ignored else None,
        )
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, timeout=60)
        assert psutil.Process(proc.pid).children(recursive=True) == []
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0, out.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Application shutdown complete." in out.read_text()

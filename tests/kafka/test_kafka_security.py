"""Every Kafka client over SASL/SCRAM, and over TLS, against a broker that refuses anyone else.

One Apache Kafka node for the module, with a SASL_PLAINTEXT and a SASL_SSL listener (SCRAM-SHA-512,
one user, a certificate for "localhost" only from a CA made here) next to the PLAINTEXT one that the
suite's readiness probe and these tests' own checks use."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaAdminClient

from gridloop.brokers import BrokerTls, KafkaCluster, SaslListeners
from gridloop.kafkaauth import PLAINTEXT, KafkaLoginError, KafkaSecurity, login_problem
from gridloop.lag import GroupTopics, LagMonitor
from gridloop.outbox import OutboxRelay, add_event, make_producer
from gridloop.service import Runtime
from gridloop.settings import Settings
from gridloop.stack import Stack
from gridloop.topics import ALL_TOPICS, ensure_topics
from tests.kafka.test_plumbing_kafka import feedback_event, pending, read_to_end
from tests.support.plumbing import APPLIED, TABLES, Base
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for
from tests.support.tls import Ca, make_ca, make_server_pem

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
USER, PASSWORD = "gridloop", "Sc7am-only-in-this-test"
SCRAM: dict[str, Any] = {
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": USER,
    "kafka_sasl_password": PASSWORD,
}
INVALID = (
    "[Error 58] SaslAuthenticationFailed: Authentication failed during authentication due to invalid "
    "credentials with SASL mechanism SCRAM-SHA-512"
)


class SecureKafka:
    """The module's broker: its listeners, and the CAs the tests trust (the right one and another)."""

    def __init__(self, cluster: KafkaCluster, ca: Ca, other_ca: Ca) -> None:
        self.cluster = cluster
        self.ca = ca
        self.other_ca = other_ca
        self.plain = cluster.bootstrap_servers
        self.sasl = cluster.sasl_bootstrap_servers
        self.sasl_ssl = cluster.sasl_ssl_bootstrap_servers  # localhost:<port>, the name the certificate has


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """One node with SASL_PLAINTEXT and SASL_SSL (SCRAM-SHA-512) listeners; the user made at format time."""
    root = tmp_path_factory.mktemp("secure-kafka")
    ca = make_ca(root / "tls", "gridloop-test-ca")
    other = make_ca(root / "tls", "some-other-ca")
    keystore = make_server_pem(ca, root / "tls", "broker", "localhost")
    sasl = SaslListeners({USER: PASSWORD}, "SCRAM-SHA-512", BrokerTls(keystore, "localhost"))
    cluster = KafkaCluster(root / "data", brokers=1, log_dir=root / "logs", sasl=sasl)
    cluster.start()
    try:
        yield SecureKafka(cluster, ca, other)
    finally:
        cluster.stop()


def scram(**values: Any) -> KafkaSecurity:
    """SASL_PLAINTEXT with SCRAM-SHA-512 as the test user (values override)."""
    settings = Settings(**{"kafka_security_protocol": "SASL_PLAINTEXT", **SCRAM, **values})
    return KafkaSecurity.from_settings(settings)


def tls(ca: Path, **values: Any) -> KafkaSecurity:
    """SASL_SSL with SCRAM-SHA-512 as the test user, trusting `ca` (values override)."""
    settings = Settings(**{"kafka_security_protocol": "SASL_SSL", "kafka_ssl_cafile": ca, **SCRAM, **values})
    return KafkaSecurity.from_settings(settings)


def topics_on_broker(plain: str, prefix: str) -> dict[str, int]:
    """The topics with this prefix and their partition counts (read over the PLAINTEXT listener)."""
    admin = KafkaAdminClient(bootstrap_servers=plain)
    try:
        return {
            t["name"]: len(t["partitions"])
            for t in admin.describe_topics()
            if t["name"].startswith(prefix) and not t.get("error_code")
        }
    finally:
        admin.close()


def run_topics(bootstrap: str, prefix: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`gridloop topics --partitions 2` as an operator runs it: settings only from the environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLOOP_KAFKA_")}
    clean |= {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "GRIDLOOP_TOPIC_PREFIX": prefix, **env}
    cmd = [sys.executable, "-m", "gridloop.cli", "topics", "--partitions", "2"]
    return subprocess.run(cmd, env=clean, capture_output=True, text=True, timeout=120, check=False)


SCRAM_ENV = {
    "GRIDLOOP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "GRIDLOOP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "GRIDLOOP_KAFKA_SASL_USERNAME": USER,
    "GRIDLOOP_KAFKA_SASL_PASSWORD": PASSWORD,
}


def test_topics_command_logs_in_and_a_wrong_login_is_named(secure_kafka: SecureKafka) -> None:
    """`gridloop topics` over SASL creates the project's topics; with a wrong password, or none, it exits 1
    at once naming why, and creates nothing."""
    prefix = f"sec{uuid.uuid4().hex[:6]}."
    done = run_topics(secure_kafka.sasl, prefix, **SCRAM_ENV)
    assert done.returncode == 0, done.stderr
    assert [line.split() for line in done.stdout.splitlines()] == [
        [prefix + name, "2", "partitions", "created"] for name in ALL_TOPICS
    ]
    assert topics_on_broker(secure_kafka.plain, prefix) == {prefix + name: 2 for name in ALL_TOPICS}

    other = f"sec{uuid.uuid4().hex[:6]}."
    host_port = secure_kafka.sasl
    wrong = run_topics(host_port, other, **{**SCRAM_ENV, "GRIDLOOP_KAFKA_SASL_PASSWORD": "not-it"})
    assert wrong.returncode == 1
    assert wrong.stderr == (
        f"error: Kafka refused this client (SASL_PLAINTEXT, SCRAM-SHA-512 as 'gridloop'): {host_port}: "
        f"{INVALID} (check the GRIDLOOP_KAFKA_* security settings against the broker's listener)\n"
    )
    anonymous = run_topics(host_port, other)
    assert anonymous.returncode == 1
    assert anonymous.stderr == (
        f"error: Kafka refused this client (PLAINTEXT): {host_port}: KafkaConnectionError: Connection "
        f"at {host_port} closed (check GRIDLOOP_KAFKA_SECURITY_PROTOCOL against what the broker's "
        "listener expects)\n"
    )
    assert "not-it" not in wrong.stderr
    assert topics_on_broker(secure_kafka.plain, other) == {}


async def test_every_client_of_a_service_runtime_over_sasl(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    """A service's Runtime on the SASL listener: its relay's producer publishes, its takeover reads
    the partitions' tails (a consumer), its FastStream subscriber applies, its readiness answers, and
    lag is measured; all with the one security derived from the settings."""
    prefix = f"rt{uuid.uuid4().hex[:6]}."
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=secure_kafka.sasl,
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        var_dir=tmp_path,
        topic_prefix=prefix,
        kafka_security_protocol="SASL_PLAINTEXT",
        session_timeout_ms=6000,
        outbox_poll_seconds=0.05,
        **SCRAM,
    )
    runtime = Runtime("test", Base.metadata, TABLES, settings)
    security = runtime.kafka_security
    assert security == scram()
    ensure_topics(secure_kafka.sasl, partitions=2, prefix=prefix, security=security)
    runtime.db.create_all()

    def handler(session: Any, item: Any) -> None:
        session.execute(APPLIED.insert().values(event_id=item.event.id, comment=item.data.comment))

    runtime.consumer("g", ["reports.feedback"], {"report.feedback": handler})
    with runtime.db.session(write=True) as session:
        for i in range(3):
            add_event(session, TABLES, "reports.feedback", f"c{i}", feedback_event(i))  # type: ignore[arg-type]
    # a relay that sent these three and died before marking them sent: the runtime's relay must find
    # them on the broker (the tail read) and not send them again
    dead = OutboxRelay(runtime.db, TABLES, secure_kafka.sasl, "test", topic_prefix=prefix, security=security)
    dead._mark_sent = lambda ids: None  # type: ignore[method-assign]
    assert await dead.drain_once() == 0  # its own takeover: nothing on the broker yet
    assert await dead.drain_once() == 3
    await dead.stop()

    def comments() -> list[str]:
        with runtime.db.engine.connect() as conn:
            return sorted(r.comment for r in conn.execute(APPLIED.select()))

    await runtime.start()
    try:
        with runtime.db.session(write=True) as session:
            for i in range(3, 5):
                add_event(session, TABLES, "reports.feedback", f"c{i}", feedback_event(i))  # type: ignore[arg-type]
        runtime.relay.wake()
        deadline = time.monotonic() + 60
        while comments() != ["0", "1", "2", "3", "4"] or pending(runtime.db):
            assert time.monotonic() < deadline, f"applied {comments()}, {pending(runtime.db)} pending"
            await asyncio.sleep(0.1)
        assert runtime.relay.reconciled_rows == 3
        assert await runtime.readiness() == {"database": True, "broker": True}
    finally:
        await runtime.stop()
    records = await read_to_end(secure_kafka.plain, prefix + "reports.feedback")
    assert sorted(json.loads(value)["data"]["comment"] for _, value in records) == ["0", "1", "2", "3", "4"]

    topic = prefix + "reports.feedback"
    groups = [GroupTopics(prefix + "g", (topic,)), GroupTopics(prefix + "never-read", (topic,))]
    monitor = LagMonitor(secure_kafka.sasl, groups, security=security)
    try:
        lags = await asyncio.to_thread(monitor.measure)
    finally:
        monitor.close()
    assert lags == {(prefix + "g", topic): 0, (prefix + "never-read", topic): 5}


async def test_a_runtime_with_a_wrong_password_says_so_and_stays_unready(
    secure_kafka: SecureKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The wrong password: the broker connection is retried (intake goes on), the log names the
    refused login, /readyz reports the broker down, and the outbox keeps its row."""
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=secure_kafka.sasl,
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        var_dir=tmp_path,
        kafka_security_protocol="SASL_PLAINTEXT",
        **{**SCRAM, "kafka_sasl_password": "not-it"},
    )
    runtime = Runtime("test", Base.metadata, TABLES, settings)
    runtime.db.create_all()
    runtime.consumer("g", ["reports.feedback"], {"report.feedback": lambda session, item: None})
    with runtime.db.session(write=True) as session:
        add_event(session, TABLES, "reports.feedback", "c0", feedback_event(0))  # type: ignore[arg-type]
    who = "SASL_PLAINTEXT, SCRAM-SHA-512 as 'gridloop'"
    refused = (
        f"test: Kafka refused this client ({who}): {secure_kafka.sasl}: {INVALID} (check the "
        "GRIDLOOP_KAFKA_* security settings against the broker's listener); retrying in 0.5s"
    )
    caplog.set_level(logging.ERROR, logger="gridloop.service")
    await runtime.start()
    try:
        deadline = time.monotonic() + 30
        while refused not in caplog.messages:
            assert time.monotonic() < deadline, caplog.messages
            await asyncio.sleep(0.1)
        assert await runtime.readiness() == {"database": True, "broker": False}
        assert not runtime.broker_started
        assert pending(runtime.db) == 1
    finally:
        await runtime.stop()


def without_source_line(message: str | None) -> str | None:
    """An ssl error message without the "(_ssl.c:NNNN) " that differs between Python builds."""
    return re.sub(r"\(_ssl\.c:\d+\) ", "", message) if message else message


async def test_sasl_ssl_checks_the_ca_and_the_host_name(secure_kafka: SecureKafka) -> None:
    """SASL_SSL by the certificate's name with the right CA: a producer and a consumer get through.
    Another CA, or an address the certificate does not name, are refused with the TLS reason; with
    the host name check off (dev only) the address is accepted, the CA still checked."""
    good = tls(secure_kafka.ca.cert)
    prefix = f"tls{uuid.uuid4().hex[:6]}."
    ensure_topics(secure_kafka.sasl_ssl, partitions=1, prefix=prefix, security=good)
    producer = make_producer(secure_kafka.sasl_ssl, "tls-test", security=good)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(prefix + "reports.feedback", f"m{i}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=secure_kafka.sasl_ssl, group_id=None, **good.client_kwargs()
    )
    await consumer.start()
    try:
        tp = TopicPartition(prefix + "reports.feedback", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got = await consumer.getmany(tp, timeout_ms=10_000)
    finally:
        await consumer.stop()
    assert [r.value for r in got[tp]] == [b"m0", b"m1", b"m2"]

    host_port = secure_kafka.sasl_ssl
    by_address = host_port.replace("localhost", "127.0.0.1")
    hint = "(check the GRIDLOOP_KAFKA_* security settings against the broker's listener)"
    who = "SASL_SSL, SCRAM-SHA-512 as 'gridloop'"
    assert without_source_line(await login_problem(host_port, tls(secure_kafka.other_ca.cert))) == (
        f"Kafka refused this client ({who}): {host_port}: TLS refused: [SSL: CERTIFICATE_VERIFY_FAILED] "
        f"certificate verify failed: unable to get local issuer certificate {hint}"
    )
    assert without_source_line(await login_problem(by_address, good)) == (
        f"Kafka refused this client ({who}): {by_address}: TLS refused: [SSL: CERTIFICATE_VERIFY_FAILED] "
        f"certificate verify failed: IP address mismatch, certificate is not valid for '127.0.0.1'. {hint}"
    )
    unchecked = tls(secure_kafka.ca.cert, kafka_ssl_check_hostname=False)
    assert await login_problem(by_address, unchecked) is None
    assert await login_problem(by_address, tls(secure_kafka.other_ca.cert, kafka_ssl_check_hostname=False))
    assert await login_problem(host_port, PLAINTEXT) == (
        f"Kafka refused this client (PLAINTEXT): {host_port}: KafkaConnectionError: Connection at "
        f"{host_port} closed (check GRIDLOOP_KAFKA_SECURITY_PROTOCOL against what the broker's listener "
        "expects)"
    )


def test_stack_on_an_external_broker_refuses_a_wrong_login_at_once(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    """`gridloop up` on an external SASL_SSL broker with a wrong password stops before anything
    starts, naming the refused login (not a 30 s wait for a broker that never answers)."""
    settings = stack_settings(
        tmp_path,
        secure_kafka.sasl_ssl,
        "x.",
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=secure_kafka.ca.cert,
        **{**SCRAM, "kafka_sasl_password": "not-it"},
    )
    stack = Stack(settings=settings, broker="external")
    started = time.monotonic()
    with pytest.raises(KafkaLoginError) as refused:
        stack.start_broker()
    assert time.monotonic() - started < 25
    assert str(refused.value) == (
        f"Kafka refused this client (SASL_SSL, SCRAM-SHA-512 as 'gridloop'): {secure_kafka.sasl_ssl}: "
        f"{INVALID} (check the GRIDLOOP_KAFKA_* security settings against the broker's listener)"
    )


def test_the_loop_end_to_end_over_sasl_ssl(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    """The three services as processes on the external broker over SASL_SSL + SCRAM (the managed
    Kafka shape): a rider's report reaches the station's queue and the rider sees the case."""
    from gridloop.demo import DEMO_PLACES
    from schemas.reference import load_places

    prefix = f"e2es{uuid.uuid4().hex[:6]}."
    settings = stack_settings(
        tmp_path,
        secure_kafka.sasl_ssl,
        prefix,
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=secure_kafka.ca.cert,
        **SCRAM,
    )
    stack = start_stack(settings)
    try:
        env = stack.service_env("router")
        assert env["GRIDLOOP_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["GRIDLOOP_KAFKA_SSL_CAFILE"] == str(secure_kafka.ca.cert)
        place = next(p for p in load_places(DEMO_PLACES) if p.grid_id == "yh-g2")
        reporter, closer = stack.url("reporter"), stack.url("closer")
        body = {"code": place.code, "category": "fire_lane_blocked", "description": "SASL_SSL 通道"}
        r = httpx.post(f"{reporter}/api/v1/reports", json=body, timeout=10)
        assert r.status_code == 202, r.text
        report_id = r.json()["report_id"]
        auth = {"Authorization": f"Bearer {staff_token(closer, 'yh-s2')}"}

        def in_queue() -> dict[str, Any] | None:
            queue = httpx.get(f"{closer}/api/v1/queue", params={"station": "yh-s2"}, headers=auth)
            return next((i for i in queue.json()["items"] if i["description"] == "SASL_SSL 通道"), None)

        case = wait_for(in_queue, timeout=30, what="the case in yh-s2's queue")

        def rider_view() -> dict[str, Any] | None:
            view = httpx.get(f"{reporter}/api/v1/reports/{report_id}").json()
            return view if view["case_id"] else None

        # 60 s: the reporter's first join of its cases.events group over SASL_SSL once took over 30 s
        # on a loaded two-core run (a full run building the Go tools); alone it takes a second or two
        view = wait_for(rider_view, timeout=60, what="the case id on the reporter")
        assert view["case_id"] == case["case_id"]
    finally:
        stack.stop()
    assert topics_on_broker(secure_kafka.plain, prefix) == {prefix + name: 6 for name in ALL_TOPICS}

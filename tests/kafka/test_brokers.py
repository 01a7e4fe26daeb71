"""The broker launchers: Apache Kafka (single node, three-node KRaft cluster) and Tansu."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from gridloop.brokers import (
    KafkaCluster,
    TansuBroker,
    ensure_kafka_jars,
    free_port,
    java_available,
    tansu_available,
    wait_for_kafka,
)

needs_java = pytest.mark.skipif(not java_available(), reason="Apache Kafka needs Java 17+")
needs_tansu = pytest.mark.skipif(not tansu_available(), reason="no Tansu binary")


def processes_mentioning(text: str) -> list[int]:
    """Return pids of live processes whose command line contains text."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def pid_alive(pid: int) -> bool:
    """Return True if a (non-zombie) process with this pid exists."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def create_topic(bootstrap: str, name: str, partitions: int, replication: int) -> None:
    """Create a topic with kafka-python's admin client."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics([NewTopic(name, partitions, replication)])
    finally:
        admin.close()


def replica_counts(bootstrap: str, name: str) -> list[int]:
    """Return the replica count of each partition of a topic."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (topic,) = admin.describe_topics([name])
    finally:
        admin.close()
    return [len(p["replica_nodes"]) for p in topic["partitions"]]


async def produce(bootstrap: str, topic: str, values: list[bytes], **config: object) -> None:
    """Send values (keyed by index) and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **config)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=str(i).encode())
    finally:
        await producer.stop()


async def consume(
    bootstrap: str, topic: str, count: int, within: float = 30.0, **config: object
) -> list[bytes]:
    """Read count messages from the beginning of topic (fails after within seconds)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **config)
    await consumer.start()
    got: list[bytes] = []
    deadline = time.monotonic() + within
    try:
        while len(got) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                got.extend(r.value for r in records if r.value is not None)
        if config.get("group_id") is not None:
            await consumer.commit()
    finally:
        await consumer.stop()
    assert len(got) >= count, f"read {len(got)} of {count} messages from {topic}"
    return got


def unique(prefix: str) -> str:
    """Return a unique topic or group name."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- no broker needed


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_for_kafka_times_out_with_a_clear_message() -> None:
    port = free_port()
    with pytest.raises(TimeoutError, match=rf"127\.0\.0\.1:{port}.*ConnectionRefused"):
        wait_for_kafka(f"127.0.0.1:{port}", timeout=0.3)


def test_kafka_cluster_ports_are_known_before_start(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, brokers=3, ports=[19001, 19002, 19003])
    assert cluster.bootstrap_servers == "127.0.0.1:19001,127.0.0.1:19002,127.0.0.1:19003"
    assert len(set(cluster.controller_ports)) == 3
    both = KafkaCluster(tmp_path, brokers=1, ports=[19001, 19002])
    assert (both.client_ports, both.controller_ports) == ([19001], [19002])
    with pytest.raises(ValueError):
        KafkaCluster(tmp_path, brokers=2, ports=[19001])


# --------------------------------------------------------------------------- Apache Kafka


@pytest.fixture(scope="module")
def kafka_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One single-node Kafka shared by this module's tests."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-single"))
    started = time.monotonic()
    cluster.start()
    print(f"single-node Kafka started in {time.monotonic() - started:.1f}s")
    yield cluster
    cluster.stop()


@pytest.mark.kafka
@needs_java
def test_kafka_jars_are_cached() -> None:
    libs = ensure_kafka_jars()
    assert any(libs.glob("kafka_2.13-*.jar"))
    assert any(libs.glob("log4j-slf4j-impl-*.jar"))
    assert ensure_kafka_jars() == libs  # second call: cache hit


@pytest.mark.kafka
@needs_java
@pytest.mark.skipif(shutil.which("mvn") is None, reason="needs Maven")
def test_jar_fetch_is_safe_when_two_callers_race(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    results: list[Path] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            results.append(ensure_kafka_jars(cache))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [cache / "libs", cache / "libs"]
    assert len(list((cache / "libs").glob("kafka_2.13-*.jar"))) == 1
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith("libs")) == ["libs"]


@pytest.mark.kafka
@needs_java
async def test_single_node_round_trip(kafka_single: KafkaCluster) -> None:
    bootstrap = kafka_single.bootstrap_servers
    topic = unique("roundtrip")
    create_topic(bootstrap, topic, partitions=3, replication=1)
    values = [f"hello {i}".encode() for i in range(6)]
    await produce(bootstrap, topic, values, acks="all")
    got = await consume(bootstrap, topic, len(values), group_id=unique("g"))
    assert sorted(got) == sorted(values)


@pytest.mark.kafka
@needs_java
def test_data_dir_remembers_its_cluster_size(kafka_single: KafkaCluster) -> None:
    with pytest.raises(ValueError, match="1-node"):
        KafkaCluster(kafka_single.data_dir, brokers=3).start()


@pytest.mark.kafka
@needs_java
async def test_restart_on_the_same_data_dir_keeps_messages(kafka_single: KafkaCluster) -> None:
    topic = unique("durable")
    create_topic(kafka_single.bootstrap_servers, topic, partitions=1, replication=1)
    await produce(kafka_single.bootstrap_servers, topic, [b"kept"], acks="all")
    kafka_single.stop()
    kafka_single.stop()  # idempotent
    assert processes_mentioning(str(kafka_single.data_dir)) == []

    # a new launcher on the same directory (as `gridloop up` run twice), on other ports
    again = KafkaCluster(kafka_single.data_dir)
    started = time.monotonic()
    again.start()
    print(f"single-node Kafka restarted in {time.monotonic() - started:.1f}s")
    try:
        assert again.cluster_id == kafka_single.cluster_id
        assert await consume(again.bootstrap_servers, topic, 1) == [b"kept"]
    finally:
        again.stop()
        assert processes_mentioning(str(kafka_single.data_dir)) == []
        kafka_single.start()  # leave the module fixture running


@pytest.mark.kafka
@pytest.mark.slow
@needs_java
async def test_three_node_cluster_survives_a_crashed_node(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path / "kafka3", brokers=3)
    started = time.monotonic()
    cluster.start()
    print(f"three-node Kafka started in {time.monotonic() - started:.1f}s")
    try:
        bootstrap = cluster.bootstrap_servers
        assert len(bootstrap.split(",")) == 3
        topic = unique("replicated")
        create_topic(bootstrap, topic, partitions=3, replication=3)
        assert replica_counts(bootstrap, topic) == [3, 3, 3]
        before = [f"before {i}".encode() for i in range(6)]
        await produce(bootstrap, topic, before, acks="all")

        crashed = cluster.pids()[1]
        cluster.kill_node(1)
        assert not cluster.is_running(1)
        assert processes_mentioning(str(cluster.node_dir(1))) == []
        assert crashed not in cluster.pids()
        t0 = time.monotonic()
        after = [f"after {i}".encode() for i in range(6)]
        await produce(bootstrap, topic, after, acks="all", request_timeout_ms=60000)
        print(f"acks=all produce with node 1 down took {time.monotonic() - t0:.1f}s")
        got = await consume(bootstrap, topic, 12, within=60, group_id=unique("g"))
        assert sorted(got) == sorted(before + after)

        t0 = time.monotonic()
        cluster.start_node(1)
        print(f"node 1 rejoined in {time.monotonic() - t0:.1f}s")
        assert cluster.is_running(1)
        await produce(cluster.node_bootstrap(1), topic, [b"rejoined"], acks="all")
    finally:
        t0 = time.monotonic()
        cluster.stop()
        print(f"three-node Kafka stopped in {time.monotonic() - t0:.1f}s")
    assert processes_mentioning(str(cluster.data_dir)) == []


# --------------------------------------------------------------------------- Tansu


@pytest.mark.tansu
@needs_tansu
async def test_tansu_round_trip(tmp_path: Path) -> None:
    broker = TansuBroker(log_path=tmp_path / "tansu.log")
    started = time.monotonic()
    with broker:
        print(f"Tansu started in {time.monotonic() - started:.2f}s")
        pid = broker.pid
        assert pid is not None
        topic = unique("tansu")
        create_topic(broker.bootstrap_servers, topic, partitions=3, replication=1)
        await produce(broker.bootstrap_servers, topic, [b"via tansu"], enable_idempotence=False)
        got = await consume(broker.bootstrap_servers, topic, 1, fetch_max_wait_ms=100)
        assert got == [b"via tansu"]
    assert broker.pid is None
    assert not pid_alive(pid)


@pytest.mark.tansu
@needs_tansu
def test_broker_dies_with_the_process_that_started_it() -> None:
    code = (
        "import sys, time\n"
        "from gridloop.brokers import TansuBroker\n"
        "broker = TansuBroker()\n"
        "broker.start()\n"
        "print(broker.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert pid_alive(child)
    finally:
        parent.kill()  # SIGKILL: no atexit, no stop(); only the kernel's parent-death signal
        parent.wait()
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)

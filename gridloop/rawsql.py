"""Hot-path SQL on the DBAPI cursor of a session's connection, for SQLite and PostgreSQL alike.

Why: at a few hundred reports a second the ORM's unit of work and even SQLAlchemy Core's execution
machinery cost ten times what the database itself spends on a statement (profiles in
bench/RESULTS.md). The hot paths (intake, routing, opening cases, the read model, the outbox and
the processed-event ledger) therefore run plain SQL on the driver's cursor, inside the same
transaction as the session, and everything else keeps the ORM.

Statements are written once with ``:name`` parameters and converted to the driver's style. Values
are stored exactly as SQLAlchemy stores them, so ORM code reads these rows back unchanged: on SQLite
a timestamp is the text ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC and a boolean is 0 or 1; PostgreSQL
takes the Python values as they are.
"""

from __future__ import annotations

import re
import sys
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Boolean, Connection, DateTime, Table
from sqlmodel import Session

Params = Mapping[str, Any]
_NAMED = re.compile(r"(?<![:\w]):(\w+)")

STATEMENTS: dict[str, list[str]] = {}
"""Registered plain-SQL statements by module, so a test can compile each against the models."""


def statement(sql: str) -> str:
    """Register a module-level plain-SQL statement (checked against the models by the test suite)."""
    module = sys._getframe(1).f_globals.get("__name__", "?")
    STATEMENTS.setdefault(module, []).append(sql)
    return sql


@lru_cache(maxsize=1024)
def _pyformat(sql: str) -> str:
    """`:name` → `%(name)s` for psycopg (a literal % doubled)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


def in_list(name: str, values: Sequence[Any], params: dict[str, Any]) -> str:
    """`(:name_0, :name_1, …)` for an IN clause, the values added to params; `(NULL)` when empty."""
    if not values:
        return "(NULL)"
    for i, value in enumerate(values):
        params[f"{name}_{i}"] = value
    return "(" + ", ".join(f":{name}_{i}" for i in range(len(values))) + ")"


class Tx:
    """A transaction straight on a DBAPI connection, for hot paths that use plain SQL only.

    It stands in for an ORM session where a handler needs nothing else (``Database.transaction``):
    an ORM session costs about ten times as much to open and commit (bench/RESULTS.md). `info`
    carries what a session's would (after-commit callbacks).
    """

    __slots__ = ("_savepoints", "cursor", "info", "sqlite")

    def __init__(self, driver: Any, sqlite: bool) -> None:
        self.cursor = driver.cursor()
        self.sqlite = sqlite
        self.info: dict[str, Any] = {}
        self._savepoints = 0

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A savepoint: what runs inside is undone alone when it raises."""
        self._savepoints += 1
        name = f"gl_sp{self._savepoints}"
        self.cursor.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self.cursor.execute(f"RELEASE SAVEPOINT {name}")
            raise
        self.cursor.execute(f"RELEASE SAVEPOINT {name}")


Bind = Session | Connection | Tx
"""What plain SQL can run in: an ORM session's transaction, a Core connection's, or a Tx."""


def after_commit(bind: Bind, callback: Callable[[], None]) -> None:
    """Run callback once the transaction has committed (a consumer batch, a group commit), so a batch
    applied twice counts once; outside those, at once."""
    callbacks = bind.info.get("after_commit")
    if callbacks is None:
        callback()  # not inside a batch: nothing to wait for
    else:
        callbacks.append(callback)


def savepoint(bind: Session | Tx) -> AbstractContextManager[Any]:
    """A savepoint in a session or a Tx."""
    return bind.savepoint() if isinstance(bind, Tx) else bind.begin_nested()


class Raw:
    """Plain SQL in the transaction of a session, connection or Tx, with SQLAlchemy's storage formats."""

    __slots__ = ("cursor", "sqlite")

    def __init__(self, bind: Bind) -> None:
        if isinstance(bind, Tx):
            self.cursor, self.sqlite = bind.cursor, bind.sqlite
            return
        conn = bind.connection() if isinstance(bind, Session) else bind
        self.sqlite = conn.dialect.name == "sqlite"
        driver = conn.connection.driver_connection
        assert driver is not None
        self.cursor = driver.cursor()

    def _sql(self, sql: str) -> str:
        return sql if self.sqlite else _pyformat(sql)

    def all(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        self.cursor.execute(self._sql(sql), params or {})
        return list(self.cursor.fetchall())

    def first(self, sql: str, params: Params | None = None) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        self.cursor.execute(self._sql(sql), params or {})
        row = self.cursor.fetchone()
        return tuple(row) if row is not None else None

    def scalar(self, sql: str, params: Params | None = None) -> Any:
        """The first column of the first row, or None."""
        row = self.first(sql, params)
        return row[0] if row else None

    def run(self, sql: str, params: Params | None = None) -> int:
        """Run a statement; returns the rows it changed."""
        self.cursor.execute(self._sql(sql), params or {})
        return int(self.cursor.rowcount)

    def record(self, table: Table, where: str = "", params: Params | None = None) -> Any:
        """The first row of `table` matching `where`, as its `record_type`, or None."""
        row = self.first(select_sql(table, where), params)
        return None if row is None else _reader(table, self.sqlite)(row)

    def records(self, table: Table, where: str = "", params: Params | None = None) -> list[Any]:
        """Every row of `table` matching `where`, as its `record_type`."""
        read = _reader(table, self.sqlite)
        return [read(row) for row in self.all(select_sql(table, where), params)]

    def many(self, sql: str, rows: Iterable[Params]) -> None:
        """Run a statement once per parameter set, in one driver call."""
        rows = list(rows)
        if rows:
            self.cursor.executemany(self._sql(sql), rows)

    def ts(self, value: datetime | None) -> Any:
        """A timestamp as its column stores it (UTC)."""
        if value is None:
            return None
        if self.sqlite:
            return _sqlite_ts(value)
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


@lru_cache(maxsize=256)
def _sqlite_ts(value: datetime) -> str:
    # one report stamps the same instant on several rows; str() is the fastest formatter there is
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    text = str(value)  # YYYY-MM-DD HH:MM:SS[.ffffff][+00:00]
    return text[:26] if text[19:20] == "." else text[:19] + ".000000"


def read_ts(value: Any) -> datetime | None:
    """A timestamp column's value as an aware UTC datetime (SQLite gives text)."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def insert_sql(table: str, columns: Sequence[str]) -> str:
    """`INSERT INTO table (a, b) VALUES (:a, :b)`."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"


def insert_model(raw: Raw, row: Any) -> None:
    """INSERT one SQLModel table row as it stands (columns left None take their database default)."""
    table = row.__table__
    insert_row(raw, table.name, {c.name: getattr(row, c.key) for c in table.columns})


def insert_row(raw: Raw, table: Table | str, values: Mapping[str, Any]) -> None:
    """INSERT one row given as {column: value}; None values are left out (the database default).

    With a Table, a key that is not one of its columns raises KeyError (a typo never reaches SQL)."""
    if isinstance(table, Table):
        unknown = values.keys() - _column_names(table)
        if unknown:
            raise KeyError(f"{table.name} has no column {', '.join(sorted(unknown))}")
        table = table.name
    present = {k: raw.ts(v) if isinstance(v, datetime) else v for k, v in values.items() if v is not None}
    raw.run(_insert_for(table, tuple(present)), present)


def table_of(model: type[Any]) -> Table:
    """The Table of a SQLModel table class (SQLModel sets `__table__` but does not declare it)."""
    table: Table = model.__table__
    return table


def quoted(name: str) -> str:
    """A table name as SQL (a reserved word such as `case` in double quotes)."""
    return f'"{name}"' if name in _RESERVED else name


@lru_cache(maxsize=256)
def _column_names(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns)


@lru_cache(maxsize=256)
def columns_of(table: Table, alias: str | None = None) -> str:
    """The table's columns in table order, `a, b, c` (or `t.a, t.b, t.c` with an alias)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + c.name for c in table.columns)


@lru_cache(maxsize=1024)
def select_sql(table: Table, where: str = "", alias: str | None = None) -> str:
    """`SELECT <every column> FROM table [alias] <where>`; `where` is the rest of the statement."""
    source = quoted(table.name) + (f" {alias}" if alias else "")
    return f"SELECT {columns_of(table, alias)} FROM {source} {where}".rstrip()


@lru_cache(maxsize=256)
def record_type(table: Table) -> type[Any]:
    """A named tuple of the table's columns (every field defaults to None): rows built by name."""
    names = [c.name for c in table.columns]
    type_name = "".join(part.title() for part in table.name.split("_")) + "Row"
    return namedtuple(type_name, names, defaults=[None] * len(names))


@lru_cache(maxsize=256)
def _reader(table: Table, sqlite: bool) -> Callable[[Sequence[Any]], Any]:
    """Turn a row of `select_sql(table)` into its record: timestamps as aware UTC, booleans as bool."""
    make = record_type(table)._make
    converters: list[tuple[int, Callable[[Any], Any]]] = []
    for i, column in enumerate(table.columns):
        if isinstance(column.type, DateTime):
            converters.append((i, read_ts))
        elif sqlite and isinstance(column.type, Boolean):
            converters.append((i, _read_bool))
    if not converters:
        return make

    def read(row: Sequence[Any]) -> Any:
        values = list(row)
        for i, convert in converters:
            values[i] = convert(values[i])
        return make(values)

    return read


def _read_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


@lru_cache(maxsize=256)
def _insert_for(table: str, columns: tuple[str, ...]) -> str:
    return insert_sql(quoted(table), columns)


_RESERVED = frozenset({"case", "order", "user", "group"})

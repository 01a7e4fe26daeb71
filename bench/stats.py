"""Assessment figures (/api/v1/stats) latency over a million cases in PostgreSQL.

    python -m bench.stats                        # embedded PostgreSQL, 1M cases over three years
    python -m bench.stats --cases 100000 --requests 50
    GRIDLOOP_BENCH_POSTGRES_URL=postgresql://… python -m bench.stats

Bulk-loads (COPY) synthetic cases spread over three years, with their milestones, deadlines, ratings,
returns, extensions, reopenings, nudges and one report each from a rider's platform, then VACUUM
ANALYZE (as autovacuum would after a day). Starts the closer as a real process on it and times the
API as the centre uses it: last month by station, grid, category and platform, a year by month and
by station, and one station's staff asking for their own month. Prints p50/p99 per query and writes
JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.queue import RESULTS, _copy_value, server_url, timed
from gridloop import migrate
from gridloop.brokers import free_port
from gridloop.db import Database, create_database
from gridloop.procs import spawn, tail, terminate
from gridloop.settings import Settings
from schemas.reference import load_jurisdiction
from services.closer.cli import load_demo_staff
from services.closer.figures import last_month
from services.closer.models import Base, Case

PLATFORMS = (("美团", 5), ("饿了么", 4), ("顺丰", 1), ("京东", 1), (None, 2))


def _case(rng: random.Random, i: int, station: Any, category: str, now: datetime) -> dict[str, Any]:
    """One case's columns, its lifecycle in order (most closed, some late, returned, reopened)."""
    submitted = now - timedelta(minutes=rng.randrange(0, 3 * 365 * 24 * 60))
    age_h = (now - submitted).total_seconds() / 3600
    ack = submitted + timedelta(hours=rng.uniform(0.1, 3.0))
    resolved = ack + timedelta(hours=rng.uniform(1, 40))
    closed = resolved + timedelta(hours=rng.uniform(1, 72))
    done = closed < now and rng.random() < 0.97
    extensions = 1 if rng.random() < 0.05 else 0
    return {
        "case_id": f"s_{i:08d}{rng.randrange(16**8):08x}",
        "station_id": station.id,
        "category": category,
        "status": "closed" if done else ("dispatched" if age_h > 1 else "new"),
        "is_active": not done,
        "priority": "normal",
        "grid_id": station.grid_ids[0] if station.grid_ids else None,
        "street_id": station.street_id,
        "place_name": f"地点 {i % 997}",
        "lat": 31.33,
        "lon": 121.52,
        "description": "共享单车堆放",
        "submitted_at": submitted,
        "opened_at": submitted,
        "updated_at": closed if done else submitted,
        "ack_due": submitted + timedelta(hours=2),
        "resolve_due": submitted + timedelta(hours=24 + 24 * extensions),
        "acknowledged_at": ack if ack < now else None,
        "resolved_at": resolved if done else None,
        "closed_at": closed if done else None,
        "returned_at": submitted + timedelta(minutes=30) if rng.random() < 0.04 else None,
        "moves": 0,
        "extensions_granted": extensions,
        "reopen_count": 1 if done and rng.random() < 0.03 else 0,
        "rating": rng.choice((3, 4, 5, 5, 2)) if done and rng.random() < 0.6 else None,
        "report_count": rng.choice((1, 1, 1, 2, 3)),
        "common_issue": rng.random() < 0.02,
        "nudges": 1 if rng.random() < 0.05 else 0,
    }


def fill(url: str, count: int, seed: int = 7) -> None:
    """COPY `count` cases and one report each into the closer's tables, then VACUUM ANALYZE."""
    import psycopg

    j = load_jurisdiction(Settings().jurisdiction_dir)
    rng = random.Random(seed)
    stations = [s for s in j.stations.values() if s.kind != "centre"]
    categories = list(j.categories)
    cases = list(Case.__table__.columns)  # type: ignore[attr-defined]
    reports = ["report_id", "case_id", "rider_ref", "submitted_at", "event_id", "envelope", "description"]
    reports += ["photo_ids", "fixed", "platform"]
    defaults = {
        c.name: (c.default.arg if c.default is not None and not callable(c.default.arg) else None)
        for c in cases
    }
    now = datetime.now(UTC)
    platforms, weights = [p for p, _ in PLATFORMS], [w for _, w in PLATFORMS]
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        case_names = ", ".join(f'"{c.name}"' for c in cases)
        chunk = 50_000
        for start in range(0, count, chunk):
            case_buf, report_buf = io.StringIO(), io.StringIO()
            for i in range(start, min(start + chunk, count)):
                row = {**defaults, **_case(rng, i, rng.choice(stations), rng.choice(categories), now)}
                case_buf.write("\t".join(_copy_value(row[c.name]) for c in cases) + "\n")
                done = row["status"] == "closed"
                fixed = (rng.random() < 0.7) if done else None
                row["rider_confirmed"] = bool(fixed)
                report = {
                    "report_id": "r" + row["case_id"],
                    "case_id": row["case_id"],
                    "rider_ref": None,
                    "submitted_at": row["submitted_at"],
                    "event_id": "e" + row["case_id"],
                    "envelope": "{}",
                    "description": "",
                    "photo_ids": "",
                    "fixed": fixed,
                    "platform": rng.choices(platforms, weights)[0],
                }
                report_buf.write("\t".join(_copy_value(report[c]) for c in reports) + "\n")
            with cur.copy(f'COPY "case" ({case_names}) FROM STDIN') as copy:
                copy.write(case_buf.getvalue())
            with cur.copy(f"COPY case_report ({', '.join(reports)}) FROM STDIN") as copy:
                copy.write(report_buf.getvalue())
            conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('VACUUM ANALYZE "case"')
        conn.execute("VACUUM ANALYZE case_report")


def run(server: str, size: int, requests: int) -> dict[str, Any]:
    """Fill a database with `size` cases, start the closer on it, time the figures."""
    url = create_database(server, "bench_")
    migrate.upgrade("closer", url)
    t0 = time.perf_counter()
    fill(url, size)
    fill_s = time.perf_counter() - t0
    db = Database(url, Base.metadata)
    load_demo_staff(db, load_jurisdiction(Settings().jurisdiction_dir))
    db.dispose()
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="gridloop-bench-stats-"))
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "GRIDLOOP_CLOSER_PORT": str(port),
        "GRIDLOOP_VAR_DIR": str(work),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "GRIDLOOP_LOG_LEVEL": "WARNING",
        "GRIDLOOP_GAUGE_INTERVAL_SECONDS": "3600",
        "GRIDLOOP_DEV": "1",  # the demo accounts sign in (their published password)
    }
    proc = spawn([sys.executable, "-m", "gridloop.cli", "closer"], work / "closer.log", env=env)
    base = f"http://127.0.0.1:{port}"
    lo, hi = last_month(date.today())
    month = {"from": lo.isoformat(), "to": hi.isoformat()}
    year = {"from": (hi - timedelta(days=364)).isoformat(), "to": hi.isoformat()}
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
        for who, queries in (
            (
                "yh-centre",
                {
                    "month by station": {**month, "by": "station"},
                    "month by grid": {**month, "by": "grid"},
                    "month by category": {**month, "by": "category"},
                    "month by platform": {**month, "by": "platform"},
                    "year by month": {**year, "by": "month"},
                    "year by station": {**year, "by": "station"},
                },
            ),
            ("yh-s1", {"staff: own month by station": {**month, "by": "station"}}),
        ):
            token = httpx.post(
                base + "/api/v1/auth/token", data={"username": who, "password": "gridloop-demo"}
            ).json()["access_token"]
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
                for name, params in queries.items():
                    timed(c, "/api/v1/stats", params, 3)  # warm up
                    p50, p99, _ = timed(c, "/api/v1/stats", params, requests)
                    got = c.get("/api/v1/stats", params=params).json()
                    results[name] = {
                        "p50_ms": round(p50, 1),
                        "p99_ms": round(p99, 1),
                        "rows": len(got["rows"]),
                        "cases": got["total"]["cases"],
                    }
        return results
    finally:
        terminate([proc], timeout=10)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    print(f"filling {args.cases:,} cases …", flush=True)
    r = run(server_url(), args.cases, args.requests)
    print(f"\nGridLoop stats benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'query':32}{'p50 ms':>9}{'p99 ms':>9}{'rows':>6}{'cases':>9}")
    for name, v in r.items():
        if isinstance(v, dict):
            print(f"{name:32}{v['p50_ms']:>9.1f}{v['p99_ms']:>9.1f}{v['rows']:>6}{v['cases']:>9,}")
    print(f"filled {r['cases']:,} cases (and as many reports) in {r['fill_seconds']} s")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"stats-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(r, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()

"""The `gridloop` command: the embedded stack, single services, topics, migrations, demo data, staff."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from gridloop import logs
from gridloop.settings import SERVICES, Settings, UnsafeSettingsError, get_settings, refuse_unsafe
from gridloop.signals import stop_on_signals

if TYPE_CHECKING:
    from schemas.reference import Jurisdiction, Place


ONE_WORKER = (
    "--workers must be 1: a service process is one worker (one metrics registry, one outbox relay, "
    "one set of consumers, one scheduler). For more throughput run replicas: more processes of the "
    "service on their own ports, behind one entry (README, Running in production)."
)


def cmd_service(args: argparse.Namespace) -> int:
    """Run one service in the foreground, as production runs it: one worker per process."""
    import uvicorn

    if args.workers != 1:
        # each worker would keep its own registry (a scrape reads one at random) and run its own
        # relay, consumers and scheduler: replicas are processes, each its own /metrics
        print(f"error: {ONE_WORKER}", file=sys.stderr)
        return 2
    settings = get_settings()
    if not _checked(settings, f"the {args.command}"):
        return 2
    uvicorn.run(
        f"services.{args.command}.app:build",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port(args.command),
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        # uvicorn's loggers go through our handler and format (gridloop.logs): a JSON deployment logs
        # only JSON lines; the access log is ours (GRIDLOOP_ACCESS_LOG, gridloop.access)
        log_config=None,
        access_log=False,
        # who the client is behind a proxy is decided once, by gridloop.net against
        # GRIDLOOP_TRUSTED_PROXIES; uvicorn's own rewrite would believe any loopback peer's header
        proxy_headers=False,
        # open live streams (the closer's server-sent events) never finish by themselves
        timeout_graceful_shutdown=5,
    )
    return 0


def _checked(settings: Settings, what: str) -> bool:
    """Refuse unsafe settings or Kafka security settings that do not fit together, with the message
    on stderr (False); or warn about each unsafe setting in dev mode."""
    from gridloop.kafkaauth import KafkaSecurity, KafkaSecurityError

    try:
        KafkaSecurity.from_settings(settings)
        warnings = refuse_unsafe(settings, what)
    except (UnsafeSettingsError, KafkaSecurityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    for problem in warnings:
        print(f"warning (GRIDLOOP_DEV): {problem}", file=sys.stderr)
    return True


def cmd_topics(args: argparse.Namespace) -> int:
    """Create or verify the topics."""
    from gridloop.kafkaauth import KafkaLoginError, KafkaSecurity, KafkaSecurityError
    from gridloop.topics import ensure_topics

    settings = get_settings()
    try:
        states = ensure_topics(
            settings.kafka_bootstrap_servers,
            args.partitions or settings.topic_partitions,
            args.replication or settings.topic_replication,
            timeout=args.wait or settings.topic_wait_seconds,
            prefix=settings.topic_prefix,
            brokers=args.wait_brokers or settings.topic_wait_brokers,
            security=KafkaSecurity.from_settings(settings),
        )
    except KafkaSecurityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (TimeoutError, KafkaLoginError) as exc:  # brokers missing or refusing: a supervisor may retry
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for state in states:
        print(f"{state.name:20} {state.partitions:3} partitions  {state.action}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """Apply the Alembic migrations of one or all services."""
    from gridloop import migrate

    settings = get_settings()
    for service in [args.service] if args.service else list(SERVICES):
        url = settings.db_url(service)
        migrate.upgrade(service, url)
        print(f"{service}: migrated ({url.split('@')[-1]})")
    return 0


def load_demo(settings: Settings, j: Jurisdiction) -> tuple[list[Place], list[Any]]:
    """Each service loads its own demo rows: places and codes (reporter), staff accounts (closer)."""
    from services.closer import cli as closer_cli
    from services.reporter import cli as reporter_cli

    return reporter_cli.load_demo(settings, j), closer_cli.load_demo(settings, j)


def cmd_demo(_args: argparse.Namespace) -> int:
    """Load the demo places, codes and staff accounts."""
    from gridloop import demo
    from schemas.reference import load_jurisdiction

    settings = get_settings()
    places, accounts = load_demo(settings, load_jurisdiction(settings.jurisdiction_dir))
    print(f"{len(places)} places with codes, {len(accounts)} staff accounts (password {demo.DEMO_PASSWORD})")
    return 0


def print_banner(stack: Any) -> None:
    """What `up` prints: where to click, how to sign in, and one code as a QR."""
    import segno

    from gridloop import demo
    from schemas.reference import load_places

    settings = stack.settings
    places = load_places(demo.DEMO_PLACES)
    first = places[0]
    rider_url = f"{settings.public_base_url.rstrip('/')}/r/{first.code}"
    j = stack.jurisdiction
    station = j.stations[j.grids[first.grid_id].station_id] if j else None
    lines = [
        "",
        f"GridLoop is up (broker: {stack.broker_kind} at {stack.bootstrap_servers};"
        f" data in {settings.var_dir})",
        "",
        f"  Rider page (scan this code):  {rider_url}",
        f"      place {first.name_zh} · code {first.code}" + (f" · {station.name_zh}" if station else ""),
        f"  Report API:                   POST {stack.url('reporter')}/api/v1/reports",
        f"  Staff console:                {stack.url('closer')}/console",
        f"      sign in as {station.id if station else 'yh-s1'} / {demo.DEMO_PASSWORD}  (supervisor: "
        f"yh-centre, admin: admin, same password)",
        f"  Queue API:                    {stack.url('closer')}/api/v1/queue  (bearer token from "
        f"POST /api/v1/auth/token)",
        f"  Route explain:                {stack.url('router')}/api/v1/route/explain?lat=31.33&lon=121.52"
        f"&category=manhole_cover",
        "  Notifications:                "
        + (
            f"printed here as they arrive (demo sink {stack.extra_env[NOTIFY_FALLBACK]}); failed: "
            f"{stack.url('notifier')}/api/v1/deliveries"
            if NOTIFY_FALLBACK in stack.extra_env
            else f"{stack.url('notifier')}/api/v1/deliveries (channels: data/notify/rules.json)"
        ),
        "  Metrics:                      " + "  ".join(f"{stack.url(s)}/metrics" for s in SERVICES),
        "  API docs:                     " + "  ".join(f"{stack.url(s)}/docs" for s in SERVICES),
        f"  Logs:                         {stack.log_dir}",
        "",
    ]
    print("\n".join(lines))
    if stack.brokers > 1 or stack.proxied or stack.postgres_url:
        print_shape(stack)
        print()
    segno.make(rider_url, error="m").terminal(compact=True)
    print(f"\n  {first.code}  ·  more codes: {demo.DEMO_PLACES}\n\nPress Ctrl-C to stop everything.")


def print_shape(stack: Any) -> None:
    """Where every process of the stack is, with its pid: what to kill -9 to try failover."""
    from gridloop.stack import PROXY

    lines = [f"  Brokers ({stack.broker_kind}):  {stack.bootstrap_servers}"]
    if stack.kafka is not None:
        for index in range(stack.kafka.brokers):
            pid = stack.kafka.node_pid(index) or "-"
            lines.append(f"      broker {index}  {stack.kafka.node_bootstrap(index)}  pid {pid}")
        lines.append(
            f"      topics: replication {stack.kafka.replication_factor}, "
            f"min.insync.replicas {stack.kafka.min_insync_replicas}"
        )
    if stack.postgres_url:
        pid = f"  pid {stack.postgres.pid}" if stack.postgres is not None else ""
        lines.append(f"  PostgreSQL:  {_hide_password(stack.postgres_url)}{pid}")
        for service in SERVICES:
            lines.append(f"      {service:9} {_hide_password(stack.settings.db_url(service))}")
    proxy = stack.procs.get(PROXY)
    for service in SERVICES:
        entry = f"  {service:9} {stack.url(service)}"
        lines.append(entry + (f"  (entry proxy, pid {proxy.pid})" if proxy is not None else ""))
        if proxy is not None:
            for index in range(stack.replica_count(service)):
                url, pid = stack.replica_url(service, index), stack.replica_pid(service, index)
                lines.append(f"      replica {index}  {url}  pid {pid}")
    print("\n".join(lines))


def _hide_password(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


NOTIFY_FALLBACK = "GRIDLOOP_NOTIFY_FALLBACK_URL"


def demo_sink() -> Any:
    """The terminal sink of the demo notifications: stations without a channel of their own send here,
    and `up` prints each message as it arrives."""
    from services.notifier.sink import Sink, terminal_line

    return Sink(lambda item: print(terminal_line(item), flush=True)).start()


def cmd_up(args: argparse.Namespace) -> int:
    """Run the whole embedded stack until Ctrl-C."""
    from gridloop.stack import Stack, StackConfigError

    settings = get_settings()
    if not args.no_demo and not settings.dev_mode:
        # the demo accounts share a published password: an embedded stack with them is a dev stack
        print("dev mode: the demo accounts are loaded (GRIDLOOP_DEV=1; --no-demo for a checked stack)")
        settings = settings.model_copy(update={"dev_mode": True})
    if not _checked(settings, "gridloop up"):
        return 2
    sink = None if args.no_demo else demo_sink()
    env = {NOTIFY_FALLBACK: sink.url} if sink is not None else {}
    try:
        stack = Stack(
            settings=settings,
            broker=args.broker,
            demo=None if args.no_demo else load_demo,
            brokers=args.brokers,
            database=args.database,
            database_url=args.database_url,
            replicas=args.replicas,
            extra_env=env,
        )
    except StackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if sink is not None:
            sink.stop()
        return 2
    try:
        print(f"starting the broker ({stack.choose_broker()}) …", flush=True)
        stack.start()
        print_banner(stack)
        while True:
            # a supervisor's job: whatever died (kill -9 while trying failover) is started again
            for service, index in stack.exited():
                print(f"{stack.proc_name(service, index)} exited; restarting it", flush=True)
                stack.restart(service, index)
                print_shape(stack)
            if stack.kafka is not None:
                for index in range(stack.kafka.brokers):
                    if not stack.kafka.is_running(index):
                        print(f"broker {index} exited; restarting it", flush=True)
                        stack.kafka.start_node(index)
                        print_shape(stack)
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
        return 0
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon children
        stack.stop()
        if sink is not None:
            sink.stop()
        print("stopped.", flush=True)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Drive realistic rider and staff traffic against a running stack."""
    import asyncio

    from gridloop.simulate import simulate, summary

    settings = get_settings()
    reporter = args.reporter or f"http://{settings.host}:{settings.reporter_port}"
    closer = args.closer or f"http://{settings.host}:{settings.closer_port}"
    print(f"simulating {args.rate}/s for {args.duration}s against {reporter} and {closer} …", flush=True)
    tally = asyncio.run(
        simulate(
            reporter, closer, args.rate, args.duration, args.staff_every, args.seed, staff=not args.no_staff
        )
    )
    print(summary(tally, args.duration))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="gridloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up", help="run the whole embedded stack (brokers, databases, demo data, the services' replicas)"
    )
    up.add_argument(
        "--broker",
        choices=["auto", "kafka", "tansu", "external"],
        default="auto",
        help="auto: external if KAFKA_BOOTSTRAP_SERVERS is set, else Kafka with Java, else Tansu",
    )
    up.add_argument("--no-demo", action="store_true", help="do not load demo places and accounts")
    up.add_argument("--brokers", type=int, default=1, help="Apache Kafka (KRaft) brokers; 3: RF 3, min ISR 2")
    up.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="sqlite: a file per service under var/; postgres: a database per service",
    )
    up.add_argument(
        "--database-url",
        help="PostgreSQL server for --database postgres (default: an embedded one under var/postgres)",
    )
    up.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="processes per service, behind one entry per service on its usual port (needs postgres)",
    )
    up.set_defaults(func=cmd_up)

    services: dict[str, argparse.ArgumentParser] = {}
    for name in SERVICES:
        p = services[name] = sub.add_parser(name, help=f"run the {name} service")
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        p.add_argument("--workers", type=int, default=1, help="must be 1: scale with replicas (processes)")
        p.set_defaults(func=cmd_service)

    sim = sub.add_parser("simulate", help="realistic rider traffic and staff work against a running stack")
    sim.add_argument("--rate", type=float, default=2.0, help="reports per second")
    sim.add_argument("--duration", type=float, default=60.0, help="seconds")
    sim.add_argument("--staff-every", type=float, default=5.0, help="seconds between staff rounds")
    sim.add_argument("--no-staff", action="store_true", help="riders only")
    sim.add_argument("--seed", type=int)
    sim.add_argument("--reporter", help="reporter base URL (default from settings)")
    sim.add_argument("--closer", help="closer base URL (default from settings)")
    sim.set_defaults(func=cmd_simulate)

    topics = sub.add_parser("topics", help="create or verify the Kafka topics")
    topics.add_argument("--partitions", type=int)
    topics.add_argument("--replication", type=int)
    topics.add_argument(
        "--wait-brokers",
        type=int,
        metavar="N",
        help="wait for N live brokers first (default: GRIDLOOP_TOPIC_WAIT_BROKERS, else the replication)",
    )
    topics.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="give up after this long (default: GRIDLOOP_TOPIC_WAIT_SECONDS, 120)",
    )
    topics.set_defaults(func=cmd_topics)

    db = sub.add_parser("db", help="database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply migrations")
    upgrade.add_argument("--service", choices=SERVICES)
    upgrade.set_defaults(func=cmd_db)

    demo = sub.add_parser("demo", help="demo data")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    demo_sub.add_parser("load", help="load demo places, codes and staff").set_defaults(func=cmd_demo)

    from gridloop.proxy import add_parser as add_proxy_parser

    add_proxy_parser(sub)

    from services.closer.cli import add_parser as add_closer_parser

    add_closer_parser(sub, services["closer"])

    from services.reporter import cli as reporter_cli  # imports its dependencies lazily

    reporter_cli.add_parser(sub)

    from services.notifier import cli as notifier_cli  # imports Apprise lazily

    notifier_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gridloop` command."""
    args = build_parser().parse_args(argv)
    # SIGINT and SIGTERM stop every command cleanly, even one started with SIGINT ignored; a service's
    # uvicorn takes both over while it serves, and hands the signal back to this handler after
    stop_on_signals()
    settings = get_settings()
    # a line's `service`: the service or proxy this process is, else the command's own tool
    service = args.command if args.command in (*SERVICES, "proxy") else "gridloop"
    logs.setup(settings.log_level, settings.log_format, service)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

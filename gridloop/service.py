"""What every service process shares: database, outbox relay, FastStream broker, and the HTTP basics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.specification import AsyncAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import MetaData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridloop import metrics
from gridloop.access import RequestLog
from gridloop.consumer import Handler, IdempotentConsumer, Incoming
from gridloop.db import Database
from gridloop.errors import error_body, install_error_handlers, too_large_message
from gridloop.kafkaauth import KafkaSecurity, login_problem
from gridloop.lag import GroupTopics, LagMonitor, off_loop
from gridloop.leader import Leadership
from gridloop.outbox import OutboxRelay
from gridloop.photos import photo_form_bytes
from gridloop.plumbing import PlumbingTables
from gridloop.pruning import Pruner
from gridloop.settings import Settings, get_settings, refuse_unsafe

log = logging.getLogger(__name__)
LAG_DEADLINE = 60.0
STOP_DEADLINE = 10.0
"""Longest wait for the background tasks at stop (each is cancelled first)."""
"""Longest wait for one lag measurement (the admin client's own timeouts are 5–30 s)."""


class Runtime:
    """One service process's plumbing: database, outbox relay, pruner, broker, consumers, leaderships."""

    def __init__(
        self, service: str, metadata: MetaData, tables: PlumbingTables, settings: Settings | None = None
    ) -> None:
        self.service = service
        self.settings = settings or get_settings()
        # derived once (a bad combination or an unreadable TLS file stops the start here), and used by
        # every Kafka client of the process: relay, consumers, lag
        self.kafka_security = KafkaSecurity.from_settings(self.settings)
        self.db = Database(self.settings.db_url(service), metadata)
        self.tables = tables
        self.leaders: dict[str, Leadership] = {}
        self.relay = OutboxRelay(
            self.db,
            tables,
            self.settings.kafka_bootstrap_servers,
            service,
            batch=self.settings.outbox_batch,
            poll_seconds=self.settings.outbox_poll_seconds,
            topic_prefix=self.settings.topic_prefix,
            idempotence=self.settings.kafka_idempotence,
            leadership=self.leadership("outbox"),
            security=self.kafka_security,
        )
        self.pruner = Pruner(
            self.db,
            service,
            self.leadership("prune"),
            outbox_retain=timedelta(seconds=self.settings.outbox_retain_seconds),
            dedup_window=timedelta(seconds=self.settings.dedup_window_seconds),
            batch=self.settings.prune_batch,
            interval=self.settings.prune_interval_seconds,
        )
        self.broker = KafkaBroker(
            self.settings.kafka_bootstrap_servers.split(","),
            client_id=f"gridloop-{service}",
            security=self.kafka_security.faststream(),
            logger=logging.getLogger(f"gridloop.{service}.broker"),
            # FastStream's own consumer/publisher metrics go on the same registry as ours
            middlewares=[
                KafkaPrometheusMiddleware(registry=metrics.REGISTRY, app_name=f"gridloop-{service}")
            ],
        )
        self.consumers: list[IdempotentConsumer] = []
        self.background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self.broker_started = False
        self.stopping = False

    def leadership(self, role: str) -> Leadership:
        """This process's leadership of `role` for the service database (one per role, released at stop)."""
        if role not in self.leaders:
            self.leaders[role] = Leadership(self.db, self.service, role)
        return self.leaders[role]

    def consumer(
        self,
        group: str,
        topics: list[str],
        handlers: Mapping[str, Handler],
        replays: Mapping[str, Handler] | None = None,
        plain_sql: bool = False,
        on_begin: Callable[[Any, Sequence[Incoming]], None] | None = None,
        skip_unknown: bool = False,
    ) -> IdempotentConsumer:
        """Declare an idempotent consumer group on the broker (`plain_sql`: its handlers take a Tx;
        `on_begin`: run first in every batch transaction, with its parsed events; `skip_unknown`:
        events of types this code does not know are skipped and counted, not dead-lettered)."""
        consumer = IdempotentConsumer(
            group=group,
            topics=topics,
            db=self.db,
            tables=self.tables,
            handlers=handlers,
            replays=replays,
            service=self.service,
            attempts=self.settings.deadletter_attempts,
            after_commit=self.relay.wake,
            plain_sql=plain_sql,
            on_begin=on_begin,
            skip_unknown=skip_unknown,
        )
        consumer.subscribe(
            self.broker,
            max_records=self.settings.consumer_max_records,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            fetch_min_bytes=self.settings.fetch_min_bytes,
            session_timeout_ms=self.settings.session_timeout_ms,
            topic_prefix=self.settings.topic_prefix,
        )
        self.consumers.append(consumer)
        return consumer

    def document_publication(self, topic: str, model: type[Any], description: str) -> None:
        """List a topic this service publishes (through the outbox) in its AsyncAPI document."""
        publisher = self.broker.publisher(
            self.settings.topic_prefix + topic,
            title=f"{self.service}:{topic}",
            description=description,
            schema=model,
        )
        del publisher

    async def _start_broker(self) -> None:
        # intake must work while the broker is down, so the broker is started in the background
        backoff = 0.5
        while not self.stopping:  # also ends a loop whose cancellation was swallowed (see stop)
            try:
                await self.broker.start()
                self.broker_started = True
                log.info("%s: broker connected", self.service)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # the client says only "Unable to bootstrap": a refused login or certificate is named
                problem = await login_problem(
                    self.settings.kafka_bootstrap_servers, self.kafka_security, wait=3.0
                )
                if problem:
                    log.error("%s: %s; retrying in %.1fs", self.service, problem, backoff)
                else:
                    log.warning(
                        "%s: broker not reachable (%s); retrying in %.1fs", self.service, exc, backoff
                    )
                try:
                    await self.broker.stop()
                except Exception:
                    log.debug("broker stop after failed start", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _measure_lag(self) -> None:
        from kafka import TopicPartition

        prefix = self.settings.topic_prefix
        groups = [GroupTopics(prefix + c.group, tuple(prefix + t for t in c.topics)) for c in self.consumers]

        def new_monitor() -> LagMonitor:
            return LagMonitor(
                self.settings.kafka_bootstrap_servers, groups, self.settings.lag_source, self.kafka_security
            )

        monitor = new_monitor()
        try:
            while True:
                await asyncio.sleep(self.settings.lag_interval_seconds)
                for consumer in self.consumers:
                    for (topic, partition), hw in consumer.highwaters().items():
                        monitor.highwaters[TopicPartition(topic, partition)] = hw
                try:
                    lags = await asyncio.wait_for(off_loop(monitor.measure, "gridloop-lag"), LAG_DEADLINE)
                except TimeoutError:
                    # the admin client hangs (see lag.off_loop): leave it to its thread, start afresh
                    log.warning("%s: lag not measured in %.0f s; reconnecting", self.service, LAG_DEADLINE)
                    monitor = new_monitor()
                    continue
                except Exception as exc:
                    log.debug("%s: lag not measured: %s", self.service, exc)
                    continue
                for (group, topic), lag in lags.items():
                    metrics.consumer_lag.labels(group.removeprefix(prefix), topic.removeprefix(prefix)).set(
                        lag
                    )
        finally:
            with contextlib.suppress(TimeoutError):  # a close that hangs is abandoned with its thread
                await asyncio.wait_for(off_loop(monitor.close, "gridloop-lag-close"), 5.0)

    async def start(self) -> None:
        """Start the relay, the broker connection and any background loops."""
        await self.relay.start()
        self._tasks.append(asyncio.create_task(self._start_broker(), name=f"{self.service}-broker"))
        if self.consumers:
            self._tasks.append(asyncio.create_task(self._measure_lag(), name=f"{self.service}-lag"))
        self._tasks.append(asyncio.create_task(self.pruner.run(), name=f"{self.service}-prune"))
        for loop in self.background:
            self._tasks.append(asyncio.create_task(loop(), name=f"{self.service}-{loop.__name__}"))

    async def stop(self) -> None:
        """Stop background work, the broker and the relay; close the database pool."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # bounded: a task that swallowed its cancellation (Python 3.11's wait_for can, when the
            # awaited call finishes at the same moment) must not keep the process from stopping
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_DEADLINE)
            for task in stuck:
                log.warning(
                    "%s: %s did not stop within %g s; left behind",
                    self.service,
                    task.get_name(),
                    STOP_DEADLINE,
                )
        self._tasks.clear()
        try:
            await self.broker.stop()
        except Exception:
            log.debug("broker stop", exc_info=True)
        await self.relay.stop()
        for leadership in self.leaders.values():
            await asyncio.to_thread(leadership.release)
        self.db.dispose()

    async def readiness(self) -> dict[str, bool]:
        """Whether the database and the broker answer."""
        db_ok = await asyncio.to_thread(self.db.ping)
        broker_ok = self.broker_started and await self.relay.probe()
        return {"database": db_ok, "broker": broker_ok}


class HttpMetrics:
    """Request count and duration per route template and status class (plain ASGI: no per-request
    task or body copy, which Starlette's BaseHTTPMiddleware costs on every call)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # the router puts the matched route into the scope: label by its template, never the path
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            metrics.http_requests.labels(self.service, method, route, f"{status // 100}xx").inc()
            metrics.http_duration.labels(self.service, method, route).observe(time.perf_counter() - start)


def page_security_headers(img_src: str) -> dict[str, str]:
    """The security headers of every HTML page (SECURITY.md, Pages): scripts, styles and connections
    from this origin only, images also from `img_src`, never framed, nothing cached or sniffed."""
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            f"default-src 'self'; img-src 'self' {img_src}; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


DEFAULT_BODY_CAP = 64 * 1024
"""Largest request body of any route not in a service's photo table (JSON, forms, tokens, feedback)."""


def _route_pattern(template: str) -> re.Pattern[str]:
    """A route template ("/api/v1/cases/{case_id}/transitions") as a regex: {name} is one segment."""
    parts = re.split(r"(\{[^}/]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


class BodyCap:
    """A cap on every request body, at the ASGI edge, before any route reads a byte (plain ASGI).

    `routes` maps "METHOD /template" to a larger cap (the photo forms); every other request gets
    `default`. A declared Content-Length over the cap is answered 413 without calling the app; a
    chunked body is counted as it streams and cut off with 413 at the cap (the app sees a disconnect,
    so the handler never finishes with a partial body)."""

    def __init__(
        self, app: ASGIApp, default: int = DEFAULT_BODY_CAP, routes: Mapping[str, int] | None = None
    ):
        self.app = app
        self.default = default
        self.routes: list[tuple[str, re.Pattern[str], int]] = []
        for key, cap in (routes or {}).items():
            method, _, template = key.partition(" ")
            self.routes.append((method.upper(), _route_pattern(template), cap))

    def cap_for(self, method: str, path: str) -> int:
        """The cap of one request: its route's, else the default."""
        for route_method, pattern, cap in self.routes:
            if route_method == method and pattern.match(path):
                return cap
        return self.default

    @staticmethod
    async def refuse(send: Send, cap: int) -> None:
        """The 413 in the error envelope, stating the cap."""
        body = json.dumps(
            error_body(
                "payload_too_large",
                too_large_message(cap),
                {"max_bytes": cap},
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope["method"], scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > cap:
                    await self.refuse(send, cap)
                    return
                break
        seen = 0
        cut = False
        started = False

        async def capped_receive() -> Message:
            nonlocal seen, cut
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    cut = True
                    if not started:
                        await self.refuse(send, cap)
                    # the app stops reading: to it, the client went away
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if cut:
                return  # the 413 is the answer; whatever the app says after it is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not cut:
                raise
            log.info("request body over %d bytes cut off on %s %s", cap, scope["method"], scope["path"])


class ServiceApp(FastAPI):
    """A service's app: the request log stays the outermost middleware, whatever a service adds after
    create_app (the reporter's fast path answers riders' posts in front of everything else)."""

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack, with RequestLog moved first (outermost) in the user middleware."""
        self.user_middleware.sort(key=lambda m: m.cls is not RequestLog)  # stable: the rest keep order
        return super().build_middleware_stack()


class Readiness(BaseModel):
    """`/readyz`: ok (200) or unavailable (503), and which dependency answered."""

    status: str
    checks: dict[str, bool]


def create_app(
    runtime: Runtime,
    title: str,
    description: str,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    photo_routes: Mapping[str, int] | None = None,
) -> FastAPI:
    """A FastAPI app with the shared endpoints, error envelope, HTTP metrics, body caps and lifecycle.

    Refuses to build (UnsafeSettingsError) on unsafe settings outside dev mode (SECURITY.md).
    `photo_routes`: "METHOD /route template" → photos per request; those routes' bodies may be that
    many photos and a form (gridloop.photos.photo_form_bytes), every other body DEFAULT_BODY_CAP."""
    for problem in refuse_unsafe(runtime.settings, f"the {runtime.service}"):
        log.warning("%s: unsafe setting allowed by GRIDLOOP_DEV: %s", runtime.service, problem)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if on_startup:
            await on_startup()
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = ServiceApp(
        title=title,
        description=description,
        version="1.0",
        lifespan=lifespan,
        # HTTP metrics are ours (HttpMetrics, on Prometheus); FastAPI's OpenTelemetry hooks would
        # look up the providers on every request for nothing
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    service = runtime.service

    # the cap first, so HttpMetrics (added after it: outside it) counts the 413s it answers
    caps = {route: photo_form_bytes(n) for route, n in (photo_routes or {}).items()}
    app.add_middleware(BodyCap, default=DEFAULT_BODY_CAP, routes=caps)
    app.add_middleware(HttpMetrics, service=service)
    app.add_middleware(
        RequestLog, enabled=runtime.settings.access_log, trusted_proxies=runtime.settings.proxies()
    )

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Alive."""
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["ops"], response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz() -> JSONResponse:
        """Ready when the database and the broker are reachable."""
        checks = await runtime.readiness()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics_endpoint() -> Response:
        """Prometheus metrics of this process."""
        return PlainTextResponse(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi", tags=["ops"])
    async def asyncapi() -> Response:
        """The AsyncAPI document of what this service consumes and publishes."""
        spec = AsyncAPI(runtime.broker, title=f"GridLoop {service}", version="1.0").to_specification()
        return Response(spec.to_json(), media_type="application/json")

    return app

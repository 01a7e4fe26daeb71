"""What every service process shares: database, outbox relay, FastStream broker, and the HTTP basics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
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
from gridloop.consumer import Handler, IdempotentConsumer
from gridloop.db import Database
from gridloop.errors import install_error_handlers
from gridloop.lag import GroupTopics, LagMonitor
from gridloop.outbox import OutboxRelay
from gridloop.plumbing import PlumbingTables
from gridloop.settings import Settings, get_settings

log = logging.getLogger(__name__)


class Runtime:
    """One service process's plumbing: its database, outbox relay, broker and consumers."""

    def __init__(
        self, service: str, metadata: MetaData, tables: PlumbingTables, settings: Settings | None = None
    ) -> None:
        self.service = service
        self.settings = settings or get_settings()
        self.db = Database(self.settings.db_url(service), metadata)
        self.tables = tables
        self.relay = OutboxRelay(
            self.db,
            tables,
            self.settings.kafka_bootstrap_servers,
            service,
            batch=self.settings.outbox_batch,
            poll_seconds=self.settings.outbox_poll_seconds,
            topic_prefix=self.settings.topic_prefix,
        )
        self.broker = KafkaBroker(
            self.settings.kafka_bootstrap_servers.split(","),
            client_id=f"gridloop-{service}",
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

    def consumer(
        self,
        group: str,
        topics: list[str],
        handlers: Mapping[str, Handler],
        replays: Mapping[str, Handler] | None = None,
        plain_sql: bool = False,
        on_begin: Callable[[Any], None] | None = None,
    ) -> IdempotentConsumer:
        """Declare an idempotent consumer group on the broker (`plain_sql`: its handlers take a Tx;
        `on_begin`: run first in every batch transaction)."""
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
        while True:
            try:
                await self.broker.start()
                self.broker_started = True
                log.info("%s: broker connected", self.service)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: broker not reachable (%s); retrying in %.1fs", self.service, exc, backoff)
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
        monitor = LagMonitor(self.settings.kafka_bootstrap_servers, groups, self.settings.lag_source)
        try:
            while True:
                await asyncio.sleep(self.settings.lag_interval_seconds)
                for consumer in self.consumers:
                    for (topic, partition), hw in consumer.highwaters().items():
                        monitor.highwaters[TopicPartition(topic, partition)] = hw
                try:
                    lags = await asyncio.to_thread(monitor.measure)
                except Exception as exc:
                    log.debug("%s: lag not measured: %s", self.service, exc)
                    continue
                for (group, topic), lag in lags.items():
                    metrics.consumer_lag.labels(group.removeprefix(prefix), topic.removeprefix(prefix)).set(
                        lag
                    )
        finally:
            await asyncio.to_thread(monitor.close)

    async def start(self) -> None:
        """Start the relay, the broker connection and any background loops."""
        await self.relay.start()
        self._tasks.append(asyncio.create_task(self._start_broker(), name=f"{self.service}-broker"))
        if self.consumers:
            self._tasks.append(asyncio.create_task(self._measure_lag(), name=f"{self.service}-lag"))
        for loop in self.background:
            self._tasks.append(asyncio.create_task(loop(), name=f"{self.service}-{loop.__name__}"))

    async def stop(self) -> None:
        """Stop background work, the broker and the relay; close the database pool."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        try:
            await self.broker.stop()
        except Exception:
            log.debug("broker stop", exc_info=True)
        await self.relay.stop()
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


class Readiness(BaseModel):
    """`/readyz`: ok (200) or unavailable (503), and which dependency answered."""

    status: str
    checks: dict[str, bool]


def create_app(
    runtime: Runtime,
    title: str,
    description: str,
    on_startup: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """A FastAPI app with the shared endpoints, error envelope, HTTP metrics and lifecycle."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if on_startup:
            await on_startup()
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
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

    app.add_middleware(HttpMetrics, service=service)

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

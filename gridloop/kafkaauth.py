"""Kafka client security (TLS, SASL): the settings turned, once, into what each client library takes.

Every Kafka client of a process gets its security from one `KafkaSecurity` (made by `from_settings`
at start): the outbox relay's producer and tail reader and FastStream's consumers (aiokafka), the
topic and lag admins (kafka-python). Both libraries take the same keyword names, so
`client_kwargs` serves both; FastStream's `KafkaBroker` takes a `faststream.security` object.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gridloop.brokers.ports import parse_bootstrap

if TYPE_CHECKING:
    from faststream.security import BaseSecurity

    from gridloop.settings import Settings

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
MECHANISMS: tuple[SaslMechanism, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


class KafkaSecurityError(SystemExit):
    """Start-up refused: the Kafka security settings do not fit together (the message names each)."""


class KafkaLoginError(RuntimeError):
    """The broker answered but would not let this client in (login or certificate refused)."""


def security_problems(settings: Settings) -> list[str]:
    """Every way the GRIDLOOP_KAFKA_* security settings contradict each other, one sentence each.

    Pure. A setting the chosen protocol would ignore is refused too: a password or a CA file that is
    silently not used looks like security that is not there."""
    protocol = settings.kafka_security_protocol
    problems: list[str] = []
    sasl = {
        "GRIDLOOP_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "GRIDLOOP_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "GRIDLOOP_KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
    }
    tls = {
        "GRIDLOOP_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "GRIDLOOP_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "GRIDLOOP_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    if protocol in SASL_PROTOCOLS:
        missing = [name for name, value in sasl.items() if value is None]
        if missing:
            problems.append(
                f"GRIDLOOP_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)} "
                f"(mechanisms: {', '.join(MECHANISMS)})"
            )
    else:
        given = [name for name, value in sasl.items() if value is not None]
        if given:
            problems.append(
                f"{', '.join(given)} set, but GRIDLOOP_KAFKA_SECURITY_PROTOCOL={protocol} does not log "
                "in: use SASL_SSL (or SASL_PLAINTEXT), or unset them"
            )
    if protocol not in TLS_PROTOCOLS:
        given = [name for name, value in tls.items() if value is not None]
        if given:
            problems.append(
                f"{', '.join(given)} set, but GRIDLOOP_KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                "TLS: use SSL or SASL_SSL, or unset them"
            )
    elif settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
        problems.append(
            "GRIDLOOP_KAFKA_SSL_KEYFILE set without GRIDLOOP_KAFKA_SSL_CERTFILE: a client certificate "
            "(mutual TLS) needs both"
        )
    return problems


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """The client TLS context: the CA file (else the system's CAs), the optional client certificate,
    the host name checked unless turned off. Unreadable files stop the start, naming the setting."""
    from aiokafka.helpers import create_ssl_context

    files = {
        "GRIDLOOP_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "GRIDLOOP_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "GRIDLOOP_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    for name, path in files.items():
        if path is not None and not Path(path).is_file():
            raise KafkaSecurityError(f"{name}={path}: no such file")
    try:
        context = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    except (OSError, ssl.SSLError) as exc:
        shown = ", ".join(f"{name}={path}" for name, path in files.items() if path is not None)
        raise KafkaSecurityError(f"Kafka TLS files cannot be used ({shown}): {exc}") from exc
    # create_ssl_context checks the host name always; the switch exists for brokers reached by an
    # address their certificate does not name (unsafe outside dev: gridloop.settings.unsafe_settings)
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client of this process connects: protocol, SASL login, TLS context."""

    protocol: SecurityProtocol = "PLAINTEXT"
    mechanism: SaslMechanism | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSecurity:
        """The settings' security, checked (KafkaSecurityError names each problem) and with its TLS
        context built, so a bad file stops the start rather than the first connection."""
        problems = security_problems(settings)
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise KafkaSecurityError(f"Kafka client security settings do not fit together:\n{lines}")
        protocol = settings.kafka_security_protocol
        sasl = protocol in SASL_PROTOCOLS
        password = settings.kafka_sasl_password
        return cls(
            protocol=protocol,
            mechanism=settings.kafka_sasl_mechanism if sasl else None,
            username=settings.kafka_sasl_username if sasl else None,
            password=password.get_secret_value() if sasl and password is not None else None,
            ssl_context=_ssl_context(settings) if protocol in TLS_PROTOCOLS else None,
        )

    @property
    def sasl(self) -> bool:
        """Whether clients log in."""
        return self.protocol in SASL_PROTOCOLS

    @property
    def tls(self) -> bool:
        """Whether connections are encrypted."""
        return self.protocol in TLS_PROTOCOLS

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer and consumer and kafka-python's admin client
        (both take these names; a TLS context given to kafka-python overrides its ssl_* options)."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context
        if self.sasl:
            kwargs["sasl_mechanism"] = self.mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password
        return kwargs

    def faststream(self) -> BaseSecurity | None:
        """The `security` of FastStream's KafkaBroker (None: plaintext)."""
        from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

        if not self.sasl:
            return BaseSecurity(ssl_context=self.ssl_context) if self.tls else None
        assert self.username is not None and self.password is not None
        kind = {"SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512, "PLAIN": SASLPlaintext}
        return kind[self.mechanism or "PLAIN"](
            self.username, self.password, ssl_context=self.ssl_context, use_ssl=self.tls
        )

    def describe(self) -> str:
        """How clients connect, for messages (never the password)."""
        if not self.sasl:
            return self.protocol
        return f"{self.protocol}, {self.mechanism} as {self.username!r}"


PLAINTEXT = KafkaSecurity()
"""No TLS, no login: the embedded brokers (Apache Kafka and Tansu on loopback)."""


Attempt = Literal["in", "absent", "refused"]


async def _attempt(host: str, port: int, security: KafkaSecurity, wait: float) -> tuple[Attempt, str]:
    """One connection as the clients open it (TLS handshake, SASL login, a Metadata request)."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaConnectionError, KafkaError
    from aiokafka.protocol.metadata import MetadataRequest

    def reason(exc: BaseException) -> str:
        text = str(exc)
        return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"

    try:
        conn = await asyncio.wait_for(
            create_conn(host, port, request_timeout_ms=int(wait * 1000), **security.client_kwargs()), wait
        )
    except (ConnectionRefusedError, TimeoutError) as exc:
        return "absent", reason(exc)
    except ssl.SSLError as exc:
        return "refused", f"TLS refused: {exc}"
    except (OSError, KafkaError) as exc:
        if isinstance(exc, KafkaConnectionError) and "refused" in str(exc).lower():
            return "absent", reason(exc)
        return "refused", reason(exc)
    try:
        await asyncio.wait_for(conn.send(MetadataRequest([])), wait)
        return "in", ""
    except (OSError, KafkaError, TimeoutError) as exc:
        return "refused", reason(exc)
    finally:
        conn.close()


def _refusal(security: KafkaSecurity, reasons: list[str]) -> str:
    hint = (
        "check GRIDLOOP_KAFKA_SECURITY_PROTOCOL against what the broker's listener expects"
        if security.protocol == "PLAINTEXT"
        else "check the GRIDLOOP_KAFKA_* security settings against the broker's listener"
    )
    return f"Kafka refused this client ({security.describe()}): {'; '.join(reasons)} ({hint})"


async def login_problem(bootstrap_servers: str, security: KafkaSecurity, wait: float = 10.0) -> str | None:
    """Why this client cannot get in, when a broker answers but refuses it (None: one of the
    bootstrap servers let it in, or none answered at all, which is not a login problem).

    The clients themselves only say "Unable to bootstrap"; this opens one connection per bootstrap
    server as they would and keeps the reason (bad password, unknown CA, wrong host name)."""
    reasons: list[str] = []
    for host, port in parse_bootstrap(bootstrap_servers):
        outcome, why = await _attempt(host, port, security, wait)
        if outcome == "in":
            return None
        if outcome == "refused":
            reasons.append(f"{host}:{port}: {why}")
    return _refusal(security, reasons) if reasons else None


def login_problem_sync(bootstrap_servers: str, security: KafkaSecurity, wait: float = 10.0) -> str | None:
    """`login_problem` from synchronous code, also from inside a running event loop (its own thread)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, login_problem(bootstrap_servers, security, wait)).result()


def wait_for_login(bootstrap_servers: str, security: KafkaSecurity, timeout: float) -> None:
    """Wait until a bootstrap server lets this client in (the secure twin of
    `gridloop.brokers.ports.wait_for_kafka`, whose bare probe a TLS or SASL listener would drop).
    KafkaLoginError at once when a broker refuses the login; TimeoutError when none answers."""

    async def wait() -> None:
        deadline = time.monotonic() + timeout
        while True:
            last = ""
            for host, port in parse_bootstrap(bootstrap_servers):
                outcome, why = await _attempt(host, port, security, min(5.0, max(0.5, timeout)))
                if outcome == "in":
                    return
                if outcome == "refused":
                    raise KafkaLoginError(_refusal(security, [f"{host}:{port}: {why}"]))
                last = f"{host}:{port}: {why}"
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Kafka at {bootstrap_servers} did not answer within {timeout:.0f}s ({last})"
                )
            await asyncio.sleep(0.2)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, wait()).result()

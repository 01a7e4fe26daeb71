"""Kafka client security: GRIDLOOP_KAFKA_* settings → each client library's configuration, and refusals."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from kafka import KafkaAdminClient
from pydantic import ValidationError

from gridloop.kafkaauth import PLAINTEXT, KafkaSecurity, KafkaSecurityError, security_problems
from gridloop.settings import Settings, UnsafeSettingsError, refuse_unsafe, unsafe_kafka_settings
from gridloop.stack import Stack
from tests.support.tls import Ca, make_ca, make_server_pem

PASSWORD = "pw-not-in-any-repr"
SCRAM = {
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "gridloop",
    "kafka_sasl_password": PASSWORD,
}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Ca:
    """A CA of this module's own (openssl)."""
    return make_ca(tmp_path_factory.mktemp("tls"), "unit-ca")


@pytest.fixture
def no_kafka_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No GRIDLOOP_KAFKA_* security variable inherited from the test run's environment."""
    import os

    for name in [n for n in os.environ if n.startswith(("GRIDLOOP_KAFKA_S", "GRIDLOOP_KAFKA_SASL"))]:
        monkeypatch.delenv(name)
    yield monkeypatch


def security(**values: object) -> KafkaSecurity:
    """The security derived from these settings."""
    return KafkaSecurity.from_settings(Settings(**values))  # type: ignore[arg-type]


def test_plaintext_by_default(no_kafka_env: pytest.MonkeyPatch) -> None:
    """Nothing set: plaintext everywhere, no FastStream security object (the embedded brokers)."""
    sec = KafkaSecurity.from_settings(Settings())
    assert sec == PLAINTEXT
    assert sec.client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert sec.faststream() is None


def test_sasl_plaintext_scram_kwargs_for_every_client_kind(no_kafka_env: pytest.MonkeyPatch) -> None:
    """SASL_PLAINTEXT + SCRAM-SHA-512 from the environment: the exact aiokafka/kafka-python kwargs,
    and a FastStream security object that FastStream turns into the very same kwargs."""
    no_kafka_env.setenv("GRIDLOOP_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")  # any case
    no_kafka_env.setenv("GRIDLOOP_KAFKA_SASL_MECHANISM", "scram-sha-512")
    no_kafka_env.setenv("GRIDLOOP_KAFKA_SASL_USERNAME", "gridloop")
    no_kafka_env.setenv("GRIDLOOP_KAFKA_SASL_PASSWORD", PASSWORD)
    no_kafka_env.setenv("GRIDLOOP_KAFKA_SSL_CAFILE", "")  # empty: unset (compose files leave them so)
    settings = Settings()
    sec = KafkaSecurity.from_settings(settings)
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "gridloop",
        "sasl_plain_password": PASSWORD,
    }
    assert sec.client_kwargs() == expected
    fast = sec.faststream()
    assert type(fast) is SASLScram512 and fast.use_ssl is False
    assert parse_security(fast) == {**expected, "ssl_context": None}
    # the password shows in no repr: settings, security, FastStream's object aside
    assert PASSWORD not in repr(settings) and PASSWORD not in repr(sec)
    assert sec.describe() == "SASL_PLAINTEXT, SCRAM-SHA-512 as 'gridloop'"


def test_sasl_ssl_kwargs_carry_one_context_that_checks_ca_and_host(ca: Ca) -> None:
    """SASL_SSL: one TLS context (the CA file loaded, host names checked, certificates required) in
    the kwargs and in FastStream's object; FastStream derives the same kwargs from it."""
    sec = security(kafka_security_protocol="SASL_SSL", kafka_ssl_cafile=ca.cert, **SCRAM)
    kwargs = sec.client_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "gridloop",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext) and context is sec.ssl_context
    assert context.check_hostname is True and context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "unit-ca"),),)]
    fast = sec.faststream()
    assert type(fast) is SASLScram512 and fast.use_ssl is True and fast.ssl_context is context
    assert parse_security(fast) == sec.client_kwargs()


@pytest.mark.parametrize(
    ("mechanism", "kind"),
    [("SCRAM-SHA-256", SASLScram256), ("SCRAM-SHA-512", SASLScram512), ("PLAIN", SASLPlaintext)],
)
def test_each_mechanism_maps_to_its_faststream_class(mechanism: str, kind: type[BaseSecurity]) -> None:
    """Each SASL mechanism becomes FastStream's class of that name, which FastStream maps back to it."""
    sec = security(kafka_security_protocol="SASL_PLAINTEXT", **{**SCRAM, "kafka_sasl_mechanism": mechanism})
    fast = sec.faststream()
    assert type(fast) is kind
    assert parse_security(fast)["sasl_mechanism"] == mechanism == sec.client_kwargs()["sasl_mechanism"]


def test_ssl_only_and_mutual_tls(ca: Ca, tmp_path: Path) -> None:
    """SSL without login: the system CAs unless a CA file is given; a client certificate and key load
    (mutual TLS); FastStream gets a plain TLS security object; host checking can be switched off."""
    system = security(kafka_security_protocol="SSL")
    assert system.client_kwargs() == {"security_protocol": "SSL", "ssl_context": system.ssl_context}
    assert system.ssl_context is not None and system.ssl_context.check_hostname is True
    fast = system.faststream()
    assert type(fast) is BaseSecurity and parse_security(fast) == system.client_kwargs()

    client = make_server_pem(ca, tmp_path, "client", "gridloop-client")  # a key and a certificate
    mutual = security(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=ca.cert,
        kafka_ssl_certfile=tmp_path / "client.crt",
        kafka_ssl_keyfile=tmp_path / "client.key",
    )
    assert mutual.ssl_context is not None and client.is_file()
    unchecked = security(
        kafka_security_protocol="SSL", kafka_ssl_cafile=ca.cert, kafka_ssl_check_hostname=False
    )
    assert unchecked.ssl_context is not None and unchecked.ssl_context.check_hostname is False
    assert unchecked.ssl_context.verify_mode == ssl.CERT_REQUIRED  # the chain is still checked


async def test_the_kwargs_are_accepted_by_each_client_library(ca: Ca) -> None:
    """aiokafka's producer and consumer take the kwargs as they are; kafka-python's admin knows each name."""
    sec = security(kafka_security_protocol="SASL_SSL", kafka_ssl_cafile=ca.cert, **SCRAM)
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **sec.client_kwargs())
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", **sec.client_kwargs())
    try:
        assert producer.client._security_protocol == consumer._client._security_protocol == "SASL_SSL"
    finally:  # never started, but closed: an unclosed producer's finaliser logs into a later test
        await producer.stop()
        await consumer.stop()
    assert set(sec.client_kwargs()) <= set(KafkaAdminClient.DEFAULT_CONFIG)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL"},
            "GRIDLOOP_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs GRIDLOOP_KAFKA_SASL_MECHANISM, "
            "GRIDLOOP_KAFKA_SASL_USERNAME, GRIDLOOP_KAFKA_SASL_PASSWORD "
            "(mechanisms: SCRAM-SHA-256, SCRAM-SHA-512, PLAIN)",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", **SCRAM, "kafka_sasl_username": ""},
            "GRIDLOOP_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs GRIDLOOP_KAFKA_SASL_USERNAME "
            "(mechanisms: SCRAM-SHA-256, SCRAM-SHA-512, PLAIN)",
        ),
        (
            {"kafka_sasl_username": "gridloop", "kafka_sasl_password": PASSWORD},
            "GRIDLOOP_KAFKA_SASL_USERNAME, GRIDLOOP_KAFKA_SASL_PASSWORD set, but "
            "GRIDLOOP_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not log in: use SASL_SSL (or "
            "SASL_PLAINTEXT), or unset them",
        ),
        (
            {"kafka_security_protocol": "SSL", **SCRAM},
            "GRIDLOOP_KAFKA_SASL_MECHANISM, GRIDLOOP_KAFKA_SASL_USERNAME, GRIDLOOP_KAFKA_SASL_PASSWORD "
            "set, but GRIDLOOP_KAFKA_SECURITY_PROTOCOL=SSL does not log in: use SASL_SSL (or "
            "SASL_PLAINTEXT), or unset them",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", **SCRAM, "kafka_ssl_cafile": "/ca.pem"},
            "GRIDLOOP_KAFKA_SSL_CAFILE set, but GRIDLOOP_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does "
            "not use TLS: use SSL or SASL_SSL, or unset them",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/client.key"},
            "GRIDLOOP_KAFKA_SSL_KEYFILE set without GRIDLOOP_KAFKA_SSL_CERTFILE: a client certificate "
            "(mutual TLS) needs both",
        ),
    ],
)
def test_combinations_that_do_not_fit_are_refused(values: dict[str, object], message: str) -> None:
    """Each contradiction is one exact sentence; the start stops with all of them, never the password."""
    settings = Settings(**values)  # type: ignore[arg-type]
    assert security_problems(settings) == [message]
    with pytest.raises(KafkaSecurityError) as refused:
        KafkaSecurity.from_settings(settings)
    assert str(refused.value) == f"Kafka client security settings do not fit together:\n  - {message}"
    assert PASSWORD not in str(refused.value)


def test_tls_files_are_read_at_start(ca: Ca, tmp_path: Path) -> None:
    """A missing or unusable TLS file stops the start, naming the setting (not the first connection)."""
    with pytest.raises(KafkaSecurityError) as missing:
        security(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "nope.pem")
    assert str(missing.value) == f"GRIDLOOP_KAFKA_SSL_CAFILE={tmp_path / 'nope.pem'}: no such file"
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(KafkaSecurityError) as unusable:
        security(kafka_security_protocol="SSL", kafka_ssl_cafile=junk)
    assert str(unusable.value).startswith(
        f"Kafka TLS files cannot be used (GRIDLOOP_KAFKA_SSL_CAFILE={junk}): "
    )


def test_unknown_protocol_or_mechanism_is_refused_by_the_settings() -> None:
    """Values outside the lists are refused when the settings are read."""
    with pytest.raises(ValidationError, match="kafka_security_protocol"):
        Settings(kafka_security_protocol="TLS")
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        Settings(kafka_sasl_mechanism="GSSAPI")


@pytest.mark.parametrize(
    ("values", "problems"),
    [
        ({"kafka_security_protocol": "SASL_PLAINTEXT", **SCRAM, "KAFKA_BOOTSTRAP_SERVERS": "k1:9092"}, []),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                **SCRAM,
                "kafka_sasl_mechanism": "PLAIN",
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092,k2:9092",
            },
            [
                "GRIDLOOP_KAFKA_SASL_MECHANISM=PLAIN over GRIDLOOP_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT "
                "to k2:9092: the Kafka password would cross the network in clear; use SASL_SSL (or SCRAM)"
            ],
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                **SCRAM,
                "kafka_sasl_mechanism": "PLAIN",
                "KAFKA_BOOTSTRAP_SERVERS": "localhost:9092,[::1]:9093",
            },
            [],
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", **SCRAM, "kafka_ssl_check_hostname": False},
            [
                "GRIDLOOP_KAFKA_SSL_CHECK_HOSTNAME is false: any certificate the CA signed would be "
                "accepted for any broker; give the brokers certificates that name their hosts"
            ],
        ),
        ({"kafka_ssl_check_hostname": False}, []),  # no TLS: nothing to check
        ({"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092"}, []),  # a private plaintext network stays allowed
    ],
)
def test_unsafe_kafka_settings(values: dict[str, object], problems: list[str]) -> None:
    """A password in clear off this machine, and TLS without host checks, are unsafe; production
    refuses them through refuse_unsafe like every other unsafe setting."""
    settings = Settings(**{"dev_mode": False, "jwt_secret": None, **values})  # type: ignore[arg-type]
    assert unsafe_kafka_settings(settings) == problems
    if problems:
        with pytest.raises(UnsafeSettingsError, match="GRIDLOOP_KAFKA_"):
            refuse_unsafe(settings)


def test_stack_hands_its_services_the_security_of_the_broker_they_use(
    no_kafka_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An external broker: the settings' GRIDLOOP_KAFKA_* go to every service; a broker the stack
    started: plaintext, and inherited TLS/SASL variables are dropped, not passed half on."""
    settings = Settings(var_dir=tmp_path, kafka_security_protocol="SASL_PLAINTEXT", **SCRAM)  # type: ignore[arg-type]
    no_kafka_env.setenv("GRIDLOOP_KAFKA_SSL_CAFILE", "/inherited/ca.pem")  # not what the stack was given
    stack = Stack(settings=settings, broker="external")
    stack.broker_kind = "external"
    env = stack.service_env("router")
    assert {k: v for k, v in env.items() if k.startswith("GRIDLOOP_KAFKA_S")} == {
        "GRIDLOOP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "GRIDLOOP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "GRIDLOOP_KAFKA_SASL_USERNAME": "gridloop",
        "GRIDLOOP_KAFKA_SASL_PASSWORD": PASSWORD,
        "GRIDLOOP_KAFKA_SSL_CHECK_HOSTNAME": "true",
    }
    assert stack.kafka_security.client_kwargs()["sasl_plain_password"] == PASSWORD
    stack.broker_kind = "kafka"
    env = stack.service_env("router")
    assert {k: v for k, v in env.items() if k.startswith("GRIDLOOP_KAFKA_S")} == {
        "GRIDLOOP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"
    }
    assert stack.kafka_security == PLAINTEXT

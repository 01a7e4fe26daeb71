"""The compose stack is consistent with the code (commands, mounted files, KRaft) and starts with no known
credential: compose requires the secrets, and the services refuse unsafe settings."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from gridloop.cli import ONE_WORKER, build_parser
from gridloop.settings import KNOWN_SECRETS, Settings, UnsafeSettingsError, refuse_unsafe, unsafe_settings

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "docker-compose.yml"


def test_compose_services_commands_and_mounts() -> None:
    """Every service command parses as a gridloop command; every bind-mounted path is in the repo."""
    stack = yaml.safe_load(COMPOSE.read_text())
    services = stack["services"]
    assert {
        "kafka1",
        "kafka2",
        "kafka3",
        "postgres",
        "reporter",
        "router",
        "closer",
        "prometheus",
        "grafana",
    } <= set(services)
    for name in ("reporter", "router", "closer"):
        build_parser().parse_args(services[name]["command"])
        assert services[name]["deploy"]["replicas"] >= 2
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgresql://")
        assert services[name]["environment"]["DATABASE_URL"].endswith(f"/{name}")
    build_parser().parse_args(services["topics"]["command"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), source
    kafka = services["kafka1"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["KAFKA_DEFAULT_REPLICATION_FACTOR"] == 3


# --- no known credentials (issue 12) ------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


class ComposeRefused(Exception):
    """What `docker compose` says when a ${VAR:?message} is unset or empty."""


def interpolate(text: str, environ: dict[str, str]) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?message}."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = environ.get(name, "")
        if op == "?" and not value:
            raise ComposeRefused(f"required variable {name} is missing a value: {arg}")
        return value or (arg if op == "-" else "")

    return _VAR.sub(one, text)


def service_env(environ: dict[str, str], name: str = "reporter") -> dict[str, str]:
    """A service's environment as compose would give it, from the operator's environment."""
    stack = yaml.safe_load(interpolate(COMPOSE.read_text(), environ))
    return {k: str(v) for k, v in stack["services"][name]["environment"].items()}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a service process would read from that environment (not in dev mode)."""
    for name in list(os.environ):
        if name.startswith("GRIDLOOP_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_compose_has_no_known_secret_or_demo_accounts() -> None:
    """No secret or password has a default; the JWT secret is required; nothing loads demo accounts."""
    text = COMPOSE.read_text()
    defaults = {m.group(1): m.group(3) for m in _VAR.finditer(text) if m.group(2) == "-"}
    assert not {name for name in defaults if "SECRET" in name or "PASSWORD" in name}, defaults
    assert not set(defaults.values()) & KNOWN_SECRETS
    assert "change-me" not in text
    assert "${GRIDLOOP_JWT_SECRET:?set GRIDLOOP_JWT_SECRET, 32+ random bytes}" in text
    for service in yaml.safe_load(text)["services"].values():
        assert "demo" not in f"{service.get('entrypoint', '')} {service.get('command', '')}"
        for port in service.get("ports", []):
            assert str(port).startswith(("127.0.0.1:", "${GRIDLOOP_BIND:-127.0.0.1}:")), port


def test_starting_with_the_compose_defaults_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose itself refuses without a secret; the old default or a short one is refused by the
    services' start-up check, naming the problem; a real secret starts."""
    with pytest.raises(ComposeRefused, match=r"GRIDLOOP_JWT_SECRET.*32\+ random bytes"):
        service_env({"POSTGRES_PASSWORD": "pw"})
    with pytest.raises(ComposeRefused, match="POSTGRES_PASSWORD"):
        service_env({"GRIDLOOP_JWT_SECRET": "x" * 48})

    old_default = settings_from(
        service_env({"GRIDLOOP_JWT_SECRET": "change-me-in-production", "POSTGRES_PASSWORD": "pw"}),
        monkeypatch,
    )
    assert not old_default.dev_mode
    problems = unsafe_settings(old_default)
    assert len(problems) == 1
    assert "GRIDLOOP_JWT_SECRET is the published example 'change-me-in-production'" in problems[0]
    with pytest.raises(UnsafeSettingsError, match="refuses to start with unsafe settings") as refused:
        refuse_unsafe(old_default, "the reporter")
    assert "change-me-in-production" in str(refused.value) and "GRIDLOOP_DEV=1" in str(refused.value)

    short = settings_from(
        service_env({"GRIDLOOP_JWT_SECRET": "s3cret", "POSTGRES_PASSWORD": "pw"}), monkeypatch
    )
    assert unsafe_settings(short) == [
        "GRIDLOOP_JWT_SECRET is 6 bytes; at least 32 random bytes are needed (e.g. `openssl rand -base64 48`)"
    ]

    good = {
        "GRIDLOOP_JWT_SECRET": "k" * 16 + "Qx9!v2Lm0pZr7TbW" + "y" * 16,
        "POSTGRES_PASSWORD": "pw",
        "GRIDLOOP_PUBLIC_BASE_URL": "https://report.example.org",
        "GRIDLOOP_CLOSER_PUBLIC_URL": "https://staff.example.org",
    }
    assert unsafe_settings(settings_from(service_env(good), monkeypatch)) == []
    plain = settings_from(
        service_env({**good, "GRIDLOOP_PUBLIC_BASE_URL": "http://report.example.org"}), monkeypatch
    )
    assert [p.split(":")[0] for p in unsafe_settings(plain)] == ["GRIDLOOP_PUBLIC_BASE_URL is http"]


def test_a_service_refuses_more_than_one_worker(capsys: pytest.CaptureFixture[str]) -> None:
    """`--workers 2` is refused before anything starts (each worker would have its own metrics registry,
    relay, consumers and scheduler): replicas are processes."""
    args = build_parser().parse_args(["closer", "--workers", "2"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err == f"error: {ONE_WORKER}\n"
    assert "--workers must be 1" in err and "replicas" in err

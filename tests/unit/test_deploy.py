"""The compose stack is consistent with the code: commands exist, mounted files exist, Kafka is KRaft."""

from __future__ import annotations

from pathlib import Path

import yaml

from gridloop.cli import build_parser

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

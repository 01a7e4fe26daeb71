"""The compose stack is consistent with the code (commands, mounted files, KRaft) and starts with no known
credential: compose requires the secrets, and the services refuse unsafe settings."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridloop.cli import ONE_WORKER, build_parser
from gridloop.net import client_address
from gridloop.settings import (
    KNOWN_SECRETS,
    SERVICES,
    Settings,
    UnsafeSettingsError,
    refuse_unsafe,
    unsafe_settings,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DEPLOYED = SERVICES
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"


def replicas_of(services: dict[str, Any]) -> dict[str, list[str]]:
    """The compose services that run each GridLoop service, by the service they run."""
    found: dict[str, list[str]] = {}
    for name, service in services.items():
        command = service.get("command") or []
        if command and command[0] in SERVICES:
            found.setdefault(command[0], []).append(name)
    return found


def test_compose_services_commands_and_mounts() -> None:
    """Every service command parses as a gridloop command; every bind-mounted path is in the repo."""
    stack = yaml.safe_load(COMPOSE.read_text())
    services = stack["services"]
    assert {
        "kafka1",
        "kafka2",
        "kafka3",
        "postgres",
        "topics",
        "migrate",
        "cli",
        "reporter-1",
        "router-1",
        "closer-1",
        "edge-cert",
        "edge",
        "prometheus",
        "alertmanager",
        "grafana",
    } <= set(services)
    for name, replicas in replicas_of(services).items():
        assert len(replicas) == 2, replicas
        for replica in replicas:
            build_parser().parse_args(services[replica]["command"])
            assert services[replica]["environment"]["DATABASE_URL"].startswith("postgresql://")
            assert services[replica]["environment"]["DATABASE_URL"].endswith(f"/{name}")
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


# the required settings that are not the services' own (each has its own test below)
OTHER_REQUIRED = {
    "GRAFANA_ADMIN_PASSWORD": "grafana-admin-pw",
    "GRIDLOOP_ALERT_WEBHOOK_URL": "https://alerts.example.org/hook",
}
REQUIRED = {"GRIDLOOP_JWT_SECRET": "j" * 48, "POSTGRES_PASSWORD": "pw", **OTHER_REQUIRED}


def stack_from(environ: dict[str, str]) -> dict[str, Any]:
    """The compose file as compose would read it with the operator's environment."""
    loaded: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), environ))
    return loaded


def service_env(environ: dict[str, str], name: str = "reporter-1") -> dict[str, str]:
    """A service's environment as compose would give it, from the operator's environment (plus the
    Grafana and Alertmanager settings, which this service does not read)."""
    stack = stack_from({**OTHER_REQUIRED, **environ})
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


# --- the stack boots and is safe by default (issue 14) ------------------------------------------


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's volumes, target path to source (a named volume or a path)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


def inside(path: str, folder: str) -> bool:
    """Whether a container path is the folder or under it."""
    return Path(path) == Path(folder) or Path(folder) in Path(path).parents


def test_kafka_data_and_metadata_are_on_the_mounted_volumes() -> None:
    """Every broker's log dirs (and so its KRaft metadata log) are inside its own named volume; the
    cluster id is one the format step accepts (a base64 UUID of 16 bytes, not a readable name)."""
    stack = stack_from(REQUIRED)
    brokers = {n: s for n, s in stack["services"].items() if s.get("image", "").startswith("apache/kafka")}
    assert sorted(brokers) == ["kafka1", "kafka2", "kafka3"]
    sources = set()
    for name, broker in brokers.items():
        env = broker["environment"]
        volumes = mounts(broker)
        dirs = env["KAFKA_LOG_DIRS"].split(",")
        for folder in [*dirs, env.get("KAFKA_METADATA_LOG_DIR", dirs[0])]:
            holding = [target for target in volumes if inside(folder, target)]
            assert holding, f"{name}: {folder} is not on a mounted volume"
            assert volumes[holding[0]] in stack["volumes"], f"{name}: {folder} is on an anonymous volume"
            sources.add(volumes[holding[0]])
        cluster_id = env["CLUSTER_ID"]
        assert len(cluster_id) <= 24
        assert len(base64.urlsafe_b64decode(cluster_id + "=" * (-len(cluster_id) % 4))) == 16
    assert sources == {"kafka1", "kafka2", "kafka3"}  # one volume per broker
    voters = brokers["kafka1"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert voters == [f"{b['environment']['KAFKA_NODE_ID']}@{n}:9093" for n, b in brokers.items()]


def test_topics_waits_for_every_healthy_broker_and_retries() -> None:
    """Each broker has a healthcheck against its own listener; `topics` starts once all are healthy,
    waits for all of them to be live itself, and is retried on failure; the services wait for it."""
    stack = stack_from(REQUIRED)
    services = stack["services"]
    brokers = sorted(n for n in services if n.startswith("kafka"))
    for name in brokers:
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD-SHELL"
        assert (
            "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092"
            in check["test"][1]
        )
        assert check["retries"] >= 3
    topics = services["topics"]
    assert topics["depends_on"] == {name: {"condition": "service_healthy"} for name in brokers}
    assert topics["restart"].startswith("on-failure")
    env = topics["environment"]
    assert env["GRIDLOOP_TOPIC_WAIT_BROKERS"] == env["GRIDLOOP_TOPIC_REPLICATION"] == len(brokers)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == ",".join(f"{b}:9092" for b in brokers)
    args = build_parser().parse_args(topics["command"])
    assert args.wait_brokers is None and args.wait is None  # the settings above apply
    for replicas in replicas_of(services).values():
        for replica in replicas:
            assert services[replica]["depends_on"]["topics"] == {
                "condition": "service_completed_successfully"
            }


def test_every_secret_is_required_with_a_message() -> None:
    """Compose stops, naming the variable, when any secret or the alert webhook is missing."""
    messages = {
        "GRIDLOOP_JWT_SECRET": "32+ random bytes",
        "POSTGRES_PASSWORD": "set POSTGRES_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD": "Grafana's admin password",
        "GRIDLOOP_ALERT_WEBHOOK_URL": "where Alertmanager POSTs alerts",
    }
    assert set(messages) == set(REQUIRED)
    for name, message in messages.items():
        for missing in ({k: v for k, v in REQUIRED.items() if k != name}, {**REQUIRED, name: ""}):
            with pytest.raises(ComposeRefused) as refused:
                stack_from(missing)
            assert str(refused.value).startswith(f"required variable {name} is missing a value: ")
            assert message in str(refused.value)
    stack_from(REQUIRED)


def test_first_admin_is_a_documented_command_not_demo_data() -> None:
    """`docker compose run --rm cli staff add admin --role admin` reaches the closer's database;
    `cli` starts only when run (a profile), after the migrations."""
    stack = stack_from(REQUIRED)
    cli = stack["services"]["cli"]
    assert cli["profiles"] == ["tools"]
    assert cli["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    args = build_parser().parse_args(["staff", "add", "admin", "--role", "admin"])
    assert (args.username, args.role) == ("admin", "admin")
    env = {k: str(v) for k, v in cli["environment"].items()}
    assert env["GRIDLOOP_CLOSER_DATABASE_URL"] == "postgresql://gridloop:pw@postgres/closer"
    assert env == {k: str(v) for k, v in stack["services"]["migrate"]["environment"].items()}
    assert "staff add admin --role admin" in COMPOSE.read_text()


def test_a_database_per_service_is_created() -> None:
    """Each service's DATABASE_URL names a database that PostgreSQL's init script creates."""
    stack = stack_from(REQUIRED)
    created = set(re.findall(r"CREATE DATABASE (\w+);", (DEPLOY / "postgres" / "init.sql").read_text()))
    wanted = set()
    for replicas in replicas_of(stack["services"]).values():
        for replica in replicas:
            wanted.add(stack["services"][replica]["environment"]["DATABASE_URL"].rsplit("/", 1)[1])
    assert wanted == created == set(DEPLOYED)


def test_grafana_is_closed() -> None:
    """No anonymous viewers, no sign-up, the admin password from the environment, loopback only; the
    datasource URL is literal (provisioning does not expand ${VAR:-default}) and points at Prometheus."""
    stack = stack_from(REQUIRED)
    grafana = stack["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-admin-pw"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    datasources = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    provisioned = yaml.safe_load(datasources.read_text())
    assert "${" not in yaml.safe_dump(provisioned)  # the values, not the comments
    (source,) = provisioned["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert "--web.listen-address" not in " ".join(stack["services"]["prometheus"]["command"])  # :9090


def test_alertmanager_routes_every_alert_to_the_webhook() -> None:
    """Prometheus sends alerts to the Alertmanager service; its config routes everything to a webhook
    whose URL is the file compose writes from GRIDLOOP_ALERT_WEBHOOK_URL."""
    stack = stack_from(REQUIRED)
    services = stack["services"]
    am = services["alertmanager"]
    assert mounts(am)["/etc/alertmanager/alertmanager.yml"] == "../alertmanager/alertmanager.yml"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am["command"]
    (config_ref,) = am["configs"]
    assert stack["configs"][config_ref["source"]] == {"content": "https://alerts.example.org/hook"}
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    routed = {config["route"]["receiver"]} | {r["receiver"] for r in config["route"].get("routes", [])}
    assert routed == {"operators"} <= set(receivers)
    (hook,) = receivers["operators"]["webhook_configs"]
    assert hook["url_file"] == config_ref["target"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.compose.yml").read_text())
    targets = [
        t for a in prometheus["alerting"]["alertmanagers"] for c in a["static_configs"] for t in c["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    assert "alertmanager" in services["prometheus"]["depends_on"]


# --- nginx.conf: a small reader for its blocks --------------------------------------------------

Directive = tuple[str, list[str], list[Any] | None]


def nginx_blocks(text: str) -> list[Directive]:
    """nginx.conf as (name, arguments, children or None) per directive, comments dropped."""
    tokens = re.findall(r"[{};]|[^\s{};]+", re.sub(r"#[^\n]*", "", text))

    def block(at: int) -> tuple[list[Directive], int]:
        out: list[Directive] = []
        words: list[str] = []
        while at < len(tokens):
            token = tokens[at]
            at += 1
            if token == ";":
                out.append((words[0], words[1:], None))
                words = []
            elif token == "{":
                children, at = block(at)
                out.append((words[0], words[1:], children))
                words = []
            elif token == "}":
                return out, at
            else:
                words.append(token)
        return out, at

    return block(0)[0]


def named(directives: list[Directive], name: str) -> list[Directive]:
    return [d for d in directives if d[0] == name]


def nginx_http() -> list[Directive]:
    (http,) = named(nginx_blocks((DEPLOY / "compose" / "nginx.conf").read_text()), "http")
    assert http[2] is not None
    return http[2]


def test_the_edge_speaks_tls_and_forwards_the_client() -> None:
    """Every server listens with TLS, sends plain http to https, and every proxied location sets
    X-Forwarded-For (appending the peer) and X-Forwarded-Proto; the certificate comes from the volume
    `edge-cert` fills; the published ports are exactly the servers' ports."""
    http = nginx_http()
    (cert,) = named(http, "ssl_certificate")
    (key,) = named(http, "ssl_certificate_key")
    stack = stack_from(REQUIRED)
    edge, maker = stack["services"]["edge"], stack["services"]["edge-cert"]
    tls_target = next(t for t, source in mounts(edge).items() if source == "edge-tls")
    assert cert[1] == [f"{tls_target}/cert.pem"] and key[1] == [f"{tls_target}/key.pem"]
    assert mounts(maker) == {"/tls": "edge-tls"}
    assert (
        "openssl req -x509" in maker["command"][0]
        and "-keyout /tls/key.pem -out /tls/cert.pem" in maker["command"][0]
    )
    assert maker["command"][0].startswith("if [ -s /tls/cert.pem ] && [ -s /tls/key.pem ]; then")
    assert edge["depends_on"]["edge-cert"] == {"condition": "service_completed_successfully"}
    ports = []
    for server in named(http, "server"):
        children = server[2] or []
        (listen,) = named(children, "listen")
        assert listen[1][1:] == ["ssl"], listen
        ports.append(listen[1][0])
        assert ("error_page", ["497", "=301", "https://$host:$server_port$request_uri"], None) in children
        locations = named(children, "location")
        assert locations
        for location in locations:
            headers = {d[1][0]: d[1][1] for d in location[2] or [] if d[0] == "proxy_set_header"}
            assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
            assert headers["X-Forwarded-Proto"] == "https"
            assert named(location[2] or [], "proxy_pass")
    assert ports == ["8001", "8002", "8003", "8004"]
    assert edge["ports"] == [f"127.0.0.1:{p}:{p}" for p in ports]


def test_public_urls_default_to_https_and_start_checked() -> None:
    """With only the secrets set, the public URLs are https://localhost (Secure cookies work) and the
    services' start-up check finds nothing unsafe."""
    env = service_env(REQUIRED)
    assert env["GRIDLOOP_PUBLIC_BASE_URL"] == "https://localhost:8001"
    assert env["GRIDLOOP_CLOSER_PUBLIC_URL"] == "https://localhost:8003"
    settings = Settings(
        jwt_secret=env["GRIDLOOP_JWT_SECRET"],
        public_base_url=env["GRIDLOOP_PUBLIC_BASE_URL"],
        closer_public_url=env["GRIDLOOP_CLOSER_PUBLIC_URL"],
        trusted_proxies=env["GRIDLOOP_TRUSTED_PROXIES"],
    )
    assert settings.cookie_secure and unsafe_settings(settings) == []


def test_only_the_edge_is_a_trusted_proxy() -> None:
    """The services believe X-Forwarded-For from the edge's fixed address (in the stack's fixed
    subnet) and from no other container: a rider behind the edge is seen as the rider."""
    stack = stack_from(REQUIRED)
    edge_address = stack["services"]["edge"]["networks"]["default"]["ipv4_address"]
    (subnet,) = stack["networks"]["default"]["ipam"]["config"]
    assert ipaddress.ip_address(edge_address) in ipaddress.ip_network(subnet["subnet"])
    proxies = Settings(trusted_proxies=service_env(REQUIRED)["GRIDLOOP_TRUSTED_PROXIES"]).proxies()
    # nginx appends the address that connected to it; whatever the client wrote before stays untrusted
    via_edge = {"client": (edge_address, 40000), "headers": [(b"x-forwarded-for", b"10.9.9.9, 203.0.113.7")]}
    assert client_address(via_edge, proxies) == "203.0.113.7"
    other = {"client": ("172.31.250.77", 40000), "headers": [(b"x-forwarded-for", b"203.0.113.7")]}
    assert client_address(other, proxies) == "172.31.250.77"
    for replicas in replicas_of(stack["services"]).values():
        for replica in replicas:
            assert "ports" not in stack["services"][replica]  # only the edge reaches them


def test_every_replica_is_scraped_and_proxied() -> None:
    """Each replica is a Prometheus target of its own (a dead one fires up == 0) and an nginx upstream
    server (re-resolved, so nginx starts while one is down); none is found by DNS discovery."""
    stack = stack_from(REQUIRED)
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.compose.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    upstreams = {u[1][0]: u[2] or [] for u in named(nginx_http(), "upstream")}
    replicas = replicas_of(stack["services"])
    assert sorted(replicas) == sorted(DEPLOYED)
    for service, names in replicas.items():
        port = stack["services"][names[0]]["environment"]["SERVICE_PORT"]
        job = jobs[f"gridloop-{service}"]
        assert "dns_sd_configs" not in job
        (static,) = job["static_configs"]
        assert static["targets"] == [f"{name}:{port}" for name in names]
        assert static["labels"] == {"service": service}
        servers = [d[1] for d in upstreams[service] if d[0] == "server"]
        assert servers == [[f"{name}:{port}", "resolve"] for name in names]
        assert named(upstreams[service], "zone")  # `resolve` needs the group in shared memory
    assert named(nginx_http(), "resolver")[0][1][0] == "127.0.0.11"  # Docker's DNS


def test_the_console_reaches_the_notifier_inside() -> None:
    """The closer asks the notifier (the console's 通知 page) by the name both notifier replicas carry
    on the inside network, not through the edge's TLS port."""
    stack = stack_from(REQUIRED)
    replicas = replicas_of(stack["services"])
    for name in replicas["closer"]:
        assert stack["services"][name]["environment"]["GRIDLOOP_NOTIFIER_URL"] == "http://notifier:8004"
    for name in replicas["notifier"]:
        assert stack["services"][name]["networks"] == {"default": {"aliases": ["notifier"]}}

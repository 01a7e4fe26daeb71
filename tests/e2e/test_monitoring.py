"""Prometheus configuration, rules and alert tests (promtool), Grafana dashboards, and a real scrape."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from gridloop import metrics
from gridloop.brokers import free_port
from gridloop.procs import spawn, terminate
from gridloop.stack import Stack
from tests.support.gotools import AMTOOL, alertmanager_image_version, require_go_tool
from tests.support.stacks import stack_settings, start_stack, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
# every promtool unit-test file (the calendar alert's has its own, evaluated hourly)
ALERT_TESTS = sorted((PROM / "tests").glob("*_test.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"), reason="promtool (Debian package prometheus) missing"
)
_FUNCS = {
    "sum",
    "rate",
    "increase",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "histogram_quantile",
    "deriv",
    "and",
    "or",
    "unless",
    "on",
    "le",
    "bool",
    "irate",
    "topk",
    "bottomk",
    "abs",
    "clamp_min",
    "time",
}


SERVICES = ("reporter", "router", "closer", "notifier")


def exported_metric_names() -> set[str]:
    """Every series name the services can export: ours (every service's modules imported, so a metric
    defined beside its code, as the reporter's push counter, is registered), FastStream's, and
    Prometheus' `up`."""
    from faststream.kafka.prometheus import KafkaPrometheusMiddleware

    for service in SERVICES:
        importlib.import_module(f"services.{service}.app")
    names = set(metrics.REGISTRY._names_to_collectors)
    faststream_registry = CollectorRegistry()
    KafkaPrometheusMiddleware(registry=faststream_registry)
    from faststream.prometheus.container import MetricsContainer

    MetricsContainer(faststream_registry, custom_label_names=[])
    names |= set(faststream_registry._names_to_collectors)
    return names | {"up"}


def recorded_names() -> set[str]:
    """Names produced by our recording rules."""
    rules = yaml.safe_load((PROM / "rules" / "recording.yml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"]}


def metric_names_in(expr: str) -> set[str]:
    """The series names an expression reads (identifiers that are not functions, labels or keywords)."""
    stripped = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # ranges
    stripped = re.sub(r"(by|without|on|ignoring)\s*\([^)]*\)", "", stripped)
    stripped = re.sub(r'"[^"]*"', "", stripped)
    found = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped))
    return {n for n in found if n not in _FUNCS and not re.fullmatch(r"[0-9e]+", n)}


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression) for every query of every shipped dashboard."""
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel.get("targets", []):  # a row has none
                out.append((path.name, panel["title"], target["expr"]))
    return out


@needs_promtool
def test_promtool_checks_config_rules_and_alert_unit_tests() -> None:
    """`promtool check config`, `check rules` and `test rules` (one test group per alert) all pass."""
    assert PROMTOOL
    for config in ("prometheus.yml", "prometheus.compose.yml"):
        run = subprocess.run([PROMTOOL, "check", "config", config], cwd=PROM, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run(
        [PROMTOOL, "check", "rules", "rules/recording.yml", "rules/alerts.yml"],
        cwd=PROM,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run(
        [PROMTOOL, "test", "rules", *(str(f.relative_to(PROM)) for f in ALERT_TESTS)],
        cwd=PROM,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    alerts = {
        r["alert"]
        for g in yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    tested = {name for f in ALERT_TESTS for name in re.findall(r"alertname: (\w+)", f.read_text())}
    assert alerts == tested, f"alerts without a unit test: {alerts - tested}"


def test_amtool_checks_the_alertmanager_config_and_routes() -> None:
    """amtool (the compose image's version; Debian's is too old for `url_file`) accepts the config, and
    every alert the rules can fire, critical or warning, is routed to the operators' webhook."""
    amtool = require_go_tool(AMTOOL, alertmanager_image_version(), "amtool")
    config = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    run = subprocess.run([amtool, "check-config", config], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout and "1 receivers" in run.stdout
    rules = [
        r for g in yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())["groups"] for r in g["rules"]
    ]
    assert len(rules) == 9
    for rule in rules:
        labels = [f"alertname={rule['alert']}", f"severity={rule['labels']['severity']}"]
        routed = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={config}", *labels],
            capture_output=True,
            text=True,
        )
        assert (routed.returncode, routed.stdout.strip()) == (0, "operators"), routed.stderr


def test_rules_name_only_exported_metrics() -> None:
    """Recording and alert rules read only series the services export (or other recording rules)."""
    known = exported_metric_names() | recorded_names()
    for file in ("recording.yml", "alerts.yml"):
        for group in yaml.safe_load((PROM / "rules" / file).read_text())["groups"]:
            for rule in group["rules"]:
                unknown = metric_names_in(rule["expr"]) - known
                assert not unknown, f"{file} {rule.get('record') or rule.get('alert')}: {unknown}"


@needs_promtool
def test_every_dashboard_query_parses_and_names_exported_metrics(tmp_path: Path) -> None:
    """Each panel query is valid PromQL (promtool parses it) and names only exported or recorded series."""
    exprs = dashboard_exprs()
    assert len(DASHBOARDS) == 2 and len(exprs) >= 20
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {"GridLoop overview", "GridLoop pipeline health"}
    known = exported_metric_names() | recorded_names()
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, _, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True))
    assert PROMTOOL
    run = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    for dashboard, title, expr in exprs:
        unknown = metric_names_in(expr) - known
        assert not unknown, f"{dashboard} / {title}: {unknown}"


def test_the_overview_has_a_notifications_row() -> None:
    """The overview's last row, Notifications (通知): notifications by channel kind and outcome, their
    p95 latency, failed deliveries and the riders' Web Pushes, each panel reading its metric, which
    the services export (the promtool test above parses the queries)."""
    dash = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "gridloop-overview.json").read_text())
    rows = [i for i, p in enumerate(dash["panels"]) if p["type"] == "row"]
    assert [dash["panels"][i]["title"] for i in rows] == ["Notifications"]
    below = dash["panels"][rows[-1] + 1 :]
    read = {p["title"]: sorted(n for t in p["targets"] for n in metric_names_in(t["expr"])) for p in below}
    assert read == {
        "Notifications per minute, by channel and outcome": ["gridloop_notifications_total"],
        "Notification latency (p95)": ["gridloop_notification_latency_seconds_bucket"] * 2,
        "Failed notifications in the last hour": ["gridloop_notifications_total"],
        "Rider Web Push per minute, by outcome": ["gridloop_push_deliveries_total"],
    }
    assert {n for names in read.values() for n in names} <= exported_metric_names()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    # the row sits below every other panel, and its panels below it
    top = dash["panels"][rows[-1]]["gridPos"]["y"]
    assert all(p["gridPos"]["y"] < top for p in dash["panels"][: rows[-1]])
    assert all(p["gridPos"]["y"] > top for p in below)


PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def scraped_stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    """The embedded stack with a real Prometheus scraping it every second, using the shipped rules."""
    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed")
        pytest.skip("prometheus (Debian package) missing")
    stack = start_stack(stack_settings(tmp_path / "var", kafka_bootstrap, f"prom{uuid.uuid4().hex[:6]}."))
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(PROM / "rules" / "recording.yml"), str(PROM / "rules" / "alerts.yml")]
    for job in config["scrape_configs"]:
        service = job["job_name"].removeprefix("gridloop-")
        job["static_configs"][0]["targets"] = [stack.url(service).removeprefix("http://")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = spawn(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path / "prometheus.log",
    )
    try:
        yield stack, f"http://127.0.0.1:{port}"
    finally:
        terminate([proc], timeout=10)
        stack.stop()


@pytest.mark.kafka
@pytest.mark.slow
def test_real_prometheus_scrapes_all_targets_and_evaluates_rules(scraped_stack: tuple[Stack, str]) -> None:
    """All four targets (reporter, router, closer, notifier) are up, the alert rules are loaded, and a
    recording rule has a result."""
    stack, prom = scraped_stack

    def query(expr: str) -> list[dict[str, object]]:
        answer = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, object]] = answer["data"]["result"]
        return result

    wait_for(
        lambda: len([r for r in query('up{job=~"gridloop-.*"} == 1')]) == 4,
        timeout=60,
        every=1,
        what="four targets up",
    )
    from gridloop.demo import DEMO_PLACES
    from schemas.reference import load_places

    code = load_places(DEMO_PLACES)[0].code
    for _ in range(5):
        r = httpx.post(
            stack.url("reporter") + "/api/v1/reports", json={"code": code, "category": "sanitation"}
        )
        assert r.status_code == 202
        time.sleep(0.3)
    rows = wait_for(
        lambda: query("gridloop:reports_received:rate5m"),
        timeout=60,
        every=1,
        what="the recording rule's result",
    )
    assert rows[0]["metric"] == {
        "__name__": "gridloop:reports_received:rate5m",
        "category": "sanitation",
        "channel": "scan",
    }
    wait_for(lambda: query("gridloop:consumer_lag:max"), timeout=60, every=1, what="consumer lag recorded")
    rules = httpx.get(f"{prom}/api/v1/rules", params={"type": "alert"}).json()["data"]["groups"]
    assert len([r for g in rules for r in g["rules"]]) == 9

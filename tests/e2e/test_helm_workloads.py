"""The chart's workloads run as rendered: the hook Jobs' commands create the topics and migrate, and
each Deployment's command and environment start its service in production mode, answering its
startup, liveness and readiness probes. Processes stand in for the containers (no cluster here)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from gridloop.brokers import free_port
from gridloop.settings import SERVICES
from gridloop.topics import ALL_TOPICS
from tests.support.helm import FULLNAME, by_kind, env_of, render_chart
from tests.support.stacks import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.helm]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VALUES = ROOT / "deploy" / "helm" / "gridloop" / "ci" / "default-values.yaml"


def process_env(container: dict[str, Any], secrets: dict[str, dict[str, str]], var: Path) -> dict[str, str]:
    """The container's environment with its secrets resolved and the image's paths mapped to this
    checkout (data/) and a scratch var/, over this process's environment without GridLoop's settings
    (the suite's dev flag among them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDLOOP_", "KAFKA_", "DATABASE_"))}
    for name, value in env_of(container).items():
        if isinstance(value, tuple):
            _, secret, key = value
            value = secrets[secret][key]
        env[name] = value.replace("/app/data", str(ROOT / "data")).replace("/app/var", str(var))
    env["PYTHONPATH"] = str(ROOT)
    return env


def answers(url: str) -> bool:
    """Whether a probe's GET succeeds (a kubelet counts 200–399; the services answer 200 or 503)."""
    return httpx.get(url, timeout=3).status_code == 200


def test_rendered_jobs_and_deployments_run(
    helm: Path, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Topics and migrations by the hook Jobs' commands (a second run changes nothing, as on an
    upgrade); then every service from its Deployment is live on its liveness path and ready on its
    readiness path against the broker and its database, and stops on SIGTERM."""
    ports = {name: free_port() for name in SERVICES}
    values = [f"services.{name}.port={port}" for name, port in ports.items()]
    values += [f"postgresql.urls.{name}=sqlite:///{tmp_path / name}.db" for name in SERVICES]
    values += [
        "postgresql.host=",
        f"kafka.bootstrapServers={kafka_bootstrap}",
        f"kafka.topics.prefix={topic_prefix}",
        "kafka.topics.replication=1",
    ]
    objects = render_chart(helm, "-f", str(DEFAULT_VALUES), "--set", ",".join(values))
    secrets = {
        name: {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
        for name, secret in by_kind(objects, "Secret").items()
    }
    var = tmp_path / "var"

    jobs = by_kind(objects, "Job")
    order = [f"{FULLNAME}-topics", *(f"{FULLNAME}-migrate-{name}" for name in SERVICES)]
    assert sorted(jobs) == sorted(order)
    for attempt in ("install", "upgrade"):
        for name in order:
            [container] = jobs[name]["spec"]["template"]["spec"]["containers"]
            run = subprocess.run(
                [sys.executable, "-m", "gridloop.cli", *container["args"]],
                env=process_env(container, secrets, var),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert run.returncode == 0, run.stderr
            if name.endswith("-topics"):
                lines = run.stdout.splitlines()
                assert len(lines) == len(ALL_TOPICS)
                action = "created" if attempt == "install" else "exists"
                assert all(
                    line.startswith(topic_prefix) and line.endswith(f"12 partitions  {action}")
                    for line in lines
                )
            else:
                service = name.removeprefix(f"{FULLNAME}-migrate-")
                assert run.stdout.startswith(f"{service}: migrated (sqlite:///{tmp_path / service}.db)")

    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in SERVICES:
            [container] = by_kind(objects, "Deployment")[f"{FULLNAME}-{name}"]["spec"]["template"]["spec"][
                "containers"
            ]
            env = process_env(container, secrets, var)
            assert "GRIDLOOP_DEV" not in env
            with (tmp_path / f"{name}.log").open("wb") as sink:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "gridloop.cli", *container["args"]],
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            base = f"http://127.0.0.1:{ports[name]}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                path = container[probe]["httpGet"]["path"]
                wait_for(
                    partial(answers, f"{base}{path}"), timeout=60, every=0.5, what=f"{name} {probe} {path}"
                )
            ready = httpx.get(f"{base}/readyz", timeout=3).json()
            assert ready == {"status": "ok", "checks": {"database": True, "broker": True}}
            assert httpx.get(f"{base}/healthz", timeout=3).json() == {"status": "ok", "service": name}
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"{name} did not stop on SIGTERM within 30 s")
    for name in SERVICES:
        output = (tmp_path / f"{name}.log").read_text()
        assert "Application shutdown complete." in output, output[-2000:]

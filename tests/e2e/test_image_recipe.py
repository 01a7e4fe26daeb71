"""The image's recipe, followed without a container engine: a virtualenv from the lock alone (hashes
checked, binary wheels only, no dependency resolution), the code copied as the Dockerfile copies it,
and the entrypoint runs migrations, topics and a service that answers its health checks."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gridloop.brokers import free_port
from gridloop.settings import SERVICES
from tests.support.stacks import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "deploy" / "compose" / "Dockerfile").read_text()


def test_the_image_recipe_installs_from_the_lock_and_serves(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The Dockerfile's one install, run as written, gives an environment where `python -m gridloop.cli`
    migrates, creates topics and serves /healthz and /readyz; its HEALTHCHECK command passes."""
    # the deps stage's one RUN, verbatim but for where /opt/venv and the lock are
    run = re.search(r"^RUN (python -m venv /opt/venv .*?)\n\n", DOCKERFILE, flags=re.M | re.S)
    assert run, "the deps stage's RUN"
    venv = tmp_path / "opt-venv"
    script = run.group(1).replace("\\\n", "").replace("/opt/venv", str(venv))
    script = script.replace("/tmp/requirements.lock", str(ROOT / "deploy" / "requirements.lock"))
    env_path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # `python`: the suite's own
    subprocess.run(
        ["sh", "-ec", script],
        check=True,
        timeout=900,
        env={**os.environ, "PATH": env_path, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )

    app = tmp_path / "app"
    for source, target in re.findall(r"^COPY (\w+) \./(\w+)$", DOCKERFILE, flags=re.M):
        shutil.copytree(ROOT / source, app / target, ignore=shutil.ignore_patterns("__pycache__"))
    assert sorted(p.name for p in app.iterdir()) == ["data", "gridloop", "schemas", "services"]
    assert re.search(r'^ENTRYPOINT \["gridloop"\]$', DOCKERFILE, flags=re.M)
    python = str(venv / "bin" / "python")
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(app),  # the image's ENV: the code is not pip-installed
        "GRIDLOOP_VAR_DIR": str(tmp_path / "var"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GRIDLOOP_TOPIC_PREFIX": topic_prefix,
        "GRIDLOOP_DEV": "1",
        "GRIDLOOP_REPORTER_PORT": str(port),
        "SERVICE_PORT": str(port),
    }
    cli = [str(venv / "bin" / "gridloop")]  # the entrypoint, on the image's PATH
    for command in (["db", "upgrade"], ["topics"]):
        done = subprocess.run(
            [*cli, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    migrated = subprocess.run([*cli, "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert migrated.stdout.count("migrated") == len(SERVICES)  # every service database
    reporter = subprocess.Popen([*cli, "reporter"], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, timeout=60)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        health = re.search(r"^HEALTHCHECK .* CMD (python -c .+)$", DOCKERFILE, flags=re.M)
        assert health
        probe = subprocess.run(shlex.split(health.group(1)), env=env, timeout=30, check=False)
        assert probe.returncode == 0
        from_venv = subprocess.run(
            [python, "-c", "import gridloop, fastapi; print(gridloop.__file__); print(fastapi.__file__)"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert from_venv[0].startswith(str(app)) and from_venv[1].startswith(str(venv))
    finally:
        reporter.terminate()
        reporter.wait(timeout=30)
    assert reporter.returncode == 0

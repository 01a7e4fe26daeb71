"""Command-line tools the suite checks deploy files with that are Go modules (amtool, helm): built once
per version with `go install` into a cache, as the README's test command would on a fresh machine.

A fresh machine spends minutes of its two cores on them, so `scripts/test` starts
`python -m tests.support.gotools` in the background, niced, as the suite starts: the tests that need
a tool (tests/e2e/test_monitoring.py, tests/e2e/test_helm_workloads.py, tests/unit/test_helm.py) run
minutes later and wait on the cache's lock for a build still under way instead of starting another.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gridloop" / "go-bin"


ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def _building() -> Iterator[None]:
    """Hold the cache's lock: one build at a time, and a caller waits for a build under way."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def go_tool(module: str, version: str, name: str) -> Path | None:
    """The binary `name` of `module@version`, installed once into the cache; None without Go."""
    target = CACHE / f"{name}-{version}"
    if target.exists():
        return target
    go = shutil.which("go") or next((p for p in ("/usr/local/go/bin/go",) if Path(p).exists()), None)
    if go is None:
        return None
    with _building():
        if not target.exists():  # built by the run we waited for
            _install(go, module, version, name, target)
    return target


def _install(go: str, module: str, version: str, name: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE) as built:
        run = subprocess.run(
            # unoptimised (-N -l) and without debug symbols: the suite runs these a few dozen times,
            # and the compiler's optimisation is a third of the CPU a fresh machine spends on helm
            [go, "install", "-trimpath", "-gcflags=all=-N -l", "-ldflags=-s -w", f"{module}@{version}"],
            env={**os.environ, "GOBIN": built},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if run.returncode != 0:
            raise RuntimeError(f"go install {module}@{version} failed:\n{run.stderr}")
        os.replace(Path(built) / name, target)  # atomic: a parallel run sees the whole binary or none


def require_go_tool(module: str, version: str, name: str) -> Path:
    """The tool, or a skip when Go is missing; on CI (CI=true) a missing Go fails instead."""
    path = go_tool(module, version, name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"go is required on CI to install {name} ({module}@{version})")
        pytest.skip(f"go missing: cannot install {name} ({module}@{version})")
    return path


def alertmanager_image_version() -> str:
    """The Alertmanager version deploy/compose runs (its image tag): amtool of the same version checks."""
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    image = compose["services"]["alertmanager"]["image"]
    assert image.startswith("prom/alertmanager:v"), image
    return str(image.split(":", 1)[1])


AMTOOL = "github.com/prometheus/alertmanager/cmd/amtool"


def suite_tools() -> list[tuple[str, str, str]]:
    """(module, version, binary) of every Go tool the suite uses, in the order the suite needs them."""
    from tests.support.helm import HELM_VERSION, helm_module

    return [(AMTOOL, alertmanager_image_version(), "amtool"), (helm_module(), HELM_VERSION, "helm")]


def main() -> None:
    """Build every missing suite tool, saying so and how long each took (scripts/test, backgrounded)."""
    for module, version, name in suite_tools():
        if (CACHE / f"{name}-{version}").exists():
            continue
        print(f"building {name} {version} (once, into {CACHE}) …", file=sys.stderr, flush=True)
        start = time.monotonic()
        if go_tool(module, version, name) is None:
            print(f"no Go toolchain: tests needing {name} skip (and fail on CI)", file=sys.stderr, flush=True)
            return
        print(f"{name} built in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

"""helm for the chart tests, built once with `go install` into the project's cache, and the chart
rendered by it as objects.

helm is a Go module, so the Go toolchain builds it from the module proxy (minutes on two cores);
the binary is kept as ~/.cache/gridloop/go-bin/helm-<version> (beside the Kafka jars, where the
suite keeps its other Go tools), so every later run finds it at once. `scripts/test` builds it
before pytest, so the time shows.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

HELM_VERSION = "v4.3.2"
"""The helm release the suite renders with (Helm 4 reads apiVersion v2 charts, as Helm 3 does)."""
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gridloop" / "go-bin"
CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "gridloop"
RELEASE = "city"
FULLNAME = "city-gridloop"
"""The release the tests render, and the prefix of its objects' names."""


def helm_module(version: str = HELM_VERSION) -> str:
    """The `go install` argument of a helm release: helm.sh/helm/v<major>/cmd/helm@<version>."""
    major = version.lstrip("v").split(".")[0]
    return f"helm.sh/helm/v{major}/cmd/helm@{version}"


def helm_path(version: str = HELM_VERSION, cache: Path = CACHE) -> Path:
    """Where the cached helm of a release is."""
    return cache / f"helm-{version}"


def ensure_helm(version: str = HELM_VERSION, cache: Path = CACHE) -> Path:
    """The path of a built helm; builds it once (`go install`) into the cache when missing.

    Concurrent callers serialise on a lock file, and the binary appears by an atomic rename only
    once it is complete.
    """
    target = helm_path(version, cache)
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".helm-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        go = shutil.which("go") or next((p for p in ("/usr/local/go/bin/go",) if Path(p).exists()), None)
        if go is None:
            raise RuntimeError(
                f"helm {version} is not cached ({target}) and Go is not on PATH: install Go, or put a "
                f"helm {version} binary there"
            )
        cmd = [go, "install", helm_module(version)]
        with tempfile.TemporaryDirectory(dir=cache) as built:
            proc = subprocess.run(
                cmd, env={**os.environ, "GOBIN": built}, capture_output=True, text=True, check=False
            )
            if proc.returncode != 0 or not (Path(built) / "helm").is_file():
                output = (proc.stdout + proc.stderr).strip()[-4000:]
                raise RuntimeError(f"building helm failed (GOBIN={built} {' '.join(cmd)}):\n{output}")
            os.replace(Path(built) / "helm", target)
    return target


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run helm; the caller checks the outcome."""
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False, timeout=120)


def render_chart(
    helm: Path, *args: str, chart: Path = CHART, kube_version: str | None = None
) -> list[dict[str, Any]]:
    """`helm template` of a chart folder or archive (hooks included) as objects; AssertionError on a
    failure."""
    version = ["--kube-version", kube_version] if kube_version else []
    proc = run_helm(helm, "template", RELEASE, str(chart), "--namespace", "gridloop", *version, *args)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) of every Deployment and Job."""
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            pod = o["spec"]["template"]["spec"]
            for container in pod["containers"]:
                yield pod, container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """name -> the plain value, or ("secret", secret name, key) for a secretKeyRef."""
    out: dict[str, Any] = {}
    for entry in container["env"]:
        assert entry["name"] not in out, f"{entry['name']} set twice"
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            out[entry["name"]] = ("secret", ref["name"], ref["key"])
        else:
            out[entry["name"]] = entry["value"]
    return out


def main() -> None:
    """Build helm unless cached, saying so and how long it took (scripts/test runs this first)."""
    if helm_path().is_file():
        return
    print(f"building helm {HELM_VERSION} for the chart tests (once, into {CACHE}) …", flush=True)
    start = time.monotonic()
    ensure_helm()
    print(f"helm built in {time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()

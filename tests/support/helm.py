"""helm for the chart tests and the chart rendered by it as objects.

helm is a Go module: tests.support.gotools builds it once with `go install` (minutes on two cores)
into ~/.cache/gridloop/go-bin/helm-<version>, beside the suite's other Go tools, so every later run
finds it at once (`scripts/test` starts that build in the background as the suite starts).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

HELM_VERSION = "v4.3.2"
"""The helm release the suite renders with (Helm 4 reads apiVersion v2 charts, as Helm 3 does)."""
CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "gridloop"
RELEASE = "city"
FULLNAME = "city-gridloop"
"""The release the tests render, and the prefix of its objects' names."""


def helm_module(version: str = HELM_VERSION) -> str:
    """The Go module of a helm release's command: helm.sh/helm/v<major>/cmd/helm."""
    major = version.lstrip("v").split(".")[0]
    return f"helm.sh/helm/v{major}/cmd/helm"


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

"""The helm binary for the chart tests: built once with `go install` into the project's cache.

helm is a Go module, so the Go toolchain builds it from the module proxy (a few minutes on two
cores); the binary is kept under ~/.cache/gridloop/helm-<version>/ (beside the Kafka jars), or
$GRIDLOOP_HELM_CACHE, so every later run finds it at once. `scripts/test` builds it before pytest.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

HELM_VERSION = "v4.3.2"
"""The helm release the suite renders with (Helm 4 reads apiVersion v2 charts, as Helm 3 does)."""
CACHE_ENV = "GRIDLOOP_HELM_CACHE"


def helm_module(version: str = HELM_VERSION) -> str:
    """The `go install` argument of a helm release: helm.sh/helm/v<major>/cmd/helm@<version>."""
    major = version.lstrip("v").split(".")[0]
    return f"helm.sh/helm/v{major}/cmd/helm@{version}"


def default_cache_dir(version: str = HELM_VERSION) -> Path:
    """$GRIDLOOP_HELM_CACHE, else ~/.cache/gridloop/helm-<version>."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "gridloop" / f"helm-{version}"


def ensure_helm(cache_dir: Path | None = None, version: str = HELM_VERSION) -> Path:
    """The path of a built helm; builds it once (`go install`) into the cache when missing.

    Concurrent callers serialise on a lock file, and the binary appears by an atomic rename only
    once it is complete.
    """
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir(version)
    binary = base / "bin" / "helm"
    if binary.is_file():
        return binary
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary
        go = shutil.which("go")
        if go is None:
            raise RuntimeError(
                f"helm {version} is not cached ({binary}) and Go is not on PATH: install Go, or put a "
                f"helm {version} binary there"
            )
        tmp = base / f"bin.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [go, "install", helm_module(version)]
        proc = subprocess.run(
            cmd, env={**os.environ, "GOBIN": str(tmp)}, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not (tmp / "helm").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            output = (proc.stdout + proc.stderr).strip()[-4000:]
            raise RuntimeError(f"building helm failed (GOBIN={tmp} {' '.join(cmd)}):\n{output}")
        shutil.rmtree(base / "bin", ignore_errors=True)
        tmp.rename(base / "bin")
    return binary


def main() -> None:
    """Build helm unless cached, saying so and how long it took (scripts/test runs this first)."""
    binary = default_cache_dir() / "bin" / "helm"
    if binary.is_file():
        return
    print(
        f"building helm {HELM_VERSION} for the chart tests (once, into {binary.parent.parent}) …", flush=True
    )
    start = time.monotonic()
    ensure_helm()
    print(f"helm built in {time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()

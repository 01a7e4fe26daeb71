"""The helm binary for the chart tests: built once with `go install` into the project's cache.

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
from pathlib import Path

HELM_VERSION = "v4.3.2"
"""The helm release the suite renders with (Helm 4 reads apiVersion v2 charts, as Helm 3 does)."""
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gridloop" / "go-bin"


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

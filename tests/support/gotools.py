"""Command-line tools the suite checks deploy files with that are Go modules (amtool, helm): built once
per version with `go install` into a cache, as the README's test command would on a fresh machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gridloop" / "go-bin"


def go_tool(module: str, version: str, name: str) -> Path | None:
    """The binary `name` of `module@version`, installed once into the cache; None without Go."""
    target = CACHE / f"{name}-{version}"
    if target.exists():
        return target
    go = shutil.which("go") or next((p for p in ("/usr/local/go/bin/go",) if Path(p).exists()), None)
    if go is None:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as built:
        run = subprocess.run(
            [go, "install", f"{module}@{version}"],
            env={**os.environ, "GOBIN": built},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if run.returncode != 0:
            raise RuntimeError(f"go install {module}@{version} failed:\n{run.stderr}")
        os.replace(Path(built) / name, target)  # atomic: a parallel run sees the whole binary or none
    return target


def require_go_tool(module: str, version: str, name: str) -> Path:
    """The tool, or a skip when Go is missing; on CI (CI=true) a missing Go fails instead."""
    path = go_tool(module, version, name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"go is required on CI to install {name} ({module}@{version})")
        pytest.skip(f"go missing: cannot install {name} ({module}@{version})")
    return path

"""`gridloop codes …` on a real reporter database: issue, list, replace, deactivate, QR, sheet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gridloop import migrate
from gridloop.settings import Settings
from schemas import codes
from schemas.reference import load_jurisdiction
from services.reporter import cli as reporter_cli


@pytest.fixture
def var_dir(tmp_path: Path) -> Path:
    """A var dir whose reporter database is migrated and holds the demo places."""
    settings = Settings(var_dir=tmp_path)
    migrate.upgrade("reporter", settings.db_url("reporter"))
    reporter_cli.load_demo(settings, load_jurisdiction(settings.jurisdiction_dir))
    return tmp_path


def gridloop(var_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, against this var dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLOOP_") and k != "DATABASE_URL"}
    env.update(GRIDLOOP_VAR_DIR=str(var_dir), GRIDLOOP_PUBLIC_BASE_URL="https://gl.example.cn")
    return subprocess.run(
        [sys.executable, "-m", "gridloop.cli", "codes", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=var_dir,
    )


def test_codes_cli_lifecycle(var_dir: Path) -> None:
    """Issue for a new place, list, replace a damaged code, deactivate one; clear errors otherwise."""
    listed = gridloop(var_dir, "list", "--station", "yh-s1")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 5
    assert "W7Q23QVD  W7Q2-3QVD" in listed.stdout

    issued = gridloop(
        var_dir, "issue", "yh-x1", "--name", "开鲁路新路灯", "--lat", "31.3368", "--lon", "121.5136"
    )
    assert issued.returncode == 0, issued.stderr
    new_code = issued.stdout.split()[0]
    assert codes.is_valid(new_code) and f"https://gl.example.cn/r/{new_code}" in issued.stdout
    assert new_code in gridloop(var_dir, "list", "--place", "yh-x1").stdout

    replaced = gridloop(var_dir, "replace", "w7q2-3qvd", "--note", "被撕坏")
    assert replaced.returncode == 0 and replaced.stdout.startswith("W7Q23QVD: replaced by ")
    successor = replaced.stdout.split()[3]
    active = gridloop(var_dir, "list", "--place", "yh-p01").stdout
    assert successor in active and "W7Q23QVD" not in active
    everything = gridloop(var_dir, "list", "--place", "yh-p01", "--all").stdout
    assert f"inactive → {successor}" in everything

    assert gridloop(var_dir, "deactivate", new_code).returncode == 0
    assert "inactive" in gridloop(var_dir, "list", "--place", "yh-x1", "--all").stdout

    again = gridloop(var_dir, "replace", "W7Q23QVD")
    assert again.returncode == 2 and "was replaced by" in again.stderr
    typo = gridloop(var_dir, "deactivate", "W7Q23QV2")
    assert typo.returncode == 2 and "check the code" in typo.stderr
    nowhere = gridloop(var_dir, "issue", "no-such-place")
    assert nowhere.returncode == 2 and "No place" in nowhere.stderr


def test_codes_cli_qr_and_sheet(var_dir: Path) -> None:
    """QR images (PNG, SVG) and a station's printable sheet."""
    png = gridloop(var_dir, "qr", "R6YNGH7Y", "-o", "r6.png")
    assert png.returncode == 0
    assert Image.open(var_dir / "r6.png").format == "PNG"
    svg = gridloop(var_dir, "qr", "R6YNGH7Y")
    assert svg.returncode == 0 and (var_dir / "R6YNGH7Y.svg").read_text().count("<svg") == 1
    sheet = gridloop(var_dir, "sheet", "yh-s2", "-o", "s2.html")
    assert sheet.returncode == 0 and "(5 codes)" in sheet.stdout
    html = (var_dir / "s2.html").read_text()
    assert html.count('class="card"') == 5 and "国和网格站" in html and "TVRK-DMA3" in html
    assert gridloop(var_dir, "sheet", "yh-nope").returncode == 2

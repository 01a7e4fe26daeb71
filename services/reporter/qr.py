"""QR images of report codes (segno) and the printable A4 code sheet of a station."""

from __future__ import annotations

import io
from pathlib import Path

import segno
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from schemas import codes
from schemas.reference import Jurisdiction
from services.reporter.places import CodeRow

TEMPLATES = Path(__file__).resolve().parent / "templates"
env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html", "svg", "xml"], default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def code_url(base_url: str, code: str) -> str:
    """Where a code's QR points: the rider page on the public base URL."""
    return f"{base_url.rstrip('/')}/r/{code}"


def _qr(base_url: str, code: str) -> segno.QRCode:
    # level M survives a dirty or scratched sign (about 15 % of the modules)
    return segno.make(code_url(base_url, code), error="m", boost_error=False)


def qr_svg(base_url: str, code: str, scale: int = 8) -> bytes:
    """The QR code as an SVG document."""
    out = io.BytesIO()
    _qr(base_url, code).save(out, kind="svg", scale=scale, border=2, title=code)
    return out.getvalue()


def qr_png(base_url: str, code: str, scale: int = 8) -> bytes:
    """The QR code as a PNG image."""
    out = io.BytesIO()
    _qr(base_url, code).save(out, kind="png", scale=scale, border=2)
    return out.getvalue()


def render_sheet(rows: list[CodeRow], station_id: str, j: Jurisdiction, base_url: str) -> str:
    """The A4 sheet of a station's codes: QR, the short code in large type, place, instructions."""
    station = j.stations.get(station_id)
    cards = [
        {
            "code": row.code.code,
            "printed": codes.format_code(row.code.code),
            "place_zh": row.place.name_zh,
            "place_en": row.place.name_en,
            "url": code_url(base_url, row.code.code),
            # segno's inline SVG is generated markup (no user text in it), safe to embed as is
            "svg": Markup(_qr(base_url, row.code.code).svg_inline(border=2, omitsize=True)),
        }
        for row in rows
    ]
    return env.get_template("sheet.html").render(
        station_zh=station.name_zh if station else station_id,
        station_en=station.name_en if station else "",
        station_phone=station.phone if station else None,
        manual_url=f"{base_url.rstrip('/')}/r",
        cards=cards,
    )

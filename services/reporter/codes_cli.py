"""`gridloop codes …`: issue, list, deactivate and replace report codes; print QR images and sheets.

Works directly on the reporter's database (like `gridloop staff add` on the closer's), with the
same rules as the admin API (services/reporter/places.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _db() -> Any:
    from gridloop.db import Database
    from gridloop.settings import get_settings
    from services.reporter.models import Base

    return Database(get_settings().db_url("reporter"), Base.metadata)


def _fail(exc: Exception) -> int:
    message = getattr(exc, "message", None) or str(exc)
    print(f"error: {message}", file=sys.stderr)
    return 2


def cmd_issue(args: argparse.Namespace) -> int:
    """Issue codes for a place (creating the place first when --name, --lat and --lon are given)."""
    from gridloop.errors import ApiError
    from gridloop.settings import get_settings
    from schemas.reference import load_jurisdiction
    from services.reporter import places
    from services.reporter.models import Place

    settings = get_settings()
    db = _db()
    try:
        with db.session(write=True) as session:
            if session.get(Place, args.place_id) is None and args.name:
                if args.lat is None or args.lon is None:
                    raise ApiError(422, "invalid", "a new place needs --lat and --lon")
                body = places.PlaceIn(
                    place_id=args.place_id,
                    name_zh=args.name,
                    name_en=args.name_en or "",
                    lat=args.lat,
                    lon=args.lon,
                    issue_code=False,
                )
                places.create_place(session, load_jurisdiction(settings.jurisdiction_dir), body)
            rows = [places.issue_code(session, args.place_id) for _ in range(args.count)]
    except (ApiError, ValueError) as exc:
        return _fail(exc)
    finally:
        db.dispose()
    for row in rows:
        data = places.code_json(row, settings.public_base_url)
        print(f"{row.code}  {data['printed']}  {args.place_id}  {data['url']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List codes with their places."""
    from schemas import codes
    from services.reporter import places

    db = _db()
    try:
        with db.session() as session:
            rows = places.list_codes(session, args.station, args.place, args.all)
    finally:
        db.dispose()
    for r in rows:
        state = (
            "active"
            if r.code.active
            else f"inactive{' → ' + r.code.replaced_by if r.code.replaced_by else ''}"
        )
        print(
            f"{r.code.code}  {codes.format_code(r.code.code)}  {r.place.station_id or '-':8} "
            f"{r.place.place_id:10} {state:20} {r.place.name_zh}"
        )
    print(f"{len(rows)} codes", file=sys.stderr)
    return 0


def cmd_deactivate(args: argparse.Namespace) -> int:
    """Take a code out of use."""
    from gridloop.errors import ApiError
    from services.reporter import places

    db = _db()
    try:
        with db.session(write=True) as session:
            row = places.deactivate_code(session, args.code, args.note)
            print(f"{row.code}: deactivated")
    except ApiError as exc:
        return _fail(exc)
    finally:
        db.dispose()
    return 0


def cmd_replace(args: argparse.Namespace) -> int:
    """Replace a damaged code with a new one for the same place."""
    from gridloop.errors import ApiError
    from gridloop.settings import get_settings
    from services.reporter import places

    db = _db()
    try:
        with db.session(write=True) as session:
            old, new = places.replace_code(session, args.code, args.note)
    except ApiError as exc:
        return _fail(exc)
    finally:
        db.dispose()
    url = places.code_json(new, get_settings().public_base_url)["url"]
    print(f"{old.code}: replaced by {new.code}  {url}")
    return 0


def cmd_qr(args: argparse.Namespace) -> int:
    """Write the QR image of a code (.svg or .png by the output name)."""
    from gridloop.settings import get_settings
    from schemas import codes
    from services.reporter import qr

    try:
        code = codes.validate(args.code)
    except codes.CodeError as exc:
        return _fail(exc)
    out = Path(args.output or f"{code}.svg")
    base = get_settings().public_base_url
    data = qr.qr_png(base, code) if out.suffix.lower() == ".png" else qr.qr_svg(base, code)
    out.write_bytes(data)
    print(out)
    return 0


def cmd_sheet(args: argparse.Namespace) -> int:
    """Write a station's printable A4 sheet of codes as HTML (open it in a browser and print)."""
    from gridloop.settings import get_settings
    from schemas.reference import load_jurisdiction
    from services.reporter import places, qr

    settings = get_settings()
    j = load_jurisdiction(settings.jurisdiction_dir)
    if args.station not in j.stations:
        return _fail(ValueError(f"no station {args.station!r}"))
    db = _db()
    try:
        with db.session() as session:
            rows = places.list_codes(session, station_id=args.station)
    finally:
        db.dispose()
    out = Path(args.output or f"codes-{args.station}.html")
    out.write_text(qr.render_sheet(rows, args.station, j, settings.public_base_url), encoding="utf-8")
    print(f"{out} ({len(rows)} codes)")
    return 0


def add_codes_parser(sub: Any) -> None:
    """Add `gridloop codes …` to the command-line parser."""
    parser = sub.add_parser("codes", help="report codes: issue, list, deactivate, replace, qr, sheet")
    codes_sub = parser.add_subparsers(dest="codes_command", required=True)

    issue = codes_sub.add_parser("issue", help="issue new codes for a place")
    issue.add_argument("place_id")
    issue.add_argument("--count", type=int, default=1)
    issue.add_argument("--name", help="create the place with this Chinese name when it does not exist")
    issue.add_argument("--name-en")
    issue.add_argument("--lat", type=float)
    issue.add_argument("--lon", type=float)
    issue.set_defaults(func=cmd_issue)

    listing = codes_sub.add_parser("list", help="list codes")
    listing.add_argument("--station")
    listing.add_argument("--place")
    listing.add_argument("--all", action="store_true", help="include deactivated codes")
    listing.set_defaults(func=cmd_list)

    deactivate = codes_sub.add_parser("deactivate", help="take a code out of use")
    deactivate.add_argument("code")
    deactivate.add_argument("--note")
    deactivate.set_defaults(func=cmd_deactivate)

    replace = codes_sub.add_parser("replace", help="replace a damaged code with a new one")
    replace.add_argument("code")
    replace.add_argument("--note")
    replace.set_defaults(func=cmd_replace)

    image = codes_sub.add_parser("qr", help="write a code's QR image (.svg or .png)")
    image.add_argument("code")
    image.add_argument("-o", "--output")
    image.set_defaults(func=cmd_qr)

    sheet = codes_sub.add_parser("sheet", help="write a station's printable A4 sheet (HTML)")
    sheet.add_argument("station")
    sheet.add_argument("-o", "--output")
    sheet.set_defaults(func=cmd_sheet)

"""Open311 GeoReport v2 under /open311/v2/: discovery, services, requests, tokens; JSON or XML by the
path's extension (the mapping itself: services.reporter.open311). Errors take the spec's shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlmodel import Session

from gridloop.errors import ApiError
from services.reporter.api.reports import capped_body
from services.reporter.context import Ctx, Reporter
from services.reporter.models import Report
from services.reporter.open311 import (
    CONTENT_TYPES,
    SPEC,
    Open311Error,
    check_api_key,
    error_response,
    query_requests,
    render,
    report_from_form,
    service_definition,
    service_list,
    shape_requests,
)
from services.reporter.refusals import count_refusals
from services.reporter.reports import IntakeContext, rider_ref_for

PREFIX = "/open311/v2"


class Open311ErrorItem(BaseModel):
    """One error the spec's way (a JSON list of these, or <errors><error> in XML)."""

    code: int
    description: str


# JSON or XML by the path's extension; errors in the spec's shape, never the envelope
DOCUMENTED = {
    200: {"content": {"application/json": {}, "text/xml": {}}, "description": "By the path's extension."},
    "4XX": {
        "model": list[Open311ErrorItem],
        "content": {"text/xml": {}},
        "description": "The spec's errors.",
    },
}
router = APIRouter(prefix=PREFIX, tags=["open311"], responses=DOCUMENTED)  # type: ignore[arg-type]


def check_request(ctx: Reporter, fmt: str, request: Request) -> None:
    """400 for a format other than .json/.xml, 404 for a jurisdiction_id that is not ours."""
    if fmt not in CONTENT_TYPES:
        raise Open311Error(400, "the format must be .json or .xml")
    jurisdiction = request.query_params.get("jurisdiction_id")
    if jurisdiction and jurisdiction not in ctx.jurisdiction.streets:
        raise Open311Error(404, f"jurisdiction_id {jurisdiction} was not found")


async def guarded(
    ctx: Reporter, fmt: str, request: Request, work: Callable[[], Awaitable[Response]]
) -> Response:
    """Check the request, run the work; errors answered the spec's way in the requested format."""
    try:
        check_request(ctx, fmt, request)
        return await work()
    except Open311Error as exc:
        return error_response(fmt, exc.status, exc.description)
    except ApiError as exc:
        return error_response(fmt, exc.status, exc.message)


@router.get("/discovery.{fmt}")
async def discovery(ctx: Ctx, fmt: str, request: Request) -> Response:
    """Service discovery: where the GeoReport v2 endpoint is and which formats it speaks."""
    doc = {
        "changeset": "2026-11-24T00:00:00Z",
        "contact": "殷行街道城运中心 Yinhang street operations centre",
        "key_service": "API keys are issued by a GridLoop admin (POST /api/v1/open311/keys).",
        "endpoints": [
            {
                "specification": SPEC,
                "url": f"{ctx.base_url}{PREFIX}",
                "changeset": "2026-11-24T00:00:00Z",
                "type": "production",
                "formats": ["text/xml", "application/json"],
            }
        ],
    }

    async def work() -> Response:
        return render(fmt, "discovery", doc)

    return await guarded(ctx, fmt, request, work)


@router.get("/services.{fmt}")
async def services(ctx: Ctx, fmt: str, request: Request) -> Response:
    """The services (categories) riders and clients can report."""

    async def work() -> Response:
        return render(fmt, "services", service_list(ctx.jurisdiction))

    return await guarded(ctx, fmt, request, work)


@router.get("/services/{service_code}.{fmt}")
async def service_def(ctx: Ctx, service_code: str, fmt: str, request: Request) -> Response:
    """A service definition: its attributes."""

    async def work() -> Response:
        return render(fmt, "service_definition", service_definition(ctx.jurisdiction, service_code))

    return await guarded(ctx, fmt, request, work)


@router.get("/requests.{fmt}")
async def get_requests(ctx: Ctx, fmt: str, request: Request) -> Response:
    """Service requests, filtered as the spec describes."""

    async def work() -> Response:
        params = dict(request.query_params)
        rows = await ctx.read(lambda s: query_requests(s, params, ctx.jurisdiction))
        return render(fmt, "service_requests", rows)

    return await guarded(ctx, fmt, request, work)


@router.get("/requests/{request_id}.{fmt}")
async def get_request(ctx: Ctx, request_id: str, fmt: str, request: Request) -> Response:
    """One service request, wrapped in a list as the spec's clients expect."""

    def find(session: Session) -> list[dict[str, Any]]:
        report = session.get(Report, request_id)
        if report is None:
            raise Open311Error(404, f"service_request_id {request_id} was not found")
        return shape_requests(session, [report], ctx.jurisdiction)

    async def work() -> Response:
        return render(fmt, "service_requests", await ctx.read(find))

    return await guarded(ctx, fmt, request, work)


@router.get("/tokens/{token}.{fmt}")
async def get_token(ctx: Ctx, token: str, fmt: str, request: Request) -> Response:
    """The service request of a token (our ids are issued at once: the token is the id)."""

    def find(session: Session) -> list[dict[str, Any]]:
        if session.get(Report, token) is None:
            raise Open311Error(404, f"token {token} was not found")
        return [{"service_request_id": token, "token": token}]

    async def work() -> Response:
        return render(fmt, "service_requests", await ctx.read(find))

    return await guarded(ctx, fmt, request, work)


@router.post("/requests.{fmt}")
async def post_request(ctx: Ctx, fmt: str, request: Request) -> Response:
    """Create a service request (needs an api_key issued by an admin). A key in the query string is
    checked before the body is read; the body is read only up to the form cap (413 beyond)."""

    async def work() -> Response:
        early = request.query_params.get("api_key")
        if early is not None:
            await ctx.read(lambda s: check_api_key(s, early))
        request._body = await capped_body(request, ctx.config.max_form_bytes)  # form() reads this copy
        form = {
            k: str(v)
            for k, v in (await request.form(max_files=0, max_fields=40)).items()
            if isinstance(v, str)
        }
        form = {**dict(request.query_params), **form}
        key = await ctx.read(lambda s: check_api_key(s, form.get("api_key")))
        body = report_from_form(form, ctx.jurisdiction)
        who = form.get("account_id") or form.get("device_id") or form.get("email")
        intake = IntakeContext(
            channel="open311",
            rider_ref=rider_ref_for(f"o311:{key.key_id}:{who}", ctx.secret) if who else None,
            client_ref=ctx.client_ref(request),
            caller=f"o311:{key.key_id}",  # an Idempotency-Key is the API key's own
            secret=ctx.secret,
        )
        with count_refusals():
            accepted = await ctx.submit(body, intake, request.headers.get("Idempotency-Key"))
        notice = "已收到，将分派给所在网格站处理。Received; it goes to the grid station of its location."
        return render(
            fmt,
            "service_requests",
            [{"service_request_id": accepted.report_id, "service_notice": notice, "account_id": None}],
        )

    return await guarded(ctx, fmt, request, work)

"""The JSON error shape of every service: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An error with an HTTP status, a stable machine code and a human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def size_text(size: int) -> str:
    """A byte count as people read it: 64 KB, 10 MB, 1.5 MB, 900 bytes."""
    for unit, name in ((1024 * 1024, "MB"), (1024, "KB")):
        if size >= unit:
            return f"{size / unit:.1f}".removesuffix(".0") + f" {name}"
    return f"{size} bytes"


def too_large_message(cap: int) -> str:
    """What every 413 of a body over `cap` bytes says, whichever layer refused it."""
    return f"The request is larger than {size_text(cap)}."


class ErrorBody(BaseModel):
    """What went wrong: a stable machine code, a human message, and details (per error kind, may be null)."""

    code: str = Field(min_length=1)
    message: str = Field(min_length=1)
    details: Any


class ErrorEnvelope(BaseModel):
    """The one error shape of every service's JSON API."""

    error: ErrorBody


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The error envelope."""
    return {"error": {"code": code, "message": message, "details": details}}


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic's errors as the envelope's details: where, what, which kind."""
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]


def invalid_form(exc: ValidationError) -> ApiError:
    """A console form that does not fit its model: 422 `invalid`, as a request body would be, naming
    each field's problem in the message the page shows."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return ApiError(422, "invalid", f"The form is not valid: {problems}.", validation_details(exc.errors()))


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, ours or the framework's, answer in the envelope, and document it so."""
    _openapi_with_errors(app)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(exc.errors())
        return JSONResponse(error_body("invalid", "The request is not valid.", details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        return JSONResponse(
            error_body(code, message), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )


# FastAPI documents its own 422 shape ({"detail": [...]}); ours replaces it and these go unused
_FRAMEWORK_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")


def document_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """Say in an OpenAPI document what every operation's errors look like: a request that does not
    validate (422) and every other client error ("4XX", unless the route documents its own) answer the
    envelope."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, ErrorEnvelope):
        components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components[model.__name__].pop("$defs", None)
    envelope = {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }
    for item in openapi.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            # a request FastAPI cannot validate is answered 422 in the envelope, on every route, even
            # where the route documents its own error shape ("4XX" stops FastAPI from saying so)
            if "422" in responses or operation.get("parameters") or operation.get("requestBody"):
                responses["422"] = {**envelope, "description": "The request is not valid."}
            if not any(status.startswith("4") and status != "422" for status in responses):
                responses["4XX"] = envelope
            elif operation.get("requestBody") and "400" not in responses:
                # a body that cannot be parsed at all (not JSON, not UTF-8) is 400, also on a route
                # that documents its own 4xx and so has no "4XX"
                responses["400"] = {**envelope, "description": "The body cannot be parsed."}
    text = str(openapi.get("paths"))
    for name in _FRAMEWORK_ERROR_SCHEMAS:
        if f"/{name}'" not in text:
            components.pop(name, None)
    return openapi


def _openapi_with_errors(app: FastAPI) -> None:
    """Make the app's OpenAPI document its error envelope (built once, like FastAPI's own)."""
    framework_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(framework_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

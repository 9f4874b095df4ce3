"""One error shape for every failure: `{"error": <human text>, "error_code": <stable code>}`,
plus `field` and `detail` for request validation errors (HTTP 422)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.schemas import FieldError
from proto.vocabulary import ErrorCode

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        error_code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.message = message
        self.field = field
        self.headers = headers


def not_found(what: str = "Job") -> ApiError:
    return ApiError(404, ErrorCode.NOT_FOUND, f"{what} not found")


def unauthorized(message: str = "Missing or invalid API key") -> ApiError:
    return ApiError(401, ErrorCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def invalid_request(field: str, message: str) -> ApiError:
    return ApiError(422, ErrorCode.INVALID_REQUEST, f"{field}: {message}", field=field)


def _error_body(error: str, error_code: str, **extra: Any) -> dict[str, Any]:
    return {"error": error, "error_code": error_code, **extra}


def _field_name(error: dict[str, Any]) -> str:
    loc: Sequence[Any] = error.get("loc", ())
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    parts = [str(part) for part in loc]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        parts.append(cause.field)
    return ".".join(parts) or "body"


def _message(error: dict[str, Any]) -> str:
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return cause.message
    return str(error.get("msg", "invalid value"))


async def _handle_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    extra = {"field": exc.field} if exc.field else {}
    return JSONResponse(
        _error_body(exc.message, exc.error_code, **extra),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    detail = []
    for error in errors:
        field = _field_name(error)
        detail.append({"field": field, "message": _message(error), "type": error.get("type")})
    first = detail[0] if detail else {"field": "body", "message": "invalid request"}
    body = _error_body(
        f"{first['field']}: {first['message']}",
        ErrorCode.INVALID_REQUEST,
        field=first["field"],
        detail=jsonable_encoder(detail),
    )
    return JSONResponse(body, status_code=422)


async def _handle_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, ErrorCode.ERROR)
    return JSONResponse(
        _error_body(str(exc.detail), code), status_code=exc.status_code, headers=exc.headers
    )


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(_error_body("Internal server error", ErrorCode.INTERNAL_ERROR), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _handle_api_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
    app.add_exception_handler(Exception, _handle_unexpected)

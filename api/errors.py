"""One error body for every failure: {"error": {"code", "message", "detail"}}; bad input is 4xx."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.workorders.errors import (
    BadInput,
    ClosureRefused,
    InvalidTransition,
    NotFound,
    WorkOrderError,
)

log = logging.getLogger(__name__)

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "too_large", 422: "invalid", 428: "precondition_required", 429: "rate_limited"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, detail: Any = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def forbidden(message: str = "your role or site scope does not allow this") -> ApiError:
    return ApiError(403, "forbidden", message)


def body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.code, exc.message, exc.detail), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(body(code, message), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": list(e.get("loc", ())), "message": e.get("msg", "invalid"), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"loc": [], "message": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse(body("invalid", f"{where}: {first['message']}", problems), status_code=422)

    @app.exception_handler(WorkOrderError)
    async def _work_order(request: Request, exc: WorkOrderError) -> JSONResponse:
        # hub.workorders messages are written for people; keep them as the message.
        status, code = _work_order_status(exc)
        return JSONResponse(body(code, str(exc)), status_code=status)

    @app.exception_handler(psycopg_pool.PoolTimeout)
    async def _busy(request: Request, exc: psycopg_pool.PoolTimeout) -> JSONResponse:
        # Every pooled connection stayed busy for the pool's timeout: overload, not a bug.
        return JSONResponse(body("unavailable", "the hub is busy; try again shortly"), status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(psycopg.errors.DataError)
    async def _bad_data(request: Request, exc: psycopg.errors.DataError) -> JSONResponse:
        # Out-of-range numbers, bad timestamps and the like that slipped past validation.
        return JSONResponse(body("invalid", "a value is out of range or malformed", _first_line(exc)), status_code=422)

    @app.exception_handler(psycopg.errors.IntegrityError)
    async def _conflict(request: Request, exc: psycopg.errors.IntegrityError) -> JSONResponse:
        return JSONResponse(body("conflict", "the change conflicts with existing data", _first_line(exc)), status_code=409)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(body("internal", "internal error; it was logged"), status_code=500)


def _work_order_status(exc: WorkOrderError) -> tuple[int, str]:
    if isinstance(exc, NotFound):
        return 404, "not_found"
    if isinstance(exc, ClosureRefused):
        return 409, "closure_refused"
    if isinstance(exc, InvalidTransition):
        return 409, "invalid_transition"
    if isinstance(exc, BadInput):
        return 422, "invalid"
    return 422, "invalid"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

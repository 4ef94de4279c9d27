"""One error shape for every 4xx/503: ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``,
the same as FastAPI's validation errors, with ``loc`` naming the field.

There is deliberately no catch-all handler: an unexpected exception is a bug and stays a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from ranktune.search.errors import RanktuneError
from ranktune.service.errors import ServiceError
from ranktune.service.schemas.common import ErrorResponse

log = logging.getLogger("ranktune.api")

ERROR_TEXT = {
    400: "The body cannot be read as JSON (not UTF-8, or nested too deeply)",
    401: "Missing, unknown or revoked token",
    403: "The token's role may not call this endpoint",
    404: "Not found",
    409: "The current state does not allow this (e.g. a stale attempt)",
    413: "The body is larger than RANKTUNE_MAX_BODY_BYTES",
    422: "Invalid input; loc names the field",
    503: "The database is unavailable or busy; retry after Retry-After seconds",
}
# FastAPI's answer to a body it cannot parse (anything but a JSON syntax error, which is a 422).
UNPARSABLE_BODY = "There was an error parsing the body"


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: the errors only it can answer (see api/openapi.py for the rest)."""
    return {code: {"model": ErrorResponse, "description": ERROR_TEXT[code]} for code in codes}


def error_response(status: int, loc: list[str | int], msg: str, kind: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status == 503:
        headers["Retry-After"] = "1"
    body = {"detail": [{"loc": loc, "msg": msg, "type": kind}]}
    return JSONResponse(body, status_code=status, headers=headers)


async def ranktune_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RanktuneError)
    if isinstance(exc, ServiceError):
        status, loc = exc.status_code, [exc.where, *exc.loc]
    else:  # an error from search/: always about the submitted body
        status, loc = 422, ["body", *(exc.field or "body").split(".")]
    return error_response(status, list(loc), str(exc), type(exc).__name__)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation errors without the offending ``input`` (it may be NaN, which JSON cannot
    carry, or a secret) and without ``ctx`` (it may hold exception objects)."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's and FastAPI's own errors (an unparsable body, the body limit, an unknown path)
    in the same shape as every other error."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == UNPARSABLE_BODY:
        msg = "body: cannot be read as JSON (it is not UTF-8, or it is nested too deeply)"
    else:
        msg = str(exc.detail)
    loc: list[str | int] = ["body"] if exc.status_code in (400, 413) else []
    response = error_response(exc.status_code, loc, msg, type(exc).__name__)
    response.headers.update(exc.headers or {})
    return response


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(503, ["database"], "database: unavailable or busy, retry shortly", "DatabaseError")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RanktuneError, ranktune_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(OperationalError, database_unavailable)

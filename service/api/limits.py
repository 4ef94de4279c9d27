"""Request limits, enforced before a body is read: ``RANKTUNE_MAX_BODY_BYTES`` for a whole body
(413), ``RANKTUNE_MAX_ADAPTER_BYTES`` instead for an adapter upload (``PUT …/leases/{id}/adapter``),
``RANKTUNE_MAX_JSON_FIELD_BYTES`` for each free-form JSON field (422, see json_bounds.py).

A declared ``Content-Length`` above the limit is answered at once, without reading a byte of the
body; a body without one (chunked) is counted as it arrives and refused at the first chunk that
crosses the limit, so memory stays flat however much a client sends.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ranktune.service.api.errors import error_response
from ranktune.service.schemas.json_bounds import field_bytes_limit


class BodyTooLarge(HTTPException):
    """Raised from ``receive``; FastAPI passes HTTPExceptions through, its handler answers 413."""

    def __init__(self, limit: int, setting: str = "RANKTUNE_MAX_BODY_BYTES") -> None:
        super().__init__(413, f"body: larger than {limit:,} bytes, the most this server accepts ({setting})")


def is_adapter_upload(scope: Scope) -> bool:
    path = scope["path"].rstrip("/")
    return scope["method"] == "PUT" and (path.endswith("/adapter") or path.endswith("/checkpoint"))


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:  # ASGI header names are lower-case bytes
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses a malformed Content-Length before the app
    return None


class RequestLimits:
    """Pure ASGI middleware (not BaseHTTPMiddleware, which would buffer and re-wrap streams)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_json_field_bytes: int,
        max_adapter_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_field_bytes = max_json_field_bytes
        self.max_adapter_bytes = max_body_bytes if max_adapter_bytes is None else max_adapter_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.max_body_bytes, "RANKTUNE_MAX_BODY_BYTES"
        if is_adapter_upload(scope):
            limit, setting = self.max_adapter_bytes, "RANKTUNE_MAX_ADAPTER_BYTES"
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await too_large(limit, setting)(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            with field_bytes_limit(self.max_json_field_bytes):
                await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await too_large(limit, setting)(scope, receive, send)


def too_large(limit: int, setting: str = "RANKTUNE_MAX_BODY_BYTES") -> JSONResponse:
    error = BodyTooLarge(limit, setting)
    return error_response(error.status_code, ["body"], error.detail, "BodyTooLarge")

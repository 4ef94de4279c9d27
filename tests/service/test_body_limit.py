"""The request body limit (RANKTUNE_MAX_BODY_BYTES): 413 in the usual error shape, decided before the
body is read. Over real HTTP a declared Content-Length above the limit is answered without a byte of
body sent, and a chunked stream far beyond it leaves the process's memory flat."""

from __future__ import annotations

import json
import socket
import tracemalloc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ranktune.service.app import create_app
from ranktune.service.schemas.common import ErrorResponse
from tests.service.api import Api, make_settings, spec
from tests.service.databases import SqliteDatabases, row_counts
from tests.service.server import LiveServer

LIMIT = 64 * 1024


@pytest.fixture
def url(sqlite_dbs: SqliteDatabases) -> Iterator[str]:
    with sqlite_dbs.fresh() as database_url:
        yield database_url


@pytest.fixture
def api(url: str) -> Iterator[Api]:
    app = create_app(make_settings(url, max_body_bytes=LIMIT))
    with TestClient(app) as client:
        yield Api(client, app)


def assert_too_large(status: int, body: bytes) -> None:
    assert status == 413, body
    error = ErrorResponse.model_validate_json(body).detail[0]
    assert error.loc == ["body"] and "RANKTUNE_MAX_BODY_BYTES" in error.msg and f"{LIMIT:,}" in error.msg


def padded_spec(size: int) -> bytes:
    """A valid spec whose JSON text is exactly ``size`` bytes (trailing whitespace)."""
    text = json.dumps(spec()).encode()
    return text + b" " * (size - len(text))


def test_a_declared_length_above_the_limit_is_413(api: Api, url: str) -> None:
    before = row_counts(url)
    response = api.client.post(
        "/api/v1/searches", content=padded_spec(LIMIT + 1), headers={"Content-Type": "application/json"}
    )
    assert_too_large(response.status_code, response.content)
    assert row_counts(url) == before
    at_limit = api.client.post(
        "/api/v1/searches", content=padded_spec(LIMIT), headers={"Content-Type": "application/json"}
    )
    assert at_limit.status_code == 201, at_limit.text


def test_a_chunked_body_is_counted_as_it_arrives(api: Api, url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield padded_spec(LIMIT // 2)
        yield b" " * (LIMIT // 2 + 1)

    before = row_counts(url)
    response = api.client.post(
        "/api/v1/searches", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_too_large(response.status_code, response.content)
    assert row_counts(url) == before


def test_the_default_limit_is_16_mib(url: str) -> None:
    assert make_settings(url).max_body_bytes == 16 * 2**20


# --- over real HTTP ---------------------------------------------------------------------------------


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without an answer"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int({k.lower(): v for k, v in headers.items()}["content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


def request_head(port: int, extra: str) -> bytes:
    return (
        f"POST /api/v1/searches HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


@pytest.fixture
def server(url: str) -> Iterator[LiveServer]:
    with LiveServer(create_app(make_settings(url, max_body_bytes=LIMIT))) as live:
        yield live


def test_a_declared_length_is_refused_before_any_body_is_sent(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request_head(server.port, f"Content-Length: {20 * 2**20}\r\n"))
        status, body = read_response(sock)  # no byte of the 20 MiB body was sent
    assert_too_large(status, body)


def test_a_stream_far_beyond_the_limit_leaves_memory_flat(server: LiveServer) -> None:
    chunk = b" " * (256 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    total = 64 * 2**20
    tracemalloc.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(request_head(server.port, "Transfer-Encoding: chunked\r\n"))
            for _ in range(total // len(chunk)):
                sock.sendall(framed)
            sock.sendall(b"0\r\n\r\n")
            status, body = read_response(sock)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_too_large(status, body)
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB traced while {total / 2**20:.0f} MiB were sent"

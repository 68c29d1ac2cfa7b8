"""The lean HTTP/1.1 client (router.providers.http1) against raw loopback servers.

The provider contract over it (every failure kind, streams) is checked beside the
aiohttp transport in test_provider_stream.py; here, what only a byte-level server
shows: connection reuse, body framings and encodings, and that nothing half-read or
abandoned is ever reused.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Callable

import httpx
import pytest

from router.providers import Endpoint, make_provider
from router.providers.http1 import Http1Transport

BODY = json.dumps({"ok": True}).encode()


class RawServer:
    """A loopback server answering each request with ``answer(n)`` bytes (n: the
    request's number, from 0); counts connections; ``close_after`` closes each
    connection after answering."""

    def __init__(self, answer: Callable[[int], bytes], *, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                writer.write(self.answer(len(self.requests) - 1))
                await writer.drain()
                if self.close_after:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/x"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()


def ok(body: bytes = BODY, extra: str = "") -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}"
    return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body


async def post(transport: Http1Transport, url: str, read_s: float | None = 2.0) -> bytes:
    response = await transport.line(url, 2.0, read_s).post(b"{}", {"Authorization": "Bearer k"})
    try:
        return await response.aread()
    finally:
        await response.aclose()


def test_one_connection_serves_many_requests_with_the_exact_request_bytes() -> None:
    async def main() -> tuple[int, list[bytes], list[bytes]]:
        async with RawServer(lambda n: ok()) as server:
            transport = Http1Transport()
            bodies = [await post(transport, server.url) for _ in range(5)]
            await transport.aclose()
            return server.connections, bodies, server.requests

    connections, bodies, requests = asyncio.run(main())
    assert connections == 1
    assert bodies == [BODY] * 5
    head, _, body = requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/x HTTP/1.1"
    assert b"Authorization: Bearer k" in lines
    assert b"Content-Length: 2" in lines and b"Content-Type: application/json" in lines
    assert body == b"{}"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # chunked framing, split over three chunks
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n2\r\nhi\r\n0\r\n\r\n",
            b"abcdefghi",
        ),
        (ok(gzip.compress(b'{"z":1}'), "content-encoding: gzip\r\n"), b'{"z":1}'),
        (ok(zlib.compress(b'{"d":2}'), "content-encoding: deflate\r\n"), b'{"d":2}'),
        # raw deflate, as some servers send it
        (ok(zlib.compress(b'{"r":3}')[2:-4], "Content-Encoding: deflate\r\n"), b'{"r":3}'),
    ],
    ids=["chunked", "gzip", "deflate", "raw-deflate"],
)
def test_bodies_are_unframed_and_decoded(answer: bytes, expected: bytes) -> None:
    async def main() -> bytes:
        async with RawServer(lambda n: answer) as server:
            transport = Http1Transport()
            try:
                return await post(transport, server.url)
            finally:
                await transport.aclose()

    assert asyncio.run(main()) == expected


def test_a_body_ended_by_the_connection_is_whole_and_the_connection_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + BODY

    async def main() -> tuple[list[bytes], int]:
        async with RawServer(lambda n: answer, close_after=True) as server:
            transport = Http1Transport()
            bodies = [await post(transport, server.url) for _ in range(2)]
            await transport.aclose()
            return bodies, server.connections

    assert asyncio.run(main()) == ([BODY, BODY], 2)


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def main() -> tuple[list[bytes], int]:
        async with RawServer(lambda n: ok()) as server:
            transport = Http1Transport()
            first = await post(transport, server.url)
            for writer in server.writers:
                writer.close()  # the server drops the idle keep-alive connection
            await asyncio.sleep(0.05)
            second = await post(transport, server.url)
            await transport.aclose()
            return [first, second], server.connections

    assert asyncio.run(main()) == ([BODY, BODY], 2)


def test_connection_close_from_the_server_is_honoured() -> None:
    async def main() -> int:
        async with RawServer(lambda n: ok(extra="connection: close\r\n")) as server:
            transport = Http1Transport()
            for _ in range(3):
                assert await post(transport, server.url) == BODY
            await transport.aclose()
            return server.connections

    assert asyncio.run(main()) == 3


def test_a_cancelled_or_abandoned_exchange_never_reuses_its_connection() -> None:
    slow = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial"

    async def main() -> tuple[int, bytes]:
        async with RawServer(lambda n: slow if n < 2 else ok()) as server:
            transport = Http1Transport()
            line = transport.line(server.url, 2.0, 5.0)
            # 1: cancelled while reading the body
            task = asyncio.ensure_future(post(transport, server.url, read_s=5.0))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # 2: headers read, body abandoned (closed early)
            response = await line.post(b"{}", {})
            assert response.status_code == 200
            await response.aclose()
            # 3: a fresh connection, a whole answer
            body = await post(transport, server.url)
            await transport.aclose()
            return server.connections, body

    assert asyncio.run(main()) == (3, BODY)


def test_failures_are_httpx_exceptions_by_how_far_the_request_got() -> None:
    async def main() -> list[type[BaseException]]:
        seen: list[type[BaseException]] = []
        transport = Http1Transport()
        try:
            await post(transport, "http://127.0.0.1:9/v1/x")
        except httpx.HTTPError as exc:
            seen.append(type(exc))
        async with RawServer(lambda n: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab") as s:
            try:
                await post(transport, s.url, read_s=0.2)
            except httpx.HTTPError as exc:
                seen.append(type(exc))
        async with RawServer(lambda n: b"NOT HTTP AT ALL\r\n\r\n") as s:
            try:
                await post(transport, s.url)
            except httpx.HTTPError as exc:
                seen.append(type(exc))
        async with RawServer(
            lambda n: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab", close_after=True
        ) as s:
            try:
                await post(transport, s.url)
            except httpx.HTTPError as exc:
                seen.append(type(exc))
        try:
            line = transport.line("http://127.0.0.1:9/v1/x", 1.0, 1.0)
            await line.post(b"{}", {"x-api-key": "secret\r\nInjected: yes"})
        except httpx.HTTPError as exc:
            assert "secret" not in str(exc)
            seen.append(type(exc))
        await transport.aclose()
        return seen

    assert asyncio.run(main()) == [
        httpx.ConnectError,
        httpx.ReadTimeout,
        httpx.RemoteProtocolError,
        httpx.RemoteProtocolError,
        httpx.LocalProtocolError,
    ]


def test_the_gateway_serves_over_http1_by_default_and_providers_take_its_line() -> None:
    from router.gateway import GatewaySettings

    assert GatewaySettings().upstream == "http1"
    endpoint = Endpoint(kind="anthropic", base_url="https://api.example.test", model="m")
    provider = make_provider(endpoint, transport=Http1Transport())
    line = provider._line  # type: ignore[attr-defined]
    assert line is not None and line._key == ("https", "api.example.test", 443)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (needs the openssl command)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (needed to make a test certificate)")
    where = tmp_path_factory.mktemp("tls")
    cert, key = str(where / "cert.pem"), str(where / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_verifies_the_server_certificate(certificate: tuple[str, str]) -> None:
    import ssl

    cert, key = certificate
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)

    async def main() -> tuple[type[BaseException] | None, bytes]:
        server = await asyncio.start_server(
            RawServer(lambda n: ok()).handle, "127.0.0.1", 0, ssl=server_side
        )
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/x"
        refused: type[BaseException] | None = None
        default = Http1Transport()  # certifi's CAs: a self-signed server is refused
        try:
            await post(default, url)
        except httpx.HTTPError as exc:
            refused = type(exc)
        await default.aclose()
        trusting = Http1Transport(ssl_context=ssl.create_default_context(cafile=cert))
        body = await post(trusting, url)
        await trusting.aclose()
        server.close()
        return refused, body

    assert asyncio.run(main()) == (httpx.ConnectError, BODY)


def test_bytes_past_the_end_of_a_response_keep_it_but_retire_the_connection() -> None:
    two = ok() + ok(b'{"stray":1}')  # a second, unasked-for response in the same write

    async def main() -> tuple[list[bytes], int]:
        async with RawServer(lambda n: two) as server:
            transport = Http1Transport()
            bodies = [await post(transport, server.url) for _ in range(2)]
            await transport.aclose()
            return bodies, server.connections

    assert asyncio.run(main()) == ([BODY, BODY], 2)

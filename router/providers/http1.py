"""A lean HTTP/1.1 client for the HTTP providers' direct line.

The gateway spends most of its own CPU per request calling the upstream. Profiled at
300 requests/s on this project's 2-core machine, aiohttp's client (session, request
and response objects, connector, payload writer, stream reader) was about 30% of the
gateway's CPU samples, while the load generator's raw keep-alive protocol client made
40k+ requests/s on one core. A provider call needs little of a general client: one
``POST`` of a JSON body, a status, a few headers, a body or a stream of lines. This
module does just that on an ``asyncio.Protocol`` with the ``httptools`` parser (the
one uvicorn uses), and :class:`Http1Transport` offers it as the providers' direct line
(:meth:`Http1Transport.line`); every other request made through it as an httpx
transport goes through the :class:`~router.providers.aiohttp_transport.AiohttpTransport`
it extends.

Contract (that of ``AiohttpTransport.line``, which the provider tests check over both):

* failures are httpx's exceptions, by how far the request got: refused, DNS or TLS
  failures -> ``httpx.ConnectError``; no connection within ``connect_s`` ->
  ``httpx.ConnectTimeout``; a wait for the next bytes past ``read_s`` ->
  ``httpx.ReadTimeout``; a reset -> ``httpx.ReadError``; closed before the response
  was complete, or a response that does not parse -> ``httpx.RemoteProtocolError``;
  a header value with a line break -> ``httpx.LocalProtocolError`` (the value, maybe a
  key, is never shown).
* keep-alive: one pool of idle connections per (scheme, host, port), most recent
  first; an idle connection is dropped once the server closed it or after
  ``keepalive_s``. A connection goes back to the pool only when its response was read
  to the end and both sides agreed to keep it; abandoned, cancelled or failed, it is
  closed (nothing half-read is ever reused).
* bodies are decoded by their ``Content-Encoding`` (gzip, deflate), as httpx would;
  redirects are not followed; no cookies; no proxy from the environment.
* ``https`` verifies the server against certifi's CA bundle (httpx's default) and
  offers only HTTP/1.1 by ALPN.
* one transport is used from one event loop at a time; a different loop finds the
  pool empty (the old loop's connections are closed, never shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools
import httpx

from router.providers.aiohttp_transport import AiohttpTransport

__all__ = ["Http1Line", "Http1Response", "Http1Transport"]

#: Body bytes buffered unread before the socket stops being read (back-pressure for a
#: caller slow to consume a stream); reading resumes below half of it.
_HIGH_WATER = 1 << 20

_SKIPPED_HEADERS = frozenset({"host", "content-length", "content-type", "connection"})


class _Headers(dict[str, str]):
    """Response headers keyed in lower case; lookups ignore case (as httpx's). A name
    sent several times keeps its values joined by ", " (as ``httpx.Headers.get``)."""

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


def _decoder(encoding: str | None) -> Any:
    if encoding is None:
        return None
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Deflate()
    return None  # identity or unknown: passed through, as httpx does for identity


class _Deflate:
    """``deflate`` as sent in the wild: zlib-wrapped, or (some servers) raw."""

    __slots__ = ("_inner", "_first")

    def __init__(self) -> None:
        self._inner = zlib.decompressobj()
        self._first = True

    def decompress(self, data: bytes) -> bytes:
        if self._first:
            self._first = False
            try:
                return self._inner.decompress(data)
            except zlib.error:
                self._inner = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._inner.decompress(data)

    def flush(self) -> bytes:
        return self._inner.flush()


class _Conn(asyncio.Protocol):
    """One keep-alive connection; ``response`` is the exchange in progress, if any.

    The parser calls back into this object (httptools' protocol), which hands what it
    parsed to the response.
    """

    def __init__(self, pool: _Pool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Http1Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.paused = False
        self._names: list[bytes] = []
        self._values: list[bytes] = []

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response._done:
            self._stray()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(httpx.RemoteProtocolError(f"the response does not parse: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self.response
        if response is not None and not response._done:
            if response._headers_done and not response._delimited:
                response._finish()  # a body delimited by the end of the connection
            elif isinstance(exc, ConnectionResetError):
                response._fail(httpx.ReadError(f"connection reset: {exc}"))
            else:
                where = "mid-body" if response._headers_done else "before answering"
                response._fail(
                    httpx.RemoteProtocolError(f"the server closed the connection {where}")
                )

    # -- httptools callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._names.append(name)
        self._values.append(value)

    def _stray(self) -> None:
        """Bytes nobody asked for (past the end of the response): the connection can no
        longer be trusted; the response already read stays good, the connection is not
        reused."""
        if self.response is not None:
            self.response._keep = False
        self.close()

    def on_headers_complete(self) -> None:
        headers = _Headers()
        for name, value in zip(self._names, self._values, strict=True):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self._names.clear()
        self._values.clear()
        response = self.response
        if response is None or response._headers_done:
            self._stray()  # a second response in one exchange
            return
        response._start(self.parser.get_status_code(), headers)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is None or response._done:
            self._stray()
            return
        response._feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None or response._done:
            self._stray()
            return
        response._keep = self.parser.should_keep_alive()
        response._finish()

    # -- ours -------------------------------------------------------------------------
    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is already closed
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.transport.abort()


class _Pool:
    """Idle connections per (scheme, host, port), bound to one event loop."""

    def __init__(self, keepalive_s: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self.keepalive_s = keepalive_s
        self.idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ssl = ssl_context

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is not loop:
            self.close()
            self.loop = loop

    def take(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self.idle.get(key)
        if not idle:
            return None
        now = self.loop.time()  # type: ignore[union-attr]
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since <= self.keepalive_s:
                return conn
            conn.close()
        return None

    def give(self, conn: _Conn) -> None:
        conn.response = None
        if conn.closed or self.loop is None:
            return
        conn.idle_since = self.loop.time()
        self.idle.setdefault(conn.key, []).append(conn)

    def forget(self, conn: _Conn) -> None:
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            try:
                import certifi

                context = ssl.create_default_context(cafile=certifi.where())
            except ImportError:  # pragma: no cover - httpx depends on certifi
                context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl = context
        return self._ssl

    def close(self) -> None:
        idle, self.idle = self.idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


class Http1Response:
    """A response read through an :class:`Http1Line`: the part of ``httpx.Response``
    the providers use (``status_code``, ``headers``, ``aread``, ``aiter_lines``,
    ``aclose``), raising httpx's exceptions for failures while reading."""

    __slots__ = (
        "status_code",
        "headers",
        "_conn",
        "_read_s",
        "_chunks",
        "_buffered",
        "_waiter",
        "_headers_done",
        "_delimited",
        "_done",
        "_keep",
        "_error",
        "_decoder",
        "_released",
    )

    def __init__(self, conn: _Conn, read_s: float | None) -> None:
        self.status_code = 0
        self.headers: _Headers = _Headers()
        self._conn = conn
        self._read_s = read_s
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._headers_done = False
        self._delimited = False  # by Content-Length or chunked encoding (else: by EOF)
        self._done = False
        self._keep = False
        self._error: BaseException | None = None
        self._decoder: Any = None
        self._released = False

    # -- fed by the connection ----------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _start(self, status: int, headers: _Headers) -> None:
        self.status_code = status
        self.headers = headers
        self._delimited = "content-length" in headers or "chunked" in headers.get(
            "transfer-encoding", ""
        )
        self._decoder = _decoder(headers.get("content-encoding"))
        self._headers_done = True
        self._wake()

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(httpx.DecodingError(f"the body does not decode: {exc}"))
                self._conn.close()
                return
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            conn = self._conn
            if self._buffered > _HIGH_WATER and not conn.paused and conn.transport is not None:
                conn.paused = True
                conn.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error as exc:
                self._fail(httpx.DecodingError(f"the body does not decode: {exc}"))
                return
            if tail:
                self._chunks.append(tail)
        self._done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._done:
            self._error = error
        self._wake()

    # -- awaited by the provider ------------------------------------------------------
    async def _wait(self) -> None:
        """Until something new arrives (bytes, the end, a failure), at most ``read_s``."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = (
            loop.call_later(self._read_s, _expire, waiter, self._read_s)
            if self._read_s is not None
            else None
        )
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        conn = self._conn
        if conn.paused and conn.transport is not None:
            conn.paused = False
            conn.transport.resume_reading()
        return data

    async def _headers(self) -> None:
        try:
            while not self._headers_done:
                if self._error is not None:
                    raise self._error
                await self._wait()
        except BaseException:
            self._abandon()
            raise

    async def aread(self) -> bytes:
        """The whole (decoded) body; the connection then goes back to the pool."""
        try:
            while not self._done:
                if self._error is not None:
                    raise self._error
                await self._wait()
            if self._error is not None:
                raise self._error
        except BaseException:
            self._abandon()
            raise
        data = self._take()
        self._release()
        return data

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines without their endings (``\\n`` or ``\\r\\n``), decoded as
        UTF-8, as they arrive; no cap on a line's length (a large tool call is one)."""
        pending = b""
        try:
            while True:
                if self._error is not None:
                    raise self._error
                if self._chunks:
                    pending += self._take()
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.rstrip(b"\r").decode("utf-8", "replace")
                    continue
                if self._done:
                    break
                await self._wait()
        except BaseException:
            self._abandon()
            raise
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", "replace")

    async def aclose(self) -> None:
        """Give the connection back if the body was read to the end, else close it."""
        if self._done and self._error is None and not self._chunks:
            self._release()
        else:
            self._abandon()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        if self._keep and not conn.closed:
            conn.pool.give(conn)
        else:
            conn.response = None
            conn.close()

    def _abandon(self) -> None:
        if self._released:
            return
        self._released = True
        self._conn.response = None
        self._conn.abort()


def _expire(waiter: asyncio.Future[None], read_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"no bytes within the read timeout ({read_s:g} s)"))


class Http1Line:
    """POSTs JSON bodies to one URL over an :class:`Http1Transport`'s pool."""

    __slots__ = ("_pool", "_key", "_head", "_host", "_port", "_tls", "_connect_s", "_read_s")

    def __init__(
        self, pool: _Pool, url: str, connect_s: float | None, read_s: float | None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"not an http(s) URL: {parts.scheme}://{parts.netloc}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        default_port = port == (443 if tls else 80)
        shown = f"[{host}]" if ":" in host else host
        authority = shown if default_port else f"{shown}:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._pool = pool
        self._key = (parts.scheme, host, port)
        self._host = host
        self._port = port
        self._tls = tls
        self._connect_s = connect_s
        self._read_s = read_s
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: */*\r\n"
            "Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
            "Content-Type: application/json\r\n"
        )

    async def _connect(self) -> _Conn:
        pool = self._pool
        loop = asyncio.get_running_loop()
        context = pool.ssl_context() if self._tls else None
        try:
            async with asyncio.timeout(self._connect_s):
                _, conn = await loop.create_connection(
                    lambda: _Conn(pool, self._key),
                    self._host,
                    self._port,
                    ssl=context,
                    server_hostname=self._host if context is not None else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"no connection to {self._host}:{self._port} within {self._connect_s:g} s"
            ) from exc
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return conn

    async def post(self, body: bytes, headers: dict[str, str]) -> Http1Response:
        """Send a JSON ``body``; return once the status line and headers are in."""
        lines = [self._head]
        for name, value in headers.items():
            if name.lower() in _SKIPPED_HEADERS:
                continue
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise httpx.LocalProtocolError(f"header {name!r} has a line break in its value")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        try:
            request = "".join(lines).encode("latin-1") + body
        except UnicodeEncodeError as exc:
            raise httpx.LocalProtocolError("a header is not latin-1 text") from exc
        pool = self._pool
        pool.bind(asyncio.get_running_loop())
        conn = pool.take(self._key)
        if conn is None:
            conn = await self._connect()
        response = Http1Response(conn, self._read_s)
        conn.response = response
        conn.transport.write(request)  # type: ignore[union-attr]
        await response._headers()
        return response


class Http1Transport(AiohttpTransport):
    """An :class:`AiohttpTransport` whose direct line (:meth:`line`, what the HTTP
    providers use) is this module's lean HTTP/1.1 client. See the module docstring.

    ``ssl_context`` replaces the default verification (certifi's CA bundle) of the
    direct line's ``https`` connections, e.g. for a company CA.
    """

    def __init__(
        self,
        *,
        limit: int = 0,
        limit_per_host: int = 0,
        keepalive_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(limit=limit, limit_per_host=limit_per_host, keepalive_s=keepalive_s)
        self._pool = _Pool(keepalive_s, ssl_context)

    def line(self, url: str, connect_s: float | None, read_s: float | None) -> Http1Line:  # type: ignore[override]
        if self._closed:
            raise RuntimeError("Http1Transport: used after aclose()")
        return Http1Line(self._pool, url, connect_s, read_s)

    async def aclose(self) -> None:
        """Close the idle connections and the aiohttp session (idempotent)."""
        self._pool.close()
        await super().aclose()

"""An httpx transport over an ``aiohttp.ClientSession``: httpx's API, aiohttp's pool.

The HTTP providers speak ``httpx``; on this project's 2-core machine a pass-through
proxy built on ``httpx.AsyncClient`` topped out near 1.1k requests/s (its connection
pool was the limit) against ~7.7k/s with ``aiohttp``. :class:`AiohttpTransport` keeps
the providers unchanged -- same requests, same responses, same timeouts -- and moves
the sockets to aiohttp::

    transport = AiohttpTransport()
    provider = make_provider(endpoint, transport=transport)

Contract (that of ``httpx.AsyncBaseTransport``, which the provider tests check):

* aiohttp's exceptions are translated at this boundary into httpx's, by how far the
  request got, so a provider classifies them exactly as with httpx's own transport:
  refused / DNS / TLS -> ``httpx.ConnectError``, connect timeout ->
  ``httpx.ConnectTimeout``, a read past ``read`` -> ``httpx.ReadTimeout``, a reset or
  a body cut short -> ``httpx.ReadError`` / ``httpx.RemoteProtocolError``.
* timeouts come from the request's ``timeout`` extension: ``connect`` bounds a new
  connection, ``read`` each socket read; ``pool`` is not applied (as the providers
  ask). There is no total timeout here: the provider's deadline owns that.
* the body is handed over undecoded (``auto_decompress`` off): httpx decodes it by
  its ``Content-Encoding``, as it does over its own transport.
* closing a response whose body was read to the end returns its connection to the
  pool; closing it earlier (an abandoned stream) closes the connection.
* one transport may be shared by many providers and clients; :meth:`aclose` is
  idempotent. The session is created lazily, in the event loop of the first request,
  and the transport must be used from that loop only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx

__all__ = ["AiohttpTransport", "Line", "LineResponse"]

#: Bytes read from the socket at a time for a body.
_CHUNK = 65536


def _translate(exc: BaseException, request: httpx.Request | None) -> httpx.TransportError:
    """The httpx exception for an aiohttp (or socket) one; the caller chains it."""
    message = str(exc) or type(exc).__name__
    # Order matters: aiohttp's classes are a tree (ClientConnectorError is a
    # ClientOSError is a ClientConnectionError...), most specific first.
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(
        exc,
        aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError,
    ):
        # Closed without (all of) a response, a body cut short, an HTTP head that
        # does not parse: the peer broke the protocol mid-exchange.
        return httpx.RemoteProtocolError(message, request=request)
    # ClientOSError (reset, broken pipe), other ClientConnectionErrors, raw OSErrors.
    return httpx.ReadError(message, request=request)


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body as httpx's byte stream."""

    __slots__ = ("_response", "_request")

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translate(exc, self._request) from exc

    async def aclose(self) -> None:
        response = self._response
        if response.content.at_eof():
            response.release()  # read to the end: the connection goes back to the pool
        else:
            response.close()  # abandoned mid-body: the connection cannot be reused


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over one pooled ``aiohttp.ClientSession``.

    ``limit`` caps the connections open at once over all hosts (0: no cap),
    ``limit_per_host`` per host; idle connections are kept ``keepalive_s`` seconds.
    See the module docstring for the contract.
    """

    def __init__(
        self, *, limit: int = 0, limit_per_host: int = 0, keepalive_s: float = 30.0
    ) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=self._limit_per_host,
            keepalive_timeout=self._keepalive_s,
            ttl_dns_cache=300,
        )
        # Cookies are httpx's business (the client above us); aiohttp keeps none.
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self.session()
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        try:
            body: bytes | None = request.content or None
        except httpx.RequestNotRead:
            body = await request.aread() or None
        headers = [(k, v) for k, v in request.headers.multi_items() if k != "host"]
        try:
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=timeout,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translate(exc, request) from exc
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions=extensions,
        )

    def session(self) -> aiohttp.ClientSession:
        """The pooled session (created on first use, in the running loop)."""
        if self._closed:
            raise RuntimeError("AiohttpTransport: used after aclose()")
        session = self._session
        if session is None:
            session = self._session = self._new_session()
        return session

    def line(self, url: str, connect_s: float | None, read_s: float | None) -> Line:
        """A direct line to ``url`` over this transport's pool, for the HTTP providers
        (they look for this method): requests without httpx's client and response
        objects, failures as the same httpx exceptions."""
        return Line(self, url, connect_s, read_s)

    async def aclose(self) -> None:
        """Close the session and its connections (idempotent)."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class LineResponse:
    """A response read through a :class:`Line`: the part of ``httpx.Response`` the
    providers use (``status_code``, ``headers``, ``aread``, ``aiter_lines``,
    ``aclose``), raising httpx's exceptions for failures while reading."""

    __slots__ = ("_response", "status_code", "headers")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers = response.headers  # case-insensitive, as httpx's

    async def aread(self) -> bytes:
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translate(exc, None) from exc

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines without their endings (``\n`` or ``\r\n``), decoded as
        UTF-8. Split here rather than with ``readline``, whose line-length cap would
        turn one long event (a large tool call) into a failure."""
        content = self._response.content
        pending = b""
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r").decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translate(exc, None) from exc
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", "replace")

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class Line:
    """POSTs to one URL over an :class:`AiohttpTransport`'s pool (see
    :meth:`AiohttpTransport.line`); bodies are decompressed here, as httpx would."""

    __slots__ = ("_transport", "_url", "_timeout")

    def __init__(
        self, transport: AiohttpTransport, url: str, connect_s: float | None, read_s: float | None
    ) -> None:
        self._transport = transport
        self._url = url
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=connect_s, sock_read=read_s
        )

    async def post(self, body: bytes, headers: dict[str, str]) -> LineResponse:
        """Send a JSON ``body``; return once the response headers are in."""
        session = self._transport.session()
        try:
            response = await session.request(
                "POST",
                self._url,
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                allow_redirects=False,
                timeout=self._timeout,
                auto_decompress=True,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translate(exc, None) from exc
        return LineResponse(response)

"""A scripted HTTP/1.1 server on 127.0.0.1 for testing LLM clients and agents.

:class:`ScriptedServer` is a real server — real sockets, real HTTP framing — whose
answer to each request is scripted: a JSON reply, a delay, a hang, a reset in the
middle of the body, a body shorter than its ``Content-Length``, a server-sent-event
stream with per-chunk delays that may be cut or lack its terminator, a 429 with
``Retry-After``. It exercises a client's timeout and error handling the way a
flaky provider would, without a mock of the client's own I/O.

It uses only the standard library (asyncio streams) and serves only loopback.

Sync tests (the server runs its own event loop in a daemon thread)::

    from router.testing_http import Json, ScriptedServer, openai_completion

    with ScriptedServer(Json(openai_completion("SELECT 1"))) as server:
        ...  # point the client at server.url; server.requests records what came in

Async code (the server runs on the current loop)::

    async with ScriptedServer() as server:
        server.push(Hang(), RateLimit(retry_after=2))
        ...

Replies are consumed in order, one per request; when the script is empty the
``default`` reply answers (a 500 unless set). A step may also be a callable taking
the :class:`RecordedRequest` and returning a reply. Leaving the ``with`` block
stops the server and drops every open connection, hung ones included.

Body builders for the common dialects (:func:`openai_completion`,
:func:`openai_stream`, :func:`anthropic_message`, :func:`anthropic_stream`,
:func:`openai_error`, :func:`anthropic_error`) keep scripts short; they answer with
usage, a model name, an id and, if asked, tool calls (:func:`openai_tool_call`,
:func:`anthropic_tool_use`). ``server.requests[i].json()`` is the body a client
sent, to check exactly what reached the wire.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

__all__ = [
    "Chunk",
    "Connection",
    "Echo",
    "Hang",
    "Json",
    "Raw",
    "RateLimit",
    "RecordedRequest",
    "Reply",
    "Reset",
    "SSE",
    "ScriptedServer",
    "Step",
    "Truncated",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream",
    "anthropic_tool_use",
    "openai_completion",
    "openai_error",
    "openai_stream",
    "openai_tool_call",
    "read_request",
]

#: How long stop() waits for the server thread (sync use) before giving up on it.
_STOP_WAIT_S = 5.0


# -- what came in ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server received it. ``headers`` keys are lower-case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    #: The header lines exactly as sent (used by :class:`Echo`).
    raw_headers: tuple[str, ...] = ()

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


# -- what goes out -----------------------------------------------------------------------


class Connection:
    """The server side of one connection, as a :class:`Reply` sees it.

    ``reader``/``writer`` are the asyncio streams; :meth:`send` writes and drains,
    :meth:`head` builds a status line and headers, :meth:`reset` aborts with a RST.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def head(self, status: int, headers: Mapping[str, str]) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = {529: "Overloaded"}.get(status, "Unknown")
        lines = [f"HTTP/1.1 {status} {phrase}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class Reply:
    """Base class of scripted replies. ``delay_s`` waits before the status line.

    Subclasses implement :meth:`play`: write the response (or misbehave) on the
    :class:`Connection`, and return whether the connection may serve a next
    request (keep-alive). Write your own for behaviour the shipped replies lack.
    """

    delay_s: float = 0.0

    async def play(self, conn: Connection, request: RecordedRequest) -> bool:  # pragma: no cover
        raise NotImplementedError


def _header_dict(headers: Mapping[str, str] | Sequence[tuple[str, str]]) -> dict[str, str]:
    return dict(headers.items() if isinstance(headers, Mapping) else headers)


@dataclass(frozen=True)
class Raw(Reply):
    """Any body with any status: e.g. an HTML error page or non-JSON garbage.

    ``delay_s`` waits before the status line; ``body_delay_s`` between the headers
    and the body (a slow body after a prompt start).
    """

    body: bytes | str = b""
    status: int = 200
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body_delay_s: float = 0.0

    async def play(self, conn: Connection, request: RecordedRequest) -> bool:
        body = self.body.encode() if isinstance(self.body, str) else self.body
        await asyncio.sleep(self.delay_s)
        head = {"Content-Type": self.content_type, "Content-Length": str(len(body))}
        head.update(_header_dict(self.headers))
        if self.body_delay_s:
            await conn.send(conn.head(self.status, head))
            await asyncio.sleep(self.body_delay_s)
            await conn.send(body)
        else:
            await conn.send(conn.head(self.status, head) + body)
        return True


@dataclass(frozen=True)
class Json(Reply):
    """A JSON body (``body`` is dumped with :func:`json.dumps`) with a status;
    ``delay_s`` and ``body_delay_s`` as for :class:`Raw`."""

    body: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body_delay_s: float = 0.0

    async def play(self, conn: Connection, request: RecordedRequest) -> bool:
        raw = Raw(
            json.dumps(self.body).encode(),
            self.status,
            "application/json",
            self.headers,
            self.delay_s,
            self.body_delay_s,
        )
        return await raw.play(conn, request)


@dataclass(frozen=True)
class RateLimit(Reply):
    """A 429. ``retry_after`` becomes ``Retry-After`` (seconds, or a string such as an
    HTTP date, sent as is); ``retry_after_ms`` becomes ``retry-after-ms``."""

    retry_after: float | str | None = None
    retry_after_ms: float | None = None
    body: Any = field(
        default_factory=lambda: openai_error("Rate limit reached", type="requests", code="429")
    )
    delay_s: float = 0.0

    async def play(self, conn: Connection, request: RecordedRequest) -> bool:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            value = self.retry_after
            headers["Retry-After"] = f"{value:g}" if isinstance(value, float | int) else value
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{self.retry_after_ms:g}"
        return await Json(self.body, 429, headers, self.delay_s).play(conn, request)


@dataclass(frozen=True)
class Echo(Reply):
    """An error whose JSON message repeats every request header line verbatim —
    ``Authorization`` included — as a misconfigured proxy might. For checking that
    a client never leaks its credentials into error messages."""

    status: int = 401
    delay_s: float = 0.0

    async def play(self, conn: Connection, request: RecordedRequest) -> bool:
        echoed = "; ".join(request.raw_headers)
        body = {"error": {"message": f"rejected request with headers: {echoed}", "code": None}}
        return await Json(body, self.status, {}, self.delay_s).play(conn, request)


@dataclass(frozen=True)
class Hang(Reply):
    """Accept and read the request, then never answer: no status line, no headers.
    The connection stays open until the client gives up or the server stops (a
    client's first-token timeout should fire)."""

    async def play(self, conn: Connection, request: RecordedRequest) -> bool:
        # Reading until EOF notices the client hanging up; stop() cancels us otherwise.
        while await conn.reader.read(65536):
            pass
        return False


@dataclass(frozen=True)
class Reset(Reply):
    """Send the status line, headers and ``body_prefix`` of a body announced as
    ``declared_length`` bytes, then reset the connection (TCP RST)."""

    body_prefix: bytes = b'{"id": "chatcmpl-1", "choices": [{"index": 0, "mess'
    declared_length: int = 4096
    status: int = 200
    delay_s: float = 0.0

    async def play(self, conn: Connection, request: RecordedRequest) -> bool:
        await asyncio.sleep(self.delay_s)
        head = {"Content-Type": "application/json", "Content-Length": str(self.declared_length)}
        await conn.send(conn.head(self.status, head) + self.body_prefix)
        await asyncio.sleep(0.02)  # let the prefix reach the client before the RST
        conn.reset()
        return False


@dataclass(frozen=True)
class Truncated(Reply):
    """A body shorter than its ``Content-Length``, then an orderly close (FIN).

    ``declared_length`` defaults to twice the body's length.
    """

    body: bytes = b'{"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role"'
    declared_length: int | None = None
    status: int = 200
    delay_s: float = 0.0

    async def play(self, conn: Connection, request: RecordedRequest) -> bool:
        await asyncio.sleep(self.delay_s)
        declared = self.declared_length or 2 * len(self.body) + 1
        head = {"Content-Type": "application/json", "Content-Length": str(declared)}
        await conn.send(conn.head(self.status, head) + self.body)
        return False


@dataclass(frozen=True)
class Chunk:
    """One server-sent event: ``data`` (a dict is JSON-encoded, a str sent as is),
    an optional ``event`` name, and a delay before it is sent."""

    data: Any
    delay_s: float = 0.0
    event: str | None = None

    def encode(self) -> bytes:
        data = self.data if isinstance(self.data, str) else json.dumps(self.data)
        lines = [f"event: {self.event}"] if self.event else []
        lines += [f"data: {line}" for line in data.split("\n")]
        return ("\n".join(lines) + "\n\n").encode()


@dataclass(frozen=True)
class SSE(Reply):
    """A ``text/event-stream`` response in chunked transfer encoding.

    ``chunks`` are sent in order, each after its own delay. ``done`` appends
    ``data: [DONE]`` (OpenAI's terminator; use ``done=False`` for Anthropic streams
    or to test a stream that ends without it). ``cut_after=n`` closes the connection
    after the n-th chunk without finishing the chunked body: a stream cut short.
    """

    chunks: Sequence[Chunk | Mapping[str, Any] | str] = ()
    done: bool = True
    cut_after: int | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    async def play(self, conn: Connection, request: RecordedRequest) -> bool:
        await asyncio.sleep(self.delay_s)
        head = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "Transfer-Encoding": "chunked",
        }
        head.update(_header_dict(self.headers))
        await conn.send(conn.head(self.status, head))
        chunks = [c if isinstance(c, Chunk) else Chunk(c) for c in self.chunks]
        if self.done:
            chunks.append(Chunk("[DONE]"))
        for i, chunk in enumerate(chunks):
            if self.cut_after is not None and i >= self.cut_after:
                conn.writer.close()  # FIN without the terminating zero-length chunk
                return False
            await asyncio.sleep(chunk.delay_s)
            payload = chunk.encode()
            await conn.send(b"%x\r\n%s\r\n" % (len(payload), payload))
        await conn.send(b"0\r\n\r\n")
        return True


#: A script step: a reply, or a function choosing one from the request.
Step = Reply | Callable[[RecordedRequest], Reply]


# -- the server ---------------------------------------------------------------------------


class LoopbackServer:
    """The lifecycle our loopback test servers share.

    Listens on ``host:port`` (``port=0``: the OS picks one, read back into
    :attr:`port`), tracks one task per connection so :meth:`stop` can drop hung
    ones too, and runs either in the current loop (``async with``, or
    :meth:`start`/:meth:`stop`) or in its own loop on a daemon thread (``with``).
    Subclasses implement :meth:`_serve` and may hook :meth:`_on_start`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _on_start(self) -> None:
        """Called in the server's loop once it listens."""

    async def start(self) -> None:
        """Listen on ``host:port`` in the running loop (``OSError`` if it cannot)."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._on_start()

    async def stop(self) -> None:
        """Stop listening and drop every connection, hung ones included."""
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), _STOP_WAIT_S)
        self._server = None

    def __enter__(self) -> Self:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=type(self).__name__, daemon=True)
        thread.start()
        self._thread = thread
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(_STOP_WAIT_S)
        except BaseException:
            self._shutdown_thread(loop)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            self._shutdown_thread(self._loop)

    def _shutdown_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        thread = self._thread
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(_STOP_WAIT_S)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(_STOP_WAIT_S)
            if not thread.is_alive():
                loop.close()
        self._thread = None
        self._loop = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ScriptedServer(LoopbackServer):
    """A loopback HTTP/1.1 server answering each request with the next scripted step.

    ``url`` is ``http://127.0.0.1:<port>`` once started (the port is picked by the
    OS). ``requests`` lists every request received, in order. :meth:`push` appends
    steps (thread-safe). Use as ``with`` (own loop in a daemon thread) or
    ``async with`` (current loop); either way leaving the block stops the server and
    closes every connection.
    """

    def __init__(self, *steps: Step, default: Step | None = None) -> None:
        self._script: collections.deque[Step] = collections.deque(steps)
        self.default: Step = default or Json(
            {"error": {"message": "ScriptedServer: no reply scripted for this request"}},
            status=500,
        )
        self.requests: list[RecordedRequest] = []
        super().__init__()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``."""
        if not self.port:
            raise RuntimeError("ScriptedServer: not started")
        return f"http://127.0.0.1:{self.port}"

    def push(self, *steps: Step) -> None:
        """Append steps to the script (safe from any thread)."""
        self._script.extend(steps)

    # -- serving --------------------------------------------------------------------------

    def _next_reply(self, request: RecordedRequest) -> Reply:
        try:
            step = self._script.popleft()
        except IndexError:
            step = self.default
        return step if isinstance(step, Reply) else step(request)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(reader, writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                if not await self._next_reply(request).play(conn, request):
                    break
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            pass  # the client went away or sent garbage: nothing to answer
        except asyncio.CancelledError:
            # stop() cancels us; ending normally keeps asyncio's stream machinery from
            # logging "Exception in callback" for a cancelled connection task (3.11).
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    """The next request on the connection, or ``None`` at a clean end of connection.

    Public for servers built from these replies (e.g. :mod:`sim.twin.server`). Raises
    ``ValueError`` / ``asyncio.IncompleteReadError`` for a malformed request head.
    """
    return await _read_request(reader)


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    """The next request on the connection, or ``None`` at a clean end of connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    raw_headers = tuple(line for line in lines[1:] if line)
    headers: dict[str, str] = {}
    for line in raw_headers:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are expected
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        raw_body = bytes(body)
    else:
        raw_body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RecordedRequest(method, path, headers, raw_body, raw_headers)


# -- body builders -------------------------------------------------------------------------


def openai_tool_call(
    call_id: str = "call_1", name: str = "run", arguments: Mapping[str, Any] | str = "{}"
) -> dict[str, Any]:
    """One OpenAI tool call (``arguments`` a mapping is JSON-encoded)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def openai_completion(
    text: str | None = "ok",
    *,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    finish_reason: str | None = "stop",
    model: str = "test-model",
    id: str = "chatcmpl-test",
    tool_calls: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` body with one choice and usage. With ``tool_calls`` the
    message carries them (pass ``text=None`` for OpenAI's ``content: null`` and
    ``finish_reason="tool_calls"`` for a tool-call-only answer)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls is not None:
        message["tool_calls"] = [dict(call) for call in tool_calls]
    return {
        "id": id,
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def openai_error(
    message: str, *, type: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    """An OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def openai_stream(
    pieces: Sequence[str] = ("Hel", "lo"),
    *,
    finish_reason: str = "stop",
    usage: tuple[int, int] | None = (10, 5),
    model: str = "test-model",
    id: str = "chatcmpl-test",
    tool_calls: Sequence[Mapping[str, Any]] = (),
) -> list[Chunk]:
    """``chat.completion.chunk`` events: a role chunk, one per piece, then per tool
    call a chunk with its id and name and two with halves of its arguments, a finish
    chunk and (if ``usage``) a usage-only chunk. Pass to :class:`SSE` (``done=True``
    adds ``[DONE]``); replace a chunk with ``dataclasses.replace(c, delay_s=...)`` to
    script a late first token or a stall."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": id,
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events = [Chunk(chunk({"role": "assistant", "content": ""}))]
    events += [Chunk(chunk({"content": piece})) for piece in pieces]
    for index, call in enumerate(tool_calls):
        function = call["function"]
        head = {"index": index, "id": call["id"], "type": "function"}
        head["function"] = {"name": function["name"], "arguments": ""}
        events.append(Chunk(chunk({"tool_calls": [head]})))
        arguments: str = function["arguments"]
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            delta = {"tool_calls": [{"index": index, "function": {"arguments": part}}]}
            events.append(Chunk(chunk(delta)))
    events.append(Chunk(chunk({}, finish_reason)))
    if usage is not None:
        events.append(
            Chunk(
                {
                    "id": id,
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": usage[0],
                        "completion_tokens": usage[1],
                        "total_tokens": sum(usage),
                    },
                }
            )
        )
    return events


def anthropic_tool_use(
    call_id: str = "toolu_1", name: str = "run", input: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One Messages API ``tool_use`` content block."""
    return {"type": "tool_use", "id": call_id, "name": name, "input": dict(input or {})}


def anthropic_message(
    text: str | None = "ok",
    *,
    input_tokens: int = 10,
    output_tokens: int = 5,
    stop_reason: str | None = "end_turn",
    model: str = "claude-test",
    id: str = "msg_test",
    tool_uses: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A Messages API response body: a text block (none if ``text`` is ``None``), then
    the ``tool_uses`` blocks (pass ``stop_reason="tool_use"`` for a tool call)."""
    content: list[dict[str, Any]] = [] if text is None else [{"type": "text", "text": text}]
    content += [dict(block) for block in tool_uses]
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def anthropic_error(message: str, *, type: str = "invalid_request_error") -> dict[str, Any]:
    """A Messages API error body: ``{"type": "error", "error": {"type", "message"}}``."""
    return {"type": "error", "error": {"type": type, "message": message}}


def anthropic_stream(
    pieces: Sequence[str] = ("Hel", "lo"),
    *,
    stop_reason: str = "end_turn",
    input_tokens: int = 10,
    output_tokens: int = 5,
    model: str = "claude-test",
    id: str = "msg_test",
    tool_uses: Sequence[Mapping[str, Any]] = (),
) -> list[Chunk]:
    """Messages API stream events, ``message_start`` to ``message_stop`` (send with
    ``SSE(..., done=False)``: Anthropic streams have no ``[DONE]``). Each of
    ``tool_uses`` follows the text block as a ``tool_use`` block whose input arrives
    as two ``input_json_delta`` halves."""
    start = anthropic_message("", input_tokens=input_tokens, output_tokens=1, model=model, id=id)
    start.update(content=[], stop_reason=None)
    events = [
        Chunk({"type": "message_start", "message": start}, event="message_start"),
        Chunk(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            event="content_block_start",
        ),
        Chunk({"type": "ping"}, event="ping"),
    ]
    events += [
        Chunk(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
            event="content_block_delta",
        )
        for p in pieces
    ]
    events.append(Chunk({"type": "content_block_stop", "index": 0}, event="content_block_stop"))
    for index, block in enumerate(tool_uses, start=1):
        opened = {**block, "input": {}}
        events.append(
            Chunk(
                {"type": "content_block_start", "index": index, "content_block": opened},
                event="content_block_start",
            )
        )
        arguments = json.dumps(block["input"])
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            delta = {"type": "input_json_delta", "partial_json": part}
            events.append(
                Chunk(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    event="content_block_delta",
                )
            )
        events.append(
            Chunk({"type": "content_block_stop", "index": index}, event="content_block_stop")
        )
    events += [
        Chunk(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            event="message_delta",
        ),
        Chunk({"type": "message_stop"}, event="message_stop"),
    ]
    return events

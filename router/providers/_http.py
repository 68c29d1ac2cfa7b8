"""Machinery shared by the HTTP providers: argument checks, the deadline, httpx error
translation, HTTP status classification, Retry-After parsing and the SSE reading loop.

Nothing here knows a provider's JSON dialect; :class:`HTTPProvider` subclasses
supply the URL, headers, payload, body parser and a :class:`StreamState`.

How far an attempt got decides how a timeout is classified (see
:class:`~router.outcome.ErrorKind`): until the response headers arrive (and, when
streaming, until the first content token) a timeout is ``first_token_timeout``;
after that it is ``timeout``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, Protocol

import httpx
import orjson

from router.errors import InputError
from router.outcome import ErrorKind
from router.providers.base import (
    Completion,
    ModelProvider,
    ProviderError,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)
from router.providers.endpoint import Endpoint

#: Longest slice of a server's error body quoted in a ProviderError detail.
_SNIPPET = 300

# Error codes / types / messages by which providers say "the prompt is too long" or
# "the content was refused". Codes are matched exactly, messages by pattern, because
# OpenAI-compatible servers (vLLM, Ollama, proxies) often send only a message.
_CONTEXT_CODES = frozenset(
    {"context_length_exceeded", "string_above_max_length", "request_too_large"}
)
_CONTEXT_TEXT = re.compile(
    r"context[ _-]?(length|window)|maximum context|prompt is too long|"
    r"too many (input |prompt )?tokens|input is too long|reduce the length of the messages",
    re.I,
)
_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})
_FILTER_TEXT = re.compile(r"content[ _-]?(management[ _-])?(policy|filter)", re.I)

# Anthropic names its errors by type rather than by status alone (an "overloaded_error"
# may arrive mid-stream inside a 200 response).
_ERROR_TYPES: Mapping[str, ErrorKind] = {
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "overloaded_error": ErrorKind.SERVER_ERROR,
    "api_error": ErrorKind.SERVER_ERROR,
    "server_error": ErrorKind.SERVER_ERROR,
    "timeout_error": ErrorKind.TIMEOUT,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "not_found_error": ErrorKind.BAD_REQUEST,
    "request_too_large": ErrorKind.CONTEXT_LENGTH,
}


def read_api_key(env_name: str | None) -> str | None:
    """The key held in ``env_name`` (``None`` when the endpoint needs no key).

    Raises :class:`InputError` naming the variable — never a value — when it is
    unset or empty.
    """
    if env_name is None:
        return None
    value = os.environ.get(env_name, "")
    if not value.strip():
        raise InputError(
            f"environment variable {env_name} (the endpoint's api_key_env) is not set or "
            "empty; export the provider's API key in it"
        )
    return value.strip()


#: The chat roles :func:`check_messages` accepts (``developer`` is OpenAI's newer
#: name for ``system``).
ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant", "tool")

#: The string forms of ``tool_choice`` (OpenAI's).
TOOL_CHOICES: tuple[str, ...] = ("auto", "none", "required")


def check_messages(messages: object) -> list[dict[str, Any]]:
    """``messages`` if it is a non-empty list of OpenAI-format chat messages.

    Accepted: dicts with ``role`` one of :data:`ROLES` and ``content`` a string or a
    non-empty list of content parts (dicts with a str ``type``; a ``text`` part needs
    a str ``text``); an ``assistant`` message may instead carry a non-empty
    ``tool_calls`` list (``{"id", "type": "function", "function": {"name",
    "arguments": str}}``) with ``content`` ``None`` or absent; a ``tool`` message
    needs a str ``tool_call_id``; ``name``, if present, is a string.

    A malformed message list is the caller's bug, not the provider's failure, so it
    raises :class:`InputError` (one line naming the index and what was expected)
    rather than a ProviderError the policy would retry.
    """
    if not isinstance(messages, list) or not messages:
        raise InputError(
            "messages: expected a non-empty list of chat messages ({'role', 'content'} dicts)"
        )
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InputError(
                f"{where}: expected a dict with 'role' and 'content', got {type(message).__name__}"
            )
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InputError(f"{where}.role: expected one of {', '.join(ROLES)}; got {role!r:.40}")
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise InputError(f"{where}.name: expected a string, got {type(name).__name__}")
        content = message.get("content")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            if role != "assistant":
                raise InputError(f"{where}: only assistant messages carry 'tool_calls'")
            _check_tool_calls(where, tool_calls)
            if content is not None:
                _check_content(where, content)
            continue
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InputError(f"{where}: a tool message needs a non-empty str 'tool_call_id'")
        _check_content(where, content)
    return messages


def _check_content(where: str, content: object) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        raise InputError(
            f"{where}.content: expected a string or a non-empty list of content parts, "
            f"got {_shown(content)}"
        )
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InputError(f"{where}.content[{j}]: expected a dict with a str 'type'")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise InputError(f"{where}.content[{j}]: a text part needs a str 'text'")


def _check_tool_calls(where: str, calls: object) -> None:
    if not isinstance(calls, list) or not calls:
        raise InputError(f"{where}.tool_calls: expected a non-empty list, got {_shown(calls)}")
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            raise InputError(f"{at}: expected a dict with 'id', 'type' and 'function'")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise InputError(f"{at}.id: expected a non-empty string")
        if call.get("type", "function") != "function":
            raise InputError(f"{at}.type: expected 'function', got {call.get('type')!r:.40}")
        function = call.get("function")
        if not (
            isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and function["name"]
            and isinstance(function.get("arguments"), str)
        ):
            raise InputError(
                f"{at}.function: expected a dict with a non-empty str 'name' and str "
                "'arguments' (JSON text)"
            )


def check_tools(tools: object) -> list[dict[str, Any]] | None:
    """``tools`` if it is ``None`` or a list of OpenAI function tool definitions.

    Each is ``{"type": "function", "function": {"name": str, "description"?: str,
    "parameters"?: dict}}`` (a JSON Schema in ``parameters``); else
    :class:`InputError` naming the index.
    """
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InputError(f"tools: expected a list of tool definitions, got {_shown(tools)}")
    for j, tool in enumerate(tools):
        where = f"tools[{j}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise InputError(f"{where}: expected {{'type': 'function', 'function': {{...}}}}")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InputError(f"{where}.function: expected a dict with a str 'name'")
        if not isinstance(function.get("description", ""), str):
            raise InputError(f"{where}.function.description: expected a string")
        if not isinstance(function.get("parameters", {}), dict):
            raise InputError(f"{where}.function.parameters: expected a JSON Schema object")
    return tools


def check_tool_choice(tool_choice: object) -> str | dict[str, Any] | None:
    """``tool_choice`` if it is ``None``, one of :data:`TOOL_CHOICES` or a dict with a
    str ``type`` (OpenAI's ``{"type": "function", "function": {"name"}}``); else
    :class:`InputError`."""
    if tool_choice is None or (isinstance(tool_choice, str) and tool_choice in TOOL_CHOICES):
        return tool_choice
    if isinstance(tool_choice, dict) and isinstance(tool_choice.get("type"), str):
        return tool_choice
    raise InputError(
        f"tool_choice: expected one of {', '.join(TOOL_CHOICES)} or a dict with a 'type', "
        f"got {_shown(tool_choice)}"
    )


def _shown(value: object) -> str:
    """A short description of a rejected value for a one-line error."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return f"{value!r:.40}"
    return type(value).__name__


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be delay-seconds or an HTTP date (RFC 9110 §10.2.3); a date
    in the past means 0. Unparseable or negative values give ``None`` (no advice)
    rather than an error: the status alone already classifies the failure.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    raw = lowered.get("retry-after")
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 850 / asctime forms carry no zone: they mean GMT
            when = when.replace(tzinfo=UTC)
        delta = (when - (now or datetime.now(UTC))).total_seconds()
        return max(0.0, delta)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class ErrorFields:
    """What a provider's error body says, whatever its dialect."""

    message: str
    code: str | None
    type: str | None


def error_fields(body: object) -> ErrorFields | None:
    """Read ``{"error": {"message", "code", "type"}}`` (OpenAI and Anthropic shapes),
    ``{"error": "text"}`` or ``{"message": ...}``; ``None`` if the body is none of these."""
    if not isinstance(body, dict):
        return None
    err = body.get("error", body if "message" in body else None)
    if isinstance(err, str):
        return ErrorFields(err, None, None)
    if not isinstance(err, dict):
        return None
    message = err.get("message")
    code = err.get("code")
    etype = err.get("type")
    return ErrorFields(
        message if isinstance(message, str) else json.dumps(err)[:_SNIPPET],
        str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None,
        etype if isinstance(etype, str) else None,
    )


def kind_for_error(fields: ErrorFields | None, status: int | None) -> ErrorKind:
    """Classify a failure from its HTTP status and the error body's code/type/message.

    The status decides first where it is unambiguous (429, 401/403, 5xx); a 4xx is
    then refined into context_length / content_filter by code or message. Without
    a status (an error event inside a stream) the error type decides, defaulting to
    server_error: the provider failed after accepting the request.
    """
    code = (fields.code or "").lower() if fields else ""
    etype = (fields.type or "").lower() if fields else ""
    message = fields.message if fields else ""
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 408:
        return ErrorKind.TIMEOUT
    if status is not None and status >= 500:
        return ErrorKind.SERVER_ERROR
    if code in _FILTER_CODES or etype in _FILTER_CODES or _FILTER_TEXT.search(message):
        return ErrorKind.CONTENT_FILTER
    if (
        status == 413
        or code in _CONTEXT_CODES
        or etype in _CONTEXT_CODES
        or _CONTEXT_TEXT.search(message)
    ):
        return ErrorKind.CONTEXT_LENGTH
    if status is not None:
        # Any other status (400, 404, 422, a 3xx we do not follow): the request as
        # configured is wrong, and resending it cannot help.
        return ErrorKind.BAD_REQUEST
    by_type = _ERROR_TYPES.get(etype) or _ERROR_TYPES.get(code)
    return by_type or ErrorKind.SERVER_ERROR


def json_or_none(raw: bytes | str) -> Any:
    """The decoded JSON (strict: NaN and Infinity literals are not JSON), or the
    sentinel :data:`NOT_JSON`."""
    try:
        return orjson.loads(raw)  # a provider answer is parsed on every call: orjson's speed
    except (ValueError, UnicodeDecodeError):
        return NOT_JSON


NOT_JSON: Any = object()


def body_snippet(raw: bytes) -> str:
    text = raw[: _SNIPPET * 4].decode("utf-8", errors="replace")
    return text[:_SNIPPET] + ("…" if len(raw) > _SNIPPET else "")


def usage_int(usage: Mapping[str, Any], key: str) -> int:
    """A non-negative int token count from a usage block (missing: 0); else malformed."""
    value = usage.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Malformed(f"usage.{key}: expected a non-negative integer, got {value!r:.40}")
    return value


class _Malformed(Exception):
    """Raised by body parsers; turned into ProviderError(malformed) with context."""


class Parsed:
    """What a body parser extracted: text, usage, reported model, finish reason, and
    the answer's id and tool calls (OpenAI format) when it had them."""

    __slots__ = (
        "text",
        "prompt_tokens",
        "completion_tokens",
        "model",
        "finish_reason",
        "request_id",
        "tool_calls",
    )

    def __init__(
        self,
        text: str,
        prompt_tokens: int,
        completion_tokens: int,
        model: str | None,
        finish_reason: str | None,
        request_id: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        self.text = text
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.model = model
        self.finish_reason = finish_reason
        self.request_id = request_id
        self.tool_calls = tool_calls


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """One tool call in OpenAI format (what :attr:`Completion.tool_calls` holds)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def str_or_none(value: object) -> str | None:
    """``value`` if it is a non-empty string, else ``None`` (ids, model names)."""
    return value if isinstance(value, str) and value else None


class Progress:
    """How far one attempt got; decides ``first_token_timeout`` vs ``timeout``.

    ``answering`` turns true when the answer has started: at the response headers of
    a plain request, at the first content token (text or tool call) of a stream.
    ``first_token_at`` is the ``perf_counter`` time of that token (streams only).
    One per attempt: a provider serves concurrent attempts.
    """

    __slots__ = ("answering", "first_token_at")

    def __init__(self) -> None:
        self.answering = False
        self.first_token_at: float | None = None


class StreamState(ABC):
    """Accumulates one SSE stream. :meth:`feed` gets each event; it raises
    :class:`ProviderError` for an error event or a refusal, and ``_Malformed`` for
    a chunk of the wrong shape."""

    #: The terminator arrived (``[DONE]`` / ``message_stop``): stop reading.
    finished: bool = False
    #: A finish/stop reason arrived: a clean end of stream after it is a success.
    ended: bool = False
    #: At least one content token (text or the start of a tool call) arrived, or the
    #: answer ended empty: ends the first-token clock.
    got_token: bool = False
    #: When a list (set by :meth:`HTTPProvider.stream`), :meth:`feed` appends the
    #: :class:`~router.providers.base.TextDelta` / ``ToolCallDelta`` events each chunk
    #: carries; the reader hands them on and clears it. ``None``: nothing is kept.
    deltas: list[StreamEvent] | None = None

    @abstractmethod
    def feed(self, event: str | None, data: str) -> None:
        """Take one SSE event (its ``event:`` name, if any, and its joined ``data``)."""

    @abstractmethod
    def result(self) -> Parsed:
        """The accumulated answer; called only when finished or ended."""

    @property
    @abstractmethod
    def chars(self) -> int:
        """Characters of text received so far (for failure details)."""


async def sse_events(
    lines: AsyncIterator[str],
) -> AsyncGenerator[tuple[str | None, str], None]:
    """Group SSE lines into ``(event, data)`` pairs (WHATWG event-stream rules, minus
    ``id``/``retry``, which a one-shot completion does not need)."""
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue  # a comment: keep-alive ping
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
    if data:  # a last event without its blank line: still an event
        yield event, "\n".join(data)


class _LazyCookies(httpx.Cookies):
    """``httpx.Cookies`` that skips cookie extraction for a response setting no cookie.

    httpx wraps every response and its request in urllib shims for
    ``CookieJar.extract_cookies`` (tens of µs per call), which for a response without
    ``Set-Cookie``/``Set-Cookie2`` finds nothing to store. Skipping it then changes
    nothing; responses that do set cookies are handled exactly as by httpx. Installed
    only on the clients providers own.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class _Response(Protocol):
    """What the provider reads of a response: an ``httpx.Response``, or the direct
    line's response (:class:`~router.providers.aiohttp_transport.LineResponse`).
    Failures while reading raise httpx's exceptions either way."""

    status_code: int
    headers: Mapping[str, str]

    async def aread(self) -> bytes: ...

    def aiter_lines(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


def _json_bytes(payload: dict[str, Any]) -> bytes:
    """A JSON body exactly as httpx's ``json=`` encodes it (compact, UTF-8)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class HTTPProvider(ModelProvider):
    """A provider speaking JSON over HTTP through an ``httpx.AsyncClient``.

    Pass ``client`` to share a pool (it is not closed by :meth:`aclose`) or
    ``transport`` (e.g. ``httpx.MockTransport``) to build an owned client over it;
    by default an owned client with httpx's own transport is made.

    Every request is sent with ``stream=True`` and its body read afterwards, so that
    the endpoint's ``first_token_timeout_s`` bounds the wait for the response headers
    of a plain (non-streamed) request too: a server that accepts the request and
    never answers costs one first-token timeout, not the whole attempt deadline.
    """

    _kind: str  # the Endpoint.kind this class implements
    #: The response header carrying the provider's request id (used when the body
    #: has no id of its own).
    _request_id_header: str = "x-request-id"

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if endpoint.kind != self._kind:
            raise InputError(
                f"{type(self).__name__}: endpoint.kind must be {self._kind!r}, got "
                f"{endpoint.kind!r}"
            )
        if client is not None and transport is not None:
            raise InputError(f"{type(self).__name__}: pass client or transport, not both")
        self.endpoint = endpoint
        self._api_key = read_api_key(endpoint.api_key_env)
        self._secrets: tuple[str, ...] = (self._api_key,) if self._api_key else ()
        self._owns_client = client is None
        # Built once: parsing the URL and making the Timeout on every call is measurable
        # per-call overhead, and neither changes for the provider's lifetime.
        self._timeout = self._timeouts()
        if client is None:
            client = httpx.AsyncClient(transport=transport, timeout=self._timeout)
            if isinstance(getattr(client, "_cookies", None), httpx.Cookies):
                client._cookies = _LazyCookies(client._cookies.jar)
        self._client = client
        try:
            url = httpx.URL(self._url())
        except httpx.InvalidURL as exc:
            raise InputError(f"base_url: not a valid URL ({exc})") from exc
        self._request_url = url
        # A transport that offers a direct line gets requests without httpx's objects.
        make_line = getattr(transport, "line", None) if self._owns_client else None
        self._line: Any = (
            make_line(str(url), endpoint.connect_timeout_s, endpoint.read_timeout_s)
            if make_line is not None
            else None
        )
        # Shown in failure details: netloc drops userinfo, and no query string (either
        # may hold a secret).
        self._where = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{url.path}"

    # -- subclass hooks -------------------------------------------------------------

    @abstractmethod
    def _url(self) -> str:
        """The absolute URL of the completion call."""

    @abstractmethod
    def _headers(self) -> dict[str, str]:
        """Request headers, credentials included."""

    @abstractmethod
    def _payload(
        self,
        messages: list[dict[str, Any]],
        stream: bool,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The JSON request body for checked arguments; may raise :class:`InputError`
        for what the dialect cannot express (it runs before any I/O)."""

    @abstractmethod
    def _parse(self, body: Any) -> Parsed:
        """A 2xx JSON body -> Parsed; raise ProviderError or ``_Malformed``."""

    @abstractmethod
    def _stream_state(self) -> StreamState:
        """A fresh accumulator for one stream."""

    # -- the contract ----------------------------------------------------------------

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        timeout_s: float,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> Completion:
        """One attempt within ``timeout_s`` seconds; see :class:`ModelProvider`."""
        check_messages(messages)
        check_tools(tools)
        check_tool_choice(tool_choice)
        if not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise InputError(f"timeout_s: expected a positive number of seconds, got {timeout_s!r}")
        stream = self.endpoint.stream
        payload = self._payload(messages, stream, tools, tool_choice)
        progress = Progress()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                if stream:
                    parsed = await self._attempt_stream(payload, progress)
                else:
                    parsed = await self._attempt_once(payload, progress)
        except TimeoutError as exc:
            if progress.answering:
                raise self._error(
                    ErrorKind.TIMEOUT,
                    f"the answer from {self._where} started but was not complete within the "
                    f"attempt's {timeout_s:g} s",
                ) from exc
            awaited = "first token" if stream else "response headers"
            raise self._error(
                ErrorKind.FIRST_TOKEN_TIMEOUT,
                f"no {awaited} from {self._where} within the attempt's {timeout_s:g} s",
            ) from exc
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise self._translate(exc, progress) from exc
        first = progress.first_token_at
        return Completion(
            text=parsed.text,
            prompt_tokens=parsed.prompt_tokens,
            completion_tokens=parsed.completion_tokens,
            model=parsed.model or self.endpoint.model,
            latency_s=time.perf_counter() - started,
            raw_finish_reason=parsed.finish_reason,
            request_id=parsed.request_id,
            tool_calls=parsed.tool_calls,
            ttft_s=None if first is None else first - started,
        )

    async def aclose(self) -> None:
        """Close the owned client (idempotent); a client passed in stays open."""
        if self._owns_client:
            await self._client.aclose()

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        timeout_s: float,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """One attempt streamed from the wire, whatever ``endpoint.stream``; see
        :meth:`ModelProvider.stream`.

        The attempt's deadline is absolute (loop time), checked around every network
        wait rather than by one ``asyncio.timeout`` around the whole generator: such a
        scope would span the ``yield``s and fire inside the caller's code.
        """
        check_messages(messages)
        check_tools(tools)
        check_tool_choice(tool_choice)
        if not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise InputError(f"timeout_s: expected a positive number of seconds, got {timeout_s!r}")
        e = self.endpoint
        payload = self._payload(messages, True, tools, tool_choice)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        deadline = loop.time() + timeout_s
        first_deadline = loop.time() + e.first_token_timeout_s if e.first_token_timeout_s else None
        progress = Progress()
        state = self._stream_state()
        state.deltas = deltas = []
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    response = await self._post(payload, True, first_deadline)
            except TimeoutError as exc:
                raise self._error(
                    ErrorKind.FIRST_TOKEN_TIMEOUT,
                    f"no response headers from {self._where} within the attempt's {timeout_s:g} s",
                ) from exc
            try:
                if not 200 <= response.status_code < 300:
                    progress.answering = True
                    body = await self._read_within(response, deadline, timeout_s)
                    self._raise_for_status(response.status_code, response.headers, body)
                content_type = response.headers.get("content-type", "")
                if "json" in content_type and "event-stream" not in content_type:
                    # A server that ignores "stream": true answers with one JSON body.
                    progress.answering = True
                    raw = await self._read_within(response, deadline, timeout_s)
                    parsed = self._parse_body(response.status_code, raw)
                    if parsed.text:
                        yield TextDelta(parsed.text)
                    for i, call in enumerate(parsed.tool_calls or ()):
                        function = call["function"]
                        yield ToolCallDelta(i, call["id"], function["name"], function["arguments"])
                else:
                    events = self._stream_events(
                        response, first_deadline, progress, state, deadline, timeout_s
                    )
                    try:
                        async for _ in events:
                            if deltas:
                                for delta in deltas:
                                    yield delta
                                deltas.clear()
                    finally:
                        await events.aclose()
                    parsed = self._stream_result(state)
                parsed = self._with_request_id(parsed, response)
            finally:
                await response.aclose()
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise self._translate(exc, progress) from exc
        first = progress.first_token_at
        yield StreamEnd(
            Completion(
                text=parsed.text,
                prompt_tokens=parsed.prompt_tokens,
                completion_tokens=parsed.completion_tokens,
                model=parsed.model or e.model,
                latency_s=time.perf_counter() - started,
                raw_finish_reason=parsed.finish_reason,
                request_id=parsed.request_id,
                tool_calls=parsed.tool_calls,
                ttft_s=None if first is None else first - started,
            )
        )

    async def _read_within(self, response: _Response, deadline: float, timeout_s: float) -> bytes:
        """The rest of a body, read before loop time ``deadline`` (after the headers)."""
        try:
            async with asyncio.timeout_at(deadline):
                return await response.aread()
        except TimeoutError as exc:
            raise self._error(
                ErrorKind.TIMEOUT,
                f"the answer from {self._where} started but was not complete within the "
                f"attempt's {timeout_s:g} s",
            ) from exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.endpoint.model!r}, url={self._where!r})"

    # -- one plain request -------------------------------------------------------------

    async def _attempt_once(self, payload: dict[str, Any], progress: Progress) -> Parsed:
        e = self.endpoint
        first_deadline = (
            asyncio.get_running_loop().time() + e.first_token_timeout_s
            if e.first_token_timeout_s
            else None
        )
        response = await self._post(payload, False, first_deadline)
        progress.answering = True
        try:
            raw = await response.aread()
        finally:
            await response.aclose()
        if not 200 <= response.status_code < 300:
            self._raise_for_status(response.status_code, response.headers, raw)
        return self._with_request_id(self._parse_body(response.status_code, raw), response)

    async def _post(
        self, payload: dict[str, Any], sse: bool, first_deadline: float | None
    ) -> _Response:
        """POST ``payload``; return once the response headers are in (body unread).

        Over a transport that offers a direct line (``transport.line``, as
        :class:`~router.providers.aiohttp_transport.AiohttpTransport` does) the request
        skips httpx's client and response objects: the same bytes on the wire, the
        same httpx exceptions on failure, a third of the CPU per call. Otherwise it
        goes through the httpx client. ``first_deadline`` (loop time) bounds the wait
        for the headers: past it the attempt fails with ``first_token_timeout``.
        """
        headers = self._headers()
        if sse:
            headers = {**headers, "Accept": "text/event-stream"}
        line = self._line
        if line is not None:
            sending = line.post(_json_bytes(payload), headers)
        else:
            request = self._client.build_request(
                "POST", self._request_url, json=payload, headers=headers, timeout=self._timeout
            )
            sending = self._client.send(request, stream=True)
        if first_deadline is None:
            return await sending
        try:
            async with asyncio.timeout_at(first_deadline):
                return await sending
        except TimeoutError as exc:
            raise self._error(
                ErrorKind.FIRST_TOKEN_TIMEOUT,
                f"no response headers from {self._where} within the first-token timeout "
                f"({self.endpoint.first_token_timeout_s:g} s)",
            ) from exc

    def _with_request_id(self, parsed: Parsed, response: _Response) -> Parsed:
        if parsed.request_id is None:
            parsed.request_id = str_or_none(response.headers.get(self._request_id_header))
        return parsed

    def _parse_body(self, status: int, raw: bytes) -> Parsed:
        body = json_or_none(raw)
        if body is NOT_JSON:
            raise self._error(
                ErrorKind.MALFORMED,
                f"HTTP {status} from {self._where} is not JSON: {body_snippet(raw)}",
                status=status,
            )
        try:
            return self._parse(body)
        except _Malformed as exc:
            raise self._error(
                ErrorKind.MALFORMED,
                f"unexpected response shape from {self._where}: {exc}",
                status=status,
            ) from exc

    # -- one streamed request ------------------------------------------------------------

    async def _attempt_stream(self, payload: dict[str, Any], progress: Progress) -> Parsed:
        e = self.endpoint
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + e.first_token_timeout_s if e.first_token_timeout_s else None
        response = await self._post(payload, True, first_deadline)
        try:
            if not 200 <= response.status_code < 300:
                progress.answering = True  # an error answer: only its body is left to read
                body = await response.aread()
                self._raise_for_status(response.status_code, response.headers, body)
            content_type = response.headers.get("content-type", "")
            if "json" in content_type and "event-stream" not in content_type:
                # A server that ignores "stream": true answers with one JSON body.
                progress.answering = True
                parsed = self._parse_body(response.status_code, await response.aread())
            else:
                parsed = await self._read_stream(response, first_deadline, progress)
            return self._with_request_id(parsed, response)
        finally:
            # Closing mid-body drops the connection instead of draining it: a stalled
            # or abandoned stream must not keep a pooled connection busy.
            await response.aclose()

    async def _read_stream(
        self, response: _Response, first_deadline: float | None, progress: Progress
    ) -> Parsed:
        state = self._stream_state()
        events = self._stream_events(response, first_deadline, progress, state)
        try:
            async for _ in events:
                pass
        finally:
            await events.aclose()
        return self._stream_result(state)

    def _stream_result(self, state: StreamState) -> Parsed:
        """The answer of a stream that ended (finished or ended)."""
        try:
            return state.result()
        except _Malformed as exc:
            raise self._error(ErrorKind.MALFORMED, f"stream from {self._where}: {exc}") from exc

    async def _stream_events(
        self,
        response: _Response,
        first_deadline: float | None,
        progress: Progress,
        state: StreamState,
        deadline: float | None = None,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[None, None]:
        """Feed ``state`` the response's SSE events, yielding after each one, until the
        terminator; raise ProviderError for a stall, a late first token, a cut or a
        stream that ends without its terminator.

        ``deadline`` (loop time) is the whole attempt's, for callers that cannot wrap
        the reading in one ``asyncio.timeout`` (a stream handed out as it arrives).
        """
        e = self.endpoint
        loop = asyncio.get_running_loop()
        lines = response.aiter_lines()
        last_line_at = loop.time()
        events = 0

        def next_limit() -> tuple[float | None, ErrorKind, str]:
            # Before the first token only the first-token deadline applies (a model may
            # think silently for a while); without one, the stall timeout covers that
            # gap too -- still a first-token timeout, as no content has come. After the
            # first token each gap between lines is a stall.
            limit: float | None = None
            kind, why = ErrorKind.TIMEOUT, ""
            if not state.got_token and first_deadline is not None:
                limit, kind, why = (
                    first_deadline,
                    ErrorKind.FIRST_TOKEN_TIMEOUT,
                    f"no first token from {self._where} within {e.first_token_timeout_s:g} s",
                )
            elif e.stall_timeout_s is not None:
                limit = last_line_at + e.stall_timeout_s
                kind = ErrorKind.TIMEOUT if state.got_token else ErrorKind.FIRST_TOKEN_TIMEOUT
                why = (
                    f"stream from {self._where} stalled for more than {e.stall_timeout_s:g} s "
                    f"after {events} events ({state.chars} chars); partial answer discarded"
                )
            if deadline is not None and (limit is None or deadline < limit):
                limit = deadline
                if state.got_token:
                    kind = ErrorKind.TIMEOUT
                    why = (
                        f"the answer from {self._where} started but was not complete within "
                        f"the attempt's {timeout_s:g} s"
                    )
                else:
                    kind = ErrorKind.FIRST_TOKEN_TIMEOUT
                    why = f"no first token from {self._where} within the attempt's {timeout_s:g} s"
            return limit, kind, why

        async def timed_lines() -> AsyncGenerator[str, None]:
            nonlocal last_line_at
            while True:
                limit, kind, why = next_limit()
                try:
                    async with asyncio.timeout_at(limit):
                        line = await anext(lines)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise self._error(kind, why) from exc
                last_line_at = loop.time()
                yield line

        timed = timed_lines()
        grouped = sse_events(timed)
        try:
            async for event, data in grouped:
                events += 1
                try:
                    state.feed(event, data)
                except _Malformed as exc:
                    raise self._error(
                        ErrorKind.MALFORMED,
                        f"malformed stream event #{events} from {self._where}: {exc}",
                    ) from exc
                if state.got_token and not progress.answering:
                    progress.answering = True
                    progress.first_token_at = time.perf_counter()
                yield
                if state.finished:
                    break
        except (httpx.HTTPError, OSError) as exc:
            failure = self._translate(exc, progress)
            raise self._error(
                failure.kind,
                f"stream from {self._where} cut after {events} events ({state.chars} chars), "
                f"partial answer discarded: {failure.detail}",
            ) from exc
        finally:
            # Close the generator chain now (innermost last) rather than leaving it to
            # the garbage collector after the response is gone.
            await grouped.aclose()
            await timed.aclose()
            close_lines = getattr(lines, "aclose", None)  # typed as a plain AsyncIterator
            if close_lines is not None:
                await close_lines()
        if not (state.finished or state.ended):
            raise self._error(
                ErrorKind.CONNECTION,
                f"stream from {self._where} ended without its terminator after {events} "
                f"events ({state.chars} chars); partial answer discarded",
            )

    # -- errors --------------------------------------------------------------------------

    def _timeouts(self) -> httpx.Timeout:
        e = self.endpoint
        # pool=None: waiting for a free pooled connection is our own contention, not
        # the provider's failure; the attempt's overall deadline still bounds it.
        return httpx.Timeout(
            connect=e.connect_timeout_s, read=e.read_timeout_s, write=e.read_timeout_s, pool=None
        )

    def _error(
        self,
        kind: ErrorKind,
        detail: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> ProviderError:
        return ProviderError(
            kind, detail, status=status, retry_after_s=retry_after_s, secrets=self._secrets
        )

    def _raise_for_status(self, status: int, headers: Mapping[str, str], raw: bytes) -> NoReturn:
        body = json_or_none(raw)
        fields = error_fields(body) if body is not NOT_JSON else None
        kind = kind_for_error(fields, status)
        retry = parse_retry_after(headers) if status in (429, 503, 529) else None
        said = fields.message if fields else body_snippet(raw)
        code = (fields.code or fields.type) if fields else None
        detail = f"HTTP {status} from {self._where}" + (f" [{code}]" if code else "")
        raise self._error(kind, f"{detail}: {said[:_SNIPPET]}", status=status, retry_after_s=retry)

    def _raise_error_event(self, body: object) -> NoReturn:
        """An error reported inside a 2xx body or a stream event."""
        fields = error_fields(body)
        kind = kind_for_error(fields, None)
        said = fields.message if fields else str(body)[:_SNIPPET]
        raise self._error(kind, f"error event from {self._where}: {said[:_SNIPPET]}")

    def _translate(self, exc: BaseException, progress: Progress) -> ProviderError:
        """An httpx / socket exception -> ProviderError (the caller chains ``from exc``)."""
        name = type(exc).__name__
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.ProxyError):
            kind = ErrorKind.CONNECT  # refused, DNS failure, TLS handshake, connect timeout
        elif isinstance(exc, httpx.TimeoutException):
            # A read/write/pool timeout: classified by how far the answer got.
            kind = ErrorKind.TIMEOUT if progress.answering else ErrorKind.FIRST_TOKEN_TIMEOUT
        elif isinstance(exc, httpx.DecodingError):
            kind = ErrorKind.MALFORMED
        elif isinstance(
            exc,
            httpx.UnsupportedProtocol
            | httpx.LocalProtocolError
            | httpx.TooManyRedirects
            | httpx.InvalidURL,
        ):
            kind = ErrorKind.BAD_REQUEST  # our request or config is wrong
        elif isinstance(exc, ConnectionRefusedError | socket.gaierror):
            kind = ErrorKind.CONNECT  # raw socket errors from a custom transport
        else:
            # ReadError, WriteError, RemoteProtocolError (reset, body cut short,
            # incomplete chunked encoding, disconnected without a response), raw OSError.
            kind = ErrorKind.CONNECTION
        return self._error(kind, f"{name} calling {self._where}: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    """The first non-empty message down the exception's cause chain.

    httpx's ReadError for a reset connection has an empty message; the socket error
    it wraps (several layers down, through httpcore and anyio) names the reset.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if str(seen):
            return str(seen) if seen is exc else f"{type(seen).__name__}: {seen}"
        seen = seen.__cause__ or seen.__context__
    return "no detail"

"""Delegate the call to LiteLLM (optional extra: ``pip install 'costroute[litellm]'``).

LiteLLM speaks to a hundred providers; this adapter holds it to the
:class:`~router.providers.base.ModelProvider` contract: one attempt (LiteLLM's own
retries are turned off), the caller's deadline, and its exceptions translated into
:class:`~router.providers.base.ProviderError` by class name, so this module never
imports LiteLLM at import time and does not depend on its exception module layout.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from router.errors import InputError
from router.outcome import ErrorKind
from router.providers._http import (
    ErrorFields,
    Parsed,
    Progress,
    check_messages,
    check_tool_choice,
    check_tools,
    kind_for_error,
    parse_retry_after,
    read_api_key,
    str_or_none,
    tool_call,
)
from router.providers.base import Completion, ModelProvider, ProviderError
from router.providers.endpoint import Endpoint

#: LiteLLM exception class name -> kind. Looked up along the exception's MRO, most
#: specific class first, so ContextWindowExceededError (a BadRequestError) wins.
LITELLM_ERROR_KINDS: Mapping[str, ErrorKind] = {
    "ContextWindowExceededError": ErrorKind.CONTEXT_LENGTH,
    "ContentPolicyViolationError": ErrorKind.CONTENT_FILTER,
    "RateLimitError": ErrorKind.RATE_LIMITED,
    "Timeout": ErrorKind.TIMEOUT,
    "APITimeoutError": ErrorKind.TIMEOUT,
    "AuthenticationError": ErrorKind.AUTH,
    "PermissionDeniedError": ErrorKind.AUTH,
    "ServiceUnavailableError": ErrorKind.SERVER_ERROR,
    "InternalServerError": ErrorKind.SERVER_ERROR,
    "BadGatewayError": ErrorKind.SERVER_ERROR,
    "APIConnectionError": ErrorKind.CONNECTION,
    "BadRequestError": ErrorKind.BAD_REQUEST,
    "NotFoundError": ErrorKind.BAD_REQUEST,
    "UnprocessableEntityError": ErrorKind.BAD_REQUEST,
    "UnsupportedParamsError": ErrorKind.BAD_REQUEST,
    "JSONSchemaValidationError": ErrorKind.MALFORMED,
    "APIResponseValidationError": ErrorKind.MALFORMED,
    "APIError": ErrorKind.SERVER_ERROR,
}

# LiteLLM re-labels transport failures (a refused connection arrives as an
# InternalServerError with status 500), but keeps the original exception in the
# chain (__cause__/__context__): the OpenAI SDK's error, then httpx's or aiohttp's,
# then the socket's. These class names, found anywhere in that chain, decide first.
_CONNECT_MARKERS = frozenset(
    {
        "ConnectError",  # httpx / httpcore: refused, DNS failure, TLS handshake
        "ConnectTimeout",  # httpx / httpcore
        "ClientConnectorError",  # aiohttp (its DNS error is a subclass)
        "ConnectionTimeoutError",  # aiohttp's connect timeout
        "ConnectionRefusedError",
        "gaierror",  # socket: name resolution
    }
)
_TIMEOUT_MARKERS = frozenset(
    {"Timeout", "APITimeoutError", "TimeoutException", "SocketTimeoutError", "TimeoutError"}
)
# An established connection failed (not a status the server sent).
_CONNECTION_MARKERS = frozenset(
    {
        "APIConnectionError",
        "ReadError",
        "WriteError",
        "RemoteProtocolError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "ConnectionResetError",
    }
)

_INSTALL_HINT = (
    "LiteLLMProvider needs the optional litellm package: pip install 'costroute[litellm]'"
)


class LiteLLMProvider(ModelProvider):
    """A provider that calls ``litellm.acompletion``.

    ``endpoint.model`` is LiteLLM's model string (``"openai/gpt-4o-mini"``,
    ``"bedrock/…"``); ``base_url`` (if not empty) is passed as ``api_base`` and the
    key from ``api_key_env`` as ``api_key`` (``None``: LiteLLM's own environment
    lookup). Raises :class:`~router.errors.InputError` with an install hint when
    LiteLLM is not installed, and when ``api_key_env`` names an unset variable.
    ``messages``, ``tools`` and ``tool_choice`` are passed in OpenAI format (LiteLLM
    maps them per provider); the answer's tool calls come back in OpenAI format,
    its ``id`` as ``request_id``.

    Exceptions are classified along their cause chain first -- LiteLLM re-labels
    transport failures but keeps the original: a connect failure (httpx/aiohttp
    connect errors, refused, DNS) -> ``connect``; a timeout -> ``first_token_timeout``
    before the answer started and ``timeout`` after (LiteLLM does not say whether
    headers had arrived, so a non-streamed call's timeout counts as "nothing came
    back"; a streamed one's is placed by whether a content chunk had arrived); an
    established connection failing -> ``connection``. Otherwise by class name through
    :data:`LITELLM_ERROR_KINDS`, and an exception with only an HTTP ``status_code`` is
    classified like an HTTP provider's status.

    Timeouts: ``first_token_timeout_s`` bounds a non-streamed call as a whole
    (LiteLLM exposes no moment at which headers arrive, and a non-streamed answer's
    body follows its headers at once) and a streamed call up to its first content
    chunk; ``stall_timeout_s`` the gap between chunks after that.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        if endpoint.kind != "litellm":
            raise InputError(
                f"LiteLLMProvider: endpoint.kind must be 'litellm', got {endpoint.kind!r}"
            )
        try:
            import litellm  # optional extra: imported only when this provider is used
        except ImportError as exc:
            raise InputError(_INSTALL_HINT) from exc
        self._litellm: Any = litellm
        self.endpoint = endpoint
        self._api_key = read_api_key(endpoint.api_key_env)
        self._secrets: tuple[str, ...] = (self._api_key,) if self._api_key else ()

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
        e = self.endpoint
        kwargs: dict[str, Any] = {
            "model": e.model,
            "messages": messages,
            "timeout": e.read_timeout_s or timeout_s,
            "num_retries": 0,  # one call is one attempt; the policy retries
        }
        if e.base_url:
            kwargs["api_base"] = e.base_url
        if self._api_key:
            kwargs["api_key"] = self._api_key
        if e.max_tokens is not None:
            kwargs["max_tokens"] = e.max_tokens
        if e.temperature is not None:
            kwargs["temperature"] = e.temperature
        if tools is not None:
            kwargs["tools"] = tools
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        progress = Progress()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                if e.stream:
                    answer = await self._stream(kwargs, progress)
                else:
                    answer = self._parse(await self._first_answer(kwargs, stream=False))
        except TimeoutError as exc:
            if progress.answering:
                raise self._error(
                    ErrorKind.TIMEOUT,
                    f"the answer started but was not complete within the attempt's {timeout_s:g} s",
                ) from exc
            raise self._error(
                ErrorKind.FIRST_TOKEN_TIMEOUT,
                f"nothing came back within the attempt's {timeout_s:g} s",
            ) from exc
        except (ProviderError, InputError):
            raise
        except Exception as exc:
            translated = self._translate(exc, progress)
            if translated is None:
                raise  # not a provider failure: a bug should surface as itself
            raise translated from exc
        first = progress.first_token_at
        return Completion(
            text=answer.text,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            model=answer.model or e.model,
            latency_s=time.perf_counter() - started,
            raw_finish_reason=answer.finish_reason,
            request_id=answer.request_id,
            tool_calls=answer.tool_calls,
            ttft_s=None if first is None else first - started,
        )

    async def aclose(self) -> None:
        """Nothing to release: LiteLLM owns its clients."""

    def __repr__(self) -> str:
        return f"LiteLLMProvider(model={self.endpoint.model!r})"

    # -- internals -------------------------------------------------------------------

    async def _first_answer(self, kwargs: dict[str, Any], *, stream: bool) -> Any:
        """``acompletion`` bounded by the endpoint's first-token timeout (if any).

        Non-streamed, that is the whole answer; streamed, the stream object (LiteLLM
        returns it once the response headers are in).
        """
        e = self.endpoint
        extra: dict[str, Any] = (
            {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        )
        if e.first_token_timeout_s is None:
            return await self._litellm.acompletion(**kwargs, **extra)
        try:
            async with asyncio.timeout(e.first_token_timeout_s):
                return await self._litellm.acompletion(**kwargs, **extra)
        except TimeoutError as exc:
            awaited = "response headers" if stream else "answer"
            raise self._error(
                ErrorKind.FIRST_TOKEN_TIMEOUT,
                f"no {awaited} within the first-token timeout ({e.first_token_timeout_s:g} s)",
            ) from exc

    def _parse(self, response: Any) -> Parsed:
        try:
            choice = _get(response, "choices")[0]
            finish = _get(choice, "finish_reason")
            message = _get(choice, "message")
            content = _get(message, "content")
            calls = _tool_calls(_get(message, "tool_calls", None))
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise self._error(ErrorKind.MALFORMED, f"unexpected LiteLLM response: {exc}") from exc
        if finish == "content_filter":
            raise self._error(ErrorKind.CONTENT_FILTER, "finish_reason 'content_filter'")
        if content is None and calls:
            content = ""  # an answer that is only tool calls
        if not isinstance(content, str):
            raise self._error(
                ErrorKind.MALFORMED,
                f"message.content: expected a string, got {type(content).__name__}",
            )
        prompt, completion = _usage(_get(response, "usage", None))
        return Parsed(
            content,
            prompt,
            completion,
            str_or_none(_get(response, "model", None)),
            finish if isinstance(finish, str) else None,
            str_or_none(_get(response, "id", None)),
            calls,
        )

    async def _stream(self, kwargs: dict[str, Any], progress: Progress) -> Parsed:
        e = self.endpoint
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + e.first_token_timeout_s if e.first_token_timeout_s else None
        stream = await self._first_answer(kwargs, stream=True)
        chunks: AsyncIterator[Any] = aiter(stream)
        parts: list[str] = []
        calls: dict[int, list[Any]] = {}  # index -> [id, name, argument fragments]
        finish: str | None = None
        prompt = completion = 0
        model: str | None = None
        request_id: str | None = None
        last = loop.time()
        while True:
            if not progress.answering and first_deadline is not None:
                limit, kind = first_deadline, ErrorKind.FIRST_TOKEN_TIMEOUT
                why = f"no first token within {e.first_token_timeout_s:g} s"
            elif e.stall_timeout_s is not None:
                limit = last + e.stall_timeout_s
                kind = ErrorKind.TIMEOUT if progress.answering else ErrorKind.FIRST_TOKEN_TIMEOUT
                why = (
                    f"stream stalled for more than {e.stall_timeout_s:g} s; "
                    "partial answer discarded"
                )
            else:
                limit, kind, why = None, ErrorKind.TIMEOUT, ""
            try:
                async with asyncio.timeout_at(limit):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                raise self._error(kind, why) from exc
            last = loop.time()
            model = str_or_none(_get(chunk, "model", None)) or model
            request_id = request_id or str_or_none(_get(chunk, "id", None))
            usage = _get(chunk, "usage", None)
            if usage:
                prompt, completion = _usage(usage)
            choices = _get(chunk, "choices", None) or []
            if not choices:
                continue
            delta = _get(choices[0], "delta", None)
            content = _get(delta, "content", None) if delta is not None else None
            got = isinstance(content, str) and bool(content)
            if got:
                parts.append(content)
            for position, call in enumerate(_get(delta, "tool_calls", None) or ()):
                index = _get(call, "index", position)
                function = _get(call, "function", None)
                entry = calls.setdefault(
                    index if isinstance(index, int) else position, [None, None, []]
                )
                entry[0] = entry[0] or str_or_none(_get(call, "id", None))
                if function is not None:
                    entry[1] = entry[1] or str_or_none(_get(function, "name", None))
                    arguments = _get(function, "arguments", None)
                    if isinstance(arguments, str):
                        entry[2].append(arguments)
                got = True
            reason = _get(choices[0], "finish_reason", None)
            if reason == "content_filter":
                raise self._error(ErrorKind.CONTENT_FILTER, "finish_reason 'content_filter'")
            if isinstance(reason, str):
                finish, got = reason, True
            if got and not progress.answering:
                progress.answering = True
                progress.first_token_at = time.perf_counter()
        if finish is None:
            # LiteLLM hides the wire terminator; a finish_reason is our only proof
            # that the answer is whole.
            raise self._error(
                ErrorKind.CONNECTION,
                f"stream ended without a finish_reason after {sum(map(len, parts))} chars; "
                "partial answer discarded",
            )
        tool_calls = []
        for index in sorted(calls):
            call_id, name, fragments = calls[index]
            if not call_id or not name:
                raise self._error(
                    ErrorKind.MALFORMED, f"streamed tool call #{index} has no id or no name"
                )
            tool_calls.append(tool_call(call_id, name, "".join(fragments)))
        return Parsed(
            "".join(parts), prompt, completion, model, finish, request_id, tool_calls or None
        )

    def _translate(self, exc: Exception, progress: Progress) -> ProviderError | None:
        kind: ErrorKind | None = None
        status = getattr(exc, "status_code", None)
        status = status if isinstance(status, int) and not isinstance(status, bool) else None
        message = str(getattr(exc, "message", None) or exc)
        in_chain = {cls.__name__ for link in _chain(exc) for cls in type(link).__mro__}
        if in_chain & _CONNECT_MARKERS:
            kind, status = ErrorKind.CONNECT, None  # LiteLLM's "500" was no server's answer
        elif in_chain & _TIMEOUT_MARKERS:
            kind = ErrorKind.TIMEOUT if progress.answering else ErrorKind.FIRST_TOKEN_TIMEOUT
            status = None
        elif in_chain & _CONNECTION_MARKERS:
            kind, status = ErrorKind.CONNECTION, None
        else:
            for cls in type(exc).__mro__:
                kind = LITELLM_ERROR_KINDS.get(cls.__name__)
                if kind is not None:
                    break
        if kind is None:
            if status is not None:
                kind = kind_for_error(ErrorFields(message, None, None), status)
            elif isinstance(exc, OSError):
                kind = ErrorKind.CONNECTION
            else:
                return None
        elif kind is ErrorKind.BAD_REQUEST:
            # Older LiteLLM versions raise a plain BadRequestError for context overflow.
            refined = kind_for_error(ErrorFields(message, None, None), 400)
            kind = refined
        retry = None
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if kind in (ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR) and headers is not None:
            try:
                retry = parse_retry_after(dict(headers))
            except (TypeError, ValueError):
                retry = None
        return self._error(
            kind, f"{type(exc).__name__}: {message[:300]}", status=status, retry_after_s=retry
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
            kind,
            f"litellm {self.endpoint.model}: {detail}",
            status=status,
            retry_after_s=retry_after_s,
            secrets=self._secrets,
        )


def _get(obj: Any, name: str, *default: Any) -> Any:
    """``obj.name`` or ``obj[name]``: LiteLLM objects support both, plain dicts one."""
    if isinstance(obj, Mapping):
        if name in obj:
            return obj[name]
    elif hasattr(obj, name):
        return getattr(obj, name)
    if default:
        return default[0]
    raise KeyError(name)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling, nearest first (bounded)."""
    seen: BaseException | None = exc
    for _ in range(12):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    """LiteLLM's ``message.tool_calls`` (objects or dicts) in OpenAI format."""
    if not calls:
        return None
    out: list[dict[str, Any]] = []
    for call in calls:
        function = _get(call, "function")
        arguments = _get(function, "arguments", "")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
        call_id, name = _get(call, "id"), _get(function, "name")
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)):
            raise ValueError("tool_calls: expected str id, function.name and function.arguments")
        out.append(tool_call(call_id, name, arguments))
    return out


def _usage(usage: Any) -> tuple[int, int]:
    if not usage:
        return 0, 0
    prompt = _get(usage, "prompt_tokens", 0) or 0
    completion = _get(usage, "completion_tokens", 0) or 0
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )

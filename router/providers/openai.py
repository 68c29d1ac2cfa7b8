"""OpenAI-compatible ``POST {base_url}/chat/completions`` (OpenAI, vLLM, Ollama, proxies)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from router.outcome import ErrorKind
from router.providers._http import (
    NOT_JSON,
    HTTPProvider,
    Parsed,
    StreamState,
    _Malformed,
    json_or_none,
    str_or_none,
    tool_call,
    usage_int,
)
from router.providers.base import TextDelta, ToolCallDelta
from router.providers.endpoint import Endpoint


class OpenAIProvider(HTTPProvider):
    """A provider for any OpenAI-compatible chat completions endpoint.

    The key is read from ``os.environ[endpoint.api_key_env]`` once, here; a missing
    variable raises :class:`~router.errors.InputError` naming the variable. With
    ``api_key_env=None`` no ``Authorization`` header is sent (local servers).

    ``messages``, ``tools`` and ``tool_choice`` are sent exactly as given (they are
    already this dialect). An answer's ``choices[0].message.tool_calls`` become
    :attr:`Completion.tool_calls`; a message with tool calls and ``content: null`` is
    a valid answer with text ``""``. ``request_id`` is the body's ``id``, else the
    ``x-request-id`` header.

    Failures map to :class:`~router.outcome.ErrorKind` as follows: nothing back in
    time (no response headers within the endpoint's ``first_token_timeout_s``, its
    ``read_timeout_s`` or the attempt's deadline; when streaming, no first content
    token either) -> ``first_token_timeout``; the answer started but did not finish
    (a body read too slow, a stream stalled past ``stall_timeout_s``, the deadline
    after the headers or first token) -> ``timeout``; refused, DNS failure, connect
    timeout -> ``connect``; reset, protocol errors and bodies cut short ->
    ``connection``; 429 -> ``rate_limited`` and 503 -> ``server_error``, both with
    ``retry-after-ms`` / ``Retry-After`` (seconds or HTTP date) in
    ``retry_after_s``; other 5xx -> ``server_error``; 401/403 -> ``auth``; a 4xx
    whose code or message says context length -> ``context_length``, content
    filter/policy -> ``content_filter``, other 4xx -> ``bad_request``;
    ``finish_reason: "content_filter"`` or a ``refusal`` -> ``content_filter``; a body
    that is not JSON, or whose ``choices[0].message`` has neither a string
    ``content`` nor ``tool_calls``, -> ``malformed``.

    With ``endpoint.stream`` the answer is read as server-sent events and must end
    with ``data: [DONE]`` (or a finish_reason followed by a clean end of stream).
    ``stream_options.include_usage`` is requested so the last chunk carries usage;
    tool-call deltas are assembled by their ``index``.
    """

    _kind = "openai"

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(endpoint, client=client, transport=transport)

    def _url(self) -> str:
        return f"{self.endpoint.base_url}/chat/completions"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _payload(
        self,
        messages: list[dict[str, Any]],
        stream: bool,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
    ) -> dict[str, Any]:
        e = self.endpoint
        payload: dict[str, Any] = {"model": e.model, "messages": messages}
        if tools is not None:
            payload["tools"] = tools
        if tool_choice is not None:
            payload["tool_choice"] = tool_choice
        if e.max_tokens is not None:
            payload["max_tokens"] = e.max_tokens
        if e.temperature is not None:
            payload["temperature"] = e.temperature
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return payload

    def _parse(self, body: Any) -> Parsed:
        if isinstance(body, dict) and "choices" not in body and "error" in body:
            self._raise_error_event(body)  # some proxies answer 200 with an error body
        if not isinstance(body, dict):
            raise _Malformed(f"expected a JSON object, got {type(body).__name__}")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise _Malformed("expected a non-empty 'choices' list of objects")
        choice = choices[0]
        finish = _finish_reason(choice)
        message = choice.get("message")
        if not isinstance(message, dict):
            raise _Malformed("choices[0].message: expected an object")
        self._check_refusal(finish, message.get("refusal"))
        calls = _tool_calls(message.get("tool_calls"))
        content = message.get("content")
        if content is None and calls:
            content = ""  # an answer that is only tool calls
        if not isinstance(content, str):
            raise _Malformed(
                f"choices[0].message.content: expected a string, got {type(content).__name__}"
            )
        prompt, completion = _usage(body.get("usage"))
        return Parsed(
            content,
            prompt,
            completion,
            str_or_none(body.get("model")),
            finish,
            str_or_none(body.get("id")),
            calls,
        )

    def _stream_state(self) -> StreamState:
        return _OpenAIStream(self)

    def _check_refusal(self, finish: str | None, refusal: object) -> None:
        if finish == "content_filter":
            raise self._error(
                ErrorKind.CONTENT_FILTER,
                f"{self._where} stopped the answer: finish_reason 'content_filter'",
            )
        if isinstance(refusal, str) and refusal:
            raise self._error(ErrorKind.CONTENT_FILTER, f"{self._where} refused: {refusal[:200]}")


class _OpenAIStream(StreamState):
    """Accumulates ``chat.completion.chunk`` events up to ``[DONE]``."""

    def __init__(self, provider: OpenAIProvider) -> None:
        self._provider = provider
        self._parts: list[str] = []
        self._chars = 0
        self._finish: str | None = None
        self._usage = (0, 0)
        self._model: str | None = None
        self._id: str | None = None
        # index -> [id, name, argument fragments]: a call's id and name come in its
        # first delta, its JSON arguments in pieces after.
        self._calls: dict[int, tuple[list[str | None], list[str]]] = {}

    @property
    def chars(self) -> int:
        return self._chars

    def feed(self, event: str | None, data: str) -> None:
        if data.strip() == "[DONE]":
            self.finished = True
            return
        chunk = json_or_none(data)
        if chunk is NOT_JSON:
            raise _Malformed(f"data is not JSON: {data[:120]!r}")
        if not isinstance(chunk, dict):
            raise _Malformed(f"expected a JSON object, got {type(chunk).__name__}")
        if "error" in chunk and "choices" not in chunk:
            self._provider._raise_error_event(chunk)
        self._model = str_or_none(chunk.get("model")) or self._model
        self._id = self._id or str_or_none(chunk.get("id"))
        if chunk.get("usage") is not None:
            self._usage = _usage(chunk["usage"])
        choices = chunk.get("choices", [])
        if not isinstance(choices, list):
            raise _Malformed("'choices' is not a list")
        if not choices:
            return  # the usage-only chunk of stream_options.include_usage
        choice = choices[0]
        if not isinstance(choice, dict):
            raise _Malformed("choices[0] is not an object")
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise _Malformed("choices[0].delta is not an object")
        finish = _finish_reason(choice)
        self._provider._check_refusal(finish, delta.get("refusal"))
        if delta.get("tool_calls") is not None:
            self._feed_tool_calls(delta["tool_calls"])
        content = delta.get("content")
        if content is not None:
            if not isinstance(content, str):
                raise _Malformed(f"delta.content: expected a string, got {content!r:.40}")
            if content:
                self._parts.append(content)
                self._chars += len(content)
                self.got_token = True
                if self.deltas is not None:
                    self.deltas.append(TextDelta(content))
        if finish is not None:
            self._finish = finish
            self.ended = True
            self.got_token = True  # an empty answer is still an answer

    def _feed_tool_calls(self, deltas: object) -> None:
        if not isinstance(deltas, list):
            raise _Malformed("delta.tool_calls: expected a list")
        for position, delta in enumerate(deltas):
            if not isinstance(delta, dict):
                raise _Malformed("delta.tool_calls[]: expected an object")
            index = delta.get("index", position)
            if isinstance(index, bool) or not isinstance(index, int):
                raise _Malformed(
                    f"delta.tool_calls[].index: expected an integer, got {index!r:.40}"
                )
            function = delta.get("function") or {}
            if not isinstance(function, dict):
                raise _Malformed("delta.tool_calls[].function: expected an object")
            head, fragments = self._calls.setdefault(index, ([None, None], []))
            for slot, value in ((0, delta.get("id")), (1, function.get("name"))):
                if value is not None:
                    if not isinstance(value, str):
                        raise _Malformed("delta.tool_calls[]: id and name must be strings")
                    head[slot] = head[slot] or value
            arguments = function.get("arguments")
            if arguments is not None:
                if not isinstance(arguments, str):
                    raise _Malformed("delta.tool_calls[].function.arguments: expected a string")
                fragments.append(arguments)
            self.got_token = True
            if self.deltas is not None:
                # OpenAI numbers calls 0, 1, ... in order: its index is the call's position.
                self.deltas.append(
                    ToolCallDelta(
                        index,
                        delta.get("id"),
                        function.get("name"),
                        arguments or "",
                    )
                )

    def result(self) -> Parsed:
        prompt, completion = self._usage
        calls: list[dict[str, Any]] = []
        for index in sorted(self._calls):
            (call_id, name), fragments = self._calls[index]
            if not call_id or not name:
                raise _Malformed(f"streamed tool call #{index} has no id or no name")
            calls.append(tool_call(call_id, name, "".join(fragments)))
        return Parsed(
            "".join(self._parts),
            prompt,
            completion,
            self._model,
            self._finish,
            self._id,
            calls or None,
        )


def _finish_reason(choice: dict[str, Any]) -> str | None:
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise _Malformed(f"finish_reason: expected a string, got {json.dumps(finish)[:40]}")
    return finish


def _usage(usage: object) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    if not isinstance(usage, dict):
        raise _Malformed("usage: expected an object")
    return usage_int(usage, "prompt_tokens"), usage_int(usage, "completion_tokens")


def _tool_calls(calls: object) -> list[dict[str, Any]] | None:
    """``message.tool_calls`` checked and normalised to OpenAI format (``None``: none).

    Some OpenAI-compatible servers send ``arguments`` as a JSON object rather than
    JSON text; it is re-encoded, so callers always get text.
    """
    if calls is None:
        return None
    if not isinstance(calls, list):
        raise _Malformed("choices[0].message.tool_calls: expected a list")
    normalised: list[dict[str, Any]] = []
    for j, call in enumerate(calls):
        where = f"choices[0].message.tool_calls[{j}]"
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise _Malformed(f"{where}: expected an object with a 'function' object")
        call_id, function = call.get("id"), call["function"]
        name, arguments = function.get("name"), function.get("arguments", "")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)):
            raise _Malformed(f"{where}: expected str 'id', 'function.name', 'function.arguments'")
        normalised.append(tool_call(call_id, name, arguments))
    return normalised or None

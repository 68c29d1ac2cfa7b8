"""Anthropic Messages API: ``POST {base_url}/v1/messages``.

The router speaks OpenAI's chat format everywhere; :func:`anthropic_request_parts`,
:func:`anthropic_tools` and :func:`anthropic_tool_choice` map a conversation to the
Messages API, and the answer's ``tool_use`` blocks are mapped back to OpenAI
``tool_calls``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from router.errors import InputError
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
from router.task import SYSTEM_ROLES, content_text

#: The Messages API version this provider speaks.
ANTHROPIC_VERSION = "2023-06-01"

#: ``max_tokens`` is required by the Messages API; used when the endpoint sets none.
DEFAULT_MAX_TOKENS = 4096


class AnthropicProvider(HTTPProvider):
    """A provider for the Anthropic Messages API (and servers that mimic it).

    Sends ``x-api-key`` and ``anthropic-version: 2023-06-01``. The OpenAI-format
    conversation is mapped by :func:`anthropic_request_parts` (system messages lifted
    into the top-level ``system``, assistant ``tool_calls`` -> ``tool_use`` blocks,
    ``tool`` messages -> ``tool_result`` blocks in a user turn), ``tools`` by
    :func:`anthropic_tools` and ``tool_choice`` by :func:`anthropic_tool_choice`. The
    answer's ``tool_use`` blocks come back as OpenAI-format
    :attr:`~router.providers.base.Completion.tool_calls` (``arguments`` the JSON text
    of the block's ``input``); an answer of tool calls only has text ``""``.
    ``prompt_tokens`` counts every input token the API reports (``input_tokens`` plus
    cache creation and cache reads). ``request_id`` is the message ``id``, else the
    ``request-id`` header.

    Error mapping is :class:`~router.providers.openai.OpenAIProvider`'s (timeouts:
    ``first_token_timeout`` before the response headers -- or, streaming, the first
    content token -- and ``timeout`` after; ``connect`` vs ``connection``), plus: 529
    (overloaded) is a 5xx -> ``server_error`` with its ``Retry-After``;
    ``stop_reason: "refusal"`` -> ``content_filter``; an ``error`` event inside a
    stream is classified by its ``type`` (``overloaded_error`` -> ``server_error``,
    ``rate_limit_error`` -> ``rate_limited``...). A stream must end with
    ``message_stop`` (or a ``stop_reason`` followed by a clean end of stream).
    """

    _kind = "anthropic"
    _request_id_header = "request-id"

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(endpoint, client=client, transport=transport)

    def _url(self) -> str:
        return f"{self.endpoint.base_url}/v1/messages"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def _payload(
        self,
        messages: list[dict[str, Any]],
        stream: bool,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
    ) -> dict[str, Any]:
        e = self.endpoint
        system, turns = anthropic_request_parts(messages)
        payload: dict[str, Any] = {
            "model": e.model,
            "max_tokens": e.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": turns,
        }
        if system is not None:
            payload["system"] = system
        if tools is not None:
            payload["tools"] = anthropic_tools(tools)
        if tool_choice is not None:
            payload["tool_choice"] = anthropic_tool_choice(tool_choice)
        if e.temperature is not None:
            payload["temperature"] = e.temperature
        if stream:
            payload["stream"] = True
        return payload

    def _parse(self, body: Any) -> Parsed:
        if isinstance(body, dict) and body.get("type") == "error":
            self._raise_error_event(body)
        if not isinstance(body, dict):
            raise _Malformed(f"expected a JSON object, got {type(body).__name__}")
        stop = _stop_reason(body)
        self._check_refusal(stop)
        content = body.get("content")
        if not isinstance(content, list):
            raise _Malformed("'content': expected a list of blocks")
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for i, block in enumerate(content):
            if not isinstance(block, dict):
                raise _Malformed(f"content[{i}]: expected an object")
            if block.get("type") == "text":
                text = block.get("text")
                if not isinstance(text, str):
                    raise _Malformed(f"content[{i}].text: expected a string")
                texts.append(text)
            elif block.get("type") == "tool_use":
                call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
                if not (
                    isinstance(call_id, str)
                    and isinstance(name, str)
                    and isinstance(arguments, dict)
                ):
                    raise _Malformed(
                        f"content[{i}]: a tool_use block needs str 'id', str 'name', object 'input'"
                    )
                calls.append(tool_call(call_id, name, _json_text(arguments)))
        if not texts and not calls and content:
            # Only thinking (or unknown) blocks: no answer this contract can return.
            raise _Malformed("no text or tool_use block in 'content'")
        usage = body.get("usage")
        prompt, completion = _usage(usage) if usage is not None else (0, 0)
        return Parsed(
            "".join(texts),
            prompt,
            completion,
            str_or_none(body.get("model")),
            stop,
            str_or_none(body.get("id")),
            calls or None,
        )

    def _stream_state(self) -> StreamState:
        return _AnthropicStream(self)

    def _check_refusal(self, stop: str | None) -> None:
        if stop == "refusal":
            raise self._error(
                ErrorKind.CONTENT_FILTER, f"{self._where} refused: stop_reason 'refusal'"
            )


class _AnthropicStream(StreamState):
    """Accumulates message_start / content_block_delta / message_delta up to message_stop."""

    def __init__(self, provider: AnthropicProvider) -> None:
        self._provider = provider
        self._parts: list[str] = []
        self._chars = 0
        self._stop: str | None = None
        self._prompt = 0
        self._completion = 0
        self._model: str | None = None
        self._id: str | None = None
        # block index -> (id, name, input of the start event, input_json_delta pieces)
        self._calls: dict[int, tuple[str, str, dict[str, Any], list[str]]] = {}
        # block index -> the tool call's position among the answer's calls (streaming)
        self._ordinal: dict[int, int] = {}

    @property
    def chars(self) -> int:
        return self._chars

    def feed(self, event: str | None, data: str) -> None:
        body = json_or_none(data)
        if body is NOT_JSON or not isinstance(body, dict):
            raise _Malformed(f"data is not a JSON object: {data[:120]!r}")
        etype = body.get("type", event)
        if etype == "error":
            self._provider._raise_error_event(body)
        elif etype == "message_start":
            message = body.get("message")
            if not isinstance(message, dict):
                raise _Malformed("message_start.message: expected an object")
            self._model = str_or_none(message.get("model"))
            self._id = str_or_none(message.get("id"))
            if isinstance(message.get("usage"), dict):
                self._prompt, self._completion = _usage(message["usage"])
        elif etype == "content_block_delta":
            delta = body.get("delta")
            if not isinstance(delta, dict):
                raise _Malformed("content_block_delta.delta: expected an object")
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                if not isinstance(text, str):
                    raise _Malformed("text_delta.text: expected a string")
                if text:
                    self._parts.append(text)
                    self._chars += len(text)
                    self.got_token = True
                    if self.deltas is not None:
                        self.deltas.append(TextDelta(text))
            elif delta.get("type") == "input_json_delta":
                piece = delta.get("partial_json")
                index = body.get("index")
                call = self._calls.get(index) if isinstance(index, int) else None
                if not isinstance(piece, str) or call is None:
                    raise _Malformed(
                        "input_json_delta: expected str partial_json of a tool_use block"
                    )
                call[3].append(piece)
                self._chars += len(piece)
                if self.deltas is not None and piece:
                    self.deltas.append(ToolCallDelta(self._ordinal[index], None, None, piece))
        elif etype == "content_block_start":
            block = body.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use":
                index, call_id, name = body.get("index"), block.get("id"), block.get("name")
                start_input = block.get("input") or {}
                if not (
                    isinstance(index, int)
                    and isinstance(call_id, str)
                    and isinstance(name, str)
                    and isinstance(start_input, dict)
                ):
                    raise _Malformed("content_block_start: a tool_use block needs index, id, name")
                self._calls[index] = (call_id, name, start_input, [])
                self.got_token = True  # the model has started answering: with a tool call
                if self.deltas is not None:
                    # Block indices count text blocks too; tool calls are numbered apart.
                    self._ordinal[index] = len(self._ordinal)
                    self.deltas.append(ToolCallDelta(self._ordinal[index], call_id, name, ""))
        elif etype == "content_block_stop":
            index = body.get("index")
            call = self._calls.get(index) if isinstance(index, int) else None
            if call is not None and not call[3] and self.deltas is not None:
                # A tool call whose input came whole in its start event (no deltas).
                self.deltas.append(
                    ToolCallDelta(self._ordinal[index], None, None, _json_text(call[2]))
                )
        elif etype == "message_delta":
            delta = body.get("delta")
            if not isinstance(delta, dict):
                raise _Malformed("message_delta.delta: expected an object")
            stop = _stop_reason(delta)
            self._provider._check_refusal(stop)
            if stop is not None:
                self._stop = stop
                self.ended = True
                self.got_token = True
            usage = body.get("usage")
            if isinstance(usage, dict) and "output_tokens" in usage:
                # message_delta's output_tokens is cumulative: it replaces, not adds.
                self._completion = usage_int(usage, "output_tokens")
        elif etype == "message_stop":
            self.finished = True
        # ping, a text block's content_block_stop and unknown future events: nothing to keep.

    def result(self) -> Parsed:
        calls: list[dict[str, Any]] = []
        for index in sorted(self._calls):
            call_id, name, start_input, pieces = self._calls[index]
            arguments = start_input
            if pieces:
                arguments = json_or_none("".join(pieces))
                if not isinstance(arguments, dict):
                    raise _Malformed(f"tool_use block #{index}: input is not a JSON object")
            calls.append(tool_call(call_id, name, _json_text(arguments)))
        return Parsed(
            "".join(self._parts),
            self._prompt,
            self._completion,
            self._model,
            self._stop,
            self._id,
            calls or None,
        )


def _stop_reason(body: dict[str, Any]) -> str | None:
    stop = body.get("stop_reason")
    if stop is not None and not isinstance(stop, str):
        raise _Malformed("stop_reason: expected a string")
    return stop


def _usage(usage: object) -> tuple[int, int]:
    if not isinstance(usage, dict):
        raise _Malformed("usage: expected an object")
    prompt = (
        usage_int(usage, "input_tokens")
        + usage_int(usage, "cache_creation_input_tokens")
        + usage_int(usage, "cache_read_input_tokens")
    )
    return prompt, usage_int(usage, "output_tokens")


def _json_text(value: dict[str, Any]) -> str:
    """A tool call's arguments as OpenAI sends them: compact JSON text."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- OpenAI chat format -> Messages API ------------------------------------------------


def anthropic_request_parts(
    messages: list[dict[str, Any]],
) -> tuple[str | None, list[dict[str, Any]]]:
    """``(system, messages)`` of a Messages API request for checked OpenAI messages.

    * ``system`` (and ``developer``) messages are lifted out, their texts joined by
      blank lines into the top-level ``system`` (``None`` when there are none).
    * ``user`` messages keep their content; in a parts list, ``text`` parts are
      already Anthropic blocks and pass unchanged, ``image_url`` parts become
      ``image`` blocks (a ``data:`` URL -> a base64 source, else a url source), and
      any other part passes unchanged (so Anthropic-native blocks can be sent).
    * ``assistant`` messages without ``tool_calls`` keep their content; with them,
      the content becomes blocks: the text (if any) first, then one ``tool_use``
      block per call (``id``, ``name``, ``input`` = the parsed JSON ``arguments``;
      empty arguments mean ``{}``).
    * ``tool`` messages become ``tool_result`` blocks (``tool_use_id`` =
      ``tool_call_id``, ``content`` mapped like a user message's) in a ``user``
      turn; consecutive tool messages share one user turn, as the API expects all
      results of one assistant turn together.

    Raises :class:`InputError` naming the message when a call's ``arguments`` is not
    the JSON text of an object (the API's ``input`` must be one).
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    results_turn: list[dict[str, Any]] | None = None  # the open run of tool results
    for i, message in enumerate(messages):
        role = message["role"]
        if role in SYSTEM_ROLES:
            system.append(content_text(message.get("content")))
            continue
        if role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message["tool_call_id"],
                "content": _blocks(message.get("content")),
            }
            if results_turn is None:
                results_turn = [result]
                turns.append({"role": "user", "content": results_turn})
            else:
                results_turn.append(result)
            continue
        results_turn = None
        content = message.get("content")
        calls = message.get("tool_calls") if role == "assistant" else None
        if not calls:
            turns.append({"role": role, "content": _blocks(content)})
            continue
        blocks: list[dict[str, Any]] = []
        if isinstance(content, str):
            if content:
                blocks.append({"type": "text", "text": content})
        elif content is not None:
            blocks.extend(_blocks(content))
        for j, call in enumerate(calls):
            function = call["function"]
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": function["name"],
                    "input": _arguments(function["arguments"], f"messages[{i}].tool_calls[{j}]"),
                }
            )
        turns.append({"role": "assistant", "content": blocks})
    return ("\n\n".join(system) if system else None), turns


def _blocks(content: Any) -> Any:
    """A message's content for the Messages API: a string as is, parts mapped."""
    if not isinstance(content, list):
        return content
    return [_block(part) for part in content]


def _block(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") != "image_url":
        return part
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[len("data:") :].partition(";base64,")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _arguments(arguments: str, where: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    parsed = json_or_none(arguments)
    if not isinstance(parsed, dict):
        raise InputError(
            f"{where}.function.arguments: expected the JSON text of an object (the "
            f"Messages API's tool_use input), got {arguments!r:.60}"
        )
    return parsed


def anthropic_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI function tools -> Messages API tools: ``name``, ``description`` (when
    given) and ``input_schema`` (the function's ``parameters``; an empty object
    schema when it has none, as the API requires one)."""
    mapped: list[dict[str, Any]] = []
    for tool in tools:
        function = tool["function"]
        entry: dict[str, Any] = {"name": function["name"]}
        if "description" in function:
            entry["description"] = function["description"]
        entry["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        mapped.append(entry)
    return mapped


def anthropic_tool_choice(tool_choice: str | dict[str, Any]) -> dict[str, Any]:
    """OpenAI ``tool_choice`` -> the Messages API's: ``"auto"`` -> ``{"type": "auto"}``,
    ``"required"`` -> ``{"type": "any"}``, ``"none"`` -> ``{"type": "none"}``,
    ``{"type": "function", "function": {"name": n}}`` -> ``{"type": "tool", "name":
    n}``; any other dict is taken to be in the API's own form and passes unchanged."""
    if isinstance(tool_choice, str):
        return {"type": {"required": "any"}.get(tool_choice, tool_choice)}
    function = tool_choice.get("function")
    if tool_choice.get("type") == "function" and isinstance(function, dict):
        return {"type": "tool", "name": function.get("name")}
    return tool_choice

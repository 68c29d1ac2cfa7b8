"""The two client dialects the gateway speaks: OpenAI chat completions and Anthropic
Messages, mapped to and from the router's one internal form (OpenAI chat format).

Requests become a :class:`ChatRequest` (:func:`parse_openai`, :func:`parse_anthropic`);
answers are rendered whole (:func:`openai_body`, :func:`anthropic_body`) or as
server-sent events (:class:`OpenAIEvents`, :class:`AnthropicEvents`); failures become
each dialect's error body (:func:`error_body`). Nothing here does I/O.

A request that cannot be served as sent raises :class:`ClientError` (a 400 in the
client's format), never a ``KeyError`` or ``TypeError`` from a missing field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from router.errors import InputError
from router.providers import Completion
from router.providers.base import TextDelta, ToolCallDelta

Dialect = Literal["openai", "anthropic"]

__all__ = [
    "AnthropicEvents",
    "ChatRequest",
    "ClientError",
    "Dialect",
    "OpenAIEvents",
    "anthropic_body",
    "error_body",
    "openai_body",
    "parse_anthropic",
    "parse_openai",
]


class ClientError(InputError):
    """A request the gateway refuses as sent: ``status`` (400 unless said), one line."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass(slots=True)
class ChatRequest:
    """A client's request in the router's terms.

    ``messages``/``tools``/``tool_choice`` are in OpenAI chat format whatever the
    client spoke; ``max_tokens`` is the client's cap on the answer (``None``: unset),
    used only to project a token-priced model's cost. ``include_usage`` is OpenAI's
    ``stream_options.include_usage``.
    """

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | None
    stream: bool
    max_tokens: int | None
    include_usage: bool = False


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ClientError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model", "auto")
    if model is None:
        return "auto"
    if not isinstance(model, str):
        raise ClientError("'model' must be a string", param="model")
    return model


def _max_tokens(body: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ClientError(f"'{key}' must be a positive integer", param=key)
        return value
    return None


# -- OpenAI chat completions -----------------------------------------------------------


def parse_openai(body: object) -> ChatRequest:
    """A ``POST /v1/chat/completions`` body -> :class:`ChatRequest`.

    ``messages``, ``tools`` and ``tool_choice`` pass as they are (the providers check
    their shape before any call). Sampling settings (``temperature``, ``top_p``,
    ``stop``...) are the routed model's endpoint's business and are not forwarded;
    ``n`` other than 1 is refused (one routed answer per request).
    """
    data = _object(body)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ClientError("'messages' must be a non-empty list", param="messages")
    n = data.get("n")
    if n is not None and n != 1:
        raise ClientError("only n=1 is supported: the gateway routes one answer", param="n")
    stream = data.get("stream") is True
    options = data.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    tools = data.get("tools")
    return ChatRequest(
        model=_model(data),
        messages=messages,
        tools=tools if tools else None,
        tool_choice=data.get("tool_choice"),
        stream=stream,
        max_tokens=_max_tokens(data, "max_completion_tokens", "max_tokens"),
        include_usage=include_usage,
    )


def openai_finish_reason(completion: Completion) -> str:
    """The OpenAI ``finish_reason`` of an answer, whatever dialect the provider spoke."""
    if completion.tool_calls:
        return "tool_calls"
    raw = completion.raw_finish_reason
    return {"max_tokens": "length", "length": "length", "content_filter": "content_filter"}.get(
        raw or "", "stop"
    )


def openai_body(
    completion: Completion, *, model: str, response_id: str, created: int
) -> dict[str, Any]:
    """A ``chat.completion`` body for ``completion`` (``model``: the routed model id)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text if completion.text or not completion.tool_calls else None,
    }
    if completion.tool_calls:
        message["tool_calls"] = completion.tool_calls
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": openai_finish_reason(completion),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
    }


def _sse_data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class OpenAIEvents:
    """``chat.completion.chunk`` server-sent events for one streamed answer.

    Every content delta is sent as it comes (tool-call deltas keep their index, so
    several calls may interleave). :meth:`end` sends the finish chunk, the usage chunk
    when the client asked for it, and ``data: [DONE]``; :meth:`error` the error event
    the OpenAI SDKs raise ``APIError`` for (and no ``[DONE]``: the stream did not end
    well).
    """

    def __init__(self, response_id: str, created: int, include_usage: bool) -> None:
        self._id = response_id
        self._created = created
        self._usage = include_usage
        self._model = ""
        self._role_sent = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse_data(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    def delta(self, model: str, event: TextDelta | ToolCallDelta) -> bytes:
        """The bytes for one content delta of ``model``'s answer (never empty)."""
        self._model = model
        if isinstance(event, TextDelta):
            delta: dict[str, Any] = {"content": event.text}
        else:
            call: dict[str, Any] = {"index": event.index}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
            function: dict[str, Any] = {"arguments": event.arguments}
            if event.name is not None:
                function["name"] = event.name
            call["function"] = function
            delta = {"tool_calls": [call]}
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **delta}
        return self._chunk(delta)

    def end(self, model: str, completion: Completion) -> bytes:
        """The close of a complete answer: finish reason, usage if asked, ``[DONE]``."""
        self._model = model
        out = b""
        if not self._role_sent:
            self._role_sent = True
            out += self._chunk({"role": "assistant", "content": ""})
        out += self._chunk({}, openai_finish_reason(completion))
        if self._usage:
            out += _sse_data(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": completion.prompt_tokens,
                        "completion_tokens": completion.completion_tokens,
                        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
                    },
                }
            )
        return out + b"data: [DONE]\n\n"

    def error(self, status: int, message: str, code: str | None = None) -> bytes:
        """An error event ending a stream that had started."""
        return _sse_data(error_body("openai", status, message, code=code))


# -- Anthropic Messages ----------------------------------------------------------------


def _text_of(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, block in enumerate(content):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise ClientError(f"{where}[{i}]: expected a text block")
            text = block.get("text")
            if not isinstance(text, str):
                raise ClientError(f"{where}[{i}].text: expected a string")
            texts.append(text)
        return "\n\n".join(texts)
    raise ClientError(f"{where}: expected a string or a list of text blocks")


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise ClientError(f"{where}.source: expected an object")
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise ClientError(f"{where}.source: expected a base64 or url image source")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_parts(blocks: list[Any], where: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A user turn's blocks -> (tool messages, content parts), in OpenAI format."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        at = f"{where}[{i}]"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise ClientError(f"{at}: expected a content block with a 'type'")
        kind = block["type"]
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise ClientError(f"{at}.text: expected a string")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not call_id:
                raise ClientError(f"{at}.tool_use_id: expected a non-empty string")
            content = block.get("content", "")
            result: str | list[dict[str, Any]]
            if isinstance(content, list):
                _, inner = _user_parts(content, f"{at}.content")
                # All text (the usual case): one string, which every dialect takes.
                if all(p["type"] == "text" for p in inner):
                    result = "\n\n".join(p["text"] for p in inner)
                else:
                    result = inner
            elif isinstance(content, str):
                result = content
            else:
                raise ClientError(f"{at}.content: expected a string or a list of blocks")
            if block.get("is_error") is True:
                # OpenAI's tool message has no error flag: say it in the text.
                result = f"[tool error] {result}" if isinstance(result, str) else result
            tools.append({"role": "tool", "tool_call_id": call_id, "content": result})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's own scratch work: not replayed to another model
        else:
            parts.append(block)  # a native block (document...): passed on as it is
    return tools, parts


def _assistant_message(content: object, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise ClientError(f"{where}: expected a string or a list of content blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}[{i}]"
        if not isinstance(block, dict):
            raise ClientError(f"{at}: expected a content block")
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
            if not (isinstance(call_id, str) and isinstance(name, str)):
                raise ClientError(f"{at}: a tool_use block needs str 'id' and 'name'")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": json.dumps(arguments, separators=(",", ":")),
                    },
                }
            )
        # thinking blocks and anything else: not replayed
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
        if not texts:
            message["content"] = None
    return message


def _anthropic_tools(tools: object) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise ClientError("'tools' must be a list", param="tools")
    mapped: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise ClientError(f"tools[{i}]: expected an object with a str 'name'", param="tools")
        if "input_schema" not in tool:
            # A server tool (web search, code execution...): run by Anthropic's own
            # servers, which the router cannot promise; left out.
            continue
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        mapped.append({"type": "function", "function": function})
    return mapped or None


def _anthropic_tool_choice(choice: object) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if not isinstance(choice, dict):
        raise ClientError("'tool_choice' must be an object", param="tool_choice")
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise ClientError("'tool_choice.type' must be auto, any, tool or none", param="tool_choice")


def parse_anthropic(body: object) -> ChatRequest:
    """A ``POST /v1/messages`` body -> :class:`ChatRequest` in OpenAI chat format.

    ``system`` becomes a system message; ``tool_use`` blocks become assistant
    ``tool_calls`` and ``tool_result`` blocks ``tool`` messages (in order, before the
    rest of their user turn); images become ``image_url`` parts; thinking blocks are
    dropped. Tools with an ``input_schema`` map to function tools (server tools are
    left out); ``tool_choice`` maps to OpenAI's. ``max_tokens`` is required, as by the
    Messages API.
    """
    data = _object(body)
    raw = data.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ClientError("'messages' must be a non-empty list", param="messages")
    max_tokens = _max_tokens(data, "max_tokens")
    if max_tokens is None:
        raise ClientError("'max_tokens' is required", param="max_tokens")
    messages: list[dict[str, Any]] = []
    system = data.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            messages.append({"role": "system", "content": text})
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ClientError(f"{where}: expected an object")
        role = message.get("role")
        content = message.get("content")
        if role == "assistant":
            messages.append(_assistant_message(content, f"{where}.content"))
        elif role == "user":
            if isinstance(content, str):
                messages.append({"role": "user", "content": content})
                continue
            if not isinstance(content, list):
                raise ClientError(f"{where}.content: expected a string or a list of blocks")
            tool_messages, parts = _user_parts(content, f"{where}.content")
            messages.extend(tool_messages)
            if parts:
                messages.append({"role": "user", "content": parts})
        else:
            raise ClientError(f"{where}.role: expected user or assistant, got {role!r:.40}")
    return ChatRequest(
        model=_model(data),
        messages=messages,
        tools=_anthropic_tools(data.get("tools")),
        tool_choice=_anthropic_tool_choice(data.get("tool_choice")),
        stream=data.get("stream") is True,
        max_tokens=max_tokens,
    )


def anthropic_stop_reason(completion: Completion) -> str:
    """The Messages API ``stop_reason`` of an answer, whatever the provider spoke."""
    if completion.tool_calls:
        return "tool_use"
    raw = completion.raw_finish_reason
    return {
        "length": "max_tokens",
        "max_tokens": "max_tokens",
        "stop_sequence": "stop_sequence",
        "refusal": "refusal",
    }.get(raw or "", "end_turn")


def _tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the Messages API's ``input`` object."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"_raw_arguments": arguments}  # a model's broken JSON, kept visible
    return value if isinstance(value, dict) else {"value": value}


def anthropic_body(completion: Completion, *, model: str, response_id: str) -> dict[str, Any]:
    """A Messages API response body for ``completion``."""
    content: list[dict[str, Any]] = []
    if completion.text or not completion.tool_calls:
        content.append({"type": "text", "text": completion.text})
    for call in completion.tool_calls or ():
        function = call["function"]
        content.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function["name"],
                "input": _tool_input(function["arguments"]),
            }
        )
    return {
        "id": response_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": anthropic_stop_reason(completion),
        "stop_sequence": None,
        "usage": {
            "input_tokens": completion.prompt_tokens,
            "output_tokens": completion.completion_tokens,
        },
    }


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return (
        b"event: "
        + name.encode()
        + b"\ndata: "
        + json.dumps(payload, separators=(",", ":")).encode()
        + b"\n\n"
    )


class AnthropicEvents:
    """Messages API server-sent events for one streamed answer.

    Text is streamed as it comes, in one text block. Tool calls are sent whole at the
    end, one ``tool_use`` block each (their ``input`` as one ``input_json_delta``):
    the Messages API needs each block complete before the next one opens, which a
    provider streaming several calls at once does not promise. So :meth:`delta`
    returns ``b""`` for a tool-call delta (nothing reached the client yet, and the
    gateway may still fall back).
    """

    def __init__(self, response_id: str) -> None:
        self._id = response_id
        self._started = False
        self._text_open = False

    def _start(self, model: str) -> bytes:
        self._started = True
        message = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _open_text(self) -> bytes:
        self._text_open = True
        return _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )

    def delta(self, model: str, event: TextDelta | ToolCallDelta) -> bytes:
        """The bytes for one delta (``b""`` for tool-call deltas: sent at the end)."""
        if not isinstance(event, TextDelta):
            return b""
        out = b"" if self._started else self._start(model)
        if not self._text_open:
            out += self._open_text()
        return out + _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": event.text},
            },
        )

    def end(self, model: str, completion: Completion) -> bytes:
        """The rest of a complete answer: tool_use blocks, stop reason, usage, stop."""
        out = b"" if self._started else self._start(model)
        index = 0
        if self._text_open or not completion.tool_calls:
            if not self._text_open:
                out += self._open_text()
            out += _event("content_block_stop", {"type": "content_block_stop", "index": 0})
            index = 1
        for call in completion.tool_calls or ():
            function = call["function"]
            block = {"type": "tool_use", "id": call["id"], "name": function["name"], "input": {}}
            out += _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
            out += _event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {
                        "type": "input_json_delta",
                        "partial_json": json.dumps(_tool_input(function["arguments"])),
                    },
                },
            )
            out += _event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        out += _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": anthropic_stop_reason(completion), "stop_sequence": None},
                "usage": {
                    "input_tokens": completion.prompt_tokens,
                    "output_tokens": completion.completion_tokens,
                },
            },
        )
        return out + _event("message_stop", {"type": "message_stop"})

    def error(self, status: int, message: str, code: str | None = None) -> bytes:
        """An ``error`` event ending a stream that had started (the Anthropic SDKs
        raise an ``APIStatusError`` for it)."""
        return _event("error", error_body("anthropic", status, message, code=code))


# -- errors ----------------------------------------------------------------------------

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_body(
    dialect: Dialect,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """The error body of ``dialect`` for an HTTP ``status`` (also used inside streams).

    OpenAI: ``{"error": {"message", "type", "param", "code"}}``; Anthropic:
    ``{"type": "error", "error": {"type", "message"}}``, the type named by status as the
    Messages API does.
    """
    if dialect == "anthropic":
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind = _OPENAI_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}

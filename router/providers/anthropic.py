"""Anthropic Messages API: ``POST {base_url}/v1/messages``."""

from __future__ import annotations

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
    usage_int,
)
from router.providers.endpoint import Endpoint

#: The Messages API version this provider speaks.
ANTHROPIC_VERSION = "2023-06-01"

#: ``max_tokens`` is required by the Messages API; used when the endpoint sets none.
DEFAULT_MAX_TOKENS = 4096


class AnthropicProvider(HTTPProvider):
    """A provider for the Anthropic Messages API (and servers that mimic it).

    Sends ``x-api-key`` and ``anthropic-version: 2023-06-01``. ``system`` messages are
    lifted into the top-level ``system`` field (joined by blank lines), as the API
    requires. ``prompt_tokens`` counts every input token the API reports
    (``input_tokens`` plus cache creation and cache reads).

    Error mapping is :class:`~router.providers.openai.OpenAIProvider`'s, plus: 529
    (overloaded) is a 5xx -> ``server_error``; ``stop_reason: "refusal"`` ->
    ``content_filter``; an ``error`` event inside a stream is classified by its
    ``type`` (``overloaded_error`` -> ``server_error``, ``rate_limit_error`` ->
    ``rate_limited``...). A stream must end with ``message_stop`` (or a
    ``stop_reason`` followed by a clean end of stream).
    """

    _kind = "anthropic"

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

    def _payload(self, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
        e = self.endpoint
        system = [m["content"] for m in messages if m["role"] == "system"]
        payload: dict[str, Any] = {
            "model": e.model,
            "max_tokens": e.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [
                {"role": m["role"], "content": m["content"]}
                for m in messages
                if m["role"] != "system"
            ],
        }
        if system:
            payload["system"] = "\n\n".join(system)
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
        for i, block in enumerate(content):
            if not isinstance(block, dict):
                raise _Malformed(f"content[{i}]: expected an object")
            if block.get("type") == "text":
                text = block.get("text")
                if not isinstance(text, str):
                    raise _Malformed(f"content[{i}].text: expected a string")
                texts.append(text)
        if not texts and content:
            # Only tool_use/thinking blocks: nothing this text-only contract can return.
            raise _Malformed("no text block in 'content'")
        usage = body.get("usage")
        prompt, completion = _usage(usage) if usage is not None else (0, 0)
        return Parsed("".join(texts), prompt, completion, _model(body), stop)

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
            self._model = _model(message)
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
        # ping, content_block_start/stop and unknown future events: nothing to keep.

    def result(self) -> Parsed:
        return Parsed("".join(self._parts), self._prompt, self._completion, self._model, self._stop)


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


def _model(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    return model if isinstance(model, str) and model else None

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
    usage_int,
)
from router.providers.endpoint import Endpoint


class OpenAIProvider(HTTPProvider):
    """A provider for any OpenAI-compatible chat completions endpoint.

    The key is read from ``os.environ[endpoint.api_key_env]`` once, here; a missing
    variable raises :class:`~router.errors.InputError` naming the variable. With
    ``api_key_env=None`` no ``Authorization`` header is sent (local servers).

    Failures map to :class:`~router.outcome.ErrorKind` as follows: connect/read/pool
    timeouts and the attempt's deadline -> ``timeout``; 429 -> ``rate_limited`` (with
    ``retry-after-ms`` / ``Retry-After`` seconds or HTTP date in ``retry_after_s``);
    5xx -> ``server_error``; refused, reset, protocol errors and bodies cut short ->
    ``connection``; 401/403 -> ``auth``; a 4xx whose code or message says context
    length -> ``context_length``, content filter/policy -> ``content_filter``, other
    4xx -> ``bad_request``; ``finish_reason: "content_filter"`` or a ``refusal`` ->
    ``content_filter``; a body that is not JSON or lacks ``choices[0].message.content``
    (a string) -> ``malformed``.

    With ``endpoint.stream`` the answer is read as server-sent events and must end
    with ``data: [DONE]`` (or a finish_reason followed by a clean end of stream).
    ``stream_options.include_usage`` is requested so the last chunk carries usage.
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

    def _payload(self, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
        e = self.endpoint
        payload: dict[str, Any] = {"model": e.model, "messages": messages}
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
        content = message.get("content")
        if not isinstance(content, str):
            raise _Malformed(
                f"choices[0].message.content: expected a string, got {type(content).__name__}"
            )
        prompt, completion = _usage(body.get("usage"))
        return Parsed(content, prompt, completion, _model(body), finish)

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
        self._model = _model(chunk) or self._model
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
        content = delta.get("content")
        if content is not None:
            if not isinstance(content, str):
                raise _Malformed(f"delta.content: expected a string, got {content!r:.40}")
            if content:
                self._parts.append(content)
                self._chars += len(content)
                self.got_token = True
        if finish is not None:
            self._finish = finish
            self.ended = True
            self.got_token = True  # an empty answer is still an answer

    def result(self) -> Parsed:
        prompt, completion = self._usage
        return Parsed("".join(self._parts), prompt, completion, self._model, self._finish)


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


def _model(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    return model if isinstance(model, str) and model else None

"""Delegate the call to LiteLLM (optional extra: ``pip install 'costroute[litellm]'``).

LiteLLM speaks to a hundred providers; this adapter holds it to the
:class:`~router.providers.base.ModelProvider` contract: one attempt (LiteLLM's own
retries are turned off), the caller's deadline, and its exceptions translated into
:class:`~router.providers.base.ProviderError` by class name, so this module never
imports LiteLLM at import time and does not depend on its exception module layout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from router.errors import InputError
from router.outcome import ErrorKind
from router.providers._http import (
    ErrorFields,
    check_messages,
    kind_for_error,
    parse_retry_after,
    read_api_key,
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

    Exceptions map by class name through :data:`LITELLM_ERROR_KINDS`; one with only
    an HTTP ``status_code`` is classified like an HTTP provider's status. Streaming
    applies the endpoint's first-token and stall timeouts to LiteLLM's chunks.
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

    async def complete(self, messages: list[dict[str, str]], *, timeout_s: float) -> Completion:
        """One attempt within ``timeout_s`` seconds; see :class:`ModelProvider`."""
        check_messages(messages)
        if not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise InputError(f"timeout_s: expected a positive number of seconds, got {timeout_s!r}")
        e = self.endpoint
        started = time.perf_counter()
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
        try:
            async with asyncio.timeout(timeout_s):
                if e.stream:
                    text, prompt, completion, model, finish = await self._stream(kwargs)
                else:
                    response = await self._litellm.acompletion(**kwargs)
                    text, prompt, completion, model, finish = self._parse(response)
        except TimeoutError as exc:
            raise self._error(
                ErrorKind.TIMEOUT, f"no complete answer within the attempt's {timeout_s:g} s"
            ) from exc
        except (ProviderError, InputError):
            raise
        except Exception as exc:
            translated = self._translate(exc)
            if translated is None:
                raise  # not a provider failure: a bug should surface as itself
            raise translated from exc
        return Completion(
            text=text,
            prompt_tokens=prompt,
            completion_tokens=completion,
            model=model or e.model,
            latency_s=time.perf_counter() - started,
            raw_finish_reason=finish,
        )

    async def aclose(self) -> None:
        """Nothing to release: LiteLLM owns its clients."""

    def __repr__(self) -> str:
        return f"LiteLLMProvider(model={self.endpoint.model!r})"

    # -- internals -------------------------------------------------------------------

    def _parse(self, response: Any) -> tuple[str, int, int, str | None, str | None]:
        try:
            choice = _get(response, "choices")[0]
            finish = _get(choice, "finish_reason")
            content = _get(_get(choice, "message"), "content")
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise self._error(ErrorKind.MALFORMED, f"unexpected LiteLLM response: {exc}") from exc
        if finish == "content_filter":
            raise self._error(ErrorKind.CONTENT_FILTER, "finish_reason 'content_filter'")
        if not isinstance(content, str):
            raise self._error(
                ErrorKind.MALFORMED,
                f"message.content: expected a string, got {type(content).__name__}",
            )
        prompt, completion = _usage(_get(response, "usage", None))
        model = _get(response, "model", None)
        return (
            content,
            prompt,
            completion,
            model if isinstance(model, str) else None,
            finish if isinstance(finish, str) else None,
        )

    async def _stream(self, kwargs: dict[str, Any]) -> tuple[str, int, int, str | None, str | None]:
        e = self.endpoint
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + e.first_token_timeout_s if e.first_token_timeout_s else None
        stream = await self._litellm.acompletion(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        chunks: AsyncIterator[Any] = aiter(stream)
        parts: list[str] = []
        finish: str | None = None
        prompt = completion = 0
        model: str | None = None
        got_token = False
        last = loop.time()
        while True:
            if not got_token and first_deadline is not None:
                limit, why = first_deadline, f"no first token within {e.first_token_timeout_s:g} s"
            elif e.stall_timeout_s is not None:
                limit = last + e.stall_timeout_s
                why = (
                    f"stream stalled for more than {e.stall_timeout_s:g} s; "
                    "partial answer discarded"
                )
            else:
                limit, why = None, ""
            try:
                async with asyncio.timeout_at(limit):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                raise self._error(ErrorKind.TIMEOUT, why) from exc
            last = loop.time()
            model = _get(chunk, "model", None) or model
            usage = _get(chunk, "usage", None)
            if usage:
                prompt, completion = _usage(usage)
            choices = _get(chunk, "choices", None) or []
            if not choices:
                continue
            delta = _get(choices[0], "delta", None)
            content = _get(delta, "content", None) if delta is not None else None
            if isinstance(content, str) and content:
                parts.append(content)
                got_token = True
            reason = _get(choices[0], "finish_reason", None)
            if reason == "content_filter":
                raise self._error(ErrorKind.CONTENT_FILTER, "finish_reason 'content_filter'")
            if isinstance(reason, str):
                finish, got_token = reason, True
        if finish is None:
            # LiteLLM hides the wire terminator; a finish_reason is our only proof
            # that the answer is whole.
            raise self._error(
                ErrorKind.CONNECTION,
                f"stream ended without a finish_reason after {sum(map(len, parts))} chars; "
                "partial answer discarded",
            )
        return "".join(parts), prompt, completion, model, finish

    def _translate(self, exc: Exception) -> ProviderError | None:
        kind: ErrorKind | None = None
        for cls in type(exc).__mro__:
            kind = LITELLM_ERROR_KINDS.get(cls.__name__)
            if kind is not None:
                break
        status = getattr(exc, "status_code", None)
        status = status if isinstance(status, int) and not isinstance(status, bool) else None
        message = str(getattr(exc, "message", None) or exc)
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


def _usage(usage: Any) -> tuple[int, int]:
    if not usage:
        return 0, 0
    prompt = _get(usage, "prompt_tokens", 0) or 0
    completion = _get(usage, "completion_tokens", 0) or 0
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )

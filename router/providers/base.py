"""The provider contract: one attempt at one model, ending in a Completion or a ProviderError.

Every implementation (:class:`~router.providers.openai.OpenAIProvider`,
:class:`~router.providers.anthropic.AnthropicProvider`,
:class:`~router.providers.litellm_adapter.LiteLLMProvider`, a user's own) obeys the
same contract, and one shared test suite checks it against a real loopback server.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from router.errors import CostRouteError
from router.outcome import ErrorKind
from router.providers.endpoint import Endpoint


@dataclass(slots=True, frozen=True)
class Completion:
    """A successful attempt.

    ``text`` is the whole answer (a stream's deltas joined); ``""`` when the answer
    is only tool calls. ``prompt_tokens`` and ``completion_tokens`` are the
    provider's reported usage; ``0`` means the provider did not report it (a stream
    without a usage chunk), so a driver that prices the attempt should fall back to
    its own estimate when both are 0. ``model`` is the model name the provider
    reported (else the endpoint's). ``latency_s`` is the wall time of the whole
    attempt. ``raw_finish_reason`` is the provider's own word (``"stop"``,
    ``"length"``, ``"tool_calls"``, ``"end_turn"``, ``"tool_use"``...) or ``None``.

    ``request_id`` is the provider's id for this answer (OpenAI: the body's ``id``,
    else the ``x-request-id`` header; Anthropic: the message ``id``, else the
    ``request-id`` header), ``None`` if it sent none. ``tool_calls`` are the tool
    calls the model asked for, in OpenAI format whatever the provider
    (``[{"id", "type": "function", "function": {"name", "arguments": <JSON text>}}]``),
    ``None`` if it asked for none. ``ttft_s`` is the time from sending the request to
    the first content token (text or tool call) of a streamed answer; ``None`` when
    the answer was not streamed.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    latency_s: float
    raw_finish_reason: str | None
    request_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    ttft_s: float | None = None

    def cost_usd(self, input_per_mtok: float, output_per_mtok: float) -> float:
        """What this completion cost at the model profile's prices (USD per million tokens)."""
        return (
            self.prompt_tokens * input_per_mtok + self.completion_tokens * output_per_mtok
        ) / 1_000_000


@dataclass(slots=True, frozen=True)
class TextDelta:
    """A piece of a streamed answer's text; the pieces of one attempt, joined in order,
    are its :attr:`Completion.text`."""

    text: str


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """A piece of the ``index``-th tool call of a streamed answer (0-based, in the
    answer's order, whatever the provider's own numbering).

    The first piece of a call carries its ``id`` and ``name`` (``None`` in later
    pieces); the ``arguments`` pieces, joined, are the call's JSON arguments as the
    provider sent them. :attr:`Completion.tool_calls` in the final :class:`StreamEnd`
    holds the same calls assembled and normalised (compact JSON text).
    """

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True, frozen=True)
class StreamEnd:
    """The last event of a successful stream: the whole answer, exactly what
    :meth:`ModelProvider.complete` would have returned for it."""

    completion: Completion


#: What :meth:`ModelProvider.stream` yields.
StreamEvent = TextDelta | ToolCallDelta | StreamEnd


def completion_events(completion: Completion) -> Iterator[StreamEvent]:
    """A whole :class:`Completion` as stream events: its text as one delta (if any), one
    delta per tool call, then the :class:`StreamEnd`. For providers that cannot stream."""
    if completion.text:
        yield TextDelta(completion.text)
    for i, call in enumerate(completion.tool_calls or ()):
        function = call["function"]
        yield ToolCallDelta(i, call["id"], function["name"], function["arguments"])
    yield StreamEnd(completion)


_REDACTED = "[REDACTED]"
# Credentials in the shapes a server or proxy might echo back: header lines and
# bearer tokens. The provider's own key is also replaced verbatim (see ProviderError).
_HEADER_SECRETS = re.compile(
    r"(?i)\b(authorization|x-api-key|api-key|proxy-authorization|cookie)(\"?\s*[:=]\s*)"
    r"(\"?)[^\"\r\n,}]*"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret, credential header value and bearer token redacted.

    Used on everything a server sends back before it goes into an error message:
    a misbehaving proxy may echo the request's headers (and so the key) in its body.
    """
    for secret in secrets:
        # Very short "secrets" (e.g. a dummy "x" key for a local server) would shred
        # the message and protect nothing.
        if secret and len(secret) >= 8:
            text = text.replace(secret, _REDACTED)
    text = _HEADER_SECRETS.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{_REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {_REDACTED}", text)


class ProviderError(CostRouteError):
    """An attempt that failed, classified for the routing policy.

    ``kind`` is never :attr:`ErrorKind.OK`. ``status`` is the HTTP status when there
    was one; ``retry_after_s`` the provider's requested wait (429/503), in seconds;
    ``detail`` one human line about what happened. ``str(exc)`` is
    ``"<kind>: <detail>"``.

    The detail is scrubbed on construction: ``secrets`` (the provider passes its API
    key) and anything shaped like a credential header or bearer token are replaced
    by ``[REDACTED]``, so neither the message nor the repr can leak a key even when
    a server echoes the request back. Request headers are never put in a detail.
    """

    def __init__(
        self,
        kind: ErrorKind,
        detail: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        if kind is ErrorKind.OK:
            raise ValueError("ProviderError: kind must be a failure, got ErrorKind.OK")
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s
        # One line: the detail ends up in logs, trace rows and CLI output.
        self.detail = " ".join(scrub(str(detail), secrets).split())
        super().__init__(f"{kind.value}: {self.detail}")

    def __repr__(self) -> str:
        return (
            f"ProviderError(kind={self.kind.value!r}, status={self.status!r}, "
            f"retry_after_s={self.retry_after_s!r}, detail={self.detail!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keep kind/status across pickling (multiprocessing pools, Optuna workers).
        return (
            _rebuild_provider_error,
            (self.kind, self.detail, self.status, self.retry_after_s),
        )


def _rebuild_provider_error(
    kind: ErrorKind, detail: str, status: int | None, retry_after_s: float | None
) -> ProviderError:
    return ProviderError(kind, detail, status=status, retry_after_s=retry_after_s)


class ModelProvider(ABC):
    """Makes one attempt at one model endpoint.

    Contract (every implementation; checked by ``tests/router/test_providers.py``):

    * :meth:`complete` sends ``messages`` -- OpenAI chat format: roles
      ``system``/``user``/``assistant``/``tool``, ``content`` a string or a list of
      content parts, assistant ``tool_calls``, tool ``tool_call_id`` (see
      :class:`~router.task.Task`) -- with the optional OpenAI ``tools`` and
      ``tool_choice``, each mapped to the provider's own dialect, and returns a
      :class:`Completion`, or raises :class:`ProviderError` -- never any other
      exception for a failure of the provider, the network or the answer's shape.
      Third-party exceptions are translated at the boundary (``raise
      ProviderError(...) from exc``). Malformed arguments (messages, tools, timeout)
      are the caller's bug: :class:`~router.errors.InputError`, before any I/O.
    * The WHOLE attempt -- connect, request, waiting, reading, a stream to its end --
      ends within ``timeout_s`` seconds; past it the attempt is abandoned.
    * Timeouts say how far the answer got: ``first_token_timeout`` when nothing came
      back in time (no response headers; when streaming, no first content token),
      whether the endpoint's ``first_token_timeout_s``, a read timeout or the
      attempt's deadline fired; ``timeout`` when the answer had started (a stream
      stalled past the endpoint's ``stall_timeout_s``, a body read too slow, the
      deadline after the headers or the first token).
    * Connections: ``connect`` when none could be made (refused, DNS failure,
      connect timeout), ``connection`` when an established one was reset or cut.
    * A partial answer is never a success: a stream cut short, stalled, too slow to
      start or ending without its terminator raises.
    * No retries here: one call is one attempt. Retrying, backoff and fallback are
      the routing policy's decisions, driven by :attr:`ProviderError.kind` and
      :attr:`ProviderError.retry_after_s`.
    * The API key never appears in an exception's message or repr.
    * Cancelling the awaiting task cancels the attempt (``CancelledError`` propagates).

    :meth:`stream` is the same attempt with the answer handed over as it arrives
    (see its contract). :meth:`aclose` releases connections the provider owns; a
    provider is also an async context manager that closes itself on exit.
    """

    endpoint: Endpoint

    @abstractmethod
    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        timeout_s: float,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> Completion:
        """One attempt; see the class docstring for the contract."""

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        timeout_s: float,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """One attempt whose answer is yielded as it arrives.

        Contract (on top of :meth:`complete`'s, whose arguments, timeout kinds and
        error mapping it shares):

        * yields :class:`TextDelta` and :class:`ToolCallDelta` events in the answer's
          order, then exactly one :class:`StreamEnd` carrying the whole
          :class:`Completion` (``ttft_s`` set when the provider streamed);
        * a failure raises :class:`ProviderError`, possibly after some deltas: a
          partial answer is never a success, and what to do with the pieces already
          handed over is the caller's decision (the gateway ends its client's stream
          with an error event);
        * ``timeout_s`` bounds the whole attempt from the call, including the time the
          caller spends between two events;
        * a caller that stops early closes the generator (``contextlib.aclosing``);
          closing, or cancelling the awaiting task, abandons the attempt and releases
          its connection.

        This default calls :meth:`complete` and yields the whole answer at once
        (:func:`completion_events`), so every provider can be streamed from; the HTTP
        providers override it to stream from the wire, whatever ``endpoint.stream``.
        """
        if tools is None and tool_choice is None:
            # A user's provider may predate the tool keywords.
            completion = await self.complete(messages, timeout_s=timeout_s)
        else:
            completion = await self.complete(
                messages, timeout_s=timeout_s, tools=tools, tool_choice=tool_choice
            )
        for event in completion_events(completion):
            yield event

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the provider owns (idempotent). A client passed in is not closed."""

    async def __aenter__(self) -> ModelProvider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

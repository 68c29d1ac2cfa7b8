"""The provider contract: one attempt at one model, ending in a Completion or a ProviderError.

Every implementation (:class:`~router.providers.openai.OpenAIProvider`,
:class:`~router.providers.anthropic.AnthropicProvider`,
:class:`~router.providers.litellm_adapter.LiteLLMProvider`, a user's own) obeys the
same contract, and one shared test suite checks it against a real loopback server.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from router.errors import CostRouteError
from router.outcome import ErrorKind
from router.providers.endpoint import Endpoint


@dataclass(slots=True, frozen=True)
class Completion:
    """A successful attempt.

    ``text`` is the whole answer (a stream's deltas joined). ``prompt_tokens`` and
    ``completion_tokens`` are the provider's reported usage; ``0`` means the provider
    did not report it (a stream without a usage chunk), so a driver that prices the
    attempt should fall back to its own estimate when both are 0. ``model`` is the
    model name the provider reported (else the endpoint's). ``latency_s`` is the wall
    time of the whole attempt. ``raw_finish_reason`` is the provider's own word
    (``"stop"``, ``"length"``, ``"end_turn"``, ``"max_tokens"``...) or ``None``.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    latency_s: float
    raw_finish_reason: str | None

    def cost_usd(self, input_per_mtok: float, output_per_mtok: float) -> float:
        """What this completion cost at the model profile's prices (USD per million tokens)."""
        return (
            self.prompt_tokens * input_per_mtok + self.completion_tokens * output_per_mtok
        ) / 1_000_000


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

    * :meth:`complete` sends ``messages`` (``[{"role": ..., "content": ...}]``,
      roles ``system``/``user``/``assistant``) and returns a :class:`Completion`,
      or raises :class:`ProviderError` — never any other exception for a failure
      of the provider, the network or the answer's shape. Third-party exceptions
      are translated at the boundary (``raise ProviderError(...) from exc``).
    * The WHOLE attempt — connect, request, waiting, reading, a stream to its end —
      ends within ``timeout_s`` seconds; past it the attempt is abandoned and
      :class:`ProviderError` of kind ``timeout`` raised.
    * A partial answer is never a success: a stream cut short, stalled past the
      endpoint's ``stall_timeout_s``, slower than its ``first_token_timeout_s`` to
      start, or ending without its terminator raises (``timeout`` or
      ``connection``).
    * No retries here: one call is one attempt. Retrying, backoff and fallback are
      the routing policy's decisions, driven by :attr:`ProviderError.kind` and
      :attr:`ProviderError.retry_after_s`.
    * The API key never appears in an exception's message or repr.
    * Cancelling the awaiting task cancels the attempt (``CancelledError`` propagates).

    :meth:`aclose` releases connections the provider owns; a provider is also an
    async context manager that closes itself on exit.
    """

    endpoint: Endpoint

    @abstractmethod
    async def complete(self, messages: list[dict[str, str]], *, timeout_s: float) -> Completion:
        """One attempt; see the class docstring for the contract."""

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

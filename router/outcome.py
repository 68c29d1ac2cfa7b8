"""What happened on one attempt: the vocabulary both drivers report to the policy.

A driver (live or simulated) carries out a :class:`~router.result.Call` and hands
the policy an :class:`Outcome`. The policy never looks behind it: an HTTP status,
a simulated outage or a failed JSON Schema check all arrive as an
:class:`ErrorKind`.

Two questions are kept apart (see ``docs/`` and the README):

* *availability* — is the provider up? Timeouts, refused or reset connections,
  5xx and broken bodies answer it; only these feed a circuit breaker by default
  (:data:`AVAILABILITY_FAILURES`, configurable as ``breaker.count``);
* *quality* — does this model get this task type right? A failed validation (or,
  in the simulator, a task the model did not complete) answers it; it feeds the
  per-(model, route) completion statistic, never the breaker by default.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """Why an attempt failed. ``OK`` means it succeeded (and passed validation)."""

    OK = "ok"
    # Nothing came back in time: no response headers, or (streaming) no first content
    # token, before the first-token timeout or the attempt's deadline. A silent model is
    # usually silent again, so this kind is not retried on the same model by default.
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"
    # The answer started but did not finish in time: a stream that stalled past its
    # stall timeout, or the attempt's total deadline after the first byte.
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"  # 429, possibly with Retry-After
    SERVER_ERROR = "server_error"  # 5xx (a 503 may carry Retry-After)
    CONNECT = "connect"  # the connection could not be made (refused, DNS, connect timeout)
    CONNECTION = "connection"  # an established connection was reset or cut mid-response
    MALFORMED = "malformed"  # a body that is not the expected shape
    VALIDATION = "validation"  # well-formed, but the output failed its task's validator
    # (the simulator reports a task its model did not complete as VALIDATION too: in live
    # traffic, validation is how an incomplete answer is detected)
    BAD_REQUEST = "bad_request"  # 400: resending the same request cannot help
    AUTH = "auth"  # 401 / 403, or no API key to send
    CONTEXT_LENGTH = "context_length"  # 400 for a prompt too long for this model
    CONTENT_FILTER = "content_filter"  # the provider refused the content


#: Kinds never retried on the same model (the request itself is the problem there).
NON_RETRYABLE: frozenset[ErrorKind] = frozenset(
    {ErrorKind.BAD_REQUEST, ErrorKind.AUTH, ErrorKind.CONTEXT_LENGTH, ErrorKind.CONTENT_FILTER}
)

#: Kinds that say the provider is down, overloaded or broken: the breaker's default
#: ``count``. Rate limits are left out (a 429 is the provider working as designed;
#: count it with ``breaker.count`` if your provider's 429s mean overload).
AVAILABILITY_FAILURES: frozenset[ErrorKind] = frozenset(
    {
        ErrorKind.FIRST_TOKEN_TIMEOUT,
        ErrorKind.TIMEOUT,
        ErrorKind.SERVER_ERROR,
        ErrorKind.CONNECT,
        ErrorKind.CONNECTION,
        ErrorKind.MALFORMED,
    }
)

#: Backwards-compatible name: the default set of kinds a breaker counts.
BREAKER_FAILURES = AVAILABILITY_FAILURES

#: Kinds retried on the same model by default (a route's ``retry_on``). Not retried:
#: a first-token timeout or a refused connection (the model is silent or away: fall
#: back at once), and the non-retryable kinds above.
DEFAULT_RETRY_ON: frozenset[ErrorKind] = frozenset(
    {
        ErrorKind.TIMEOUT,
        ErrorKind.RATE_LIMITED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.CONNECTION,
        ErrorKind.MALFORMED,
        ErrorKind.VALIDATION,
    }
)

#: Kinds that say something about a model's *quality* for a task type.
QUALITY_KINDS: frozenset[ErrorKind] = frozenset({ErrorKind.OK, ErrorKind.VALIDATION})


class Outcome:
    """The result of one attempt, as a driver observed it.

    ``latency_s`` is the attempt's wall (or simulated) duration; ``cost_usd`` what the
    attempt actually cost (``None``: use the policy's estimate); ``retry_after_s`` the
    provider's Retry-After (429 or 503); ``output`` the validated answer on success.

    Measured facts, when the driver has them (``None`` otherwise): ``prompt_tokens``
    and ``completion_tokens`` the provider's reported usage, ``provider_model`` the
    model name the provider says answered, ``request_id`` the provider's id for the
    request, ``status`` the HTTP status, ``ttft_s`` the time to the first token of a
    streamed answer.
    """

    __slots__ = (
        "kind",
        "latency_s",
        "cost_usd",
        "retry_after_s",
        "output",
        "detail",
        "prompt_tokens",
        "completion_tokens",
        "provider_model",
        "request_id",
        "status",
        "ttft_s",
    )

    def __init__(
        self,
        kind: ErrorKind,
        latency_s: float,
        cost_usd: float | None = None,
        retry_after_s: float | None = None,
        output: object = None,
        detail: str = "",
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        provider_model: str | None = None,
        request_id: str | None = None,
        status: int | None = None,
        ttft_s: float | None = None,
    ) -> None:
        self.kind = kind
        self.latency_s = latency_s
        self.cost_usd = cost_usd
        self.retry_after_s = retry_after_s
        self.output = output
        self.detail = detail
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.provider_model = provider_model
        self.request_id = request_id
        self.status = status
        self.ttft_s = ttft_s

    @property
    def ok(self) -> bool:
        return self.kind is ErrorKind.OK

    def __repr__(self) -> str:
        return f"Outcome({self.kind.value}, latency_s={self.latency_s:.3f}, cost={self.cost_usd})"

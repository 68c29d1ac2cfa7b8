"""What happened on one attempt: the vocabulary both drivers report to the policy.

A driver (live or simulated) carries out a :class:`~router.actions.Call` and hands
the policy an :class:`Outcome`. The policy never looks behind it: an HTTP status,
a simulated outage or a failed JSON Schema check all arrive as an
:class:`ErrorKind`.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """Why an attempt failed. ``OK`` means it succeeded (and passed validation)."""

    OK = "ok"
    TIMEOUT = "timeout"  # the attempt's timeout fired (no answer, stalled stream)
    RATE_LIMITED = "rate_limited"  # 429, possibly with Retry-After
    SERVER_ERROR = "server_error"  # 5xx
    CONNECTION = "connection"  # refused, reset, cut mid-response
    MALFORMED = "malformed"  # a body that is not the expected shape
    VALIDATION = "validation"  # well-formed, but the output failed its task's validator
    # (the simulator reports a task its model did not complete as VALIDATION too: in live
    # traffic, validation is how an incomplete answer is detected)
    BAD_REQUEST = "bad_request"  # 400: resending the same request cannot help
    AUTH = "auth"  # 401 / 403
    CONTEXT_LENGTH = "context_length"  # 400 for a prompt too long for this model
    CONTENT_FILTER = "content_filter"  # the provider refused the content


#: Kinds never retried on the same model (the request itself is the problem there).
NON_RETRYABLE: frozenset[ErrorKind] = frozenset(
    {ErrorKind.BAD_REQUEST, ErrorKind.AUTH, ErrorKind.CONTEXT_LENGTH, ErrorKind.CONTENT_FILTER}
)

#: Kinds that count against a model's health and circuit breaker. A bad request or a
#: refusal says something about the task, not about the model's availability.
BREAKER_FAILURES: frozenset[ErrorKind] = frozenset(
    {
        ErrorKind.TIMEOUT,
        ErrorKind.RATE_LIMITED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.CONNECTION,
        ErrorKind.MALFORMED,
        ErrorKind.VALIDATION,
        ErrorKind.AUTH,
    }
)


class Outcome:
    """The result of one attempt, as a driver observed it.

    ``latency_s`` is the attempt's wall (or simulated) duration; ``cost_usd`` what the
    attempt actually cost (``None``: use the policy's estimate); ``retry_after_s`` the
    provider's Retry-After on a 429; ``output`` the validated answer on success.
    """

    __slots__ = ("kind", "latency_s", "cost_usd", "retry_after_s", "output", "detail")

    def __init__(
        self,
        kind: ErrorKind,
        latency_s: float,
        cost_usd: float | None = None,
        retry_after_s: float | None = None,
        output: object = None,
        detail: str = "",
    ) -> None:
        self.kind = kind
        self.latency_s = latency_s
        self.cost_usd = cost_usd
        self.retry_after_s = retry_after_s
        self.output = output
        self.detail = detail

    @property
    def ok(self) -> bool:
        return self.kind is ErrorKind.OK

    def __repr__(self) -> str:
        return f"Outcome({self.kind.value}, latency_s={self.latency_s:.3f}, cost={self.cost_usd})"

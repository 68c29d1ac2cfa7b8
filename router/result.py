"""What the policy answers (actions) and what a routed task ends with (results)."""

from __future__ import annotations


class Attempt:
    """One call that was made: model, its 1-based attempt number on that model,
    when it started (driver clock), how it ended, how long it took, what it cost.

    Measured facts the driver had (``None`` otherwise): the provider's reported
    ``prompt_tokens``/``completion_tokens``, ``provider_model`` (the model name the
    provider says answered), ``request_id``, HTTP ``status``, ``retry_after_s`` and
    ``ttft_s`` (time to the first streamed token).
    """

    __slots__ = (
        "model",
        "number",
        "started_s",
        "kind",
        "latency_s",
        "cost_usd",
        "detail",
        "prompt_tokens",
        "completion_tokens",
        "provider_model",
        "request_id",
        "status",
        "retry_after_s",
        "ttft_s",
    )

    def __init__(
        self,
        model: str,
        number: int,
        started_s: float,
        kind: str,
        latency_s: float,
        cost_usd: float,
        detail: str = "",
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        provider_model: str | None = None,
        request_id: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
        ttft_s: float | None = None,
    ) -> None:
        self.model = model
        self.number = number
        self.started_s = started_s
        self.kind = kind
        self.latency_s = latency_s
        self.cost_usd = cost_usd
        self.detail = detail
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.provider_model = provider_model
        self.request_id = request_id
        self.status = status
        self.retry_after_s = retry_after_s
        self.ttft_s = ttft_s

    def as_dict(self) -> dict[str, object]:
        return {s: getattr(self, s) for s in self.__slots__}

    def __repr__(self) -> str:
        return (
            f"Attempt({self.model}#{self.number} {self.kind} "
            f"{self.latency_s:.3f}s ${self.cost_usd:g})"
        )


class TaskResult:
    """How a task ended.

    ``success`` and ``model`` (the model that completed it, or ``None``);
    ``attempts`` every call made, in order; ``skips`` every candidate passed over
    as ``(model, reason)`` with reasons ``preview``, ``deprecated``, ``context``, ``cost``,
    ``latency``, ``breaker_open``, ``budget`` or ``deadline``; ``error`` why a
    failed task failed: ``exhausted`` (every candidate tried or skipped),
    ``no_candidate`` (all skipped, none called), ``deadline``,
    ``content_filter``, ``bad_spec`` (the task's own spec or messages are
    invalid; ``detail`` says how), ``cancelled`` or ``error`` (the driver raised
    mid-call; ``detail`` names the exception). ``latency_s`` is from the task's
    start to its end, waits included; ``cost_usd`` the sum of its attempts' costs.
    Skip reasons also include ``quality`` (observed completion below the route's
    ``min_observed_completion``).
    ``first_candidate`` is the model the route would have called first for this
    task (its chain's head, or the best-scored model with ``ordering: score``).
    """

    __slots__ = (
        "task_id",
        "task_type",
        "route",
        "success",
        "model",
        "output",
        "cost_usd",
        "started_s",
        "latency_s",
        "attempts",
        "skips",
        "error",
        "detail",
        "first_candidate",
    )

    def __init__(
        self,
        task_id: str,
        task_type: str,
        route: str,
        success: bool,
        model: str | None,
        output: object,
        cost_usd: float,
        started_s: float,
        latency_s: float,
        attempts: list[Attempt],
        skips: list[tuple[str, str]],
        error: str | None,
        detail: str | None = None,
        first_candidate: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.task_type = task_type
        self.route = route
        self.success = success
        self.model = model
        self.output = output
        self.cost_usd = cost_usd
        self.started_s = started_s
        self.latency_s = latency_s
        self.attempts = attempts
        self.skips = skips
        self.error = error
        self.detail = detail
        self.first_candidate = first_candidate

    @property
    def models_tried(self) -> list[str]:
        """Distinct models called, in first-call order."""
        seen: list[str] = []
        for a in self.attempts:
            if a.model not in seen:
                seen.append(a.model)
        return seen

    @property
    def fell_back(self) -> bool:
        """True when the task was completed by a model other than its route's first
        candidate, whatever the reason (the first failed, or was skipped for its
        breaker, cost, latency...)."""
        return self.success and self.model != self.first_candidate

    @property
    def retried(self) -> bool:
        """True when some model was called more than once for this task."""
        seen: set[str] = set()
        for a in self.attempts:
            if a.model in seen:
                return True
            seen.add(a.model)
        return False

    @property
    def final_attempt(self) -> Attempt | None:
        """The last call made (the one that answered, for a success)."""
        return self.attempts[-1] if self.attempts else None

    @property
    def prompt_tokens(self) -> int | None:
        """Prompt tokens the providers reported over all attempts (``None``: none did)."""
        counts = [a.prompt_tokens for a in self.attempts if a.prompt_tokens is not None]
        return sum(counts) if counts else None

    @property
    def completion_tokens(self) -> int | None:
        """Completion tokens the providers reported over all attempts (``None``: none did)."""
        counts = [a.completion_tokens for a in self.attempts if a.completion_tokens is not None]
        return sum(counts) if counts else None

    @property
    def provider_model(self) -> str | None:
        """The model name the provider reported for the final attempt."""
        last = self.final_attempt
        return last.provider_model if last is not None else None

    @property
    def request_id(self) -> str | None:
        """The provider's request id of the final attempt."""
        last = self.final_attempt
        return last.request_id if last is not None else None

    def reasons(self) -> list[str]:
        """Every skip and failure as ``model: reason`` lines, in order."""
        out = [f"{m}: skipped ({r})" for m, r in self.skips]
        out += [f"{a.model}#{a.number}: {a.kind}" for a in self.attempts if a.kind != "ok"]
        if self.detail:
            out.append(f"{self.error}: {self.detail}")
        return out

    def __repr__(self) -> str:
        state = f"ok via {self.model}" if self.success else f"failed ({self.error})"
        return (
            f"TaskResult({self.task_id} {state}, {len(self.attempts)} attempts, "
            f"${self.cost_usd:g}, {self.latency_s:.3f}s)"
        )


class Call:
    """Action: call ``model`` now, giving up after ``timeout_s``."""

    __slots__ = ("model", "timeout_s", "attempt", "model_index")

    def __init__(self, model: str, timeout_s: float, attempt: int, model_index: int) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self.attempt = attempt
        self.model_index = model_index

    def __repr__(self) -> str:
        return f"Call({self.model}#{self.attempt}, timeout_s={self.timeout_s:.3f})"


class Wait:
    """Action: wait ``seconds``, then ask the task's run for its next action."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"Wait({self.seconds:.3f})"


class Finish:
    """Action: the task is over; ``result`` says how."""

    __slots__ = ("result",)

    def __init__(self, result: TaskResult) -> None:
        self.result = result

    def __repr__(self) -> str:
        return f"Finish({self.result!r})"


Action = Call | Wait | Finish

"""The routing policy: a sans-I/O state machine shared by every driver.

The policy never sleeps, never reads a clock and never does I/O. A driver asks
it to :meth:`RoutingPolicy.start` a task at time ``now`` and then loops::

    run = policy.start(task, now)
    action = run.next_action(now)
    while not isinstance(action, Finish):
        if isinstance(action, Call):       # call action.model, at most action.timeout_s
            outcome = ...                  # the driver's I/O (HTTP, or a simulated provider)
            action = run.record(outcome, now_after_the_call)
        else:                              # Wait: sleep action.seconds, then
            action = run.next_action(now_after_the_wait)
    result = action.result

The live driver (asyncio) and the simulation driver (SimPy) both run exactly
this loop, so the breaker, the budget, the fallback order, the SLA filters and
the scoring are one implementation.

Rules a run follows, for each candidate of its route in order (written chain
order, or score order):

1. *Filters* skip a candidate with a reason: ``preview``/``deprecated`` (only in
   production), ``cost`` (the attempt's estimate would take the task past
   ``max_cost_per_task``), ``latency`` (expected latency — observed EWMA once
   there is one, else the profile's — above ``max_latency_ms``),
   ``breaker_open``, ``budget`` (a cap would be exceeded) and ``deadline``
   (the expected latency no longer fits before the task's deadline).
2. *Attempts*: up to ``attempts_per_model`` calls, each with timeout
   ``min(attempt_timeout, time left)``, so no attempt can outlive the SLA.
3. *Retries* wait an exponential backoff with jitter; after a 429 at least its
   Retry-After. If that wait would not leave room for another attempt before
   the deadline, the run falls back to the next candidate at once instead.
4. *Non-retryable* failures (400, 401, 403, context length) fall back without
   a retry; a content-filter refusal ends the task unless the route says
   ``fallback_on_refusal``.

Every decision's randomness (backoff and breaker jitter) comes from one
``random.Random(seed)``: the same seed and the same outcomes give the same
decisions.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from router.breaker import CircuitBreaker
from router.config import Route, RouterConfig
from router.health import ModelHealth
from router.ledger import SpendLedger
from router.outcome import BREAKER_FAILURES, NON_RETRYABLE, ErrorKind, Outcome
from router.result import Attempt, Call, Finish, TaskResult, Wait
from router.scoring import cost_per_success, score
from router.task import Task

_OK = ErrorKind.OK
_RATE_LIMITED = ErrorKind.RATE_LIMITED
_CONTENT_FILTER = ErrorKind.CONTENT_FILTER
# Outcomes whose latency says how long an answer takes (fast failures do not).
_LATENCY_KINDS = frozenset(
    {ErrorKind.OK, ErrorKind.VALIDATION, ErrorKind.MALFORMED, ErrorKind.TIMEOUT}
)


class _Model:
    """Per-model facts the policy needs on every call, precomputed once."""

    __slots__ = (
        "index",
        "id",
        "provider",
        "status",
        "cost",
        "in_price",
        "out_price",
        "latency_s",
        "completion",
        "completion_by_type",
    )

    def __init__(self, index: int, profile) -> None:  # noqa: ANN001 - ModelProfile
        self.index = index
        self.id = profile.id
        self.provider = profile.provider
        self.status = profile.status
        token_priced = profile.input_per_mtok is not None and profile.output_per_mtok is not None
        self.in_price = profile.input_per_mtok / 1e6 if token_priced else None
        self.out_price = profile.output_per_mtok / 1e6 if token_priced else None
        # A model without a cost figure plans as free (documented in the config).
        self.cost = 0.0 if profile.cost_per_task is None else profile.cost_per_task
        self.latency_s = profile.avg_latency_ms / 1000.0 if profile.avg_latency_ms else None
        self.completion = profile.completion_rate
        self.completion_by_type = dict(profile.completion_by_type)

    def estimate(self, prompt_tokens: int, completion_tokens: int) -> float:
        if self.in_price is not None:
            return prompt_tokens * self.in_price + completion_tokens * self.out_price
        return self.cost


class _Plan:
    """A route compiled for fast per-task use."""

    __slots__ = (
        "name",
        "route",
        "chain",
        "static_skip",
        "max_cost",
        "max_latency_s",
        "attempt_timeout_s",
        "attempts",
        "backoff_base",
        "backoff_cap",
        "jitter",
        "by_score",
        "refusal_falls_back",
    )

    def __init__(self, name: str, route: Route, models: dict[str, _Model], production: bool):
        self.name = name
        self.route = route
        self.chain = [models[m] for m in route.chain]
        # Environment filters never change while a config is loaded: decide them once.
        self.static_skip: list[str | None] = [
            m.status if production and m.status != "stable" else None for m in self.chain
        ]
        self.max_cost = route.max_cost_per_task
        self.max_latency_s = route.max_latency_ms / 1000.0
        self.attempt_timeout_s = (
            route.attempt_timeout_ms / 1000.0 if route.attempt_timeout_ms else self.max_latency_s
        )
        self.attempts = route.attempts_per_model
        self.backoff_base = route.backoff.base_s
        self.backoff_cap = route.backoff.cap_s
        self.jitter = route.backoff.jitter
        self.by_score = route.ordering == "score"
        self.refusal_falls_back = route.fallback_on_refusal


class RoutingPolicy:
    """Shared routing state (breakers, health, spend) and the per-task runs.

    One policy serves many tasks in flight; it is not thread-safe (one event
    loop or one simulation owns it). ``seed`` seeds every random decision.
    """

    def __init__(self, config: RouterConfig, *, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)
        self.models: list[_Model] = []
        self.model_index: dict[str, int] = {}
        self.breakers: list[CircuitBreaker] = []
        self.health: list[ModelHealth] = []
        self.ledger = SpendLedger(config.budget, [], [])
        self._install(config)
        self.tasks_finished = 0
        self.tasks_succeeded = 0

    def reconfigure(self, config: RouterConfig) -> None:
        """Swap in a new config without losing state or disturbing tasks in flight.

        Breakers, health statistics and today's spend carry over for models that
        keep their id; new models start fresh. Runs already started finish under
        the routes they started with (they hold their own compiled route).
        """
        self._install(config)

    def _install(self, config: RouterConfig) -> None:
        # Model indices are stable for the policy's lifetime: in-flight runs and the
        # ledger's reservations refer to them. A removed model keeps its slot.
        models = list(self.models)
        index = dict(self.model_index)
        for p in config.models:
            i = index.get(p.id)
            if i is None:
                i = len(models)
                models.append(_Model(i, p))
                index[p.id] = i
                self.breakers.append(CircuitBreaker(config.breaker, self.rng))
                self.health.append(
                    ModelHealth(config.health.ewma_alpha, config.health.error_window)
                )
            else:
                models[i] = _Model(i, p)
        for b in self.breakers:
            b.reconfigure(config.breaker)
        for h in self.health:
            h.alpha = config.health.ewma_alpha
        self.ledger.reconfigure(config.budget, [m.id for m in models], [m.provider for m in models])
        current = {p.id for p in config.models}
        self.models = models
        self.model_index = {m.id: m.index for m in models if m.id in current}
        by_id = {m.id: m for m in models if m.id in current}
        production = config.environment == "production"
        self._plans = {
            name: _Plan(name, route, by_id, production) for name, route in config.routes.items()
        }
        self._plan_for: dict[str, _Plan] = {}
        self.config = config
        self._zero_floor = config.scoring.zero_cost_floor_usd

    # -- task lifecycle ------------------------------------------------------------
    def plan_for(self, task_type: str) -> _Plan:
        plan = self._plan_for.get(task_type)
        if plan is None:
            name, _ = self.config.route_for(task_type)
            plan = self._plan_for[task_type] = self._plans[name]
        return plan

    def start(self, task: Task, now: float) -> TaskRun:
        """Begin routing ``task`` at time ``now``; drive the returned run."""
        task_type = task.task_type or task.resolved_type()
        return TaskRun(self, task, task_type, self.plan_for(task_type), now)

    # -- observation ---------------------------------------------------------------
    @property
    def breaker_trips(self) -> int:
        return sum(b.total_trips for b in self.breakers)

    @property
    def spend_usd(self) -> float:
        return self.ledger.all_time_usd

    @property
    def cost_per_success(self) -> float:
        """All spend so far divided by tasks completed so far."""
        return cost_per_success(self.ledger.all_time_usd, self.tasks_succeeded)

    def expected_latency_s(self, model: _Model) -> float | None:
        ewma = self.health[model.index].latency_ewma_s
        return ewma if ewma is not None else model.latency_s

    def scores(self, task_type: str, models: Iterable[str] | None = None) -> dict[str, float]:
        """The routing score of each model (of a route's chain by default)."""
        plan = self.plan_for(task_type)
        chosen = (
            plan.chain if models is None else [self.models[self.model_index[m]] for m in models]
        )
        return {m.id: self._score(m, task_type, plan, 0, 0) for m in chosen}

    def _score(self, m: _Model, task_type: str, plan: _Plan, pt: int, ct: int) -> float:
        lat = self.expected_latency_s(m)
        return score(
            m.completion_by_type.get(task_type, m.completion),
            m.estimate(pt, ct),
            lat * 1000.0 if lat is not None else None,
            zero_cost_floor_usd=self._zero_floor,
            fallback_latency_ms=plan.max_latency_s * 1000.0,
        )


class TaskRun:
    """The routing of one task: a state machine driven by ``next_action``/``record``."""

    __slots__ = (
        "policy",
        "task",
        "task_type",
        "plan",
        "started",
        "deadline",
        "order",
        "skip_static",
        "pos",
        "attempt",
        "spent",
        "attempts",
        "skips",
        "pending",
        "pending_reserved",
        "pending_probe",
        "pending_started",
        "done",
    )

    def __init__(self, policy: RoutingPolicy, task: Task, task_type: str, plan: _Plan, now: float):
        self.policy = policy
        self.task = task
        self.task_type = task_type
        self.plan = plan
        self.started = now
        self.deadline = now + plan.max_latency_s
        if plan.by_score:
            pt, ct = task.prompt_tokens, task.completion_tokens
            ranked = sorted(
                range(len(plan.chain)),
                key=lambda i: -policy._score(plan.chain[i], task_type, plan, pt, ct),
            )
            self.order = [plan.chain[i] for i in ranked]
            self.skip_static = [plan.static_skip[i] for i in ranked]
        else:
            self.order = plan.chain
            self.skip_static = plan.static_skip
        self.pos = 0
        self.attempt = 0
        self.spent = 0.0
        self.attempts: list[Attempt] = []
        self.skips: list[tuple[str, str]] = []
        self.pending: _Model | None = None
        self.pending_reserved = 0.0
        self.pending_probe = False
        self.pending_started = 0.0
        self.done = False

    def next_action(self, now: float) -> Call | Finish:
        """The next call to make, or the end of the task. Call after start and after a Wait."""
        if self.pending is not None:
            raise RuntimeError(f"task {self.task.task_id}: a call is in flight; record it first")
        if self.done:
            raise RuntimeError(f"task {self.task.task_id}: already finished")
        policy = self.policy
        plan = self.plan
        order = self.order
        task = self.task
        deadline = self.deadline
        while self.pos < len(order):
            m = order[self.pos]
            reason = self.skip_static[self.pos]
            if reason is None:
                i = m.index
                est = m.estimate(task.prompt_tokens, task.completion_tokens)
                ewma = policy.health[i].latency_ewma_s
                expected = ewma if ewma is not None else m.latency_s
                remaining = deadline - now
                if self.spent + est > plan.max_cost + 1e-12:
                    reason = "cost"
                elif expected is not None and expected > plan.max_latency_s:
                    reason = "latency"
                elif remaining <= 0.0 or (expected is not None and expected > remaining):
                    reason = "deadline"
                elif not policy.breakers[i].allows(now):
                    reason = "breaker_open"
                elif not policy.ledger.can_afford(i, est, now):
                    reason = "budget"
                    policy.ledger.rejections += 1
                else:
                    self.attempt += 1
                    self.pending = m
                    self.pending_reserved = est
                    self.pending_started = now
                    policy.ledger.reserve(i, est)
                    self.pending_probe = policy.breakers[i].on_call()
                    timeout = plan.attempt_timeout_s
                    return Call(
                        m.id, timeout if timeout < remaining else remaining, self.attempt, i
                    )
            self.skips.append((m.id, reason))
            self.pos += 1
            self.attempt = 0
        return self._finish(now, False, None, None)

    def record(self, outcome: Outcome, now: float) -> Call | Wait | Finish:
        """Book the outcome of the call in flight and answer with the next action."""
        m = self.pending
        if m is None:
            raise RuntimeError(f"task {self.task.task_id}: no call in flight to record")
        self.pending = None
        policy = self.policy
        i = m.index
        kind = outcome.kind
        cost = self.pending_reserved if outcome.cost_usd is None else outcome.cost_usd
        self.spent += cost
        policy.ledger.settle(i, self.pending_reserved, cost, self.task_type, now)
        latency = outcome.latency_s
        self.attempts.append(
            Attempt(
                m.id, self.attempt, self.pending_started, kind.value, latency, cost, outcome.detail
            )
        )
        health = policy.health[i]
        if kind in _LATENCY_KINDS:
            health.observe_latency(latency)
        if kind is _OK:
            health.observe_outcome(False)
            policy.breakers[i].on_success(now, self.pending_probe)
            return self._finish(now, True, m.id, outcome.output)
        counts = kind in BREAKER_FAILURES
        health.observe_outcome(counts)
        if counts:
            policy.breakers[i].on_failure(now, self.pending_probe)
        plan = self.plan
        if kind in NON_RETRYABLE:
            if kind is _CONTENT_FILTER and not plan.refusal_falls_back:
                return self._finish(now, False, None, None, error="content_filter")
            return self._fall_back(now)
        if self.attempt >= plan.attempts:
            return self._fall_back(now)
        delay = self._backoff(self.attempt)
        if kind is _RATE_LIMITED and outcome.retry_after_s is not None:
            delay = max(delay, outcome.retry_after_s)
        ewma = health.latency_ewma_s
        expected = ewma if ewma is not None else (m.latency_s or 0.0)
        if now + delay + expected >= self.deadline:
            # Waiting would leave no room for the retry inside the SLA: move on now.
            return self._fall_back(now)
        return Wait(delay)

    # -- helpers -------------------------------------------------------------------
    def _fall_back(self, now: float) -> Call | Finish:
        self.pos += 1
        self.attempt = 0
        return self.next_action(now)

    def _backoff(self, retry: int) -> float:
        plan = self.plan
        ceiling = plan.backoff_base * (2.0 ** (retry - 1))
        if ceiling > plan.backoff_cap:
            ceiling = plan.backoff_cap
        jitter = plan.jitter
        if jitter == "full":
            return self.policy.rng.random() * ceiling
        if jitter == "equal":
            return ceiling * (0.5 + 0.5 * self.policy.rng.random())
        return ceiling

    def _finish(
        self,
        now: float,
        success: bool,
        model: str | None,
        output: object,
        error: str | None = None,
    ) -> Finish:
        self.done = True
        policy = self.policy
        policy.tasks_finished += 1
        if success:
            policy.tasks_succeeded += 1
        elif error is None:
            if any(reason == "deadline" for _, reason in self.skips):
                error = "deadline"
            else:
                error = "exhausted" if self.attempts else "no_candidate"
        return Finish(
            TaskResult(
                self.task.task_id,
                self.task_type,
                self.plan.name,
                success,
                model,
                output,
                self.spent,
                self.started,
                now - self.started,
                self.attempts,
                self.skips,
                error,
            )
        )


def route_all(
    policy: RoutingPolicy, task: Task, now: float, outcomes: Iterable[Outcome]
) -> TaskResult:
    """Drive one task through ``outcomes`` with zero-duration calls and waits.

    A convenience for tests and notebooks: each Call consumes the next outcome
    (time advances by its latency), each Wait advances time by its length.
    Raises ``ValueError`` if the outcomes run out before the task finishes.
    """
    it = iter(outcomes)
    run = policy.start(task, now)
    action = run.next_action(now)
    while not isinstance(action, Finish):
        if isinstance(action, Call):
            try:
                outcome = next(it)
            except StopIteration:
                raise ValueError(
                    f"outcomes ran out while task {task.task_id} was routing"
                ) from None
            now += min(outcome.latency_s, action.timeout_s)
            action = run.record(outcome, now)
        else:
            now += action.seconds
            action = run.next_action(now)
    return action.result

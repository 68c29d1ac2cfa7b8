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
   production), ``context`` (the task's prompt_tokens exceed the model's
   ``context_window``), ``cost`` (the attempt's estimate would take the task past
   ``max_cost_per_task``), ``latency`` (expected latency — the EWMA observed on
   this route once there is one, else the profile's — above ``max_latency_ms``;
   an observed exclusion lasts ``health.latency_cooldown_s``, then the estimate
   is forgotten and the model gets another chance), ``quality`` (observed
   completion on this route below ``min_observed_completion``; re-admitted after
   ``quality.cooldown_s``), ``deadline`` (the expected latency no longer fits
   before the task's deadline), ``breaker_open`` and ``budget`` (a cap would be
   exceeded).
2. *Attempts*: up to ``attempts_per_model`` calls, each with timeout
   ``min(attempt_timeout, time left)``, so no attempt can outlive the SLA.
3. *Retries* on the same model only for the kinds in the route's ``retry_on``;
   they wait an exponential backoff with jitter, and at least the provider's
   Retry-After (429 or 503). If that wait would not leave room for another
   attempt before the deadline, the run falls back to the next candidate at once.
4. *Non-retryable* failures (400, 401, 403, context length) fall back without
   a retry; a content-filter refusal ends the task unless the route says
   ``fallback_on_refusal``.

*Availability vs quality.* Only the kinds in ``breaker.count`` feed a model's
breaker; answers that fail validation feed the per-(model, route) quality
statistic instead (:class:`~router.health.RouteStats`).

*Liveness.* Everything a call acquires — its budget hold and, in half-open, its
probe slot — is given back exactly once: by :meth:`TaskRun.record` whatever the
outcome's kind, or by :meth:`TaskRun.abort` when the driver is cancelled, raises,
or finds the task's own spec invalid, or by :meth:`TaskRun.refuse` when a driver with
shared state (:mod:`router.shared`) cannot admit the call planned.

Every decision's randomness (backoff and breaker jitter) comes from one
``random.Random(seed)``: the same seed and the same outcomes give the same
decisions.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from router.breaker import BreakerState, CircuitBreaker
from router.config import Route, RouterConfig
from router.health import ModelHealth, RouteStats
from router.ledger import SpendLedger
from router.outcome import NON_RETRYABLE, ErrorKind, Outcome
from router.result import Attempt, Call, Finish, TaskResult, Wait
from router.scoring import cost_per_success, score
from router.task import Task

_CLOSED = BreakerState.CLOSED
_OK = ErrorKind.OK
_VALIDATION = ErrorKind.VALIDATION
_CONTENT_FILTER = ErrorKind.CONTENT_FILTER
# Outcomes whose latency says how long an answer takes (fast failures do not).
_LATENCY_KINDS = frozenset(
    {
        ErrorKind.OK,
        ErrorKind.VALIDATION,
        ErrorKind.MALFORMED,
        ErrorKind.TIMEOUT,
        ErrorKind.FIRST_TOKEN_TIMEOUT,
    }
)
_TIMEOUTS = frozenset({ErrorKind.TIMEOUT, ErrorKind.FIRST_TOKEN_TIMEOUT})
# Failures whose Retry-After (if the provider sent one) the next retry honours.
_RETRY_AFTER_KINDS = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR})


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
        "context_window",
        "fixed_cost",
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
        #: the estimate of every call when the model is priced per task (None: by tokens)
        self.fixed_cost: float | None = None if token_priced else self.cost
        self.latency_s = profile.avg_latency_ms / 1000.0 if profile.avg_latency_ms else None
        self.completion = profile.completion_rate
        self.completion_by_type = dict(profile.completion_by_type)
        # No known window: never skip for context (a huge number keeps the check cheap).
        self.context_window = profile.context_window or (1 << 62)

    def estimate(self, prompt_tokens: int, completion_tokens: int) -> float:
        if self.in_price is not None:
            return prompt_tokens * self.in_price + completion_tokens * self.out_price  # type: ignore
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
        "retry_on",
        "min_quality",
        "stats",
    )

    def __init__(
        self,
        name: str,
        route: Route,
        models: dict[str, _Model],
        production: bool,
        stats: list[RouteStats],
    ):
        self.name = name
        self.route = route
        self.chain = [models[m] for m in route.chain]
        self.stats = stats
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
        self.retry_on = frozenset(route.retry_on)
        self.min_quality = route.min_observed_completion


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
        #: per (route name, model id): observed latency and quality on that route
        self.route_stats: dict[tuple[str, str], RouteStats] = {}
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
        q = config.quality
        for key, st in self.route_stats.items():
            st.prior_weight = q.prior_weight
            st.decay = 1.0 - 1.0 / q.window
            profile = next((p for p in config.models if p.id == key[1]), None)
            if profile is not None:
                st.prior = _prior(profile, key[0], config)
        self._plans = {}
        for name, route in config.routes.items():
            stats = []
            for mid in route.chain:
                found = self.route_stats.get((name, mid))
                if found is None:
                    found = RouteStats(
                        _prior(config.model(mid), name, config), q.prior_weight, q.window
                    )
                    self.route_stats[(name, mid)] = found
                stats.append(found)
            self._plans[name] = _Plan(name, route, by_id, production, stats)
        self.breaker_count = frozenset(config.breaker.count)
        self._alpha = config.health.ewma_alpha
        self._latency_cooldown = config.health.latency_cooldown_s
        self._quality_min_n = float(q.min_observations)
        self._quality_cooldown = q.cooldown_s
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
        plan = self._plan_for.get(task_type)
        if plan is None:
            plan = self.plan_for(task_type)
        return TaskRun(self, task, task_type, plan, now)

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

    def observed_completion(self, route: str, model_id: str) -> float | None:
        """The observed completion of ``model_id`` on ``route`` (``None`` before
        ``quality.min_observations`` answers were seen there)."""
        st = self.route_stats.get((route, model_id))
        if st is None or st.q_count < self._quality_min_n:
            return None
        return st.observed_completion

    def scores(self, task_type: str, models: Iterable[str] | None = None) -> dict[str, float]:
        """The routing score of each model (of a route's chain by default)."""
        plan = self.plan_for(task_type)
        if models is None:
            pairs: list[tuple[_Model, RouteStats | None]] = list(
                zip(plan.chain, plan.stats, strict=True)
            )
        else:
            pairs = []
            for mid in models:
                m = self.models[self.model_index[mid]]
                st = self.route_stats.get((plan.name, mid))
                pairs.append((m, st))
        return {m.id: self._score(m, st, task_type, plan, 0, 0) for m, st in pairs}

    def _score(
        self, m: _Model, st: RouteStats | None, task_type: str, plan: _Plan, pt: int, ct: int
    ) -> float:
        lat = st.latency_ewma_s if st is not None else None
        if lat is None:
            lat = m.latency_s
        if st is not None and st.q_count >= self._quality_min_n:
            completion: float | None = st.observed_completion
        else:
            completion = m.completion_by_type.get(task_type, m.completion)
        return score(
            completion,
            m.estimate(pt, ct),
            lat * 1000.0 if lat is not None else None,
            zero_cost_floor_usd=self._zero_floor,
            fallback_latency_ms=plan.max_latency_s * 1000.0,
        )


def _prior(profile, route: str, config: RouterConfig) -> float:  # noqa: ANN001 - ModelProfile
    """The quality prior of a model on a route: its completion figure for the route's
    task type (by route name or any type aliased to it), else overall, else 0.5."""
    by_type = profile.completion_by_type
    if route in by_type:
        return by_type[route]
    for task_type, target in config.aliases.items():
        if target == route and task_type in by_type:
            return by_type[task_type]
    return profile.completion_rate if profile.completion_rate is not None else 0.5


class TaskRun:
    """The routing of one task: a state machine driven by ``next_action``/``record``.

    Every call it plans holds a budget reservation (and, in half-open, a probe slot)
    until exactly one of :meth:`record` or :meth:`abort` ends it.
    """

    __slots__ = (
        "policy",
        "task",
        "task_type",
        "plan",
        "started",
        "deadline",
        "order",
        "skip_static",
        "stats",
        "pos",
        "attempt",
        "spent",
        "attempts",
        "skips",
        "pending",
        "pending_hold",
        "pending_reserved",
        "pending_probe",
        "pending_started",
        "pending_stats",
        "pending_clamped",
        "done",
        "result",
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
                key=lambda i: -policy._score(plan.chain[i], plan.stats[i], task_type, plan, pt, ct),
            )
            self.order = [plan.chain[i] for i in ranked]
            self.skip_static = [plan.static_skip[i] for i in ranked]
            self.stats = [plan.stats[i] for i in ranked]
        else:
            self.order = plan.chain
            self.skip_static = plan.static_skip
            self.stats = plan.stats
        self.pos = 0
        self.attempt = 0
        self.spent = 0.0
        self.attempts: list[Attempt] = []
        self.skips: list[tuple[str, str]] = []
        self.pending: _Model | None = None
        self.pending_hold = -1
        self.pending_reserved = 0.0
        self.pending_probe = False
        self.pending_started = 0.0
        self.pending_stats: RouteStats | None = None
        self.pending_clamped = False
        self.done = False
        self.result: TaskResult | None = None

    def next_action(self, now: float) -> Call | Finish:
        """The next call to make, or the end of the task. Call after start and after a Wait."""
        if self.pending is not None:
            raise RuntimeError(f"task {self.task.task_id}: a call is in flight; record it first")
        if self.done:
            raise RuntimeError(f"task {self.task.task_id}: already finished")
        # The hot path of every task (nearly always one candidate is looked at): the
        # position is kept in a local and written back only when the loop stops.
        order = self.order
        n = len(order)
        pos = self.pos
        if pos < n:
            policy = self.policy
            plan = self.plan
            task = self.task
            pt = task.prompt_tokens
            while pos < n:
                m = order[pos]
                reason = self.skip_static[pos]
                if reason is None:
                    i = m.index
                    st = self.stats[pos]
                    est = m.fixed_cost
                    if est is None:
                        # The same expression as _Model.estimate (the floats must not move).
                        est = pt * m.in_price + task.completion_tokens * m.out_price  # type: ignore
                    max_latency = plan.max_latency_s
                    ewma = st.latency_ewma_s
                    if ewma is not None and ewma >= max_latency:
                        # Excluded on observed latency (an estimate that fills the whole
                        # SLA can never fit, e.g. after a timeout at the limit): for a
                        # cool-down, then forget the estimate (back to the profile's) and
                        # try again.
                        hold = st.latency_hold_until
                        if hold == 0.0:
                            st.latency_hold_until = now + policy._latency_cooldown
                        elif now >= hold:
                            st.latency_ewma_s = ewma = None
                            st.latency_hold_until = 0.0
                    expected = ewma if ewma is not None else m.latency_s
                    remaining = self.deadline - now
                    min_quality = plan.min_quality
                    breaker = policy.breakers[i]
                    if pt > m.context_window:
                        reason = "context"
                    elif self.spent + est > plan.max_cost + 1e-12:
                        reason = "cost"
                    elif expected is not None and (
                        expected > max_latency or (ewma is not None and ewma >= max_latency)
                    ):
                        reason = "latency"
                    elif (
                        min_quality is not None
                        and st.q_count >= policy._quality_min_n
                        and st.observed_completion < min_quality
                        and not self._quality_readmits(st, now)
                    ):
                        reason = "quality"
                    elif remaining <= 0.0 or (expected is not None and expected > remaining):
                        reason = "deadline"
                    # A closed breaker allows every call (no need to ask it).
                    elif breaker.state is not _CLOSED and not breaker.allows(now):
                        reason = "breaker_open"
                    else:
                        hold_id = policy.ledger.try_reserve(i, est, now, self.task_type)
                        if hold_id < 0:
                            reason = "budget"
                            policy.ledger.rejections += 1
                        else:
                            attempt = self.attempt + 1 if pos == self.pos else 1
                            self.pos = pos
                            self.attempt = attempt
                            self.pending = m
                            self.pending_reserved = est
                            self.pending_started = now
                            self.pending_stats = st
                            self.pending_hold = hold_id
                            # on_call only marks a half-open probe: closed is no probe.
                            self.pending_probe = (
                                False if breaker.state is _CLOSED else breaker.on_call(now)
                            )
                            timeout = plan.attempt_timeout_s
                            if remaining < timeout:
                                self.pending_clamped = True
                                return Call(m.id, remaining, attempt, i)
                            self.pending_clamped = False
                            return Call(m.id, timeout, attempt, i)
                self.skips.append((m.id, reason))
                pos += 1
            self.pos = pos
            self.attempt = 0
        return self._finish(now, False, None, None)

    def _quality_readmits(self, st: RouteStats, now: float) -> bool:
        """Whether a model below the route's quality floor is let through now (its
        cool-down ended: its observations are forgotten so the estimate can recover)."""
        hold = st.quality_hold_until
        if hold == 0.0:
            st.quality_hold_until = now + self.policy._quality_cooldown
            return False
        if now >= hold:
            st.forget_quality()
            st.quality_hold_until = 0.0
            return True
        return False

    def record(self, outcome: Outcome, now: float) -> Call | Wait | Finish:
        """Book the outcome of the call in flight and answer with the next action."""
        return self.record_kind(
            outcome.kind, outcome.latency_s, outcome.cost_usd, outcome.retry_after_s, now, outcome
        )

    def record_kind(
        self,
        kind: ErrorKind,
        latency: float,
        cost: float | None,
        retry_after_s: float | None,
        now: float,
        outcome: Outcome | None = None,
    ) -> Call | Wait | Finish:
        """:meth:`record` of ``Outcome(kind, latency, cost, retry_after_s)``, for a
        driver that has no more to report (the simulator) and need not build the
        Outcome; ``outcome``, when given, is that Outcome with its measured facts
        (``detail``, token counts, ...; what :meth:`record` passes)."""
        m = self.pending
        if m is None:
            raise RuntimeError(f"task {self.task.task_id}: no call in flight to record")
        self.pending = None
        policy = self.policy
        i = m.index
        if cost is None:
            cost = self.pending_reserved
        self.spent += cost
        policy.ledger.settle(self.pending_hold, cost, self.task_type, now)
        if outcome is None:
            attempt = Attempt(m.id, self.attempt, self.pending_started, kind._value_, latency, cost)
        else:
            attempt = Attempt(
                m.id,
                self.attempt,
                self.pending_started,
                kind._value_,  # .value, without the enum property's descriptor call
                latency,
                cost,
                outcome.detail,
                outcome.prompt_tokens,
                outcome.completion_tokens,
                outcome.provider_model,
                outcome.request_id,
                outcome.status,
                outcome.retry_after_s,
                outcome.ttft_s,
            )
        self.attempts.append(attempt)
        health = policy.health[i]
        st = self.pending_stats
        breaker = policy.breakers[i]
        if kind is _OK:
            # observe_latency (both), observe_quality(True), observe_outcome(False)
            health.observe(latency, False)
            st.observe_answer(latency, True, policy._alpha)  # type: ignore[union-attr]
            breaker.on_success(now, self.pending_probe)
            return self._finish(now, True, m.id, None if outcome is None else outcome.output)
        # A timeout cut short by the task's own deadline says the task ran out of time,
        # not that the provider is down.
        counts = kind in policy.breaker_count and not (kind in _TIMEOUTS and self.pending_clamped)
        if kind in _LATENCY_KINDS:
            health.observe(latency, counts)
            if kind is _VALIDATION:
                st.observe_answer(latency, False, policy._alpha)  # type: ignore[union-attr]
            else:
                st.observe_latency(latency, policy._alpha)  # type: ignore[union-attr]
        else:
            health.observe(None, counts)
        if counts:
            breaker.on_failure(now, self.pending_probe)
        else:
            # Says nothing about availability (a wrong answer, a 400, an uncounted 429):
            # the probe slot is freed and the breaker's state left as it is.
            breaker.release(self.pending_probe)
        plan = self.plan
        if kind in NON_RETRYABLE:
            if kind is _CONTENT_FILTER and not plan.refusal_falls_back:
                return self._finish(now, False, None, None, error="content_filter")
            return self._fall_back(now)
        if kind not in plan.retry_on or self.attempt >= plan.attempts:
            return self._fall_back(now)
        # Backoff spreads load off a struggling provider; a wrong answer is no sign of
        # one, so a retry after a failed validation goes at once.
        delay = 0.0 if kind is _VALIDATION else self._backoff(self.attempt)
        if retry_after_s is not None and kind in _RETRY_AFTER_KINDS:
            delay = max(delay, retry_after_s)
        ewma = st.latency_ewma_s  # type: ignore[union-attr]
        expected = ewma if ewma is not None else (m.latency_s or 0.0)
        if now + delay + expected >= self.deadline:
            # Waiting would leave no room for the retry inside the SLA: move on now.
            return self._fall_back(now)
        return Wait(delay)

    def abort(
        self,
        now: float,
        error: str = "cancelled",
        detail: str = "",
        cost_usd: float | None = 0.0,
    ) -> TaskResult:
        """End the task now, failed with ``error``, giving back what the call in flight
        holds: its probe slot, and its budget reservation — released, or settled at
        ``cost_usd`` when the call did end and was billed (``None``: the estimate).

        For the driver's unusual paths: the awaiting task was cancelled
        (``cancelled``), the driver raised (``error``), or the task's own spec or
        messages are invalid (``bad_spec``). Safe to call at any point, and more than
        once: a finished run returns its result unchanged.
        """
        if self.done:
            return self.result  # type: ignore[return-value]
        m = self.pending
        if m is not None:
            self.pending = None
            policy = self.policy
            cost = self.pending_reserved if cost_usd is None else cost_usd
            if cost:
                policy.ledger.settle(self.pending_hold, cost, self.task_type, now)
                self.spent += cost
            else:
                policy.ledger.release(self.pending_hold)
            policy.breakers[m.index].release(self.pending_probe)
            self.attempts.append(
                Attempt(
                    m.id,
                    self.attempt,
                    self.pending_started,
                    error,
                    max(0.0, now - self.pending_started),
                    cost,
                    detail,
                )
            )
        return self._finish(now, False, None, None, error=error, detail=detail or None).result

    def refuse(self, now: float, reason: str) -> Call | Finish:
        """The driver could not admit the call just planned (shared state said no:
        ``budget`` when a shared cap would be exceeded, ``breaker_open`` when another
        replica holds the model's probe or has it open): give back its budget hold and
        probe slot (nothing is booked and no attempt is listed), skip the candidate
        with ``reason`` as :meth:`next_action` would have, and answer with the next
        action. For :mod:`router.shared`; a driver without shared state never calls it.
        """
        m = self.pending
        if m is None:
            raise RuntimeError(f"task {self.task.task_id}: no planned call to refuse")
        self.pending = None
        policy = self.policy
        policy.ledger.release(self.pending_hold)
        policy.breakers[m.index].release(self.pending_probe)
        if reason == "budget":
            policy.ledger.rejections += 1
        self.attempt -= 1
        self.skips.append((m.id, reason))
        return self._fall_back(now)

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
        detail: str | None = None,
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
        result = TaskResult(
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
            detail,
            self.order[0].id if self.order else None,
        )
        self.result = result
        return Finish(result)


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
    action: Call | Wait | Finish = run.next_action(now)
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

"""The live driver: the routing policy carried out over real providers with asyncio.

::

    router = Router.from_config("router.yaml")
    result = await router.route(Task("t1", "json", payload="..."))

:meth:`Router.route` runs the same loop as the simulator's driver: the policy
answers Call / Wait / Finish; a Call becomes ``provider.complete(...)`` with
the policy's timeout, whose answer is validated for the task's type (a failed
validation is a failed attempt), then handed back as an
:class:`~router.outcome.Outcome`. Many tasks in flight share one policy, so
breakers, health statistics and budgets are shared; the budget is safe under
concurrency because the policy reserves a call's estimated cost before the
call starts and settles it when it ends, all on the event loop's thread.

The result/exception contract of :meth:`Router.route`:

* a task that no candidate completed is *not* an exception: ``route`` returns a
  :class:`~router.result.TaskResult` with ``success=False`` and ``error`` saying
  why (``exhausted``, ``no_candidate``, ``deadline``, ``content_filter``,
  ``bad_spec`` for a task whose own spec or messages are invalid — ``detail``
  says how). Pass ``raise_on_failure=True`` (to the router or to one call) to get
  :class:`RoutingError` instead, carrying the same result;
* cancelling the awaiting task cancels the call in flight, gives back its budget
  reservation and breaker probe slot, and re-raises ``CancelledError``;
* an unexpected exception (a bug, a validator crashing) gives them back too and
  propagates.

Validators that run code or subprocesses run off the event loop, so a slow
check never delays other tasks' timers. Budget alerts are logged as warnings on
the ``router.budget`` logger and handed to ``on_alert``.

*Several replicas* (:mod:`router.shared`): with a ``shared:`` section in the config
(or a ``shared=`` state passed in) the router shares its breakers, spend and
statistics with other replicas. The policy stays sans-I/O; the driver has the store
admit every call the policy plans (:meth:`Router.admit`) before calling the
provider, and the policy's hooks tell the store the rest. Without either, nothing
changes: in-process state is the default.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping

import httpx

from router.config import RouterConfig, load_config
from router.errors import CostRouteError, InputError
from router.ledger import BudgetAlert
from router.outcome import ErrorKind, Outcome
from router.policy import RoutingPolicy, TaskRun
from router.providers import ModelProvider, ProviderError, make_provider
from router.recording import AttemptRecorder, TraceRecorder
from router.result import Call, Finish, TaskResult, Wait
from router.shared.base import SharedState, SharedStatus
from router.shared.base import admit as _admit
from router.task import Task
from router.validation import check_spec, validate_task_async

budget_log = logging.getLogger("router.budget")
log = logging.getLogger("router.live")

# A provider must end its attempt within the timeout it is given; this slack is the
# driver's own backstop against one that does not.
_BACKSTOP_S = 0.25


class RoutingError(CostRouteError):
    """No candidate completed the task. ``result`` holds every attempt and skip."""

    def __init__(self, result: TaskResult) -> None:
        self.result = result
        reasons = "; ".join(result.reasons()) or "no candidate"
        super().__init__(f"task {result.task_id} failed ({result.error}): {reasons}")


class _BadSpec:
    """An attempt whose answer revealed that the task's own spec is invalid."""

    __slots__ = ("message", "cost")

    def __init__(self, message: str, cost: float | None) -> None:
        self.message = message
        self.cost = cost


class WallClock:
    """Monotonic seconds aligned to the epoch at creation (so budget days are real days)."""

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def __call__(self) -> float:
        return self._wall0 + (time.monotonic() - self._mono0)


class Router:
    """Routes tasks over real providers with one shared :class:`RoutingPolicy`.

    ``providers`` maps model ids to providers; models without one get a provider
    built from their profile's ``endpoint`` on first use (``transport`` applies to
    those, e.g. ``httpx.MockTransport`` in tests). ``recorder`` appends one trace
    record per task, ``attempt_recorder`` one per attempt (the calibration input).
    ``validate`` turns structured-output validation off (then any
    answer counts as completed). ``on_alert`` is called with each
    :class:`~router.ledger.BudgetAlert` (after it is logged); ``raise_on_failure``
    makes :meth:`route` raise :class:`RoutingError` for a failed task.
    ``shared`` is the replica's :class:`~router.shared.SharedState` (default: one
    built from the config's ``shared:`` section, else none: in-process state only);
    a state built from the config is closed by :meth:`aclose`.
    """

    def __init__(
        self,
        config: RouterConfig,
        *,
        providers: Mapping[str, ModelProvider] | None = None,
        seed: int = 0,
        recorder: TraceRecorder | None = None,
        clock: Callable[[], float] | None = None,
        validate: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        system_prompt: str | None = None,
        on_alert: Callable[[BudgetAlert], object] | None = None,
        raise_on_failure: bool = False,
        attempt_recorder: AttemptRecorder | None = None,
        shared: SharedState | None = None,
    ) -> None:
        self.policy = RoutingPolicy(config, seed=seed)
        self.on_alert = on_alert
        self.raise_on_failure = raise_on_failure
        self.attempt_recorder = attempt_recorder
        self.policy.ledger.listeners.append(self._alert)
        self._providers: dict[str, ModelProvider] = dict(providers or {})
        self._owned: list[ModelProvider] = []
        self._transport = transport
        self.recorder = recorder
        self.clock = clock or WallClock()
        self.validate = validate
        self.system_prompt = system_prompt
        self._t0 = self.clock()
        self._owns_shared = False
        if shared is None and config.shared is not None:
            from router.shared.redis import RedisState

            shared = RedisState.from_config(config.shared)
            self._owns_shared = True
        #: the replica's shared state (None: in-process state only, the default)
        self.shared: SharedState | None = shared
        if shared is not None:
            shared.attach(self.policy, self.clock)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **kwargs: object) -> Router:
        """A router for the config file at ``path`` (YAML, JSON or TOML)."""
        config = load_config(path)
        given = kwargs.get("providers") or {}
        for name, route in config.routes.items():
            for mid in route.chain:
                if mid not in given and config.model(mid).endpoint is None:
                    # Refuse now, in one line, rather than fail on the first call.
                    raise InputError(
                        f"{path}: models.{mid}.endpoint: model {mid!r} (in routes.{name}.chain) "
                        "has no endpoint, so it cannot be called; add one (optimize export "
                        "--endpoints FILE does) or pass providers={...}"
                    )
        return cls(config, **kwargs)  # type: ignore[arg-type]

    @property
    def config(self) -> RouterConfig:
        return self.policy.config

    def reload(self, config: RouterConfig) -> None:
        """Swap the config; tasks in flight finish under the routes they started with."""
        self.policy.reconfigure(config)
        if self.shared is not None:
            self.shared.attach(self.policy, self.clock)  # new models get the hooks too
            if config.shared is not None and self._owns_shared:
                log.info("shared: a changed store takes effect when the router restarts")
        # Providers whose endpoint changed are rebuilt on their next call.
        for mid in list(self._providers):
            provider = self._providers[mid]
            if provider in self._owned:
                profile = next((m for m in config.models if m.id == mid), None)
                if profile is None or getattr(provider, "endpoint", None) != profile.endpoint:
                    del self._providers[mid]

    def provider(self, model_id: str) -> ModelProvider:
        """The provider of ``model_id`` (built from its endpoint on first use)."""
        p = self._providers.get(model_id)
        if p is None:
            profile = self.config.model(model_id)
            if profile.endpoint is None:
                raise InputError(f"models.{model_id}.endpoint: no endpoint and no provider given")
            p = make_provider(profile.endpoint, transport=self._transport)
            self._providers[model_id] = p
            self._owned.append(p)
        return p

    async def admit(self, run: TaskRun, action: Call | Wait | Finish) -> Call | Wait | Finish:
        """Have the shared state admit ``action`` if it is a Call (for drivers of this
        router's policy; see :func:`router.shared.base.admit`): returns an admitted
        Call, or the Wait/Finish given, or what the policy answers after skipping the
        calls the store refused. Without shared state, ``action`` unchanged."""
        shared = self.shared
        if shared is None or not isinstance(action, Call):
            return action
        return await _admit(shared, run, action, self.clock)

    def shared_status(self) -> SharedStatus | None:
        """The shared state's status (None without one): for ``/ready`` and metrics."""
        return None if self.shared is None else self.shared.status()

    async def aclose(self) -> None:
        """Close the providers this router built (and the recorder, and the shared
        state it built from the config)."""
        if self.shared is not None and self._owns_shared:
            await self.shared.aclose()
        for p in self._owned:
            await p.aclose()
        self._owned.clear()
        if self.recorder is not None:
            self.recorder.close()
        if self.attempt_recorder is not None:
            self.attempt_recorder.close()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _alert(self, alert: BudgetAlert) -> None:
        budget_log.warning(
            "budget alert: %s %s reached %.0f%% of its $%.2f daily cap (spent $%.4f)",
            alert.scope,
            alert.key,
            alert.fraction * 100,
            alert.cap_usd,
            alert.spent_usd,
        )
        if self.on_alert is not None:
            try:
                self.on_alert(alert)
            except Exception:  # a user's callback must not break the booking of spend
                budget_log.exception("on_alert callback raised")

    # -- routing -------------------------------------------------------------------
    async def route(self, task: Task, *, raise_on_failure: bool | None = None) -> TaskResult:
        """Route ``task`` to its end and return how it ended (see the module docstring
        for the contract); raise :class:`RoutingError` for a failed task only when
        asked (``raise_on_failure``, else the router's setting)."""
        clock = self.clock
        now = clock()
        run = self.policy.start(task, now)
        try:
            try:
                if self.validate:
                    check_spec(task)
                messages = task.chat_messages(self.system_prompt)
            except InputError as exc:
                result = run.abort(now, "bad_spec", str(exc))
            else:
                shared = self.shared
                action = run.next_action(now)
                while not isinstance(action, Finish):
                    if isinstance(action, Call):
                        if shared is not None:
                            action = await _admit(shared, run, action, clock)
                            if not isinstance(action, Call):
                                continue
                        outcome = await self._attempt(action, task, messages)
                        if isinstance(outcome, _BadSpec):
                            action = Finish(
                                run.abort(clock(), "bad_spec", outcome.message, outcome.cost)
                            )
                        else:
                            action = run.record(outcome, clock())
                    else:
                        await asyncio.sleep(action.seconds)
                        action = run.next_action(clock())
                result = action.result
        except asyncio.CancelledError:
            self._record_attempts(task, run.abort(clock(), "cancelled", "cancelled by the caller"))
            raise
        except BaseException as exc:
            self._record_attempts(
                task, run.abort(clock(), "error", f"{type(exc).__name__} in the driver")
            )
            raise
        if self.recorder is not None:
            self._record(task, result)
        self._record_attempts(task, result)
        raise_it = self.raise_on_failure if raise_on_failure is None else raise_on_failure
        if raise_it and not result.success:
            raise RoutingError(result)
        return result

    async def _attempt(
        self, call: Call, task: Task, messages: list[dict[str, object]]
    ) -> Outcome | _BadSpec:
        clock = self.clock
        t0 = clock()
        try:
            provider = self.provider(call.model)
        except InputError as exc:
            # No endpoint or no API key for this model: the model cannot be called, which
            # is not the task's fault; fall back as for a 401.
            return Outcome(ErrorKind.AUTH, 0.0, 0.0, detail=str(exc))
        try:
            # asyncio.timeout, not wait_for: the same backstop without wrapping every
            # attempt in a Task of its own (a measurable share of the per-call overhead).
            async with asyncio.timeout(call.timeout_s + _BACKSTOP_S):
                if task.tools is None and task.tool_choice is None:
                    # Only providers that take tools are asked to (a user's own provider
                    # may predate the keywords).
                    completion = await provider.complete(messages, timeout_s=call.timeout_s)
                else:
                    completion = await provider.complete(
                        messages,
                        timeout_s=call.timeout_s,
                        tools=task.tools,
                        tool_choice=task.tool_choice,
                    )
        except ProviderError as exc:
            # A malformed answer still arrived (a 2xx the provider generated and bills):
            # book the policy's estimate, as the simulator does. Failures without an
            # answer (timeouts, 429s, 5xx, resets) are not billed.
            cost = None if exc.kind is ErrorKind.MALFORMED else 0.0
            return Outcome(
                exc.kind,
                clock() - t0,
                cost,
                exc.retry_after_s,
                detail=str(exc),
                status=exc.status,
            )
        except TimeoutError:
            return Outcome(ErrorKind.TIMEOUT, clock() - t0, 0.0, detail="attempt timeout")
        latency = clock() - t0
        profile = self.config.model(call.model)
        if (
            profile.input_per_mtok is not None
            and profile.output_per_mtok is not None
            and (completion.prompt_tokens or completion.completion_tokens)
        ):
            cost: float | None = completion.cost_usd(
                profile.input_per_mtok, profile.output_per_mtok
            )
        else:
            cost = None  # the policy books its estimate (cost per task or token projection)
        measured = {
            "prompt_tokens": completion.prompt_tokens or None,
            "completion_tokens": completion.completion_tokens or None,
            "provider_model": completion.model,
            "request_id": completion.request_id,
            "status": 200,
            "ttft_s": completion.ttft_s,
        }
        if self.validate:
            try:
                verdict = await validate_task_async(task, completion.text)
            except InputError as exc:
                # The task's spec is invalid in a way only an answer could reveal.
                return _BadSpec(str(exc), cost)
            if not verdict.ok:
                return Outcome(
                    ErrorKind.VALIDATION, latency, cost, detail=verdict.reason, **measured
                )
        # A tool-calling answer is handed back whole (the gateway passes it on).
        output: object = completion.text
        if completion.tool_calls:
            output = {"content": completion.text, "tool_calls": completion.tool_calls}
        return Outcome(ErrorKind.OK, latency, cost, output=output, **measured)

    def _record_attempts(self, task: Task, result: TaskResult) -> None:
        if self.attempt_recorder is None:
            return
        try:
            self.attempt_recorder.record_result(task, result, self._t0)
        except Exception:  # a recording failure must not hide the task's own outcome
            log.exception("could not record the attempts of task %s", task.task_id)

    def _record(self, task: Task, result: TaskResult) -> None:
        last_failure = next(
            (a.kind for a in reversed(result.attempts) if a.kind in _RECORDABLE_KINDS), None
        )
        self.recorder.record(  # type: ignore[union-attr]
            task,
            model=result.model,
            latency_s=result.latency_s,
            success=result.success,
            cost_usd=result.cost_usd,
            error_kind=None if result.success else last_failure,
            arrival_s=result.started_s - self._t0,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            provider_model=result.provider_model,
            request_id=result.request_id,
        )


# Attempt kinds that are ErrorKinds (an aborted call's kind, "cancelled", is not).
_RECORDABLE_KINDS = frozenset(k.value for k in ErrorKind if k is not ErrorKind.OK)

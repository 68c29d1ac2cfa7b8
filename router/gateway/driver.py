"""The gateway's driver of the routing policy: the live loop, with a streaming client.

:class:`GatewayDriver` runs the loop every driver runs (``start`` → ``next_action`` →
Call / Wait / Finish, each outcome handed back with ``record``) over the providers
and the shared :class:`~router.policy.RoutingPolicy` of a :class:`~router.live.Router`,
so breakers, budgets, health and reloads are the live router's own. What it adds is
the client on the other end:

* **Plain requests** (``sink=None``) call ``provider.complete`` as the live driver
  does.
* **Streamed requests** call ``provider.stream`` and hand each content delta to the
  ``sink`` as it arrives. Until the sink reports that bytes reached the client, a
  failed attempt is recorded and the policy retries or falls back freely: the client
  sees nothing of it. Once content has been sent, a failure can no longer be hidden:
  the attempt is recorded with its real kind (so the breaker and the health
  statistics see it), the task ends with error ``stream_cut``, and the caller ends the
  client's stream with an error event.
* **Buffered routes** (``buffer: true``) wait for the whole answer (``complete``),
  validate it for the task type -- a wrong answer is a failed attempt, retried or
  fallen back from like any other -- and only then is it handed over, streamed or
  not. Answers on other routes are passed on unvalidated: a streamed one is gone
  before it could be judged, and a plain one is treated the same so that ``stream``
  does not change what an agent gets. An answer made of tool calls is the agent's
  protocol, not the task's output, and is never validated.

Liveness: whatever happens -- success, any failure, a cut stream, the client going
away (the awaiting task is cancelled), an exception -- the run ends through
``record`` or ``TaskRun.abort``, so every budget reservation and probe slot is given
back exactly once.

Every finished task is recorded: one task record with the router's
:class:`~router.recording.TraceRecorder`, and one record per attempt with an
:class:`~router.recording.AttemptRecorder` when one is given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.errors import InputError
from router.health import RouteStats
from router.live import Router
from router.outcome import ErrorKind, Outcome
from router.policy import TaskRun, _prior
from router.providers import Completion, ModelProvider, ProviderError
from router.providers._http import HTTPProvider
from router.providers.base import StreamEnd, TextDelta, ToolCallDelta
from router.result import Call, Finish, TaskResult
from router.task import Task
from router.validation import validate_task_async

if TYPE_CHECKING:
    from router.recording import AttemptRecorder

__all__ = ["GatewayDriver", "Routed", "Sink", "pin_first"]

#: Hands one content delta of the named model's answer to the client; returns whether
#: bytes reached the client (from then on the gateway can no longer fall back).
Sink = Callable[[str, TextDelta | ToolCallDelta], Awaitable[bool]]

# The provider ends its attempt within its timeout; this is the driver's backstop.
_BACKSTOP_S = 0.25
# Attempt kinds that are ErrorKinds ("cancelled", "stream_cut" are the driver's own).
_RECORDABLE = frozenset(k.value for k in ErrorKind if k is not ErrorKind.OK)


@dataclass(slots=True)
class Routed:
    """How a routed request ended.

    ``result`` is the task's :class:`~router.result.TaskResult`; ``completion`` the
    answer that completed it (``None`` unless ``result.success``); ``sent`` whether
    content reached the client during the run (streams only); ``cut`` the failure that
    ended a stream after content was sent (then ``result.error == "stream_cut"``).
    """

    result: TaskResult
    completion: Completion | None
    sent: bool
    cut: ProviderError | None = None


class _Try:
    """One attempt as the driver saw it."""

    __slots__ = ("outcome", "completion", "sent", "error", "bad_spec")

    def __init__(
        self,
        outcome: Outcome,
        completion: Completion | None = None,
        sent: bool = False,
        error: ProviderError | None = None,
        bad_spec: str | None = None,
    ) -> None:
        self.outcome = outcome
        self.completion = completion
        self.sent = sent
        self.error = error
        self.bad_spec = bad_spec


def pin_first(run: TaskRun, model_id: str) -> None:
    """Make ``model_id`` the first candidate of a run that has not planned a call yet.

    The rest of the route's order is kept; a model outside the chain joins it at the
    front with its quality statistics for this route (created from its profile's prior
    on first use). The route's filters still apply to it (a preview model stays out of
    production, a cost or budget cap still holds). Unknown ids are ignored.
    """
    policy = run.policy
    index = policy.model_index.get(model_id)
    if index is None:
        return
    model = policy.models[index]
    order, skip, stats = list(run.order), list(run.skip_static), list(run.stats)
    if model in order:
        j = order.index(model)
        order.insert(0, order.pop(j))
        skip.insert(0, skip.pop(j))
        stats.insert(0, stats.pop(j))
    else:
        config = policy.config
        key = (run.plan.name, model_id)
        st = policy.route_stats.get(key)
        if st is None:
            q = config.quality
            st = RouteStats(
                _prior(config.model(model_id), run.plan.name, config), q.prior_weight, q.window
            )
            policy.route_stats[key] = st
        production = config.environment == "production"
        order.insert(0, model)
        skip.insert(0, model.status if production and model.status != "stable" else None)
        stats.insert(0, st)
    # The run reads these three lists from its next planning step on (and never before
    # start() returns), so replacing them here is the same as a route written this way.
    run.order, run.skip_static, run.stats = order, skip, stats


class GatewayDriver:
    """Routes the gateway's requests through ``router``'s policy and providers.

    ``validate`` turns validation of buffered routes off (then every answer counts);
    ``attempt_recorder`` gets one record per provider call of every task (beside the
    router's task recorder). See the module docstring for the streaming and liveness
    contract.
    """

    def __init__(
        self,
        router: Router,
        *,
        validate: bool = True,
        attempt_recorder: AttemptRecorder | None = None,
    ) -> None:
        self.router = router
        self.validate = validate
        self.attempt_recorder = attempt_recorder

    async def run(self, task: Task, *, pin: str | None = None, sink: Sink | None = None) -> Routed:
        """Route ``task`` (``pin``: a model id to try first) to its end.

        With ``sink`` the answer is streamed to it (see the module docstring). Failures
        are results, not exceptions; cancelling the awaiting task abandons the call in
        flight, gives back what it holds, records the task and re-raises.
        """
        router = self.router
        clock = router.clock
        now = clock()
        run = router.policy.start(task, now)
        if pin is not None:
            pin_first(run, pin)
        winner: Completion | None = None
        sent = False
        cut: ProviderError | None = None
        try:
            action = run.next_action(now)
            buffer = run.plan.route.buffer
            while not isinstance(action, Finish):
                if isinstance(action, Call) and router.shared is not None:
                    # Shared caps and probe tokens: the store admits each planned call.
                    action = await router.admit(run, action)
                    if not isinstance(action, Call):
                        continue
                if isinstance(action, Call):
                    attempt = await self._attempt(action, task, buffer, sink)
                    if attempt.bad_spec is not None:
                        cost = attempt.outcome.cost_usd
                        action = Finish(run.abort(clock(), "bad_spec", attempt.bad_spec, cost))
                        continue
                    sent = sent or attempt.sent
                    if attempt.sent and attempt.error is not None:
                        cut = attempt.error
                        action = Finish(self._end_cut(run, attempt.outcome, clock()))
                        continue
                    winner = attempt.completion
                    action = run.record(attempt.outcome, clock())
                else:
                    await asyncio.sleep(action.seconds)
                    action = run.next_action(clock())
            result = action.result
        except asyncio.CancelledError:
            result = run.abort(clock(), "cancelled", "the client went away")
            self._record(task, result)
            raise
        except BaseException as exc:
            result = run.abort(clock(), "error", f"{type(exc).__name__} in the gateway")
            self._record(task, result)
            raise
        self._record(task, result)
        return Routed(result, winner if result.success else None, sent, cut)

    @staticmethod
    def _end_cut(run: TaskRun, outcome: Outcome, now: float) -> TaskResult:
        """End a run whose stream failed after content reached the client.

        The failure is recorded with its real kind (the breaker and health statistics
        must see it), then whatever the policy planned next is aborted: a retry can no
        longer reach the client. A Call it planned is released by ``abort``, which also
        lists it as an attempt; that attempt never happened and is dropped again.
        """
        action = run.record(outcome, now)
        made = len(run.attempts)
        detail = f"the stream was cut after content was sent: {outcome.detail}"
        if isinstance(action, Finish):
            result = action.result
            result.error, result.detail = "stream_cut", detail
            return result
        result = run.abort(now, "stream_cut", detail)
        del result.attempts[made:]
        return result

    async def _attempt(self, call: Call, task: Task, buffer: bool, sink: Sink | None) -> _Try:
        router = self.router
        clock = router.clock
        t0 = clock()
        try:
            provider = router.provider(call.model)
        except InputError as exc:
            # No endpoint or API key for this model: not the request's fault; fall
            # back as for a 401.
            return _Try(Outcome(ErrorKind.AUTH, 0.0, 0.0, detail=str(exc)))
        sent = False
        # The HTTP providers end every attempt within its timeout (their contract, tested
        # over real sockets); the backstop is for providers that might not.
        backstop = (
            contextlib.nullcontext()  # a timer per call saved (~1% of the gateway's CPU)
            if isinstance(provider, HTTPProvider)
            else asyncio.timeout(call.timeout_s + _BACKSTOP_S)
        )
        try:
            async with backstop:
                if sink is None or buffer:
                    completion = await _complete(provider, call, task)
                else:
                    completion = None
                    async with contextlib.aclosing(_stream(provider, call, task)) as events:
                        async for event in events:
                            if type(event) is StreamEnd:
                                completion = event.completion
                            elif await sink(call.model, event):  # type: ignore[arg-type]
                                sent = True
                    if completion is None:
                        raise ProviderError(
                            ErrorKind.MALFORMED,
                            f"the stream of {call.model} ended without its final event",
                        )
        except ProviderError as exc:
            # A malformed answer still arrived (billed): the policy books its estimate.
            cost = None if exc.kind is ErrorKind.MALFORMED else 0.0
            outcome = Outcome(
                exc.kind,
                clock() - t0,
                cost,
                exc.retry_after_s,
                detail=str(exc),
                status=exc.status,
            )
            return _Try(outcome, sent=sent, error=exc)
        except TimeoutError:
            kind = ErrorKind.TIMEOUT if sent else ErrorKind.FIRST_TOKEN_TIMEOUT
            error = ProviderError(
                kind, f"{call.model}: no complete answer within the attempt's time"
            )
            return _Try(Outcome(kind, clock() - t0, 0.0, detail=str(error)), sent=sent, error=error)
        latency = clock() - t0
        profile = router.config.model(call.model)
        cost: float | None = None  # the policy books its estimate
        if (
            profile.input_per_mtok is not None
            and profile.output_per_mtok is not None
            and (completion.prompt_tokens or completion.completion_tokens)
        ):
            cost = completion.cost_usd(profile.input_per_mtok, profile.output_per_mtok)
        measured = {
            "prompt_tokens": completion.prompt_tokens or None,
            "completion_tokens": completion.completion_tokens or None,
            "provider_model": completion.model,
            "request_id": completion.request_id,
            "status": 200,
            "ttft_s": completion.ttft_s,
        }
        if buffer and self.validate and not completion.tool_calls:
            try:
                verdict = await validate_task_async(task, completion.text)
            except InputError as exc:
                return _Try(Outcome(ErrorKind.OK, latency, cost), bad_spec=str(exc))
            if not verdict.ok:
                outcome = Outcome(
                    ErrorKind.VALIDATION, latency, cost, detail=verdict.reason, **measured
                )
                return _Try(outcome)
        return _Try(Outcome(ErrorKind.OK, latency, cost, **measured), completion, sent)

    def _record(self, task: Task, result: TaskResult) -> None:
        if self.attempt_recorder is not None and result.attempts:
            self.attempt_recorder.record_result(task, result, self.router._t0)
        recorder = self.router.recorder
        if recorder is None:
            return
        last_failure = next(
            (a.kind for a in reversed(result.attempts) if a.kind in _RECORDABLE), None
        )
        recorder.record(
            task,
            model=result.model
            if result.success
            else (result.final_attempt.model if result.attempts else None),
            latency_s=max(0.0, result.latency_s),
            success=result.success,
            cost_usd=result.cost_usd,
            error_kind=None if result.success else last_failure,
            arrival_s=result.started_s - self.router._t0,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            provider_model=result.provider_model,
            request_id=result.request_id,
        )


async def _complete(provider: ModelProvider, call: Call, task: Task) -> Completion:
    if task.tools is None and task.tool_choice is None:
        # Only providers that take tools are asked to (a user's own may predate them).
        return await provider.complete(task.messages or [], timeout_s=call.timeout_s)
    return await provider.complete(
        task.messages or [],
        timeout_s=call.timeout_s,
        tools=task.tools,
        tool_choice=task.tool_choice,
    )


def _stream(provider: ModelProvider, call: Call, task: Task):  # noqa: ANN202 - an async generator
    if task.tools is None and task.tool_choice is None:
        return provider.stream(task.messages or [], timeout_s=call.timeout_s)
    return provider.stream(
        task.messages or [],
        timeout_s=call.timeout_s,
        tools=task.tools,
        tool_choice=task.tool_choice,
    )

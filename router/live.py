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
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping

import httpx

from router.config import RouterConfig, load_config
from router.errors import CostRouteError, InputError
from router.outcome import ErrorKind, Outcome
from router.policy import RoutingPolicy
from router.providers import ModelProvider, ProviderError, make_provider
from router.recording import TraceRecorder
from router.result import Call, Finish, TaskResult
from router.task import Task
from router.validation import validate_task

# A provider must end its attempt within the timeout it is given; this slack is the
# driver's own backstop against one that does not.
_BACKSTOP_S = 0.25


class RoutingError(CostRouteError):
    """No candidate completed the task. ``result`` holds every attempt and skip."""

    def __init__(self, result: TaskResult) -> None:
        self.result = result
        reasons = "; ".join(result.reasons()) or "no candidate"
        super().__init__(f"task {result.task_id} failed ({result.error}): {reasons}")


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
    record per task. ``validate`` turns structured-output validation off (then any
    answer counts as completed).
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
    ) -> None:
        self.policy = RoutingPolicy(config, seed=seed)
        self._providers: dict[str, ModelProvider] = dict(providers or {})
        self._owned: list[ModelProvider] = []
        self._transport = transport
        self.recorder = recorder
        self.clock = clock or WallClock()
        self.validate = validate
        self.system_prompt = system_prompt
        self._t0 = self.clock()

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **kwargs: object) -> Router:
        """A router for the config file at ``path`` (YAML, JSON or TOML)."""
        return cls(load_config(path), **kwargs)  # type: ignore[arg-type]

    @property
    def config(self) -> RouterConfig:
        return self.policy.config

    def reload(self, config: RouterConfig) -> None:
        """Swap the config; tasks in flight finish under the routes they started with."""
        self.policy.reconfigure(config)
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

    async def aclose(self) -> None:
        """Close the providers this router built (and the recorder)."""
        for p in self._owned:
            await p.aclose()
        self._owned.clear()
        if self.recorder is not None:
            self.recorder.close()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- routing -------------------------------------------------------------------
    async def route(self, task: Task) -> TaskResult:
        """Route ``task`` to completion; raise :class:`RoutingError` if nothing completed it."""
        clock = self.clock
        now = clock()
        run = self.policy.start(task, now)
        action = run.next_action(now)
        while not isinstance(action, Finish):
            if isinstance(action, Call):
                outcome = await self._attempt(action, task)
                action = run.record(outcome, clock())
            else:
                await asyncio.sleep(action.seconds)
                action = run.next_action(clock())
        result = action.result
        if self.recorder is not None:
            self._record(task, result)
        if not result.success:
            raise RoutingError(result)
        return result

    def _messages(self, task: Task) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        msgs.append({"role": "user", "content": task.payload or ""})
        return msgs

    async def _attempt(self, call: Call, task: Task) -> Outcome:
        provider = self.provider(call.model)
        clock = self.clock
        t0 = clock()
        try:
            # asyncio.timeout, not wait_for: the same backstop without wrapping every
            # attempt in a Task of its own (a measurable share of the per-call overhead).
            async with asyncio.timeout(call.timeout_s + _BACKSTOP_S):
                completion = await provider.complete(self._messages(task), timeout_s=call.timeout_s)
        except ProviderError as exc:
            # A malformed answer still arrived (a 2xx the provider generated and bills):
            # book the policy's estimate, as the simulator does. Failures without an
            # answer (timeouts, 429s, 5xx, resets) are not billed.
            cost = None if exc.kind is ErrorKind.MALFORMED else 0.0
            return Outcome(exc.kind, clock() - t0, cost, exc.retry_after_s, detail=str(exc))
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
        if self.validate:
            verdict = validate_task(task, completion.text)
            if not verdict.ok:
                return Outcome(ErrorKind.VALIDATION, latency, cost, detail=verdict.reason)
        return Outcome(ErrorKind.OK, latency, cost, output=completion.text)

    def _record(self, task: Task, result: TaskResult) -> None:
        last_failure = next((a.kind for a in reversed(result.attempts) if a.kind != "ok"), None)
        self.recorder.record(  # type: ignore[union-attr]
            task,
            model=result.model,
            latency_s=result.latency_s,
            success=result.success,
            cost_usd=result.cost_usd,
            error_kind=None if result.success else last_failure,
            arrival_s=result.started_s - self._t0,
        )

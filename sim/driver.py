"""The simulation driver: SimPy carries out the router policy's answers.

Each task is a SimPy process that runs the same loop as the live driver::

    run = policy.start(task, env.now)
    action = run.next_action(env.now)
    Call -> a simulated provider call; Wait -> env.timeout; Finish -> record

The policy is :class:`router.RoutingPolicy`, unchanged. The provider side of a
call follows the scenario's :class:`~sim.world.World` for this seed:

1. *Rate limit*: more than ``rate_limit_rpm`` calls to a model in one clock
   minute (a fixed window, as most providers count) is answered at once with a
   429 carrying the scenario's Retry-After.
2. *Outage*: during an outage the call fails fast with a 5xx or hangs; a hang
   ends as a ``first_token_timeout`` after the model endpoint's
   ``first_token_timeout_s`` (when the config gives one) or the attempt's
   timeout, as the live providers report a server that never answers.
3. *Capacity*: at most ``capacity`` calls run at once per model; later calls
   queue in FIFO order and the queueing time counts against the attempt's
   timeout (a call still queued when it expires is a ``first_token_timeout``:
   nothing came back).
4. *The answer*: kind and service time come from the world's common random
   numbers for (task, model, attempt); an answer slower than what is left of
   the timeout is a ``first_token_timeout`` for a model whose endpoint does not
   stream (no headers arrive before the whole answer) and a ``timeout`` for one
   that streams. A task its model did not complete is reported as a validation
   failure, which is how the live router detects it: a *quality* outcome, which
   feeds the policy's per-route completion statistic and not the breaker. A
   prompt longer than the model's context window is refused at once as
   ``context_length`` (non-retryable: the policy falls back), as a provider's
   400 would be.

Cost: answered attempts (ok, validation, malformed) cost the scenario's price;
failures with no answer (timeout, 429, 5xx, outage, context length) cost
nothing, as providers do not bill them.

Results stream into a :class:`~sim.results.ResultSink`, so a replay keeps
compact per-task arrays only (no per-event log).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import simpy

from router import Call, ErrorKind, Finish, Outcome, RouterConfig, RoutingPolicy, Task
from sim.errors import ScenarioError
from sim.results import ResultSink
from sim.trace import ReplayColumns

_OK = ErrorKind.OK
_VALIDATION = ErrorKind.VALIDATION
_MALFORMED = ErrorKind.MALFORMED
_SERVER = ErrorKind.SERVER_ERROR
_TIMEOUT = ErrorKind.TIMEOUT
_SILENT = ErrorKind.FIRST_TOKEN_TIMEOUT
_RATE = ErrorKind.RATE_LIMITED
_CONTEXT = ErrorKind.CONTEXT_LENGTH

#: Seconds a provider takes to turn a call away with a 429.
RATE_LIMIT_LATENCY_S = 0.05


class _ModelSite:
    """The simulated serving side of one model: capacity slots, queue, rate window."""

    __slots__ = ("capacity", "in_use", "queue", "rpm", "window", "window_count", "retry_after")

    def __init__(self, capacity: int | None, rpm: float | None, retry_after: float) -> None:
        self.capacity = capacity if capacity else 1 << 30
        self.in_use = 0
        self.queue: deque[simpy.Event] = deque()
        self.rpm = rpm if rpm else float("inf")
        self.window = -1
        self.window_count = 0
        self.retry_after = retry_after


class Simulation:
    """One replication: a trace, a config, a world (scenario realised for a seed)."""

    def __init__(
        self,
        config: RouterConfig,
        world,  # noqa: ANN001 - sim.world.World
        *,
        seed: int,
        sink: ResultSink,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.world = world
        self.env = simpy.Environment()
        self.policy = RoutingPolicy(config, seed=seed)
        ids = [m.id for m in config.models]
        if list(world.model_ids) != ids:
            raise ScenarioError(
                f"world models do not match the config's models ({list(world.model_ids)} vs {ids})"
            )
        self.sites = [
            _ModelSite(world.capacity(i), world.rate_limit_rpm(i), world.retry_after_s(i))
            for i in range(len(ids))
        ]
        self.sink = sink
        self.progress = progress
        # What a live provider would report for each model: how long a silent server
        # is waited for, and which kind an answer too slow for its timeout is.
        self.first_token_s: list[float | None] = []
        self.slow_kind: list[ErrorKind] = []
        for m in config.models:
            ep = m.endpoint
            self.first_token_s.append(ep.first_token_timeout_s if ep is not None else None)
            self.slow_kind.append(_TIMEOUT if ep is not None and ep.stream else _SILENT)
        n = len(ids)
        self.calls = [0] * n
        self.failures = [0] * n
        self.spend = [0.0] * n

    # -- processes -----------------------------------------------------------------
    def _arrivals(self, cols: ReplayColumns):
        env = self.env
        process = env.process
        task_proc = self._task
        ids, arrivals, types = cols.task_ids, cols.arrival_s, cols.task_types
        pts, cts = cols.prompt_tokens, cols.completion_tokens
        progress = self.progress
        for i in range(len(ids)):
            delay = arrivals[i] - env.now
            if delay > 0:
                yield env.timeout(delay)
            process(task_proc(i, Task(ids[i], types[i], None, pts[i], cts[i], arrivals[i])))
            if progress is not None and not i & 0x3FFF:
                progress(i)

    def _task(self, index: int, task: Task):
        env = self.env
        run = self.policy.start(task, env.now)
        action = run.next_action(env.now)
        call = self._call
        while True:
            kind = type(action)
            if kind is Call:
                outcome = yield from call(action, index, task)
                action = run.record(outcome, env.now)
            elif kind is Finish:
                self.sink.add(action.result)
                return
            else:
                yield env.timeout(action.seconds)
                action = run.next_action(env.now)

    def _call(self, action: Call, index: int, task: Task):
        env = self.env
        world = self.world
        m = action.model_index
        site = self.sites[m]
        start = env.now
        self.calls[m] += 1
        timeout = action.timeout_s
        # 1. rate limit (fixed one-minute window)
        minute = int(start // 60.0)
        if minute != site.window:
            site.window = minute
            site.window_count = 0
        if site.window_count >= site.rpm:
            self.failures[m] += 1
            lat = RATE_LIMIT_LATENCY_S if RATE_LIMIT_LATENCY_S < timeout else timeout
            yield env.timeout(lat)
            return Outcome(_RATE, lat, 0.0, site.retry_after)
        site.window_count += 1
        # 2. outage
        down = world.outage(m, start)
        if down is not None:
            self.failures[m] += 1
            if down == "hang":
                first = self.first_token_s[m]
                wait = first if first is not None and first < timeout else timeout
                yield env.timeout(wait)
                return Outcome(_SILENT, wait, 0.0)
            lat = world.fail_fast_latency_s(m)
            lat = lat if lat < timeout else timeout
            yield env.timeout(lat)
            return Outcome(_SERVER if lat < timeout else _TIMEOUT, lat, 0.0)
        # 3. capacity
        if site.in_use >= site.capacity:
            slot = env.event()
            site.queue.append(slot)
            expiry = env.timeout(timeout)
            yield slot | expiry
            if not slot.triggered:
                site.queue.remove(slot)
                self.failures[m] += 1
                return Outcome(_SILENT, timeout, 0.0)
            # the slot was handed over by a finishing call: in_use already counts us
        else:
            site.in_use += 1
        left = timeout - (env.now - start)
        # 4. the answer
        kind, service = world.attempt(
            m, index, action.attempt, task.task_type, task.prompt_tokens, task.completion_tokens
        )
        try:
            if service >= left:
                yield env.timeout(left if left > 0 else 0.0)
                self.failures[m] += 1
                return Outcome(self.slow_kind[m], env.now - start, 0.0)
            yield env.timeout(service)
        finally:
            self._release(site)
        latency = env.now - start
        if kind == "ok":
            cost = world.cost(m, task.prompt_tokens, task.completion_tokens)
            self.spend[m] += cost
            return Outcome(_OK, latency, cost)
        self.failures[m] += 1
        if kind == "server_error":
            return Outcome(_SERVER, latency, 0.0)
        if kind == "context_length":
            return Outcome(_CONTEXT, latency, 0.0)
        cost = world.cost(m, task.prompt_tokens, task.completion_tokens)
        self.spend[m] += cost
        return Outcome(_MALFORMED if kind == "malformed" else _VALIDATION, latency, cost)

    @staticmethod
    def _release(site: _ModelSite) -> None:
        queue = site.queue
        while queue:
            slot = queue.popleft()
            if not slot.triggered:
                slot.succeed()  # hand our slot over; in_use stays the same
                return
        site.in_use -= 1

    # -- running -------------------------------------------------------------------
    def run(self, cols: ReplayColumns) -> None:
        """Replay every task of ``cols`` to completion."""
        self.env.process(self._arrivals(cols))
        self.env.run()

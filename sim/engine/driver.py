"""The simulation driver: SimPy carries out the router policy's answers.

Each task runs the same loop as the live driver::

    run = policy.start(task, env.now)
    action = run.next_action(env.now)
    Call -> a simulated provider call; Wait -> env.timeout; Finish -> record

not as a SimPy process but as callbacks of the events it waits for (:class:`_Job`),
which is the same schedule at a fraction of the cost; a task whose first action is
a Finish (budget-rejected, no candidate) creates no event at all, and a Wait that
would be the very next event anyway (nothing queued before its end: the 0 s retry
after a failed validation, mostly) goes on at once, on the clock it would have had.
SimPy's queue is run by :meth:`Simulation._loop` (``Environment.run``'s order, with
a task's timer carrying its continuation instead of a callback list).

The policy is :class:`router.RoutingPolicy`, unchanged. The provider side of a
call follows the scenario's :class:`~sim.world.providers.World` for this seed:

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

Results stream into a :class:`~sim.engine.results.ResultSink`, so a replay keeps
compact per-task arrays only (no per-event log).

*Replicas* (``replicas=N``): the config runs as N router replicas, each with its own
:class:`~router.RoutingPolicy` (replica 0 with the run's seed), tasks spread over
them round-robin or at random (seeded). With ``state_delay`` finite the replicas
share what :mod:`router.shared` shares, each replica learning of the others'
breaker transitions, counted outcomes (the shared consecutive-failure count),
half-open probes and budget holds and spend ``state_delay`` seconds after they
happen (SimPy timeouts; 0: at once, as through the Redis store); ``inf``: nothing is
shared (independent replicas). Quality statistics stay per replica.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any, ClassVar, Literal

import simpy

from router import Call, ErrorKind, Finish, Outcome, RouterConfig, RoutingPolicy, Task
from router.breaker import BreakerEvent, BreakerListener, CircuitBreaker
from router.ledger import HoldEvent
from router.policy import TaskRun
from sim.engine.results import ResultSink
from sim.errors import ScenarioError
from sim.traces.tasks import ReplayColumns
from sim.world.site import RATE_LIMIT_LATENCY_S, ProviderSite

_OK = ErrorKind.OK
_VALIDATION = ErrorKind.VALIDATION
_MALFORMED = ErrorKind.MALFORMED
_SERVER = ErrorKind.SERVER_ERROR
_TIMEOUT = ErrorKind.TIMEOUT
_SILENT = ErrorKind.FIRST_TOKEN_TIMEOUT
_RATE = ErrorKind.RATE_LIMITED
_CONTEXT = ErrorKind.CONTEXT_LENGTH


def _untriggered(slot: simpy.Event) -> bool:
    return not slot.triggered


#: SimPy's priority of a timeout (simpy.events.NORMAL).
_NORMAL = 1


class _Timer:
    """A timeout's role in SimPy's queue, played by an object the driver already has.

    ``env.timeout(d)`` with one callback is an entry ``(now + d, NORMAL, eid, event)``
    in the environment's queue; :meth:`simpy.Environment.step` then calls the event's
    callbacks and checks ``_ok``. An object that waits on one timer at a time (the
    :class:`Simulation`'s arrivals) can be that event itself, scheduled with
    :meth:`simpy.Environment.schedule`: the entry, its order (time, priority, creation
    number) and the callback are the same, without a Timeout object per wait. Events
    that something else waits on (a capacity slot in a condition) stay SimPy events.
    (A :class:`_Job` is such an entry too, run by :meth:`Simulation._loop` without a
    callback list.)
    """

    __slots__ = ("callbacks",)
    #: what Environment.step checks after the callbacks (a timer never fails)
    _ok: ClassVar[bool] = True

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], None]] | None = None


#: Trace rows turned into Python objects at a time (see Simulation._load_chunk).
_CHUNK = 65_536


def _chunk(column: Any, lo: int, hi: int) -> list[Any]:
    """Rows ``lo:hi`` of a trace column (a list, a numpy array or a polars/pyarrow
    array) as a list of Python objects (str, float, int)."""
    if isinstance(column, list):
        return column[lo:hi]
    part = column[lo:hi]
    for method in ("tolist", "to_list", "to_pylist"):
        convert = getattr(part, method, None)
        if convert is not None:
            return convert()
    return list(part)


#: How tasks are spread over replicas.
Spread = Literal["round_robin", "random"]


class _ReplicaLink:
    """What replicas share, delivered to the others ``delay`` seconds later.

    The same hooks as :mod:`router.shared` (breaker listeners, the ledger's hold
    observer, admission of a planned call); the store is modelled as each replica's
    own view of the others, ``delay`` seconds old.
    """

    __slots__ = ("env", "policies", "delay", "claims")

    def __init__(self, env: simpy.Environment, policies: list[RoutingPolicy], delay: float):
        self.env = env
        self.policies = policies
        self.delay = delay
        #: per model index: probe claims (replica, claimed at, ended at or None)
        self.claims: dict[int, list[list[float | int | None]]] = {}
        for r, policy in enumerate(policies):
            for i, breaker in enumerate(policy.breakers):
                breaker.listener = self._breaker_hook(r, i)
            policy.ledger.observer = self._hold_hook(r)

    def _send(self, origin: int, deliver: Callable[[RoutingPolicy, float], object]) -> None:
        others = [p for j, p in enumerate(self.policies) if j != origin]
        if self.delay <= 0.0:
            now = self.env.now
            for p in others:
                deliver(p, now)
            return
        env = self.env

        def arrive(_event: simpy.Event) -> None:
            for p in others:
                deliver(p, env.now)

        env.timeout(self.delay).callbacks.append(arrive)

    def _breaker_hook(self, r: int, i: int) -> BreakerListener:
        def hook(breaker: CircuitBreaker, event: BreakerEvent, now: float) -> None:
            if event is BreakerEvent.FAILURE:
                self._send(r, lambda p, _t: p.breakers[i].count_remote(True))
            elif event is BreakerEvent.SUCCESS:
                self._send(r, lambda p, _t: p.breakers[i].count_remote(False))
            elif event is BreakerEvent.OPENED:
                self._end_claim(r, i)
                until = breaker.open_until
                self._send(r, lambda p, t: p.breakers[i].adopt_open(until, t))
            elif event is BreakerEvent.CLOSED:
                self._end_claim(r, i)
                self._send(r, lambda p, t: p.breakers[i].adopt_closed(t))
            else:  # PROBE_RELEASED
                self._end_claim(r, i)

        return hook

    def _hold_hook(self, r: int) -> Callable[..., None]:
        def hook(
            event: HoldEvent,
            hold: int,
            model: int,
            reserved: float,
            actual: float,
            task_type: str,
            now: float,
        ) -> None:
            if event is HoldEvent.RESERVED:
                delta = reserved
            elif event is HoldEvent.SETTLED:
                delta = actual - reserved
            else:
                delta = -reserved
            if delta:
                self._send(r, lambda p, t: p.ledger.apply_remote(model, delta, t, task_type))

        return hook

    def _end_claim(self, r: int, i: int) -> None:
        for claim in self.claims.get(i, ()):
            if claim[0] == r and claim[2] is None:
                claim[2] = self.env.now

    def admit(self, r: int, run: TaskRun, call: Call) -> str | None:
        """A half-open probe goes only if no other replica's probe of the model is
        known (claimed at least ``delay`` ago, and not known to have ended)."""
        if not run.pending_probe:
            return None
        i = call.model_index
        now = self.env.now
        d = self.delay
        timeout = self.policies[r].breakers[i].settings.probe_timeout_s
        claims = self.claims.setdefault(i, [])
        for holder, at, ended in claims:
            if (
                holder != r
                and at + d <= now  # type: ignore[operator]
                and (ended is None or ended + d > now)
                and now - at < timeout  # type: ignore[operator]
            ):
                return "breaker_open"
        claims.append([r, now, None])
        if len(claims) > 64:
            del claims[:-32]
        return None


class Simulation:
    """One replication: a trace, a config, a world (scenario realised for a seed).

    ``replicas``/``state_delay``/``spread``: run the config as that many router
    replicas sharing state with that delay (see the module docstring).
    """

    def __init__(
        self,
        config: RouterConfig,
        world,  # noqa: ANN001 - sim.world.providers.World
        *,
        seed: int,
        sink: ResultSink,
        progress: Callable[[int], None] | None = None,
        replicas: int = 1,
        state_delay: float = 0.0,
        spread: Spread = "round_robin",
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas: expected an integer >= 1, got {replicas}")
        if not state_delay >= 0.0:
            raise ValueError(f"state_delay: expected seconds >= 0 (or inf), got {state_delay}")
        if spread not in ("round_robin", "random"):
            raise ValueError(f"spread: expected 'round_robin' or 'random', got {spread!r}")
        self.config = config
        self.world = world
        self.env = simpy.Environment()
        self.policy = RoutingPolicy(config, seed=seed)
        #: one policy per replica (replica 0 is :attr:`policy`)
        self.policies = [self.policy] + [
            RoutingPolicy(config, seed=seed + 1_000_003 * r) for r in range(1, replicas)
        ]
        self.spread = spread
        self._spread_rng = random.Random(f"spread:{seed}")
        self.link = (
            _ReplicaLink(self.env, self.policies, state_delay)
            if replicas > 1 and math.isfinite(state_delay)
            else None
        )
        ids = [m.id for m in config.models]
        if list(world.model_ids) != ids:
            raise ScenarioError(
                f"world models do not match the config's models ({list(world.model_ids)} vs {ids})"
            )
        self.sites: list[ProviderSite[simpy.Event]] = [
            ProviderSite(world, i) for i in range(len(ids))
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
        self._arrival_timer = _Timer()
        n = len(ids)
        # Per model, the prices an answered call costs (see _cost).
        self._per_mtok: list[tuple[float, float] | None] = []
        self._per_task: list[float] = []
        for i in range(n):
            rate_in, rate_out, per_task = world.prices(i)
            both = rate_in is not None and rate_out is not None
            self._per_mtok.append((rate_in, rate_out) if both else None)
            self._per_task.append(per_task)
        self.calls = [0] * n
        self.failures = [0] * n
        self.spend = [0.0] * n
        # The run's state (set by :meth:`run`; declared here, with their types, for
        # the compiled build, whose classes have no attributes they do not declare).
        self._cols: ReplayColumns | None = None
        self._n_tasks = 0
        self._next = 0
        self._lo = 0
        # (the trace's values exactly as its columns give them: no conversion)
        self._ids: list[Any] = []
        self._at: list[Any] = []
        self._types: list[Any] = []
        self._pts: list[Any] = []
        self._cts: list[Any] = []
        self._intern: dict[str, str] = {}
        self._orig: list[Any] | None = None
        self._single = False
        self._arrive_callbacks: list[Callable[[Any], None]] = []
        self._schedule: Callable[..., Any] = self.env.schedule
        self._queue: list[Any] = self.env._queue
        self._eid: Any = self.env._eid
        self._direct = False

    # -- arrivals and tasks ---------------------------------------------------------
    # A task is not a SimPy process: it is a small state machine (:class:`_Job`) whose
    # steps run as callbacks of the events it waits for (a call's timeout, a backoff,
    # a capacity slot), in exactly the order a process per task ran them, so results
    # are unchanged to the bit. The same events are created in the same order (SimPy
    # orders events by time, priority, then creation), and each callback does what the
    # process did after that ``yield``. The process's own two events carried no
    # decision: its start was an urgent event run right after the arrival step (after
    # the next arrival's timeout was scheduled, and tied arrivals' starts in order),
    # which is when :meth:`_arrive` now starts the tasks; nothing waited on its end. A
    # task whose route yields no call (budget, no candidate) finishes within its
    # arrival step, with no event at all.
    def _arrive(self, _event: object = None) -> None:
        """Start every task arriving now (ties, in trace order), after scheduling the
        next arrival; the trace is turned into Python objects one chunk at a time."""
        env = self.env
        now = env.now
        i = self._next
        lo = self._lo
        at_ = self._at
        j = i - lo
        if self._single and j + 1 < len(at_):
            # The common case, without the general loop's list: one replica, and exactly
            # one task arriving now with the next one in the same chunk (the same steps
            # as below: the next arrival is scheduled before the task starts).
            at = at_[j]
            if not at - now > 0:
                gap = at_[j + 1] - now
                if gap > 0:
                    timer = self._arrival_timer
                    timer.callbacks = self._arrive_callbacks
                    env.schedule(timer, _NORMAL, gap)  # type: ignore[arg-type]
                    self._next = i + 1
                    task = Task(self._ids[j], self._types[j], None, self._pts[j], self._cts[j], at)
                    run = self.policy.start(task, now)
                    action = run.next_action(now)
                    if type(action) is Finish:
                        self.sink.add(action.result)
                    else:
                        w = i if self._orig is None else self._orig[j]
                        _Job(self, w, task, run, 0)._call(action, now)  # type: ignore[arg-type]
                    return
        starting: list[tuple[int, int, Task]] = []
        while i < self._n_tasks:
            j = i - lo
            if j >= len(at_):
                self._load_chunk(i)
                lo, at_, j = i, self._at, 0
            at = at_[j]
            if at - now > 0:
                # What env.timeout(at - now) with _arrive as its callback does, on this
                # object as the event (see _Timer): the same queue entry, one object less.
                timer = self._arrival_timer
                timer.callbacks = self._arrive_callbacks
                env.schedule(timer, _NORMAL, at - now)  # type: ignore[arg-type]
                break
            # The world draws by the task's index in the trace it was cut from (a sample's
            # tasks meet the very draws they meet in the full trace), else its position.
            w = i if self._orig is None else self._orig[j]
            starting.append(
                (i, w, Task(self._ids[j], self._types[j], None, self._pts[j], self._cts[j], at))
            )
            i += 1
        self._next = i
        n = len(self.policies)
        begin = self._begin
        progress = self.progress
        if n == 1 and progress is None:
            # _begin, inlined for the single-replica run (once per task)
            # (one replica: no link, so a first Call needs no admission)
            policy = self.policy
            for _, w, task in starting:
                run = policy.start(task, now)
                action = run.next_action(now)
                if type(action) is Finish:
                    self.sink.add(action.result)
                else:
                    _Job(self, w, task, run, 0)._call(action, now)  # type: ignore[arg-type]
            return
        for i, w, task in starting:
            if n == 1:
                begin(w, task, 0)
            elif self.spread == "round_robin":
                begin(w, task, i % n)
            else:
                begin(w, task, self._spread_rng.randrange(n))
            if progress is not None and not i & 0x3FFF:
                progress(i)

    def _load_chunk(self, lo: int) -> None:
        # Only _CHUNK tasks' Python objects exist at once, whatever the trace's length
        # (its columns may be compact arrays); task types are interned.
        cols = self._cols
        assert cols is not None  # set by run()
        hi = min(lo + _CHUNK, self._n_tasks)
        intern = self._intern
        self._lo = lo
        self._ids = _chunk(cols.task_ids, lo, hi)
        self._at = _chunk(cols.arrival_s, lo, hi)
        self._types = [intern.setdefault(t, t) for t in _chunk(cols.task_types, lo, hi)]
        self._pts = _chunk(cols.prompt_tokens, lo, hi)
        self._cts = _chunk(cols.completion_tokens, lo, hi)
        self._orig = None if cols.index is None else _chunk(cols.index, lo, hi)

    def _begin(self, index: int, task: Task, replica: int) -> None:
        now = self.env.now
        run = self.policies[replica].start(task, now)
        action = run.next_action(now)
        if type(action) is Finish:
            self.sink.add(action.result)
            return
        job = _Job(self, index, task, run, replica)
        if self.link is None:
            # a first action is never a Wait; no admission to ask
            job._call(action, now)  # type: ignore[arg-type]
        else:
            job.drive(action, now)

    @staticmethod
    def _release(site: ProviderSite[simpy.Event]) -> None:
        slot = site.release(_untriggered)
        if slot is not None:
            slot.succeed()  # hand our slot over; in_use stays the same

    def _cost(self, m: int, prompt_tokens: Any, completion_tokens: Any) -> float:
        """USD of an answered call of model ``m``: the scenario's ``ModelSpec.cost``
        (the same expression, so the same floats), without a call into it."""
        rates = self._per_mtok[m]
        if rates is not None:
            return (prompt_tokens * rates[0] + completion_tokens * rates[1]) / 1e6
        return self._per_task[m]

    # -- running -------------------------------------------------------------------
    @property
    def breaker_trips(self) -> int:
        """Breaker trips of every replica (an opening learned from another replica is
        not a trip)."""
        return sum(p.breaker_trips for p in self.policies)

    @property
    def budget_alerts(self) -> int:
        return sum(len(p.ledger.alerts) for p in self.policies)

    def run(self, cols: ReplayColumns) -> None:
        """Replay every task of ``cols`` to completion."""
        self._cols = cols
        self._n_tasks = len(cols.task_ids)
        self._next = 0
        self._lo = 0
        self._ids = []
        self._at = []
        self._intern = {}
        self._orig = None
        # _arrive's fast path: one replica and no progress callback
        self._single = len(self.policies) == 1 and self.progress is None
        # The arrival timer's callback list, made once: Environment.step only iterates a
        # fired event's list (after taking it off the event), so one list serves them all.
        # (It refers back to this object: dropped after the run, so no cycle outlives it.)
        self._arrive_callbacks = [self._arrive]
        # Scheduling goes through env.schedule as looked up now (one bound method for
        # the run; a test may wrap it to count the events); when it is SimPy's own, its
        # one statement is done here instead (see _Job._after).
        env = self.env
        self._schedule = env.schedule
        self._queue = env._queue
        self._eid = env._eid
        self._direct = (
            "schedule" not in vars(env) and type(env).schedule is simpy.Environment.schedule
        )
        first = self.env.event()
        first.callbacks.append(self._arrive)
        first.succeed()
        try:
            self._loop()
        finally:
            self._cols = None
            self._ids = self._at = self._types = self._pts = self._cts = []
            self._arrive_callbacks = []
            self._arrival_timer.callbacks = None

    def _loop(self) -> None:
        """:meth:`simpy.Environment.run` with no ``until``: every event in its order.

        Each entry ``(time, priority, eid, event)`` is taken off SimPy's queue and the
        clock set, as :meth:`~simpy.Environment.step` does; a SimPy event then runs its
        callbacks (and a failed, undefused one crashes the run, as in ``step``). A
        :class:`_Job` has no callback list: its continuation is called with the clock
        (what its one callback would have done, without a list and a bound method per
        wait and a property read of ``env.now`` per step). Nothing here stops early:
        SimPy's ``StopSimulation`` is raised only by an ``until`` this run has none of.
        """
        env = self.env
        queue: list[Any] = env._queue
        pop = heappop
        job = _Job
        timer = self._arrival_timer
        arrive = self._arrive
        while queue:
            now, _, _, event = pop(queue)
            env._now = now
            if type(event) is job:
                event.then(event, now)
            elif event is timer:
                timer.callbacks = None
                arrive(timer)
            else:
                callbacks, event.callbacks = event.callbacks, None
                for callback in callbacks:
                    callback(event)
                if not event._ok and not hasattr(event, "_defused"):
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    raise exc


class _Job:
    """One task in flight: the routing run and the call it is making.

    The steps of :meth:`drive` and the call's continuations are what the task's SimPy
    process used to run between its ``yield`` statements (see :meth:`Simulation._arrive`).
    A job waits on one timer at a time, as its own entry in SimPy's queue (see
    :class:`_Timer`): :attr:`then` is what runs when it fires (``then(job, now)``, called
    by :meth:`Simulation._loop`).
    """

    __slots__ = (
        "sim",
        "index",
        "task",
        "run",
        "replica",
        "then",
        "m",
        "site",
        "start",
        "timeout",
        "attempt",
        "kind",
        "slot",
        "outcome",
    )

    def __init__(self, sim: Simulation, index: int, task: Task, run: TaskRun, replica: int):
        self.sim = sim
        self.index = index
        self.task = task
        self.run = run
        self.replica = replica
        self.slot: simpy.Event | None = None

    def drive(self, action: Any, now: float) -> None:
        """Carry out ``action`` and what follows until the task must wait or is done."""
        sim = self.sim
        run = self.run
        link = sim.link
        while True:
            kind = type(action)
            if kind is Call:
                if link is not None:
                    reason = link.admit(self.replica, run, action)
                    if reason is not None:
                        action = run.refuse(now, reason)
                        continue
                self._call(action, now)
                return
            if kind is Finish:
                sim.sink.add(action.result)
                return
            # A Wait. When nothing else is queued at or before its end (the common retry
            # after a failed validation waits 0 s), its timer would be the very next
            # event: the clock moves there and the task goes on now, the same step
            # without the queue's round trip. (Leaving out its queue entry changes no
            # other event's order: entries are ordered by time, priority, then creation,
            # and creation numbers only ever grow.)
            seconds = action.seconds
            if seconds >= 0:
                at = now + seconds  # the time env.schedule would give it
                queue = sim._queue
                if not queue or queue[0][0] > at:
                    sim.env._now = now = at
                    action = run.next_action(now)
                    continue
            self._after(seconds, _Job._waited)
            return

    def _after(self, delay: float, then: Callable[[_Job, float], None]) -> None:
        """``env.timeout(delay)`` with ``then`` as its callback, this job as the event."""
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")  # as env.timeout would
        self.then = then
        sim = self.sim
        if sim._direct:
            # Environment.schedule's statement (the same queue entry, one call less)
            env = sim.env
            heappush(sim._queue, (env._now + delay, _NORMAL, next(sim._eid), self))
        else:
            sim._schedule(self, _NORMAL, delay)

    def _waited(self, now: float) -> None:
        self.drive(self.run.next_action(now), now)

    def _resume(self, outcome: Outcome, now: float) -> None:
        action = self.run.record(outcome, now)
        if type(action) is Finish:
            self.sim.sink.add(action.result)
        else:
            self.drive(action, now)

    def _refused(self, now: float) -> None:
        self._resume(self.outcome, now)

    # -- a simulated provider call (the steps of the module docstring) ---------------
    def _call(self, action: Call, start: float) -> None:
        sim = self.sim
        m = action.model_index
        site = sim.sites[m]
        sim.calls[m] += 1
        timeout = action.timeout_s
        self.m = m
        self.site = site
        self.start = start
        # 1-2. rate limit and outage at arrival (sim.world.site, shared with the twin)
        refusal = site.arrive(start)
        if refusal is not None:
            sim.failures[m] += 1
            if refusal == "rate_limited":
                lat = RATE_LIMIT_LATENCY_S if RATE_LIMIT_LATENCY_S < timeout else timeout
                self.outcome = Outcome(_RATE, lat, 0.0, site.retry_after_s)
            elif refusal == "hang":
                first = sim.first_token_s[m]
                lat = first if first is not None and first < timeout else timeout
                self.outcome = Outcome(_SILENT, lat, 0.0)
            else:
                lat = sim.world.fail_fast_latency_s(m)
                lat = lat if lat < timeout else timeout
                self.outcome = Outcome(_SERVER if lat < timeout else _TIMEOUT, lat, 0.0)
            self._after(lat, _Job._refused)
            return
        # 3. capacity (ProviderSite.acquire, inlined: a free slot is taken at once)
        if site.in_use < site.capacity:
            site.in_use += 1
        else:
            # what the queued continuation (_queued, _answer) needs besides the above
            env = sim.env
            self.timeout = timeout
            self.attempt = action.attempt
            slot = env.event()
            site.wait(slot)
            self.slot = slot
            (slot | env.timeout(timeout)).callbacks.append(self._queued)
            return
        # 4. the answer (ProviderSite.answer, called on the world directly: one call
        # less on the hottest path)
        task = self.task
        kind, service = sim.world.attempt(
            m, self.index, action.attempt, task.task_type, task.prompt_tokens,
            task.completion_tokens,
        )  # fmt: skip
        if service >= timeout:  # nothing queued: all of the timeout is left
            self._after(timeout if timeout > 0 else 0.0, _Job._too_slow)
            return
        self.kind = kind
        self._after(service, _Job._answered)

    def _queued(self, _event: simpy.Event) -> None:
        slot = self.slot
        assert slot is not None  # set by _call when the call queued
        self.slot = None
        now = self.sim.env.now
        if not slot.triggered:
            self.site.queue.remove(slot)
            self.sim.failures[self.m] += 1
            self._resume(Outcome(_SILENT, self.timeout, 0.0), now)
            return
        # the slot was handed over by a finishing call: in_use already counts us
        self._answer(now)

    def _answer(self, now: float) -> None:
        left = self.timeout - (now - self.start)
        # 4. the answer
        task = self.task
        kind, service = self.site.answer(
            self.index,
            self.attempt,
            task.task_type,  # type: ignore[arg-type]
            task.prompt_tokens,
            task.completion_tokens,
        )
        if service >= left:
            self._after(left if left > 0 else 0.0, _Job._too_slow)
            return
        self.kind = kind
        self._after(service, _Job._answered)

    def _too_slow(self, now: float) -> None:
        sim = self.sim
        m = self.m
        sim.failures[m] += 1
        outcome = Outcome(sim.slow_kind[m], now - self.start, 0.0)
        sim._release(self.site)
        self._resume(outcome, now)

    def _answered(self, now: float) -> None:
        sim = self.sim
        site = self.site
        if site.queue:
            slot = site.release(_untriggered)
            if slot is not None:
                slot.succeed()  # hand our slot over; in_use stays the same
        else:
            site.in_use -= 1  # ProviderSite.release with nobody queued
        m = self.m
        latency = now - self.start
        kind = self.kind
        # run.record(Outcome(kind, latency, cost), now), without the Outcome
        if kind == "ok":
            task = self.task
            cost = sim._cost(m, task.prompt_tokens, task.completion_tokens)
            sim.spend[m] += cost
            action = self.run.record_kind(_OK, latency, cost, None, now)
        else:
            sim.failures[m] += 1
            if kind == "server_error":
                action = self.run.record_kind(_SERVER, latency, 0.0, None, now)
            elif kind == "context_length":
                action = self.run.record_kind(_CONTEXT, latency, 0.0, None, now)
            else:
                task = self.task
                cost = sim._cost(m, task.prompt_tokens, task.completion_tokens)
                sim.spend[m] += cost
                action = self.run.record_kind(
                    _MALFORMED if kind == "malformed" else _VALIDATION, latency, cost, None, now
                )
        if type(action) is Finish:
            sim.sink.add(action.result)
        else:
            self.drive(action, now)

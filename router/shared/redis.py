"""Shared state in Redis: breakers, spend and statistics of many router replicas.

One :class:`RedisState` per replica (per :class:`~router.live.Router`), all on one
Redis (``shared.url`` in the config). What it guarantees, with the store up and with
it lost, is the table in the README's "Many replicas" section; in short:

* **Spend.** A call under a daily cap is reserved in Redis before it starts,
  atomically against the global, per-model, per-provider and per-task-type caps (a Lua
  script, :mod:`router.shared.scripts`); its settle books the actual cost exactly once
  (per hold id) and a release books nothing. A reservation carries a lease, renewed
  every ``lease_s / 3`` while its call runs: one left by a crashed replica expires by
  itself. Calls of uncapped models are not reserved; their spend is booked in
  batches. Day keys expire two days after their day began.
* **Breakers.** Every transition goes through Redis (the later of two open deadlines
  wins; a close only wins over an opening that is due) and is published; every
  replica applies it on receipt (loopback: about a millisecond). Counted failures
  while closed feed one shared consecutive-failure count, so N replicas trip after as
  many failures as one would. A half-open breaker's probe is a token in Redis with
  the breaker's ``probe_timeout_s`` as TTL: one probe for all replicas. States are
  also re-read every ``sync_interval_s``.
* **Statistics.** Quality evidence and latency EWMAs are merged every
  ``stats_interval_s`` (:mod:`router.shared.stats`).
* **Losing the store.** Routing never waits for it: an operation that fails or takes
  longer than ``timeout_s`` puts the replica in *degraded* mode (logged once, shown
  by :meth:`status`): it routes on its own breakers and spends at most
  ``local_fraction`` of what was left under each cap when the store was last seen.
  Settles are kept (bounded: batched per field set) and, when a ping succeeds again
  (every ``retry_s``), the calls still in flight are reserved and everything booked
  meanwhile is added to the shared ledger before the replica leaves degraded mode.

The password comes from the environment (``shared.password_env``) and is never
logged; URLs are shown masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from router.breaker import BreakerEvent, BreakerState, CircuitBreaker
from router.errors import ConfigError
from router.ledger import DAY_S, HoldEvent
from router.policy import RoutingPolicy, TaskRun
from router.result import Call
from router.shared import scripts
from router.shared.base import (
    BREAKER_OPEN,
    BUDGET,
    SharedState,
    SharedStatus,
    cap_fields,
    capped_models,
    mask_url,
    needs_reservation,
)
from router.shared.stats import StatsMerger, decode, encode

__all__ = ["RedisState"]

log = logging.getLogger("router.shared")

_EPS = 1e-9
#: Ops sent to Redis in one pipeline at most.
_BATCH = 256
#: Breaker hashes live this long after their last change (a removed model's go away).
_BREAKER_TTL_S = 7 * 86400


_SCRIPTS = (
    "RESERVE",
    "SETTLE",
    "RELEASE",
    "RENEW",
    "B_FAIL",
    "B_SUCCESS",
    "B_OPEN",
    "B_CLOSE",
    "B_PROBE",
    "B_PROBE_RELEASE",
)


def _sha(script: str) -> str:
    import hashlib

    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts so


#: A timer firing later than this after its deadline means our own event loop is
#: congested (the store's reply may be waiting in it): see :func:`within`.
_LAG_TOLERANCE_S = 0.02


async def within(
    aw: Awaitable[Any], timeout: float, backstop: float | None = None, what: str = "store"
) -> Any:
    """Await ``aw``; raise TimeoutError once the store has had ``timeout`` seconds of a
    responsive event loop to answer, and in any case after ``backstop`` seconds
    (default ``4 * timeout``).

    Why not ``asyncio.wait_for``: on a CPU-starved replica (a burst of requests on a
    loaded machine) the event loop itself can be late by hundreds of milliseconds; a
    reply that arrived in time then sits unread while the timer fires, and a healthy
    store would be declared lost (degraded mode, spend limited to the local fraction)
    for the replica's own slowness. So each time the timer fires late, the store gets
    back the time our loop took from it; only a timeout on a loop that ran on time
    (or the backstop) blames the store.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(aw)
    began = loop.time()
    hard = began + (4.0 * timeout if backstop is None else backstop)
    wait = timeout
    try:
        while True:
            asked = loop.time() + wait
            done, _ = await asyncio.wait((task,), timeout=wait)
            if done:
                return task.result()
            now = loop.time()
            late = now - asked
            if late <= _LAG_TOLERANCE_S or now >= hard:
                raise TimeoutError(
                    f"{what}: no answer from the store within {timeout:g} s "
                    f"(waited {now - began:.2f} s)"
                )
            wait = min(late, hard - now)
    finally:
        if not task.done():
            # Not awaited here: that could swallow a cancellation of our caller.
            task.cancel()
            task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Read an abandoned operation's outcome (no "exception never retrieved" noise)."""
    if not task.cancelled():
        task.exception()


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, TimeoutError)


class RedisState(SharedState):
    """One replica's client of the shared state in Redis (see the module docstring).

    ``url``: ``redis://host:port/db`` (no password in it; pass ``password``).
    ``namespace`` prefixes every key. The other arguments are those of
    :class:`~router.config.Shared`. ``replica`` names this replica in hold ids and
    in published transitions (default: random).
    """

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        namespace: str = "costroute",
        local_fraction: float = 0.25,
        lease_s: float = 120.0,
        sync_interval_s: float = 1.0,
        stats_interval_s: float = 5.0,
        timeout_s: float = 0.25,
        retry_s: float = 1.0,
        replica: str | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self._password = password
        self.namespace = namespace
        self.local_fraction = local_fraction
        self.lease_s = lease_s
        self.sync_interval_s = sync_interval_s
        self.stats_interval_s = stats_interval_s
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.replica = replica or os.urandom(6).hex()
        self._ns = f"{{{namespace}}}"
        self.channel = f"{self._ns}:breaker"
        self._client: Any = None
        #: sha1 of each script (EVALSHA; loaded again after a NOSCRIPT, e.g. a restart)
        self._shas = {name: _sha(getattr(scripts, name)) for name in _SCRIPTS}
        #: calls of the request path waiting to be sent in the next pipeline
        self._pending: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]] = []
        self._pending_wake: asyncio.Event | None = None
        self._errors = _redis_errors()
        self._ops: deque[tuple[Any, ...]] = deque()
        #: ops of the batch being sent (taken off _ops; back on it if the send fails)
        self._sending = 0
        #: uncapped or locally booked spend not yet in the store: fields -> [usd, calls]
        self._agg: dict[tuple[int, tuple[str, ...]], list[float]] = {}
        self._agg_ids = itertools.count()
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reconnector: asyncio.Task[None] | None = None
        self._started = False
        self._starting: asyncio.Future[None] | None = None
        self._closed = False
        self._capped: list[bool] = []
        self._merger = StatsMerger()
        #: holds reserved (or maybe reserved) in Redis: hold -> (day, fields)
        self._redis_holds: dict[int, tuple[int, list[str]]] = {}
        #: holds whose reservation's reply was lost: hold -> day
        self._maybe: dict[int, int] = {}
        #: holds admitted locally while degraded: hold -> (day, fields, estimate, outage)
        self._local_holds: dict[int, tuple[int, list[str], float, int]] = {}
        #: last known spent + reserved per field today (for the degraded allowance)
        self._known: dict[str, float] = {}
        self._known_day = -1
        self._allow: dict[str, float] = {}
        self._used: dict[str, float] = {}
        self._connected = False
        self._degraded_since: float | None = None
        self._outages = 0
        self._last_error: str | None = None
        self._unreconciled = 0.0
        self._reconciled = 0.0
        self._last_stats = -math.inf

    @classmethod
    def from_config(cls, shared: Any) -> RedisState:
        """A state for a :class:`~router.config.Shared` section (the password is read
        from ``shared.password_env``; ConfigError if that variable is not set)."""
        password = None
        if shared.password_env:
            password = os.environ.get(shared.password_env)
            if not password:
                raise ConfigError(
                    f"shared.password_env: the environment variable {shared.password_env} "
                    "is not set"
                )
        return cls(
            shared.url,
            password=password,
            namespace=shared.namespace,
            local_fraction=shared.local_fraction,
            lease_s=shared.lease_s,
            sync_interval_s=shared.sync_interval_s,
            stats_interval_s=shared.stats_interval_s,
            timeout_s=shared.timeout_s,
            retry_s=shared.retry_s,
        )

    def __repr__(self) -> str:
        return f"RedisState({mask_url(self.url)!r}, namespace={self.namespace!r})"

    def attach(self, policy: RoutingPolicy, clock: Callable[[], float]) -> None:
        super().attach(policy, clock)
        self._capped = capped_models(policy)

    # -- keys --------------------------------------------------------------------------
    def _day_keys(self, day: int) -> list[str]:
        base = f"{self._ns}:d:{day}"
        return [f"{base}:spent", f"{base}:resv", f"{base}:holds", f"{base}:leases"]

    def _bkeys(self, model: str) -> list[str]:
        return [f"{self._ns}:b:{model}", f"{self._ns}:b:{model}:probe"]

    def _hold_id(self, hold: int) -> str:
        return f"{self.replica}:{hold}"

    @staticmethod
    def _ttl(day: int, now: float) -> int:
        return max(1, int((day + 2) * DAY_S - now) + 1)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and start the background tasks on the running loop. Never raises
        for an unreachable store: the replica starts degraded and keeps trying.
        Concurrent callers all wait for the first connection attempt."""
        if self._started:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._wake = asyncio.Event()
        self._pending_wake = asyncio.Event()
        self._client = aioredis.Redis.from_url(
            self.url,
            password=self._password,
            # Operations are bounded by within() (lag-aware); the socket's own timeout,
            # blind to a busy event loop, is only a safety net for a hung connection.
            socket_timeout=self.timeout_s * 16,
            socket_connect_timeout=self.timeout_s * 4,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._tasks.append(asyncio.create_task(self._batcher(), name="costroute-shared-batch"))
        try:
            await asyncio.wait_for(self._load_scripts(), self.timeout_s * 4)
        except Exception as exc:
            self._lost(exc)
        else:
            self._connected = True
            await self._after_connect()
        self._tasks += [
            asyncio.create_task(self._flusher(), name="costroute-shared-flush"),
            asyncio.create_task(self._ticker(), name="costroute-shared-tick"),
        ]
        self._started = True
        if self._ops or self._agg:
            self._wake.set()

    async def _load_scripts(self) -> None:
        """Load every script (a restarted Redis has none): a few connections of the
        pool are opened on the way, so the first calls of the request path are fast."""
        pipe = self._client.pipeline(transaction=False)
        for name in _SCRIPTS:
            pipe.script_load(getattr(scripts, name))
        await pipe.execute()
        await asyncio.gather(*(self._client.ping() for _ in range(3)))

    async def _after_connect(self) -> None:
        """What a (re)connection does before serving: subscribe and re-read breakers."""
        self._tasks.append(asyncio.create_task(self._subscriber(), name="costroute-shared-sub"))
        with contextlib.suppress(Exception):  # the ticker re-reads soon anyway
            await self._resync()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._started and self._connected and (self._ops or self._agg):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._flush_all(), self.timeout_s * 4)
        tasks = [*self._tasks, *([self._reconnector] if self._reconnector else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
        self.detach()

    def status(self) -> SharedStatus:
        return SharedStatus(
            "redis",
            self.replica,
            url=mask_url(self.url),
            connected=self._connected,
            degraded_since=self._degraded_since,
            outages=self._outages,
            last_error=self._last_error,
            # Ops of a batch on its way count too: "0 pending" means all in the store.
            pending_ops=len(self._ops) + len(self._agg) + self._sending,
            reconciled_usd=self._reconciled,
            remote_opens=self._remote_opens,
            opened_at=dict(self._opened_at),
        )

    @property
    def connected(self) -> bool:
        return self._connected

    # -- losing and finding the store --------------------------------------------------
    def _lost(self, exc: BaseException) -> None:
        if self._closed:
            return  # our own connections closing
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._last_error = why
        if not self._connected and self._degraded_since is not None:
            return
        self._connected = False
        self._outages += 1
        self._degraded_since = self.clock() if self.clock else 0.0
        self._allow = {}
        self._used = {}
        log.warning(
            "shared state store %s unreachable (%s): routing on this replica's own state; "
            "spending at most %.0f%% of what was left under each cap until it is back",
            mask_url(self.url),
            why,
            self.local_fraction * 100,
        )
        for t in self._tasks:
            if t.get_name() == "costroute-shared-sub":
                t.cancel()
        self._tasks = [t for t in self._tasks if t.get_name() != "costroute-shared-sub"]
        if not self._closed and (self._reconnector is None or self._reconnector.done()):
            with contextlib.suppress(RuntimeError):  # no running loop (closing)
                self._reconnector = asyncio.get_running_loop().create_task(
                    self._reconnect(), name="costroute-shared-reconnect"
                )

    async def _reconnect(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.retry_s)
            try:
                await asyncio.wait_for(self._load_scripts(), self.timeout_s * 4)
                await self._reconcile()
            except Exception as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                continue
            since = self._degraded_since
            self._connected = True
            self._degraded_since = None
            self._reconciled += self._unreconciled
            reconciled, self._unreconciled = self._unreconciled, 0.0
            down = (self.clock() - since) if since is not None and self.clock else 0.0
            log.warning(
                "shared state store %s is back after %.1f s: $%.6f booked meanwhile was "
                "added to the shared ledger",
                mask_url(self.url),
                down,
                reconciled,
            )
            await self._after_connect()
            if self._wake is not None:
                self._wake.set()
            return

    async def _reconcile(self) -> None:
        """Before leaving degraded mode: reserve the calls admitted locally that are
        still in flight (without a cap check: they were admitted), share our own
        openings, and flush everything booked meanwhile."""
        policy = self.policy
        now = self.clock()  # type: ignore[misc]
        for hold, (day, fields, est, _) in list(self._local_holds.items()):
            keys = self._day_keys(day)
            args: list[Any] = [self._hold_id(hold), repr(est), repr(now), repr(now + self.lease_s)]
            args += [self._ttl(day, now), len(fields)]
            for f in fields:
                args += [f, -1]
            # A store hold from here on: if the call ends while this is sent, its settle
            # goes to the store by hold id (ending the reservation made here).
            del self._local_holds[hold]
            self._redis_holds[hold] = (day, fields)
            await asyncio.wait_for(self._eval([("RESERVE", keys, args)]), self.timeout_s * 4)
        if policy is not None:
            for m in policy.models:
                b = policy.breakers[m.index]
                if b.state is BreakerState.OPEN and b.open_until > now:
                    self._ops.append(("open", m.id, b.open_until, m.index))
        await self._flush_all()

    async def _flush_all(self) -> None:
        while self._ops or self._agg:
            await self._flush_batch()

    # -- policy hooks (sync, no I/O) -----------------------------------------------------
    def _push(self, op: tuple[Any, ...]) -> None:
        self._ops.append(op)
        if self._wake is not None and self._connected:
            self._wake.set()

    def _breaker_event(
        self, index: int, breaker: CircuitBreaker, event: BreakerEvent, now: float
    ) -> None:
        if not self._connected:
            return  # shared again on reconnect (openings) or by the next resync
        model = self.policy.models[index].id  # type: ignore[union-attr]
        if event is BreakerEvent.FAILURE:
            self._push(("fail", model, breaker.settings.consecutive_failures, index))
        elif event is BreakerEvent.SUCCESS:
            last = self._ops[-1] if self._ops else None
            if last is None or last[0] != "success" or last[1] != model:
                self._push(("success", model))
        elif event is BreakerEvent.OPENED:
            self._note_opened(model, breaker, now)
            self._push(("open", model, breaker.open_until, index))
        elif event is BreakerEvent.CLOSED:
            self._push(("close", model, now, index))
        elif event is BreakerEvent.PROBE_RELEASED:
            self._push(("probe_release", model))

    def _hold_event(
        self,
        event: HoldEvent,
        hold: int,
        model: int,
        reserved: float,
        actual: float,
        task_type: str,
        now: float,
    ) -> None:
        if event is HoldEvent.RESERVED:
            return  # reserved in the store by admit(), before the call
        remote = self._redis_holds.pop(hold, None)
        local = self._local_holds.pop(hold, None)
        maybe = self._maybe.pop(hold, None)
        if remote is None and maybe is not None:
            # Its reservation may be in the store: end it there by hold id, whether the
            # call was admitted locally (settle) or then refused locally (release).
            if local is not None:
                fields = local[1]
            else:
                fields = [f for f, _ in cap_fields(self.policy, model, task_type)]  # type: ignore[arg-type]
            remote = (maybe, fields)
        if local is not None and local[3] == self._outages and not self._connected:
            used = self._used
            delta = (actual if event is HoldEvent.SETTLED else 0.0) - local[2]
            for f in local[1]:
                used[f] = used.get(f, 0.0) + delta
        if event is HoldEvent.RELEASED:
            if remote is not None:
                self._push(("release", self._hold_id(hold), remote[0]))
            return
        book = int(now // DAY_S)
        if remote is not None:
            if not self._connected:
                self._unreconciled += actual
            self._push(("settle", self._hold_id(hold), remote[0], book, actual, remote[1]))
            return
        if not actual:
            return
        if local is not None:
            fields = local[1]
        else:
            fields = [f for f, _ in cap_fields(self.policy, model, task_type)]  # type: ignore[arg-type]
        acc = self._agg.setdefault((book, tuple(fields)), [0.0, 0.0])
        acc[0] += actual
        acc[1] += 1
        if not self._connected:
            self._unreconciled += actual
        elif self._wake is not None:
            self._wake.set()

    # -- admission (the request path) ----------------------------------------------------
    async def admit(self, run: TaskRun, call: Call) -> str | None:
        if not self._started:
            await self.start()
        policy = self.policy
        assert policy is not None, "attach() the state to a policy first"
        index = call.model_index
        now = run.pending_started
        if run.pending_probe and self._connected:
            breaker = policy.breakers[index]
            ttl_ms = max(1, int(breaker.settings.probe_timeout_s * 1000))
            try:
                got, until = await self._call(
                    "B_PROBE", self._bkeys(call.model), [repr(now), self.replica, ttl_ms]
                )
            except Exception as exc:  # whatever the store did, routing goes on
                self._lost(exc)
            else:
                until = float(until)
                if int(got) == 0:
                    if until > now and self._adopt_open(call.model, breaker, until, now):
                        self._remote_opens += 1
                    return BREAKER_OPEN
                if int(got) == 2:
                    breaker.adopt_closed(now)
        if not needs_reservation(policy, self._capped, index, run.task_type):
            return None
        caps = cap_fields(policy, index, run.task_type)
        hold = run.pending_hold
        est = run.pending_reserved
        day = int(now // DAY_S)
        fields = [f for f, _ in caps]
        if self._connected:
            self._redis_holds[hold] = (day, fields)
            args: list[Any] = [self._hold_id(hold), repr(est), repr(now), repr(now + self.lease_s)]
            args += [self._ttl(day, now), len(caps)]
            for f, cap in caps:
                args += [f, repr(cap)]
            try:
                ok, field, level = await self._call("RESERVE", self._day_keys(day), args)
            except Exception as exc:  # whatever the store did, routing goes on
                # Reserved or not, we cannot tell: the call is admitted locally, and its
                # settle or release still goes to the store (idempotent either way).
                self._redis_holds.pop(hold, None)
                self._maybe[hold] = day
                self._lost(exc)
            else:
                field = field.decode() if isinstance(field, bytes) else field
                self._note_level(day, field, float(level))
                if int(ok) == 1:
                    return None
                self._redis_holds.pop(hold, None)
                return BUDGET
        return self._admit_degraded(hold, day, caps, est)

    def _note_level(self, day: int, field: str, level: float) -> None:
        if day != self._known_day:
            self._known = {}
            self._known_day = day
        self._known[field] = level

    def _admit_degraded(
        self, hold: int, day: int, caps: list[tuple[str, float]], est: float
    ) -> str | None:
        """Without the store: at most ``local_fraction`` of what was left under each
        cap (as last seen) is spent by this replica until the store is back."""
        allow, used = self._allow, self._used
        known = self._known if day == self._known_day else {}
        for f, cap in caps:
            if cap < 0:
                continue
            a = allow.get(f)
            if a is None:
                a = allow[f] = self.local_fraction * max(0.0, cap - known.get(f, 0.0))
            if used.get(f, 0.0) + est > a + _EPS:
                return BUDGET
        fields = [f for f, _ in caps]
        for f in fields:
            used[f] = used.get(f, 0.0) + est
        self._local_holds[hold] = (day, fields, est, self._outages)
        return None

    # -- talking to Redis ----------------------------------------------------------------
    async def _eval(self, calls: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        """Run scripts in one pipeline (EVALSHA; scripts Redis lost, after a restart, are
        loaded and those calls run again: a NOSCRIPT call did nothing). Results in
        order; a script's own error comes back as a ResponseError in its place."""
        import redis.exceptions

        pipe = self._client.pipeline(transaction=False)
        for name, keys, args in calls:
            pipe.evalsha(self._shas[name], len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
        missing = [
            i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)
        ]
        if missing:
            for name in {calls[i][0] for i in missing}:
                await self._client.script_load(getattr(scripts, name))
            pipe = self._client.pipeline(transaction=False)
            for i in missing:
                name, keys, args = calls[i]
                pipe.evalsha(self._shas[name], len(keys), *keys, *args)
            for i, r in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                results[i] = r
        for r in results:
            if isinstance(r, self._errors):
                raise r
        return results

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One script call on the request path, sent with the others waiting (one
        pipeline per event-loop turn). The pipeline is bounded by ``timeout_s`` of a
        responsive event loop (a busy loop delays the reply, not the store's verdict on
        it: :func:`within`) and by four times that whatever happens; a call waits for
        at most the pipeline before its own."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((name, keys, args, future))
        assert self._pending_wake is not None
        self._pending_wake.set()
        # The batcher answers every call within its pipeline's bound (at most one
        # pipeline ahead of it, each at most 4 * timeout_s); this is a safety net only.
        result = await asyncio.wait_for(asyncio.shield(future), self.timeout_s * 16)
        if isinstance(result, BaseException):
            raise result
        return result

    async def _batcher(self) -> None:
        """Send the request path's waiting calls, all of them in one pipeline."""
        assert self._pending_wake is not None
        while not self._closed:
            await self._pending_wake.wait()
            self._pending_wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                results = await within(
                    self._eval([(n, k, a) for n, k, a, _ in batch]),
                    self.timeout_s,
                    what=f"{len(batch)} request-path calls",
                )
            except BaseException as exc:
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_result(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (*_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    # -- background --------------------------------------------------------------------
    async def _flusher(self) -> None:
        assert self._wake is not None
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._connected and (self._ops or self._agg):
                try:
                    await self._flush_batch()
                except Exception as exc:
                    self._lost(exc)
                    break

    async def _flush_batch(self) -> None:
        """Send up to _BATCH queued ops in one pipeline (batched spend first). On a
        store error the ops go back to the front of the queue (every op is idempotent
        or harmless to repeat) and the error propagates."""
        now = self.clock()  # type: ignore[misc]
        if self._agg:
            for (book, fields), (usd, _) in self._agg.items():
                hid = f"{self.replica}:agg:{next(self._agg_ids)}"
                self._ops.appendleft(("settle", hid, book, book, usd, list(fields)))
            self._agg = {}
        batch: list[tuple[Any, ...]] = []
        while self._ops and len(batch) < _BATCH:
            batch.append(self._ops.popleft())
        if not batch:
            return
        calls: list[tuple[str, list[str], list[Any]]] = []
        channel = self.channel
        for op in batch:
            kind = op[0]
            if kind == "settle":
                _, hid, hold_day, book, actual, fields = op
                hk = self._day_keys(hold_day)
                keys = [self._day_keys(book)[0], hk[1], hk[2], hk[3]]
                args = [hid, repr(float(actual)), self._ttl(book, now), self._ttl(hold_day, now)]
                calls.append(("SETTLE", keys, [*args, *fields]))
            elif kind == "release":
                _, hid, day = op
                k = self._day_keys(day)
                calls.append(("RELEASE", [k[1], k[2], k[3]], [hid]))
            elif kind == "fail":
                calls.append(("B_FAIL", self._bkeys(op[1])[:1], [op[2], _BREAKER_TTL_S]))
            elif kind == "success":
                calls.append(("B_SUCCESS", self._bkeys(op[1])[:1], []))
            elif kind in ("open", "close"):
                args = [repr(float(op[2])), op[1], self.replica, channel, _BREAKER_TTL_S]
                calls.append(("B_OPEN" if kind == "open" else "B_CLOSE", self._bkeys(op[1]), args))
            elif kind == "probe_release":
                calls.append(("B_PROBE_RELEASE", self._bkeys(op[1])[1:], [self.replica]))
        self._sending = len(batch)
        try:
            results = await within(
                self._eval(calls), max(self.timeout_s * 4, 1.0), what=f"{len(calls)} updates"
            )
        except BaseException:
            self._ops.extendleft(reversed(batch))
            raise
        finally:
            self._sending = 0
        import redis.exceptions

        for op, res in zip(batch, results, strict=True):
            if isinstance(res, redis.exceptions.ResponseError):
                log.error("shared state store refused %s: %s (dropped)", op[0], res)
                continue
            if isinstance(res, BaseException):
                self._ops.extendleft(reversed(batch[batch.index(op) :]))
                raise res
            self._handled(op, res)

    def _handled(self, op: tuple[Any, ...], res: Any) -> None:
        kind = op[0]
        policy = self.policy
        if policy is None:
            return
        if kind == "fail":
            if int(res) == 1:
                policy.breakers[op[3]].trip(self.clock())  # type: ignore[misc]
        elif kind in ("open", "close"):
            state, until, epoch = res
            state = state.decode() if isinstance(state, bytes) else state
            self._apply_transition(op[1], state, float(until), int(epoch))

    async def _subscriber(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await asyncio.wait_for(pubsub.subscribe(self.channel), self.timeout_s * 4)
            while not self._closed:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is None or msg.get("type") != "message":
                    continue
                data = msg["data"]
                text = data.decode() if isinstance(data, bytes) else str(data)
                try:
                    model, state, until, epoch, _origin = text.split("\t")
                    self._apply_transition(model, state, float(until), int(epoch))
                except ValueError:
                    log.error("shared state store: unreadable breaker message %r", text[:200])
        except Exception as exc:
            self._lost(exc)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _ticker(self) -> None:
        period = min(self.sync_interval_s, self.lease_s / 3.0)
        while not self._closed:
            await asyncio.sleep(period)
            if not self._connected:
                continue
            try:
                await self._renew()
                await self._resync()
                now = self.clock()  # type: ignore[misc]
                if now - self._last_stats >= self.stats_interval_s:
                    self._last_stats = now
                    await self._merge_stats()
            except Exception as exc:  # a store error of any kind: degraded, retried
                self._lost(exc)

    async def _renew(self) -> None:
        """Extend the leases of our reservations whose calls still run."""
        if not self._redis_holds:
            return
        now = self.clock()  # type: ignore[misc]
        by_day: dict[int, list[str]] = {}
        for hold, (day, _) in self._redis_holds.items():
            by_day.setdefault(day, []).append(self._hold_id(hold))
        for day, ids in by_day.items():
            call = ("RENEW", [self._day_keys(day)[3]], [repr(now + self.lease_s), *ids])
            await within(self._eval([call]), self.timeout_s * 4, what="lease renewal")

    async def _resync(self) -> None:
        """Re-read every breaker's shared state and today's spend levels."""
        policy = self.policy
        if policy is None:
            return
        models = [m.id for m in policy.models if m.id in policy.model_index]
        now = self.clock()  # type: ignore[misc]
        day = int(now // DAY_S)
        pipe = self._client.pipeline(transaction=False)
        for mid in models:
            pipe.hmget(self._bkeys(mid)[0], "state", "until", "epoch")
        keys = self._day_keys(day)
        pipe.hgetall(keys[0])
        pipe.hgetall(keys[1])
        res = await within(pipe.execute(), self.timeout_s * 4, what="re-read")
        for mid, (state, until, epoch) in zip(models, res[: len(models)], strict=True):
            if state is None:
                continue
            self._apply_transition(mid, state.decode(), float(until or 0.0), int(epoch or 0))
        levels: dict[str, float] = {}
        for table in res[len(models) :]:
            for f, v in table.items():
                f = f.decode() if isinstance(f, bytes) else f
                levels[f] = levels.get(f, 0.0) + float(v)
        self._known, self._known_day = levels, day

    async def _merge_stats(self) -> None:
        """Push own quality/latency evidence; merge every live replica's."""
        policy = self.policy
        if policy is None:
            return
        now = self.clock()  # type: ignore[misc]
        own = self._merger.own(policy)
        ttl = max(1, int(self.stats_interval_s * 3) + 1)
        key = f"{self._ns}:q:{self.replica}"
        members = f"{self._ns}:replicas"
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(key)
        if own:
            pipe.hset(key, mapping={k: encode(v) for k, v in own.items()})
            pipe.expire(key, ttl)
        pipe.zadd(members, {self.replica: now})
        pipe.zremrangebyscore(members, "-inf", now - ttl)
        pipe.zrange(members, 0, -1)
        res = await within(pipe.execute(), self.timeout_s * 4, what="re-read")
        others = [(r.decode() if isinstance(r, bytes) else r) for r in res[-1]]
        others = [r for r in others if r != self.replica]
        if not others:
            return
        pipe = self._client.pipeline(transaction=False)
        for r in others:
            pipe.hgetall(f"{self._ns}:q:{r}")
        tables = await within(pipe.execute(), self.timeout_s * 4, what="statistics")
        snapshots = [
            {(k.decode() if isinstance(k, bytes) else k): decode(v) for k, v in t.items()}
            for t in tables
        ]
        self._merger.apply(policy, snapshots)

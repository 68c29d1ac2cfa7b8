"""In-process shared state: the reference implementation of :mod:`router.shared`.

:class:`LocalStore` keeps in a Python object exactly what
:class:`~router.shared.redis.RedisState` keeps in Redis (its Lua scripts follow these
methods line by line), and :class:`LocalState` is one replica's client of it. Replicas
that share a store in one process (several :class:`~router.live.Router` objects on one
event loop) share breakers, spend and statistics with no delay; a ``LocalState`` with
a store of its own behaves as the unshared router does. Not thread-safe: one event
loop (or one simulation) owns a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from router.breaker import BreakerEvent, CircuitBreaker
from router.ledger import DAY_S, HoldEvent
from router.policy import RoutingPolicy, TaskRun
from router.result import Call
from router.shared.base import (
    BREAKER_OPEN,
    BUDGET,
    SharedState,
    SharedStatus,
    cap_fields,
    capped_models,
    needs_reservation,
)
from router.shared.stats import Evidence, StatsMerger

__all__ = ["LocalState", "LocalStore"]

_EPS = 1e-9


@dataclass(slots=True)
class _Breaker:
    state: str = "closed"
    until: float = 0.0
    epoch: int = 0
    consec: int = 0
    probe: str | None = None
    probe_until: float = 0.0


@dataclass(slots=True)
class _Day:
    spent: dict[str, float] = field(default_factory=dict)
    reserved: dict[str, float] = field(default_factory=dict)
    #: hold id -> ("r", amount, fields) while reserved; "s" settled; "x" released/expired
    holds: dict[str, tuple[str, float, tuple[str, ...]] | str] = field(default_factory=dict)
    leases: dict[str, float] = field(default_factory=dict)


class LocalStore:
    """The store's data and operations (the semantics RedisState's scripts implement).

    Spend: per day, ``spent`` and ``reserved`` USD per field (``*``, ``m:``, ``p:``,
    ``t:``); holds reserved against the caps atomically, each with a lease. Breakers:
    per model a state, an open deadline, an epoch (bumped by every transition), the
    shared consecutive-failure count and the half-open probe token. Transitions are
    published to every subscribed replica.
    """

    def __init__(self) -> None:
        self.days: dict[int, _Day] = {}
        self.breakers: dict[str, _Breaker] = {}
        self.subscribers: list[LocalState] = []
        self.stats: dict[str, dict[str, Evidence]] = {}

    def _day(self, day: int) -> _Day:
        d = self.days.get(day)
        if d is None:
            d = self.days[day] = _Day()
            for old in [k for k in self.days if k < day - 1]:
                del self.days[old]  # keys expire after their day (and a day of grace)
        return d

    # -- spend -----------------------------------------------------------------------
    def _unreserve(self, d: _Day, record: tuple[str, float, tuple[str, ...]]) -> None:
        _, amount, fields = record
        for f in fields:
            v = d.reserved.get(f, 0.0) - amount
            d.reserved[f] = v if v > _EPS else 0.0

    def reserve(
        self,
        day: int,
        hold: str,
        amount: float,
        now: float,
        lease_until: float,
        caps: list[tuple[str, float]],
    ) -> tuple[bool, str, float]:
        """Hold ``amount`` on every field of ``caps`` if each capped field stays within
        its cap (spent + reserved + amount); expired leases are given back first.
        Returns (admitted, the field that refused or ``*``, its spent + reserved).
        Idempotent per hold id (a hold already known is not reserved again)."""
        d = self._day(day)
        for hid, until in list(d.leases.items()):
            if until <= now:
                rec = d.holds.get(hid)
                if isinstance(rec, tuple):
                    self._unreserve(d, rec)
                    d.holds[hid] = "x"
                del d.leases[hid]
        prior = d.holds.get(hold)
        if prior is not None:
            return isinstance(prior, tuple), "*", 0.0
        for f, cap in caps:
            if cap >= 0:
                level = d.spent.get(f, 0.0) + d.reserved.get(f, 0.0)
                if level + amount > cap + _EPS:
                    return False, f, level
        fields = tuple(f for f, _ in caps)
        for f in fields:
            d.reserved[f] = d.reserved.get(f, 0.0) + amount
        d.holds[hold] = ("r", amount, fields)
        d.leases[hold] = lease_until
        return True, "*", d.spent.get("*", 0.0) + d.reserved.get("*", 0.0)

    def settle(
        self, hold_day: int, book_day: int, hold: str, actual: float, fields: list[str]
    ) -> bool:
        """End ``hold`` (if reserved) and book ``actual`` on ``fields`` of ``book_day``;
        exactly once per hold id (a repeated settle books nothing). Returns whether it
        booked."""
        d = self._day(hold_day)
        rec = d.holds.get(hold)
        if rec == "s":
            return False
        if isinstance(rec, tuple):
            self._unreserve(d, rec)
            d.leases.pop(hold, None)
        if actual:
            b = self._day(book_day)
            for f in fields:
                b.spent[f] = b.spent.get(f, 0.0) + actual
        d.holds[hold] = "s"
        return True

    def release(self, day: int, hold: str) -> None:
        """End ``hold`` without booking (a no-op unless it is reserved)."""
        d = self._day(day)
        rec = d.holds.get(hold)
        if isinstance(rec, tuple):
            self._unreserve(d, rec)
            d.leases.pop(hold, None)
            d.holds[hold] = "x"

    def renew(self, day: int, holds: list[str], lease_until: float) -> None:
        """Extend the leases of ``holds`` that are still reserved."""
        d = self._day(day)
        for h in holds:
            if h in d.leases:
                d.leases[h] = lease_until

    def levels(self, day: int) -> dict[str, float]:
        """Spent + reserved per field today."""
        d = self._day(day)
        out = dict(d.spent)
        for f, v in d.reserved.items():
            out[f] = out.get(f, 0.0) + v
        return out

    # -- breakers --------------------------------------------------------------------
    def _b(self, model: str) -> _Breaker:
        b = self.breakers.get(model)
        if b is None:
            b = self.breakers[model] = _Breaker()
        return b

    def b_fail(self, model: str, threshold: int) -> bool:
        """A counted failure while closed; True when the shared count reaches
        ``threshold`` (the reporting replica then trips, and publishes its opening)."""
        b = self._b(model)
        if b.state == "open":
            return False
        b.consec += 1
        return b.consec >= threshold

    def b_success(self, model: str) -> None:
        b = self._b(model)
        if b.state != "open":
            b.consec = 0

    def b_open(self, model: str, until: float, origin: str) -> tuple[str, float, int]:
        """An opening until ``until``; the later of two open deadlines wins. Publishes
        when it changed anything. Returns the resulting (state, until, epoch)."""
        b = self._b(model)
        if b.state == "open" and b.until >= until:
            return b.state, b.until, b.epoch
        b.state, b.until, b.epoch, b.consec, b.probe = "open", until, b.epoch + 1, 0, None
        self._publish(model, b, origin)
        return b.state, b.until, b.epoch

    def b_close(self, model: str, now: float, origin: str) -> tuple[str, float, int]:
        """A probe succeeded: close, unless an opening is not yet due (it wins)."""
        b = self._b(model)
        if b.state == "open" and b.until > now:
            return b.state, b.until, b.epoch
        if b.state != "open":
            return b.state, b.until, b.epoch
        b.state, b.until, b.epoch, b.consec, b.probe = "closed", 0.0, b.epoch + 1, 0, None
        self._publish(model, b, origin)
        return b.state, b.until, b.epoch

    def b_probe(self, model: str, now: float, replica: str, ttl_s: float) -> tuple[int, float]:
        """Take the half-open probe token: (1, until) taken (or already ours);
        (0, until) refused (open, not due: adopt ``until``; or another replica holds the
        token); (2, 0) the breaker is closed (adopt that)."""
        b = self._b(model)
        if b.state == "open" and b.until > now:
            return 0, b.until
        if b.state != "open":
            return 2, 0.0
        if b.probe is None or b.probe_until <= now or b.probe == replica:
            b.probe, b.probe_until = replica, now + ttl_s
            return 1, b.until
        return 0, 0.0

    def b_probe_release(self, model: str, replica: str) -> None:
        b = self._b(model)
        if b.probe == replica:
            b.probe = None

    def _publish(self, model: str, b: _Breaker, origin: str) -> None:
        for sub in list(self.subscribers):
            sub._apply_transition(model, b.state, b.until, b.epoch)


class LocalState(SharedState):
    """One replica's client of a :class:`LocalStore` (a private one by default).

    ``lease_s``: how long a reservation lives without renewal (in-process replicas do
    not crash apart from their store, so it only matters for tests);
    ``stats_interval_s``: how often :meth:`start`'s task merges statistics (None: only
    when :meth:`merge_stats` is called).
    """

    def __init__(
        self,
        store: LocalStore | None = None,
        *,
        replica: str | None = None,
        lease_s: float = 120.0,
        stats_interval_s: float | None = None,
    ) -> None:
        super().__init__()
        self.store = store if store is not None else LocalStore()
        self.replica = replica or os.urandom(6).hex()
        self.lease_s = lease_s
        self.stats_interval_s = stats_interval_s
        self._holds: dict[int, int] = {}  # local hold -> day it was reserved on
        self._capped: list[bool] = []
        self._merger = StatsMerger()
        self._task: asyncio.Task[None] | None = None
        self.store.subscribers.append(self)

    def attach(self, policy: RoutingPolicy, clock: Callable[[], float]) -> None:
        super().attach(policy, clock)
        self._capped = capped_models(policy)

    def _hold_id(self, hold: int) -> str:
        return f"{self.replica}:{hold}"

    # -- policy hooks ------------------------------------------------------------------
    def _breaker_event(
        self, index: int, breaker: CircuitBreaker, event: BreakerEvent, now: float
    ) -> None:
        model = self.policy.models[index].id  # type: ignore[union-attr]
        store = self.store
        if event is BreakerEvent.FAILURE:
            if store.b_fail(model, breaker.settings.consecutive_failures):
                breaker.trip(now)
        elif event is BreakerEvent.SUCCESS:
            store.b_success(model)
        elif event is BreakerEvent.OPENED:
            self._note_opened(model, breaker, now)
            state, until, epoch = store.b_open(model, breaker.open_until, self.replica)
            self._apply_transition(model, state, until, epoch)
        elif event is BreakerEvent.CLOSED:
            state, until, epoch = store.b_close(model, now, self.replica)
            self._apply_transition(model, state, until, epoch)
        elif event is BreakerEvent.PROBE_RELEASED:
            store.b_probe_release(model, self.replica)

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
        day = self._holds.pop(hold, None)
        if event is HoldEvent.RELEASED:
            if day is not None:
                self.store.release(day, self._hold_id(hold))
            return
        book = int(now // DAY_S)
        fields = [f for f, _ in cap_fields(self.policy, model, task_type)]  # type: ignore[arg-type]
        self.store.settle(book if day is None else day, book, self._hold_id(hold), actual, fields)

    # -- driver ------------------------------------------------------------------------
    async def admit(self, run: TaskRun, call: Call) -> str | None:
        return self.admit_now(run, call)

    def admit_now(self, run: TaskRun, call: Call) -> str | None:
        """:meth:`admit`, synchronously (the store is in-process)."""
        policy = self.policy
        assert policy is not None, "attach() the state to a policy first"
        index = call.model_index
        now = run.pending_started
        if run.pending_probe:
            breaker = policy.breakers[index]
            got, until = self.store.b_probe(
                call.model, now, self.replica, breaker.settings.probe_timeout_s
            )
            if got == 0:
                if until > now:
                    self._adopt_open(call.model, breaker, until, now)
                return BREAKER_OPEN
            if got == 2:
                breaker.adopt_closed(now)
        if needs_reservation(policy, self._capped, index, run.task_type):
            day = int(now // DAY_S)
            ok, _, _ = self.store.reserve(
                day,
                self._hold_id(run.pending_hold),
                run.pending_reserved,
                now,
                now + self.lease_s,
                cap_fields(policy, index, run.task_type),
            )
            if not ok:
                return BUDGET
            self._holds[run.pending_hold] = day
        return None

    def merge_stats(self) -> None:
        """Push this replica's own evidence and merge every other replica's."""
        policy = self.policy
        if policy is None:
            return
        self.store.stats[self.replica] = self._merger.own(policy)
        others = [s for r, s in self.store.stats.items() if r != self.replica]
        self._merger.apply(policy, others)

    async def start(self) -> None:
        if self._task is None and self.stats_interval_s:
            self._task = asyncio.create_task(self._merge_loop(), name="costroute-shared-stats")

    async def _merge_loop(self) -> None:
        interval = self.stats_interval_s or math.inf
        for _ in itertools.count():
            await asyncio.sleep(interval)
            self.merge_stats()

    def status(self) -> SharedStatus:
        return SharedStatus(
            "local",
            self.replica,
            remote_opens=self._remote_opens,
            opened_at=dict(self._opened_at),
        )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(ValueError):
            self.store.subscribers.remove(self)

"""Spend tracking with budget caps and alerts.

The ledger keeps, for the current day, what was spent per model, per provider
and per task type, plus what is *reserved*: the estimated cost of calls in
flight. A call is planned only if spent + reserved + its estimate stays within
every cap that applies (global daily, per model, per provider, per task type), so
concurrent tasks can never jointly plan past a cap. When a call ends its reservation is
released and its actual cost booked.

Every reservation is a numbered hold (:meth:`SpendLedger.reserve` returns its
number) that ends exactly once, by :meth:`~SpendLedger.settle` (the call ended:
book its cost) or :meth:`~SpendLedger.release` (it was cancelled or raised:
book nothing). A hold older than :data:`STALE_RESERVATION_S` when the day rolls
over was leaked by a driver that died mid-call, and is dropped then, so a leak
can never block spending for good.

Budget alerts are appended to :attr:`SpendLedger.alerts` and handed to every
callable in :attr:`SpendLedger.listeners` (the live router logs them and calls
its ``on_alert``).

Days are ``floor(now / 86400)`` of the clock the driver hands in. Past days are
kept in :attr:`SpendLedger.history`.

*Sharing* (several replicas, :mod:`router.shared`): a driver may set
:attr:`SpendLedger.observer`, told synchronously of every hold that starts and ends
(:class:`HoldEvent`), and may count other replicas' spend and holds against today's
caps with :meth:`SpendLedger.apply_remote`. With neither (the default) the ledger is
exactly the single-replica one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from router.config import Budget

DAY_S = 86_400.0
#: A reservation older than this at a day's rollover is a leak (no call lasts an hour).
STALE_RESERVATION_S = 3_600.0
_EPS = 1e-12  # float slack so that spending exactly the cap is allowed


class HoldEvent(StrEnum):
    """What a ledger tells its :attr:`~SpendLedger.observer` about a hold."""

    RESERVED = "reserved"
    SETTLED = "settled"
    RELEASED = "released"


#: ``observer(event, hold, model, reserved_usd, actual_usd, task_type, now)``: told of
#: every hold that starts and ends (``actual_usd`` is a settle's, 0.0 otherwise;
#: ``task_type`` is the settle's, else the one the hold was reserved for, "" if none;
#: ``now`` is 0.0 for a release). Must not raise and must not block.
HoldObserver = Callable[[HoldEvent, int, int, float, float, str, float], None]


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """Spend crossed ``fraction`` of a cap. ``scope`` is global, model, provider or
    task_type; ``key`` names the model, provider or task type (``*`` for global)."""

    scope: str
    key: str
    fraction: float
    spent_usd: float
    cap_usd: float
    at: float
    day: int


@dataclass(slots=True)
class DaySpend:
    """What one day cost, by model, provider and task type."""

    day: int
    total_usd: float = 0.0
    by_model: dict[str, float] = field(default_factory=dict)
    by_provider: dict[str, float] = field(default_factory=dict)
    by_task_type: dict[str, float] = field(default_factory=dict)


class _Cap:
    """One cap with its alert thresholds (reset each day)."""

    __slots__ = ("scope", "key", "cap", "fractions", "_next_i", "next_at")

    def __init__(self, scope: str, key: str, cap: float, fractions: Sequence[float]) -> None:
        self.scope = scope
        self.key = key
        self.cap = cap
        self.fractions = sorted(set(fractions))
        self.next_i = 0

    @property
    def next_i(self) -> int:
        """The index of the next threshold to alert on (len(fractions): none left)."""
        return self._next_i

    @next_i.setter
    def next_i(self, i: int) -> None:
        self._next_i = i
        #: the spend at which the next alert is due (the check SpendLedger._check makes,
        #: computed once per threshold instead of on every settle); inf when none is left
        self.next_at = self.fractions[i] * self.cap - _EPS if i < len(self.fractions) else math.inf


class SpendLedger:
    """Spend and reservations per model/provider/task type for the current day."""

    def __init__(self, budget: Budget, model_ids: Sequence[str], providers: Sequence[str]) -> None:
        self.model_ids: list[str] = []
        self.provider_names: list[str] = []
        self._prov_index: dict[str, int] = {}
        #: provider index of each model index
        self.model_provider: list[int] = []
        self.day: int | None = None
        #: when today ends ((day + 1) * DAY_S; -inf before the first day): a time at or
        #: past it rolls the day over
        self._day_end = -math.inf
        self.spent_model: list[float] = []
        self.spent_provider: list[float] = []
        self.spent_total = 0.0
        self.spent_task_type: dict[str, float] = {}
        self.reserved_model: list[float] = []
        self.reserved_provider: list[float] = []
        self.reserved_total = 0.0
        self.all_time_usd = 0.0
        self.history: dict[int, DaySpend] = {}
        self.alerts: list[BudgetAlert] = []
        self.listeners: list[Callable[[BudgetAlert], None]] = []
        self.rejections = 0
        self.reserved_task_type: dict[str, float] = {}
        #: open holds: number -> (model index, amount, time reserved, task type, whether
        #: it counts in reserved_task_type: only a capped type's holds do)
        self.holds: dict[int, tuple[int, float, float, str, bool]] = {}
        self._next_hold = 0
        self.stale_dropped = 0
        #: told of every hold that starts and ends (sharing; None: not shared)
        self.observer: HoldObserver | None = None
        #: today's USD of other replicas (spend and holds) counted in spent_*, per model
        self.remote_model: list[float] = []
        self.remote_total = 0.0
        self.reconfigure(budget, model_ids, providers)

    def reconfigure(
        self, budget: Budget, model_ids: Sequence[str], providers: Sequence[str]
    ) -> None:
        """Apply new caps. ``model_ids`` must extend the current list (indices are stable:
        a live reload keeps in-flight reservations and today's spend)."""
        if list(model_ids[: len(self.model_ids)]) != self.model_ids:
            raise ValueError("model indices must stay stable across a reconfiguration")
        for mid, prov in zip(
            model_ids[len(self.model_ids) :], providers[len(self.model_ids) :], strict=True
        ):
            if prov not in self._prov_index:
                self._prov_index[prov] = len(self.provider_names)
                self.provider_names.append(prov)
                self.spent_provider.append(0.0)
                self.reserved_provider.append(0.0)
            self.model_ids.append(mid)
            self.model_provider.append(self._prov_index[prov])
            self.spent_model.append(0.0)
            self.reserved_model.append(0.0)
            self.remote_model.append(0.0)
        fr = budget.alert_fractions
        self.cap_total = budget.daily_cap_usd if budget.daily_cap_usd is not None else math.inf
        self.cap_model = [budget.per_model_usd.get(m, math.inf) for m in self.model_ids]
        self.cap_provider = [budget.per_provider_usd.get(p, math.inf) for p in self.provider_names]
        self._global_cap = _Cap("global", "*", self.cap_total, fr) if budget.daily_cap_usd else None
        self._model_caps = [
            _Cap("model", m, c, fr) if c != math.inf else None
            for m, c in zip(self.model_ids, self.cap_model, strict=True)
        ]
        self._provider_caps = [
            _Cap("provider", p, c, fr) if c != math.inf else None
            for p, c in zip(self.provider_names, self.cap_provider, strict=True)
        ]
        #: daily cap per task type (types without one are absent)
        self.cap_task_type: dict[str, float] = dict(budget.per_task_type_usd)
        self._task_caps = {t: _Cap("task_type", t, c, fr) for t, c in self.cap_task_type.items()}
        # Which kinds of cap exist at all: a check against an infinite cap always passes
        # (and an absent cap raises no alert), so the per-call paths skip those kinds.
        self._model_capped = any(c != math.inf for c in self.cap_model)
        self._provider_capped = any(c != math.inf for c in self.cap_provider)
        self._model_alerts = any(c is not None for c in self._model_caps)
        self._provider_alerts = any(c is not None for c in self._provider_caps)
        # Alerts already raised today stay raised: skip thresholds spend has passed.
        for cap, spent in (
            (self._global_cap, self.spent_total),
            *zip(self._model_caps, self.spent_model, strict=True),
            *zip(self._provider_caps, self.spent_provider, strict=True),
            *((c, self.spent_task_type.get(t, 0.0)) for t, c in self._task_caps.items()),
        ):
            if cap is not None:
                while (
                    cap.next_i < len(cap.fractions) and spent >= cap.fractions[cap.next_i] * cap.cap
                ):
                    cap.next_i += 1

    # -- days -----------------------------------------------------------------------
    def _roll(self, now: float) -> None:
        day = int(now // DAY_S)
        if day == self.day:
            return
        if self.day is not None:
            self.history[self.day] = self.snapshot()
        self.day = day
        self._day_end = (day + 1) * DAY_S
        stale = [h for h, e in self.holds.items() if now - e[2] > STALE_RESERVATION_S]
        for h in stale:
            self.release(h)
            self.stale_dropped += 1
        self.spent_model = [0.0] * len(self.spent_model)
        self.spent_provider = [0.0] * len(self.spent_provider)
        self.spent_total = 0.0
        self.spent_task_type = {}
        self.remote_model = [0.0] * len(self.remote_model)
        self.remote_total = 0.0
        for cap in (
            self._global_cap,
            *self._model_caps,
            *self._provider_caps,
            *self._task_caps.values(),
        ):
            if cap is not None:
                cap.next_i = 0

    def snapshot(self) -> DaySpend:
        """The current day's spend as a :class:`DaySpend`."""
        return DaySpend(
            day=self.day if self.day is not None else 0,
            total_usd=self.spent_total,
            by_model={m: v for m, v in zip(self.model_ids, self.spent_model, strict=True) if v},
            by_provider={
                p: v for p, v in zip(self.provider_names, self.spent_provider, strict=True) if v
            },
            by_task_type=dict(self.spent_task_type),
        )

    # -- planning -------------------------------------------------------------------
    def can_afford(self, model: int, amount: float, now: float, task_type: str = "") -> bool:
        """Whether a call of estimated cost ``amount`` fits every cap that applies (the
        task type's only when ``task_type`` is given)."""
        return self.try_reserve(model, amount, now, task_type, hold=False) >= 0

    def try_reserve(
        self,
        model: int,
        amount: float,
        now: float,
        task_type: str = "",
        *,
        check: bool = True,
        hold: bool = True,
    ) -> int:
        """:meth:`can_afford` and, when it does, :meth:`reserve`, in one call (the
        policy's path for every call it plans): the hold's number, or -1 when a cap
        would be exceeded (nothing is held then).

        The one copy of both steps: ``hold=False`` only checks (0 when the call fits,
        -1 when not: :meth:`can_afford`); ``check=False`` only holds (:meth:`reserve`).
        """
        if check:
            if now >= self._day_end:
                self._roll(now)
            if self.spent_total + self.reserved_total + amount > self.cap_total + _EPS:
                return -1
            cap_t = self.cap_task_type.get(task_type)
            if cap_t is not None and (
                self.spent_task_type.get(task_type, 0.0)
                + self.reserved_task_type.get(task_type, 0.0)
                + amount
                > cap_t + _EPS
            ):
                return -1
            # An infinite cap always passes: the kinds no model or provider caps are
            # skipped.
            if (
                self._model_capped
                and self.spent_model[model] + self.reserved_model[model] + amount
                > self.cap_model[model] + _EPS
            ):
                return -1
            if self._provider_capped:
                p = self.model_provider[model]
                if not (
                    self.spent_provider[p] + self.reserved_provider[p] + amount
                    <= self.cap_provider[p] + _EPS
                ):
                    return -1
            if not hold:
                return 0
        self.reserved_model[model] += amount
        self.reserved_provider[self.model_provider[model]] += amount
        self.reserved_total += amount
        # Only a capped type's reservations are counted (the common case has no task-type
        # cap, and this is on every call's path); the hold remembers whether it was, so
        # a cap added by a reload while it is in flight cannot unbalance the count.
        typed = task_type in self.cap_task_type
        if typed:
            rt = self.reserved_task_type
            rt[task_type] = rt.get(task_type, 0.0) + amount
        number = self._next_hold
        self._next_hold = number + 1
        self.holds[number] = (model, amount, now, task_type, typed)
        if self.observer is not None:
            self.observer(HoldEvent.RESERVED, number, model, amount, 0.0, task_type, now)
        return number

    def reserve(self, model: int, amount: float, now: float = 0.0, task_type: str = "") -> int:
        """Hold ``amount`` against the caps (the task type's too, when given) while a
        call is in flight; returns the hold's number, to be passed to exactly one
        :meth:`settle` or :meth:`release`."""
        return self.try_reserve(model, amount, now, task_type, check=False)

    def _unhold(self, hold: int) -> tuple[int, float, str] | None:
        entry = self.holds.pop(hold, None)
        if entry is None:
            return None  # already ended (or dropped as stale): ending twice is a no-op
        model, amount, _, task_type, typed = entry
        self.reserved_model[model] -= amount
        self.reserved_provider[self.model_provider[model]] -= amount
        self.reserved_total -= amount
        if typed:
            self.reserved_task_type[task_type] -= amount
        if not self.holds:
            # Float residue from many +=/-= must not leave a phantom reservation.
            self.reserved_total = 0.0
            self.reserved_model = [0.0] * len(self.reserved_model)
            self.reserved_provider = [0.0] * len(self.reserved_provider)
            self.reserved_task_type = {}
        return model, amount, task_type

    def release(self, hold: int) -> None:
        """End a hold without booking anything (the call was cancelled or raised)."""
        entry = self._unhold(hold)
        if entry is not None and self.observer is not None:
            self.observer(HoldEvent.RELEASED, hold, entry[0], entry[1], 0.0, entry[2], 0.0)

    def apply_remote(self, model: int, delta: float, now: float, task_type: str = "") -> None:
        """Count ``delta`` USD that other replicas spent or hold on ``model`` (for
        ``task_type``, when given) against today's caps (negative: a remote hold ended
        or was settled for less). It joins today's ``spent_*`` figures (so every cap
        check sees it) and
        :attr:`remote_model`, never :attr:`all_time_usd` (this replica's own spend);
        it raises no alert (the replica that spent it does). Reset with the day."""
        if now >= self._day_end:
            self._roll(now)
        p = self.model_provider[model]
        self.spent_model[model] += delta
        self.spent_provider[p] += delta
        self.spent_total += delta
        self.remote_model[model] += delta
        self.remote_total += delta
        if task_type:
            st = self.spent_task_type
            st[task_type] = st.get(task_type, 0.0) + delta

    def settle(self, hold: int, actual: float, task_type: str, now: float) -> None:
        """End a hold and book the call's actual cost (may raise alerts)."""
        # _unhold, inlined: this runs once per call.
        holds = self.holds
        entry = holds.pop(hold, None)
        if entry is None:
            return  # already ended (or dropped as stale): ending twice is a no-op
        model, amount, _, held_type, typed = entry
        p = self.model_provider[model]
        if holds:
            self.reserved_model[model] -= amount
            self.reserved_provider[p] -= amount
            self.reserved_total -= amount
            if typed:
                self.reserved_task_type[held_type] -= amount
        else:
            # The last hold ended: nothing is reserved (what the subtractions would
            # leave, without their float residue: no phantom reservation may remain).
            self.reserved_total = 0.0
            self.reserved_model = [0.0] * len(self.reserved_model)
            self.reserved_provider = [0.0] * len(self.reserved_provider)
            self.reserved_task_type = {}
        if self.observer is not None:
            self.observer(HoldEvent.SETTLED, hold, model, amount, actual, task_type, now)
        if now >= self._day_end:
            self._roll(now)
        if actual == 0.0:
            return
        spent_model = self.spent_model
        spent_model[model] += actual
        spent_provider = self.spent_provider
        spent_provider[p] += actual
        total = self.spent_total + actual
        self.spent_total = total
        self.all_time_usd += actual
        spent_types = self.spent_task_type
        spent_types[task_type] = spent_types.get(task_type, 0.0) + actual
        # An alert is checked only once spend reaches its cap's next threshold.
        cap = self._global_cap
        if cap is not None and total >= cap.next_at:
            self._check(cap, total, now)
        if self._model_alerts:
            cap = self._model_caps[model]
            if cap is not None and spent_model[model] >= cap.next_at:
                self._check(cap, spent_model[model], now)
        if self._provider_alerts:
            cap = self._provider_caps[p]
            if cap is not None and spent_provider[p] >= cap.next_at:
                self._check(cap, spent_provider[p], now)
        if self._task_caps:
            cap = self._task_caps.get(task_type)
            if cap is not None and spent_types[task_type] >= cap.next_at:
                self._check(cap, spent_types[task_type], now)

    def _check(self, cap: _Cap, spent: float, now: float) -> None:
        fr = cap.fractions
        while cap.next_i < len(fr) and spent >= fr[cap.next_i] * cap.cap - _EPS:
            alert = BudgetAlert(
                cap.scope, cap.key, fr[cap.next_i], spent, cap.cap, now, self.day or 0
            )
            self.alerts.append(alert)
            cap.next_i += 1
            for listener in self.listeners:
                listener(alert)

"""The interface of shared state: what a replica's driver calls around the policy.

Several replicas of the router (gateways, live routers) can share breakers, spend and
statistics through a *store*. The policy stays sans-I/O: it never awaits and never
sees the store. A driver wires a :class:`SharedState` to its policy once
(:meth:`SharedState.attach`), and then, for every call the policy plans, asks the
store to admit it before calling the provider::

    action = run.next_action(now)            # or run.record(outcome, now)
    action = await admit(shared, run, action, clock)   # Call (admitted) | Finish

Everything else flows through the policy's own hooks, synchronously and without I/O:
each breaker's :attr:`~router.breaker.CircuitBreaker.listener` (counted outcomes and
transitions) and the ledger's :attr:`~router.ledger.SpendLedger.observer` (holds
settled and released). A backend queues what it must tell the store and tells it in
the background; what the store tells back (other replicas' openings and closings,
merged statistics) is applied to the policy's breakers and statistics on the event
loop, between two of the policy's decisions.

Implementations: :class:`~router.shared.local.LocalState` (in-process; the reference)
and :class:`~router.shared.redis.RedisState` (Redis). ``tests/shared`` runs one suite
against both.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from router.breaker import BreakerEvent, BreakerState, CircuitBreaker
from router.ledger import HoldEvent
from router.policy import RoutingPolicy, TaskRun
from router.result import Call, Finish, Wait

__all__ = ["SharedState", "SharedStatus", "admit", "mask_url"]

#: Skip reasons a store may answer with (the policy's own reasons, see router.policy).
BUDGET = "budget"
BREAKER_OPEN = "breaker_open"


def mask_url(url: str | None) -> str | None:
    """``url`` with any password replaced by ``***`` (for logs, status and metrics)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(slots=True)
class SharedStatus:
    """How a replica's shared state stands (for ``/ready``, ``/metrics`` and logs).

    ``connected``: the store answers (always True for the in-process store);
    ``degraded_since``: when it stopped answering (driver clock; None when connected);
    ``outages``: how many times it was lost; ``pending_ops``: updates queued for it;
    ``reconciled_usd``: spend booked locally during outages and since added to the
    shared ledger; ``url`` is masked; ``remote_opens``: breaker openings learned from
    other replicas; ``opened_at``: per model, when its breaker last opened from closed
    on this replica (its own trip or an opening learned from the store; driver clock,
    wall-aligned seconds), so that operators (and the tests) can see how far apart
    the replicas learned of an outage.
    """

    backend: str
    replica: str
    url: str | None = None
    connected: bool = True
    degraded_since: float | None = None
    outages: int = 0
    last_error: str | None = None
    pending_ops: int = 0
    reconciled_usd: float = 0.0
    remote_opens: int = 0
    opened_at: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SharedState(ABC):
    """One replica's client of a store shared by several replicas.

    Contract, for every implementation:

    * :meth:`attach` wires the store to one policy (sync, idempotent; call it again
      after every ``policy.reconfigure``: new models get hooks). One instance serves
      one policy.
    * :meth:`start` opens connections and background tasks on the running loop
      (idempotent; drivers call it before the first admission).
    * :meth:`admit` is awaited after the policy planned a call and before the provider
      is called. ``None``: go. ``"budget"``: a shared cap would be exceeded.
      ``"breaker_open"``: another replica has the model open or holds its half-open
      probe. The driver then calls :meth:`TaskRun.refuse` (see :func:`admit`). It
      never raises because the store is unreachable and returns within about
      ``timeout_s``: the replica then routes on its own state (degraded) and spends
      at most its local fraction of what was left under each cap.
    * Hooks on the policy never block and never raise: they queue.
    * Liveness: every reservation the store holds ends, by the settle or release of
      its hold, or by its lease expiring when its replica stops renewing it.
    * :meth:`aclose` stops the background tasks and gives what is still queued one
      bounded chance to reach the store; idempotent.
    """

    def __init__(self) -> None:
        self.policy: RoutingPolicy | None = None
        self.clock: Callable[[], float] | None = None
        #: model -> when its breaker last opened from closed here (see SharedStatus)
        self._opened_at: dict[str, float] = {}
        #: model -> newest transition epoch seen from the store
        self._epochs: dict[str, int] = {}
        #: openings learned from the store that opened a closed or extended an open breaker
        self._remote_opens = 0

    def _note_opened(self, model: str, breaker: CircuitBreaker, now: float) -> None:
        """Called after our breaker tripped: note it when it began an outage (a
        breaker that opened from closed has ``trips == 1``; a failed probe's
        re-opening keeps the outage's first opening)."""
        if breaker.trips == 1:
            self._opened_at[model] = now

    def _adopt_open(self, model: str, breaker: CircuitBreaker, until: float, now: float) -> bool:
        """``breaker.adopt_open``, noting an outage learned from the store (only when
        the breaker was closed: extending an opening is no new outage)."""
        was_closed = breaker.state is BreakerState.CLOSED
        if not breaker.adopt_open(until, now):
            return False
        if was_closed:
            self._opened_at[model] = now
        return True

    def _apply_transition(self, model: str, state: str, until: float, epoch: int) -> None:
        """A transition published by the store: apply it to our breaker. An opening
        only ever extends (the later deadline wins), so it is applied whatever its
        epoch; a closing only when it is newer than every transition seen."""
        policy = self.policy
        if policy is None:
            return
        newer = epoch > self._epochs.get(model, -1)
        if newer:
            self._epochs[model] = epoch
        elif state != "open":
            return
        index = policy.model_index.get(model)
        if index is None:
            return
        breaker = policy.breakers[index]
        now = self.clock()  # type: ignore[misc]
        if state == "open":
            if self._adopt_open(model, breaker, until, now):
                self._remote_opens += 1
        else:
            breaker.adopt_closed(now)

    # -- wiring ------------------------------------------------------------------------
    def attach(self, policy: RoutingPolicy, clock: Callable[[], float]) -> None:
        """Install this state's hooks on ``policy`` (its breakers and its ledger)."""
        if self.policy is not None and self.policy is not policy:
            raise ValueError("a shared state serves one policy; make one per replica")
        self.policy = policy
        self.clock = clock
        for index, breaker in enumerate(policy.breakers):
            breaker.listener = functools.partial(self._breaker_event, index)
        policy.ledger.observer = self._hold_event

    def detach(self) -> None:
        """Remove the hooks (the policy is then exactly the unshared one)."""
        policy = self.policy
        if policy is None:
            return
        for breaker in policy.breakers:
            breaker.listener = None
        policy.ledger.observer = None

    # -- what the policy tells (sync, no I/O) --------------------------------------------
    @abstractmethod
    def _breaker_event(
        self, index: int, breaker: CircuitBreaker, event: BreakerEvent, now: float
    ) -> None:
        """A breaker's counted outcome or transition (see :class:`BreakerEvent`)."""

    @abstractmethod
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
        """A budget hold started or ended (see :class:`~router.ledger.HoldEvent`)."""

    # -- what the driver calls -----------------------------------------------------------
    async def start(self) -> None:  # noqa: B027 - optional for in-process stores
        """Open connections and background tasks (idempotent)."""

    @abstractmethod
    async def admit(self, run: TaskRun, call: Call) -> str | None:
        """Whether the store admits the call ``run`` just planned (see the class)."""

    @abstractmethod
    def status(self) -> SharedStatus:
        """How this replica's shared state stands (cheap, no I/O)."""

    async def aclose(self) -> None:  # noqa: B027 - optional for in-process stores
        """Stop background work and close connections (idempotent)."""


def cap_fields(policy: RoutingPolicy, model: int, task_type: str) -> list[tuple[str, float]]:
    """The store fields a call of ``model`` for ``task_type`` books to, each with its
    daily cap (-1: none): the global total ``*``, ``m:<model>``, ``p:<provider>`` and
    ``t:<task type>`` (tracked whether capped or not)."""
    ledger = policy.ledger
    m = policy.models[model]
    p = ledger.model_provider[model]

    def cap(value: float) -> float:
        return value if value != float("inf") else -1.0

    return [
        ("*", cap(ledger.cap_total)),
        (f"m:{m.id}", cap(ledger.cap_model[model])),
        (f"p:{ledger.provider_names[p]}", cap(ledger.cap_provider[p])),
        (f"t:{task_type}", cap(ledger.cap_task_type.get(task_type, math.inf))),
    ]


def capped_models(policy: RoutingPolicy) -> list[bool]:
    """Per model index: whether a global, model or provider daily cap applies to its
    calls (see :func:`needs_reservation`)."""
    return [any(c >= 0 for _, c in cap_fields(policy, m.index, "")[:3]) for m in policy.models]


def needs_reservation(
    policy: RoutingPolicy, capped: list[bool], model: int, task_type: str
) -> bool:
    """Whether a call of ``model`` for ``task_type`` needs a shared reservation before
    it starts: some daily cap applies to it (``capped`` from :func:`capped_models`, or
    its task type's cap). Calls under no cap are booked after the fact."""
    return capped[model] or task_type in policy.ledger.cap_task_type


async def admit(
    shared: SharedState, run: TaskRun, action: Call | Wait | Finish, clock: Callable[[], float]
) -> Call | Wait | Finish:
    """Have ``shared`` admit ``action`` if it is a Call; refused calls are skipped
    (:meth:`TaskRun.refuse`) until one is admitted or the run finishes. A Wait or a
    Finish is returned unchanged. The one line a driver adds after every
    ``next_action``/``record``."""
    while isinstance(action, Call):
        reason = await shared.admit(run, action)
        if reason is None:
            return action
        action = run.refuse(clock(), reason)
    return action

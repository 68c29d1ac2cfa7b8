"""A three-state circuit breaker, one per model.

closed --(N consecutive failures, or failure share >= r over the last W calls
with at least M seen)--> open --(open time elapsed)--> half-open --(a probe
succeeds)--> closed; a probe that fails re-opens it. A trip from closed stays
open ``open_base_s``; a failed probe re-opens it for ``reprobe_s`` (or, unset,
``min(cap, base * growth**(n-1))`` on the n-th consecutive trip), each times a
jitter factor drawn uniformly from [1 - j, 1 + j], so breakers of many clients do
not re-probe a recovering provider in lockstep.

Liveness: every call the breaker admits ends in exactly one of
:meth:`CircuitBreaker.on_success`, :meth:`~CircuitBreaker.on_failure` or
:meth:`~CircuitBreaker.release` (an outcome that says nothing about availability,
a cancellation, an exception), and each frees a half-open probe slot. A probe
whose end is never reported (a crashed driver) is reclaimed after
``probe_timeout_s``, so half-open can never last forever.

The breaker reads no clock: every method that depends on time takes ``now``.

*Sharing* (several replicas, :mod:`router.shared`): a driver may set
:attr:`CircuitBreaker.listener`, which is told, synchronously and without I/O, of
every counted outcome and transition (see :class:`BreakerEvent`), and may hand the
breaker what other replicas saw with :meth:`~CircuitBreaker.adopt_open`,
:meth:`~CircuitBreaker.adopt_closed` and :meth:`~CircuitBreaker.count_remote`. Those
never call the listener (no echo). With no listener (the default) the breaker
behaves exactly as without sharing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import StrEnum

from router.config import Breaker


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerEvent(StrEnum):
    """What a breaker tells its :attr:`~CircuitBreaker.listener`.

    ``failure``/``success``: a counted failure or a success while closed (they feed a
    shared consecutive-failure count); ``opened``: a trip (``open_until`` is set);
    ``closed``: a half-open probe succeeded; ``probe_released``: a probe ended saying
    nothing about availability (its shared probe token may be given back).
    """

    FAILURE = "failure"
    SUCCESS = "success"
    OPENED = "opened"
    CLOSED = "closed"
    PROBE_RELEASED = "probe_released"


#: ``listener(breaker, event, now)``; must not raise and must not block.
BreakerListener = Callable[["CircuitBreaker", BreakerEvent, float], None]

_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF = BreakerState.HALF_OPEN


class CircuitBreaker:
    """The breaker of one model. Not thread-safe: one policy owns it."""

    __slots__ = (
        "settings",
        "state",
        "consecutive",
        "_ring",
        "_pos",
        "_count",
        "_fails",
        "trips",
        "total_trips",
        "opened_at",
        "open_until",
        "probes_in_flight",
        "probe_started",
        "_rng",
        "listener",
        "remote_opens",
    )

    def __init__(self, settings: Breaker, rng: random.Random) -> None:
        self.settings = settings
        self._rng = rng
        self.state = _CLOSED
        self.trips = 0  # consecutive trips without a close in between
        self.total_trips = 0
        self.opened_at = 0.0
        self.open_until = 0.0
        self.probes_in_flight = 0
        self.probe_started = 0.0
        #: told of counted outcomes and transitions (sharing; None: not shared)
        self.listener: BreakerListener | None = None
        #: openings adopted from other replicas (not in ``total_trips``)
        self.remote_opens = 0
        self._reset_counts()

    def _reset_counts(self) -> None:
        self.consecutive = 0
        self._ring = bytearray(self.settings.window)
        self._pos = 0
        self._count = 0
        self._fails = 0

    def reconfigure(self, settings: Breaker) -> None:
        """New settings; the state is kept (a changed window restarts its counts)."""
        window_changed = settings.window != self.settings.window
        self.settings = settings
        if window_changed:
            self._reset_counts()

    def allows(self, now: float) -> bool:
        """Whether a call may start at ``now`` (moves open → half-open when due)."""
        state = self.state
        if state is _CLOSED:
            return True
        if state is _OPEN:
            if now < self.open_until:
                return False
            self.state = _HALF
            self.probes_in_flight = 0
        if self.probes_in_flight < self.settings.half_open_probes:
            return True
        if now - self.probe_started >= self.settings.probe_timeout_s:
            # The probes' outcomes never came back (a driver died mid-call): reclaim.
            self.probes_in_flight = 0
            return True
        return False

    def on_call(self, now: float = 0.0) -> bool:
        """Record that a call starts; returns True if it is a half-open probe."""
        if self.state is _HALF:
            self.probes_in_flight += 1
            self.probe_started = now
            return True
        return False

    def release(self, probe: bool) -> None:
        """A call ended without saying anything about availability (a 400, a refusal,
        a rate limit not counted, a wrong answer, a cancellation, an exception): free
        its probe slot, change nothing else."""
        if probe and self.state is _HALF and self.probes_in_flight > 0:
            self.probes_in_flight -= 1
        if probe and self.listener is not None:
            self.listener(self, BreakerEvent.PROBE_RELEASED, 0.0)

    def _push(self, failed: int) -> None:
        ring = self._ring
        pos = self._pos
        self._fails += failed - ring[pos]
        ring[pos] = failed
        self._pos = pos + 1 if pos + 1 < len(ring) else 0
        if self._count < len(ring):
            self._count += 1

    def on_success(self, now: float, probe: bool = False) -> None:
        """A call succeeded. A half-open probe's success closes the breaker."""
        state = self.state
        if state is _HALF:
            if probe:
                self.state = _CLOSED
                self.trips = 0
                self.probes_in_flight = 0
                self._reset_counts()
                if self.listener is not None:
                    self.listener(self, BreakerEvent.CLOSED, now)
            return
        if state is _CLOSED:
            self.consecutive = 0
            # _push(0), inlined: this runs on every successful call
            ring = self._ring
            pos = self._pos
            self._fails -= ring[pos]
            ring[pos] = 0
            n = len(ring)
            self._pos = pos + 1 if pos + 1 < n else 0
            if self._count < n:
                self._count += 1
            if self.listener is not None:
                self.listener(self, BreakerEvent.SUCCESS, now)
        # Open: a call started before the trip came back late; it changes nothing.

    def on_failure(self, now: float, probe: bool = False) -> None:
        """A call failed in a way that counts against the model's availability."""
        state = self.state
        if state is _HALF:
            if probe:
                self._trip(now, reprobe=True)
            return
        if state is _OPEN:
            return
        self.consecutive += 1
        self._push(1)
        if self.listener is not None:
            self.listener(self, BreakerEvent.FAILURE, now)
        s = self.settings
        if self.consecutive >= s.consecutive_failures or (
            self._count >= s.min_requests and self._fails >= s.failure_rate * self._count
        ):
            self._trip(now)

    def _trip(self, now: float, reprobe: bool = False) -> None:
        s = self.settings
        self.trips += 1
        self.total_trips += 1
        if reprobe and s.reprobe_s is not None:
            duration = s.reprobe_s
        elif s.reprobe_s is not None:
            duration = s.open_base_s
        else:
            duration = min(s.open_cap_s, s.open_base_s * s.growth ** (self.trips - 1))
        if s.jitter:
            duration *= 1.0 + s.jitter * (2.0 * self._rng.random() - 1.0)
        self.state = _OPEN
        self.opened_at = now
        self.open_until = now + duration
        self.probes_in_flight = 0
        self._reset_counts()
        if self.listener is not None:
            self.listener(self, BreakerEvent.OPENED, now)

    # -- what other replicas saw (router.shared) ----------------------------------------
    def trip(self, now: float) -> bool:
        """Open now, from closed, as the consecutive-failure rule does (the shared
        count of consecutive failures reached the threshold). Tells the listener.
        Returns whether it opened (False when not closed)."""
        if self.state is not _CLOSED:
            return False
        self._trip(now)
        return True

    def adopt_open(self, until: float, now: float) -> bool:
        """Another replica opened this model's breaker until ``until``: be open until
        the later of that and any opening of our own. Returns whether anything changed.
        A deadline already past changes nothing (its half-open phase is probed through
        the shared probe token, not re-entered here)."""
        if until <= now:
            return False
        if self.state is _OPEN and self.open_until >= until:
            return False
        if self.state is not _OPEN:
            self.trips += 1
            self.opened_at = now
            self.remote_opens += 1
            self._reset_counts()
        self.state = _OPEN
        self.open_until = until
        self.probes_in_flight = 0
        return True

    def adopt_closed(self, now: float) -> bool:
        """Another replica's probe succeeded: close, unless we hold an opening of our
        own that is not yet due (the later deadline wins). Returns whether it closed."""
        if self.state is _CLOSED:
            return False
        if self.state is _OPEN and self.open_until > now:
            return False
        self.state = _CLOSED
        self.trips = 0
        self.probes_in_flight = 0
        self._reset_counts()
        return True

    def count_remote(self, failed: bool) -> None:
        """Another replica's counted outcome while closed: it joins the consecutive
        count (a failure adds one, a success resets it) but not the failure-rate
        window, and never trips the breaker by itself (the next own failure does)."""
        if self.state is _CLOSED:
            self.consecutive = self.consecutive + 1 if failed else 0

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.state.value}, trips={self.trips}, until={self.open_until:.1f})"
        )

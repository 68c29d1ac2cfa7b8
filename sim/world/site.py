"""The serving side of one simulated model: the four steps every call goes through.

One implementation for both clocks: the SimPy driver (:mod:`sim.engine.driver`,
simulated time) and the HTTP twin (:mod:`sim.twin.server`, scaled wall time) call
the same :class:`ProviderSite`, so a request to ``sim serve`` meets exactly the
rate window, outage, queue and answer a replayed call meets. Sans-I/O: the site
never sleeps or waits; it says what happens and the driver makes time pass (a
SimPy timeout, an ``asyncio.sleep``).

1. :meth:`ProviderSite.arrive` -- the *rate limit* (a fixed one-minute window of
   scenario time, as most providers count; a refused call is answered at once with
   a 429 carrying the scenario's Retry-After and does not count in the window) and
   the *outage* at the arrival instant (``hang`` or ``fail_fast``).
2. :meth:`ProviderSite.acquire` / :meth:`ProviderSite.wait` /
   :meth:`ProviderSite.release` -- *capacity*: at most ``capacity`` calls run at
   once; later calls queue FIFO. A waiter is whatever the driver waits on (a SimPy
   event, an asyncio future); :meth:`release` hands the slot to the first waiter
   still waiting, so ``in_use`` never drops while someone queues.
3. :meth:`ProviderSite.answer` -- the answer's kind and service time, from the
   world's common random numbers for (task, model, attempt).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from sim.world.providers import World

#: Seconds a provider takes to turn a call away with a 429.
RATE_LIMIT_LATENCY_S = 0.05

#: What :meth:`ProviderSite.arrive` can refuse a call with (``None``: it goes on).
Refusal = Literal["rate_limited", "hang", "fail_fast"]

W = TypeVar("W")


class ProviderSite(Generic[W]):
    """One model's rate window, capacity slots and FIFO queue of waiters ``W``."""

    __slots__ = (
        "world",
        "model_index",
        "capacity",
        "in_use",
        "queue",
        "rpm",
        "window",
        "window_count",
        "retry_after_s",
        "timeline",
        "up_from",
        "up_until",
    )

    def __init__(self, world: World, model_index: int) -> None:
        self.world = world
        self.model_index = model_index
        capacity = world.capacity(model_index)
        rpm = world.rate_limit_rpm(model_index)
        self.capacity = capacity if capacity else 1 << 30
        self.in_use = 0
        self.queue: deque[W] = deque()
        self.rpm = rpm if rpm else math.inf
        self.window = -1
        self.window_count = 0
        self.retry_after_s = world.retry_after_s(model_index)
        #: the model's outage timeline (None: never down); World.outage, one call less
        self.timeline = world.outage_timeline(model_index)
        # The up period last seen, [up_from, up_until): a call arriving inside it needs
        # no look-up in the timeline (empty until the first call).
        self.up_from = math.inf
        self.up_until = -math.inf

    def arrive(self, t: float) -> Refusal | None:
        """Steps 1 and 2 for a call arriving at scenario time ``t``.

        ``"rate_limited"``: over this minute's ``rate_limit_rpm`` (answer a 429 after
        :data:`RATE_LIMIT_LATENCY_S`, Retry-After :attr:`retry_after_s`); ``"hang"`` /
        ``"fail_fast"``: the model is in an outage of that mode; ``None``: go on to
        capacity. A call that passes the rate window counts in it, outage or not (a
        provider counts the requests it received).
        """
        minute = int(t // 60.0)
        if minute != self.window:
            self.window = minute
            self.window_count = 0
        if self.window_count >= self.rpm:
            return "rate_limited"
        self.window_count += 1
        if self.up_from <= t < self.up_until:
            return None
        return self._outage(t)

    def _outage(self, t: float) -> Refusal | None:
        """The outage mode at ``t`` from the timeline (``World.outage``); when up,
        remember the up period around ``t`` (from the end of the outage before it to
        the next start drawn, or to the end of what is drawn)."""
        timeline = self.timeline
        if timeline is None:
            self.up_from = -math.inf
            self.up_until = math.inf
            return None
        mode = timeline.state(t)  # draws the timeline beyond t when needed
        if mode is None:
            starts = timeline.starts
            i = bisect_right(starts, t) - 1
            self.up_from = timeline.ends[i] if i >= 0 else -math.inf
            self.up_until = starts[i + 1] if i + 1 < len(starts) else timeline.covered_until
        return mode

    def acquire(self) -> bool:
        """Take a free slot (True), or say the caller must :meth:`wait` (False)."""
        if self.in_use < self.capacity:
            self.in_use += 1
            return True
        return False

    def wait(self, waiter: W) -> None:
        """Queue ``waiter``; :meth:`release` hands it a slot (``in_use`` counts it then)."""
        self.queue.append(waiter)

    def release(self, waiting: Callable[[W], bool]) -> W | None:
        """Give back a slot: return the first queued waiter for which ``waiting`` is
        still true (the caller wakes it; the slot is now its own), or ``None`` when
        nobody waits and the slot is free again."""
        queue = self.queue
        while queue:
            waiter = queue.popleft()
            if waiting(waiter):
                return waiter
        self.in_use -= 1
        return None

    def answer(
        self,
        task_index: int,
        attempt: int,
        task_type: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> tuple[str, float]:
        """Step 3: the answer's kind and service time (see :meth:`World.attempt`)."""
        return self.world.attempt(
            self.model_index, task_index, attempt, task_type, prompt_tokens, completion_tokens
        )

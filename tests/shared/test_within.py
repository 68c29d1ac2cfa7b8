"""``router.shared.redis.within``: a store operation's timeout that does not blame the
store for time the replica's own event loop was blocked."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.shared.redis import within


async def _reply_after_hops(delay_s: float, hops: int) -> str:
    """A reply that arrives after ``delay_s`` and then takes ``hops`` loop turns to be
    read (as a socket reply through a client library's buffers does)."""
    await asyncio.sleep(delay_s)
    for _ in range(hops):
        await asyncio.sleep(0)
    return "ok"


def _block_loop_soon(loop: asyncio.AbstractEventLoop, at_s: float, for_s: float) -> None:
    loop.call_later(at_s, time.sleep, for_s)  # a CPU-bound stretch on the loop


def test_a_reply_delayed_by_our_own_blocked_loop_is_not_a_timeout() -> None:
    async def main(bound) -> str:  # noqa: ANN001
        _block_loop_soon(asyncio.get_running_loop(), 0.01, 0.3)
        return await bound(_reply_after_hops(0.05, 5), 0.1)

    assert asyncio.run(main(within)) == "ok"
    # The same on asyncio.wait_for times out: the blocked loop is charged to the reply.
    with pytest.raises(TimeoutError):
        asyncio.run(main(asyncio.wait_for))


def test_no_reply_on_a_free_loop_times_out_after_the_timeout_not_the_backstop() -> None:
    async def main() -> float:
        began = time.monotonic()
        with pytest.raises(TimeoutError, match="re-read: no answer from the store within 0.1 s"):
            await within(asyncio.Event().wait(), 0.1, backstop=5.0, what="re-read")
        return time.monotonic() - began

    assert 0.1 <= asyncio.run(main()) < 2.0


def test_a_loop_blocked_for_good_still_hits_the_backstop() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        for k in range(12):  # the loop keeps being blocked: 80 ms stretches, 5 ms apart
            _block_loop_soon(loop, 0.01 + 0.085 * k, 0.08)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await within(asyncio.Event().wait(), 0.05, backstop=0.4)
        return time.monotonic() - began

    # Every timer fired late, so the store kept getting its time back, up to the
    # backstop (and not a moment before it).
    assert 0.4 <= asyncio.run(main()) < 3.0

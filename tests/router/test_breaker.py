"""Every circuit-breaker transition, with exact open times."""

from __future__ import annotations

import random

import pytest

from router import Breaker, BreakerState, CircuitBreaker


def make(**kw) -> CircuitBreaker:
    settings = Breaker(**{"jitter": 0.0, **kw})
    return CircuitBreaker(settings, random.Random(0))


def test_consecutive_failures_trip_it() -> None:
    b = make(consecutive_failures=3, open_base_s=10, min_requests=10, window=20)
    for _ in range(2):
        b.on_failure(0.0)
    assert b.state is BreakerState.CLOSED
    b.on_success(0.0)
    for _ in range(2):
        b.on_failure(1.0)
    assert b.state is BreakerState.CLOSED  # the success reset the streak
    b.on_failure(2.0)
    assert b.state is BreakerState.OPEN and b.open_until == 12.0 and b.total_trips == 1
    assert not b.allows(11.999)


def test_failure_rate_over_window_trips_it() -> None:
    b = make(consecutive_failures=100, failure_rate=0.5, window=10, min_requests=4)
    b.on_failure(0.0)
    b.on_success(0.0)
    b.on_failure(0.0)  # 2/3 failed but fewer than min_requests seen
    assert b.state is BreakerState.CLOSED
    b.on_success(0.0)  # 2/4 = 0.5 reached with 4 requests? it trips on a failure only
    assert b.state is BreakerState.CLOSED
    b.on_failure(0.0)  # 3/5 >= 0.5
    assert b.state is BreakerState.OPEN


def test_window_forgets_old_outcomes() -> None:
    b = make(consecutive_failures=100, failure_rate=0.5, window=4, min_requests=4)
    for outcome in (1, 0, 0, 0, 0, 0, 1):  # the first failure has left the window
        (b.on_failure if outcome else b.on_success)(0.0)
    assert b.state is BreakerState.CLOSED


def test_half_open_admits_n_probes_and_success_closes() -> None:
    b = make(consecutive_failures=1, open_base_s=5, half_open_probes=2, min_requests=1, window=1)
    b.on_failure(0.0)
    assert not b.allows(4.9)
    assert b.allows(5.0) and b.state is BreakerState.HALF_OPEN
    assert b.on_call() is True
    assert b.allows(5.0)
    assert b.on_call() is True
    assert not b.allows(5.0)  # both probe slots taken
    b.on_success(6.0, probe=True)
    assert b.state is BreakerState.CLOSED and b.trips == 0
    assert b.on_call() is False


def test_open_time_grows_geometrically_up_to_the_cap() -> None:
    b = make(
        consecutive_failures=1,
        open_base_s=10,
        growth=3,
        open_cap_s=50,
        min_requests=1,
        window=1,
        reprobe_s=None,
    )
    t = 0.0
    opens = []
    for _ in range(4):
        b.on_failure(t)
        opens.append(b.open_until - t)
        t = b.open_until
        assert b.allows(t)
        b.on_call()
        b.on_failure(t, probe=True)  # the probe fails: re-open, longer
        opens.append(b.open_until - t)
        t = b.open_until
        b.allows(t)
        b.on_call()
        b.on_success(t, probe=True)
    assert opens == [10, 30, 10, 30, 10, 30, 10, 30]


def test_probe_failure_reopens_with_growth_and_cap() -> None:
    b = make(
        consecutive_failures=1,
        open_base_s=10,
        growth=2,
        open_cap_s=35,
        min_requests=1,
        window=1,
        reprobe_s=None,
    )
    b.on_failure(0.0)
    durations = [b.open_until]
    for _ in range(3):
        t = b.open_until
        assert b.allows(t)
        b.on_call()
        b.on_failure(t, probe=True)
        durations.append(b.open_until - t)
    assert durations == [10, 20, 35, 35]
    assert b.total_trips == 4


def test_jitter_bounds_open_time() -> None:
    settings = Breaker(
        consecutive_failures=1, open_base_s=100, jitter=0.2, min_requests=1, window=1
    )
    rng = random.Random(3)
    for _ in range(200):
        b = CircuitBreaker(settings, rng)
        b.on_failure(0.0)
        assert 80.0 <= b.open_until <= 120.0


def test_late_results_while_open_change_nothing() -> None:
    b = make(consecutive_failures=1, open_base_s=10, min_requests=1, window=1)
    b.on_failure(0.0)
    b.on_success(1.0)
    b.on_failure(1.0)
    assert b.state is BreakerState.OPEN and b.open_until == 10.0 and b.total_trips == 1


@pytest.mark.parametrize("probe", [False])
def test_non_probe_result_in_half_open_is_ignored(probe: bool) -> None:
    b = make(consecutive_failures=1, open_base_s=1, min_requests=1, window=1)
    b.on_failure(0.0)
    b.allows(1.0)
    b.on_failure(1.0, probe=probe)
    assert b.state is BreakerState.HALF_OPEN


def test_failed_probe_reopens_for_the_short_reprobe_interval() -> None:
    b = make(consecutive_failures=1, open_base_s=28, reprobe_s=12, min_requests=1, window=1)
    b.on_failure(0.0)
    durations = [b.open_until]
    for _ in range(3):
        t = b.open_until
        assert b.allows(t)
        b.on_call(t)
        b.on_failure(t, probe=True)
        durations.append(b.open_until - t)
    assert durations == [28, 12, 12, 12]


def test_defaults_notice_recovery_within_15_s_and_cost_at_most_6_calls() -> None:
    """The default settings against a 60 s outage (every probe at its earliest jitter)
    and against outages of 30–120 s (recovery noticed within 15 s)."""
    s = Breaker()
    for down_s in (30.0, 45.0, 60.0, 90.0, 120.0):
        for jitter_draw in (0.0, 0.5, 0.999):
            b = CircuitBreaker(s, _Fixed(jitter_draw))
            calls, t = 0, 0.0
            while b.state is not BreakerState.OPEN:  # tasks one every 0.5 s, all failing
                calls += 1
                b.on_call(t)
                b.on_failure(t)
                t += 0.5
            while True:
                t = b.open_until
                assert b.allows(t)
                probe = b.on_call(t)
                if t >= down_s:
                    b.on_success(t, probe)
                    break
                calls += 1
                b.on_failure(t, probe)
            assert b.state is BreakerState.CLOSED
            assert t - down_s <= 15.0, (down_s, jitter_draw, t)
            if down_s == 60.0:
                assert calls <= 6, (jitter_draw, calls)


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_release_frees_the_probe_slot_without_changing_state() -> None:
    b = make(consecutive_failures=1, open_base_s=5, min_requests=1, window=1)
    b.on_failure(0.0)
    assert b.allows(5.0)
    probe = b.on_call(5.0)
    assert probe and not b.allows(5.0)
    b.release(probe)  # e.g. the probe ended as bad_request, or was cancelled
    assert b.state is BreakerState.HALF_OPEN and b.allows(5.1)
    assert b.on_call(5.1) is True
    b.on_success(6.0, probe=True)
    assert b.state is BreakerState.CLOSED


def test_a_probe_never_reported_is_reclaimed_after_probe_timeout() -> None:
    b = make(consecutive_failures=1, open_base_s=5, min_requests=1, window=1, probe_timeout_s=30)
    b.on_failure(0.0)
    assert b.allows(5.0)
    b.on_call(5.0)  # the driver dies: neither record nor abort ever comes
    assert not b.allows(34.9)
    assert b.allows(35.0)
    assert b.on_call(35.0) is True

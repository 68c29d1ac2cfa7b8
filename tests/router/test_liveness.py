"""Liveness property tests: whatever happens to the calls in flight — outcomes of
every kind, cancellations, driver exceptions, in any interleaving — everything a
call acquired is given back, and once the models answer again the router uses them
again within a bounded time."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import BreakerState, Call, ErrorKind, Finish, Outcome, RouterConfig, RoutingPolicy, Task
from tests.router.test_properties import configs

KINDS = list(ErrorKind)


def chaos(policy: RoutingPolicy, rng: random.Random, n_tasks: int, concurrency: int) -> float:
    """Route ``n_tasks`` with random outcomes, cancellations and exceptions; return the
    time at the end."""
    now = 0.0
    started = 0
    inflight: list[list] = []
    while started < n_tasks or inflight:
        if started < n_tasks and len(inflight) < concurrency:
            run = policy.start(Task(f"c{started}", "json"), now)
            inflight.append([run, run.next_action(now)])
            started += 1
            continue
        entry = inflight[rng.randrange(len(inflight))]
        run, action = entry
        now += rng.uniform(0, 2.0)
        if isinstance(action, Finish):
            inflight.remove(entry)
            continue
        roll = rng.random()
        if roll < 0.15:  # the awaiting task is cancelled (mid-call or mid-wait)
            entry[1] = Finish(run.abort(now, "cancelled"))
        elif roll < 0.2:  # the driver raised
            entry[1] = Finish(run.abort(now, "error", "RuntimeError in the driver"))
        elif isinstance(action, Call):
            kind = rng.choice(KINDS)
            ra = rng.choice([None, 0.5, 30.0])
            latency = min(rng.uniform(0, 3), action.timeout_s)
            entry[1] = run.record(Outcome(kind, latency, retry_after_s=ra), now)
        else:
            entry[1] = run.next_action(now)
    return now


def _bound(cfg: RouterConfig) -> float:
    b = cfg.breaker
    longest = max(b.open_base_s, b.reprobe_s or 0.0, b.open_cap_s if b.reprobe_s is None else 0)
    return longest * (1.0 + b.jitter)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=configs(),
    seed=st.integers(0, 2**32),
    oseed=st.integers(0, 2**32),
    concurrency=st.integers(1, 8),
)
def test_nothing_leaks_and_breakers_recover(
    cfg: RouterConfig, seed: int, oseed: int, concurrency: int
) -> None:
    policy = RoutingPolicy(cfg, seed=seed)
    rng = random.Random(oseed)
    now = chaos(policy, rng, n_tasks=40, concurrency=concurrency)
    # Safety after chaos: no reservation and no probe slot outlives its call.
    assert policy.ledger.holds == {}
    assert policy.ledger.reserved_total == 0.0
    assert all(b.probes_in_flight == 0 for b in policy.breakers)
    # Liveness: the providers are healthy again; tasks keep coming, one a second.
    horizon = now + _bound(cfg) + 5.0
    called_at: dict[str, float] = {}
    while now < horizon:
        run = policy.start(Task(f"h{now}", "json"), now)
        action = run.next_action(now)
        while not isinstance(action, Finish):
            assert isinstance(action, Call)  # OK answers never lead to a Wait
            called_at[action.model] = now
            action = run.record(Outcome(ErrorKind.OK, 0.05), now + 0.05)
        now += 1.0
    for model, breaker in zip(policy.models, policy.breakers, strict=True):
        # No breaker is stuck: an open time always ends, a probe slot is always free.
        assert breaker.allows(now), (model.id, breaker)
        if model.id in called_at:
            # A model answered OK after the chaos: its breaker is closed again.
            assert breaker.state is BreakerState.CLOSED, (model.id, breaker)
    assert policy.ledger.holds == {}

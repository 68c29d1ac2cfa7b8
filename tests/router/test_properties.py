"""Property tests: the policy's invariants over random configs and outcome sequences.

Tasks are interleaved (several in flight at once, advanced in a random order)
so that reservations, breakers and budgets are shared the way the live driver
shares them.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import (
    BreakerState,
    Call,
    ErrorKind,
    Finish,
    Outcome,
    RouterConfig,
    RoutingPolicy,
    Task,
    config_from_dict,
)

KINDS = [k for k in ErrorKind]


@st.composite
def configs(draw) -> RouterConfig:
    n = draw(st.integers(2, 6))
    models = []
    for i in range(n):
        models.append(
            {
                "id": f"m{i}",
                "provider": f"p{draw(st.integers(0, 2))}",
                "completion_rate": draw(st.floats(0, 1)),
                "cost_per_task": draw(st.sampled_from([0.0, 0.0001, 0.001, 0.01, 0.05])),
                "avg_latency_ms": draw(st.one_of(st.none(), st.floats(50, 5000))),
                "status": draw(st.sampled_from(["stable", "stable", "preview", "deprecated"])),
            }
        )
    ids = [m["id"] for m in models]
    chain = draw(st.permutations(ids))[: draw(st.integers(1, n))]
    route = {
        "chain": chain,
        "max_cost_per_task": draw(st.sampled_from([0.001, 0.01, 0.05, 1.0])),
        "max_latency_ms": draw(st.floats(500, 20_000)),
        "attempt_timeout_ms": draw(st.one_of(st.none(), st.floats(100, 5000))),
        "attempts_per_model": draw(st.integers(1, 4)),
        "backoff": {
            "base_s": draw(st.floats(0.01, 2)),
            "cap_s": draw(st.floats(0.1, 10)),
            "jitter": draw(st.sampled_from(["full", "equal", "none"])),
        },
        "ordering": draw(st.sampled_from(["chain", "score"])),
        "fallback_on_refusal": draw(st.booleans()),
    }
    window = draw(st.integers(1, 20))
    return config_from_dict(
        {
            "environment": "production",
            "models": models,
            "routes": {"json": route},
            "default_route": "json",
            "breaker": {
                "consecutive_failures": draw(st.integers(1, 6)),
                "failure_rate": draw(st.floats(0.1, 1.0)),
                "window": window,
                "min_requests": draw(st.integers(1, window)),
                "open_base_s": draw(st.floats(0.5, 60)),
                "growth": draw(st.floats(1.0, 3.0)),
                "open_cap_s": draw(st.floats(1, 300)),
                "jitter": draw(st.floats(0, 0.5)),
                "half_open_probes": draw(st.integers(1, 3)),
            },
            "budget": {"daily_cap_usd": draw(st.sampled_from([0.001, 0.01, 0.1, 1.0]))},
        }
    )


def simulate(cfg: RouterConfig, seed: int, outcome_seed: int, n_tasks: int, concurrency: int):
    """Route n_tasks with up to `concurrency` in flight; check invariants on every call."""
    policy = RoutingPolicy(cfg, seed=seed)
    rng = random.Random(outcome_seed)
    route = cfg.routes["json"]
    cap = cfg.budget.daily_cap_usd
    bound = len(route.chain) * route.attempts_per_model
    models = {m.id: m for m in cfg.models}
    log: list[tuple] = []
    now = 0.0
    started = 0
    inflight: list[list] = []  # [run, action, task_calls]
    results = []

    def checked(run, action):
        # Invariants hold at the moment a call is planned, which is when a driver starts it.
        if isinstance(action, Call):
            m = models[action.model]
            assert m.status == "stable"  # in production, only stable models are called
            b = policy.breakers[action.model_index]
            assert b.state is not BreakerState.OPEN
            if b.state is BreakerState.HALF_OPEN:
                assert b.probes_in_flight <= cfg.breaker.half_open_probes
            # run.spent excludes the call just planned; its estimate is reserved
            assert run.spent + m.cost_per_task <= route.max_cost_per_task + 1e-9
            led = policy.ledger
            assert led.spent_total + led.reserved_total <= cap + 1e-9
            assert action.timeout_s <= run.deadline - now + 1e-9
        return action

    while started < n_tasks or inflight:
        if started < n_tasks and (len(inflight) < concurrency or not inflight):
            run = policy.start(Task(f"t{started}", "json"), now)
            inflight.append([run, checked(run, run.next_action(now)), 0])
            started += 1
            continue
        idx = rng.randrange(len(inflight))
        entry = inflight[idx]
        run, action, calls = entry
        if isinstance(action, Finish):
            res = action.result
            assert len(res.attempts) == calls <= bound
            results.append(res)
            inflight.pop(idx)
            continue
        if isinstance(action, Call):
            kind = rng.choice(KINDS)
            latency = min(rng.uniform(0, 3), action.timeout_s)
            ra = rng.choice([None, 0.5, 5.0]) if kind is ErrorKind.RATE_LIMITED else None
            now += rng.uniform(0, 0.5)
            log.append((run.task.task_id, action.model, round(action.timeout_s, 9)))
            entry[1] = checked(run, run.record(Outcome(kind, latency, retry_after_s=ra), now))
            entry[2] = calls + 1
        else:
            now += rng.uniform(0, 0.5)
            log.append((run.task.task_id, "wait", round(action.seconds, 9)))
            entry[1] = checked(run, run.next_action(now))
    assert len(results) == n_tasks
    return log, policy


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=configs(),
    seed=st.integers(0, 2**32),
    oseed=st.integers(0, 2**32),
    concurrency=st.integers(1, 8),
)
def test_invariants_hold(cfg: RouterConfig, seed: int, oseed: int, concurrency: int) -> None:
    simulate(cfg, seed, oseed, n_tasks=40, concurrency=concurrency)


@settings(max_examples=40, deadline=None)
@given(cfg=configs(), seed=st.integers(0, 2**32), oseed=st.integers(0, 2**32))
def test_same_seed_same_decisions(cfg: RouterConfig, seed: int, oseed: int) -> None:
    a, pa = simulate(cfg, seed, oseed, 30, 4)
    b, pb = simulate(cfg, seed, oseed, 30, 4)
    assert a == b
    assert pa.ledger.spent_total == pb.ledger.spent_total

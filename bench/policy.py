"""Pure-policy routing cost: tasks through a 5-model chain, 20% of attempts failing.

No I/O and no simulator: a tight loop hands the policy pre-drawn outcomes and
advances a plain float clock. Prints the figures, then one JSON line
``{"us_per_task": ..., "tasks": ..., ...}``. Target: <= 10 us per routed task.

    python bench/policy.py [--tasks 200000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from router import (
    Call,
    ErrorKind,
    Finish,
    Outcome,
    RouterConfig,
    RoutingPolicy,
    Task,
    config_from_dict,
)


def bench_config() -> RouterConfig:
    models = [
        {
            "id": f"m{i}",
            "provider": f"p{i % 3}",
            "completion_rate": 0.8,
            "cost_per_task": 0.001 * (i + 1),
            "avg_latency_ms": 1000 + 200 * i,
        }
        for i in range(5)
    ]
    return config_from_dict(
        {
            "models": models,
            "routes": {
                "json": {
                    "chain": [m["id"] for m in models],
                    "max_cost_per_task": 1.0,
                    "max_latency_ms": 60_000,
                    "attempt_timeout_ms": 5_000,
                    "attempts_per_model": 2,
                }
            },
            "default_route": "json",
            # Breakers that would trip on a 20% error rate would hide the chain's cost:
            # keep them closed so every task walks the chain as the outcomes dictate.
            "breaker": {
                "consecutive_failures": 50,
                "failure_rate": 1.0,
                "window": 20,
                "min_requests": 20,
            },
            "budget": {"daily_cap_usd": 1e9},
        }
    )


def drive(
    policy: RoutingPolicy, tasks: list[Task], times: list[float], outcomes: list[Outcome]
) -> tuple[float, int]:
    """Route ``tasks`` through ``policy`` alone, task i started and finished at
    ``times[i]``, its calls answered at once by ``outcomes`` in turn; the wall seconds
    it took and the calls made."""
    k = 0
    t0 = time.perf_counter()
    for task, now in zip(tasks, times, strict=True):
        run_ = policy.start(task, now)
        action = run_.next_action(now)
        while not isinstance(action, Finish):
            if isinstance(action, Call):
                action = run_.record(outcomes[k], now)
                k += 1
            else:
                action = run_.next_action(now)
    return time.perf_counter() - t0, k


def run(tasks: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    ok = Outcome(ErrorKind.OK, 0.8)
    fail = Outcome(ErrorKind.SERVER_ERROR, 0.05)
    outcomes = [fail if rng.random() < 0.2 else ok for _ in range(tasks * 3)]
    task_objs = [
        Task(f"t{i}", "json", prompt_tokens=1000, completion_tokens=50) for i in range(tasks)
    ]
    policy = RoutingPolicy(bench_config(), seed=seed)
    elapsed, calls = drive(policy, task_objs, [0.01 * i for i in range(tasks)], outcomes)
    return {
        "us_per_task": round(elapsed / tasks * 1e6, 3),
        "tasks": tasks,
        "calls_per_task": round(calls / tasks, 3),
        "success_rate": round(policy.tasks_succeeded / tasks, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run(min(args.tasks, 20_000), args.seed)  # warm-up
    res = run(args.tasks, args.seed)
    print(
        f"routed {res['tasks']} tasks, {res['calls_per_task']} calls/task: "
        f"{res['us_per_task']} us per task"
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()

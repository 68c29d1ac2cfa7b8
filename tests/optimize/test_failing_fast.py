"""Failing fast never looks good: turning successes into instant failures cannot improve
an objective or a latency constraint (optimize/objective.py, "How failures are treated").

The construction keeps the successful tasks' latencies as they were (the failures are
not picked by how slow their task was): a run's tasks are taken twice, and in some
copies every success becomes an instant failure (0 s, and by default $0). That is
"some successes turned into instant failures" with nothing else changed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from optimize import PRESETS, Constraints, Objective
from optimize.objective import MULTI_METRICS, answer_wait_s
from sim.engine.results import ERRORS, summarize

MODELS = ["cheap", "dear"]
NO_CANDIDATE = ERRORS.index("no_candidate")


def tasks(n: int = 400, seed: int = 3) -> dict[str, np.ndarray]:
    """A run's compact arrays: 85% successes with a long latency tail, failures that took
    time to fail and (some) spent money, two routes, two models."""
    rng = np.random.default_rng(seed)
    success = rng.random(n) < 0.85
    latency = np.where(success, rng.lognormal(0.3, 0.8, n), rng.uniform(0.5, 8.0, n))
    model = np.where(success, rng.integers(0, 2, n), -1).astype(np.int16)
    cost = np.where(model == 1, 0.008, 0.001) * success + (~success) * rng.choice([0.0, 0.004], n)
    error = np.where(success, 0, ERRORS.index("exhausted")).astype(np.uint8)
    return {
        "started_s": np.sort(rng.uniform(0, 3600, n)),
        "latency_s": latency,
        "cost_usd": cost,
        "success": success,
        "fell_back": success & (rng.random(n) < 0.2),
        "budget_hit": np.zeros(n, dtype=bool),
        "model": model,
        "retried": rng.random(n) < 0.1,
        "error": error,
        "cause": np.zeros(n, dtype=np.uint16),
        "route": np.where(rng.random(n) < 0.5, "a", "b").astype(object),
    }


def fail_instantly(a: dict[str, np.ndarray], spend_kept: bool = False) -> dict[str, np.ndarray]:
    """The same tasks with every success turned into an instant failure (no candidate)."""
    out = {k: v.copy() for k, v in a.items()}
    ok = a["success"]
    out["success"] = np.zeros_like(ok)
    out["fell_back"] = np.zeros_like(ok)
    out["latency_s"] = np.where(ok, 0.0, a["latency_s"])
    out["cost_usd"] = a["cost_usd"] if spend_kept else np.where(ok, 0.0, a["cost_usd"])
    out["model"] = np.full_like(a["model"], -1)
    out["error"] = np.where(ok, NO_CANDIDATE, a["error"]).astype(np.uint8)
    return out


def summary_of(*runs: dict[str, np.ndarray]) -> dict:
    arrays = {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}
    spend = [float(arrays["cost_usd"][arrays["model"] == i].sum()) for i in range(len(MODELS))]
    calls = [int((arrays["model"] == i).sum()) for i in range(len(MODELS))]
    return summarize(arrays, MODELS, calls=calls, failures=[0, 0], spend=spend, breaker_trips=0)


OBJECTIVES = [
    Objective(),
    Objective(value_per_success=1.0, latency_cost_per_s=0.0),
    Objective(value_per_success=0.05, latency_cost_per_s=0.5),  # waiting priced very high
    Objective("seed_score"),
    Objective("successes_per_dollar"),
    Objective("multi"),
    *(p.objective for p in PRESETS.values()),
]


def no_better(before: float, after: float, direction: str = "maximize") -> bool:
    tol = 1e-12 * max(1.0, abs(before))
    return after <= before + tol if direction == "maximize" else after >= before - tol


def check_no_better(before: dict, after: dict) -> None:
    """Every objective, multi's components and the latency/completion constraints."""
    # The wait for an answer charges failures; an instant failure cannot shorten it.
    assert no_better(answer_wait_s(before), answer_wait_s(after), "minimize")
    for obj in OBJECTIVES:
        assert no_better(obj.value(before), obj.value(after)), obj
        if obj.multi:
            for (key, direction), b, f in zip(
                MULTI_METRICS, obj.values(before), obj.values(after), strict=True
            ):
                assert no_better(b, f, direction), key
    # A larger (or equal) violation, never a smaller one.
    cons = Constraints(min_completion_rate=0.9, max_latency_p95_s=1.0)
    for key, v in cons.values(after).items():
        assert v >= cons.values(before)[key] - 1e-12, key


def turn_into_instant_failures(s: dict, fraction: float, spend_kept: bool) -> dict:
    """A summary in which ``fraction`` of the successes became instant failures (0 s),
    the other successes' latencies unchanged; their spend kept or saved (each had cost
    what a success costs on average)."""
    n, done, failed = s["tasks"], s["completed"], s["failed"]
    k = round(fraction * done)
    per_success = (s["cost_usd"] - FAILED_SPEND) / done
    cost = s["cost_usd"] if spend_kept else s["cost_usd"] - k * per_success
    out = dict(s)
    out.update(
        completed=done - k,
        failed=failed + k,
        completion_rate=(done - k) / n,
        cost_usd=cost,
        cost_per_task=cost / n,
        cost_per_success=cost / (done - k) if done > k else math.inf,
        time_to_failure_mean_s=failed * s["time_to_failure_mean_s"] / (failed + k),
    )
    return out


FAILED_SPEND = 0.3  # USD the failed tasks of SUMMARY spent
SUMMARY = {
    "tasks": 1000,
    "completed": 920,
    "failed": 80,
    "completion_rate": 0.92,
    "cost_usd": 4.9,
    "cost_per_task": 0.0049,
    "cost_per_success": 4.9 / 920,
    "latency_mean_s": 1.9,
    "latency_p50_s": 1.4,
    "latency_p95_s": 4.5,
    "latency_p99_s": 7.0,
    "time_to_failure_mean_s": 3.2,
    "time_to_failure_p95_s": 8.0,
}


@pytest.mark.parametrize("spend_kept", [False, True], ids=["free", "spend-kept"])
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 0.9, 1.0])
def test_turning_successes_into_instant_failures_never_improves_a_summary(
    fraction: float, spend_kept: bool
) -> None:
    after = turn_into_instant_failures(SUMMARY, fraction, spend_kept)
    assert after["completion_rate"] < SUMMARY["completion_rate"]
    check_no_better(SUMMARY, after)


@pytest.mark.parametrize("spend_kept", [False, True], ids=["free", "spend-kept"])
@pytest.mark.parametrize(("copies", "failed"), [(2, 1), (3, 2), (5, 1)])
def test_a_run_with_successes_turned_into_instant_failures_is_no_better(
    copies: int, failed: int, spend_kept: bool
) -> None:
    """Real summaries (sim.engine.results.summarize) of a run's tasks taken ``copies`` times,
    against the same with every success of ``failed`` copies failed instantly. The
    remaining successes are distributed exactly as before: the mean latency is equal;
    percentiles equal up to interpolation between fewer points."""
    a = tasks()
    before = summary_of(*[a] * copies)
    after = summary_of(*[a] * (copies - failed), *[fail_instantly(a, spend_kept)] * failed)
    assert after["completion_rate"] == pytest.approx(
        before["completion_rate"] * (copies - failed) / copies
    )
    assert after["latency_mean_s"] == pytest.approx(before["latency_mean_s"], rel=1e-12)
    for key in ("latency_p50_s", "latency_p95_s"):
        assert after[key] == pytest.approx(before[key], rel=0.02), key
    # Pin the percentiles to the same value, so the comparison tests the objectives.
    pinned = {**after, **{k: before[k] for k in ("latency_p50_s", "latency_p95_s")}}
    check_no_better(before, pinned)


def test_net_value_loses_exactly_the_value_of_the_lost_successes() -> None:
    a = tasks()
    before, after = summary_of(a, a), summary_of(a, fail_instantly(a))
    obj = Objective(value_per_success=0.05, latency_cost_per_s=0.002)
    s, n = int(a["success"].sum()), 2 * len(a["success"])
    spend = float(a["cost_usd"][a["success"]].sum())
    # The wait term does not move; the value and the spend of the lost successes do.
    assert obj.value(before) - obj.value(after) == pytest.approx((0.05 * s - spend) / n)


def test_the_old_all_task_latency_rewarded_failing_fast() -> None:
    """The check has teeth: timing failures as their (0 s) latency made instant failures
    look fast, and the article's score per task rose with them."""
    a = tasks()
    before, after = summary_of(a, a), summary_of(a, fail_instantly(a))

    def old_seed_score(run: tuple[dict, ...], summary: dict) -> float:
        lat = np.concatenate([r["latency_s"] for r in run]).mean()  # every task timed
        return summary["completion_rate"] / summary["cost_per_task"] / lat

    old_before = old_seed_score((a, a), before)
    old_after = old_seed_score((a, fail_instantly(a)), after)
    assert old_after > 1.2 * old_before
    assert Objective("seed_score").value(after) < 0.6 * Objective("seed_score").value(before)


def test_a_replay_where_half_the_tasks_fail_instantly_keeps_its_success_latency(
    tmp_path: Path,
) -> None:
    """Half the tasks go to a route whose only model is a preview (skipped in production,
    so they fail at once with no_candidate): the successful tasks' latency is that of
    the same replay without them, within noise, while completion halves."""
    from router import config_from_dict, load_seed_config
    from sim import ReplayColumns, replay, replay_columns, synthesize

    data = load_seed_config().model_dump(mode="json")
    data["routes"]["doomed"] = {
        "chain": ["lyria-3-pro"],
        "max_cost_per_task": 0.05,
        "max_latency_ms": 10000,
    }
    config = config_from_dict(data)
    real = replay_columns(synthesize(n_tasks=300, rate_per_s=0.5, seed=21))
    # Each real task gets a doomed twin arriving 1 ms later: the same load shape, doubled.
    rows = sorted(
        [(t, i, "real") for i, t in enumerate(real.arrival_s)]
        + [(t + 0.001, i, "doomed") for i, t in enumerate(real.arrival_s)]
    )
    mixed = ReplayColumns(
        [f"{kind}-{real.task_ids[i]}" for _, i, kind in rows],
        [t for t, _, _ in rows],
        [real.task_types[i] if kind == "real" else "doomed" for _, i, kind in rows],
        [real.prompt_tokens[i] for _, i, _ in rows],
        [real.completion_tokens[i] for _, i, _ in rows],
    )
    reps = 4
    alone = replay(traces=[("real", real)], config=config, seed=7, replications=reps, figures=False)
    both = replay(
        traces=[("mixed", mixed)], config=config, seed=7, replications=reps, figures=False
    )
    a, b = alone.summary, both.summary
    assert b["tasks"] == 2 * a["tasks"]
    assert b["failures"].get("no_candidate", 0) >= a["tasks"]  # every doomed task, at least
    assert b["completion_rate"] == pytest.approx(a["completion_rate"] / 2, abs=0.03)
    doomed = np.concatenate(
        [r.arrays["latency_s"][r.arrays["route"] == "doomed"] for r in both.runs]
    )
    assert doomed.size == reps * a["tasks"] and float(doomed.max()) == 0.0
    # Success latency: equal within noise (the two traces meet independent draws).
    for key in ("latency_mean_s", "latency_p50_s", "latency_p95_s"):
        noise = 3 * max(a["ci"][key], b["ci"][key]) + 0.05 * a[key]
        assert abs(b[key] - a[key]) <= noise, (key, a[key], b[key])
    # Timed over every task, as before, the doomed half would have halved the mean.
    all_tasks = np.concatenate([r.arrays["latency_s"] for r in both.runs]).mean()
    assert all_tasks < 0.7 * a["latency_mean_s"]
    assert b["time_to_failure_mean_s"] < a["time_to_failure_mean_s"] or a["failed"] == 0
    # And the objectives see the lost half.
    for obj in (Objective(), Objective("seed_score")):
        assert obj.value(b) < obj.value(a)

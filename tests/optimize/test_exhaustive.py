"""On a space small enough to enumerate, a study gets within 2% of the true optimum."""

from __future__ import annotations

from pathlib import Path

from optimize import (
    Evaluator,
    Objective,
    SearchSpace,
    SpaceSpec,
    StudySettings,
    exhaustive_search,
    run_study,
)
from router import RouterConfig
from sim import ReplayColumns, Scenario

SPEC = SpaceSpec(
    routes=["regex_generation"],
    candidates={"regex_generation": ["grok-4.20", "deepseek-v4-flash", "ring-2.6", "gpt-5.4"]},
    freeze={
        "regex_generation.max_cost_per_task": 0.005,
        "regex_generation.max_latency_ms": 5000,
        "regex_generation.attempt_timeout_ms": 3000,
        "regex_generation.backoff_base_s": 0.25,
        "breaker.consecutive_failures": 5,
        "breaker.failure_rate": 0.5,
        "breaker.open_base_s": 30,
    },
    ranges={"regex_generation.attempts_per_model": [1, 2]},
)


def test_study_finds_the_exhaustive_optimum_within_two_percent(
    tmp_path: Path,
    seed_config: RouterConfig,
    scenario: Scenario,
    small_cols: list[tuple[str, ReplayColumns]],
) -> None:
    # Only regex tasks, so every configuration of the space changes what is measured.
    ((_, c),) = small_cols
    idx = [i for i, t in enumerate(c.task_types) if t == "regex"][:250]
    cols = ReplayColumns(
        [c.task_ids[i] for i in idx],
        [c.arrival_s[i] for i in idx],
        [c.task_types[i] for i in idx],
        [c.prompt_tokens[i] for i in idx],
        [c.completion_tokens[i] for i in idx],
    )
    traces = [("regex", cols)]
    objective = Objective()
    space = SearchSpace(seed_config, scenario, SPEC)
    assert space.grid_size() == 64 * 2 * 2  # chains x attempts x ordering
    seeds = [0, 1]
    truth = exhaustive_search(space, Evaluator(traces, scenario), objective, seeds)
    assert len(truth.values) == 256
    spread = max(truth.values) - min(truth.values)
    assert spread > 0.01  # the space is not flat: order and membership matter

    settings = StudySettings(
        study="exhaustive",
        storage=str(tmp_path / "s.journal"),
        base=seed_config,
        objective=objective,
        spec=SPEC,
        trials=100,
        replications=len(seeds),
        holdout_replications=2,
        top_k=1,
        prune=False,
    )
    report = run_study(traces, scenario, settings)
    best = report.study.best_value
    assert best <= truth.best_value + 1e-12  # a trial cannot beat the enumerated optimum
    assert best >= truth.best_value - 0.02 * abs(truth.best_value), (best, truth.best_value)

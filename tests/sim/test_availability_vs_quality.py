"""Availability vs quality in the twin: wrong answers never trip a breaker, and a
route never does worse than its best model alone (issue: the breaker counted
validation failures and shut whole routes down at some seeds)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from router import config_from_dict, load_seed_config
from sim import load_seed_scenario, load_traces, replay
from sim.world.scenario import DifficultySpec

TRACES = Path(__file__).resolve().parents[2] / "traces"
SEEDS = range(10)


@pytest.fixture(scope="module")
def traces():
    """The real Azure code trace (8,819 tasks) alone, not with the 43,090-task synthetic
    two-day trace beside it: the seed sweeps below replay it 40 times. Its margins
    (measured): the seed config completes 0.956-0.986 at the ten seeds (bound 0.93:
    the breaker bug this guards cost whole routes, tens of points), the nominal spread is
    0.005 (bound 0.03), and the pair completes 144-342 more tasks than the better model
    alone at every seed (a breaker shutting the pair's route would lose hundreds)."""
    return [t for t in load_traces([TRACES]) if t[0].startswith("azure")]


def independent(scenario):
    """The seed scenario without its correlated task difficulty: the world the
    router-correctness checks were stated for (with the seed difficulty, 10% of tasks
    are unsolvable by any model, which caps every config's completion at 0.90)."""
    return scenario.model_copy(update={"difficulty": DifficultySpec()})


def test_seed_config_holds_completion_at_every_seed(traces) -> None:
    config, scenario = load_seed_config(), independent(load_seed_scenario())
    rates = [
        replay(traces=traces, config=config, scenario=scenario, seed=k, figures=False).summary[
            "completion_rate"
        ]
        for k in SEEDS
    ]
    assert min(rates) >= 0.93, rates
    # The spread left is the scenario's own uncertainty about each model's completion
    # (Beta draws per seed): with the nominal figures the router's result barely moves.
    nominal = scenario.without_uncertainty()
    flat = [
        replay(traces=traces, config=config, scenario=nominal, seed=k, figures=False).summary[
            "completion_rate"
        ]
        for k in SEEDS
    ]
    assert min(flat) >= 0.93 and max(flat) - min(flat) <= 0.03, flat


def test_wrong_answers_alone_never_trip_a_breaker(traces, tmp_path: Path) -> None:
    """A world with no outages, 5xx or broken bodies but 40% wrong answers: the breaker
    stays closed, and no task ends without a candidate."""
    scenario = load_seed_scenario()
    data = scenario.model_dump()
    for m in data["models"].values():
        m["completion"] = {"default": 0.6}
        m["malformed_rate"] = 0.0
        m["server_error_rate"] = 0.0
        m["outage"] = None
    data["providers"] = {p: {**v, "outage": None} for p, v in data["providers"].items()}
    calm = type(scenario).model_validate(data)
    out = tmp_path / "calm"
    report = replay(
        traces=traces[:1], config=load_seed_config(), scenario=calm, figures=False, out=out
    )
    assert report.summary["breaker_trips"] == 0
    tasks = pl.read_parquet(out / "tasks.parquet")
    # 40% wrong answers were seen (they are quality outcomes)...
    assert tasks["failures"].str.count_matches("validation").sum() > 0.3 * tasks.height
    # ...and yet no model was ever skipped as breaker_open, no task lacked a candidate.
    assert tasks["skips"].str.contains("breaker_open").sum() == 0
    assert (tasks["error"] == "no_candidate").sum() == 0


def _two_model(chain: list[str]):
    seed = load_seed_config()
    return config_from_dict(
        {
            "models": [seed.model(m).model_dump(exclude_none=True) for m in chain],
            "routes": {
                "default": {
                    "chain": chain,
                    "max_cost_per_task": 0.05,
                    "max_latency_ms": 10_000,
                    "attempt_timeout_ms": 5_000,
                }
            },
            "default_route": "default",
        }
    )


def test_a_weak_primary_never_costs_tasks_against_the_better_model_alone(traces) -> None:
    # deepseek-v4-flash completes ~60% of tasks, claude-sonnet-4 ~85% (the article).
    pair = _two_model(["deepseek-v4-flash", "claude-sonnet-4"])
    alone = _two_model(["claude-sonnet-4"])
    # With the seed's correlated difficulty: a weak primary's failures are the hard tasks,
    # and the better model still gets every one of them.
    scenario = load_seed_scenario()
    for k in SEEDS:
        both = replay(traces=traces, config=pair, scenario=scenario, seed=k, figures=False)
        best = replay(traces=traces, config=alone, scenario=scenario, seed=k, figures=False)
        assert both.summary["completed"] >= best.summary["completed"], (k, both.summary)

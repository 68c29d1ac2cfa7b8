"""Objectives, constraints and presets: exact arithmetic on known summaries."""

from __future__ import annotations

import pytest

from optimize import PRESETS, Constraints, Objective, make_objective, net_value
from optimize.objective import answer_wait_s
from router import InputError

SUMMARY = {
    "completion_rate": 0.9,
    "cost_per_task": 0.002,
    "cost_per_success": 0.002 / 0.9,
    "cost_usd": 2.0,
    "latency_mean_s": 1.5,
    "latency_p95_s": 4.0,
}


def test_net_value_is_value_minus_cost_minus_waiting() -> None:
    # 0.05 * 0.9 - 0.002 - 0.002 * 1.5 = 0.045 - 0.002 - 0.003
    assert net_value(SUMMARY, 0.05, 0.002) == pytest.approx(0.04, abs=1e-15)
    assert Objective().value(SUMMARY) == pytest.approx(0.04, abs=1e-15)
    assert Objective(value_per_success=1.0, latency_cost_per_s=0.0).value(SUMMARY) == pytest.approx(
        0.898
    )


def test_failed_tasks_are_charged_their_time_to_failure_on_top_of_the_wait() -> None:
    # 10% failed after 4 s each: the wait for an answer is 1.5 + 0.1 * 4 = 1.9 s.
    summary = {**SUMMARY, "time_to_failure_mean_s": 4.0}
    assert answer_wait_s(summary) == pytest.approx(1.9)
    assert answer_wait_s(SUMMARY) == 1.5  # a summary without the key: failures instant
    assert net_value(summary, 0.05, 0.002) == pytest.approx(0.045 - 0.002 - 0.002 * 1.9)


def test_seed_score_and_successes_per_dollar_floor_a_zero_cost() -> None:
    # seed_score: completion / cost per success / wait for an answer.
    assert Objective("seed_score").value(SUMMARY) == pytest.approx(0.9 / (0.002 / 0.9) / 1.5)
    assert Objective("successes_per_dollar").value(SUMMARY) == pytest.approx(450.0)
    free = {**SUMMARY, "cost_per_task": 0.0, "cost_per_success": 0.0}
    assert Objective("successes_per_dollar").value(free) == pytest.approx(0.9 / 1e-6)
    assert Objective("seed_score", zero_cost_floor_usd=1e-4).value(free) == pytest.approx(
        0.9 / 1e-4 / 1.5
    )
    nothing = {**SUMMARY, "completion_rate": 0.0, "cost_per_success": float("inf")}
    assert Objective("seed_score").value(nothing) == 0.0
    assert Objective("successes_per_dollar").value(nothing) == 0.0


def test_multi_returns_three_metrics_with_directions() -> None:
    obj = Objective("multi")
    assert obj.values(SUMMARY) == [0.9, pytest.approx(0.002 / 0.9), 4.0]
    assert obj.directions == ["maximize", "minimize", "minimize"]
    assert Objective().directions == ["maximize"]


def test_constraint_values_are_signed_violations() -> None:
    c = Constraints(
        min_completion_rate=0.95, max_latency_p95_s=5.0, max_cost_per_task=0.001, budget_usd=3.0
    )
    v = c.values(SUMMARY)
    assert v["min_completion_rate"] == pytest.approx(0.05)
    assert v["max_latency_p95_s"] == pytest.approx(-1.0)
    assert v["max_cost_per_task"] == pytest.approx(0.001)
    assert v["budget_usd"] == pytest.approx(-1.0)
    assert not c.feasible(SUMMARY)
    assert Constraints(max_latency_p95_s=5.0).feasible(SUMMARY)
    assert Constraints().values(SUMMARY) == {}


def test_presets_follow_the_decision_matrix() -> None:
    assert set(PRESETS) == {"batch", "prototype", "critical", "interactive", "compliance"}
    assert PRESETS["batch"].objective.constraints.max_cost_per_task == 0.001
    assert PRESETS["batch"].objective.latency_cost_per_s == 0.0
    assert PRESETS["prototype"].objective.name == "successes_per_dollar"
    assert PRESETS["critical"].objective.constraints.min_completion_rate == 0.95
    assert PRESETS["interactive"].objective.constraints.max_latency_p95_s == 5.0
    assert PRESETS["compliance"].objective.constraints.max_cost_per_task == 0.02
    for p in PRESETS.values():
        assert p.description


def test_make_objective_layers_preset_file_and_flags() -> None:
    obj = make_objective(
        preset="interactive",
        settings={"value_per_success": 0.2, "constraints": {"min_completion_rate": 0.8}},
        latency_cost_per_s=0.05,
        max_cost_per_task=None,
    )
    assert obj.name == "net_value"
    assert (obj.value_per_success, obj.latency_cost_per_s) == (0.2, 0.05)
    assert obj.constraints == Constraints(
        min_completion_rate=0.8, max_latency_p95_s=5.0, max_cost_per_task=0.005
    )
    assert make_objective("multi").multi
    assert Objective.from_dict(obj.to_dict()) == obj


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "profit"}, "objective: unknown objective 'profit'"),
        ({"preset": "cheap"}, "preset: unknown preset 'cheap'"),
        (
            {"value_per_success": -1.0},
            "objective.value_per_success: expected a number >= 0, got -1.0",
        ),
        ({"min_completion_rate": -0.1}, "constraints.min_completion_rate: expected a number >= 0"),
        ({"settings": {"colour": 1}}, "study file: unknown key 'colour'"),
        (
            {"settings": {"constraints": {"max_cost": 1}}},
            "constraints.max_cost: unknown constraint",
        ),
    ],
)
def test_bad_objective_settings_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError) as info:
        make_objective(**kwargs)
    assert message in str(info.value)

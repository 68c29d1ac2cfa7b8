"""Multi-fidelity studies (samples of the traffic, successive halving) and the holdout's
workers and racing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from optimize import Evaluator, SpaceSpec, StudySettings, holdout, run_study
from optimize.fidelity import MIN_WINDOW_S, parse_fidelity, scale_budget, subsample, windows
from optimize.study import RACE_MIN_SEEDS, _race_drops, mean_metrics
from router import InputError, RouterConfig
from sim import ReplayColumns, Scenario, replay_columns, synthesize

SMALL = SpaceSpec(routes=["regex_generation", "json_parse"], max_candidates=4)


def columns(arrivals: list[float]) -> ReplayColumns:
    n = len(arrivals)
    return ReplayColumns(
        [f"t{i:05d}" for i in range(n)],
        list(arrivals),
        ["json_parse"] * n,
        [100 + i for i in range(n)],
        [10] * n,
    )


def test_a_sample_is_contiguous_windows_at_their_own_times() -> None:
    # One task a second for 10,000 s: 10% is one window (shorter than an hour) in the middle.
    cols = columns([float(i) for i in range(10_000)])
    assert windows(0.0, 9999.0, 0.1) == [(4499.55, 5499.45)]
    sub = subsample(cols, 0.1)
    assert sub.task_ids == [f"t{i:05d}" for i in range(4500, 5500)]
    assert sub.arrival_s == [float(i) for i in range(4500, 5500)]
    assert sub.prompt_tokens == list(range(4600, 5600))
    # Three days, one task every 10 s: 25% is 18 hour-long-or-more windows, evenly spread.
    cols = columns([10.0 * i for i in range(25_920)])
    wins = windows(0.0, cols.arrival_s[-1], 0.25)
    span = cols.arrival_s[-1]
    assert len(wins) == int(0.25 * span // MIN_WINDOW_S) == 17
    assert all(hi - lo == pytest.approx(0.25 * span / 17) for lo, hi in wins)
    assert all(a[1] < b[0] for a, b in zip(wins, wins[1:], strict=False))
    sub = subsample(cols, 0.25)
    got = np.asarray(sub.arrival_s)
    inside = np.zeros(len(got), dtype=bool)
    for lo, hi in wins:
        inside |= (got >= lo) & (got < hi)
    assert inside.all()
    assert len(sub.task_ids) == pytest.approx(0.25 * 25_920, abs=17)
    # Every task of a window is kept: the sample is whole runs of consecutive tasks.
    idx = [int(t[1:]) for t in sub.task_ids]
    assert sum(b != a + 1 for a, b in zip(idx, idx[1:], strict=False)) == 16
    # A trace too short to hold a task in its window keeps its middle task.
    assert subsample(columns([0.0, 100.0, 200.0]), 0.001).task_ids == ["t00001"]


def test_fidelity_schedules_are_checked() -> None:
    assert parse_fidelity("0.04, 0.12,0.36") == (0.04, 0.12, 0.36)
    assert parse_fidelity([0.1]) == (0.1,)
    assert parse_fidelity(None) == parse_fidelity("") == ()
    for bad, message in (
        ("0.2,0.1", "--fidelity: fractions must increase, got 0.1 after 0.2"),
        ("0.5,1", "--fidelity: expected fractions in (0, 1)"),
        ("x", "--fidelity: expected a fraction in (0, 1), got 'x'"),
    ):
        with pytest.raises(InputError) as exc:
            parse_fidelity(bad)
        assert str(exc.value).startswith(message)


def test_budget_caps_are_scaled_to_the_sample(seed_config: RouterConfig) -> None:
    assert seed_config.budget.daily_cap_usd is not None
    scaled = scale_budget(seed_config, 0.25)
    assert scaled.budget.daily_cap_usd == seed_config.budget.daily_cap_usd * 0.25
    assert scaled.routes == seed_config.routes
    assert scale_budget(seed_config, 1.0) is seed_config


@pytest.fixture(scope="module")
def mf_cols() -> list[tuple[str, ReplayColumns]]:
    return [("mf", replay_columns(synthesize(n_tasks=900, rate_per_s=2.0, seed=8)))]


@pytest.fixture(scope="module")
def mf_study(
    tmp_path_factory: pytest.TempPathFactory,
    seed_config: RouterConfig,
    scenario: Scenario,
    mf_cols: list[tuple[str, ReplayColumns]],
) -> tuple[StudySettings, object]:
    d = tmp_path_factory.mktemp("mf")
    s = StudySettings(
        study="mf",
        storage=str(d / "mf.journal"),
        base=seed_config,
        spec=SMALL,
        trials=10,
        replications=2,
        holdout_replications=5,
        top_k=3,
        fidelity=(0.1, 0.3),
    )
    return s, run_study(mf_cols, scenario, s)


def test_a_schedule_promotes_only_some_trials_to_the_full_trace(
    mf_study: tuple[StudySettings, object],
    scenario: Scenario,
    mf_cols: list[tuple[str, ReplayColumns]],
) -> None:
    settings, report = mf_study
    summary = report.summary
    fid = summary["fidelity"]
    assert fid["schedule"] == [0.1, 0.3, 1.0]
    per_rung = fid["trials_per_rung"]
    assert per_rung[0] == summary["trials"] == 10
    assert per_rung[0] >= per_rung[1] >= per_rung[2] >= 1
    assert per_rung[2] < 10  # some trials never saw the full trace
    trials = report.study.get_trials(deepcopy=False)
    S = optuna.trial.TrialState
    complete = [t for t in trials if t.state == S.COMPLETE]
    pruned = [t for t in trials if t.state == S.PRUNED]
    assert len(complete) == per_rung[2] and len(pruned) == 10 - per_rung[2]
    assert all(t.user_attrs["fidelity"] == 1.0 for t in complete)
    assert all(t.user_attrs["fidelity"] < 1.0 for t in pruned)
    # Rung j is reported at step 3**j (the pruner's rungs), one value per rung reached.
    for t in trials:
        assert sorted(t.intermediate_values) == [1, 3][: len(t.user_attrs["fidelity_values"])]
    # A complete trial's value is its full-trace value: replay it again and compare.
    ev = Evaluator(mf_cols, scenario)
    winner = report.study.trials[summary["best_trial"]]
    assert winner.state == S.COMPLETE
    cfg = report.space.build(winner.params)
    full = [ev.summary(cfg, seed) for seed in (0, 1)]
    assert winner.user_attrs["metrics"] == mean_metrics(full)
    assert winner.value == settings.objective.value(mean_metrics(full))
    # ... and differs from what the samples said (they are other traffic).
    assert winner.user_attrs["fidelity_values"][0] != winner.value
    # The holdout re-ran complete (full-trace) trials only.
    cands = report.holdout["selection"]["candidates"]
    assert {c["trial"] for c in cands} <= {t.number for t in complete}


def test_a_multi_fidelity_study_is_deterministic(
    tmp_path: Path,
    mf_study: tuple[StudySettings, object],
    scenario: Scenario,
    mf_cols: list[tuple[str, ReplayColumns]],
) -> None:
    settings, report = mf_study
    again = StudySettings(**{**settings.__dict__, "storage": str(tmp_path / "again.journal")})
    second = run_study(mf_cols, scenario, again)

    def trials(study: optuna.Study) -> list[tuple]:
        return [(t.number, t.state, t.value, t.params, t.intermediate_values) for t in study.trials]

    assert trials(second.study) == trials(report.study)
    assert json.dumps(second.holdout) == json.dumps(report.holdout)


def test_holdout_with_two_workers_equals_one_byte_for_byte(
    mf_study: tuple[StudySettings, object],
    scenario: Scenario,
    mf_cols: list[tuple[str, ReplayColumns]],
) -> None:
    settings, report = mf_study
    ev = Evaluator(mf_cols, scenario)
    args = (report.study, report.space, settings.base, settings.objective, ev)
    # The study's own holdout ran with one worker (settings.jobs == 1).
    one = {k: v for k, v in report.holdout.items() if k != "holdout_traces"}
    two = holdout(*args, seed=settings.seed, replications=5, top_k=3, jobs=2)
    assert json.dumps(two) == json.dumps(one)
    # Each (config, seed) pair once: base and candidates on 5 selection seeds (fewer
    # for a raced-out candidate), winner and base on 5 reporting seeds, where the base
    # config's runs are shared when it is a candidate or the winner.
    cands = one["selection"]["candidates"]
    base_trial = 0 if any(c["trial"] == 0 for c in cands) else None
    expected = 5 + sum(c["seeds"] for c in cands if c["trial"] != base_trial)
    expected += 5 + (5 if one["best_trial"] != base_trial else 0)
    assert one["runs"] == expected


def test_racing_keeps_the_winner_and_its_numbers(
    mf_study: tuple[StudySettings, object],
    scenario: Scenario,
    mf_cols: list[tuple[str, ReplayColumns]],
) -> None:
    settings, report = mf_study
    ev = Evaluator(mf_cols, scenario)
    args = (report.study, report.space, settings.base, settings.objective, ev)
    full = holdout(*args, seed=settings.seed, replications=5, top_k=3, race=False)
    raced = report.holdout  # the study's own, raced
    assert not any(c["stopped"] for c in full["selection"]["candidates"])
    # (Whether racing stops a candidate here depends on the study; the rule's stops
    # are checked in test_the_racing_rule.)
    # The winner without racing (which saw every seed of every candidate) wins raced too,
    # and everything reported on the reporting seeds is the same.
    assert raced["best_trial"] == full["best_trial"]
    for key in ("holdout_value", "improvement_vs_base", "paired", "metrics", "values"):
        assert raced[key] == full[key]
    assert raced["runs"] <= full["runs"]
    for c in raced["selection"]["candidates"]:
        assert c["seeds"] == 5 if not c["stopped"] else RACE_MIN_SEEDS <= c["seeds"] < 5


def test_the_racing_rule(
    mf_cols: list[tuple[str, ReplayColumns]], scenario: Scenario, seed_config: RouterConfig
) -> None:
    from optimize import Objective
    from optimize.objective import Constraints

    base = Evaluator(mf_cols, scenario).summary(seed_config, 0)

    def runs(rates: list[float], cost: float = 0.0) -> list[dict]:
        return [{**base, "completion_rate": r, "cost_per_task": cost} for r in rates]

    obj = Objective(value_per_success=1.0, latency_cost_per_s=0.0)
    leader = runs([0.90, 0.91, 0.92])
    close = runs([0.88, 0.90, 0.93])  # CIs overlap: kept
    far = runs([0.50, 0.51, 0.52])  # its CI lies below the leader's: stopped
    assert _race_drops(obj, [0, 1, 2], {0: leader, 1: close, 2: far}) == [2]
    # A candidate that holds the constraints is never stopped by a leader that does not.
    capped = Objective(
        value_per_success=1.0,
        latency_cost_per_s=0.0,
        constraints=Constraints(max_cost_per_task=0.1),
    )
    pricey = runs([0.90, 0.91, 0.92], cost=0.2)
    assert _race_drops(capped, [0, 1], {0: pricey, 1: far}) == []
    # Feasible leaders stop infeasible laggards as well as feasible ones.
    assert _race_drops(capped, [0, 1], {0: far, 1: runs([0.1, 0.11, 0.12], cost=0.2)}) == [1]


def test_a_task_meets_in_its_window_the_draws_it_meets_in_the_full_trace() -> None:
    """Common random numbers across fidelities: one model, one attempt, no outage,
    capacity or breaker in play, so a task's outcome is its own draw alone; it is the
    same in the sample as in the full trace (a sample keyed as a trace of its own would
    give about 2p(1-p) = 48% of the tasks another outcome)."""
    from router import config_from_dict
    from sim import parse_scenario, run_trace

    config = config_from_dict(
        {
            "models": [{"id": "m", "provider": "p", "cost_per_task": 0.001}],
            "routes": {
                "json_parse": {
                    "chain": ["m"],
                    "attempts_per_model": 1,
                    "max_cost_per_task": 1.0,
                    "max_latency_ms": 60_000,
                }
            },
            "default_route": "json_parse",
            "breaker": {"consecutive_failures": 10**6},
        }
    )
    scenario = parse_scenario(
        {
            "difficulty": {"sigma": 1.0},
            "models": {
                "m": {
                    "provider": "p",
                    "completion": {"default": 0.6},
                    "latency": {"median_s": 1.0, "p95_s": 3.0},
                    "cost_per_task": 0.001,
                }
            },
        }
    )
    cols = columns([i * 2.0 for i in range(20_000)])  # 40,000 s: windows of over an hour
    sub = subsample(cols, 0.2)
    assert 0 < len(sub) < len(cols) and sub.index[0] > 0

    def outcomes(c: ReplayColumns) -> dict[str, bool]:
        run = run_trace(c, config, scenario, seed=3)
        ids = [c.task_ids[i] for i in range(len(c))]
        return dict(zip(ids, run.arrays["success"].tolist(), strict=True))

    full, part = outcomes(cols), outcomes(sub)
    assert 0.4 < sum(part.values()) / len(part) < 0.8
    assert part == {t: full[t] for t in part}


def test_a_sample_of_compact_columns_replays_as_the_sample_of_lists(
    seed_config: RouterConfig, scenario: Scenario
) -> None:
    # Compact columns (arrays; what long traces and bench/study_month.py use) once came
    # out of subsample as pyarrow scalars: every task type unknown, every task on the
    # default route, and the samples ranked configs by nothing the full trace shows.
    df = synthesize(n_tasks=2000, rate_per_s=0.05, seed=4)
    lists, arrays = replay_columns(df), replay_columns(df, compact=True)
    a, b = subsample(lists, 0.3), subsample(arrays, 0.3)
    assert isinstance(b.arrival_s, np.ndarray) and isinstance(a.arrival_s, list)
    assert b.task_types.to_pylist() == a.task_types
    assert b.task_ids.to_pylist() == a.task_ids
    assert b.prompt_tokens.tolist() == a.prompt_tokens and list(b.index) == a.index
    assert len(a.task_ids) < 2000 and set(a.task_types) == set(lists.task_types)
    ev_a, ev_b = Evaluator([("t", lists)], scenario), Evaluator([("t", arrays)], scenario)
    got_a, got_b = ev_a.summary(seed_config, 1, 0.3), ev_b.summary(seed_config, 1, 0.3)
    assert got_b == got_a
    # The sample meets the routes the full trace meets, not the default route alone.
    assert set(got_a["per_route"]) == set(ev_a.summary(seed_config, 1)["per_route"])
    assert len(got_a["per_route"]) > 1

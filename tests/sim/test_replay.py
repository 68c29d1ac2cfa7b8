"""Replaying traces: determinism, common random numbers, paired comparisons, bad inputs.

All runs use the shipped seed config and seed scenario against the shipped Azure
code-completion trace (or a slice of it), so what is proved here holds for the real
inputs, not just a toy world.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from router import InputError, RouterConfig, config_from_dict, load_seed_config
from sim.engine.replays import compare, replay, run_trace, trace_key
from sim.engine.results import SCALAR_KEYS
from sim.errors import ScenarioError
from sim.traces.synth import synthesize
from sim.traces.tasks import ReplayColumns, read_trace, replay_columns, write_trace
from sim.world.scenario import Scenario, load_seed_scenario, parse_scenario

TRACES = Path(__file__).resolve().parents[2] / "traces"
AZURE = TRACES / "azure_code_2023.parquet"


def _slice(n: int) -> list[tuple[str, ReplayColumns]]:
    """The first ``n`` tasks of the Azure trace as a pre-loaded ``traces`` argument."""
    return [(f"azure_{n}", replay_columns(read_trace(AZURE).head(n)))]


def _variant(config: RouterConfig, route: str, **changes: Any) -> RouterConfig:
    """``config`` with ``changes`` applied to one route (validated like any config)."""
    data = config.model_dump(mode="json")
    data["routes"][route].update(changes)
    return config_from_dict(data)


# --------------------------------------------------------------------- determinism
def test_same_seed_gives_byte_identical_outputs(tmp_path: Path) -> None:
    """Replaying the shipped trace twice with seed 0 into two directories writes the
    very same bytes (tasks.parquet and summary.json); seed 1 gives a different summary.

    Figures are off: they are not part of the determinism contract (PNG encoders may
    embed metadata) and would only slow the test down.
    """
    config, scenario = load_seed_config(), load_seed_scenario()
    outs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        outs[name] = tmp_path / name
        replay([AZURE], config=config, scenario=scenario, seed=seed, out=outs[name], figures=False)
    for filename in ("tasks.parquet", "summary.json"):
        assert (outs["a"] / filename).read_bytes() == (outs["b"] / filename).read_bytes()
    a = json.loads((outs["a"] / "summary.json").read_text(encoding="utf-8"))
    c = json.loads((outs["c"] / "summary.json").read_text(encoding="utf-8"))
    assert a["tasks"] == c["tasks"] == 8819
    # Not just the echoed seed: the simulated outcomes differ. Latencies are continuous
    # draws, so two worlds agreeing on a percentile would be a sign of shared randomness.
    del a["seed"], c["seed"]
    assert a != c
    assert a["latency_p50_s"] != c["latency_p50_s"]
    # Only the finished directories are left behind (no temporary siblings).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


# ------------------------------------------------------------ common random numbers
def test_common_random_numbers_sharpen_paired_differences() -> None:
    """Config B is the seed config with one attempt instead of two on json_parse.

    Over 12 seeds, the paired difference B - A of completion_rate and cost_per_task
    varies at least 3x less when A and B meet the same world (same seed: CRN) than when
    they meet independent worlds (A on seed s, B on seed s + 1000). This is what makes
    :func:`sim.engine.replays.compare` and the optimizer's trials sharp: the world's draws are
    keyed by what they are about, so a policy change only changes the tasks it touches.
    """
    traces = _slice(3_000)
    ((_, cols),) = traces
    scenario = load_seed_scenario()
    config_a = load_seed_config()
    config_b = _variant(config_a, "json_parse", attempts_per_model=1)

    def summary(config: RouterConfig, seed: int) -> dict[str, Any]:
        return run_trace(cols, config, scenario, seed=seed).summary

    seeds = range(12)
    a = [summary(config_a, s) for s in seeds]
    b_same = [summary(config_b, s) for s in seeds]
    b_indep = [summary(config_b, s + 1000) for s in seeds]
    for key in ("completion_rate", "cost_per_task"):
        crn = np.array([y[key] - x[key] for x, y in zip(a, b_same, strict=True)])
        indep = np.array([y[key] - x[key] for x, y in zip(a, b_indep, strict=True)])
        var_crn, var_indep = float(crn.var(ddof=1)), float(indep.var(ddof=1))
        assert var_crn > 0.0, key  # the configs really differ on these tasks
        assert var_crn * 3.0 <= var_indep, (key, var_crn, var_indep)


def test_compare_returns_paired_differences_with_cis() -> None:
    """compare() gives, for every summary metric, a (mean of A), b (mean of B), diff
    (mean of B - A) and a CI around diff; comparing a config with itself gives exactly
    zero differences, because both sides meet the same worlds."""
    traces = _slice(1_000)
    scenario = load_seed_scenario()
    config_a = load_seed_config()
    config_b = _variant(
        config_a, "json_parse", chain=["deepseek-v4-flash", "grok-4.20", "ring-2.6"]
    )
    result = compare(config_a, config_b, traces, scenario=scenario, seed=3, replications=4)
    assert set(result) == set(SCALAR_KEYS)
    for key, row in result.items():
        assert set(row) == {"a", "b", "diff", "diff_ci_low", "diff_ci_high"}, key
        assert all(math.isfinite(v) for v in row.values()), (key, row)
        assert row["diff_ci_low"] <= row["diff"] <= row["diff_ci_high"], (key, row)
        # The mean of differences is the difference of means (up to the 12-digit rounding).
        assert row["diff"] == pytest.approx(row["b"] - row["a"], rel=1e-9, abs=1e-12), key
    assert result["tasks"] == {
        "a": 1000.0,
        "b": 1000.0,
        "diff": 0.0,
        "diff_ci_low": 0.0,
        "diff_ci_high": 0.0,
    }
    # A chain that leads with another model changes what happens.
    assert result["cost_per_task"]["diff"] != 0.0

    same = compare(config_a, config_a, traces, scenario=scenario, seed=3, replications=2)
    for key, row in same.items():
        assert row["diff"] == row["diff_ci_low"] == row["diff_ci_high"] == 0.0, (key, row)


# ---------------------------------------------------------------------- bad inputs
def test_config_model_missing_from_scenario_names_it(tmp_path: Path) -> None:
    """A config model the scenario does not describe is a ScenarioError that names the
    model and the scenario's models, raised before anything is written to ``out``."""
    data = load_seed_config().model_dump(mode="json")
    data["models"].append(
        {
            "id": "ghost-9",
            "provider": "nowhere",
            "completion_rate": 0.9,
            "cost_per_task": 0.001,
            "avg_latency_ms": 1000,
        }
    )
    data["routes"]["default"]["chain"].append("ghost-9")
    config = config_from_dict(data)
    scenario = load_seed_scenario()
    known = ", ".join(scenario.models)
    with pytest.raises(ScenarioError) as info:
        replay(
            traces=_slice(50), config=config, scenario=scenario, out=tmp_path / "out", figures=False
        )
    assert str(info.value) == f"scenario 'seed' has no model 'ghost-9'; it has: {known}"
    assert isinstance(info.value, InputError)  # the documented tree (the CLI exits 2 on it)
    # Written atomically: neither the target nor a temporary sibling is left.
    assert list(tmp_path.iterdir()) == []


def test_bad_replay_arguments_raise_documented_errors() -> None:
    """replications < 1 is a ValueError naming the argument; a negative seed is a
    ScenarioError from the world naming the seed."""
    traces = _slice(10)
    with pytest.raises(ValueError, match=r"^replications: expected an integer >= 1, got 0$"):
        replay(traces=traces, replications=0, figures=False)
    with pytest.raises(ScenarioError, match=r"^seed: expected an integer >= 0, got -1$"):
        replay(traces=traces, seed=-1, figures=False)


# ------------------------------------------------ the results before difficulty, exactly
# `sim replay traces/ --seed 0` as the code before task difficulty, token prices, context
# windows and trace keys replayed it (recorded with that code and the router of the same
# day): its headline numbers and the SHA-256 of its per-task outcome arrays. These depend
# on the policy too: if a change of the router's policy moves them, re-record them with
# the policy change applied to the code before difficulty, not with this code.
LEGACY_HEADLINE = {
    "tasks": 51909,
    "completed": 50464,
    "completion_rate": 0.972162823402,
    "cost_usd": 374.1134,
}
LEGACY_ARRAYS_SHA = "b95fe75e4add20646fdd2278c42d7d5d73d3a57f3621e85e494594d14c33a422"
_OUTCOME_ARRAYS = ("started_s", "latency_s", "cost_usd", "success", "model")
_NEW_PROFILE_FIELDS = ("context_window", "input_per_mtok", "output_per_mtok")


def _legacy_inputs() -> tuple[RouterConfig, Scenario]:
    """The seed config and scenario without what was added with difficulty: the
    difficulty section, and the token prices and context windows of the models."""
    config = load_seed_config().model_dump(mode="json", exclude_unset=True)
    for m in config["models"]:
        for name in _NEW_PROFILE_FIELDS:
            m.pop(name, None)
    scenario = load_seed_scenario().model_dump(mode="json", exclude_unset=True)
    del scenario["difficulty"]
    for m in scenario["models"].values():
        for name in _NEW_PROFILE_FIELDS:
            m.pop(name, None)
    return config_from_dict(config), parse_scenario(scenario)


def _arrays_sha(runs: list[Any], keys: tuple[str, ...] = _OUTCOME_ARRAYS) -> str:
    h = hashlib.sha256()
    for r in runs:
        for k in keys:
            h.update(k.encode())
            h.update(np.ascontiguousarray(r.arrays[k]).tobytes())
    return h.hexdigest()


def test_the_independent_unkeyed_world_reproduces_the_recorded_replay(tmp_path: Path) -> None:
    """With difficulty off (sigma = u = rho = 0), the new fields left out and worlds
    keyed by the seed alone (``key_by_trace=False``), the replay of the shipped traces
    with seed 0 is the recorded one, task for task: when each started, how long it took,
    what it cost, whether it succeeded and on which model."""
    config, scenario = _legacy_inputs()
    report = replay([TRACES], config=config, scenario=scenario, seed=0, figures=False,
                    key_by_trace=False)  # fmt: skip
    assert {k: report.summary[k] for k in LEGACY_HEADLINE} == LEGACY_HEADLINE
    assert _arrays_sha(report.runs) == LEGACY_ARRAYS_SHA


# ----------------------------------------------------------------------- trace keys
def _tied_slice(n: int) -> pl.DataFrame:
    """The first ``n`` Azure tasks with arrivals rounded to whole seconds: many ties."""
    df = read_trace(AZURE).head(n)
    return df.with_columns(pl.col("arrival_s").round(0))


def test_shuffling_a_traces_rows_changes_nothing(tmp_path: Path) -> None:
    """The same tasks in another row order (ties in arrival included) and another file
    format replay to the same summary and per-task arrays: tasks are ordered by
    (arrival, task id) and the trace key hashes the content in that order."""
    df = _tied_slice(1500)
    assert df.get_column("arrival_s").is_duplicated().sum() > 500
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=5)
    assert shuffled.get_column("task_id").to_list() != df.get_column("task_id").to_list()
    for sub in "abc":
        (tmp_path / sub).mkdir()
    files = [
        write_trace(df, tmp_path / "a" / "t.parquet"),
        write_trace(shuffled, tmp_path / "b" / "t.parquet"),
        write_trace(shuffled.reverse(), tmp_path / "c" / "t.csv"),
    ]
    keys = {trace_key(replay_columns(read_trace(f))) for f in files}
    assert len(keys) == 1
    config, scenario = load_seed_config(), load_seed_scenario()
    reports = [
        replay([f.parent], config=config, scenario=scenario, seed=4, figures=False) for f in files
    ]
    first = reports[0]
    for other in reports[1:]:
        a, b = dict(first.summary), dict(other.summary)
        a["per_trace"], b["per_trace"] = (
            list(a["per_trace"].values()),
            list(b["per_trace"].values()),
        )
        assert a == b
        assert _arrays_sha(first.runs, tuple(first.runs[0].arrays)) == _arrays_sha(
            other.runs, tuple(other.runs[0].arrays)
        )


def test_two_traces_with_one_seed_meet_independent_draws_but_the_same_outages() -> None:
    """Two synthetic traces with the same task ids (synth-000001...) but other arrivals
    have different keys; replayed with one seed, the draws of their task i are
    independent (keyed) where they used to be the very same (unkeyed), while the outage
    timelines, which describe the providers, are the same."""
    a = replay_columns(synthesize(n_tasks=4000, rate_per_s=2.0, seed=1))
    b = replay_columns(synthesize(n_tasks=4000, rate_per_s=2.0, seed=2))
    assert a.task_ids == b.task_ids and trace_key(a) != trace_key(b)
    scenario = load_seed_scenario()
    ids = [m.id for m in load_seed_config().models]
    gpt = ids.index("gpt-5.4")

    def latencies(cols: ReplayColumns, keyed: bool) -> tuple[np.ndarray, Any]:
        key = trace_key(cols) if keyed else None
        w = scenario.realize(9, 3600.0, ids, trace_key=key)
        out = [w.attempt(gpt, i, 1, "json", 0, 0) for i in range(len(cols.task_ids))]
        return np.array([lat for _, lat in out]), w

    (la, wa), (lb, wb) = latencies(a, True), latencies(b, True)
    answered = (la != 0.517) & (lb != 0.517)
    r = float(np.corrcoef(la[answered], lb[answered])[0, 1])
    assert abs(r) < 4.5 / math.sqrt(answered.sum()), r
    assert wa.outage_intervals() == wb.outage_intervals()
    assert [wa.task_draws(i) for i in range(50)] != [wb.task_draws(i) for i in range(50)]
    (ua, _), (ub, _) = latencies(a, False), latencies(b, False)
    assert np.array_equal(ua, ub)  # what keying by the trace removes

    config = load_seed_config()
    ra = run_trace(a, config, scenario, seed=9)
    rb = run_trace(b, config, scenario, seed=9)
    assert ra.summary != rb.summary
    assert run_trace(a, config, scenario, seed=9, key=trace_key(a)).summary == ra.summary


# -------------------------------------------------------------------- context windows
def test_a_prompt_beyond_the_scenario_window_falls_back_unbilled() -> None:
    """The scenario gives model `small` a 1,000-token window that the config does not
    know: each longer prompt is answered context_length at once, is not retried on
    `small` (non-retryable), costs nothing, and `big` completes the task. A config that
    knows the window skips `small` for those tasks instead (reason 'context')."""
    n = 400
    df = synthesize(n_tasks=n, rate_per_s=1.0, mix={"json": 1.0}, seed=3)
    df = df.with_columns(
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(5000).otherwise(500).alias("prompt_tokens")
    )
    cols = replay_columns(df)
    long = sum(pt > 1000 for pt in cols.prompt_tokens)
    model = {
        "provider": "p",
        "completion": {"default": 1.0},
        "latency": {"dist": "fixed", "value_s": 1.0},
        "fail_fast_latency_s": 0.2,
        "cost_per_task": 0.01,
    }
    scenario = parse_scenario(
        {"models": {"small": {**model, "context_window": 1000}, "big": model}}
    )

    def config(window: int | None) -> RouterConfig:
        small = {"id": "small", "provider": "p", "cost_per_task": 0.01, "avg_latency_ms": 1000}
        if window is not None:
            small["context_window"] = window
        return config_from_dict(
            {
                "models": [
                    small,
                    {"id": "big", "provider": "p", "cost_per_task": 0.01, "avg_latency_ms": 1000},
                ],
                "routes": {
                    "default": {
                        "chain": ["small", "big"],
                        "max_cost_per_task": 1.0,
                        "max_latency_ms": 60_000,
                        "attempts_per_model": 3,
                    }
                },
                "default_route": "default",
            }
        )

    blind = run_trace(cols, config(None), scenario, seed=1)
    assert blind.summary["completed"] == n
    assert blind.calls == [n, long]  # one call on small per task: no retry after a 400
    assert blind.failures == [long, 0]
    assert blind.spend == pytest.approx([0.01 * (n - long), 0.01 * long])
    informed = run_trace(cols, config(1000), scenario, seed=1)
    assert informed.summary["completed"] == n
    assert informed.calls == [n - long, long] and informed.failures == [0, 0]

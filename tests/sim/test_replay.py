"""Replaying traces: determinism, common random numbers, paired comparisons, bad inputs.

All runs use the shipped seed config and seed scenario against the shipped Azure
code-completion trace (or a slice of it), so what is proved here holds for the real
inputs, not just a toy world.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router import InputError, RouterConfig, config_from_dict, load_seed_config
from sim.errors import ScenarioError
from sim.replay import compare, replay, run_trace
from sim.results import SCALAR_KEYS
from sim.scenario import load_seed_scenario
from sim.trace import ReplayColumns, read_trace, replay_columns

AZURE = Path(__file__).resolve().parents[2] / "traces" / "azure_code_2023.parquet"


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
    :func:`sim.replay.compare` and the optimizer's trials sharp: the world's draws are
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

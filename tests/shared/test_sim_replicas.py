"""The twin predicts replication: ``Simulation(replicas=N, state_delay=d)`` and
``sim replay --replicas N --state-delay d``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from router import config_from_dict
from router.config import RouterConfig
from sim.cli import app
from sim.engine.driver import Simulation
from sim.engine.results import ResultSink
from sim.traces.tasks import ReplayColumns
from sim.world.scenario import parse_scenario

PERIOD, WARM, OUTAGE = 0.03, 0.6, 2.0


def twin(cap: float | None = None, budget: dict | None = None) -> tuple[RouterConfig, object]:
    """A config (dead, then backup) and a scenario whose ``dead`` is down (fail-fast
    5xx) from WARM to WARM + OUTAGE; the world is realised by :func:`run`."""
    config = config_from_dict(
        {
            "models": [
                {"id": m, "provider": f"p-{m}", "cost_per_task": 0.01, "avg_latency_ms": 10}
                for m in ("dead", "backup")
            ],
            "routes": {
                "json": {
                    "chain": ["dead", "backup"],
                    "max_cost_per_task": 1.0,
                    "max_latency_ms": 60_000,
                    "attempts_per_model": 1,
                }
            },
            "default_route": "json",
            "breaker": {
                "consecutive_failures": 3,
                "open_base_s": 0.8,
                "reprobe_s": 0.4,
                "jitter": 0.0,
            },
            **({"budget": {"daily_cap_usd": cap}} if cap else {}),
            **({"budget": budget} if budget else {}),
        }
    )
    model = {
        "completion": {"default": 1.0},
        "latency": {"dist": "fixed", "value_s": 0.005},
        "fail_fast_latency_s": 0.002,
        "cost_per_task": 0.01,
    }
    scenario = parse_scenario(
        {
            "name": "replicas",
            "models": {
                "dead": {
                    **model,
                    "provider": "p-dead",
                    "outage": {
                        "time_between": {"dist": "fixed", "value_s": 1e9},
                        "duration": {"dist": "fixed", "value_s": OUTAGE},
                        "mode": "fail_fast",
                    },
                },
                "backup": {**model, "provider": "p-backup"},
            },
        }
    )
    return config, scenario


def run(
    replicas: int,
    delay: float,
    *,
    cap: float | None = None,
    n: int | None = None,
    budget: dict | None = None,
):
    config, scenario = twin(cap, budget)
    total = n or int((WARM + OUTAGE) / PERIOD)
    cols = ReplayColumns(
        [f"t{i:05d}" for i in range(total)],
        [i * PERIOD for i in range(total)],
        ["json"] * total,
        [100] * total,
        [50] * total,
    )
    world = scenario.realize(0, 3600.0, ["dead", "backup"])  # type: ignore[attr-defined]
    timeline = world.outage_timeline(0)
    timeline.starts[:] = [WARM]
    timeline.ends[:] = [WARM + OUTAGE]
    timeline.covered_until = math.inf
    sink = ResultSink(["dead", "backup"])
    sim = Simulation(config, world, seed=0, sink=sink, replicas=replicas, state_delay=delay)
    sim.run(cols)
    return sim, sink


def test_one_replica_is_the_simulation_as_before() -> None:
    a, sink_a = run(1, 0.0)
    b, sink_b = run(1, math.inf)
    assert a.calls == b.calls and a.failures == b.failures and a.spend == b.spend
    assert len(a.policies) == 1 and a.link is None


def test_shared_state_costs_a_dead_provider_one_replicas_calls_and_none_costs_n_times() -> None:
    single = run(1, 0.0)[0].failures[0]
    shared = run(4, 0.0)[0].failures[0]
    delayed = run(4, 0.05)[0].failures[0]  # 50 ms: replicas trip before they hear
    alone = run(4, math.inf)[0].failures[0]
    assert single == 6  # 3 to trip, then a probe every 0.4 s after 0.8 s
    assert shared <= single + 3
    assert shared < delayed < alone
    assert alone >= 3 * single


def test_a_cap_holds_across_replicas_only_when_spend_is_shared() -> None:
    cap = 0.5
    shared = sum(run(4, 0.0, cap=cap, n=400)[0].spend)
    delayed = sum(run(4, 0.1, cap=cap, n=400)[0].spend)
    alone = sum(run(4, math.inf, cap=cap, n=400)[0].spend)
    assert shared == pytest.approx(cap)
    assert cap < delayed < 4 * cap  # spend in flight while the news travels
    assert alone == pytest.approx(4 * cap)


def test_sim_replay_takes_replicas_and_a_state_delay(tmp_path: Path) -> None:

    runner = CliRunner()
    trace = tmp_path / "t.ndjson"
    res = runner.invoke(app, ["synth", str(trace), "--tasks", "300", "--rate", "2"])
    assert res.exit_code == 0, res.output
    for delay in ("1.0", "inf", "0"):
        res = runner.invoke(
            app, ["replay", str(trace), "--replicas", "4", "--state-delay", delay, "--json"]
        )
        assert res.exit_code == 0, res.output
        summary = json.loads(res.output)
        assert summary["replicas"] == 4 and summary["state_delay"] == float(delay)
        assert summary["tasks"] == 300
    res = runner.invoke(app, ["replay", str(trace), "--state-delay", "-1"])
    assert res.exit_code == 2 and "--state-delay" in res.output


def test_a_task_type_cap_is_shared_like_the_daily_cap() -> None:
    """Remote holds carry their task type: four sharing replicas spend one json cap
    between them; unshared, each spends its own."""
    budget = {"per_task_type_usd": {"json": 0.3}}
    shared = sum(run(4, 0.0, n=400, budget=budget)[0].spend)
    alone = sum(run(4, math.inf, n=400, budget=budget)[0].spend)
    assert shared == pytest.approx(0.3)
    assert alone == pytest.approx(4 * 0.3)

"""The lean engine: tasks without a call cost no event, compact trace columns replay
exactly like lists, and the garbage collector is restored after every run."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import yaml

from router import config_from_dict, seed_config_path
from sim.engine.driver import Simulation
from sim.engine.replays import dump_summary, run_trace, trace_key
from sim.engine.results import ResultSink
from sim.traces.tasks import ReplayColumns, read_trace, replay_columns
from sim.world.scenario import load_seed_scenario

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def azure_head():  # noqa: ANN201 - a polars frame
    return read_trace(ROOT / "traces" / "azure_code_2023.parquet").head(800)


def _config(daily_cap: float):  # noqa: ANN202 - RouterConfig
    """The seed config with this daily cap, and no free model (ring-2.6 costs nothing,
    so it fits under any cap) in its chains."""
    data = yaml.safe_load(seed_config_path().read_text(encoding="utf-8"))
    data["budget"]["daily_cap_usd"] = daily_cap
    for route in data["routes"].values():
        route["chain"] = [m for m in route["chain"] if m != "ring-2.6"]
    return config_from_dict(data, "test config")


def test_compact_columns_replay_exactly_like_lists(azure_head) -> None:  # noqa: ANN001
    lists = replay_columns(azure_head)
    compact = replay_columns(azure_head, compact=True)
    assert isinstance(lists.arrival_s, list) and isinstance(compact.arrival_s, np.ndarray)
    assert trace_key(lists) == trace_key(compact)
    scenario = load_seed_scenario()
    config = _config(500.0)
    a = run_trace(lists, config, scenario, seed=4, trace="t")
    b = run_trace(compact, config, scenario, seed=4, trace="t")
    assert dump_summary(a.summary) == dump_summary(b.summary)
    for key, values in a.arrays.items():
        assert np.array_equal(values, b.arrays[key]), key
    assert a.summary["tasks"] == 800 and 0 < a.summary["completed"] < 800


def test_a_task_without_a_call_schedules_no_event(azure_head) -> None:  # noqa: ANN001
    cols = replay_columns(azure_head.head(200))
    scenario = load_seed_scenario()
    ids = [m.id for m in _config(500.0).models]
    counts = {}
    for cap in (1e-9, 500.0):  # a cap no call fits under: every task is budget-rejected
        config = _config(cap)
        world = scenario.realize(0, cols.arrival_s[-1] + 3600.0, ids)
        sink = ResultSink(ids)
        sim = Simulation(config, world, seed=0, sink=sink)
        scheduled = 0
        schedule = sim.env.schedule

        def counting(*args, schedule=schedule, **kw) -> None:  # noqa: ANN002, ANN003
            nonlocal scheduled
            scheduled += 1
            schedule(*args, **kw)

        sim.env.schedule = counting  # type: ignore[method-assign]
        sim.run(cols)
        counts[cap] = (scheduled, sink.arrays())
    # One event starts the run, then one per later arrival instant; no task adds any.
    instants = len(set(cols.arrival_s)) - (cols.arrival_s[0] <= 0.0)
    scheduled, arrays = counts[1e-9]
    assert scheduled == 1 + instants
    assert not arrays["success"].any() and arrays["budget_hit"].all()
    assert (arrays["latency_s"] == 0.0).all()
    # With calls, every task waits on at least one event of its own.
    assert counts[500.0][0] >= 1 + instants + 200


def test_the_collector_is_restored_after_a_run_even_a_failed_one(azure_head) -> None:  # noqa: ANN001
    cols = replay_columns(azure_head.head(50))
    config, scenario = _config(500.0), load_seed_scenario()
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    run_trace(cols, config, scenario, seed=0)
    assert gc.isenabled() and gc.get_freeze_count() == frozen

    class Broken(ResultSink):
        def add(self, r) -> None:  # noqa: ANN001
            raise RuntimeError("sink broke")

    with pytest.raises(RuntimeError, match="sink broke"):
        run_trace(cols, config, scenario, seed=0, make_sink=Broken)
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    gc.disable()
    try:
        run_trace(cols, config, scenario, seed=0)
        assert not gc.isenabled()  # a collector that was off stays off
    finally:
        gc.enable()


def test_trace_columns_are_read_a_chunk_at_a_time() -> None:
    # Ids, types and sizes of 70,000 tasks in compact columns (beyond one 65,536-task
    # chunk) replay with every task finished once, in trace order of arrival.
    n = 70_000
    import polars as pl

    df = pl.DataFrame(
        {
            "task_id": [f"t{i:06d}" for i in range(n)],
            "arrival_s": [float(i) for i in range(n)],
            "task_type": ["json"] * n,
            "prompt_tokens": [10] * n,
            "completion_tokens": [5] * n,
        }
    )
    cols = replay_columns(df, compact=True)
    assert isinstance(cols, ReplayColumns)
    out = run_trace(cols, _config(1e-9), load_seed_scenario(), seed=0)
    started = out.arrays["started_s"]
    # No call fits under the cap: each task finishes as it arrives, in trace order.
    assert np.array_equal(started, np.arange(n, dtype=np.float64))
    assert out.summary["budget_rejections"] == n

"""`sim replay --as-one-stream`: several files through one router, shared state included."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from router import RouterConfig, config_from_dict, load_seed_config
from sim import ReplayColumns, load_seed_scenario, replay, replay_columns, synthesize
from sim.engine.replays import merge_streams


@pytest.fixture(scope="module")
def two_files() -> list[tuple[str, ReplayColumns]]:
    # The same ids (synth-000001, ...) in both files, other arrivals and sizes.
    a = replay_columns(synthesize(n_tasks=300, rate_per_s=0.5, seed=31))
    b = replay_columns(synthesize(n_tasks=300, rate_per_s=0.5, seed=32))
    assert set(a.task_ids) == set(b.task_ids)
    return [("monday.parquet", a), ("tuesday.parquet", b)]


def capped(cap: float) -> RouterConfig:
    data = load_seed_config().model_dump(mode="json")
    data["budget"]["daily_cap_usd"] = cap
    return config_from_dict(data)


def test_merge_streams_orders_by_arrival_and_namespaces_ids(
    two_files: list[tuple[str, ReplayColumns]],
) -> None:
    merged, files, prefixes = merge_streams(two_files)
    assert prefixes == ["monday", "tuesday"]
    assert len(merged) == 600 and len(set(merged.task_ids)) == 600
    assert merged.arrival_s == sorted(merged.arrival_s)
    assert {t.split("/")[0] for t in merged.task_ids} == {"monday", "tuesday"}
    for tid, f in zip(merged.task_ids, files, strict=True):
        assert tid.startswith(prefixes[f] + "/")
    # Equal stems: the whole names; equal names: numbered.
    _, _, same_stem = merge_streams([("x.csv", two_files[0][1]), ("x.ndjson", two_files[1][1])])
    assert same_stem == ["x.csv", "x.ndjson"]
    _, _, same_name = merge_streams([("x.csv", two_files[0][1]), ("x.csv", two_files[1][1])])
    assert same_name == ["x.csv#0", "x.csv#1"]


def test_one_stream_shares_the_budget_that_separate_runs_each_start_afresh(
    two_files: list[tuple[str, ReplayColumns]], tmp_path: Path
) -> None:
    scenario = load_seed_scenario()
    free = replay(traces=two_files, config=capped(500.0), scenario=scenario, figures=False)
    spends = [free.summary["per_trace"][name]["cost_usd"] for name, _ in two_files]
    # A daily cap neither file reaches alone, but the two together would.
    cap = 1.05 * max(spends)
    assert sum(spends) > 1.5 * cap

    per_file = replay(traces=two_files, config=capped(cap), scenario=scenario, figures=False)
    assert per_file.summary["mode"] == "per_file"
    # Each file is a run with a fresh ledger: neither hits the cap, together ~2x it.
    assert per_file.summary["cost_usd"] == pytest.approx(sum(spends))
    assert per_file.summary["cost_usd"] > 1.5 * cap
    assert per_file.summary["budget_rejections"] == 0

    stream = replay(
        traces=two_files,
        config=capped(cap),
        scenario=scenario,
        one_stream=True,
        out=tmp_path / "out",
        figures=False,
    )
    s = stream.summary
    assert s["mode"] == "one_stream"
    assert s["tasks"] == 600
    assert s["cost_usd"] <= cap  # one ledger: the cap holds for the whole stream
    assert s["budget_rejections"] > 0
    assert s["failures"].get("no_candidate", 0) > 0
    # Per-file figures come from the same run, split by each task's file.
    rows = s["per_trace"]
    assert list(rows) == ["monday.parquet", "tuesday.parquet"]
    assert [rows[n]["tasks"] for n in rows] == [300, 300]
    assert sum(rows[n]["cost_usd"] for n in rows) == pytest.approx(s["cost_usd"])
    assert sum(rows[n]["completed"] for n in rows) == s["completed"]
    assert sum(rows[n]["budget_rejections"] for n in rows) == s["budget_rejections"]
    spent = sum(m["spend"] for r in rows.values() for m in r["per_model"].values())
    assert spent == pytest.approx(s["cost_usd"])
    # The per-task records name each task's file, with the namespaced id.
    table = pq.read_table(tmp_path / "out" / "tasks.parquet").to_pydict()
    assert len(table["task_id"]) == 600
    for trace, tid in zip(table["trace"], table["task_id"], strict=True):
        assert tid.startswith({"monday.parquet": "monday/", "tuesday.parquet": "tuesday/"}[trace])


def test_one_stream_with_replications_and_one_file(
    two_files: list[tuple[str, ReplayColumns]],
) -> None:
    one = two_files[:1]
    stream = replay(traces=one, one_stream=True, replications=2, seed=3, figures=False)
    files = replay(traces=one, replications=2, seed=3, figures=False)
    assert stream.summary["mode"] == "one_stream" and stream.summary["replications"] == 2
    assert len(stream.runs) == 2 and "ci" in stream.summary
    # One file: the same tasks through one router either way (ids prefixed, so the
    # world's draws differ); the per-file breakdown is the whole stream.
    assert stream.summary["tasks"] == files.summary["tasks"] == 300
    row = stream.summary["per_trace"]["monday.parquet"]
    assert row["tasks"] == 300 and row["cost_usd"] == stream.summary["cost_usd"]

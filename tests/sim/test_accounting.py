"""Outcome accounting checked against the per-task records it summarises."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from router import load_seed_config
from sim import load_seed_scenario, load_traces, replay

TRACES = Path(__file__).resolve().parents[2] / "traces"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("acct") / "out"
    traces = load_traces([TRACES / "azure_code_2023.parquet"])
    report = replay(
        traces=traces,
        config=load_seed_config(),
        scenario=load_seed_scenario(),
        seed=3,
        out=out,
        figures=False,
    )
    return report.summary, pl.read_parquet(out / "tasks.parquet")


def test_fallback_rate_is_the_share_finished_by_a_non_first_candidate(run) -> None:
    summary, tasks = run
    by_other = tasks.filter(pl.col("success") & (pl.col("model") != pl.col("first_candidate")))
    assert by_other.height > 0
    assert summary["fallback_rate"] == pytest.approx(by_other.height / tasks.height, abs=1e-12)
    # Including tasks whose first candidate was skipped, not called (breaker, cost, ...).
    skipped_first = by_other.filter(~pl.col("models_tried").str.contains(r"^[^,]*,"))
    assert summary["fallback_rate"] >= skipped_first.height / tasks.height


def test_latency_is_over_successes_and_failures_are_explained(run) -> None:
    summary, tasks = run
    ok = tasks.filter(pl.col("success"))["latency_s"]
    bad = tasks.filter(~pl.col("success"))
    assert summary["latency_mean_s"] == pytest.approx(ok.mean(), rel=1e-9)
    assert summary["latency_p95_s"] == pytest.approx(ok.quantile(0.95, "linear"), rel=1e-9)
    assert summary["time_to_failure_mean_s"] == pytest.approx(bad["latency_s"].mean(), rel=1e-9)
    counts = dict(bad.group_by("error").len().iter_rows())
    assert summary["failures"] == counts
    assert summary["failed"] == bad.height
    per_route = dict(tasks.group_by("route").agg(pl.col("success").sum()).iter_rows())
    assert {r: v["completed"] for r, v in summary["per_route"].items()} == per_route

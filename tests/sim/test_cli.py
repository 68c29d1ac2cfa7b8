"""The `sim` CLI: help for every command, the JSON contract, bad input -> one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from sim.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def sim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, cwd=cwd or ROOT
    )


@pytest.mark.parametrize("command", ["replay", "compare", "synth", "import-azure", "init"])
def test_every_command_has_help(command: str) -> None:
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0 and "Usage" in res.output


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = pl.read_parquet(ROOT / "traces" / "azure_code_2023.parquet").head(300)
    path = tmp_path_factory.mktemp("t") / "small.parquet"
    src.write_parquet(path)
    return path


def test_replay_json_prints_exactly_the_summary(small_trace: Path, tmp_path: Path) -> None:
    res = sim("replay", str(small_trace), "--json", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    for key in (
        "tasks",
        "completed",
        "completion_rate",
        "cost_usd",
        "cost_per_task",
        "cost_per_success",
        "latency_mean_s",
        "latency_p50_s",
        "latency_p95_s",
        "latency_p99_s",
        "throughput_per_hour",
        "fallback_rate",
        "breaker_trips",
        "budget_rejections",
        "per_model",
        "per_trace",
    ):
        assert key in summary
    assert summary["tasks"] == 300
    assert list(summary["per_trace"]) == ["small.parquet"]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [
        "completion_vs_cost.png",
        "latency_cdf.png",
        "outage_timeline.png",
        "spend_over_time.png",
        "summary.json",
        "tasks.parquet",
    ]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    tasks = pl.read_parquet(tmp_path / "out" / "tasks.parquet")
    assert tasks.height == 300 and tasks["success"].sum() == summary["completed"]


def test_replications_add_confidence_intervals(small_trace: Path) -> None:
    res = sim("replay", str(small_trace), "--json", "--replications", "3")
    summary = json.loads(res.stdout)
    assert summary["replications"] == 3 and set(summary["ci"]) >= {"completion_rate", "cost_usd"}


def test_bad_trace_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "task_id,arrival_s,task_type,prompt_tokens,completion_tokens\n"
        "a,1.0,json,10,5\nb,-3,json,10,5\n"
    )
    res = sim("replay", str(bad))
    assert res.returncode == 2
    assert res.stderr == (
        f"error: {bad}: row 2, column 'arrival_s': expected a non-negative number, got '-3'\n"
    )
    assert res.stdout == ""


def test_unknown_model_in_chain_is_one_line_exit_2(tmp_path: Path, small_trace: Path) -> None:
    cfg = (ROOT / "router" / "data" / "seed_config.yaml").read_text()
    bad = tmp_path / "c.yaml"
    bad.write_text(
        cfg.replace("chain: [mistral-large-3, claude-sonnet-4]", "chain: [mistral-large-3, gpt-9]")
    )
    res = sim("replay", str(small_trace), "--config", str(bad))
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {bad}: routes.sql_query.chain[1]: unknown model 'gpt-9'")
    assert res.stderr.count("\n") == 1


def test_failed_replay_leaves_the_previous_output_intact(tmp_path: Path, small_trace: Path) -> None:
    out = tmp_path / "out"
    assert sim("replay", str(small_trace), "--out", str(out)).returncode == 0
    before = (out / "summary.json").read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("task_id,arrival_s\n1,2\n")
    assert sim("replay", str(bad), "--out", str(out)).returncode == 2
    assert (out / "summary.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_synth_is_seeded_and_init_copies(tmp_path: Path) -> None:
    for name in ("a", "b"):
        res = sim("synth", str(tmp_path / f"{name}.parquet"), "--tasks", "500", "--seed", "4")
        assert res.returncode == 0, res.stderr
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert sim("synth", str(tmp_path / "c.parquet"), "--tasks", "5", "--rate", "-1").returncode == 2
    assert sim("init", str(tmp_path / "cfg")).returncode == 0
    assert sorted(p.name for p in (tmp_path / "cfg").iterdir()) == ["router.yaml", "scenario.yaml"]
    res = sim(
        "replay",
        str(tmp_path / "a.parquet"),
        "--config",
        str(tmp_path / "cfg/router.yaml"),
        "--scenario",
        str(tmp_path / "cfg/scenario.yaml"),
        "--json",
    )
    assert res.returncode == 0 and json.loads(res.stdout)["tasks"] == 500
    again = sim("init", str(tmp_path / "cfg"))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_usage_errors_are_one_line_too(small_trace: Path) -> None:
    res = sim("replay", str(small_trace), "--seed", "abc")
    assert res.returncode == 2
    assert res.stderr.startswith("error: Invalid value for '--seed'")
    assert res.stderr.count("\n") == 1

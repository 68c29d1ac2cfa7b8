"""The `sim` CLI: help for every command, the JSON contract, bad input -> one line, exit 2."""

from __future__ import annotations

import json
import re
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


COMMANDS = [
    "replay",
    "compare",
    "synth",
    "import-azure",
    "import-litellm",
    "import-llmperf",
    "import-aider",
    "import-csv",
    "calibrate",
    "validate",
    "init",
    "serve",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0 and "Usage" in res.output
    # Help is read in a terminal: no reST markup from docstrings.
    for markup in ("``", ":class:", ":func:", ":meth:", ":mod:"):
        assert markup not in res.output, (command, markup)


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
        ".costroute-output",
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


def test_version() -> None:
    from importlib.metadata import version

    from router import native

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output == f"sim (costroute) {version('costroute')}, {native.build()}\n"
    assert native.build() == "compiled" or native.build().startswith("pure (")


def test_boolean_options_are_flags_with_a_negative() -> None:
    for command, flags in (("replay", ("--json", "--no-json")), ("serve", ("--quiet",))):
        out = runner.invoke(app, [command, "--help"], terminal_width=200).output
        for flag in flags:
            line = next(ln for ln in out.splitlines() if f" {flag} " in ln)
            assert "<bool>" not in line, line  # a flag, not an option taking a value


def test_no_json_is_the_table(small_trace: Path) -> None:
    res = runner.invoke(app, ["replay", str(small_trace), "--no-json"])
    assert res.exit_code == 0
    assert "Replay summary" in res.stdout and not res.stdout.lstrip().startswith("{")


def test_synth_names_the_flags_not_the_python_arguments(tmp_path: Path) -> None:
    res = runner.invoke(app, ["synth", str(tmp_path / "a.parquet")])
    assert res.exit_code == 2
    assert res.stderr == (
        "error: --tasks or --duration-s is required (e.g. --tasks 1000, or --duration-s 86400)\n"
    )
    res = runner.invoke(app, ["synth", str(tmp_path / "a.parquet"), "--duration-s", "-5"])
    assert res.stderr == "error: --duration-s: expected a finite number > 0, got -5.0\n"
    res = runner.invoke(app, ["synth", str(tmp_path / "a.parquet"), "--tasks", "0"])
    assert res.stderr == "error: --tasks: expected an integer >= 1, got 0\n"
    # A missing directory is created, as for --out.
    res = runner.invoke(app, ["synth", str(tmp_path / "new" / "a.parquet"), "--tasks", "10"])
    assert res.exit_code == 0 and (tmp_path / "new" / "a.parquet").is_file()


def test_missing_files_point_to_sim_init(tmp_path: Path, small_trace: Path) -> None:
    hint = "`sim init DIR` writes editable copies of the seed config and scenario"
    res = runner.invoke(app, ["replay", str(small_trace), "--config", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2
    assert res.stderr == f"error: --config: {tmp_path / 'nope.yaml'}: no such file; {hint}\n"
    res = runner.invoke(app, ["replay", str(small_trace), "--scenario", str(tmp_path / "s.yaml")])
    assert res.stderr == f"error: --scenario: {tmp_path / 's.yaml'}: no such file; {hint}\n"


def test_a_config_model_the_scenario_lacks_suggests_scenario(
    tmp_path: Path, small_trace: Path
) -> None:
    cfg = (ROOT / "router" / "data" / "seed_config.yaml").read_text()
    bad = tmp_path / "c.yaml"
    bad.write_text(cfg.replace("qwen-3.6-plus", "qwen-9"))
    res = runner.invoke(app, ["replay", str(small_trace), "--config", str(bad)])
    assert res.exit_code == 2, res.stderr
    assert res.stderr.startswith(
        "error: --scenario: the seed scenario has no model 'qwen-9' of the config (it has: "
    )
    assert res.stderr.endswith(
        "pass --scenario with a scenario that models every config model "
        "(`sim init DIR` writes editable copies of the seed config and scenario)\n"
    )


def test_replay_warns_when_prices_disagree(tmp_path: Path, small_trace: Path) -> None:
    scn = (ROOT / "sim" / "data" / "seed_scenario.yaml").read_text()
    assert scn.count("cost_per_task: 0.0003 ") == 1
    path = tmp_path / "s.yaml"
    path.write_text(scn.replace("cost_per_task: 0.0003 ", "cost_per_task: 0.0004 "))
    res = runner.invoke(app, ["replay", str(small_trace), "--scenario", str(path), "--json"])
    assert res.exit_code == 0, res.stderr
    assert res.stderr == (
        f"warning: grok-4.20.cost_per_task is 0.0003 in the seed config but 0.0004 in {path}; "
        "the simulator charges the scenario's price, the router plans with the config's\n"
    )
    json.loads(res.stdout)
    # The seed pair agrees: no warning.
    assert runner.invoke(app, ["replay", str(small_trace), "--json"]).stderr == ""


def test_price_warning_lists_the_others() -> None:
    from router import load_seed_config
    from sim.world.consistency import price_mismatches, price_warning
    from sim.world.scenario import load_seed_scenario

    cfg, scn = load_seed_config(), load_seed_scenario()
    assert price_mismatches(cfg, scn) == [] and price_warning(cfg, scn) is None
    models = {
        mid: spec.model_copy(update={"cost_per_task": (spec.cost_per_task or 0) + 1})
        for mid, spec in scn.models.items()
    }
    line = price_warning(cfg, scn.model_copy(update={"models": models}))
    assert line is not None and "\n" not in line
    assert line.startswith("warning: grok-4.20.cost_per_task is 0.0003 in the config but 1.0003")
    assert line.endswith(
        "[+12 more: grok-4.1-fast.cost_per_task, ring-2.6.cost_per_task, "
        "deepseek-v4-flash.cost_per_task, ...]"
    )


def test_serve_port_in_use_suggests_port_0() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "sim.cli", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
    assert res.returncode == 2
    assert res.stderr == (
        f"error: --port: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "try --port 0 (any free port)\n"
    )


def test_request_log_line() -> None:
    import io

    from sim.cli import request_logger

    buf = io.StringIO()
    log = request_logger(buf)
    log("POST", "/v1/chat/completions", "grok-4.20", 200, 812.44)
    log("POST", "/v1/chat/completions", "gpt-5.4", None, 30000.0)
    log("GET", "/v1/models", None, 200, 0.2)
    assert buf.getvalue() == (
        "POST /v1/chat/completions model=grok-4.20 status=200 812.4 ms\n"
        "POST /v1/chat/completions model=gpt-5.4 status=- 30000.0 ms\n"
        "GET /v1/models model=- status=200 0.2 ms\n"
    )


def _serve_and_call(*flags: str) -> tuple[str, str]:
    """Run `sim serve --port 0`, make two requests, stop it; its stdout and stderr."""
    import signal

    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "serve", "--port", "0", "--time-scale", "0.001", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        body = {"model": "grok-4.20", "messages": [{"role": "user", "content": "SECRET"}]}
        headers = {"Authorization": "Bearer sk-SECRET", "X-Task-Type": "json"}
        httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=30)
        httpx.get(f"{url}/models", timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        out, errs = proc.communicate(timeout=30)
    return url, errs


def test_serve_logs_one_line_per_request_unless_quiet() -> None:
    import inspect

    from sim.twin.server import TwinServer

    if "on_request" not in inspect.signature(TwinServer).parameters:
        pytest.skip("TwinServer has no on_request hook yet (sim/twin/server.py)")
    _, errs = _serve_and_call()
    lines = errs.splitlines()
    assert len(lines) == 2, errs
    assert re.fullmatch(
        r"POST /v1/chat/completions model=grok-4\.20 status=(200|429|500|503) \d+\.\d ms",
        lines[0],
    ), lines[0]
    assert re.fullmatch(r"GET /v1/models model=- status=200 \d+\.\d ms", lines[1]), lines[1]
    assert "SECRET" not in errs
    _, quiet = _serve_and_call("--quiet")
    assert quiet == ""


def test_replay_as_one_stream_says_so_and_breaks_down_by_file(
    small_trace: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.parquet"
    pl.read_parquet(small_trace).head(100).write_parquet(other)  # the same task ids
    res = sim("replay", str(small_trace), str(other), "--json", "--as-one-stream")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["mode"] == "one_stream"
    assert summary["tasks"] == 400
    assert {k: v["tasks"] for k, v in summary["per_trace"].items()} == {
        "small.parquet": 300,
        "other.parquet": 100,
    }
    res = sim("replay", str(small_trace), "--json")
    assert json.loads(res.stdout)["mode"] == "per_file"
    res = runner.invoke(app, ["replay", str(small_trace), str(other), "--as-one-stream"])
    assert res.exit_code == 0, res.output
    assert "one stream: 2 file(s) through one router" in res.output


def test_compare_pairs_on_its_own_seed_stream_by_default(small_trace: Path) -> None:
    from router import load_seed_config
    from sim.cli import COMPARE_SEED_OFFSET
    from sim.engine.replays import compare, load_traces

    seed = str(ROOT / "router" / "data" / "seed_config.yaml")
    res = sim("compare", seed, seed, str(small_trace), "--json", "--replications", "2")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    cfg = load_seed_config()
    traces = load_traces([small_trace])
    # seed 0 + 30000 + r: not a study's training (0..), selection (10000..) or reporting
    # (20000..) seeds.
    assert got == compare(cfg, cfg, traces, seed=COMPARE_SEED_OFFSET, replications=2)
    res = sim(
        "compare", seed, seed, str(small_trace), "--json", "--replications", "2",
        "--seed", "4", "--seed-offset", "20000",
    )  # fmt: skip
    assert json.loads(res.stdout) == compare(cfg, cfg, traces, seed=20_004, replications=2)


def test_replay_spread_chooses_how_tasks_meet_the_replicas(small_trace: Path) -> None:
    from sim.engine.replays import dump_summary, load_traces
    from sim.engine.replays import replay as run_replay

    res = sim(
        "replay", str(small_trace), "--json", "--replicas", "3", "--state-delay", "inf",
        "--spread", "random",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    traces = load_traces([small_trace])
    expected = run_replay(traces=traces, replicas=3, state_delay=float("inf"), spread="random")
    assert res.stdout == dump_summary(expected.summary)
    assert json.loads(res.stdout)["spread"] == "random"
    round_robin = run_replay(traces=traces, replicas=3, state_delay=float("inf"))
    assert round_robin.summary["spread"] == "round_robin"
    assert dump_summary(round_robin.summary) != res.stdout  # the spread mattered
    res = sim("replay", str(small_trace), "--replicas", "2", "--spread", "sideways")
    assert res.returncode == 2
    expected_error = "error: --spread: expected 'round_robin' or 'random', got 'sideways'"
    assert res.stderr.strip() == expected_error

"""Importers of real logs (sim.traces) and their `sim import-...` commands.

Each importer runs on a small real slice under tests/data/ (see its README for
sources and licences) and on malformed input: one line on stderr, exit 2, nothing
written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from router.config import load_config
from sim.cli import app
from sim.errors import TraceError
from sim.traces import (
    import_aider,
    import_litellm,
    import_llmperf,
    import_table,
    read_attempts,
)
from sim.traces.azure import import_azure
from sim.traces.tasks import read_trace
from sim.world.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SPEND = DATA / "litellm" / "spend_logs.csv"
LLMPERF = DATA / "llmperf"
AIDER = DATA / "aider" / "polyglot_excerpt.yml"
AZURE = DATA / "azure" / "AzureLLMInferenceTrace_code_head20.csv"

runner = CliRunner()
IMPORT_COMMANDS = ["import-litellm", "import-llmperf", "import-aider", "import-csv"]


def _fails_cleanly(args: list[str], *outputs: Path) -> str:
    """Run ``sim ARGS``; assert exit 2, one line on stderr and no output file; the line."""
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    for out in outputs:
        assert not out.exists(), out
        assert not list(out.parent.glob(f".{out.name}.*")), "temp file left behind"
    return res.stderr


@pytest.mark.parametrize("command", IMPORT_COMMANDS)
def test_every_import_command_has_help(command: str) -> None:
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0 and "Usage" in res.output
    for markup in ("``", ":class:", ":func:", ":meth:", ":mod:"):
        assert markup not in res.output, (command, markup)


# --------------------------------------------------------------------- LiteLLM


def test_litellm_spend_logs_become_attempts() -> None:
    df = import_litellm(SPEND)
    assert df.height == 9  # 10 rows, one cache hit skipped
    assert "chatcmpl-A8" not in df.get_column("request_id").to_list()
    rows = {r["request_id"]: r for r in df.to_dicts()}
    ok = rows["chatcmpl-A1"]
    assert (ok["model"], ok["provider_model"], ok["outcome"]) == (
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "ok",
    )
    assert ok["start_s"] == 0.0 and ok["latency_s"] == pytest.approx(2.75)
    assert ok["ttft_s"] == pytest.approx(0.49)  # completionStartTime - startTime
    assert (ok["prompt_tokens"], ok["completion_tokens"], ok["cost_usd"]) == (812, 96, 0.00231)
    assert ok["status"] is None and ok["task_id"] == "chatcmpl-A1" and ok["attempt"] == 1
    assert rows["chatcmpl-A4"]["ttft_s"] is None  # completionStartTime == endTime: not streamed
    expected = {
        "chatcmpl-A2": ("rate_limited", 429),
        "a6d0c3e2-5b1f-4f7e-9e0a-000000000005": ("timeout", 408),
        "a6d0c3e2-5b1f-4f7e-9e0a-000000000007": ("context_length", 400),
        "a6d0c3e2-5b1f-4f7e-9e0a-000000000009": ("server_error", 529),
    }
    for rid, (outcome, status) in expected.items():
        assert (rows[rid]["outcome"], rows[rid]["status"]) == (outcome, status)
        assert rows[rid]["prompt_tokens"] is None  # LiteLLM's 0 on a failure is not usage
    assert rows["a6d0c3e2-5b1f-4f7e-9e0a-000000000005"]["latency_s"] == pytest.approx(60.004)
    assert df.get_column("start_s").is_sorted()


def test_litellm_task_column_groups_retries_and_fallbacks() -> None:
    df = import_litellm(SPEND, task_column="session_id", task_type="bug_patch")
    s7 = df.filter(pl.col("task_id") == "sess-7")
    assert s7.select("model", "attempt", "outcome").rows() == [
        ("claude-sonnet", 1, "server_error"),
        ("claude-sonnet", 2, "ok"),
    ]
    s2 = df.filter(pl.col("task_id") == "sess-2")
    assert s2.select("model", "attempt").rows() == [("gpt-4o", 1), ("claude-sonnet", 1)]
    assert set(df.get_column("task_type")) == {"bug_patch"}


def test_litellm_json_export_reads_like_the_csv(tmp_path: Path) -> None:
    rows = pl.read_csv(SPEND, infer_schema=False).to_dicts()
    for r in rows:
        r["metadata"] = json.loads(r["metadata"])  # the API returns it as an object
        r["spend"] = float(r["spend"])
    path = tmp_path / "page.json"
    path.write_text(json.dumps({"data": rows, "total": len(rows), "page": 1}))
    assert import_litellm(path).equals(import_litellm(SPEND))


def test_sim_import_litellm_writes_attempts_and_tasks(tmp_path: Path) -> None:
    out, tasks = tmp_path / "a" / "attempts.parquet", tmp_path / "tasks.csv"
    res = runner.invoke(
        app,
        [
            "import-litellm",
            str(SPEND),
            str(out),
            "--tasks",
            str(tasks),
            "--task-column",
            "session_id",
        ],
    )
    assert res.exit_code == 0, res.stderr
    attempts = read_attempts(out)
    trace = read_trace(tasks)
    assert attempts.height == 9 and trace.height == 6
    assert set(trace.get_column("task_id")) == set(attempts.get_column("task_id"))
    assert trace.filter(pl.col("task_id") == "sess-5").get_column("error_kind").to_list() == [
        "context_length"
    ]
    assert "hashed-key-redacted" not in out.read_bytes().decode("latin-1")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda df: df.drop("endTime"), "missing LiteLLM_SpendLogs column(s) 'endTime'"),
        (
            lambda df: df.with_columns(
                pl.when(pl.int_range(pl.len()) == 3)
                .then(pl.lit("yesterday"))
                .otherwise(pl.col("startTime"))
                .alias("startTime")
            ),
            "row 4, column 'startTime': expected an ISO-8601 timestamp",
        ),
        (
            lambda df: df.with_columns(
                pl.when(pl.int_range(pl.len()) == 1)
                .then(pl.lit("-3"))
                .otherwise(pl.col("spend"))
                .alias("spend")
            ),
            "row 2, column 'spend': expected a non-negative number, got '-3'",
        ),
        (
            lambda df: df.with_columns(pl.col("request_id").replace("chatcmpl-A4", "chatcmpl-A1")),
            "row 4, column 'request_id': expected a unique request id, got 'chatcmpl-A1' again",
        ),
        (
            lambda df: df.with_columns(
                pl.col("endTime").replace("2025-03-04 09:00:02.870+00", "2025-03-04 08:00:00+00")
            ),
            "row 1, column 'endTime': expected a time at or after the row's startTime",
        ),
    ],
)
def test_sim_import_litellm_malformed_input(tmp_path: Path, edit: object, message: str) -> None:
    bad = tmp_path / "bad.csv"
    edit(pl.read_csv(SPEND, infer_schema=False)).write_csv(bad)  # type: ignore[operator]
    out, tasks = tmp_path / "out.parquet", tmp_path / "tasks.parquet"
    line = _fails_cleanly(["import-litellm", str(bad), str(out), "--tasks", str(tasks)], out, tasks)
    assert line.startswith(f"error: {bad}: {message}"), line


def test_sim_import_litellm_refuses_bad_outputs_before_reading(tmp_path: Path) -> None:
    out = tmp_path / "out.xlsx"
    line = _fails_cleanly(["import-litellm", str(SPEND), str(out)], out)
    assert "unknown format '.xlsx'" in line
    same = tmp_path / "a.csv"
    line = _fails_cleanly(["import-litellm", str(SPEND), str(same), "--tasks", str(same)], same)
    assert "the same file as OUT" in line


# --------------------------------------------------------------------- llmperf


def test_llmperf_results_become_attempts() -> None:
    df = import_llmperf(LLMPERF)
    assert df.height == 19
    assert df.group_by("model").len().sort("model").rows() == [
        ("bedrock_13b", 6),
        ("lepton_7b", 8),
        ("together_13b", 5),
    ]
    counts = dict(df.group_by("outcome").len().rows())
    assert counts == {"ok": 12, "rate_limited": 4, "validation": 2, "connection": 1}
    assert (
        df.filter(pl.col("outcome") == "rate_limited").get_column("status").to_list() == [429] * 4
    )
    failed = df.filter(pl.col("outcome").is_in(["rate_limited", "connection"]))
    assert failed.get_column("ttft_s").null_count() == failed.height  # llmperf's 0 is "unknown"
    assert failed.get_column("completion_tokens").null_count() == failed.height
    first = df.filter(pl.col("task_id") == "lepton_7b-0001").row(0, named=True)
    raw = json.loads((LLMPERF / "individual" / "lepton_7b.json").read_text())[0]
    assert first["latency_s"] == raw["end_to_end_latency_s"] and first["ttft_s"] == raw["ttft_s"]
    assert first["prompt_tokens"] == 550 and first["provider_model"] == "llama2-7b"
    assert df.get_column("cost_usd").null_count() == 19
    # Concurrency 5 (the summaries): a run's first five requests start together, the
    # sixth when the first of them ends.
    bedrock = df.filter(pl.col("model") == "bedrock_13b").sort("task_id")
    starts = bedrock.get_column("start_s").to_list()
    assert starts[:5] == [starts[0]] * 5
    assert starts[5] == pytest.approx(starts[0] + min(bedrock.get_column("latency_s")[:5]))


def test_llmperf_one_file_and_llmperfs_own_layout(tmp_path: Path) -> None:
    one = import_llmperf(LLMPERF / "individual" / "together_13b.json", concurrency=1)
    assert one.get_column("start_s").to_list()[:2] == [0.0, pytest.approx(1.631794, abs=1e-6)]
    run = tmp_path / "results"
    run.mkdir()
    (run / "m_550_150_individual_responses.json").write_text(
        (LLMPERF / "individual" / "lepton_7b.json").read_text()
    )
    (run / "m_550_150_summary.json").write_text(
        json.dumps({"model": "x/llama", "num_concurrent_requests": 2})
    )
    df = import_llmperf(run)
    assert set(df.get_column("model")) == {"m_550_150"}
    assert set(df.get_column("provider_model")) == {"x/llama"}


def test_sim_import_llmperf(tmp_path: Path) -> None:
    out = tmp_path / "llmperf.ndjson"
    res = runner.invoke(app, ["import-llmperf", str(LLMPERF), str(out)])
    assert res.exit_code == 0, res.stderr
    assert read_attempts(out).height == 19
    assert "GEN_TEXT" not in out.read_text() and "poem" not in out.read_text()


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"error_code": None, "ttft_s": 1.0}], "row 1: missing llmperf field(s) 'end_to_end"),
        ('{"not": "a list"}', "expected a JSON array of llmperf requests, got dict"),
        ("[1, 2", "not valid JSON"),
        (
            [
                {
                    "error_code": None,
                    "ttft_s": 0.5,
                    "end_to_end_latency_s": -2,
                    "number_input_tokens": 5,
                    "number_output_tokens": 5,
                }
            ],
            "row 1, field 'end_to_end_latency_s': expected a number >= 0, got -2",
        ),
    ],
)
def test_sim_import_llmperf_malformed_input(tmp_path: Path, records: object, message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(records if isinstance(records, str) else json.dumps(records))
    out = tmp_path / "out.parquet"
    line = _fails_cleanly(["import-llmperf", str(bad), str(out)], out)
    assert line.startswith(f"error: {bad}: {message}"), line
    line = _fails_cleanly(["import-llmperf", str(LLMPERF), str(out), "--concurrency", "0"], out)
    assert line == "error: --concurrency: expected None or an integer >= 1, got 0\n"


# ----------------------------------------------------------------------- Aider


def test_aider_leaderboard_becomes_a_scenario_and_a_catalog() -> None:
    result = import_aider(AIDER)
    assert result.skipped == [
        (6, "qwen-max-2025-01-25", "no total_cost (the scenario needs a price)")
    ]
    ids = [m.id for m in result.models]
    assert ids == [
        "gemini-2.0-pro-exp-02-05",
        "gpt-4o-mini-2024-07-18",
        "claude-3-5-sonnet-20241022",
        "qwen2.5-coder-32b-instruct",
        "qwen2.5-coder-32b-instruct-whole",  # the same name again: its edit format added
        "o3-high",
    ]
    sonnet = result.models[2]
    assert sonnet.provider == "anthropic" and sonnet.completion == 0.222
    assert sonnet.retry_success == pytest.approx((51.6 - 22.2) / (100 - 22.2), abs=1e-6)
    assert sonnet.retry_benefit_pp == pytest.approx(29.4)
    answers = 225 * (2 - 0.222) + 1  # one malformed response
    assert sonnet.answers == pytest.approx(answers)
    assert sonnet.malformed_rate == pytest.approx(1 / answers, abs=1e-6)
    assert sonnet.latency_mean_s == pytest.approx(21.4 * 225 / answers, abs=1e-5)
    assert sonnet.cost_per_answer == pytest.approx(14.4063 / answers, abs=1e-8)
    gemini = result.models[0]
    assert gemini.status == "preview" and gemini.provider == "gemini"
    assert 0 < gemini.server_error_rate < 1  # 430 API errors on 404 answers: a share, < 1
    assert result.chain == [
        "o3-high",
        "claude-3-5-sonnet-20241022",
        "qwen2.5-coder-32b-instruct-whole",
    ]
    spec = result.scenario.models["claude-3-5-sonnet-20241022"]
    assert spec.completion.default == 0.222 and spec.cost_per_task == sonnet.cost_per_answer
    assert "a second try passes 0.3779 of first-try failures" in result.scenario_yaml
    assert result.config.model("o3-high").completion_rate == 0.4
    assert result.config.model("gemini-2.0-pro-exp-02-05").status == "preview"
    assert import_aider(AIDER, pass_rate=2).models[2].completion == 0.516


def test_sim_import_aider_writes_files_the_loaders_accept(tmp_path: Path) -> None:
    scn, cat = tmp_path / "scenario.yaml", tmp_path / "cfg" / "router.yaml"
    res = runner.invoke(
        app, ["import-aider", str(AIDER), "--scenario", str(scn), "--catalog", str(cat)]
    )
    assert res.exit_code == 0, res.stderr
    assert "skipped entry 6 'qwen-max-2025-01-25'" in res.stderr
    scenario, config = load_scenario(scn), load_config(cat)
    assert set(scenario.models) == {m.id for m in config.models}
    assert config.default_route == "default" and len(config.routes["default"].chain) == 3
    assert scn.read_text().startswith("# Scenario imported by `sim import-aider`")


def test_sim_import_aider_malformed_input(tmp_path: Path) -> None:
    entries = yaml.safe_load(AIDER.read_text())
    del entries[2]["pass_rate_1"]
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(entries))
    scn, cat = tmp_path / "s.yaml", tmp_path / "c.yaml"
    args = ["import-aider", str(bad), "--scenario", str(scn), "--catalog", str(cat)]
    assert _fails_cleanly(args, scn, cat) == f"error: {bad}: entry 3: missing field 'pass_rate_1'\n"
    entries = yaml.safe_load(AIDER.read_text())
    entries[0]["pass_rate_2"] = 120
    bad.write_text(yaml.safe_dump(entries))
    line = _fails_cleanly(args, scn, cat)
    assert (
        line
        == f"error: {bad}: entry 1, field 'pass_rate_2': expected a number in [0, 100], got 120\n"
    )
    bad.write_text("- model: x\n  test_cases: [1\n")
    assert "invalid YAML at line" in _fails_cleanly(args, scn, cat)
    line = _fails_cleanly(
        [*args[:2], "--scenario", str(scn), "--catalog", str(tmp_path / "c.json")], scn
    )
    assert "--catalog" in line
    line = _fails_cleanly([*args, "--pass-rate", "3"], scn, cat)
    assert line == "error: --pass-rate: expected 1 or 2, got 3\n"


# ------------------------------------------------------------------ generic CSV


def test_mapped_azure_csv_matches_the_azure_importer() -> None:
    mapping = {
        "TIMESTAMP": "arrival_s",
        "ContextTokens": "prompt_tokens",
        "GeneratedTokens": "completion_tokens",
    }
    df = import_table(AZURE, mapping, time_format="iso", task_type="json")
    reference = import_azure(AZURE, seed=0)
    assert df.height == 20
    assert df.get_column("arrival_s").to_list() == reference.get_column("arrival_s").to_list()
    assert df.get_column("task_id")[0] == "AzureLLMInferenceTrace_code_head20-000001"
    assert set(df.get_column("task_type")) == {"json"}


def test_sim_import_csv_trace_and_attempts(tmp_path: Path) -> None:
    out = tmp_path / "trace.parquet"
    res = runner.invoke(
        app,
        [
            "import-csv", str(AZURE), str(out), "--time-format", "iso",
            "--map", "TIMESTAMP=arrival_s,ContextTokens=prompt_tokens",
            "--map", "GeneratedTokens=completion_tokens",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert read_trace(out).height == 20
    src = tmp_path / "calls.csv"
    src.write_text(
        "ts_ms,req,llm,ms,result,code\n"
        "1714564800500,r1,a,1500,timeout,\n"
        "1714564800000,r1,b,800,ok,200\n"
        "1714564802000,r2,a,250,ok,200\n"
    )
    out = tmp_path / "attempts.ndjson"
    res = runner.invoke(
        app,
        [
            "import-csv", str(src), str(out), "--attempts", "--time-format", "epoch_ms",
            "--map", "ts_ms=start_s,req=task_id,llm=model,ms=latency_s,result=outcome,code=status",
            "--units", "latency=ms",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    df = read_attempts(out)
    assert df.select("task_id", "model", "attempt", "start_s", "latency_s").rows() == [
        ("r1", "b", 1, 0.0, 0.8),
        ("r1", "a", 1, 0.5, 1.5),
        ("r2", "a", 1, 2.0, 0.25),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--map", "TIMESTAMP=arival_s"],
            "error: --map: unknown target 'arival_s' for 'TIMESTAMP' (did you mean 'arrival_s'?",
        ),
        (["--map", "Timestamp=arrival_s"], "error: --map: {src}: no column 'Timestamp' (found: "),
        (["--map", "TIMESTAMP"], "error: --map: expected name=value pairs, got 'TIMESTAMP'"),
        (
            ["--map", "TIMESTAMP=arrival_s", "--units", "latency=ms"],
            "error: --units: 'latency' is not mapped",
        ),
        (
            ["--map", "TIMESTAMP=arrival_s,ContextTokens=prompt_tokens",
             "--map", "GeneratedTokens=completion_tokens", "--time-format", "epoch"],
            "error: {src}: row 1, column 'TIMESTAMP': expected Unix seconds like",
        ),
        (
            ["--map", "TIMESTAMP=arrival_s", "--time-format", "iso"],
            "error: {src}: missing required columns 'prompt_tokens', 'completion_tokens'",
        ),
        (
            ["--map", "TIMESTAMP=arrival_s", "--time-format", "unix"],
            "error: --time-format: expected",
        ),
    ],
)  # fmt: skip
def test_sim_import_csv_bad_mappings(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out.csv"
    line = _fails_cleanly(["import-csv", str(AZURE), str(out), *args], out)
    assert line.startswith(message.format(src=AZURE)), line


def test_import_table_names_the_source_column_of_a_bad_value(tmp_path: Path) -> None:
    src = tmp_path / "t.csv"
    src.write_text("t,n,m\n0,5,1\n1,-5,1\n")
    mapping = {"t": "arrival_s", "n": "prompt_tokens", "m": "completion_tokens"}
    with pytest.raises(TraceError) as info:
        import_table(src, mapping)
    assert str(info.value) == (
        f"{src}: row 2, column 'n' (mapped to 'prompt_tokens'): expected a non-negative "
        f"integer, got '-5'"
    )


def test_a_real_subprocess_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    res = subprocess.run(
        [sys.executable, "-m", "sim.cli", "import-llmperf", str(tmp_path / "nope"), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 2
    assert res.stderr == f"error: {tmp_path / 'nope'}: no such file or directory\n"
    assert not out.exists()


def test_litellm_parquet_export_with_typed_columns(tmp_path: Path) -> None:
    df = pl.read_csv(SPEND, infer_schema=False)
    for c in ("startTime", "endTime", "completionStartTime"):
        df = df.with_columns(
            pl.col(c).str.replace(r"\+00$", "+00:00").str.to_datetime(time_zone="UTC")
        )
    df = df.with_columns(
        pl.col("spend").cast(pl.Float64),
        pl.col("prompt_tokens").cast(pl.Int64),
        pl.col("completion_tokens").cast(pl.Int64),
    )
    df.write_parquet(tmp_path / "spend.parquet")
    assert import_litellm(tmp_path / "spend.parquet").equals(import_litellm(SPEND))

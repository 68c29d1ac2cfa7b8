"""AttemptRecorder: one crash-safe NDJSON line per attempt, in the documented schema."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from router import RoutingPolicy, Task, config_from_dict
from router.errors import InputError
from router.live import Router
from router.outcome import ErrorKind, Outcome
from router.recording import (
    ABORT_OUTCOMES,
    ATTEMPT_COLUMNS,
    ATTEMPT_OUTCOMES,
    AttemptRecorder,
    TraceRecorder,
)
from router.result import Attempt, TaskResult
from router.testing import FakeClock, ScriptedProvider, drive, tiny_config
from router.testing_http import Json, ScriptedServer, openai_completion

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _result(*attempts: Attempt, task_type: str = "json") -> TaskResult:
    return TaskResult(
        "t1",
        task_type,
        task_type,
        attempts[-1].kind == "ok",
        attempts[-1].model if attempts[-1].kind == "ok" else None,
        None,
        sum(a.cost_usd for a in attempts),
        attempts[0].started_s,
        1.0,
        list(attempts),
        [],
        None,
    )


def test_schema_columns_and_outcomes_are_the_documented_ones() -> None:
    assert ATTEMPT_COLUMNS == (
        "task_id",
        "model",
        "attempt",
        "start_s",
        "latency_s",
        "ttft_s",
        "outcome",
        "status",
        "retry_after_s",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "task_type",
        "provider_model",
        "request_id",
    )
    assert set(ATTEMPT_OUTCOMES) == {k.value for k in ErrorKind} | set(ABORT_OUTCOMES)
    assert ABORT_OUTCOMES == ("cancelled", "error", "bad_spec")
    import router.recording as rec

    for column in ATTEMPT_COLUMNS:  # each column is written down in the module docstring
        assert f"``{column}``" in (rec.__doc__ or "")


def test_record_result_writes_one_line_per_attempt_relative_to_t0(tmp_path: Path) -> None:
    policy = RoutingPolicy(tiny_config(), seed=0)
    provider = ScriptedProvider(
        {
            "a": [
                Outcome(ErrorKind.RATE_LIMITED, 0.2, 0.0, retry_after_s=0.5, status=429),
                Outcome(
                    ErrorKind.OK,
                    0.7,
                    0.004,
                    prompt_tokens=120,
                    completion_tokens=30,
                    provider_model="a-2025-01-01",
                    request_id="req-1",
                    status=200,
                    ttft_s=0.25,
                ),
            ]
        }
    )
    clock = FakeClock(1000.0)
    task = Task("t1", "json", payload="SECRET PROMPT", prompt_tokens=100, completion_tokens=20)
    result = drive(policy, task, provider, clock)
    path = tmp_path / "attempts.ndjson"
    with AttemptRecorder(path) as rec:
        rows = rec.record_result(task, result, t0=990.0)
    lines = _lines(path)
    assert lines == rows
    assert [list(r) for r in lines] == [list(ATTEMPT_COLUMNS)] * 2
    first, second = lines
    assert first == {
        "task_id": "t1",
        "model": "a",
        "attempt": 1,
        "start_s": 10.0,
        "latency_s": 0.2,
        "ttft_s": None,
        "outcome": "rate_limited",
        "status": 429,
        "retry_after_s": 0.5,
        "prompt_tokens": None,
        "completion_tokens": None,
        "cost_usd": 0.0,
        "task_type": "json",
        "provider_model": None,
        "request_id": None,
    }
    assert second["attempt"] == 2 and second["outcome"] == "ok"
    assert second["start_s"] == pytest.approx(10.0 + 0.2 + 0.5, abs=1e-9)  # after Retry-After
    assert (second["ttft_s"], second["status"], second["request_id"]) == (0.25, 200, "req-1")
    assert (second["prompt_tokens"], second["completion_tokens"]) == (120, 30)
    assert second["provider_model"] == "a-2025-01-01"
    assert "SECRET" not in path.read_text()  # no payload, ever


def test_a_fallback_model_starts_its_attempts_at_one(tmp_path: Path) -> None:
    policy = RoutingPolicy(tiny_config(), seed=0)
    provider = ScriptedProvider({"a": ["server_error", "server_error"], "b": ["ok"]})
    task = Task("t9", "json")
    result = drive(policy, task, provider, FakeClock())
    with AttemptRecorder(tmp_path / "a.jsonl") as rec:
        rec.record_result(task, result, 0.0)
    got = [(r["model"], r["attempt"], r["outcome"]) for r in _lines(tmp_path / "a.jsonl")]
    assert got == [("a", 1, "server_error"), ("a", 2, "server_error"), ("b", 1, "ok")]


def test_aborted_calls_are_recorded_with_their_abort_outcome(tmp_path: Path) -> None:
    policy = RoutingPolicy(tiny_config(), seed=0)
    task = Task("t2", "json")
    run = policy.start(task, 5.0)
    run.next_action(5.0)  # a call is now in flight
    result = run.abort(7.5, "cancelled", "the caller cancelled the task")
    with AttemptRecorder(tmp_path / "a.ndjson") as rec:
        (row,) = rec.record_result(task, result, t0=5.0)
    assert (row["outcome"], row["start_s"], row["latency_s"]) == ("cancelled", 0.0, 2.5)
    assert "the caller" not in (tmp_path / "a.ndjson").read_text()  # no detail text


def test_a_task_without_attempts_writes_nothing(tmp_path: Path) -> None:
    result = TaskResult("t", "json", "json", False, None, None, 0.0, 0.0, 0.0, [], [], "x")
    with AttemptRecorder(tmp_path / "a.ndjson") as rec:
        assert rec.record_result(Task("t", "json"), result, 0.0) == []
    assert (tmp_path / "a.ndjson").read_bytes() == b""


@pytest.mark.parametrize(
    ("attempt", "t0", "match"),
    [
        (Attempt("a", 1, 1.0, "weird", 0.1, 0.0), 0.0, "outcome 'weird' is not one of"),
        (Attempt("a", 0, 1.0, "ok", 0.1, 0.0), 0.0, "attempt must be an integer >= 1"),
        (Attempt("a", 1, 1.0, "ok", -0.1, 0.0), 0.0, "latency_s must be a finite number >= 0"),
        (Attempt("a", 1, 1.0, "ok", 0.1, 0.0), 5.0, "start_s must be a finite number >= 0"),
        (Attempt("a", 1, 1.0, "ok", 0.1, 0.0, status=42), 0.0, "status must be an HTTP status"),
        (Attempt("a", 1, 1.0, "ok", 0.1, 0.0, ttft_s=float("nan")), 0.0, "ttft_s"),
        (Attempt("a", 1, 1.0, "ok", 0.1, 0.0, prompt_tokens=-1), 0.0, "prompt_tokens"),
        (Attempt("", 1, 1.0, "ok", 0.1, 0.0), 0.0, "model must be a non-empty string"),
    ],
)
def test_bad_values_raise_and_nothing_of_the_task_is_written(
    tmp_path: Path, attempt: Attempt, t0: float, match: str
) -> None:
    good = Attempt("a", 1, 0.5, "timeout", 0.5, 0.0)
    path = tmp_path / "a.ndjson"
    with AttemptRecorder(path) as rec:
        with pytest.raises(InputError, match=match):
            rec.record_result(Task("t1", "json"), _result(good, attempt), t0)
        assert rec.records_written == 0
    assert path.read_bytes() == b""  # the good attempt before the bad one was not written


def test_record_writes_one_attempt_and_checks_it(tmp_path: Path) -> None:
    with AttemptRecorder(tmp_path / "a.ndjson") as rec:
        row = rec.record(
            "t1", model="m", attempt=1, start_s=0.0, latency_s=1.0, outcome=ErrorKind.TIMEOUT
        )
        assert row["outcome"] == "timeout" and row["status"] is None
        with pytest.raises(InputError, match="task_id must be a non-empty string"):
            rec.record("", model="m", attempt=1, start_s=0.0, latency_s=1.0, outcome="ok")
    assert len(_lines(tmp_path / "a.ndjson")) == 1


def test_path_suffix_closed_recorder_and_repr(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="attempt recording: .* must end in .ndjson or .jsonl"):
        AttemptRecorder(tmp_path / "a.parquet")
    rec = AttemptRecorder(tmp_path / "deep" / "dir" / "a.ndjson", fsync=True)
    assert repr(rec).startswith("AttemptRecorder(") and "0 written" in repr(rec)
    rec.close()
    rec.close()
    assert rec.closed
    with pytest.raises(ValueError, match="attempt recorder for .* is closed"):
        rec.record("t", model="m", attempt=1, start_s=0.0, latency_s=0.0, outcome="ok")
    # The shared machinery keeps TraceRecorder's own wording.
    with pytest.raises(InputError, match="trace recording: .* must end in .ndjson or .jsonl"):
        TraceRecorder(tmp_path / "t.csv")


def test_reopening_repairs_a_torn_tail_and_the_reader_ignores_one(tmp_path: Path) -> None:
    from sim.traces.attempts import read_attempts

    path = tmp_path / "a.ndjson"
    with AttemptRecorder(path) as rec:
        rec.record("t1", model="m", attempt=1, start_s=0.0, latency_s=1.0, outcome="ok")
    with open(path, "ab") as fh:
        fh.write(b'{"task_id":"t2","model":"m","att')  # a crash mid-write
    assert read_attempts(path).height == 1
    with AttemptRecorder(path) as rec:
        assert rec.repaired_bytes == len(b'{"task_id":"t2","model":"m","att')
        rec.record("t2", model="m", attempt=1, start_s=2.0, latency_s=1.0, outcome="ok")
    assert read_attempts(path).get_column("task_id").to_list() == ["t1", "t2"]


_WRITER = textwrap.dedent(
    """
    import sys
    from router.recording import AttemptRecorder

    rec = AttemptRecorder(sys.argv[1])
    i = 0
    while True:
        rec.record(f"t{i}", model="m" * (1 + i % 5000), attempt=1, start_s=float(i),
                   latency_s=0.5, outcome="ok", request_id="r" * (i % 70000))
        i += 1
        if i == 50:
            print("ready", flush=True)
    """
)


def test_sigkill_mid_run_leaves_only_complete_records(tmp_path: Path) -> None:
    from sim.traces.attempts import read_attempts

    path = tmp_path / "killed.ndjson"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1].splitlines()
    assert len(complete) >= 50
    assert [json.loads(x)["task_id"] for x in complete] == [f"t{i}" for i in range(len(complete))]
    df = read_attempts(path)  # a torn last line is not data
    assert df.height == len(complete)


def test_threads_share_a_recorder(tmp_path: Path) -> None:
    path = tmp_path / "threads.ndjson"
    start = threading.Barrier(4)
    with AttemptRecorder(path) as rec:

        def work(k: int) -> None:
            start.wait()
            for i in range(100):
                rec.record(
                    f"t{k}-{i}", model="m", attempt=1, start_s=0.0, latency_s=0.0, outcome="ok"
                )

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len({r["task_id"] for r in _lines(path)}) == 400


@pytest.fixture
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY", KEY)


@pytest.mark.usefixtures("_key")
def test_live_router_attempts_recorded_beside_the_trace(tmp_path: Path) -> None:
    """The wiring the live router needs: record_result(task, result, router's t0)."""
    from sim.traces.attempts import read_attempts
    from sim.traces.tasks import read_trace

    bad = Json({"error": {"message": "bad gateway"}}, status=502)
    ok = Json(openai_completion('{"ok": true}'))
    with ScriptedServer(default=bad) as primary, ScriptedServer(default=ok) as fallback:
        cfg = config_from_dict(
            {
                "models": [
                    {
                        "id": mid,
                        "provider": f"prov-{mid}",
                        "completion_rate": 0.9,
                        "cost_per_task": 0.01,
                        "avg_latency_ms": 50,
                        "endpoint": {
                            "kind": "openai",
                            "base_url": url,
                            "model": mid,
                            "api_key_env": "TEST_KEY",
                        },
                    }
                    for mid, url in (("a", primary.url), ("b", fallback.url))
                ],
                "routes": {
                    "json": {
                        "chain": ["a", "b"],
                        "max_cost_per_task": 1.0,
                        "max_latency_ms": 5000,
                        "attempt_timeout_ms": 1000,
                        "attempts_per_model": 1,
                    }
                },
                "default_route": "json",
            }
        )
        attempts = AttemptRecorder(tmp_path / "attempts.ndjson")

        async def main() -> None:
            async with Router(cfg, recorder=TraceRecorder(tmp_path / "tasks.ndjson")) as router:
                for i in range(2):
                    task = Task(f"t{i}", "json", payload="{}")
                    result = await router.route(task)
                    attempts.record_result(task, result, router._t0)

        asyncio.run(main())
        attempts.close()
    df = read_attempts(tmp_path / "attempts.ndjson")
    tasks = read_trace(tmp_path / "tasks.ndjson")
    assert df.get_column("outcome").to_list() == ["server_error", "ok"] * 2
    assert df.get_column("status").to_list() == [502, 200] * 2
    assert df.get_column("model").to_list() == ["a", "b"] * 2
    # One clock: a task's first attempt starts at (or just after) its arrival.
    first = df.group_by("task_id").agg(pl.col("start_s").min()).sort("task_id")
    gap = first.get_column("start_s") - tasks.sort("task_id").get_column("arrival_s")
    assert ((gap >= 0) & (gap < 0.5)).all()
    assert KEY not in (tmp_path / "attempts.ndjson").read_text()

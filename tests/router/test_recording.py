"""Tests for router.recording: the trace schema, crash safety, appends, concurrency."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from router.errors import InputError
from router.outcome import ErrorKind
from router.recording import TRACE_COLUMNS, TraceRecorder
from router.task import Task

REPO = Path(__file__).resolve().parents[2]


def _task(i: int = 0, **kw: Any) -> Task:
    defaults: dict[str, Any] = {
        "task_type": "json",
        "payload": f"parse this object #{i}",
        "prompt_tokens": 100 + i,
        "completion_tokens": 20,
        "arrival_s": 0.5 * i,
    }
    defaults.update(kw)
    return Task(f"t{i}", **defaults)


def _ok(recorder: TraceRecorder, task: Task, **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": "model-a",
        "latency_s": 1.25,
        "success": True,
        "cost_usd": 0.0012,
    }
    fields.update(kw)
    return recorder.record(task, **fields)


def _split(path: Path) -> tuple[list[bytes], bytes]:
    """Complete lines (without their newline) and the trailing partial line (or b"")."""
    data = path.read_bytes()
    *complete, partial = data.split(b"\n")
    return complete, partial


def test_records_round_trip_through_json(tmp_path: Path) -> None:
    path = tmp_path / "trace.ndjson"
    with TraceRecorder(path) as rec:
        first = _ok(rec, _task(1))
        second = rec.record(
            _task(2, task_type=None, payload="Write a regex for ISO dates"),
            model="model-b",
            latency_s=30.0,
            success=False,
            cost_usd=0.0,
            error_kind=ErrorKind.TIMEOUT,
            arrival_s=12.5,
            completion_tokens=0,
        )
        third = rec.record(
            _task(3), model=None, latency_s=0, success=False, cost_usd=0, error_kind="auth"
        )
        assert rec.records_written == 3
    assert first == {
        "task_id": "t1",
        "arrival_s": 0.5,
        "task_type": "json",
        "prompt_tokens": 101,
        "completion_tokens": 20,
        "model": "model-a",
        "latency_s": 1.25,
        "success": True,
        "cost_usd": 0.0012,
        "error_kind": None,
        "provider_model": None,
        "request_id": None,
    }
    # Overrides win; the task type is resolved by the classifier when not given.
    assert second["task_type"] == "regex"
    assert (second["arrival_s"], second["completion_tokens"]) == (12.5, 0)
    assert second["error_kind"] == "timeout"
    assert (third["model"], third["error_kind"], third["latency_s"]) == (None, "auth", 0.0)

    complete, partial = _split(path)
    assert partial == b""
    rows = [json.loads(line) for line in complete]
    assert rows == [first, second, third]
    assert all(tuple(row) == TRACE_COLUMNS for row in rows)  # column order too


def test_ok_error_kind_is_recorded_as_null(tmp_path: Path) -> None:
    with TraceRecorder(tmp_path / "t.ndjson") as rec:
        assert _ok(rec, _task(), error_kind=ErrorKind.OK)["error_kind"] is None
        assert _ok(rec, _task(), error_kind="ok")["error_kind"] is None


def test_payload_absent_unless_asked_and_nothing_outside_the_whitelist(tmp_path: Path) -> None:
    secret_spec = {"api_key": "sk-live-SECRET", "headers": {"Authorization": "Bearer SECRET"}}
    plain = tmp_path / "plain.ndjson"
    with TraceRecorder(plain) as rec:
        row = _ok(rec, _task(7, spec=secret_spec))
    assert "payload" not in row
    assert set(json.loads(plain.read_bytes())) == set(TRACE_COLUMNS)

    with_payload = tmp_path / "payload.ndjson"
    with TraceRecorder(with_payload, record_payload=True) as rec:
        row = _ok(rec, _task(7, spec=secret_spec, payload="line one\nline two \u2028 ü"))
    assert row["payload"] == "line one\nline two \u2028 ü"
    data = with_payload.read_bytes()
    assert data.count(b"\n") == 1  # newlines inside the payload are escaped
    assert data.isascii()
    assert json.loads(data)["payload"] == row["payload"]
    assert tuple(json.loads(data)) == (*TRACE_COLUMNS, "payload")
    for path in (plain, with_payload):
        assert b"SECRET" not in path.read_bytes()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"latency_s": float("nan")}, "trace record: latency_s must be a finite number >= 0"),
        ({"latency_s": -1.0}, "trace record: latency_s must be a finite number >= 0"),
        ({"cost_usd": float("inf")}, "trace record: cost_usd must be a finite number >= 0"),
        ({"cost_usd": "0.1"}, "trace record: cost_usd must be a number, got str"),
        ({"success": 1}, "trace record: success must be a bool"),
        ({"model": 3}, "trace record: model must be a string or null"),
        ({"error_kind": "timeout"}, "trace record: a successful task cannot have error_kind"),
        ({"success": False, "error_kind": "boom"}, "trace record: error_kind 'boom' is not one"),
        ({"prompt_tokens": -1}, "trace record: prompt_tokens must be an integer >= 0"),
        ({"completion_tokens": 2.5}, "trace record: completion_tokens must be an integer >= 0"),
        ({"arrival_s": float("nan")}, "trace record: arrival_s must be a finite number"),
        ({"provider_model": 3}, "trace record: provider_model must be a string or null"),
        ({"request_id": b"id"}, "trace record: request_id must be a string or null"),
    ],
)
def test_bad_values_raise_and_write_nothing(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    path = tmp_path / "t.ndjson"
    with TraceRecorder(path) as rec:
        with pytest.raises(InputError) as info:
            _ok(rec, _task(), **fields)
        assert str(info.value).startswith(message)
        assert rec.records_written == 0
    assert path.read_bytes() == b""


def test_path_must_be_ndjson_and_parents_are_created(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"must end in \.ndjson or \.jsonl"):
        TraceRecorder(tmp_path / "trace.parquet")
    nested = tmp_path / "a" / "b" / "trace.ndjson"
    with TraceRecorder(nested) as rec:
        _ok(rec, _task())
    assert nested.exists()


def test_close_is_idempotent_and_a_closed_recorder_refuses_records(tmp_path: Path) -> None:
    rec = TraceRecorder(tmp_path / "t.ndjson", fsync=True)
    _ok(rec, _task())
    assert not rec.closed
    rec.close()
    rec.close()
    assert rec.closed
    with pytest.raises(ValueError, match="is closed"):
        _ok(rec, _task())


def test_appending_after_a_restart_keeps_old_records(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    with TraceRecorder(path) as rec:
        for i in range(3):
            _ok(rec, _task(i))
    with TraceRecorder(path) as rec:
        assert rec.repaired_bytes == 0
        for i in range(3, 5):
            _ok(rec, _task(i))
    complete, partial = _split(path)
    assert partial == b""
    assert [json.loads(line)["task_id"] for line in complete] == ["t0", "t1", "t2", "t3", "t4"]


def test_reopening_drops_a_torn_final_line_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    with TraceRecorder(path) as rec:
        _ok(rec, _task(0))
    torn = b'{"task_id":"t1","arrival_s":0.5,"task_ty'
    with path.open("ab") as f:
        f.write(torn)
    with TraceRecorder(path) as rec:
        assert rec.repaired_bytes == len(torn)
        _ok(rec, _task(2))
    complete, partial = _split(path)
    assert partial == b""
    assert [json.loads(line)["task_id"] for line in complete] == ["t0", "t2"]

    # A file that is nothing but one torn line is emptied.
    only_torn = tmp_path / "only.ndjson"
    only_torn.write_bytes(torn)
    with TraceRecorder(only_torn) as rec:
        assert rec.repaired_bytes == len(torn)
    assert only_torn.read_bytes() == b""


def test_a_failed_write_takes_its_torn_record_back_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.ndjson"
    rec = TraceRecorder(path)
    _ok(rec, _task(0))
    good = path.read_bytes()
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(OSError, match="No space left"):
        _ok(rec, _task(1))
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == good
    _ok(rec, _task(2))
    rec.close()
    assert [json.loads(line)["task_id"] for line in _split(path)[0]] == ["t0", "t2"]


_WRITER = textwrap.dedent(
    """
    import sys
    from router.recording import TraceRecorder
    from router.task import Task

    recorder = TraceRecorder(sys.argv[1], record_payload=True)
    i = 0
    while True:
        # Large, varied payloads make a write the kill can land in the middle of.
        payload = "x" * (1000 + (i * 7919) % 200_000)
        recorder.record(
            Task(f"t{i}", task_type="json", payload=payload, prompt_tokens=i),
            model="m", latency_s=0.1, success=True, cost_usd=0.0,
        )
        i += 1
        if i == 50:
            print("ready", flush=True)
    """
)


def test_sigkill_mid_run_leaves_complete_lines_and_at_most_one_partial(tmp_path: Path) -> None:
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
    assert proc.returncode == -signal.SIGKILL

    complete, partial = _split(path)
    assert len(complete) >= 50
    for number, line in enumerate(complete):
        row = json.loads(line)  # every complete line parses...
        assert row["task_id"] == f"t{number}"  # ... and none is lost or doubled
    if partial:  # at most one partial line, and it is the last thing in the file
        with pytest.raises(json.JSONDecodeError):
            json.loads(partial)

    # A restarted recorder drops the torn line and appends cleanly after the old ones.
    with TraceRecorder(path, record_payload=True) as rec:
        assert rec.repaired_bytes == len(partial)
        _ok(rec, _task(999))
    after, tail = _split(path)
    assert tail == b""
    assert after[:-1] == complete
    assert json.loads(after[-1])["task_id"] == "t999"


def test_eight_threads_by_two_hundred_records_give_1600_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "threads.ndjson"
    start = threading.Barrier(8)

    def worker(rec: TraceRecorder, thread: int) -> None:
        start.wait()
        for i in range(200):
            rec.record(
                Task(f"{thread}-{i}", task_type="sql", payload="p" * (i * 37 % 5000)),
                model=f"m{thread}",
                latency_s=i / 100,
                success=i % 3 != 0,
                cost_usd=0.001 * i,
                error_kind=None if i % 3 else ErrorKind.SERVER_ERROR,
            )

    with TraceRecorder(path, record_payload=True) as rec:
        threads = [threading.Thread(target=worker, args=(rec, t)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert rec.records_written == 1600

    complete, partial = _split(path)
    assert partial == b""
    assert len(complete) == 1600
    rows = [json.loads(line) for line in complete]
    assert sorted(row["task_id"] for row in rows) == sorted(
        f"{t}-{i}" for t in range(8) for i in range(200)
    )
    # Each thread's own records stay in the order it wrote them.
    for t in range(8):
        mine = [int(row["task_id"].split("-")[1]) for row in rows if row["model"] == f"m{t}"]
        assert mine == list(range(200))


def test_recording_from_asyncio_tasks(tmp_path: Path) -> None:
    path = tmp_path / "async.ndjson"

    async def one(rec: TraceRecorder, i: int) -> None:
        await asyncio.sleep(0)
        _ok(rec, _task(i))
        await asyncio.sleep(0)
        await asyncio.to_thread(_ok, rec, _task(1000 + i))

    async def main() -> None:
        with TraceRecorder(path) as rec:
            await asyncio.gather(*(one(rec, i) for i in range(100)))

    asyncio.run(main())
    complete, partial = _split(path)
    assert partial == b""
    assert len({json.loads(line)["task_id"] for line in complete}) == 200


def test_measured_usage_provider_model_and_request_id_are_written(tmp_path: Path) -> None:
    path = tmp_path / "measured.ndjson"
    with TraceRecorder(path) as rec:
        row = _ok(
            rec,
            _task(4),  # estimates: 104 prompt, 20 completion tokens
            prompt_tokens=1234,
            completion_tokens=56,
            provider_model="gpt-4o-mini-2024-07-18",
            request_id="chatcmpl-abc123",
        )
    written = json.loads(path.read_bytes())
    assert written == row
    assert (written["prompt_tokens"], written["completion_tokens"]) == (1234, 56)
    assert written["provider_model"] == "gpt-4o-mini-2024-07-18"
    assert written["request_id"] == "chatcmpl-abc123"
    assert tuple(written) == TRACE_COLUMNS


def test_a_conversation_task_records_no_messages_unless_payloads_are_asked(
    tmp_path: Path,
) -> None:
    conversation = [
        {"role": "system", "content": "You are a coding agent. KEY sk-live-SECRET"},
        {"role": "user", "content": "Write a regex for ISO dates"},
        {"role": "assistant", "content": "SECRET-ANSWER"},
        {"role": "user", "content": [{"type": "text", "text": "Now a SQL query, please"}]},
    ]
    tools = [{"type": "function", "function": {"name": "SECRET_TOOL", "parameters": {}}}]
    task = Task("c1", messages=conversation, tools=tools, tool_choice="auto")
    plain = tmp_path / "plain.ndjson"
    with TraceRecorder(plain) as rec:
        row = _ok(rec, task)
    assert row["task_type"] == "sql"  # classified from the last user message
    assert b"SECRET" not in plain.read_bytes() and "payload" not in row

    with_payload = tmp_path / "payload.ndjson"
    with TraceRecorder(with_payload, record_payload=True) as rec:
        row = _ok(rec, task)
    # The prompt text is the last user message; the rest of the conversation is not.
    assert row["payload"] == "Now a SQL query, please"
    assert b"SECRET" not in with_payload.read_bytes()


def test_recorded_trace_with_extra_columns_reads_back_with_the_trace_reader(
    tmp_path: Path,
) -> None:
    trace = pytest.importorskip("sim.traces.tasks")
    path = tmp_path / "rec.ndjson"
    with TraceRecorder(path) as rec:
        _ok(rec, _task(1))  # provider_model/request_id null on the first line
        _ok(rec, _task(2), provider_model="claude-x-20250101", request_id="msg_01")
    frame = trace.read_trace(path)
    assert frame.get_column("provider_model").to_list() == [None, "claude-x-20250101"]
    assert frame.get_column("request_id").to_list() == [None, "msg_01"]

"""The attempt-record schema: reading, validation errors, writing, tasks from attempts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from router.recording import ATTEMPT_COLUMNS, AttemptRecorder
from sim.errors import TraceError
from sim.traces import (
    ATTEMPT_SCHEMA,
    read_attempts,
    tasks_from_attempts,
    validate_attempts,
    write_attempts,
)
from sim.traces.tasks import read_trace

HEADER = "task_id,model,attempt,start_s,latency_s,outcome"


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "task_id": ["t1", "t1", "t1", "t2"],
            "model": ["a", "a", "b", "a"],
            "attempt": [1, 2, 1, 1],
            "start_s": [0.0, 1.5, 3.0, 2.0],
            "latency_s": [1.0, 1.0, 2.0, 0.5],
            "ttft_s": [None, 0.3, 0.4, 0.1],
            "outcome": ["server_error", "validation", "ok", "ok"],
            "status": [503, 200, 200, 200],
            "cost_usd": [0.0, 0.01, 0.02, 0.01],
            "prompt_tokens": [None, 100, 100, 50],
            "completion_tokens": [None, 10, 12, 5],
            "task_type": ["sql", "sql", "sql", None],
            "note": ["x", "y", "z", "w"],
        }
    )


def test_schema_is_the_recorders() -> None:
    assert tuple(ATTEMPT_SCHEMA) == ATTEMPT_COLUMNS


@pytest.mark.parametrize("ext", ["parquet", "ndjson", "jsonl", "csv"])
def test_round_trip_every_format(tmp_path: Path, ext: str) -> None:
    path = write_attempts(_frame(), tmp_path / f"a.{ext}")
    df = read_attempts(path)
    assert df.columns[: len(ATTEMPT_SCHEMA)] == list(ATTEMPT_SCHEMA)
    assert [df.schema[c] for c in ATTEMPT_SCHEMA] == list(ATTEMPT_SCHEMA.values())
    assert df.get_column("start_s").to_list() == [0.0, 1.5, 2.0, 3.0]  # sorted by start
    assert df.get_column("note").to_list() == ["x", "y", "w", "z"]  # extra columns kept
    assert df.get_column("request_id").null_count() == 4  # absent optional: all null
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_reads_what_the_recorder_writes(tmp_path: Path) -> None:
    path = tmp_path / "rec.ndjson"
    with AttemptRecorder(path) as rec:
        rec.record("t1", model="m", attempt=1, start_s=0.0, latency_s=1.0, outcome="ok")
        rec.record(
            "t2",
            model="m",
            attempt=1,
            start_s=1.0,
            latency_s=2.0,
            outcome="rate_limited",
            status=429,
            retry_after_s=3.0,
        )
    df = read_attempts(path)
    assert df.get_column("retry_after_s").to_list() == [None, 3.0]


def test_a_directory_is_read_whole_and_duplicates_across_files_are_named(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "README.md").write_text("not data")
    write_attempts(_frame().head(2), d / "a.csv")
    write_attempts(_frame().tail(2), d / "b.ndjson")
    assert read_attempts(d).height == 4
    write_attempts(_frame().head(1), d / "c.parquet")
    with pytest.raises(TraceError) as info:
        read_attempts(d)
    assert str(info.value) == (
        f"{d / 'c.parquet'}: row 1, column 'attempt': expected a unique (task_id, model, "
        f"attempt), got ('t1', 'a', 1) again (first in {d / 'a.csv'} row 1)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TraceError, match="directory holds no attempt-record file"):
        read_attempts(empty)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("t,m,0,0,1,ok", "row 1, column 'attempt': expected an integer >= 1, got '0'"),
        ("t,m,1,-1,1,ok", "row 1, column 'start_s': expected a non-negative number, got '-1'"),
        ("t,m,1,0,x,ok", "row 1, column 'latency_s': expected a non-negative number, got 'x'"),
        ("t,m,1,0,1,sucess", "row 1, column 'outcome': expected one of ok, "),
        (",m,1,0,1,ok", "row 1, column 'task_id': expected a non-empty string, got a missing"),
        ("t,m,1,0,1,ok\nt,m,1,2,1,ok", "row 2, column 'attempt': expected a unique (task_id"),
    ],
)
def test_bad_csv_rows_are_one_line_errors_naming_file_row_column(
    tmp_path: Path, rows: str, message: str
) -> None:
    path = tmp_path / "a.csv"
    path.write_text(f"{HEADER}\n{rows}\n")
    with pytest.raises(TraceError) as info:
        read_attempts(path)
    text = str(info.value)
    assert text.startswith(f"{path}: {message}")
    assert "\n" not in text


def test_status_must_be_http(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    rows = [
        {"task_id": "t", "model": "m", "attempt": 1, "start_s": 0, "latency_s": 1,
         "outcome": "ok", "status": 200},
        {"task_id": "t", "model": "m", "attempt": 2, "start_s": 1, "latency_s": 1,
         "outcome": "ok", "status": 99},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TraceError, match=r"row 2, column 'status': expected an HTTP status"):
        read_attempts(path)


def test_missing_columns_unknown_format_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("task_id,model,start_s\nt,m,0\n")
    with pytest.raises(TraceError, match="missing required columns 'attempt', 'latency_s'"):
        read_attempts(path)
    (tmp_path / "a.txt").write_text(HEADER)
    with pytest.raises(TraceError, match="unknown attempt-record format '.txt'"):
        read_attempts(tmp_path / "a.txt")
    (tmp_path / "e.ndjson").write_text("")
    with pytest.raises(TraceError, match="empty file"):
        read_attempts(tmp_path / "e.ndjson")
    with pytest.raises(TraceError, match="no such file or directory"):
        read_attempts(tmp_path / "nope.csv")


def test_a_malformed_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    good = json.dumps(
        {"task_id": "t", "model": "m", "attempt": 1, "start_s": 0, "latency_s": 1, "outcome": "ok"}
    )
    path.write_text(f"{good}\n{{not json\n{good}\n")
    with pytest.raises(TraceError, match=r"a.ndjson: row 2: not valid JSON"):
        read_attempts(path)


def test_write_refuses_a_bad_frame_and_writes_nothing(tmp_path: Path) -> None:
    bad = _frame().with_columns(pl.lit("nope").alias("outcome"))
    with pytest.raises(TraceError, match="column 'outcome'"):
        write_attempts(bad, tmp_path / "a.parquet")
    assert list(tmp_path.iterdir()) == []


def test_validate_keeps_order_and_adds_absent_columns() -> None:
    df = validate_attempts(_frame().drop("ttft_s", "status"))
    assert df.get_column("start_s").to_list() == [0.0, 1.5, 3.0, 2.0]
    assert df.get_column("ttft_s").null_count() == 4 and df.schema["status"] == pl.Int64


def test_tasks_from_attempts(tmp_path: Path) -> None:
    tasks = tasks_from_attempts(_frame(), task_type="json")
    assert tasks.get_column("task_id").to_list() == ["t1", "t2"]
    t1, t2 = tasks.to_dicts()
    assert t1["arrival_s"] == 0.0 and t1["latency_s"] == 5.0  # first start to last end
    assert (t1["model"], t1["success"], t1["error_kind"]) == ("b", True, None)
    assert t1["cost_usd"] == pytest.approx(0.03) and t1["task_type"] == "sql"
    assert (t1["prompt_tokens"], t1["completion_tokens"]) == (100, 12)
    assert t2["task_type"] == "json"  # no type recorded: the default given
    failed = tasks_from_attempts(_frame().head(2))
    (row,) = failed.to_dicts()
    assert (row["success"], row["error_kind"], row["model"]) == (False, "validation", "a")
    path = tmp_path / "tasks.csv"
    tasks.write_csv(path)
    assert read_trace(path).height == 2

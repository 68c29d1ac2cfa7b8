"""The trace schema and its I/O: round trips, validation messages, discovery, replay."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.errors import InputError
from sim.errors import TraceError
from sim.traces.tasks import (
    OPTIONAL_COLUMNS,
    RECORDED_COLUMNS,
    REQUIRED_COLUMNS,
    TRACE_EXTENSIONS,
    TRACE_SCHEMA,
    ReplayColumns,
    discover_traces,
    read_trace,
    replay_columns,
    validate_trace,
    write_trace,
)

HEADER = "task_id,arrival_s,task_type,prompt_tokens,completion_tokens"


def full_frame() -> pl.DataFrame:
    """Every schema column, awkward strings included, sorted by arrival."""
    return pl.DataFrame(
        {
            "task_id": ["t1", "t2", "t3", "t4"],
            "arrival_s": [0.0, 0.1 + 0.2, 1e-9, 12345.678901234567],
            "task_type": ["regex", "sql", "json", "bug_patch"],
            "prompt_tokens": [0, 1469, 7437, 2**40],
            "completion_tokens": [13, 0, 1, 5],
            "payload": ['say "hi", then\nnew line', "ünïcödé ✓", "a,b;c", "  spaced  "],
            "model": ["m-a", None, "m-b", "m-a"],
            "latency_s": [1.25, None, 0.0, 30.5],
            "success": [True, None, False, True],
            "cost_usd": [0.0012, None, 0.0, 1.5],
            "error_kind": [None, "timeout", "429", None],
        },
        schema=TRACE_SCHEMA,
    ).sort("arrival_s", maintain_order=True)


def write_csv_text(path: Path, body: str, header: str = HEADER) -> Path:
    path.write_text(header + "\n" + body, encoding="utf-8")
    return path


def csv_rows(n: int, *, bad_row: int | None = None, bad_arrival: str = "-3") -> str:
    lines = []
    for i in range(1, n + 1):
        arrival = bad_arrival if i == bad_row else f"{i * 0.5}"
        lines.append(f"t{i},{arrival},regex,{100 + i},{i}")
    return "\n".join(lines) + "\n"


def ndjson_record(i: int, **override: object) -> str:
    record: dict[str, object] = {
        "task_id": f"t{i}",
        "arrival_s": i * 0.5,
        "task_type": "sql",
        "prompt_tokens": 100 + i,
        "completion_tokens": i,
    }
    record.update(override)
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def message(excinfo: pytest.ExceptionInfo[TraceError]) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- schema


def test_schema_constants_are_consistent() -> None:
    assert list(REQUIRED_COLUMNS) == [
        "task_id",
        "arrival_s",
        "task_type",
        "prompt_tokens",
        "completion_tokens",
    ]
    assert list(OPTIONAL_COLUMNS) == ["payload"]
    assert list(RECORDED_COLUMNS) == ["model", "latency_s", "success", "cost_usd", "error_kind"]
    assert TRACE_SCHEMA == {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS, **RECORDED_COLUMNS}
    assert TRACE_SCHEMA["arrival_s"] == pl.Float64
    assert TRACE_SCHEMA["prompt_tokens"] == pl.Int64
    assert TRACE_SCHEMA["success"] == pl.Boolean
    assert set(TRACE_EXTENSIONS) == {".parquet", ".ndjson", ".jsonl", ".csv"}


def test_trace_error_is_an_input_error() -> None:
    assert issubclass(TraceError, InputError)
    assert issubclass(TraceError, ValueError)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("ext", [".parquet", ".ndjson", ".jsonl", ".csv"])
def test_round_trip_every_format(tmp_path: Path, ext: str) -> None:
    df = full_frame()
    path = write_trace(df, tmp_path / f"trace{ext}")
    assert path == tmp_path / f"trace{ext}"
    back = read_trace(path)
    assert back.schema == df.schema
    assert back.equals(df)


@pytest.mark.parametrize("ext", [".parquet", ".ndjson", ".csv"])
def test_round_trip_required_columns_only_adds_nothing(tmp_path: Path, ext: str) -> None:
    df = full_frame().select(list(REQUIRED_COLUMNS))
    back = read_trace(write_trace(df, tmp_path / f"t{ext}"))
    assert back.columns == list(REQUIRED_COLUMNS)
    assert back.equals(df)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
            st.sampled_from(["regex", "sql", "json", "bug_patch", "error_handling"]),
            st.integers(min_value=0, max_value=2**53),
            st.integers(min_value=0, max_value=10**6),
            st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != ""),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_round_trip_property(rows: list[tuple[float, str, int, int, str]]) -> None:
    df = pl.DataFrame(
        {
            "task_id": [f"id-{i}" for i in range(len(rows))],
            "arrival_s": [r[0] for r in rows],
            "task_type": [r[1] for r in rows],
            "prompt_tokens": [r[2] for r in rows],
            "completion_tokens": [r[3] for r in rows],
            "payload": [r[4] for r in rows],
        },
        schema={**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS},
    )
    expected = df.sort("arrival_s", maintain_order=True)
    with tempfile.TemporaryDirectory() as tmp:
        for ext in (".parquet", ".ndjson", ".csv"):
            back = read_trace(write_trace(df, Path(tmp) / f"p{ext}"))
            assert back.equals(expected), ext


def test_read_sorts_by_arrival_stably(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "t.csv", "a,2,regex,1,1\nb,1,regex,1,1\nc,1,sql,1,1\nd,0,json,1,1\n"
    )
    assert read_trace(path)["task_id"].to_list() == ["d", "b", "c", "a"]


def test_csv_values_are_cast_to_the_schema(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "t.csv",
        "007, 1.5 ,regex,3.0,1e3,TRUE,x\n8,2,sql, 4 ,0,0,y\n",
        header=HEADER + ",success,extra",
    )
    df = read_trace(path)
    assert df.schema == pl.Schema({**REQUIRED_COLUMNS, "success": pl.Boolean, "extra": pl.String})
    assert df.rows() == [
        ("007", 1.5, "regex", 3, 1000, True, "x"),
        ("8", 2.0, "sql", 4, 0, False, "y"),
    ]


def test_parquet_with_other_dtypes_is_cast(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pl.DataFrame(
        {
            "task_id": pl.Series([10, 11], dtype=pl.Int32),
            "arrival_s": pl.Series([1, 0], dtype=pl.Int16),
            "task_type": pl.Series(["sql", "json"], dtype=pl.Categorical),
            "prompt_tokens": pl.Series([5.0, 6.0], dtype=pl.Float32),
            "completion_tokens": pl.Series([1, 2], dtype=pl.UInt8),
            "success": pl.Series([1, 0], dtype=pl.Int8),
        }
    ).write_parquet(path)
    df = read_trace(path)
    assert df.schema == pl.Schema({**REQUIRED_COLUMNS, "success": pl.Boolean})
    assert df.rows() == [("11", 0.0, "json", 6, 2, False), ("10", 1.0, "sql", 5, 1, True)]


def test_ndjson_keys_in_any_order_with_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    path.write_text(
        '{"completion_tokens": 2, "task_type": "json", "prompt_tokens": "7", '
        '"arrival_s": 3, "task_id": "x", "model": "m"}\n'
        "\n"
        '{"task_id": "y", "arrival_s": 1.5, "task_type": "sql", "prompt_tokens": 8.0,'
        ' "completion_tokens": 0}\n'
    )
    df = read_trace(path)
    assert df.columns == [*REQUIRED_COLUMNS, "model"]
    assert df.rows() == [("y", 1.5, "sql", 8, 0, None), ("x", 3.0, "json", 7, 2, "m")]


# --------------------------------------------------------------------------- NDJSON crash tail


def test_ndjson_partial_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "live.ndjson"
    whole = "".join(ndjson_record(i) + "\n" for i in range(1, 4))
    path.write_text(whole + ndjson_record(4)[:25])  # killed mid-write: no newline
    df = read_trace(path)
    assert df["task_id"].to_list() == ["t1", "t2", "t3"]


def test_ndjson_only_a_partial_line_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    path.write_text(ndjson_record(1)[:10])
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == f"{path}: empty trace (no rows)"


def test_ndjson_complete_last_line_without_newline_is_data(tmp_path: Path) -> None:
    path = tmp_path / "hand.ndjson"
    path.write_text(ndjson_record(1) + "\n" + ndjson_record(2))
    assert read_trace(path)["task_id"].to_list() == ["t1", "t2"]


def test_ndjson_malformed_middle_line_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    lines = [ndjson_record(i) for i in range(1, 6)]
    lines[2] = lines[2][:25]  # a cut line that is followed by more data is corruption
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo).startswith(f"{path}: row 3: not valid JSON (")


def test_ndjson_malformed_line_after_the_key_sample_names_its_row(tmp_path: Path) -> None:
    # Past the first 100 records the fast reader fails and the slow path finds the row.
    path = tmp_path / "t.ndjson"
    lines = [ndjson_record(i) for i in range(1, 151)]
    lines[129] = "{not json}"
    path.write_text("\n\n".join(lines) + "\n")  # blank lines are not rows
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo).startswith(f"{path}: row 130: not valid JSON (")
    assert isinstance(excinfo.value.__cause__, pl.exceptions.PolarsError)


def test_ndjson_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    path.write_text(ndjson_record(1) + "\n[1, 2]\n" + ndjson_record(3) + "\n")
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == f"{path}: row 2: expected a JSON object, got list"


# --------------------------------------------------------------------------- validation


def test_negative_arrival_csv_names_file_row_column(tmp_path: Path) -> None:
    path = write_csv_text(tmp_path / "x.csv", csv_rows(20, bad_row=17))
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: row 17, column 'arrival_s': expected a non-negative number, got '-3'"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [("soon", "'soon'"), ("", "a missing value"), ("nan", "'nan'"), ("inf", "'inf'")],
)
def test_bad_arrival_csv(tmp_path: Path, value: str, shown: str) -> None:
    path = write_csv_text(tmp_path / "x.csv", csv_rows(5, bad_row=4, bad_arrival=value))
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: row 4, column 'arrival_s': expected a non-negative number, got {shown}"
    )


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ({"arrival_s": -0.5}, "-0.5"),
        ({"arrival_s": "later"}, "'later'"),
        ({"arrival_s": None}, "a missing value"),
        ({"arrival_s": ...}, "a missing value"),  # the key is absent from that line
        ({"arrival_s": True}, "'true'"),
    ],
)
def test_bad_arrival_ndjson(tmp_path: Path, override: dict[str, object], shown: str) -> None:
    path = tmp_path / "x.ndjson"
    lines = [ndjson_record(i, **(override if i == 2 else {})) for i in range(1, 4)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: row 2, column 'arrival_s': expected a non-negative number, got {shown}"
    )


def test_bad_arrival_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    df = full_frame().select(list(REQUIRED_COLUMNS))
    df.with_columns(pl.Series("arrival_s", [0.0, 1.0, -3.0, 2.0])).write_parquet(path)
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: row 3, column 'arrival_s': expected a non-negative number, got -3.0"
    )


@pytest.mark.parametrize("column", ["prompt_tokens", "completion_tokens"])
@pytest.mark.parametrize(
    ("value", "shown"),
    [("-1", "'-1'"), ("2.5", "'2.5'"), ("", "a missing value"), ("many", "'many'")],
)
def test_bad_token_counts_csv(tmp_path: Path, column: str, value: str, shown: str) -> None:
    rows = ["a,0,regex,1,1", "b,1,regex,1,1", "c,2,regex,1,1"]
    fields = rows[1].split(",")
    fields[3 if column == "prompt_tokens" else 4] = value
    rows[1] = ",".join(fields)
    path = write_csv_text(tmp_path / "x.csv", "\n".join(rows) + "\n")
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: row 2, column '{column}': expected a non-negative integer, got {shown}"
    )


def test_bad_token_counts_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    df = full_frame().select(list(REQUIRED_COLUMNS)).drop("completion_tokens")
    df.with_columns(pl.Series("completion_tokens", [1.0, 2.0, 3.0, 4.5])).write_parquet(path)
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: row 4, column 'completion_tokens': expected a non-negative integer, got 4.5"
    )


@pytest.mark.parametrize("ext", [".csv", ".ndjson", ".parquet"])
def test_missing_required_column(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"x{ext}"
    df = full_frame().select(["task_id", "task_type", "prompt_tokens", "completion_tokens"])
    {".csv": df.write_csv, ".ndjson": df.write_ndjson, ".parquet": df.write_parquet}[ext](path)
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: missing required column 'arrival_s' "
        "(found: task_id, task_type, prompt_tokens, completion_tokens)"
    )


def test_several_missing_columns_are_all_named(tmp_path: Path) -> None:
    path = write_csv_text(tmp_path / "x.csv", "a,1\n", header="id,when")
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: missing required columns 'task_id', 'arrival_s', 'task_type', "
        "'prompt_tokens', 'completion_tokens' (found: id, when)"
    )


def test_duplicate_task_ids_name_both_rows(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "x.csv", "a,0,regex,1,1\nb,1,regex,1,1\nc,2,sql,1,1\nb,3,sql,1,1\n"
    )
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: row 4, column 'task_id': expected a unique task id, got 'b' again "
        "(first at row 2)"
    )


@pytest.mark.parametrize("column", ["task_id", "task_type"])
def test_blank_required_strings(tmp_path: Path, column: str) -> None:
    row = ",1,regex,1,1" if column == "task_id" else "b,1, ,1,1"
    path = write_csv_text(tmp_path / "x.csv", f"a,0,regex,1,1\n{row}\n")
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    got = "a missing value" if column == "task_id" else "' '"
    assert message(excinfo) == (
        f"{path}: row 2, column '{column}': expected a non-empty string, got {got}"
    )


def test_bad_recorded_columns(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "x.csv",
        "a,0,regex,1,1,,\nb,1,regex,1,1,-0.2,true\nc,2,sql,1,1,0.5,maybe\n",
        header=HEADER + ",latency_s,success",
    )
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: row 2, column 'latency_s': expected a non-negative number, got '-0.2'"
    )
    path.write_text(path.read_text().replace("-0.2", "0.2"))
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert (
        message(excinfo) == f"{path}: row 3, column 'success': expected true or false, got 'maybe'"
    )


def test_earliest_bad_row_is_reported_first(tmp_path: Path) -> None:
    path = write_csv_text(tmp_path / "x.csv", "a,0,regex,1,1\nb,1,regex,-5,1\nc,-1,sql,1,1\n")
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert "row 2, column 'prompt_tokens'" in message(excinfo)


# --------------------------------------------------------------------------- bad files


def test_empty_files(tmp_path: Path) -> None:
    cases = {
        tmp_path / "zero.csv": ("", "empty file (no header, no rows)"),
        tmp_path / "header.csv": (HEADER + "\n", "empty trace (no rows)"),
        tmp_path / "zero.ndjson": ("", "empty file (no rows)"),
        tmp_path / "blank.jsonl": ("\n\n  \n", "empty trace (no rows)"),
    }
    for path, (text, expected) in cases.items():
        path.write_text(text)
        with pytest.raises(TraceError) as excinfo:
            read_trace(path)
        assert message(excinfo) == f"{path}: {expected}"
    path = tmp_path / "none.parquet"
    full_frame().clear().write_parquet(path)
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == f"{path}: empty trace (no rows)"


def test_corrupt_parquet(tmp_path: Path) -> None:
    good = write_trace(full_frame(), tmp_path / "good.parquet")
    path = tmp_path / "cut.parquet"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for bad in (path, tmp_path / "text.parquet"):
        if bad.name == "text.parquet":
            bad.write_text("this is not parquet")
        with pytest.raises(TraceError) as excinfo:
            read_trace(bad)
        assert message(excinfo).startswith(f"{bad}: not a readable Parquet file (")
        assert isinstance(excinfo.value.__cause__, pl.exceptions.PolarsError)


def test_csv_row_with_too_many_fields(tmp_path: Path) -> None:
    path = write_csv_text(tmp_path / "x.csv", "a,0,regex,1,1\nb,1,regex,1,1\nc,2,sql,1,1,9\n")
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == f"{path}: row 3: expected at most 5 fields (the header's), found 6"
    assert excinfo.value.__cause__ is not None


def test_csv_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes((HEADER + "\n").encode() + b"a,0,\xff\xfe,1,1\n")
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo).startswith(f"{path}: ")
    assert excinfo.value.__cause__ is not None


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "trace.txt"
    path.write_text("x")
    with pytest.raises(TraceError) as excinfo:
        read_trace(path)
    assert message(excinfo) == (
        f"{path}: unknown trace format '.txt' (expected one of .parquet, .ndjson, .jsonl, .csv)"
    )
    with pytest.raises(TraceError) as excinfo:
        read_trace(tmp_path / "absent.csv")
    assert message(excinfo) == f"{tmp_path / 'absent.csv'}: trace file does not exist"
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(TraceError) as excinfo:
        read_trace(tmp_path / "dir.csv")
    assert message(excinfo) == f"{tmp_path / 'dir.csv'}: trace file is not a file"


# --------------------------------------------------------------------------- discovery


def test_discover_directory_and_files(tmp_path: Path) -> None:
    d = tmp_path / "traces"
    d.mkdir()
    for name in [
        "b.parquet",
        "a.csv",
        "c.jsonl",
        "d.NDJSON",
        "README.md",
        "LICENSE",
        "ATTRIBUTION.md",
        ".b.parquet.x1.tmp",
        ".hidden.csv",
    ]:
        (d / name).write_text("")
    (d / "sub").mkdir()
    (d / "sub" / "deep.parquet").write_text("")
    single = tmp_path / "one.ndjson"
    single.write_text("")
    assert discover_traces([d, str(single)]) == [
        d / "a.csv",
        d / "b.parquet",
        d / "c.jsonl",
        d / "d.NDJSON",
        single,
    ]
    assert discover_traces(d / "a.csv") == [d / "a.csv"]
    assert discover_traces(str(d))[0] == d / "a.csv"


def test_discover_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as excinfo:
        discover_traces([tmp_path / "nope"])
    assert message(excinfo) == f"{tmp_path / 'nope'}: no such file or directory"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "README.md").write_text("")
    with pytest.raises(TraceError) as excinfo:
        discover_traces([docs])
    assert message(excinfo) == (
        f"{docs}: directory holds no trace file (.parquet, .ndjson, .jsonl, .csv)"
    )
    with pytest.raises(TraceError) as excinfo:
        discover_traces([docs / "README.md"])
    assert message(excinfo).startswith(f"{docs / 'README.md'}: unknown trace format '.md'")


# --------------------------------------------------------------------------- writing


def test_write_is_atomic_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_trace(full_frame(), tmp_path / "t.parquet")
    before = path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]
    assert path.stat().st_mode & 0o777 == 0o644

    def explode(self: pl.DataFrame, file: object, *args: object, **kwargs: object) -> None:
        Path(str(file)).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", explode)
    with pytest.raises(OSError, match="disk full"):
        write_trace(full_frame().head(1), path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_write_validates_first(tmp_path: Path) -> None:
    bad = full_frame().with_columns(pl.lit(-1).alias("prompt_tokens"))
    with pytest.raises(TraceError) as excinfo:
        write_trace(bad, tmp_path / "t.csv")
    assert message(excinfo) == (
        f"trace for {tmp_path / 't.csv'}: row 1, column 'prompt_tokens': "
        "expected a non-negative integer, got -1"
    )
    with pytest.raises(TraceError):
        write_trace(full_frame(), tmp_path / "t.xlsx")
    assert list(tmp_path.iterdir()) == []


def test_write_keeps_an_existing_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    path.write_text("")
    os.chmod(path, 0o600)
    write_trace(full_frame(), path)
    assert path.stat().st_mode & 0o777 == 0o600


def test_validate_trace_keeps_row_order_and_extras() -> None:
    df = pl.DataFrame(
        {
            "note": ["x", "y"],
            "completion_tokens": [1, 2],
            "task_id": ["b", "a"],
            "arrival_s": [5, 1],
            "task_type": ["sql", "json"],
            "prompt_tokens": [3, 4],
        }
    )
    out = validate_trace(df)
    assert out.columns == [*REQUIRED_COLUMNS, "note"]
    assert out["task_id"].to_list() == ["b", "a"]
    with pytest.raises(TraceError) as excinfo:
        validate_trace(df.clear(), source="mine")
    assert str(excinfo.value) == "mine: empty trace (no rows)"


# --------------------------------------------------------------------------- replay


def test_replay_columns_gives_plain_python_values() -> None:
    cols = replay_columns(full_frame())
    assert isinstance(cols, ReplayColumns)
    assert len(cols) == 4
    assert cols.task_ids == ["t1", "t3", "t2", "t4"]
    assert cols.arrival_s == [0.0, 1e-9, 0.1 + 0.2, 12345.678901234567]
    assert cols.task_types == ["regex", "json", "sql", "bug_patch"]
    assert cols.prompt_tokens == [0, 7437, 1469, 2**40]
    assert cols.completion_tokens == [13, 1, 0, 5]
    assert all(type(v) is float for v in cols.arrival_s)
    assert all(type(v) is int for v in cols.prompt_tokens + cols.completion_tokens)


def test_replay_columns_refuses_unsorted_or_incomplete_frames() -> None:
    df = full_frame()
    with pytest.raises(TraceError, match="not sorted by 'arrival_s'"):
        replay_columns(df.reverse())
    with pytest.raises(TraceError, match="missing required column 'task_type'"):
        replay_columns(df.drop("task_type"))


# --------------------------------------------------------------------------- scale


def test_a_million_rows_read_and_validate_quickly(tmp_path: Path) -> None:
    n = 1_000_000
    rng = np.random.default_rng(0)
    df = pl.DataFrame(
        {
            "task_id": pl.int_range(n, eager=True).cast(pl.String),
            "arrival_s": rng.uniform(0.0, 86_400.0, n),  # unsorted: read_trace must sort
            "task_type": rng.choice(["regex", "sql", "json"], n),
            "prompt_tokens": rng.integers(0, 8_000, n),
            "completion_tokens": rng.integers(0, 500, n),
            "latency_s": rng.uniform(0.0, 30.0, n),
            "success": rng.random(n) < 0.9,
        }
    )
    path = tmp_path / "big.parquet"
    df.write_parquet(path)
    # Best of two: the budget is about the code, not about a busy shared machine.
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        back = read_trace(path)
        timings.append(time.perf_counter() - start)
    assert back.height == n
    assert back["arrival_s"].is_sorted()
    assert min(timings) < 2.0, f"read_trace took {min(timings):.2f} s for {n} rows"
    # A bad value at the very end is still found (the checks are not sampled).
    df.with_columns(
        pl.when(pl.int_range(n) == n - 1)
        .then(-1)
        .otherwise(pl.col("prompt_tokens"))
        .alias("prompt_tokens")
    ).write_parquet(path)
    with pytest.raises(TraceError, match=f"row {n}, column 'prompt_tokens'"):
        read_trace(path)

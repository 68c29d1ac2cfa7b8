"""read_replay_columns: a trace read and validated in batches gives what read_trace gives.

The same columns in the same canonical order, the same replay byte for byte, and the
same one-line error (the file's own row, even when the bad row is in a later batch).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sim.engine.replays import load_traces, replay, trace_key
from sim.errors import TraceError
from sim.traces.tasks import (
    REQUIRED_COLUMNS,
    ReplayColumns,
    read_replay_columns,
    read_trace,
    replay_columns,
    write_trace,
)

TRACES = Path(__file__).resolve().parents[2] / "traces"
SHIPPED = sorted(TRACES.glob("*.parquet"))
BATCH = 1000  # small, so that a few thousand rows make several batches


def as_lists(cols: ReplayColumns) -> list[list[Any]]:
    """The five columns as lists of Python values, whatever their storage."""
    out = []
    for column in (
        cols.task_ids,
        cols.arrival_s,
        cols.task_types,
        cols.prompt_tokens,
        cols.completion_tokens,
    ):
        out.append(column.to_pylist() if hasattr(column, "to_pylist") else column.tolist())
    return out


def head(n: int) -> pl.DataFrame:
    """The first ``n`` tasks of the shipped synthetic trace (required columns)."""
    return read_trace(TRACES / "synthetic_2d.parquet").head(n).select(list(REQUIRED_COLUMNS))


def error_of(read: Any, path: Path) -> str:
    with pytest.raises(TraceError) as excinfo:
        read(path)
    return str(excinfo.value)


def same_error(path: Path) -> str:
    """The batch reader's message for ``path``, asserted equal to read_trace's."""
    expected = error_of(read_trace, path)
    got = error_of(lambda p: read_replay_columns(p, batch_rows=BATCH), path)
    assert got == expected
    return got


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_traces_give_replay_columns_exactly_in_less_memory(path: Path) -> None:
    reference = replay_columns(read_trace(path), compact=True)
    for batch_rows in (7000, 1 << 17):  # several batches (on the 43k-task trace), one
        cols = read_replay_columns(path, batch_rows=batch_rows)
        assert as_lists(cols) == as_lists(reference)
        assert trace_key(cols) == trace_key(reference)
    n = len(reference)
    # float64 arrivals, int32 tokens, int8 type codes, ids' text + 4-byte offsets.
    id_text = sum(len(t.encode()) for t in reference.task_ids.to_pylist())
    stored = (
        cols.task_ids.nbytes
        + cols.arrival_s.nbytes
        + cols.task_types.nbytes
        + cols.prompt_tokens.nbytes
        + cols.completion_tokens.nbytes
    )
    assert stored <= id_text + n * (4 + 8 + 4 + 4 + 1) + 4096
    assert cols.prompt_tokens.dtype.itemsize == 4


def test_shuffled_rows_with_ties_replay_byte_identically(tmp_path: Path) -> None:
    # Arrivals cut to 10 s steps: many ties, settled by task id in canonical order.
    df = head(3000).with_columns((pl.col("arrival_s") // 10 * 10).alias("arrival_s"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    in_order = write_trace(df, tmp_path / "a" / "t.parquet")
    shuffled = write_trace(
        df.sample(fraction=1.0, shuffle=True, seed=7), tmp_path / "b" / "t.parquet"
    )
    reference = as_lists(replay_columns(read_trace(in_order), compact=True))
    assert as_lists(read_replay_columns(shuffled, batch_rows=BATCH)) == reference
    assert as_lists(read_replay_columns(in_order, batch_rows=BATCH)) == reference
    digests = []
    for path in (in_order, shuffled):
        out = path.parent / "out"
        replay([path], seed=3, out=out, figures=False)
        digests.append(
            [
                hashlib.sha256((out / f).read_bytes()).hexdigest()
                for f in ("tasks.parquet", "summary.json")
            ]
        )
    assert digests[0] == digests[1]
    # load_traces(compact=True) goes through the batch reader and loses nothing.
    ((name, cols),) = load_traces([shuffled], compact=True)
    assert name == "t.parquet" and as_lists(cols) == reference


@pytest.mark.parametrize("ext", ["parquet", "csv"])
def test_a_bad_value_in_a_later_batch_names_the_files_row(tmp_path: Path, ext: str) -> None:
    df = head(4000).with_columns(
        pl.when(pl.int_range(pl.len()) == 3456)
        .then(-3.0)
        .otherwise(pl.col("arrival_s"))
        .alias("arrival_s")
    )
    path = tmp_path / f"t.{ext}"
    df.write_parquet(path) if ext == "parquet" else df.write_csv(path)
    message = same_error(path)
    shown = "-3.0" if ext == "parquet" else "'-3.0'"
    assert message == (
        f"{path}: row 3457, column 'arrival_s': expected a non-negative number, got {shown}"
    )


def test_a_bad_recorded_value_in_a_later_batch_is_reported_too(tmp_path: Path) -> None:
    df = head(2500).with_columns(
        pl.when(pl.int_range(pl.len()) == 2222).then(-0.5).otherwise(1.0).alias("latency_s"),
        pl.lit("x" * 50).alias("payload"),
    )
    path = tmp_path / "t.parquet"
    df.write_parquet(path)
    assert same_error(path) == (
        f"{path}: row 2223, column 'latency_s': expected a non-negative number, got -0.5"
    )


def test_a_repeated_id_across_batches_names_both_rows(tmp_path: Path) -> None:
    ids = pl.int_range(pl.len())
    df = head(4000).with_columns(
        pl.when(ids == 3500)
        .then(pl.lit("dup"))
        .when(ids == 9)
        .then(pl.lit("dup"))
        .otherwise(pl.col("task_id"))
        .alias("task_id")
    )
    path = tmp_path / "t.parquet"
    df.write_parquet(path)
    assert same_error(path) == (
        f"{path}: row 3501, column 'task_id': expected a unique task id, got 'dup' again "
        "(first at row 10)"
    )


@pytest.mark.parametrize(("dup_row", "bad_row", "wins"), [(2500, 3800, "dup"), (2500, 1999, "bad")])
def test_the_earliest_of_a_repeated_id_and_a_bad_value_wins(
    tmp_path: Path, dup_row: int, bad_row: int, wins: str
) -> None:
    i = pl.int_range(pl.len())
    df = head(4000).with_columns(
        pl.when(i == dup_row)
        .then(pl.lit("dup"))
        .when(i == 5)
        .then(pl.lit("dup"))
        .otherwise(pl.col("task_id"))
        .alias("task_id"),
        pl.when(i == bad_row).then(-1).otherwise(pl.col("prompt_tokens")).alias("prompt_tokens"),
    )
    path = tmp_path / "t.parquet"
    df.write_parquet(path)
    message = same_error(path)
    row = (dup_row if wins == "dup" else bad_row) + 1
    assert message.startswith(f"{path}: row {row}, column ")


def test_file_level_errors_are_read_traces(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 not really parquet")
    assert same_error(garbage).startswith(f"{garbage}: not a readable Parquet file (")
    missing = tmp_path / "missing.parquet"
    head(10).drop("task_type").write_parquet(missing)
    assert same_error(missing).startswith(f"{missing}: missing required column 'task_type'")
    empty = tmp_path / "empty.parquet"
    head(0).write_parquet(empty)
    assert same_error(empty) == f"{empty}: empty trace (no rows)"
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(
        "task_id,arrival_s,task_type,prompt_tokens,completion_tokens\n"
        "a,1,sql,1,1\nb,2,sql,1,1,extra\n",
        encoding="utf-8",
    )
    assert (
        same_error(ragged) == f"{ragged}: row 2: expected at most 5 fields (the header's), found 6"
    )
    assert error_of(read_replay_columns, tmp_path / "nope.parquet") == (
        f"{tmp_path / 'nope.parquet'}: trace file does not exist"
    )

"""A replay that owns its trace frees it as it reads it, with the same results."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest

from sim import replay, replay_columns, synthesize
from sim.engine.replays import _read_once, _ReadOnce


def test_a_read_once_column_reads_in_order_and_drops_what_it_passed() -> None:
    col = _ReadOnce([np.arange(0, 4), np.arange(4, 8), np.arange(8, 10)])
    assert len(col) == 10
    assert col[0:3].tolist() == [0, 1, 2]
    assert col[3:9] == [3, 4, 5, 6, 7, 8]  # across parts: a list of Python numbers
    assert col[8:10].tolist() == [8, 9]  # the first two parts are gone now
    with pytest.raises(IndexError, match="rows 2:5 of a read-once column were already dropped"):
        col[2:5]
    with pytest.raises(ValueError, match="contiguous slices"):
        col[0:10:2]


def test_read_once_columns_hold_the_same_rows() -> None:
    cols = replay_columns(synthesize(n_tasks=300, rate_per_s=2.0, seed=2), compact=True)
    cols = dataclasses.replace(
        cols, task_ids=pa.chunked_array([cols.task_ids[:100], cols.task_ids[100:]])
    )
    once = _read_once(cols)
    assert once.task_ids[0:300] == cols.task_ids.to_pylist()
    assert once.arrival_s[0:300].tolist() == cols.arrival_s.tolist()


def test_a_consumed_trace_replays_as_a_kept_one() -> None:
    df = synthesize(n_tasks=2_000, rate_per_s=2.0, seed=6)
    kept = [("t", replay_columns(df, compact=True))]
    given = [("t", replay_columns(df, compact=True))]
    a = replay(traces=kept, seed=3, replications=2, figures=False)
    b = replay(traces=given, seed=3, replications=2, figures=False, consume_traces=True)
    assert given == [] and len(kept) == 1
    assert json.dumps(b.summary, sort_keys=True) == json.dumps(a.summary, sort_keys=True)
    with pytest.raises(TypeError, match="consume_traces: traces must be a list"):
        replay(traces=tuple(kept), figures=False, consume_traces=True)

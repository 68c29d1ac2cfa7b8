"""Map any table (CSV, Parquet, JSON, NDJSON) onto the task-trace or attempt schema.

For logs no dedicated importer knows: ``mapping`` names, per source column, the schema
column it becomes (``{"startTime": "arrival_s", "tokens_in": "prompt_tokens"}``);
unmapped source columns are dropped. Then:

- the *time* column (``arrival_s`` of a trace, ``start_s`` of attempt records) is
  read per ``time_format``: ``iso`` (ISO-8601 text, UTC when no zone is given),
  ``epoch`` (Unix seconds), ``epoch_ms`` (Unix milliseconds) -- each converted to
  seconds from the earliest row -- or ``seconds`` (the default: already seconds on
  the trace's clock, kept as they are);
- ``units`` converts durations to seconds: ``{"latency": "ms"}`` (a key may omit the
  ``_s``) with units ``s``, ``ms``, ``us``, ``min``, for ``latency_s``, ``ttft_s``,
  ``retry_after_s`` (and the time column with ``time_format="seconds"``);
- a trace without a mapped ``task_id`` gets ``<file stem>-<row>`` (1-based, in file
  order); without ``task_type`` it gets ``task_type`` (default ``"unknown"``, which the
  router sends down its default route). Attempt records likewise get ids, attempts
  numbered per (task, model) in start order when ``attempt`` is unmapped, and
  ``task_type`` (default null).

The result is validated by :func:`sim.traces.tasks.validate_trace` or
:func:`sim.traces.attempts.validate_attempts` and sorted by time; a bad value is a
one-line :class:`~sim.errors.TraceError` naming the file, the row and the *source*
column. An unknown target, a target mapped twice, a missing source column or a bad
unit is a one-line :class:`~router.errors.InputError` naming it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from router.errors import InputError
from router.task import UNKNOWN
from sim.errors import TraceError
from sim.traces._common import TIME_FORMATS, TimeFormat, read_table, time_example, timestamps_ns
from sim.traces.attempts import ATTEMPT_SCHEMA, validate_attempts
from sim.traces.tasks import TRACE_SCHEMA, _as_float, _first_true, _row_error, validate_trace

__all__ = ["DURATION_UNITS", "import_table", "parse_pairs"]

#: Duration units ``units`` accepts, in seconds.
DURATION_UNITS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}

_DURATIONS = ("latency_s", "ttft_s", "retry_after_s")


def parse_pairs(items: str | list[str] | tuple[str, ...] | None, *, what: str) -> dict[str, str]:
    """``"a=b,c=d"`` (or several such strings) as ``{"a": "b", "c": "d"}``, in order.

    Raises :class:`InputError` naming ``what`` for an item without ``=``, an empty
    side, or a key given twice.
    """
    if items is None:
        return {}
    if isinstance(items, str):
        items = [items]
    out: dict[str, str] = {}
    for chunk in items:
        for part in chunk.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key or not value:
                raise InputError(f"{what}: expected name=value pairs, got {part.strip()!r}")
            if key in out:
                raise InputError(f"{what}: {key!r} is given twice")
            out[key] = value
    return out


def _number(s: pl.Series) -> tuple[pl.Series, pl.Series]:
    """``s`` as Float64 (any sign) and the mask of non-null values that are not numbers."""
    if s.dtype.is_numeric():
        conv = s.cast(pl.Float64)
    else:
        conv = s.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    bad = (s.is_not_null() & (conv.is_null() | ~conv.is_finite())).fill_null(True)
    if s.dtype == pl.String:
        bad = bad & (s.str.strip_chars() != "").fill_null(True)
    return conv, bad


def import_table(
    path: str | os.PathLike[str],
    mapping: Mapping[str, str],
    *,
    attempts: bool = False,
    time_format: TimeFormat = "seconds",
    units: Mapping[str, str] | None = None,
    task_type: str | None = None,
) -> pl.DataFrame:
    """The table at ``path`` mapped to the trace schema (or, with ``attempts``, the
    attempt schema); see the module docstring for the rules.

    Returns a validated frame sorted by its time column (stable). Raises
    :class:`InputError` for a bad ``mapping``/``units``/``time_format`` (naming the
    target, source column or unit) and :class:`TraceError` for an unreadable file or
    a bad value (naming the file, row and source column).
    """
    path = Path(path)
    schema = ATTEMPT_SCHEMA if attempts else TRACE_SCHEMA
    kind = "attempt" if attempts else "trace"
    time_col = "start_s" if attempts else "arrival_s"
    if time_format not in TIME_FORMATS:
        raise InputError(
            f"time_format: expected one of {', '.join(TIME_FORMATS)}, got {time_format!r}"
        )
    if not mapping:
        raise InputError(
            f"mapping: nothing to map (give source=target pairs; {kind} columns: "
            f"{', '.join(schema)})"
        )
    targets: dict[str, str] = {}  # target -> source
    for source, target in mapping.items():
        if target not in schema:
            close = difflib.get_close_matches(target, list(schema), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(
                f"mapping: unknown target {target!r} for {source!r} ({hint}{kind} columns: "
                f"{', '.join(schema)})"
            )
        if target in targets:
            raise InputError(
                f"mapping: target {target!r} is mapped twice ({targets[target]!r} and {source!r})"
            )
        targets[target] = source

    scale: dict[str, float] = {}
    for key, unit in (units or {}).items():
        target = key if key in schema else f"{key}_s"
        allowed = (*_DURATIONS, time_col) if time_format == "seconds" else _DURATIONS
        if target not in allowed:
            raise InputError(
                f"units: {key!r} is not a duration column (units apply to: "
                f"{', '.join(c.removesuffix('_s') for c in allowed)})"
            )
        if target not in targets:
            raise InputError(f"units: {key!r} is not mapped (map a column to {target!r} first)")
        if unit not in DURATION_UNITS:
            raise InputError(
                f"units: unknown unit {unit!r} for {key!r} (expected one of "
                f"{', '.join(DURATION_UNITS)})"
            )
        scale[target] = DURATION_UNITS[unit]

    raw = read_table(path, what=f"table to map to the {kind} schema")
    missing = [s for s in targets.values() if s not in raw.columns]
    if missing:
        shown = ", ".join(raw.columns[:20]) + (", ..." if raw.width > 20 else "")
        raise InputError(
            f"mapping: {path}: no column {', '.join(repr(m) for m in missing)} (found: {shown})"
        )

    n = raw.height
    src = str(path)
    columns: dict[str, pl.Series] = {}
    for target, source in targets.items():
        s = raw.get_column(source).alias(target)
        if target == time_col and time_format != "seconds":
            ns, bad = timestamps_ns(s, time_format)
            index = _first_true(bad | ns.is_null())
            if index is not None:
                raise _row_error(src, index, source, time_example(time_format), s[index])
            s = ((ns - ns.min()).cast(pl.Float64) / 1e9).alias(target)
        elif target in scale:
            conv, bad = _number(s)
            index = _first_true(bad)
            if index is not None:
                raise _row_error(src, index, source, "a number", s[index])
            s = (conv * scale[target]).alias(target)
        columns[target] = s
    if "task_id" not in columns:
        columns["task_id"] = pl.Series("task_id", [f"{path.stem}-{i:06d}" for i in range(1, n + 1)])
    if "task_type" not in columns:
        default = task_type if task_type else (None if attempts else UNKNOWN)
        columns["task_type"] = pl.Series("task_type", [default] * n, dtype=pl.String)
    frame = pl.DataFrame(list(columns.values()))
    if attempts and "attempt" not in columns and time_col in columns:
        start, _ = _as_float(frame.get_column(time_col), required=True)
        frame = (
            frame.with_columns(start.alias("__start"), pl.int_range(0, n).alias("__row"))
            .sort("__start", "__row", nulls_last=True)
            .with_columns(
                pl.int_range(1, pl.len() + 1, dtype=pl.Int64)
                .over("task_id", "model" if "model" in columns else "task_id")
                .alias("attempt")
            )
            .sort("__row")
            .drop("__start", "__row")
        )
    try:
        out = (
            validate_attempts(frame, source=src) if attempts else validate_trace(frame, source=src)
        )
    except TraceError as exc:
        message = str(exc)
        for target, source in targets.items():
            message = message.replace(
                f"column '{target}'", f"column '{source}' (mapped to '{target}')"
            )
        raise TraceError(message) from None
    return out.sort(time_col, maintain_order=True)

"""The attempt-record schema and its I/O: one row per provider call.

A task trace (:mod:`sim.traces.tasks`) has one row per *task*; attempt records have one row
per *attempt* -- every call the router (or another tool) made, retries and fallbacks
included. They are what ``sim calibrate`` fits latency distributions, error mixes and
retry behaviour from. The live router writes them with
:class:`router.recording.AttemptRecorder`; the importers of :mod:`sim.traces` write
them from LiteLLM spend logs, llmperf results and generic CSV files.

===================== ======== ========= ==============================================
column                dtype    required  meaning
===================== ======== ========= ==============================================
``task_id``           String   yes       the task the attempt belongs to, non-empty
``model``             String   yes       the model called (the router's id), non-empty
``attempt``           Int64    yes       1-based number of this call on ``model``
                                         within the task, >= 1
``start_s``           Float64  yes       start, seconds on the task trace's clock
                                         (the epoch of its ``arrival_s``), >= 0
``latency_s``         Float64  yes       the call's duration in seconds, >= 0
``ttft_s``            Float64  no        time to first token (streamed), >= 0
``outcome``           String   yes       one of :data:`ATTEMPT_OUTCOMES`: an
                                         :class:`~router.outcome.ErrorKind` value, or
                                         ``cancelled``/``error``/``bad_spec`` for a
                                         call the driver aborted
``status``            Int64    no        HTTP status, 100..599
``retry_after_s``     Float64  no        the provider's Retry-After, >= 0
``prompt_tokens``     Int64    no        provider-reported usage, >= 0
``completion_tokens`` Int64    no        provider-reported usage, >= 0
``cost_usd``          Float64  no        what the call cost, >= 0
``task_type``         String   no        the task's type
``provider_model``    String   no        the model name the provider reported
``request_id``        String   no        the provider's (or proxy's) request id
===================== ======== ========= ==============================================

"no" means the column may be absent from a file or hold nulls (unknown); a frame
returned by :func:`read_attempts` or :func:`validate_attempts` always has all the
columns above, in this order and dtype (absent ones all null), then any other
columns of the file unchanged. ``(task_id, model, attempt)`` is unique.

Files are Parquet, NDJSON (``.ndjson``/``.jsonl``) or CSV, chosen by extension,
exactly as for task traces; a crash-torn last NDJSON line (no newline, not JSON) is
ignored. Every violation raises :class:`~sim.errors.TraceError` with one line naming
the file, the 1-based data row and the column. ``sim replay`` reads task traces
only; attempt records are for calibration and analysis.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl

from router.recording import ABORT_OUTCOMES, ATTEMPT_COLUMNS, ATTEMPT_OUTCOMES
from router.task import UNKNOWN
from sim.errors import TraceError
from sim.traces.tasks import (
    _NDJSON_KEY_SAMPLE,
    TRACE_EXTENSIONS,
    _as_float,
    _as_int,
    _as_str,
    _check_json_record,
    _first_line,
    _first_true,
    _missing_columns_error,
    _read_csv,
    _read_parquet,
    _row_error,
    _show,
    ndjson_bytes,
    validate_trace,
)

__all__ = [
    "ABORT_OUTCOMES",
    "ATTEMPT_OUTCOMES",
    "ATTEMPT_REQUIRED",
    "ATTEMPT_SCHEMA",
    "discover_attempt_files",
    "read_attempts",
    "tasks_from_attempts",
    "validate_attempts",
    "write_attempts",
]

#: Every column of the attempt schema with its dtype, in canonical order.
ATTEMPT_SCHEMA: dict[str, pl.DataType] = {
    "task_id": pl.String(),
    "model": pl.String(),
    "attempt": pl.Int64(),
    "start_s": pl.Float64(),
    "latency_s": pl.Float64(),
    "ttft_s": pl.Float64(),
    "outcome": pl.String(),
    "status": pl.Int64(),
    "retry_after_s": pl.Float64(),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
    "task_type": pl.String(),
    "provider_model": pl.String(),
    "request_id": pl.String(),
}
assert tuple(ATTEMPT_SCHEMA) == ATTEMPT_COLUMNS  # one schema, written down twice

#: The columns every attempt file must have (the others may be absent or null).
ATTEMPT_REQUIRED: tuple[str, ...] = (
    "task_id",
    "model",
    "attempt",
    "start_s",
    "latency_s",
    "outcome",
)

_OUTCOME_SET = frozenset(ATTEMPT_OUTCOMES)


def _as_attempt(s: pl.Series, *, required: bool) -> tuple[pl.Series, pl.Series]:
    conv, bad = _as_int(s, required=required)
    return conv, (bad | (conv < 1)).fill_null(bad)


def _as_status(s: pl.Series, *, required: bool) -> tuple[pl.Series, pl.Series]:
    conv, bad = _as_int(s, required=required)
    return conv, (bad | (conv < 100) | (conv > 599)).fill_null(bad)


def _as_outcome(s: pl.Series, *, required: bool) -> tuple[pl.Series, pl.Series]:
    conv, bad = _as_str(s, required=required)
    known = conv.is_in(list(_OUTCOME_SET))
    unknown = conv.is_not_null() & ~known
    return conv, (bad | unknown).fill_null(bad)


_CONVERTERS = {
    "task_id": (_as_str, "a non-empty string"),
    "model": (_as_str, "a non-empty string"),
    "attempt": (_as_attempt, "an integer >= 1"),
    "start_s": (_as_float, "a non-negative number"),
    "latency_s": (_as_float, "a non-negative number"),
    "ttft_s": (_as_float, "a non-negative number"),
    "outcome": (_as_outcome, "one of " + ", ".join(ATTEMPT_OUTCOMES)),
    "status": (_as_status, "an HTTP status 100..599"),
    "retry_after_s": (_as_float, "a non-negative number"),
    "prompt_tokens": (_as_int, "a non-negative integer"),
    "completion_tokens": (_as_int, "a non-negative integer"),
    "cost_usd": (_as_float, "a non-negative number"),
    "task_type": (_as_str, "a string"),
    "provider_model": (_as_str, "a string"),
    "request_id": (_as_str, "a string"),
}


# ------------------------------------------------------------------------ #
# Validation                                                                #
# ------------------------------------------------------------------------ #


def _key_series(keys: pl.DataFrame) -> pl.Series:
    """The rows of ``keys`` as one struct series (for distinctness checks)."""
    return keys.select(pl.struct(pl.all()).alias("key")).to_series()


def validate_attempts(df: pl.DataFrame, *, source: str = "attempts") -> pl.DataFrame:
    """Cast ``df`` to the attempt schema and validate it; row order is kept.

    Returns a new frame with every schema column in canonical order and dtype
    (optional columns ``df`` lacks are added, all null), then ``df``'s other columns
    unchanged. Raises :class:`TraceError` naming ``source`` for an empty frame, a
    missing required column, or the earliest bad row: a value that does not convert
    or is out of range, a missing required value, an unknown outcome, or a
    ``(task_id, model, attempt)`` seen before (naming both rows).
    """
    if df.height == 0:
        raise TraceError(f"{source}: no attempt records (no rows)")
    missing = [c for c in ATTEMPT_REQUIRED if c not in df.columns]
    if missing:
        raise _missing_columns_error(source, missing, df.columns)

    converted: dict[str, pl.Series] = {}
    problems: list[tuple[int, int, TraceError]] = []
    for order, (name, dtype) in enumerate(ATTEMPT_SCHEMA.items()):
        if name not in df.columns:
            converted[name] = pl.Series(name, [None] * df.height, dtype=dtype)
            continue
        convert, expected = _CONVERTERS[name]
        raw = df.get_column(name)
        conv, bad = convert(raw, required=name in ATTEMPT_REQUIRED)
        converted[name] = conv.cast(dtype).alias(name)
        index = _first_true(bad)
        if index is not None:
            problems.append((index, order, _row_error(source, index, name, expected, raw[index])))

    keys = pl.DataFrame([converted["task_id"], converted["model"], converted["attempt"]])
    repeated = _first_true(~_key_series(keys).is_first_distinct())
    if repeated is not None:
        row = keys.row(repeated)
        first = _first_true(
            (keys["task_id"] == row[0]) & (keys["model"] == row[1]) & (keys["attempt"] == row[2])
        )
        assert first is not None  # the key occurs at least twice
        problems.append(
            (
                repeated,
                0,
                TraceError(
                    f"{source}: row {repeated + 1}, column 'attempt': expected a unique "
                    f"(task_id, model, attempt), got ({_show(row[0])}, {_show(row[1])}, "
                    f"{row[2]}) again (first at row {first + 1})"
                ),
            )
        )
    if problems:
        raise min(problems, key=lambda p: (p[0], p[1]))[2]
    extras = [df.get_column(c) for c in df.columns if c not in ATTEMPT_SCHEMA]
    return pl.DataFrame([*converted.values(), *extras])


# ------------------------------------------------------------------------ #
# Reading                                                                   #
# ------------------------------------------------------------------------ #


def _format_of(path: Path) -> str:
    fmt = TRACE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(TRACE_EXTENSIONS)
        raise TraceError(
            f"{path}: unknown attempt-record format '{path.suffix or '(no extension)'}' "
            f"(expected one of {known})"
        )
    return fmt


def _read_ndjson(path: Path) -> pl.DataFrame:
    """NDJSON in the attempt schema, ignoring a crash-torn final line (as sim.traces.tasks does)."""
    source = str(path)
    data = ndjson_bytes(path, whole=True)
    assert data is not None  # whole=True always reads the file

    keys: dict[str, None] = {}
    row_no = 0
    for line in io.BytesIO(data):
        if not line.strip():
            continue
        row_no += 1
        error = _check_json_record(source, row_no, line)
        if error is not None:
            raise error
        if row_no <= _NDJSON_KEY_SAMPLE:
            keys.update(dict.fromkeys(json.loads(line)))
    if not keys:
        raise TraceError(f"{path}: no attempt records (no rows)")
    missing = [c for c in ATTEMPT_REQUIRED if c not in keys]
    if missing:
        raise _missing_columns_error(source, missing, list(keys))
    names = [*keys, *(c for c in ATTEMPT_SCHEMA if c not in keys)]
    try:
        # Fast path in the schema's dtypes; else all text, so that the casts can name
        # the first bad row and show its value.
        try:
            df = pl.read_ndjson(
                io.BytesIO(data), schema={k: ATTEMPT_SCHEMA.get(k, pl.String()) for k in names}
            )
        except pl.exceptions.PolarsError:
            df = pl.read_ndjson(io.BytesIO(data), schema={k: pl.String() for k in names})
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise TraceError(f"{path}: not a readable NDJSON file ({_first_line(exc)})") from exc
    absent = [
        c for c in ATTEMPT_SCHEMA if c not in keys and df.get_column(c).null_count() == df.height
    ]
    return df.drop(absent)


_READERS = {"parquet": _read_parquet, "csv": _read_csv, "ndjson": _read_ndjson}


def discover_attempt_files(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> list[Path]:
    """The attempt files named by ``paths``: files as given, directories' files by name.

    A directory contributes its non-hidden ``.parquet``/``.ndjson``/``.jsonl``/``.csv``
    files, sorted by name, non-recursively (README, LICENSE and the like are skipped).
    A missing path, a file of unknown format or a directory without such files raises
    :class:`TraceError` naming it.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                (
                    p
                    for p in path.iterdir()
                    if p.suffix.lower() in TRACE_EXTENSIONS
                    and not p.name.startswith(".")
                    and p.is_file()
                ),
                key=lambda p: p.name,
            )
            if not files:
                known = ", ".join(TRACE_EXTENSIONS)
                raise TraceError(f"{path}: directory holds no attempt-record file ({known})")
            found.extend(files)
        elif path.exists():
            _format_of(path)
            found.append(path)
        else:
            raise TraceError(f"{path}: no such file or directory")
    return found


def _read_one(path: Path) -> pl.DataFrame:
    fmt = _format_of(path)
    if not path.is_file():
        raise TraceError(f"{path}: attempt-record file does not exist")
    return validate_attempts(_READERS[fmt](path), source=str(path))


def read_attempts(
    path_or_dir: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> pl.DataFrame:
    """Read attempt records from a file, a directory of files, or several of either.

    Each file is read by its extension, cast and validated (:func:`validate_attempts`,
    errors naming the file, row and column); the files' frames are stacked in
    :func:`discover_attempt_files` order (columns outside the schema are kept only if
    every file has them) and sorted by ``start_s`` (stable). ``(task_id, model,
    attempt)`` must be unique across files too: a repeat raises :class:`TraceError`
    naming both files and rows.
    """
    files = discover_attempt_files(path_or_dir)
    frames = [_read_one(p) for p in files]
    if len(frames) == 1:
        df = frames[0]
    else:
        common = [c for c in frames[0].columns if all(c in f.columns for f in frames[1:])]
        tagged = [
            f.select(common).with_columns(
                pl.lit(i, dtype=pl.Int64).alias("__file"),
                pl.int_range(1, f.height + 1, dtype=pl.Int64).alias("__row"),
            )
            for i, f in enumerate(frames)
        ]
        both = pl.concat(tagged, how="vertical")
        key = ["task_id", "model", "attempt"]
        dup = _first_true(~_key_series(both.select(key)).is_first_distinct())
        if dup is not None:
            r = both.row(dup, named=True)
            first = both.filter(
                (pl.col("task_id") == r["task_id"])
                & (pl.col("model") == r["model"])
                & (pl.col("attempt") == r["attempt"])
            ).row(0, named=True)
            raise TraceError(
                f"{files[r['__file']]}: row {r['__row']}, column 'attempt': expected a unique "
                f"(task_id, model, attempt), got ({_show(r['task_id'])}, {_show(r['model'])}, "
                f"{r['attempt']}) again (first in {files[first['__file']]} row {first['__row']})"
            )
        df = both.drop("__file", "__row")
    if df.get_column("start_s").is_sorted():
        return df
    return df.sort("start_s", maintain_order=True)


# ------------------------------------------------------------------------ #
# Writing                                                                   #
# ------------------------------------------------------------------------ #


def write_attempts(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Validate ``df`` and write it to ``path`` atomically; returns the path.

    The format follows the extension. The frame is cast to the schema (row order
    kept; all schema columns written, nulls where unknown) and written to a hidden
    temporary file beside ``path``, flushed to disk and renamed over it: readers see
    the old file or the new one, never part of one, and a failure leaves nothing
    behind. A schema violation raises :class:`TraceError` before anything is
    written; OS errors propagate as :class:`OSError`. New files get mode 0644.
    """
    path = Path(path)
    fmt = _format_of(path)
    out = validate_attempts(df, source=f"attempt records for {path}")
    _atomic_write(path, lambda tmp: _write_frame(out, tmp, fmt))
    return path


def _write_frame(df: pl.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        df.write_parquet(path)
    elif fmt == "ndjson":
        df.write_ndjson(path)
    else:
        df.write_csv(path)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a hidden temp file beside ``path``, fsync, rename over it."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------ #
# Tasks                                                                     #
# ------------------------------------------------------------------------ #


def tasks_from_attempts(attempts: pl.DataFrame, *, task_type: str | None = None) -> pl.DataFrame:
    """The task trace (:mod:`sim.traces.tasks` schema) that a set of attempt records implies.

    One task per ``task_id``; its attempts in start order (ties: row order), the last
    one being the *final* attempt:

    - ``arrival_s``: the first attempt's ``start_s``;
    - ``task_type``: the first non-null ``task_type`` of its attempts, else
      ``task_type``, else ``"unknown"`` (routed by the config's default route);
    - ``prompt_tokens`` / ``completion_tokens``: the largest reported over its
      attempts (0 when none reported any: the trace needs a size);
    - ``model``: the final attempt's model; ``success``: its outcome is ``ok``;
      ``error_kind``: its outcome when not ``ok``;
    - ``latency_s``: from the first start to the last end (waits included);
    - ``cost_usd``: the sum of the known costs (null if none is known).

    ``attempts`` is validated first (:func:`validate_attempts`); the result is
    validated as a trace and sorted by arrival. Raises :class:`TraceError`.
    """
    df = validate_attempts(attempts, source="attempt records")
    fallback = task_type if task_type else UNKNOWN
    ordered = df.with_row_index("_row").sort("start_s", "_row")
    end = pl.col("start_s") + pl.col("latency_s")
    tasks = (
        ordered.group_by("task_id", maintain_order=True)
        .agg(
            pl.col("start_s").min().alias("arrival_s"),
            pl.col("task_type").drop_nulls().first().alias("task_type"),
            pl.col("prompt_tokens").max().alias("prompt_tokens"),
            pl.col("completion_tokens").max().alias("completion_tokens"),
            pl.col("model").last().alias("model"),
            (end.max() - pl.col("start_s").min()).alias("latency_s"),
            (pl.col("outcome").last() == "ok").alias("success"),
            pl.when(pl.col("cost_usd").is_not_null().any())
            .then(pl.col("cost_usd").sum())
            .alias("cost_usd"),
            pl.col("outcome").last().alias("_final"),
        )
        .with_columns(
            pl.col("task_type").fill_null(fallback),
            pl.col("prompt_tokens").fill_null(0),
            pl.col("completion_tokens").fill_null(0),
            pl.when(pl.col("_final") != "ok").then(pl.col("_final")).alias("error_kind"),
            pl.col("latency_s").clip(lower_bound=0.0),
        )
        .drop("_final")
        .sort("arrival_s", maintain_order=True)
    )
    return validate_trace(tasks, source="task trace from attempt records")

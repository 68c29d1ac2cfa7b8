"""The task-trace schema and its I/O.

A *trace* is one table (a :class:`polars.DataFrame`) with one row per task, the
same for synthetic traces (:mod:`sim.traces.synth`), traces recorded by the live router
and imported public traces (:mod:`sim.traces.azure`):

===================== ======== ========= ==============================================
column                dtype    required  meaning
===================== ======== ========= ==============================================
``task_id``           String   yes       unique, non-empty
``arrival_s``         Float64  yes       seconds from the trace start, finite and >= 0
``task_type``         String   yes       non-empty; canonical types in router.task
``prompt_tokens``     Int64    yes       >= 0
``completion_tokens`` Int64    yes       >= 0
``payload``           String   no        the prompt text (nulls allowed)
``model``             String   no        recorded: the model that finished the task
``latency_s``         Float64  no        recorded: finite and >= 0 (nulls allowed)
``success``           Boolean  no        recorded: the outcome (nulls allowed)
``cost_usd``          Float64  no        recorded: finite and >= 0 (nulls allowed)
``error_kind``        String   no        recorded: e.g. "timeout", "429", "5xx"
===================== ======== ========= ==============================================

Files are Parquet (the default), NDJSON (``.ndjson``/``.jsonl``) or CSV, chosen by
extension. :func:`read_trace` casts every file to the schema, validates it and
sorts it by arrival; each violation raises :class:`~sim.errors.TraceError` whose
one-line message names the file, the 1-based data row, the column and what was
expected. :func:`write_trace` is atomic. :func:`replay_columns` hands the
simulator plain lists it can iterate quickly.

Optional columns appear in a frame only when the file has them; columns outside
the schema are kept, unchanged, after the schema's columns.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import polars as pl

from sim.errors import TraceError

__all__ = [
    "OPTIONAL_COLUMNS",
    "RECORDED_COLUMNS",
    "REQUIRED_COLUMNS",
    "TRACE_EXTENSIONS",
    "TRACE_SCHEMA",
    "ReplayColumns",
    "discover_traces",
    "read_replay_columns",
    "read_trace",
    "replay_columns",
    "validate_trace",
    "write_trace",
]

#: Columns every trace has, with their dtypes, in canonical order.
REQUIRED_COLUMNS: dict[str, pl.DataType] = {
    "task_id": pl.String(),
    "arrival_s": pl.Float64(),
    "task_type": pl.String(),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
}

#: Optional task columns.
OPTIONAL_COLUMNS: dict[str, pl.DataType] = {
    "payload": pl.String(),
}

#: Optional columns saying what happened when the trace was recorded live.
RECORDED_COLUMNS: dict[str, pl.DataType] = {
    "model": pl.String(),
    "latency_s": pl.Float64(),
    "success": pl.Boolean(),
    "cost_usd": pl.Float64(),
    "error_kind": pl.String(),
}

#: The whole schema, in canonical column order.
TRACE_SCHEMA: dict[str, pl.DataType] = {
    **REQUIRED_COLUMNS,
    **OPTIONAL_COLUMNS,
    **RECORDED_COLUMNS,
}

#: File extensions (lower case) recognised as traces, and their formats.
TRACE_EXTENSIONS: dict[str, str] = {
    ".parquet": "parquet",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".csv": "csv",
}

# The NDJSON reader learns the column names from this many leading records; their
# dtypes come from the schema (or text), so no type inference is needed. Columns
# outside the schema that first appear after these records are not read.
_NDJSON_KEY_SAMPLE = 100

# How much of a bad value or a third-party message goes into a one-line error.
_MAX_SHOWN = 80


# --------------------------------------------------------------------------- #
# Column conversion: each returns the converted series and a mask of bad rows. #
# They are shared with the importers (sim.traces.azure), hence the common shape.      #
# --------------------------------------------------------------------------- #


def _strict_cast(s: pl.Series, dtype: pl.DataType) -> pl.Series | None:
    """``s`` cast to ``dtype`` if every value converts as is, else None.

    The fast path for text columns that are clean (the usual case); the careful,
    slower conversion runs only when this fails.
    """
    try:
        return s.cast(dtype, strict=True)
    except pl.exceptions.PolarsError:
        return None


def _as_float(s: pl.Series, *, required: bool) -> tuple[pl.Series, pl.Series]:
    """``s`` as finite, non-negative Float64; ``bad`` marks rows that are not."""
    dtype = s.dtype
    if dtype.is_numeric():
        conv = s.cast(pl.Float64, strict=False)
    elif dtype == pl.String:
        fast = _strict_cast(s, pl.Float64())
        conv = fast if fast is not None else s.str.strip_chars().cast(pl.Float64, strict=False)
    else:  # booleans, lists, structs...: never a number
        conv = pl.Series(s.name, [None] * len(s), dtype=pl.Float64)
    invalid = conv.is_null() | ~conv.is_finite() | (conv < 0)
    bad = invalid if required else (s.is_not_null() & invalid)
    return conv, bad.fill_null(True)


def _as_int(s: pl.Series, *, required: bool) -> tuple[pl.Series, pl.Series]:
    """``s`` as non-negative Int64; integral floats (``3.0``, ``"1e3"``) are accepted."""
    dtype = s.dtype
    fast = _strict_cast(s, pl.Int64()) if dtype == pl.String else None
    if fast is not None:
        conv = fast
    elif dtype.is_integer():
        conv = s.cast(pl.Int64, strict=False)
    elif dtype.is_float() or dtype.is_decimal() or dtype == pl.String:
        v = pl.col("v")
        # Text that is an integer converts exactly; anything else goes through a float
        # (a numeric column's non-strict Int64 cast would truncate 4.5 to 4, silently).
        if dtype == pl.String:
            v = v.str.strip_chars()
            as_int = v.cast(pl.Int64, strict=False)
        else:
            as_int = pl.lit(None, dtype=pl.Int64)
        as_float = v.cast(pl.Float64, strict=False)
        # An integral float below 2**63 converts exactly enough for token counts.
        integral = (
            as_float.is_finite() & (as_float == as_float.floor()) & (as_float.abs() < 2.0**63)
        )
        conv = (
            pl.DataFrame({"v": s})
            .select(
                pl.coalesce(as_int, pl.when(integral).then(as_float.cast(pl.Int64, strict=False)))
            )
            .to_series()
        )
    else:
        conv = pl.Series(s.name, [None] * len(s), dtype=pl.Int64)
    conv = conv.alias(s.name)
    invalid = conv.is_null() | (conv < 0)
    bad = invalid if required else (s.is_not_null() & invalid)
    return conv, bad.fill_null(True)


def _as_str(s: pl.Series, *, required: bool) -> tuple[pl.Series, pl.Series]:
    """``s`` as String; a required column must be non-blank in every row."""
    dtype = s.dtype
    if dtype == pl.String:
        conv = s
    elif (
        dtype.is_numeric()
        or dtype in (pl.Boolean, pl.Categorical, pl.Null)
        or isinstance(dtype, pl.Enum)
    ):
        conv = s.cast(pl.String)
    else:
        conv = pl.Series(s.name, [None] * len(s), dtype=pl.String)
    if required:
        bad = conv.is_null() | (conv.str.strip_chars() == "")
    else:
        bad = s.is_not_null() & conv.is_null()
    return conv, bad.fill_null(True)


_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False}


def _as_bool(s: pl.Series, *, required: bool) -> tuple[pl.Series, pl.Series]:
    """``s`` as Boolean: booleans, 0/1, or the strings true/false/1/0 (any case)."""
    dtype = s.dtype
    if dtype == pl.Boolean:
        conv = s
    elif dtype == pl.String:
        conv = (
            s.str.strip_chars()
            .str.to_lowercase()
            .replace_strict(_BOOL_WORDS, default=None, return_dtype=pl.Boolean)
        )
    elif dtype.is_integer():
        conv = s.replace_strict({1: True, 0: False}, default=None, return_dtype=pl.Boolean)
    else:
        conv = pl.Series(s.name, [None] * len(s), dtype=pl.Boolean)
    conv = conv.alias(s.name)
    bad = conv.is_null() if required else (s.is_not_null() & conv.is_null())
    return conv, bad.fill_null(True)


# Per schema column: the converter and what a bad value is said to fail.
_CONVERTERS = {
    "task_id": (_as_str, "a non-empty string"),
    "arrival_s": (_as_float, "a non-negative number"),
    "task_type": (_as_str, "a non-empty string"),
    "prompt_tokens": (_as_int, "a non-negative integer"),
    "completion_tokens": (_as_int, "a non-negative integer"),
    "payload": (_as_str, "a string"),
    "model": (_as_str, "a string"),
    "latency_s": (_as_float, "a non-negative number"),
    "success": (_as_bool, "true or false"),
    "cost_usd": (_as_float, "a non-negative number"),
    "error_kind": (_as_str, "a string"),
}


def _show(value: Any) -> str:
    """A cell value as it appears in an error message."""
    if value is None:
        return "a missing value"
    if isinstance(value, str):
        text = value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 3] + "..."
        return "'" + text.replace("\n", "\\n").replace("\r", "\\r") + "'"
    text = str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _first_line(exc: BaseException) -> str:
    """The first non-blank line of a third-party exception message, shortened."""
    for line in str(exc).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 2 * _MAX_SHOWN else line[: 2 * _MAX_SHOWN - 3] + "..."
    return type(exc).__name__


def _first_true(mask: pl.Series) -> int | None:
    """Index of the first True in ``mask``, or None."""
    idx = mask.arg_true()
    return None if idx.is_empty() else int(idx[0])


def _row_error(source: str, index: int, column: str, expected: str, value: Any) -> TraceError:
    """The standard one-line error for a bad cell (``index`` is 0-based)."""
    return TraceError(
        f"{source}: row {index + 1}, column '{column}': expected {expected}, got {_show(value)}"
    )


def _missing_columns_error(source: str, missing: list[str], found: list[str]) -> TraceError:
    names = ", ".join(f"'{m}'" for m in missing)
    plural = "s" if len(missing) > 1 else ""
    shown = ", ".join(found[:20]) + (", ..." if len(found) > 20 else "")
    return TraceError(
        f"{source}: missing required column{plural} {names} (found: {shown or 'no columns'})"
    )


# A problem found in a trace: (0-based row, column order in TRACE_SCHEMA, the error).
_Problem = tuple[int, int, TraceError]


def _convert_columns(
    df: pl.DataFrame, source: str, offset: int = 0
) -> tuple[dict[str, pl.Series], list[_Problem]]:
    """The schema's columns of ``df`` converted, and each column's first bad row.

    ``df`` holds the file's rows from ``offset`` on (0 for a whole file, more for a
    batch), so the problems name the file's rows. Columns outside the schema are
    left out.
    """
    converted: dict[str, pl.Series] = {}
    problems: list[_Problem] = []
    for order, (name, dtype) in enumerate(TRACE_SCHEMA.items()):
        if name not in df.columns:
            continue
        convert, expected = _CONVERTERS[name]
        raw = df.get_column(name)
        conv, bad = convert(raw, required=name in REQUIRED_COLUMNS)
        converted[name] = conv.cast(dtype).alias(name)
        index = _first_true(bad)
        if index is not None:
            row = offset + index
            problems.append((row, order, _row_error(source, row, name, expected, raw[index])))
    return converted, problems


def _repeated_id(source: str, ids: pl.Series) -> _Problem | None:
    """The first row whose task id occurred before (``ids`` from the file's first row), or
    None."""
    repeated = _first_true(~ids.is_first_distinct())
    if repeated is None:
        return None
    task_id = ids[repeated]
    first = _first_true(ids == task_id)
    assert first is not None  # the id occurs at least twice
    return (
        repeated,
        0,
        TraceError(
            f"{source}: row {repeated + 1}, column 'task_id': expected a unique task id, "
            f"got {_show(task_id)} again (first at row {first + 1})"
        ),
    )


def _earliest(problems: list[_Problem]) -> TraceError:
    """The error of the earliest row (then the earliest column): a user fixing a file
    from the top meets its problems in order. Of equal keys the first listed wins."""
    return min(problems, key=lambda p: (p[0], p[1]))[2]


# ------------------------------------------------------------------------ #
# Validation                                                                #
# ------------------------------------------------------------------------ #


def validate_trace(df: pl.DataFrame, *, source: str = "trace") -> pl.DataFrame:
    """Cast ``df`` to the trace schema and validate it; row order is kept.

    Returns a new frame: the schema's columns that ``df`` has (all required ones,
    the optional ones it carries) in canonical order and dtype, then any other
    columns unchanged. Raises :class:`TraceError` naming ``source`` for an empty
    frame, a missing required column, or the earliest bad row (a value that does
    not convert, is out of range, or a required value that is missing; a task
    id seen before names both rows). All checks are vectorised.
    """
    if df.height == 0:
        raise TraceError(f"{source}: empty trace (no rows)")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise _missing_columns_error(source, missing, df.columns)

    converted, problems = _convert_columns(df, source)
    repeated = _repeated_id(source, converted["task_id"])
    if repeated is not None:
        problems.append(repeated)
    if problems:
        raise _earliest(problems)

    extras = [df.get_column(c) for c in df.columns if c not in TRACE_SCHEMA]
    return pl.DataFrame([*converted.values(), *extras])


# ------------------------------------------------------------------------ #
# Reading                                                                   #
# ------------------------------------------------------------------------ #


def _format_of(path: Path) -> str:
    fmt = TRACE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(TRACE_EXTENSIONS)
        raise TraceError(
            f"{path}: unknown trace format '{path.suffix or '(no extension)'}' "
            f"(expected one of {known})"
        )
    return fmt


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise TraceError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from exc


def _locate_bad_csv_row(source: str, stream: IO[str]) -> TraceError | None:
    """Slow path after polars refused a CSV: find the first row it could not take."""
    row_no = 0
    try:
        reader = csv.reader(stream, strict=True)
        header = next(reader, None)
        if header is None:
            return None
        for fields in reader:
            row_no += 1
            if len(fields) > len(header):
                return TraceError(
                    f"{source}: row {row_no}: expected at most {len(header)} fields "
                    f"(the header's), found {len(fields)}"
                )
    except csv.Error as exc:
        return TraceError(f"{source}: row {row_no + 1}: malformed CSV ({_first_line(exc)})")
    except UnicodeDecodeError as exc:
        return TraceError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    return None


def _read_csv(path: Path) -> pl.DataFrame:
    try:
        # Every column as text: the schema's casts then report the raw value ('-3').
        return pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError as exc:
        raise TraceError(f"{path}: empty file (no header, no rows)") from exc
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        with contextlib.suppress(OSError), open(path, encoding="utf-8", newline="") as fh:
            located = _locate_bad_csv_row(str(path), fh)
            if located is not None:
                raise located from exc
        raise TraceError(f"{path}: not a readable CSV file ({_first_line(exc)})") from exc


def _check_json_record(source: str, row_no: int, line: bytes) -> TraceError | None:
    """None if ``line`` is one JSON object, else the error naming its row."""
    try:
        record = json.loads(line.strip())
    except json.JSONDecodeError as exc:
        return TraceError(
            f"{source}: row {row_no}: not valid JSON ({exc.msg} at character {exc.pos + 1})"
        )
    except (ValueError, UnicodeDecodeError) as exc:
        return TraceError(f"{source}: row {row_no}: not valid JSON ({_first_line(exc)})")
    if not isinstance(record, dict):
        return TraceError(
            f"{source}: row {row_no}: expected a JSON object, got {type(record).__name__}"
        )
    return None


def ndjson_bytes(path: Path, *, whole: bool) -> bytes | None:
    """An NDJSON file's bytes without a final line torn by a crash.

    A live recorder killed mid-write leaves a last line without its newline; if that
    line is not a whole JSON object it is not data and is dropped. (A last line that
    is whole JSON is kept: hand-made files often lack the newline.) Returns None when
    the file ends with a newline and ``whole`` is false (the caller may then stream
    the file itself). Raises :class:`TraceError` for an unreadable or empty file.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            raise TraceError(f"{path}: empty file (no rows)")
        with open(path, "rb") as fh:
            fh.seek(size - 1)
            complete = fh.read(1) == b"\n"
        if complete and not whole:
            return None
        data = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read file ({_first_line(exc)})") from exc
    if not complete:
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        if tail.strip() and _check_json_record(str(path), 0, tail) is not None:
            data = data[:cut]
    return data


def _read_ndjson(path: Path) -> pl.DataFrame:
    """NDJSON, ignoring a final line cut short by a crash (no newline, not JSON)."""
    source = str(path)
    data = ndjson_bytes(path, whole=False)

    def open_lines() -> IO[bytes]:
        return io.BytesIO(data) if data is not None else open(path, "rb")

    def source_of() -> Path | io.BytesIO:
        return io.BytesIO(data) if data is not None else path

    # Column names from the first records; a malformed one among them is reported
    # directly, with its row.
    keys: dict[str, None] = {}
    with open_lines() as fh:
        row_no = 0
        for line in fh:
            if not line.strip():
                continue  # blank lines are not rows (polars skips them too)
            row_no += 1
            error = _check_json_record(source, row_no, line)
            if error is not None:
                raise error
            keys.update(dict.fromkeys(json.loads(line)))
            if row_no >= _NDJSON_KEY_SAMPLE:
                break
    if not keys:
        raise TraceError(f"{path}: empty trace (no rows)")
    missing = [c for c in REQUIRED_COLUMNS if c not in keys]
    if missing:
        raise _missing_columns_error(source, missing, list(keys))
    names = [*keys, *(c for c in TRACE_SCHEMA if c not in keys)]
    try:
        # Fast path: the schema's dtypes (polars refuses, rather than coerces, a value
        # of another JSON type). Slow path: everything as text, so that the casts
        # can name the first bad row and show its value.
        try:
            df = pl.read_ndjson(
                source_of(), schema={k: TRACE_SCHEMA.get(k, pl.String()) for k in names}
            )
        except pl.exceptions.PolarsError:
            df = pl.read_ndjson(source_of(), schema={k: pl.String() for k in names})
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        with open_lines() as fh:
            row_no = 0
            for line in fh:
                if not line.strip():
                    continue
                row_no += 1
                error = _check_json_record(source, row_no, line)
                if error is not None:
                    raise error from exc
        raise TraceError(f"{path}: not a readable NDJSON file ({_first_line(exc)})") from exc
    # Optional columns were requested in case they first appear after the sample;
    # those that never appear are dropped again.
    absent = [
        c for c in TRACE_SCHEMA if c not in keys and df.get_column(c).null_count() == df.height
    ]
    return df.drop(absent)


_READERS = {"parquet": _read_parquet, "csv": _read_csv, "ndjson": _read_ndjson}


def read_trace(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Read a trace file (.parquet, .ndjson/.jsonl or .csv), cast, validate and sort it.

    Returns the frame of :func:`validate_trace`, sorted by ``arrival_s`` (stable:
    tasks arriving together keep their file order). Raises :class:`TraceError`
    for a missing file, an unknown extension, an empty or unreadable file, or any
    schema violation, naming the file, the 1-based data row and the column.

    For NDJSON a row is a non-blank line; a last line without a trailing newline
    that is not a whole JSON object (a crash-killed writer's partial line) is
    ignored, while a malformed line anywhere else is an error naming its row.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise TraceError(f"{path}: trace file {what}")
    df = validate_trace(_READERS[fmt](path), source=str(path))
    # Recorded traces are nearly always in order already; checking is cheaper than sorting.
    if df.get_column("arrival_s").is_sorted():
        return df
    return df.sort("arrival_s", maintain_order=True)


def discover_traces(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The trace files named by ``paths``, in order.

    Each path is a file (returned as is; its extension must be a trace format) or
    a directory, which contributes its trace files (:data:`TRACE_EXTENSIONS`,
    any case) sorted by name, non-recursively. Other files (README.md, LICENSE,
    ATTRIBUTION.md...) and hidden files (such as :func:`write_trace`'s temporary
    files) are ignored. A path that does not exist, a file of unknown format and a
    directory without trace files each raise :class:`TraceError` naming it.
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
                raise TraceError(f"{path}: directory holds no trace file ({known})")
            found.extend(files)
        elif path.exists():
            _format_of(path)
            found.append(path)
        else:
            raise TraceError(f"{path}: no such file or directory")
    return found


# ------------------------------------------------------------------------ #
# Writing                                                                   #
# ------------------------------------------------------------------------ #


def write_trace(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Validate ``df`` and write it to ``path`` atomically; returns the path.

    The format follows the extension (:data:`TRACE_EXTENSIONS`). The frame is cast
    to the schema (row order kept) and written to a hidden temporary file in the
    destination's directory, flushed to disk, then moved over ``path`` with
    :func:`os.replace`, so readers see the old file or the new one, never half of
    one. A schema violation raises :class:`TraceError` (nothing is written); OS
    errors (a missing directory, no space) propagate as :class:`OSError`.
    A new file gets mode 0644; an existing file keeps its mode.
    """
    path = Path(path)
    fmt = _format_of(path)
    out = validate_trace(df, source=f"trace for {path}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if fmt == "parquet":
            out.write_parquet(tmp)
        elif fmt == "ndjson":
            out.write_ndjson(tmp)
        else:
            out.write_csv(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; a trace is meant to be shared.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------ #
# Replay                                                                    #
# ------------------------------------------------------------------------ #


@dataclass(frozen=True, slots=True)
class ReplayColumns:
    """A trace's required columns, in arrival order.

    By default plain Python lists (:func:`replay_columns`): the simulator walks them
    element by element, and lists index far faster than a DataFrame's rows. Compact
    columns (``replay_columns(df, compact=True)``) hold the same values as arrays: the
    numbers as numpy arrays (``float64``/``int64``), the task ids as a pyarrow string
    array and the task types as a pyarrow dictionary array (a few distinct values),
    about 50 bytes a task instead of ~300, with no Python object per task. The
    simulator and :func:`sim.engine.replays.trace_key` accept either and give the same
    results; code that indexes the fields one element at a time should ask for lists.
    """

    task_ids: Any
    arrival_s: Any
    task_types: Any
    prompt_tokens: Any
    completion_tokens: Any
    #: For a sample cut from a longer trace: each task's index in that trace, so the
    #: world draws for it what it draws in the full trace (None: its position here).
    index: Any = None
    #: For a sample: the world key of the trace it was cut from (None: this trace's own
    #: content, :func:`sim.engine.replays.trace_key`).
    key: int | None = None

    def __len__(self) -> int:
        return len(self.task_ids)


def replay_columns(df: pl.DataFrame, *, compact: bool = False) -> ReplayColumns:
    """The required columns of a validated trace (from :func:`read_trace`, :func:`validate_trace`
    or the generators) as a :class:`ReplayColumns`, in the canonical replay order.

    The canonical order is by ``arrival_s``, tasks arriving at the same instant by
    ``task_id``: a task's index in it (which keys the world's draws, see
    :mod:`sim.world.providers`) depends on the trace's content only, so shuffling a file's rows
    replays identically (:func:`read_trace` sorts by arrival; ties are settled here).

    ``compact=True`` gives array columns (see :class:`ReplayColumns`) instead of
    lists: for long traces, whose lists would hold hundreds of bytes per task.

    Raises :class:`TraceError` if a required column is missing or the rows are not
    sorted by ``arrival_s`` (the simulator schedules arrivals in order).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise _missing_columns_error("trace to replay", missing, df.columns)
    arrivals = df.get_column("arrival_s")
    if not arrivals.is_sorted():
        raise TraceError("trace to replay: rows are not sorted by 'arrival_s'")
    # Ties are rare in recorded traces (none in the shipped ones), so look before sorting.
    if len(df) > 1 and (arrivals.diff() == 0).any():
        df = df.sort(["arrival_s", "task_id"], maintain_order=True)
        arrivals = df.get_column("arrival_s")
    if compact:
        return ReplayColumns(
            # Arrow arrays, not polars series: reading them needs no thread pool, so a
            # forked process (sim replay --jobs) can use them safely.
            task_ids=df.get_column("task_id").to_arrow(),
            arrival_s=arrivals.cast(pl.Float64).to_numpy(),
            task_types=df.get_column("task_type").cast(pl.Categorical).to_arrow(),
            prompt_tokens=df.get_column("prompt_tokens").cast(pl.Int64).to_numpy(),
            completion_tokens=df.get_column("completion_tokens").cast(pl.Int64).to_numpy(),
        )
    return ReplayColumns(
        task_ids=df.get_column("task_id").to_list(),
        arrival_s=arrivals.cast(pl.Float64).to_list(),
        task_types=df.get_column("task_type").to_list(),
        prompt_tokens=df.get_column("prompt_tokens").cast(pl.Int64).to_list(),
        completion_tokens=df.get_column("completion_tokens").cast(pl.Int64).to_list(),
    )


# ------------------------------------------------------------------------ #
# Replay columns straight from a file, in constant memory beyond the result   #
# ------------------------------------------------------------------------ #

#: Rows read and validated at a time by :func:`read_replay_columns`.
REPLAY_BATCH_ROWS = 1 << 17


class _ReaderGaveUp(Exception):
    """The batch reader met something it does not handle; the reference reader decides."""


def _parquet_batches(path: Path, batch_rows: int) -> tuple[int, list[str], Iterable[pl.DataFrame]]:
    """A Parquet file's row count, column names and its schema columns in batches.

    Only the schema's columns are read (payloads and recorded columns are validated,
    then dropped batch by batch; other columns are never read). Raises
    :class:`_ReaderGaveUp` for anything pyarrow cannot open.
    """
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = list(pf.schema_arrow.names)
        n = pf.metadata.num_rows
    except Exception as exc:  # noqa: BLE001 - the reference reader names the problem
        raise _ReaderGaveUp from exc
    wanted = [c for c in TRACE_SCHEMA if c in names]

    def batches() -> Iterable[pl.DataFrame]:
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=wanted, use_threads=True):
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                yield frame
        except Exception as exc:  # noqa: BLE001 - as above
            raise _ReaderGaveUp from exc
        finally:
            pf.close()

    return n, names, batches()


def _frame_batches(
    df: pl.DataFrame, batch_rows: int
) -> tuple[int, list[str], Iterable[pl.DataFrame]]:
    """A whole frame's row count, column names and its schema columns in slices."""
    names = df.columns
    df = df.select([c for c in TRACE_SCHEMA if c in names])
    return df.height, names, (df.slice(lo, batch_rows) for lo in range(0, df.height, batch_rows))


def read_replay_columns(
    path: str | os.PathLike[str], *, batch_rows: int = REPLAY_BATCH_ROWS
) -> ReplayColumns:
    """A trace file's compact :class:`ReplayColumns`, read and validated in batches.

    The same result as ``replay_columns(read_trace(path), compact=True)`` (the same
    values in the same canonical order: by arrival, ties by task id) and the same
    :class:`TraceError`, message for message, for a bad file: the batches are validated
    with :func:`validate_trace`'s conversions and name the file's own 1-based rows,
    the earliest bad row (then column) winning as there; a task id seen before, in any
    earlier batch, names both rows. What differs is the memory: only the schema's
    columns are read (other columns never; payloads and recorded columns are checked
    one batch at a time and dropped), and the columns are kept as arrays of about 33
    bytes a task: arrival times as float64, token counts as int32 (int64 if a count
    needs it), task ids as an Arrow chunked string array (a chunk a batch), task types
    as an Arrow dictionary array with int8 codes. Parquet is read ``batch_rows`` rows
    at a time; NDJSON and CSV files are read whole by :func:`read_trace`'s reader (its
    errors for malformed text need the whole file), then validated in batches.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise TraceError(f"{path}: trace file {what}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows: expected an integer >= 1, got {batch_rows}")
    if fmt == "parquet":
        try:
            return _collect_replay_columns(str(path), *_parquet_batches(path, batch_rows))
        except _ReaderGaveUp:
            pass  # the reference reader gives read_trace's error, or reads what pyarrow could not
    return _collect_replay_columns(str(path), *_frame_batches(_READERS[fmt](path), batch_rows))


def _collect_replay_columns(
    source: str, n: int, names: list[str], batches: Iterable[pl.DataFrame]
) -> ReplayColumns:
    """Validate ``batches`` (``n`` rows in all, from a file with columns ``names``) into
    compact replay columns; see :func:`read_replay_columns`."""
    import numpy as np
    import pyarrow as pa

    if n == 0:
        raise TraceError(f"{source}: empty trace (no rows)")
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise _missing_columns_error(source, missing, names)

    # Filled in place as batches arrive: no second copy of any column at the end.
    arrival = np.empty(n, dtype=np.float64)
    tokens = np.empty((2, n), dtype=np.int32)
    codes = np.empty(n, dtype=np.int8)
    # 64-bit hashes of the ids: duplicates are looked for among these (8 bytes a task,
    # freed after loading) and confirmed on the ids themselves.
    hashes = np.empty(n, dtype=np.uint64)
    type_code: dict[str, int] = {}
    ids: list[Any] = []
    in_order, ties = True, False
    last = -1.0
    lo = 0
    for batch in batches:
        hi = lo + batch.height
        if hi > n:  # the file changed under us: let the reference reader decide
            raise _ReaderGaveUp
        converted, problems = _convert_columns(batch, source, lo)
        task_ids = converted["task_id"]
        if problems:
            # A repeated id in an earlier row wins over a bad value here, as in
            # validate_trace (which sees the whole file): check the ids read so far.
            seen = pl.concat([*(pl.Series("task_id", c) for c in ids), task_ids])
            repeated = _repeated_id(source, seen)
            if repeated is not None:
                problems.append(repeated)
            raise _earliest(problems)
        hashes[lo:hi] = task_ids.hash(seed=0).to_numpy()
        # 32-bit offsets (see below), and a copy in Arrow's pool: the cast alone would
        # share the text buffer polars allocated, which polars' allocator keeps resident
        # for seconds after it is freed, so a trace a replay frees as it reads it (see
        # sim.engine.replays.run_trace) would not give its ids back in time.
        ids.append(pa.concat_arrays([task_ids.to_arrow().cast(pa.string())]))
        at = converted["arrival_s"].to_numpy()
        arrival[lo:hi] = at
        if at.size:
            step = np.diff(at)
            in_order = in_order and at[0] >= last and bool((step >= 0).all())
            ties = ties or at[0] == last or bool((step == 0).any())
            last = float(at[-1])
        for row, name in enumerate(("prompt_tokens", "completion_tokens")):
            values = converted[name].to_numpy()
            if tokens.dtype == np.int32 and values.size and values.max() > np.iinfo(np.int32).max:
                tokens = tokens.astype(np.int64)  # rare: a count past 2**31 - 1
            tokens[row, lo:hi] = values
        types = converted["task_type"]
        for t in types.unique(maintain_order=True).to_list():
            type_code.setdefault(t, len(type_code))
        if len(type_code) > np.iinfo(codes.dtype).max and codes.dtype == np.int8:
            codes = codes.astype(np.int32)
        codes[lo:hi] = types.replace_strict(type_code, return_dtype=pl.Int32).to_numpy()
        lo = hi
    if lo != n:
        raise _ReaderGaveUp

    hashes.sort()
    if (hashes[1:] == hashes[:-1]).any():  # a repeated id, or (rarely) two ids' hashes
        repeated = _repeated_id(source, pl.concat([pl.Series("task_id", c) for c in ids]))
        if repeated is not None:
            raise repeated[2]
    del hashes

    # One chunk per batch: joining them would copy every id once more. A chunked array
    # takes one offset type: 32-bit while the ids' text fits in 2 GiB (it nearly
    # always does), else 64-bit.
    if sum(c.nbytes for c in ids) < 2**31 - 1:
        task_ids = pa.chunked_array(ids, type=pa.string())
    else:
        task_ids = pa.chunked_array([c.cast(pa.large_string()) for c in ids])
    del ids
    values = pa.array(list(type_code), type=pa.string())
    if not in_order or ties:
        # The canonical order of replay_columns (by arrival, ties by task id), worked
        # out by the same polars sort; task ids are unique, so it is one order.
        order = (
            pl.DataFrame({"arrival_s": arrival, "task_id": pl.Series(task_ids)})
            .with_row_index("row")
            .sort(["arrival_s", "task_id"], maintain_order=True)
            .get_column("row")
            .to_numpy()
        )
        arrival = arrival[order]
        tokens = tokens[:, order]
        codes = codes[order]
        task_ids = task_ids.take(pa.array(order))
    return ReplayColumns(
        task_ids=task_ids,
        arrival_s=arrival,
        task_types=pa.DictionaryArray.from_arrays(pa.array(codes), values),
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
    )

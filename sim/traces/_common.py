"""Helpers shared by the importers: table reading, timestamps, outcomes, atomic output."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import polars as pl

from router.outcome import ErrorKind
from router.providers._http import ErrorFields, kind_for_error
from sim.errors import TraceError
from sim.traces.tasks import TRACE_EXTENSIONS, _first_line, _locate_bad_csv_row

#: How a timestamp column is written: ISO-8601 text, Unix seconds, Unix milliseconds,
#: or plain seconds already on the trace's clock (kept as they are).
TimeFormat = Literal["iso", "epoch", "epoch_ms", "seconds"]
TIME_FORMATS: tuple[str, ...] = ("iso", "epoch", "epoch_ms", "seconds")

# ISO-8601 with a space or "T", optional fraction (up to 9 digits) and optional zone
# ("Z", "+00", "+0000", "+00:00"); naive times are taken as UTC.
_ISO_ZONED = "%Y-%m-%d %H:%M:%S%.f%#z"
_ISO_NAIVE = "%Y-%m-%d %H:%M:%S%.f"


def _stringify(value: Any) -> str | None:
    """A JSON value as the text a CSV cell would hold (nested values as JSON)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, separators=(",", ":"))


def _frame_from_records(path: Path, records: Sequence[Any]) -> pl.DataFrame:
    columns: dict[str, None] = {}
    for i, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise TraceError(
                f"{path}: row {i}: expected a JSON object, got {type(record).__name__}"
            )
        columns.update(dict.fromkeys(record))
    data = {c: [_stringify(r.get(c)) for r in records] for c in columns}
    return pl.DataFrame(data, schema={c: pl.String() for c in columns})


def read_table(path: Path, *, what: str) -> pl.DataFrame:
    """A CSV, Parquet, NDJSON or JSON file as a frame of text columns (Parquet: as typed).

    ``.json`` holds an array of objects, or an object whose ``data`` is one (the
    shape of LiteLLM's ``/spend/logs/v2``); ``.ndjson``/``.jsonl`` one object per
    line. Nested JSON values become JSON text. Raises :class:`TraceError` naming the
    file (and, for a bad JSON record, its row) for a missing, empty or unreadable
    file; ``what`` names the kind of file in messages.
    """
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise TraceError(f"{path}: {what} {state}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pl.read_parquet(path)
        elif suffix == ".csv":
            df = pl.read_csv(path, infer_schema=False)
        elif suffix in (".json", ".ndjson", ".jsonl"):
            text = path.read_text(encoding="utf-8")
            if suffix == ".json":
                try:
                    doc = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise TraceError(
                        f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, "
                        f"column {exc.colno})"
                    ) from None
                if isinstance(doc, dict) and isinstance(doc.get("data"), list):
                    doc = doc["data"]
                if not isinstance(doc, list):
                    raise TraceError(
                        f"{path}: expected a JSON array of records (or {{'data': [...]}}), "
                        f"got {type(doc).__name__}"
                    )
                records = doc
            else:
                records = []
                for i, line in enumerate((ln for ln in text.splitlines() if ln.strip()), 1):
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise TraceError(
                            f"{path}: row {i}: not valid JSON ({exc.msg} at character "
                            f"{exc.pos + 1})"
                        ) from None
            df = _frame_from_records(path, records)
        else:
            raise TraceError(
                f"{path}: unknown {what} format '{path.suffix or '(no extension)'}' "
                f"(expected .csv, .json, .ndjson, .jsonl or .parquet)"
            )
    except pl.exceptions.NoDataError:
        raise TraceError(f"{path}: empty file (no header, no rows)") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        if suffix == ".csv":
            with contextlib.suppress(OSError), open(path, encoding="utf-8", newline="") as fh:
                located = _locate_bad_csv_row(str(path), fh)
                if located is not None:
                    raise located from exc
        raise TraceError(f"{path}: not a readable {what} ({_first_line(exc)})") from exc
    if df.height == 0:
        raise TraceError(f"{path}: no rows")
    return df


def as_text(s: pl.Series) -> pl.Series:
    """``s`` as stripped text (a Parquet column may come typed)."""
    if s.dtype != pl.String:
        s = s.cast(pl.String, strict=False)
    return s.str.strip_chars()


def timestamps_ns(raw: pl.Series, time_format: TimeFormat) -> tuple[pl.Series, pl.Series]:
    """Parse ``raw`` as absolute timestamps: (Int64 nanoseconds since the Unix epoch, bad).

    ``iso``: ISO-8601 date-times (``2024-05-01T12:00:00.123Z``, ``2024-05-01
    12:00:00+00:00``...); a value without a zone is taken as UTC. A native
    Datetime/Date column (Parquet) is accepted as is. ``epoch``/``epoch_ms``:
    numbers of seconds/milliseconds since 1970-01-01 UTC. ``bad`` marks non-null
    values that do not parse; nulls stay null (callers decide if they may).
    """
    if time_format not in ("iso", "epoch", "epoch_ms"):
        raise ValueError(f"not an absolute time format: {time_format!r}")
    if time_format == "iso":
        if isinstance(raw.dtype, pl.Datetime):
            zoned = raw.dt.replace_time_zone(None) if raw.dtype.time_zone is None else raw
            ns = zoned.dt.cast_time_unit("ns").cast(pl.Int64)
        elif raw.dtype == pl.Date:
            ns = raw.cast(pl.Datetime("ns")).cast(pl.Int64)
        else:
            text = as_text(raw).str.replace(r"^(\d{4}-\d{2}-\d{2})[Tt]", "$1 ")
            zoned = text.str.to_datetime(_ISO_ZONED, time_unit="ns", strict=False)
            naive = text.str.to_datetime(_ISO_NAIVE, time_unit="ns", strict=False)
            ns = (
                pl.DataFrame({"z": zoned.cast(pl.Int64), "n": naive.cast(pl.Int64)})
                .select(pl.coalesce("z", "n"))
                .to_series()
            )
    else:
        scale = 1e9 if time_format == "epoch" else 1e6
        numbers = raw if raw.dtype.is_numeric() else as_text(raw).cast(pl.Float64, strict=False)
        numbers = numbers.cast(pl.Float64)
        finite = numbers.is_finite() & (numbers.abs() < 9.2e18 / scale)
        ns = (
            pl.DataFrame({"v": numbers, "ok": finite})
            .select(pl.when(pl.col("ok")).then((pl.col("v") * scale).round(0)).cast(pl.Int64))
            .to_series()
        )
    ns = ns.alias(raw.name)
    bad = (raw.is_not_null() & ns.is_null()).fill_null(True)
    if raw.dtype == pl.String:
        bad = bad & (raw.str.strip_chars() != "").fill_null(True)
    return ns, bad


def time_example(time_format: TimeFormat) -> str:
    """What a value of ``time_format`` looks like, for error messages."""
    return {
        "iso": "an ISO-8601 timestamp like '2024-05-01T12:00:00.123Z'",
        "epoch": "Unix seconds like 1714564800.5",
        "epoch_ms": "Unix milliseconds like 1714564800500",
        "seconds": "a non-negative number of seconds",
    }[time_format]


# Exception class names (LiteLLM's, which follow OpenAI's SDK) that say what happened
# more precisely than their status: LiteLLM reports a connection error as a 500, and a
# context-window overflow as a plain 400.
_ERROR_CLASSES: dict[str, ErrorKind] = {
    "timeout": ErrorKind.TIMEOUT,
    "apitimeouterror": ErrorKind.TIMEOUT,
    "apiconnectionerror": ErrorKind.CONNECTION,
    "contextwindowexceedederror": ErrorKind.CONTEXT_LENGTH,
    "contentpolicyviolationerror": ErrorKind.CONTENT_FILTER,
    "ratelimiterror": ErrorKind.RATE_LIMITED,
    "authenticationerror": ErrorKind.AUTH,
    "permissiondeniederror": ErrorKind.AUTH,
    "serviceunavailableerror": ErrorKind.SERVER_ERROR,
    "internalservererror": ErrorKind.SERVER_ERROR,
    "jsonschemavalidationerror": ErrorKind.VALIDATION,
    "apiresponsevalidationerror": ErrorKind.MALFORMED,
}


def outcome_for_error(
    status: int | None, *, error_class: str | None = None, message: str | None = None
) -> str:
    """The attempt outcome of a failed call: an :class:`ErrorKind` value.

    An unambiguous exception class name decides first (``Timeout``,
    ``APIConnectionError``, ``ContextWindowExceededError``...); otherwise the router's
    own classification of an HTTP status and error text
    (:func:`router.providers._http.kind_for_error`) does: 429 rate_limited, 401/403
    auth, 408 timeout, 5xx server_error, other 4xx bad_request (or context_length /
    content_filter by message), no status at all server_error. Never ``ok``.
    """
    if error_class:
        kind = _ERROR_CLASSES.get(error_class.strip().rsplit(".", 1)[-1].lower())
        if kind is not None:
            return kind.value
    if status is not None and not 100 <= status <= 599:
        status = None
    fields = ErrorFields(message or "", None, error_class) if (message or error_class) else None
    kind = kind_for_error(fields, status)
    return ErrorKind.SERVER_ERROR.value if kind is ErrorKind.OK else kind.value


def write_atomically(outputs: Sequence[tuple[Path, Callable[[Path], object]]]) -> None:
    """Write several files all or nothing (as far as renames allow).

    Each ``(path, write)`` gets ``write(tmp)`` on a hidden temp file beside ``path``
    (the directory is created); only when every write has succeeded are the temp
    files fsynced and renamed over their paths. On any failure the temp files are
    removed and no output is touched. New files get mode 0644.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for path, write in outputs:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
            temps.append((tmp, path))
            write(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise


def write_frames(outputs: Sequence[tuple[pl.DataFrame, Path]]) -> None:
    """Write already-validated frames, each in the format of its path's extension
    (Parquet, NDJSON, CSV), all or nothing (see :func:`write_atomically`)."""

    def writer(df: pl.DataFrame, fmt: str) -> Callable[[Path], object]:
        def write(tmp: Path) -> None:
            if fmt == "parquet":
                df.write_parquet(tmp)
            elif fmt == "ndjson":
                df.write_ndjson(tmp)
            else:
                df.write_csv(tmp)

        return write

    plan = []
    for df, path in outputs:
        fmt = TRACE_EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise TraceError(
                f"{path}: unknown output format '{path.suffix or '(no extension)'}' "
                f"(expected one of {', '.join(TRACE_EXTENSIONS)})"
            )
        plan.append((path, writer(df, fmt)))
    write_atomically(plan)

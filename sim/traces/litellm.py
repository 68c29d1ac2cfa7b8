"""Import LiteLLM proxy spend logs (the ``LiteLLM_SpendLogs`` table) as attempt records.

LiteLLM's proxy writes one row per request to ``LiteLLM_SpendLogs`` (its Prisma
schema, ``schema.prisma`` in BerriAI/litellm). Export it as CSV (``\\copy
"LiteLLM_SpendLogs" TO 'spend.csv' CSV HEADER``), as JSON (an array of rows, or the
``{"data": [...]}`` page of ``GET /spend/logs/v2``), NDJSON or Parquet. Columns read
(the others -- ``api_key``, ``user``, ``messages``, ``response``... -- are ignored,
so no key hash or payload is ever copied):

======================= =========== ===================================================
column                  required    use
======================= =========== ===================================================
``request_id``          yes         ``request_id``; ``task_id`` unless ``task_column``
``startTime``           yes         ``start_s`` (seconds from the earliest startTime)
``endTime``             yes         ``latency_s = endTime - startTime``
``model``               yes         ``provider_model``; the model id when
                                    ``model_group`` is empty
``model_group``         no          the model id (the name the client asked for)
``completionStartTime`` no          ``ttft_s = completionStartTime - startTime`` when
                                    strictly before endTime (LiteLLM stores endTime
                                    there for a non-streamed answer: then null)
``prompt_tokens``,      no          usage; null on a failure, or when both are 0
``completion_tokens``               (LiteLLM's default when nothing was reported)
``spend``               no          ``cost_usd`` (USD)
``status``              no          ``success`` -> ``ok``; ``failure`` -> classified
                                    from ``metadata.error_information``
``metadata``            no          JSON; ``status`` (if the column is absent) and
                                    ``error_information``: ``error_code`` (the HTTP
                                    status) and ``error_class`` (e.g.
                                    ``RateLimitError``) give ``outcome`` and
                                    ``status``; ``error_message`` is used to classify
                                    only, never copied
``cache_hit``           no          rows answered from LiteLLM's cache ("True") are
                                    skipped: no provider was called
======================= =========== ===================================================

``startTime``/``endTime``/``completionStartTime`` may also be spelled
``start_time``/``end_time``/``completion_start_time``. Timestamps are ISO-8601
(Postgres' ``2024-05-01 12:00:00.123+00`` included); without a zone they are UTC.

Each request is one task with one attempt (``task_id = request_id``, ``attempt = 1``)
unless ``task_column`` names a column (e.g. ``session_id``) whose equal values group
requests into one task; attempts are then numbered per (task, model) in start order
and a blank value leaves the request a task of its own. ``status`` is the HTTP status
of a failure when LiteLLM recorded one; successes carry null (spend logs do not
record it). :func:`sim.traces.attempts.tasks_from_attempts` turns the result into the
matching task trace.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl

from router.recording import ATTEMPT_COLUMNS
from sim.errors import TraceError
from sim.traces._common import as_text, outcome_for_error, read_table, timestamps_ns
from sim.traces.attempts import validate_attempts
from sim.traces.tasks import _as_float, _as_int, _first_true, _row_error

__all__ = ["LITELLM_COLUMNS", "import_litellm"]

#: The spend-log columns the importer reads: required ones first.
LITELLM_COLUMNS: tuple[str, ...] = (
    "request_id",
    "startTime",
    "endTime",
    "model",
    "model_group",
    "completionStartTime",
    "prompt_tokens",
    "completion_tokens",
    "spend",
    "status",
    "metadata",
    "cache_hit",
)

_ALIASES = {
    "startTime": ("startTime", "start_time", "starttime"),
    "endTime": ("endTime", "end_time", "endtime"),
    "completionStartTime": (
        "completionStartTime",
        "completion_start_time",
        "completionstarttime",
    ),
}

_ISO_EXAMPLE = "an ISO-8601 timestamp like '2024-05-01T12:00:00.123Z'"


def _column(df: pl.DataFrame, name: str) -> str | None:
    """The frame's column for spend-log column ``name`` (an accepted spelling), or None."""
    for alias in _ALIASES.get(name, (name,)):
        if alias in df.columns:
            return alias
    return None


_ErrorInfo = tuple[str | None, int | None, str | None, str | None]
_NO_INFO: _ErrorInfo = (None, None, None, None)


def _error_info(metadata: str | None) -> _ErrorInfo:
    """(status, HTTP code, error class, message) from a metadata JSON text."""
    if not metadata:
        return _NO_INFO
    try:
        doc = json.loads(metadata)
    except (ValueError, TypeError):
        return _NO_INFO
    if not isinstance(doc, dict):
        return _NO_INFO
    status = doc.get("status") if isinstance(doc.get("status"), str) else None
    info = doc.get("error_information")
    if not isinstance(info, dict):
        return status, None, None, None
    code: int | None = None
    raw_code = info.get("error_code")
    if isinstance(raw_code, int | str) and not isinstance(raw_code, bool):
        try:
            code = int(str(raw_code).strip())
        except ValueError:
            code = None
    cls = info.get("error_class")
    msg = info.get("error_message")
    return (
        status,
        code,
        cls if isinstance(cls, str) else None,
        msg if isinstance(msg, str) else None,
    )


def import_litellm(
    path: str | os.PathLike[str],
    *,
    task_column: str | None = None,
    task_type: str | None = None,
) -> pl.DataFrame:
    """The LiteLLM spend-log export at ``path`` as attempt records, sorted by start.

    See the module docstring for the columns and the mapping. ``task_type`` fills
    the ``task_type`` column (default null: spend logs carry none). Raises
    :class:`~sim.errors.TraceError` naming the file, the 1-based data row and the
    column for a missing or unreadable file, a missing required column, an
    unparseable timestamp, an ``endTime`` before its ``startTime``, a bad number, a
    repeated ``request_id`` or an unknown ``status``; a file whose every row is a
    cache hit is an error too.
    """
    path = Path(path)
    src = str(path)
    raw = read_table(path, what="LiteLLM spend-log export")
    names = {c: _column(raw, c) for c in LITELLM_COLUMNS}
    required = ("request_id", "startTime", "endTime", "model")
    missing = [c for c in required if names[c] is None]
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing)
        raise TraceError(
            f"{path}: missing LiteLLM_SpendLogs column(s) {shown} "
            f"(found: {', '.join(raw.columns[:20])})"
        )
    if task_column is not None and task_column not in raw.columns:
        raise TraceError(
            f"{path}: task column '{task_column}' is not in the file "
            f"(found: {', '.join(raw.columns[:20])})"
        )

    def col(name: str) -> pl.Series | None:
        c = names[name]
        return None if c is None else raw.get_column(c)

    def req(name: str) -> pl.Series:
        c = names[name]
        assert c is not None  # checked above
        return raw.get_column(c)

    problems: list[tuple[int, TraceError]] = []

    def flag(bad: pl.Series, name: str, expected: str) -> None:
        index = _first_true(bad)
        if index is not None:
            column = names[name] or name
            value = raw.get_column(column)[index]
            problems.append((index, _row_error(src, index, column, expected, value)))

    request_id = as_text(req("request_id"))
    flag(request_id.is_null() | (request_id == ""), "request_id", "a non-empty request id")
    start_ns, bad = timestamps_ns(req("startTime"), "iso")
    flag(bad | start_ns.is_null(), "startTime", _ISO_EXAMPLE)
    end_ns, bad = timestamps_ns(req("endTime"), "iso")
    flag(bad | end_ns.is_null(), "endTime", _ISO_EXAMPLE)
    flag((end_ns < start_ns).fill_null(False), "endTime", "a time at or after the row's startTime")
    first_ns: pl.Series | None = None
    completion_start = col("completionStartTime")
    if completion_start is not None:
        first_ns, bad = timestamps_ns(completion_start, "iso")
        flag(bad, "completionStartTime", _ISO_EXAMPLE)
    model = as_text(req("model"))
    group_col = col("model_group")
    group = as_text(group_col) if group_col is not None else None
    model_id = model if group is None else group.replace("", None).fill_null(model)
    flag(model_id.is_null() | (model_id == ""), "model", "a non-empty model name")

    def number(name: str, *, integer: bool) -> pl.Series | None:
        s = col(name)
        if s is None:
            return None
        conv, bad = (_as_int if integer else _as_float)(s, required=False)
        flag(bad, name, "an integer >= 0" if integer else "a non-negative number")
        return conv

    prompt = number("prompt_tokens", integer=True)
    completion = number("completion_tokens", integer=True)
    spend = number("spend", integer=False)

    meta_col, status_col = col("metadata"), col("status")
    metadata = as_text(meta_col).to_list() if meta_col is not None else None
    status_text = as_text(status_col).str.to_lowercase() if status_col is not None else None
    if status_text is None and metadata is not None:
        # No status column (older LiteLLM): the status LiteLLM keeps in the metadata.
        status_text = pl.Series(
            "status", [_error_info(m)[0] for m in metadata], dtype=pl.String
        ).str.to_lowercase()
    if status_text is not None:
        known = status_text.is_null() | status_text.is_in(["success", "failure", ""])
        flag(~known, "status", "'success' or 'failure'")
    if problems:
        raise min(problems, key=lambda p: p[0])[1]

    n = raw.height
    failed = [False] * n if status_text is None else (status_text == "failure").fill_null(False)
    failed_list = list(failed)
    outcomes: list[str] = []
    statuses: list[int | None] = []
    for i in range(n):
        if not failed_list[i]:
            outcomes.append("ok")
            statuses.append(None)
            continue
        _, code, cls, msg = _error_info(metadata[i]) if metadata is not None else _NO_INFO
        outcomes.append(outcome_for_error(code, error_class=cls, message=msg))
        statuses.append(code if code is not None and 100 <= code <= 599 else None)

    failed_s = pl.Series("failed", failed_list, dtype=pl.Boolean)
    no_usage = failed_s
    if prompt is not None or completion is not None:
        zero = pl.Series([0] * n, dtype=pl.Int64)
        total = (prompt if prompt is not None else zero).fill_null(0) + (
            completion if completion is not None else zero
        ).fill_null(0)
        no_usage = failed_s | (total == 0)

    def usage(s: pl.Series | None) -> pl.Series:
        if s is None:
            return pl.Series([None] * n, dtype=pl.Int64)
        return (
            pl.DataFrame({"v": s, "drop": no_usage})
            .select(pl.when(~pl.col("drop")).then(pl.col("v")))
            .to_series()
        )

    latency = (end_ns - start_ns).cast(pl.Float64) / 1e9
    ttft: pl.Series
    if first_ns is not None:
        ttft = (
            pl.DataFrame({"f": first_ns, "s": start_ns, "e": end_ns})
            .select(
                pl.when((pl.col("f") < pl.col("e")) & (pl.col("f") >= pl.col("s"))).then(
                    (pl.col("f") - pl.col("s")).cast(pl.Float64) / 1e9
                )
            )
            .to_series()
        )
    else:
        ttft = pl.Series([None] * n, dtype=pl.Float64)

    frame = pl.DataFrame(
        {
            "request_id": request_id,
            "model": model_id,
            "_start_ns": start_ns,
            "latency_s": latency,
            "ttft_s": ttft,
            "outcome": pl.Series(outcomes, dtype=pl.String),
            "status": pl.Series(statuses, dtype=pl.Int64),
            "retry_after_s": pl.Series([None] * n, dtype=pl.Float64),
            "prompt_tokens": usage(prompt),
            "completion_tokens": usage(completion),
            "cost_usd": spend if spend is not None else pl.Series([None] * n, dtype=pl.Float64),
            "task_type": pl.Series([task_type] * n, dtype=pl.String),
            "provider_model": model.replace("", None),
            "_row": pl.int_range(0, n, eager=True),
            "_group": (
                as_text(raw.get_column(task_column)).replace("", None)
                if task_column is not None
                else pl.Series([None] * n, dtype=pl.String)
            ),
        }
    )
    cache_col = col("cache_hit")
    if cache_col is not None:
        hit = as_text(cache_col).str.to_lowercase().is_in(["true", "1", "t"])
        frame = frame.filter(~hit)
        if frame.height == 0:
            raise TraceError(f"{path}: every row is a cache hit (no provider call to import)")

    ids = frame.get_column("request_id")
    repeated = _first_true(~ids.is_first_distinct())
    if repeated is not None:
        first = _first_true(ids == ids[repeated])
        rows = frame.get_column("_row")
        row, first_row = rows[repeated], rows[first if first is not None else repeated]
        raise TraceError(
            f"{path}: row {row + 1}, column '{names['request_id']}': expected a unique "
            f"request id, got '{ids[repeated]}' again (first at row {first_row + 1})"
        )

    frame = frame.sort("_start_ns", "_row")
    origin = frame.get_column("_start_ns").min()
    frame = frame.with_columns(
        ((pl.col("_start_ns") - origin).cast(pl.Float64) / 1e9).alias("start_s"),
        pl.coalesce("_group", "request_id").alias("task_id"),
    ).with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("task_id", "model").alias("attempt")
    )
    out = frame.select(ATTEMPT_COLUMNS)
    return validate_attempts(out, source=src)

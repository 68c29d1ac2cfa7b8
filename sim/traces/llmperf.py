"""Import llmperf per-request results (ray-project/llmperf) as attempt records.

llmperf's ``token_benchmark_ray.py`` writes, per run, ``<run>_individual_responses.json``
(a JSON array, one object per request) beside ``<run>_summary.json``; the
llmperf-leaderboard repository's ``raw_data/`` keeps them as ``individual/<run>.json``
and ``summary/<run>.json``. Per request the importer reads:

============================ ==========================================================
field                        use
============================ ==========================================================
``end_to_end_latency_s``     ``latency_s`` (llmperf writes 0 for a failed request: it
                             does not time those)
``ttft_s``                   ``ttft_s`` (null for a failed request: llmperf writes 0)
``number_input_tokens``      ``prompt_tokens`` (llmperf's own count of the prompt sent)
``number_output_tokens``     ``completion_tokens`` (llmperf's tokenizer count of the
                             answer; null for a failed request, where llmperf writes 1)
``error_code``               ``outcome`` and ``status``: null -> ``ok``; an HTTP status
                             -> classified like the live router's (429
                             ``rate_limited``, 5xx ``server_error``...; ``error_msg``
                             refines a 4xx); ``-1`` (llmperf's code for a request
                             that raised without an HTTP error) -> ``connection``;
                             ``-100`` (the leaderboard's "Output too few tokens"
                             check) -> ``validation``; any other code -> ``error``
============================ ==========================================================

Other fields (``GEN_TEXT``, the generated text some runs kept; ``error_msg``) are never
copied. Each request is its own task (``task_id = <run>-<n>``, 1-based ``n`` in file
order, ``attempt = 1``); ``model`` is the run name (``anyscale_13b``),
``provider_model`` the summary's ``model``; ``cost_usd`` is null (llmperf has no
prices).

Start times are *reconstructed*: llmperf does not record them. It keeps
``num_concurrent_requests`` (summary; else ``concurrency``, default 1) requests in
flight and starts the next one when one finishes, so each request is placed, in file
order, on the slot that frees first; a run's requests then start at its own second 0.
When every run has a summary ``timestamp`` (Unix seconds at the end of the run), runs
are placed on one clock: a run starts at its timestamp minus its reconstructed
length, and ``start_s`` counts from the earliest run start. Otherwise runs follow one
another in name order.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from router.errors import InputError
from router.recording import ATTEMPT_COLUMNS
from sim.errors import TraceError
from sim.traces._common import outcome_for_error
from sim.traces.attempts import validate_attempts

__all__ = ["LLMPERF_FIELDS", "import_llmperf"]

#: The per-request fields every llmperf record must have.
LLMPERF_FIELDS: tuple[str, ...] = (
    "error_code",
    "ttft_s",
    "end_to_end_latency_s",
    "number_input_tokens",
    "number_output_tokens",
)

_INDIVIDUAL_SUFFIX = "_individual_responses"
_SUMMARY_SUFFIX = "_summary"


@dataclass(frozen=True, slots=True)
class _Run:
    name: str
    path: Path
    summary: dict[str, Any] | None
    summary_path: Path | None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TraceError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read file ({exc.strerror or exc})") from None


def _run_of(path: Path) -> _Run:
    """The run a per-request file belongs to, with its summary if one is found."""
    stem = path.stem
    name = stem[: -len(_INDIVIDUAL_SUFFIX)] if stem.endswith(_INDIVIDUAL_SUFFIX) else stem
    candidates = [
        path.with_name(f"{name}{_SUMMARY_SUFFIX}.json"),  # llmperf's own layout
        path.parent.parent / "summary" / f"{name}.json",  # llmperf-leaderboard's raw_data
    ]
    for candidate in candidates:
        if candidate.is_file():
            summary = _load_json(candidate)
            if not isinstance(summary, dict):
                raise TraceError(
                    f"{candidate}: expected a JSON object (an llmperf summary), "
                    f"got {type(summary).__name__}"
                )
            return _Run(name, path, summary, candidate)
    return _Run(name, path, None, None)


def _discover(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise TraceError(f"{path}: no such file or directory")
    base = path / "individual" if (path / "individual").is_dir() else path
    files = sorted(
        (
            p
            for p in base.iterdir()
            if p.is_file()
            and p.suffix.lower() == ".json"
            and not p.name.startswith(".")
            and not p.stem.endswith(_SUMMARY_SUFFIX)
        ),
        key=lambda p: p.name,
    )
    if not files:
        raise TraceError(
            f"{path}: no llmperf per-request file (*_individual_responses.json, "
            f"or individual/*.json)"
        )
    return files


def _number(path: Path, row: int, record: dict[str, Any], field: str, *, lo: float) -> float:
    value = record.get(field)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < lo
    ):
        raise TraceError(
            f"{path}: row {row}, field '{field}': expected a number >= {lo:g}, got {value!r:.40}"
        )
    return float(value)


def _count(path: Path, row: int, record: dict[str, Any], field: str) -> int:
    value = _number(path, row, record, field, lo=0)
    if value != int(value):
        raise TraceError(
            f"{path}: row {row}, field '{field}': expected an integer >= 0, got {value!r}"
        )
    return int(value)


def _outcome(code: int | None, message: str) -> tuple[str, int | None]:
    if code is None:
        return "ok", None
    if code == -1:
        return "connection", None
    if code == -100:
        return "validation", None
    if 100 <= code <= 599:
        error_class = None
        text = message
        try:
            body = json.loads(message) if message.strip().startswith("{") else None
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            text = str(err.get("message") or "")
            error_class = err.get("type") if isinstance(err.get("type"), str) else None
        return outcome_for_error(code, error_class=error_class, message=text), code
    return "error", None


def _read_run(run: _Run, concurrency: int, task_type: str | None) -> tuple[dict[str, list], float]:
    """One run's columns (start_s relative to the run's start) and its length in seconds."""
    records = _load_json(run.path)
    if not isinstance(records, list):
        raise TraceError(
            f"{run.path}: expected a JSON array of llmperf requests, got {type(records).__name__}"
        )
    if not records:
        raise TraceError(f"{run.path}: no requests (empty array)")
    provider_model = None
    if run.summary is not None and isinstance(run.summary.get("model"), str):
        provider_model = run.summary["model"]
    cols: dict[str, list] = {k: [] for k in _COLUMNS}
    free = [0.0] * concurrency  # when each in-flight slot frees up
    heapq.heapify(free)
    makespan = 0.0
    for row, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise TraceError(
                f"{run.path}: row {row}: expected a JSON object, got {type(record).__name__}"
            )
        missing = [f for f in LLMPERF_FIELDS if f not in record]
        if missing:
            raise TraceError(
                f"{run.path}: row {row}: missing llmperf field(s) "
                f"{', '.join(repr(m) for m in missing)}"
            )
        code = record["error_code"]
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise TraceError(
                f"{run.path}: row {row}, field 'error_code': expected an integer or null, "
                f"got {code!r:.40}"
            )
        message = record.get("error_msg") or ""
        outcome, status = _outcome(code, message if isinstance(message, str) else "")
        latency = _number(run.path, row, record, "end_to_end_latency_s", lo=0)
        ttft = _number(run.path, row, record, "ttft_s", lo=0)
        prompt = _count(run.path, row, record, "number_input_tokens")
        completion = _count(run.path, row, record, "number_output_tokens")
        answered = code is None or code == -100
        start = heapq.heappop(free)
        heapq.heappush(free, start + latency)
        makespan = max(makespan, start + latency)
        cols["task_id"].append(f"{run.name}-{row:04d}")
        cols["model"].append(run.name)
        cols["attempt"].append(1)
        cols["start_s"].append(start)
        cols["latency_s"].append(latency)
        cols["ttft_s"].append(ttft if answered and ttft > 0 else None)
        cols["outcome"].append(outcome)
        cols["status"].append(status)
        cols["retry_after_s"].append(None)
        cols["prompt_tokens"].append(prompt)
        cols["completion_tokens"].append(completion if answered else None)
        cols["cost_usd"].append(None)
        cols["task_type"].append(task_type)
        cols["provider_model"].append(provider_model)
        cols["request_id"].append(None)
    return cols, makespan


_COLUMNS = ATTEMPT_COLUMNS


def _concurrency_of(run: _Run, default: int | None) -> int:
    if default is not None:
        return default
    value = run.summary.get("num_concurrent_requests") if run.summary is not None else None
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TraceError(
            f"{run.summary_path}: field 'num_concurrent_requests': expected an integer >= 1, "
            f"got {value!r:.40}"
        )
    return value


def import_llmperf(
    path: str | os.PathLike[str],
    *,
    concurrency: int | None = None,
    task_type: str | None = None,
) -> pl.DataFrame:
    """llmperf per-request results at ``path`` as attempt records, sorted by start.

    ``path`` is one per-request JSON file, a directory of them, or a directory with
    an ``individual/`` folder (llmperf-leaderboard's ``raw_data``). ``concurrency``
    overrides the summaries' ``num_concurrent_requests`` for the start-time
    reconstruction; ``task_type`` fills the ``task_type`` column (default null).
    See the module docstring for the mapping. Raises :class:`TraceError` naming
    the file, the 1-based request (row) and the field for a missing or unreadable
    file, a record that is not an object, a missing field or a bad value;
    :class:`~router.errors.InputError` for a bad argument.
    """
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise InputError(f"concurrency: expected None or an integer >= 1, got {concurrency!r}")
    runs = [_run_of(p) for p in _discover(Path(path))]
    names: dict[str, Path] = {}
    for run in runs:
        if run.name in names:
            raise TraceError(
                f"{run.path}: run name '{run.name}' repeats {names[run.name]} "
                f"(model ids must be unique)"
            )
        names[run.name] = run.path
    read = [_read_run(run, _concurrency_of(run, concurrency), task_type) for run in runs]

    stamps: list[Any] = [
        run.summary.get("timestamp") if run.summary is not None else None for run in runs
    ]
    on_one_clock = all(
        isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) for t in stamps
    )
    if on_one_clock:
        starts = [float(t) - span for t, (_, span) in zip(stamps, read, strict=True)]
        origin = min(starts)
        offsets = [s - origin for s in starts]
    else:
        offsets, clock = [], 0.0
        for _, span in read:
            offsets.append(clock)
            clock += span
    merged: dict[str, list] = {k: [] for k in _COLUMNS}
    for (cols, _), offset in zip(read, offsets, strict=True):
        cols["start_s"] = [s + offset for s in cols["start_s"]]
        for k in _COLUMNS:
            merged[k].extend(cols[k])
    schema = {
        "attempt": pl.Int64,
        "status": pl.Int64,
        "prompt_tokens": pl.Int64,
        "completion_tokens": pl.Int64,
        "start_s": pl.Float64,
        "latency_s": pl.Float64,
        "ttft_s": pl.Float64,
        "retry_after_s": pl.Float64,
        "cost_usd": pl.Float64,
    }
    frame = pl.DataFrame(
        {k: pl.Series(k, v, dtype=schema.get(k, pl.String)) for k, v in merged.items()}
    )
    out = validate_attempts(frame, source=str(path))
    return out.sort("start_s", maintain_order=True)

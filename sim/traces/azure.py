"""Import the Azure LLM inference trace (Azure/AzurePublicDataset, CC-BY-4.0).

The public CSVs (``AzureLLMInferenceTrace_code.csv``, ``..._conv.csv``) have one
request per row: ``TIMESTAMP,ContextTokens,GeneratedTokens``, timestamps like
``2023-11-16 18:17:03.9799600``. :func:`import_azure` turns one into a frame in
the trace schema (:mod:`sim.traces.tasks`):

- ``task_id``: ``azure-`` + the 1-based data row, zero-padded to 6 digits;
- ``arrival_s``: seconds since the earliest timestamp (the first row's in the
  published files, which are in time order);
- ``prompt_tokens`` / ``completion_tokens``: ContextTokens / GeneratedTokens;
- ``task_type``: drawn from a seeded mix, because the real trace has no types
  (default :data:`sim.traces.synth.DEFAULT_MIX`, an assumption).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from router.errors import InputError
from sim.errors import TraceError
from sim.traces.synth import DEFAULT_MIX, draw_task_types, rng_streams, validate_mix
from sim.traces.tasks import _as_int, _first_line, _first_true, _row_error, validate_trace

__all__ = ["AZURE_COLUMNS", "AZURE_TIMESTAMP_FORMAT", "import_azure"]

#: The columns of the Azure trace CSVs.
AZURE_COLUMNS: tuple[str, ...] = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")

#: Their timestamp format (chrono syntax: ``%.f`` takes up to 9 fractional digits).
AZURE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S%.f"


def import_azure(
    csv_path: str | os.PathLike[str],
    *,
    mix: Mapping[str, float] | None = None,
    seed: int | np.random.Generator,
    limit: int | None = None,
) -> pl.DataFrame:
    """The Azure trace CSV at ``csv_path`` as a trace frame sorted by arrival (stable).

    ``limit`` keeps the first ``limit`` data rows. Task types are drawn from
    ``mix`` (default :data:`~sim.traces.synth.DEFAULT_MIX`) with generators from ``seed``:
    the same seed gives the same frame. Raises :class:`TraceError` naming the
    file, row and column for a missing, empty or unreadable file, a missing
    column, a timestamp that does not parse or a token count that is not a
    non-negative integer; :class:`~router.errors.InputError` for a bad argument.
    """
    path = Path(csv_path)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit: expected None or an integer >= 1, got {limit!r}")
    task_mix = DEFAULT_MIX if mix is None else mix
    validate_mix(task_mix)
    (rng,) = rng_streams(seed, 1)
    if not path.is_file():
        raise TraceError(f"{path}: Azure trace file does not exist")

    try:
        # All text: a bad cell is then reported as written, not as a cast failure.
        raw = pl.read_csv(path, infer_schema=False, n_rows=limit)
    except pl.exceptions.NoDataError as exc:
        raise TraceError(f"{path}: empty file (no header, no rows)") from exc
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise TraceError(f"{path}: not a readable CSV file ({_first_line(exc)})") from exc
    missing = [c for c in AZURE_COLUMNS if c not in raw.columns]
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        raise TraceError(
            f"{path}: missing Azure trace column(s) {names} (found: {', '.join(raw.columns)})"
        )
    if raw.height == 0:
        raise TraceError(f"{path}: empty trace (no rows)")

    stamps_raw = raw.get_column("TIMESTAMP")
    stamps = stamps_raw.str.strip_chars().str.to_datetime(
        AZURE_TIMESTAMP_FORMAT, time_unit="ns", strict=False
    )
    prompt, prompt_bad = _as_int(raw.get_column("ContextTokens"), required=True)
    completion, completion_bad = _as_int(raw.get_column("GeneratedTokens"), required=True)
    problems = []
    for column, bad, expected in (
        ("TIMESTAMP", stamps.is_null(), "a timestamp like '2023-11-16 18:17:03.9799600'"),
        ("ContextTokens", prompt_bad, "a non-negative integer"),
        ("GeneratedTokens", completion_bad, "a non-negative integer"),
    ):
        index = _first_true(bad)
        if index is not None:
            value = raw.get_column(column)[index]
            problems.append((index, _row_error(str(path), index, column, expected, value)))
    if problems:
        raise min(problems, key=lambda p: p[0])[1]

    # Integer nanoseconds throughout: the files carry 7 fractional digits (100 ns),
    # and a datetime scalar (``stamps.min()``) would round to microseconds.
    nanos = stamps.cast(pl.Int64)
    arrival = (nanos - nanos.min()).cast(pl.Float64) / 1e9
    n = raw.height
    frame = pl.DataFrame(
        {
            "task_id": [f"azure-{i:06d}" for i in range(1, n + 1)],
            "arrival_s": arrival,
            "task_type": draw_task_types(rng, n, task_mix),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
        }
    )
    return validate_trace(frame, source=str(path)).sort("arrival_s", maintain_order=True)

"""Traces: what happened, task by task and attempt by attempt.

- :mod:`sim.traces.tasks`: the task-trace schema (``arrival_s``, ``task_type``, sizes,
  recorded outcomes), :func:`read_trace`, :func:`validate_trace`, :func:`write_trace`,
  :func:`replay_columns`, :func:`read_replay_columns` (compact replay columns read
  in batches);
- :mod:`sim.traces.synth`: synthetic traces (Poisson, bursty, diurnal arrivals);
- :mod:`sim.traces.azure`: the Azure LLM inference trace -> a task trace;
- :mod:`sim.traces.attempts`: the attempt-record schema (one row per provider call),
  :func:`read_attempts`, :func:`validate_attempts`, :func:`write_attempts` and
  :func:`tasks_from_attempts` (the task trace a set of attempts implies);
- :mod:`sim.traces.litellm`: LiteLLM proxy spend logs -> attempt records;
- :mod:`sim.traces.llmperf`: llmperf per-request results -> attempt records;
- :mod:`sim.traces.aider`: an Aider leaderboard -> a scenario and a router catalog;
- :mod:`sim.traces.mapper`: any CSV/Parquet/JSON table -> the trace or attempt schema.

Every importer is a library function here and a ``sim import-...`` command; bad input
raises a one-line :class:`~sim.errors.TraceError` (an
:class:`~router.errors.InputError`) naming the file, row and column, and nothing is
written until the whole input has been read and validated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router._lazy import lazy_exports

if TYPE_CHECKING:
    from sim.traces.aider import (
        AiderImport,
        AiderModel,
        check_aider_outputs,
        import_aider,
        write_aider,
    )
    from sim.traces.attempts import (
        ABORT_OUTCOMES,
        ATTEMPT_OUTCOMES,
        ATTEMPT_REQUIRED,
        ATTEMPT_SCHEMA,
        discover_attempt_files,
        read_attempts,
        tasks_from_attempts,
        validate_attempts,
        write_attempts,
    )
    from sim.traces.azure import (
        AZURE_COLUMNS,
        import_azure,
    )
    from sim.traces.litellm import (
        LITELLM_COLUMNS,
        import_litellm,
    )
    from sim.traces.llmperf import (
        LLMPERF_FIELDS,
        import_llmperf,
    )
    from sim.traces.mapper import (
        DURATION_UNITS,
        import_table,
        parse_pairs,
    )
    from sim.traces.synth import (
        ARRIVAL_PROCESSES,
        DEFAULT_MIX,
        TokenDist,
        synthesize,
    )
    from sim.traces.tasks import (
        OPTIONAL_COLUMNS,
        RECORDED_COLUMNS,
        REQUIRED_COLUMNS,
        TRACE_EXTENSIONS,
        TRACE_SCHEMA,
        ReplayColumns,
        discover_traces,
        read_replay_columns,
        read_trace,
        replay_columns,
        validate_trace,
        write_trace,
    )

_EXPORTS = {
    "AiderImport": "sim.traces.aider",
    "AiderModel": "sim.traces.aider",
    "check_aider_outputs": "sim.traces.aider",
    "import_aider": "sim.traces.aider",
    "write_aider": "sim.traces.aider",
    "ABORT_OUTCOMES": "sim.traces.attempts",
    "ATTEMPT_OUTCOMES": "sim.traces.attempts",
    "ATTEMPT_REQUIRED": "sim.traces.attempts",
    "ATTEMPT_SCHEMA": "sim.traces.attempts",
    "discover_attempt_files": "sim.traces.attempts",
    "read_attempts": "sim.traces.attempts",
    "tasks_from_attempts": "sim.traces.attempts",
    "validate_attempts": "sim.traces.attempts",
    "write_attempts": "sim.traces.attempts",
    "AZURE_COLUMNS": "sim.traces.azure",
    "import_azure": "sim.traces.azure",
    "LITELLM_COLUMNS": "sim.traces.litellm",
    "import_litellm": "sim.traces.litellm",
    "LLMPERF_FIELDS": "sim.traces.llmperf",
    "import_llmperf": "sim.traces.llmperf",
    "DURATION_UNITS": "sim.traces.mapper",
    "import_table": "sim.traces.mapper",
    "parse_pairs": "sim.traces.mapper",
    "ARRIVAL_PROCESSES": "sim.traces.synth",
    "DEFAULT_MIX": "sim.traces.synth",
    "TokenDist": "sim.traces.synth",
    "synthesize": "sim.traces.synth",
    "OPTIONAL_COLUMNS": "sim.traces.tasks",
    "RECORDED_COLUMNS": "sim.traces.tasks",
    "REQUIRED_COLUMNS": "sim.traces.tasks",
    "ReplayColumns": "sim.traces.tasks",
    "TRACE_EXTENSIONS": "sim.traces.tasks",
    "TRACE_SCHEMA": "sim.traces.tasks",
    "discover_traces": "sim.traces.tasks",
    "read_replay_columns": "sim.traces.tasks",
    "read_trace": "sim.traces.tasks",
    "replay_columns": "sim.traces.tasks",
    "validate_trace": "sim.traces.tasks",
    "write_trace": "sim.traces.tasks",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ABORT_OUTCOMES",
    "ARRIVAL_PROCESSES",
    "ATTEMPT_OUTCOMES",
    "ATTEMPT_REQUIRED",
    "ATTEMPT_SCHEMA",
    "AZURE_COLUMNS",
    "AiderImport",
    "AiderModel",
    "DEFAULT_MIX",
    "DURATION_UNITS",
    "LITELLM_COLUMNS",
    "LLMPERF_FIELDS",
    "OPTIONAL_COLUMNS",
    "RECORDED_COLUMNS",
    "REQUIRED_COLUMNS",
    "ReplayColumns",
    "TRACE_EXTENSIONS",
    "TRACE_SCHEMA",
    "TokenDist",
    "check_aider_outputs",
    "discover_attempt_files",
    "discover_traces",
    "import_aider",
    "import_azure",
    "import_litellm",
    "import_llmperf",
    "import_table",
    "parse_pairs",
    "read_attempts",
    "read_replay_columns",
    "read_trace",
    "replay_columns",
    "synthesize",
    "tasks_from_attempts",
    "validate_attempts",
    "validate_trace",
    "write_aider",
    "write_attempts",
    "write_trace",
]

"""Attempt records and importers of real logs.

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
from sim.traces.litellm import LITELLM_COLUMNS, import_litellm
from sim.traces.llmperf import LLMPERF_FIELDS, import_llmperf
from sim.traces.mapper import DURATION_UNITS, import_table, parse_pairs

__all__ = [
    "ABORT_OUTCOMES",
    "ATTEMPT_OUTCOMES",
    "ATTEMPT_REQUIRED",
    "ATTEMPT_SCHEMA",
    "DURATION_UNITS",
    "LITELLM_COLUMNS",
    "LLMPERF_FIELDS",
    "AiderImport",
    "AiderModel",
    "check_aider_outputs",
    "discover_attempt_files",
    "import_aider",
    "import_litellm",
    "import_llmperf",
    "import_table",
    "parse_pairs",
    "read_attempts",
    "tasks_from_attempts",
    "validate_attempts",
    "write_aider",
    "write_attempts",
]

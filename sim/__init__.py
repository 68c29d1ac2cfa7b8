"""sim: a SimPy digital twin of LLM providers, driven by the router's own policy.

Replay task traces (:func:`replay`) against a :class:`Scenario` of stochastic
providers (completion, latency, outages, capacity, rate limits); compare two
configs on common random numbers (:func:`compare`); fit a scenario from recorded
traffic (:func:`calibrate`) and check it out of sample (:func:`validate`); serve
the scenario's models over OpenAI-compatible HTTP for live clients
(:class:`TwinServer`). The routing decisions are made by
:class:`router.RoutingPolicy`, unchanged.

Parts: :mod:`sim.traces` (trace schemas, I/O, synthesis, importers),
:mod:`sim.world` (scenario, world, calibration), :mod:`sim.engine` (the SimPy
driver, replay, results, plots), :mod:`sim.twin` (the HTTP twin and its fidelity
check). Names are imported on first use, so ``import sim`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router._lazy import lazy_exports
from router.native import install as _install_native

# Compiled or pure-Python hot modules, decided before the first of them is imported.
_install_native()

if TYPE_CHECKING:
    from sim.engine import (
        ReplayReport,
        ResultSink,
        RunOutput,
        Simulation,
        compare,
        load_traces,
        mean_ci,
        paired_difference,
        replay,
        run_trace,
        summarize,
        trace_key,
    )
    from sim.errors import (
        ScenarioError,
        TraceError,
    )
    from sim.traces import (
        ReplayColumns,
        discover_traces,
        import_aider,
        import_azure,
        import_litellm,
        import_llmperf,
        import_table,
        read_attempts,
        read_replay_columns,
        read_trace,
        replay_columns,
        synthesize,
        tasks_from_attempts,
        validate_attempts,
        validate_trace,
        write_attempts,
        write_trace,
    )
    from sim.twin import (
        TwinServer,
    )
    from sim.world import (
        DifficultySpec,
        ProviderSite,
        Scenario,
        TokenLatency,
        World,
        calibrate,
        load_scenario,
        load_seed_scenario,
        parse_scenario,
        scenario_json_schema,
        validate,
    )

_EXPORTS = {
    "ReplayReport": "sim.engine",
    "ResultSink": "sim.engine",
    "RunOutput": "sim.engine",
    "Simulation": "sim.engine",
    "compare": "sim.engine",
    "load_traces": "sim.engine",
    "mean_ci": "sim.engine",
    "paired_difference": "sim.engine",
    "replay": "sim.engine",
    "run_trace": "sim.engine",
    "summarize": "sim.engine",
    "trace_key": "sim.engine",
    "ScenarioError": "sim.errors",
    "TraceError": "sim.errors",
    "ReplayColumns": "sim.traces",
    "discover_traces": "sim.traces",
    "import_aider": "sim.traces",
    "import_azure": "sim.traces",
    "import_litellm": "sim.traces",
    "import_llmperf": "sim.traces",
    "import_table": "sim.traces",
    "read_attempts": "sim.traces",
    "read_replay_columns": "sim.traces",
    "read_trace": "sim.traces",
    "replay_columns": "sim.traces",
    "synthesize": "sim.traces",
    "tasks_from_attempts": "sim.traces",
    "validate_attempts": "sim.traces",
    "validate_trace": "sim.traces",
    "write_attempts": "sim.traces",
    "write_trace": "sim.traces",
    "TwinServer": "sim.twin",
    "DifficultySpec": "sim.world",
    "ProviderSite": "sim.world",
    "Scenario": "sim.world",
    "TokenLatency": "sim.world",
    "World": "sim.world",
    "calibrate": "sim.world",
    "load_scenario": "sim.world",
    "load_seed_scenario": "sim.world",
    "parse_scenario": "sim.world",
    "scenario_json_schema": "sim.world",
    "validate": "sim.world",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DifficultySpec",
    "ProviderSite",
    "ReplayColumns",
    "ReplayReport",
    "ResultSink",
    "RunOutput",
    "Scenario",
    "ScenarioError",
    "Simulation",
    "TokenLatency",
    "TraceError",
    "TwinServer",
    "World",
    "calibrate",
    "compare",
    "discover_traces",
    "import_aider",
    "import_azure",
    "import_litellm",
    "import_llmperf",
    "import_table",
    "load_scenario",
    "load_seed_scenario",
    "load_traces",
    "mean_ci",
    "paired_difference",
    "parse_scenario",
    "read_attempts",
    "read_replay_columns",
    "read_trace",
    "replay",
    "replay_columns",
    "run_trace",
    "scenario_json_schema",
    "summarize",
    "synthesize",
    "tasks_from_attempts",
    "trace_key",
    "validate",
    "validate_attempts",
    "validate_trace",
    "write_attempts",
    "write_trace",
]

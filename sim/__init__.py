"""sim: a SimPy digital twin of LLM providers, driven by the router's own policy.

Replay task traces (:func:`replay`) against a :class:`Scenario` of stochastic
providers (completion, latency, outages, capacity, rate limits); compare two
configs on common random numbers (:func:`compare`); serve the scenario's models
over OpenAI-compatible HTTP for live clients (:class:`TwinServer`). The routing
decisions are made by :class:`router.RoutingPolicy`, unchanged.
"""

from sim.azure import import_azure
from sim.driver import Simulation
from sim.errors import ScenarioError, TraceError
from sim.replay import (
    ReplayReport,
    RunOutput,
    compare,
    load_traces,
    replay,
    run_trace,
    trace_key,
)
from sim.results import ResultSink, mean_ci, paired_difference, summarize
from sim.scenario import (
    DifficultySpec,
    Scenario,
    TokenLatency,
    load_scenario,
    load_seed_scenario,
    parse_scenario,
    scenario_json_schema,
)
from sim.synth import synthesize
from sim.trace import (
    ReplayColumns,
    discover_traces,
    read_trace,
    replay_columns,
    validate_trace,
    write_trace,
)
from sim.traces import (
    import_aider,
    import_litellm,
    import_llmperf,
    import_table,
    read_attempts,
    tasks_from_attempts,
    validate_attempts,
    write_attempts,
)
from sim.twin import TwinServer
from sim.world import World

__all__ = [
    "DifficultySpec",
    "TokenLatency",
    "trace_key",
    "ReplayColumns",
    "ReplayReport",
    "ResultSink",
    "RunOutput",
    "Scenario",
    "ScenarioError",
    "Simulation",
    "TraceError",
    "TwinServer",
    "World",
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
    "read_trace",
    "replay",
    "replay_columns",
    "run_trace",
    "scenario_json_schema",
    "summarize",
    "synthesize",
    "tasks_from_attempts",
    "validate_attempts",
    "validate_trace",
    "write_attempts",
    "write_trace",
]

"""optimize: Optuna studies over routing configs, scored by the SimPy twin.

Search a space derived from a base config (:class:`SearchSpace`) for the best
objective (:class:`Objective`, presets in :data:`PRESETS`) with
:func:`run_study`; the winner is chosen on selection seeds, reported on fresh
reporting seeds (:data:`SEED_STREAMS`) and exported (:func:`write_export`, rounded
by :func:`round_config`, with endpoints merged by :func:`merge_endpoints`) in the
router's own format or as a LiteLLM config (what LiteLLM cannot carry:
:func:`litellm_losses`).
"""

from optimize.exhaustive import ExhaustiveResult, exhaustive_search
from optimize.export import (
    FORMATS,
    litellm_losses,
    load_endpoints,
    merge_endpoints,
    render,
    round_config,
    to_litellm,
    write_export,
)
from optimize.objective import (
    MULTI_METRICS,
    OBJECTIVES,
    PRESETS,
    Constraints,
    Objective,
    Preset,
    answer_wait_s,
    make_objective,
    net_value,
)
from optimize.space import (
    ChoiceParam,
    FloatParam,
    IntParam,
    SearchSpace,
    SpaceSpec,
    load_space_spec,
    param_label,
)
from optimize.storage import open_storage, redact, resolve_storage
from optimize.study import (
    SAMPLERS,
    SEED_STREAMS,
    Evaluator,
    Progress,
    StudyReport,
    StudySettings,
    config_key,
    count_trials,
    create_or_load,
    export_warnings,
    holdout,
    run_study,
    seed_stream,
    space_of,
)

__all__ = [
    "ChoiceParam",
    "Constraints",
    "Evaluator",
    "ExhaustiveResult",
    "FORMATS",
    "FloatParam",
    "IntParam",
    "MULTI_METRICS",
    "OBJECTIVES",
    "Objective",
    "PRESETS",
    "Preset",
    "Progress",
    "SAMPLERS",
    "SEED_STREAMS",
    "SearchSpace",
    "SpaceSpec",
    "StudyReport",
    "StudySettings",
    "answer_wait_s",
    "config_key",
    "count_trials",
    "create_or_load",
    "exhaustive_search",
    "export_warnings",
    "holdout",
    "litellm_losses",
    "load_endpoints",
    "load_space_spec",
    "make_objective",
    "merge_endpoints",
    "net_value",
    "open_storage",
    "param_label",
    "redact",
    "render",
    "resolve_storage",
    "round_config",
    "run_study",
    "seed_stream",
    "space_of",
    "to_litellm",
    "write_export",
]

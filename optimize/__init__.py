"""optimize: Optuna studies over routing configs, scored by the SimPy twin.

Search a space derived from a base config (:class:`SearchSpace`) for the best
objective (:class:`Objective`, presets in :data:`PRESETS`) with
:func:`run_study`; the winner is chosen on held-out seeds and exported
(:func:`write_export`, rounded by :func:`round_config`, with endpoints merged by
:func:`merge_endpoints`) in the router's own format or as a LiteLLM config.
"""

from optimize.exhaustive import ExhaustiveResult, exhaustive_search
from optimize.export import (
    FORMATS,
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
    Evaluator,
    Progress,
    StudyReport,
    StudySettings,
    config_key,
    count_trials,
    create_or_load,
    holdout,
    run_study,
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
    "SearchSpace",
    "SpaceSpec",
    "StudyReport",
    "StudySettings",
    "config_key",
    "count_trials",
    "create_or_load",
    "exhaustive_search",
    "holdout",
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
    "space_of",
    "to_litellm",
    "write_export",
]

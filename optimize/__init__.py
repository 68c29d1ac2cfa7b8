"""optimize: Optuna studies over routing configs, scored by the SimPy twin.

Search a space derived from a base config (:class:`SearchSpace`) for the best
objective (:class:`Objective`, presets in :data:`PRESETS`) with
:func:`run_study`; the winner is chosen on selection seeds, reported on fresh
reporting seeds (:data:`SEED_STREAMS`) and exported (:func:`write_export`, rounded
by :func:`round_config`, with endpoints merged by :func:`merge_endpoints`) in the
router's own format or as a LiteLLM config (what LiteLLM cannot carry:
:func:`litellm_losses`).

Multi-fidelity studies (:mod:`optimize.fidelity`) score trials on samples of the
traffic before promoting the promising ones to the full trace. Names are imported
on first use, so ``import optimize`` (and ``optimize --help``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optimize.exhaustive import (
        ExhaustiveResult,
        exhaustive_search,
    )
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
    from optimize.fidelity import (
        FIDELITY_PRUNERS,
        parse_fidelity,
        subsample,
    )
    from optimize.halving import run_halving
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
    from optimize.storage import (
        open_storage,
        redact,
        resolve_storage,
    )
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

#: Public name -> the module that defines it (imported when the name is first read).
_EXPORTS: dict[str, str] = {
    "ExhaustiveResult": "optimize.exhaustive",
    "exhaustive_search": "optimize.exhaustive",
    "FORMATS": "optimize.export",
    "litellm_losses": "optimize.export",
    "load_endpoints": "optimize.export",
    "merge_endpoints": "optimize.export",
    "render": "optimize.export",
    "round_config": "optimize.export",
    "to_litellm": "optimize.export",
    "write_export": "optimize.export",
    "FIDELITY_PRUNERS": "optimize.fidelity",
    "parse_fidelity": "optimize.fidelity",
    "subsample": "optimize.fidelity",
    "run_halving": "optimize.halving",
    "Constraints": "optimize.objective",
    "MULTI_METRICS": "optimize.objective",
    "OBJECTIVES": "optimize.objective",
    "Objective": "optimize.objective",
    "PRESETS": "optimize.objective",
    "Preset": "optimize.objective",
    "answer_wait_s": "optimize.objective",
    "make_objective": "optimize.objective",
    "net_value": "optimize.objective",
    "ChoiceParam": "optimize.space",
    "FloatParam": "optimize.space",
    "IntParam": "optimize.space",
    "SearchSpace": "optimize.space",
    "SpaceSpec": "optimize.space",
    "load_space_spec": "optimize.space",
    "param_label": "optimize.space",
    "open_storage": "optimize.storage",
    "redact": "optimize.storage",
    "resolve_storage": "optimize.storage",
    "Evaluator": "optimize.study",
    "Progress": "optimize.study",
    "SAMPLERS": "optimize.study",
    "SEED_STREAMS": "optimize.study",
    "StudyReport": "optimize.study",
    "StudySettings": "optimize.study",
    "config_key": "optimize.study",
    "count_trials": "optimize.study",
    "create_or_load": "optimize.study",
    "export_warnings": "optimize.study",
    "holdout": "optimize.study",
    "run_study": "optimize.study",
    "seed_stream": "optimize.study",
    "space_of": "optimize.study",
}

__all__ = [
    "ChoiceParam",
    "Constraints",
    "Evaluator",
    "ExhaustiveResult",
    "FIDELITY_PRUNERS",
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
    "parse_fidelity",
    "run_halving",
    "redact",
    "render",
    "resolve_storage",
    "round_config",
    "run_study",
    "seed_stream",
    "space_of",
    "subsample",
    "to_litellm",
    "write_export",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optimize' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later reads skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""router: the cost-aware routing policy (sans I/O) and its live runtime.

The policy (:class:`RoutingPolicy`) is a state machine handed the time and each
attempt's outcome; drivers (the asyncio live driver here, the SimPy driver in
``sim``) carry out its answers. This package imports neither SimPy nor Optuna. Its
public names are imported on first use (:mod:`router._lazy`), so ``import router``
is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router._lazy import lazy_exports
from router.native import install as _install_native

# Compiled or pure-Python hot modules, decided before the first of them is imported.
_install_native()

if TYPE_CHECKING:
    from router.breaker import BreakerState, CircuitBreaker
    from router.catalog import load_seed_config, seed_config_path
    from router.config import (
        Backoff,
        Breaker,
        Budget,
        Health,
        ModelProfile,
        Quality,
        Route,
        RouterConfig,
        Scoring,
        config_from_dict,
        dump_config,
        json_schema,
        load_config,
        save_config,
    )
    from router.errors import ConfigError, CostRouteError, InputError
    from router.health import ModelHealth
    from router.ledger import BudgetAlert, DaySpend, SpendLedger
    from router.outcome import (
        AVAILABILITY_FAILURES,
        BREAKER_FAILURES,
        DEFAULT_RETRY_ON,
        NON_RETRYABLE,
        ErrorKind,
        Outcome,
    )
    from router.policy import RoutingPolicy, TaskRun, route_all
    from router.recording import AttemptRecorder, TraceRecorder
    from router.result import Action, Attempt, Call, Finish, TaskResult, Wait
    from router.scoring import cost_per_success, score
    from router.task import ROUTE_ALIASES, TASK_TYPES, UNKNOWN, Task, classify

_EXPORTS = {
    "AVAILABILITY_FAILURES": "router.outcome",
    "Action": "router.result",
    "Attempt": "router.result",
    "AttemptRecorder": "router.recording",
    "BREAKER_FAILURES": "router.outcome",
    "Backoff": "router.config",
    "Breaker": "router.config",
    "BreakerState": "router.breaker",
    "Budget": "router.config",
    "BudgetAlert": "router.ledger",
    "Call": "router.result",
    "CircuitBreaker": "router.breaker",
    "ConfigError": "router.errors",
    "CostRouteError": "router.errors",
    "DEFAULT_RETRY_ON": "router.outcome",
    "DaySpend": "router.ledger",
    "ErrorKind": "router.outcome",
    "Finish": "router.result",
    "Health": "router.config",
    "InputError": "router.errors",
    "ModelHealth": "router.health",
    "ModelProfile": "router.config",
    "Quality": "router.config",
    "NON_RETRYABLE": "router.outcome",
    "Outcome": "router.outcome",
    "ROUTE_ALIASES": "router.task",
    "Route": "router.config",
    "RouterConfig": "router.config",
    "RoutingPolicy": "router.policy",
    "Scoring": "router.config",
    "SpendLedger": "router.ledger",
    "TASK_TYPES": "router.task",
    "Task": "router.task",
    "TaskResult": "router.result",
    "TaskRun": "router.policy",
    "TraceRecorder": "router.recording",
    "UNKNOWN": "router.task",
    "Wait": "router.result",
    "classify": "router.task",
    "config_from_dict": "router.config",
    "cost_per_success": "router.scoring",
    "dump_config": "router.config",
    "json_schema": "router.config",
    "load_config": "router.config",
    "load_seed_config": "router.catalog",
    "route_all": "router.policy",
    "save_config": "router.config",
    "score": "router.scoring",
    "seed_config_path": "router.catalog",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "AVAILABILITY_FAILURES",
    "Action",
    "Attempt",
    "AttemptRecorder",
    "BREAKER_FAILURES",
    "Backoff",
    "Breaker",
    "BreakerState",
    "Budget",
    "BudgetAlert",
    "Call",
    "CircuitBreaker",
    "ConfigError",
    "CostRouteError",
    "DEFAULT_RETRY_ON",
    "DaySpend",
    "ErrorKind",
    "Finish",
    "Health",
    "InputError",
    "ModelHealth",
    "ModelProfile",
    "Quality",
    "NON_RETRYABLE",
    "Outcome",
    "ROUTE_ALIASES",
    "Route",
    "RouterConfig",
    "RoutingPolicy",
    "Scoring",
    "SpendLedger",
    "TASK_TYPES",
    "Task",
    "TaskResult",
    "TaskRun",
    "TraceRecorder",
    "UNKNOWN",
    "Wait",
    "classify",
    "config_from_dict",
    "cost_per_success",
    "dump_config",
    "json_schema",
    "load_config",
    "load_seed_config",
    "route_all",
    "save_config",
    "score",
    "seed_config_path",
]

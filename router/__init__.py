"""router: the cost-aware routing policy (sans I/O) and its live runtime.

The policy (:class:`RoutingPolicy`) is a state machine handed the time and each
attempt's outcome; drivers (the asyncio live driver here, the SimPy driver in
``sim``) carry out its answers. This package imports neither SimPy nor Optuna.
"""

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
